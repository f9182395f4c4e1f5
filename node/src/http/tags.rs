//! Tag endpoints: list, set (create or move), remove. `latest` is automatic and read-only.

use axum::{Json, extract::State, http::StatusCode};
use niso_protocol::{
    api::{SetTag, TagInfo, TagList},
    name::validate_tag,
    scope::Action,
};

use super::{
    AppState,
    error::ApiError,
    extract::{ApiJson, ApiPath, Auth},
    packages::{parse_name, parse_version, tag_infos},
};
use crate::store::LocalChange;

/// Tags of a package, `latest` included, ordered by version.
#[utoipa::path(get, path = "/v1/packages/{name}/tags", tag = "tags",
    params(("name" = String, Path, description = "Package name")),
    responses((status = 200, body = TagList), (status = 404, body = niso_protocol::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TagList>, ApiError> {
    let name = parse_name(&name)?;
    principal.require(Action::Pull, name.as_str())?;
    let rows = state.store.versions(name.as_str())?;
    let tags = tag_infos(&state, name.as_str(), &rows)?;
    if rows.is_empty() && tags.is_empty() {
        return Err(ApiError::not_found(format!(
            "package {name} does not exist on this registry"
        )));
    }
    Ok(Json(TagList { tags }))
}

fn check_tag(tag: &str) -> Result<(), ApiError> {
    validate_tag(tag).map_err(|e| ApiError::bad_request("invalid_tag", e.to_string()))
}

/// Points a tag at a version, creating or moving it. Needs push rights on the package.
#[utoipa::path(put, path = "/v1/packages/{name}/tags/{tag}", tag = "tags",
    params(("name" = String, Path, description = "Package name"), ("tag" = String, Path, description = "Tag name")),
    request_body = SetTag,
    responses(
        (status = 200, body = TagInfo),
        (status = 400, body = niso_protocol::api::ErrorBody),
        (status = 403, body = niso_protocol::api::ErrorBody),
        (status = 404, description = "No such version", body = niso_protocol::api::ErrorBody),
    ))]
pub async fn set(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath((name, tag)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SetTag>,
) -> Result<Json<TagInfo>, ApiError> {
    let name = parse_name(&name)?;
    principal.require(Action::Push, name.as_str())?;
    check_tag(&tag)?;
    let version = parse_version(&body.version)?;
    state
        .store
        .originate(LocalChange::SetTag {
            name,
            tag: tag.clone(),
            version: Some(version.clone()),
        })
        .await?;
    Ok(Json(TagInfo {
        tag,
        version: version.to_string(),
        automatic: false,
    }))
}

/// Removes a tag.
#[utoipa::path(delete, path = "/v1/packages/{name}/tags/{tag}", tag = "tags",
    params(("name" = String, Path, description = "Package name"), ("tag" = String, Path, description = "Tag name")),
    responses((status = 204, description = "Removed"), (status = 404, body = niso_protocol::api::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath((name, tag)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    principal.require(Action::Push, name.as_str())?;
    check_tag(&tag)?;
    state
        .store
        .originate(LocalChange::SetTag {
            name,
            tag,
            version: None,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
