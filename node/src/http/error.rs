//! API errors and the one JSON envelope they all use: `{"error":{"code","message"}}`.
//! Server errors are logged in full and answered with a generic message.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use niso_protocol::api::{ErrorBody, ErrorDetail};

use crate::{
    api_keys::AuthError,
    store::{ChangeError, StoreError},
};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "missing_scope", message)
    }

    /// The disk under the data dir is full: the client may retry once the operator frees space.
    pub fn no_space(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %chain(error), "request failed: the disk is full");
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            "the registry's disk is full, so nothing was stored; retry once the operator has freed space",
        )
    }

    /// Logs `error` with its whole chain and answers with a message that reveals nothing.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %chain(error), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the registry hit an internal error; the operator can find it in the node's log",
        )
    }
}

/// `error: cause: cause` in one line.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"niso\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSpace(_) => Self::no_space(&e),
            _ => Self::internal(&e),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        if crate::store::is_no_space(&e) {
            Self::no_space(&e)
        } else {
            Self::internal(&e)
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        let message = e.to_string();
        match e {
            ChangeError::Conflict { .. } => Self::conflict("version_exists", message),
            ChangeError::Deleted { .. } => Self::conflict("version_deleted", message),
            ChangeError::TagRollback { .. } => Self::conflict("tag_rollback", message),
            ChangeError::Equivocation { .. } => Self::conflict("equivocation", message),
            ChangeError::NotOwner { .. } => Self::conflict("not_owner", message),
            ChangeError::NameTaken { .. } => Self::conflict("name_taken", message),
            ChangeError::UnknownPackage { .. } => Self::not_found(message),
            ChangeError::NotFound(_) => Self::not_found(message),
            ChangeError::Refused(_) => Self::conflict("refused", message),
            ChangeError::Invalid(_) => Self::bad_request("invalid_record", chain(&e)),
            ChangeError::Store(e) => Self::from(e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let unauthorized = |code, e: &AuthError| {
            Self::new(
                StatusCode::UNAUTHORIZED,
                code,
                format!("{}; log in with `niso login URL --key KEY`", chain(e)),
            )
        };
        match &e {
            AuthError::Missing => unauthorized("unauthorized", &e),
            AuthError::BadHeader | AuthError::Malformed(_) => unauthorized("malformed_key", &e),
            AuthError::Unknown => unauthorized("unknown_key", &e),
            AuthError::Expired(_) => unauthorized("key_expired", &e),
            AuthError::BadStoredScopes(..) | AuthError::Store(_) => Self::internal(&e),
        }
    }
}
