//! Signing in with an API key (which starts a server-side session) and signing out.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use minijinja::context;
use serde::Deserialize;

use super::{
    form::PageForm,
    page_error::PageError,
    sessions::{SESSION_COOKIE, random_bytes},
    templates::render,
    viewer::{Viewer, cookie, set_cookie},
};
use crate::{api_keys::authenticate, http::AppState};

/// A pre-sign-in cookie the login form's CSRF token is bound to. SameSite=Strict keeps it
/// off cross-site posts, so another site cannot sign a browser in with the attacker's key.
const LOGIN_COOKIE: &str = "niso_login";
const LOGIN_PURPOSE: &str = "login";
/// How long a login form stays usable.
const LOGIN_FORM_SECS: u64 = 3600;

/// The gate of an admin page: the sign-in page for a visitor without a session, a 403 for a
/// signed-in key that is not an admin's, and `None` (go on) for an admin.
pub fn admin_gate(
    state: &AppState,
    viewer: &Viewer,
    headers: &axum::http::HeaderMap,
) -> Result<Option<Response>, PageError> {
    if viewer.session.is_none() {
        return page(state, viewer, headers, StatusCode::UNAUTHORIZED, None).map(Some);
    }
    if !viewer.is_admin() {
        return Err(PageError::Forbidden);
    }
    Ok(None)
}

/// The login page; also what pages show a viewer who may see nothing without a key.
pub fn page(
    state: &AppState,
    viewer: &Viewer,
    headers: &axum::http::HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let nonce = cookie(headers, LOGIN_COOKIE)
        .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| niso_protocol::hex::encode(&random_bytes()));
    let csrf = state.ui_sessions.csrf_token(LOGIN_PURPOSE, &nonce);
    let body = render(
        "login.html",
        context! { viewer => viewer.template_context(state), csrf, error, page => "login" },
    )?;
    Ok((
        status,
        [(
            header::SET_COOKIE,
            set_cookie(LOGIN_COOKIE, &nonce, LOGIN_FORM_SECS, viewer.secure),
        )],
        Html(body),
    )
        .into_response())
}

pub async fn form(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: axum::http::HeaderMap,
) -> Result<Response, PageError> {
    if viewer.session.is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    page(&state, &viewer, &headers, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
    csrf: String,
}

pub async fn submit(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: axum::http::HeaderMap,
    PageForm(form): PageForm<LoginForm>,
) -> Result<Response, PageError> {
    let nonce_ok = cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|n| state.ui_sessions.csrf_valid(LOGIN_PURPOSE, &n, &form.csrf));
    if !nonce_ok {
        return Err(PageError::Csrf);
    }
    let key = form.key.trim();
    match authenticate(
        &state.store,
        &state.last_used,
        Some(&format!("Bearer {key}")),
        false,
    ) {
        Ok(principal) => {
            let id = state.ui_sessions.create(key.to_owned());
            tracing::info!(key_id = ?principal.key_id, "web session started");
            let session_cookie = set_cookie(
                SESSION_COOKIE,
                &id,
                state.config.ui.session_idle_secs,
                viewer.secure,
            );
            let mut response = Redirect::to("/").into_response();
            let h = response.headers_mut();
            for c in [
                session_cookie,
                set_cookie(LOGIN_COOKIE, "", 0, viewer.secure),
            ] {
                if let Ok(v) = c.parse() {
                    h.append(header::SET_COOKIE, v);
                }
            }
            Ok(response)
        }
        Err(e) => {
            state.metrics.auth_failures.inc();
            tracing::info!(error = %e, "web sign-in refused");
            page(
                &state,
                &viewer,
                &headers,
                StatusCode::UNAUTHORIZED,
                Some(&format!("Sign-in failed: {e}.")),
            )
        }
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    viewer: Viewer,
    PageForm(form): PageForm<LogoutForm>,
) -> Result<Response, PageError> {
    let Some(id) = viewer.session.as_deref() else {
        return Ok(Redirect::to("/login").into_response());
    };
    if !viewer.csrf_valid(&state, &form.csrf) {
        return Err(PageError::Csrf);
    }
    state.ui_sessions.remove(id);
    tracing::info!("web session ended by sign-out");
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, "", 0, viewer.secure),
        )],
        Redirect::to("/login"),
    )
        .into_response())
}
