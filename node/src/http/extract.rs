//! Extractors whose rejections speak the API's error envelope, and the one that authenticates.

use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::*},
    http::{StatusCode, header, request::Parts},
};
use niso_protocol::scope::Action;
use serde::de::DeserializeOwned;

use super::{AppState, error::ApiError};
use crate::api_keys::{Principal, authenticate};

/// JSON body; malformed or oversized bodies become 400/413 envelopes.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "request body is too large",
                ))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::bad_request(
                "invalid_json",
                "send the body as JSON with `Content-Type: application/json`",
            )),
            Err(e) => Err(ApiError::bad_request("invalid_json", e.body_text())),
        }
    }
}

/// Query string; bad values become a 400 envelope.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Path parameters; bad values become a 400 envelope.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// The authenticated caller. Rejects with 401 when the key is missing, malformed, unknown,
/// revoked or expired.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "malformed_key",
                    "the Authorization header is not valid text",
                )
            })?),
        };
        authenticate(
            &state.store,
            &state.last_used,
            header,
            state.config.anonymous_pull,
        )
        .map(Auth)
        .map_err(|e| {
            state.metrics.auth_failures.inc();
            ApiError::from(e)
        })
    }
}

impl Principal {
    /// 403 naming the missing scope unless the caller may do `action` to `package`.
    pub fn require(&self, action: Action, package: &str) -> Result<(), ApiError> {
        if self.scopes.allows(action, package) {
            return Ok(());
        }
        self.anonymous_needs_key()?;
        Err(ApiError::forbidden(format!(
            "{} lacks the scope `{action}:{package}`; ask an admin for a key with a matching scope (e.g. `{action}:{package}` or `{action}:*`)",
            self.describe()
        )))
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.scopes.is_admin() {
            return Ok(());
        }
        self.anonymous_needs_key()?;
        Err(ApiError::forbidden(format!(
            "{} lacks the scope `admin`; this needs an admin key",
            self.describe()
        )))
    }

    /// Anonymous callers get 401, not 403: a key, not a different key, is what they need.
    pub fn anonymous_needs_key(&self) -> Result<(), ApiError> {
        if self.key_id.is_some() {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this needs an API key; log in with `niso login URL --key KEY`",
        ))
    }

    fn describe(&self) -> String {
        match (&self.key_id, &self.key_name) {
            (Some(id), Some(name)) => format!("key {id} ({name})"),
            (Some(id), None) => format!("key {id}"),
            _ => "anonymous access".to_owned(),
        }
    }
}
