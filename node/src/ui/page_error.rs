//! Errors of the web UI's pages, answered with an HTML error page. Internal failures are
//! logged in full and shown only as "something failed", never their details.

use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};

use crate::{http::error::chain, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("this page needs an admin key")]
    Forbidden,
    #[error("the form has expired or did not come from this page; reload it and try again")]
    Csrf,
    #[error("could not render a page")]
    Template(#[from] minijinja::Error),
    #[error("could not read the store")]
    Store(#[from] StoreError),
    #[error("the key could not be created or revoked")]
    Change(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl PageError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::Template(_) | Self::Store(_) | Self::Change(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// What the page says: the message for the caller's mistakes, a generic one otherwise.
    fn public_message(&self) -> String {
        if self.status().is_server_error() {
            "The registry hit an internal error; the operator can find it in the node's log."
                .to_owned()
        } else {
            self.to_string()
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %chain(&self), "web page failed");
        }
        let title = status.canonical_reason().unwrap_or("Error");
        let body = super::templates::render(
            "error.html",
            minijinja::context! {
                title,
                status => status.as_u16(),
                message => self.public_message(),
                page => "error",
                // Error pages do not know the viewer; they offer the way back, not the menu.
                viewer => minijinja::context! { signed_in => false, admin => false },
            },
        )
        // The error page itself failing must not recurse: a fixed page says the least.
        .unwrap_or_else(|e| {
            tracing::error!(error = %chain(&e), "could not render the error page");
            "<!doctype html><title>Error</title><p>Something failed.</p>".to_owned()
        });
        (status, Html(body)).into_response()
    }
}
