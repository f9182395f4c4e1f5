//! `/keys` (admin): every key, a form that creates one and shows its secret once, and a
//! revoke button per key.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
};
use minijinja::context;
use niso_protocol::{
    api_key::is_key_id,
    scope::{Scope, Scopes},
};
use serde::Deserialize;

use super::{form::PageForm, login, page_error::PageError, templates::render, viewer::Viewer};
use crate::{
    api_keys::{issue_key, key_info},
    http::AppState,
};

fn require_admin(viewer: &Viewer) -> Result<(), PageError> {
    if viewer.is_admin() {
        Ok(())
    } else {
        Err(PageError::Forbidden)
    }
}

fn page(
    state: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    created: Option<(String, String)>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let keys: Vec<_> = state
        .store
        .list_keys()?
        .iter()
        .map(|(id, entry)| key_info(id, entry, state.last_used.pending(id)))
        .collect();
    let body = render(
        "keys.html",
        context! {
            viewer => viewer.template_context(state),
            page => "keys",
            keys,
            created => created.map(|(id, key)| context! { id, key }),
            error,
        },
    )?;
    Ok((status, Html(body)).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if let Some(sign_in) = login::admin_gate(&state, &viewer, &headers)? {
        return Ok(sign_in);
    }
    page(&state, &viewer, StatusCode::OK, None, None)
}

#[derive(Deserialize)]
pub struct CreateForm {
    csrf: String,
    name: String,
    /// Scopes separated by spaces, commas or new lines.
    scopes: String,
}

pub async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    PageForm(form): PageForm<CreateForm>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    if !viewer.csrf_valid(&state, &form.csrf) {
        return Err(PageError::Csrf);
    }
    let name = form.name.trim().to_owned();
    let refuse = |message: String| {
        page(
            &state,
            &viewer,
            StatusCode::BAD_REQUEST,
            None,
            Some(message),
        )
    };
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return refuse("Key names are 1 to 64 printable characters.".to_owned());
    }
    let scopes = match form
        .scopes
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::parse::<Scope>)
        .collect::<Result<Vec<_>, _>>()
        .and_then(|list| Scopes::new(list.clone()).map(|_| list))
    {
        Ok(scopes) => scopes,
        Err(e) => return refuse(format!("Invalid scopes: {e}.")),
    };
    let (key, info) = issue_key(&state.store, name, scopes, None)
        .await
        .map_err(|e| PageError::Change(Box::new(e)))?;
    tracing::info!(key_id = %info.id, by = ?viewer.principal.as_ref().and_then(|p| p.key_id.clone()), "key created on the web UI");
    page(
        &state,
        &viewer,
        StatusCode::CREATED,
        Some((info.id, key.expose().to_owned())),
        None,
    )
}

#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: String,
}

pub async fn revoke(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    PageForm(form): PageForm<RevokeForm>,
) -> Result<Response, PageError> {
    require_admin(&viewer)?;
    if !viewer.csrf_valid(&state, &form.csrf) {
        return Err(PageError::Csrf);
    }
    let missing = || PageError::NotFound(format!("There is no key {id}."));
    if !is_key_id(&id) {
        return Err(missing());
    }
    if !state
        .store
        .revoke_key(id.clone())
        .await
        .map_err(|e| PageError::Change(Box::new(e)))?
    {
        return Err(missing());
    }
    tracing::info!(key_id = %id, by = ?viewer.principal.as_ref().and_then(|p| p.key_id.clone()), "key revoked on the web UI");
    Ok(Redirect::to("/keys").into_response())
}
