//! Tag endpoints: list, set (create or move), remove. `latest` is automatic and read-only.

use axum::{Json, extract::State, http::StatusCode};
use niso_protocol::{
    PackageName,
    api::{ErrorBody, SetTag, TagInfo, TagList},
    api_schema::TagName,
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
#[utoipa::path(get, path = "/v1/packages/{name}/tags", tag = "tags", operation_id = "listTags",
    params(("name" = PackageName, Path, description = "Package name")),
    responses(
        (status = 200, description = "The package's tags, `latest` included, ordered by version", body = TagList),
        (status = 400, description = "Not a valid package name", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may not pull this package", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ))]
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
#[utoipa::path(put, path = "/v1/packages/{name}/tags/{tag}", tag = "tags", operation_id = "setTag",
    params(("name" = PackageName, Path, description = "Package name"), ("tag" = TagName, Path, description = "Tag name")),
    request_body = SetTag,
    responses(
        (status = 200, description = "The tag now points at the version", body = TagInfo,
            links(("remove" = (operation_id = "removeTag", parameters(("name" = "$request.path.name"), ("tag" = "$response.body#/tag")))))),
        (status = 400, description = "Not a valid package name, tag or version, or a body that is not `SetTag` JSON", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may not push to this package", body = ErrorBody),
        (status = 404, description = "No such package or version", body = ErrorBody),
        (status = 409, description = "The version was deleted, or the tag would move back to a version it left (`tag_rollback`)", body = ErrorBody),
        (status = 413, description = "The body is over the node's `limits.max_json_bytes`", body = ErrorBody),
        (status = 507, description = "The node's disk is full; nothing was changed", body = ErrorBody),
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
#[utoipa::path(delete, path = "/v1/packages/{name}/tags/{tag}", tag = "tags", operation_id = "removeTag",
    params(("name" = PackageName, Path, description = "Package name"), ("tag" = TagName, Path, description = "Tag name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Not a valid package name or tag", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may not push to this package", body = ErrorBody),
        (status = 404, description = "No such package or tag", body = ErrorBody),
        (status = 507, description = "The node's disk is full; nothing was changed", body = ErrorBody),
    ))]
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
