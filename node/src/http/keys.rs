//! API key management: create, list, revoke. Admin only.

use axum::{Json, extract::State, http::StatusCode};
use niso_protocol::{
    api::{CreateKey, CreatedKey, ErrorBody, KeyList},
    api_key::{is_key_id, key_name},
    api_schema::KeyId,
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
#[utoipa::path(post, path = "/v1/keys", tag = "keys", operation_id = "createKey", request_body = CreateKey,
    responses(
        (status = 201, description = "The new key, with its secret (shown only here)", body = CreatedKey,
            links(("revoke" = (operation_id = "revokeKey", parameters(("id" = "$response.body#/id")))))),
        (status = 400, description = "An invalid name, scope or expiry, or a body that is not `CreateKey` JSON", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
        (status = 413, description = "The body is over the node's `limits.max_json_bytes`", body = ErrorBody),
        (status = 507, description = "The node's disk is full; no key was made", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    principal.require_admin()?;
    let name = key_name(&body.name)
        .map_err(|e| ApiError::bad_request("invalid_key_name", e.to_string()))?
        .to_owned();
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
#[utoipa::path(get, path = "/v1/keys", tag = "keys", operation_id = "listKeys",
    responses(
        (status = 200, description = "Every key, without secrets", body = KeyList),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
    ))]
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
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", operation_id = "revokeKey",
    params(("id" = KeyId, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 507, description = "The node's disk is full; the key still works", body = ErrorBody),
    ))]
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
