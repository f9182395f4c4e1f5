//! Form bodies for the UI's POSTs; a malformed form becomes a 400 page, not a JSON envelope.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::page_error::PageError;
use crate::http::AppState;

pub struct PageForm<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|f| Self(f.0))
            .map_err(|e| PageError::BadRequest(format!("the form is not valid: {}", e.body_text())))
    }
}
