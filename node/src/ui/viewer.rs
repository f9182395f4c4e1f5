//! Who is looking at a page: the signed-in key of the session cookie (authenticated afresh on
//! every request, so revocation and expiry end the session), anonymous access where the node
//! allows anonymous pulls, or nobody.

use std::convert::Infallible;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, Uri, header, request::Parts},
};
use minijinja::{Value, context};
use niso_protocol::scope::Action;

use super::sessions::SESSION_COOKIE;
use crate::{
    api_keys::{Principal, authenticate},
    http::AppState,
};

/// The CSRF purpose of forms posted from inside a session.
pub const FORM_PURPOSE: &str = "form";

pub struct Viewer {
    /// The session id, when signed in.
    pub session: Option<String>,
    /// What the viewer may do: the session's key, or anonymous pull access, or `None`.
    pub principal: Option<Principal>,
    /// The request came over TLS (directly, or through a proxy that says so).
    pub secure: bool,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        let secure = came_over_tls(&parts.uri, &parts.headers);
        let signed_in = cookie(&parts.headers, SESSION_COOKIE).and_then(|id| {
            let session = state.ui_sessions.get(&id)?;
            match authenticate(
                &state.store,
                &state.last_used,
                Some(&format!("Bearer {}", session.key)),
                false,
            ) {
                Ok(principal) => Some((id, principal)),
                Err(e) => {
                    tracing::info!(error = %e, "web session ended: its key no longer works");
                    state.ui_sessions.remove(&id);
                    None
                }
            }
        });
        Ok(match signed_in {
            Some((id, principal)) => Self {
                session: Some(id),
                principal: Some(principal),
                secure,
            },
            None => Self {
                session: None,
                principal: state.config.anonymous_pull.then(|| Principal {
                    key_id: None,
                    key_name: None,
                    scopes: niso_protocol::scope::Scopes::anonymous_pull(),
                }),
                secure,
            },
        })
    }
}

impl Viewer {
    pub fn may_pull(&self, package: &str) -> bool {
        self.principal
            .as_ref()
            .is_some_and(|p| p.scopes.allows(Action::Pull, package))
    }

    pub fn is_admin(&self) -> bool {
        self.session.is_some() && self.principal.as_ref().is_some_and(|p| p.scopes.is_admin())
    }

    /// What every page's header needs: who is signed in, and the token its forms carry.
    pub fn template_context(&self, state: &AppState) -> Value {
        let csrf = self
            .session
            .as_deref()
            .map(|id| state.ui_sessions.csrf_token(FORM_PURPOSE, id));
        let name = self.principal.as_ref().and_then(|p| {
            p.key_name
                .clone()
                .or_else(|| p.key_id.clone())
                .filter(|_| self.session.is_some())
        });
        context! {
            signed_in => self.session.is_some(),
            name,
            admin => self.is_admin(),
            csrf,
        }
    }

    /// Whether `token` is this session's form token.
    pub fn csrf_valid(&self, state: &AppState, token: &str) -> bool {
        self.session
            .as_deref()
            .is_some_and(|id| state.ui_sessions.csrf_valid(FORM_PURPOSE, id, token))
    }
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The node speaks plain HTTP; TLS ends at a proxy in front of it, which says so in
/// `X-Forwarded-Proto`.
pub fn came_over_tls(uri: &Uri, headers: &HeaderMap) -> bool {
    uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Strict always, Secure over TLS.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}
