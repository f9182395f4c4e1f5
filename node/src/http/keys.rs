//! API key management: create, list, revoke. Admin only.

use axum::{Json, extract::State, http::StatusCode};
use niso_protocol::{
    api::{CreateKey, CreatedKey, KeyList},
    api_key::is_key_id,
    scope::{Scope, Scopes},
};

use super::{
    AppState,
    error::ApiError,
    extract::{ApiJson, ApiPath, Auth},
};
use crate::{
    api_keys::{issue_key, key_info},
    clock::now_ms,
};

/// Creates a key. The response is the only time the secret is shown.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses(
        (status = 201, body = CreatedKey),
        (status = 400, body = niso_protocol::api::ErrorBody),
        (status = 403, body = niso_protocol::api::ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    principal.require_admin()?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_key_name",
            "key names are 1 to 64 printable characters",
        ));
    }
    let scopes = body
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .and_then(|list| Scopes::new(list.clone()).map(|_| list))
        .map_err(|e| ApiError::bad_request("invalid_scope", e.to_string()))?;
    if body.expires_at_ms.is_some_and(|t| t <= now_ms()) {
        return Err(ApiError::bad_request(
            "invalid_expiry",
            "the expiry time is in the past",
        ));
    }
    let (key, info) = issue_key(&state.store, name, scopes, body.expires_at_ms).await?;
    tracing::info!(key_id = %info.id, by = ?principal.key_id, "key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: key.expose().to_owned(),
            info,
        }),
    ))
}

/// Every key, without secrets.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = KeyList), (status = 403, body = niso_protocol::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Json<KeyList>, ApiError> {
    principal.require_admin()?;
    let keys = state
        .store
        .list_keys()?
        .iter()
        .map(|(id, entry)| key_info(id, entry, state.last_used.pending(id)))
        .collect();
    Ok(Json(KeyList { keys }))
}

/// Revokes a key; its next request is refused.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id, `key_…`")),
    responses((status = 204, description = "Revoked"), (status = 404, body = niso_protocol::api::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let missing = || ApiError::not_found(format!("no key {id}; see `niso registry list-keys`"));
    if !is_key_id(&id) {
        return Err(missing());
    }
    if !state.store.revoke_key(id.clone()).await? {
        return Err(missing());
    }
    tracing::info!(key_id = %id, by = ?principal.key_id, "key revoked");
    Ok(StatusCode::NO_CONTENT)
}
