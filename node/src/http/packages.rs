//! Package endpoints: list and search, details, reference resolution, version lookup and
//! deletion.

use axum::{Json, extract::State, http::StatusCode};
use niso_protocol::{
    Arch, PackageName,
    api::{ErrorBody, PackageDetail, PackageList, PackageSummary, Resolved, TagInfo, VersionInfo},
    api_schema::VersionString,
    reference::{LATEST, Resolution, latest, resolve},
    scope::Action,
};
use semver::Version;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    AppState,
    error::ApiError,
    extract::{ApiPath, ApiQuery, Auth},
};
use crate::store::{LocalChange, VersionRow};

/// Most items one page may hold.
pub const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Words to search for in names and descriptions; omit to list every package.
    q: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page, with the same `q`: a listing's cursor is a package
    /// name, a search's an offset, and a search refuses any other.
    cursor: Option<String>,
}

pub fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(l) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
        Some(l) => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_LIMIT}, not {l}"),
        )),
    }
}

pub fn parse_name(name: &str) -> Result<PackageName, ApiError> {
    PackageName::new(name).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))
}

pub fn parse_version(version: &str) -> Result<Version, ApiError> {
    Version::parse(version).map_err(|e| {
        ApiError::bad_request(
            "invalid_version",
            format!("`{version}` is not a semver version: {e}"),
        )
    })
}

pub fn parse_arch(arch: &str) -> Result<Arch, ApiError> {
    Arch::new(arch).map_err(|e| ApiError::bad_request("invalid_arch", e.to_string()))
}

/// Lists packages by name, or searches them when `q` is given. Only packages the key may
/// pull are shown.
#[utoipa::path(get, path = "/v1/packages", tag = "packages", operation_id = "listPackages", params(ListQuery),
    responses(
        (status = 200, description = "One page of packages, by name (or by relevance for `q`)", body = PackageList,
            links(
                ("first" = (operation_id = "getPackage", parameters(("name" = "$response.body#/packages/0/name")))),
                ("resolveFirst" = (operation_id = "resolveReference", parameters(("name" = "$response.body#/packages/0/name")))),
            )),
        (status = 400, description = "A `limit` out of range or a `cursor` this node did not issue", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may pull no package", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<PackageList>, ApiError> {
    if !principal.scopes.has_any(Action::Pull) {
        principal.require(Action::Pull, "*")?;
    }
    let limit = check_limit(query.limit)?;
    let allow = |name: &str| principal.scopes.allows(Action::Pull, name);
    let (names, next_cursor) = match query.q.as_deref().map(str::trim) {
        Some(q) if !q.is_empty() => {
            let offset: usize = match &query.cursor {
                None => 0,
                Some(c) => c.parse().map_err(|_| {
                    ApiError::bad_request("invalid_query", "cursor is not one this node issued")
                })?,
            };
            let (hits, total) = state.store.search(q, offset, limit, allow)?;
            let next = (offset + hits.len() < total).then(|| (offset + hits.len()).to_string());
            (
                hits.into_iter()
                    .map(|h| (h.name, h.entry.description))
                    .collect::<Vec<_>>(),
                next,
            )
        }
        _ => {
            let rows = state
                .store
                .packages_after(query.cursor.as_deref(), limit + 1, allow)?;
            let more = rows.len() > limit;
            let rows: Vec<_> = rows.into_iter().take(limit).collect();
            let next = if more {
                rows.last().map(|(n, _)| n.clone())
            } else {
                None
            };
            (
                rows.into_iter().map(|(n, e)| (n, e.description)).collect(),
                next,
            )
        }
    };
    let mut packages = Vec::with_capacity(names.len());
    for (name, stored) in names {
        let versions = state.store.versions(&name)?;
        let latest = latest(versions.iter().map(|r| &r.version));
        packages.push(PackageSummary {
            description: description_of(&versions, latest).unwrap_or(stored),
            latest: latest.map(ToString::to_string),
            name,
        });
    }
    Ok(Json(PackageList {
        packages,
        next_cursor,
    }))
}

pub fn version_info(row: &VersionRow) -> VersionInfo {
    VersionInfo {
        version: row.version.to_string(),
        arch: row.arch.to_string(),
        digest: row.digest().to_string(),
        size: row.entry.size,
        description: row.entry.description.clone(),
        published_ms: row.entry.published_ms,
        origin: niso_protocol::hex::encode(&row.entry.origin),
    }
}

/// The description a package is shown with: its latest version's (the `any` build's, else
/// the first architecture's with one), not whichever build was pushed last.
fn description_of(rows: &[VersionRow], latest: Option<&Version>) -> Option<String> {
    let builds: Vec<&VersionRow> = rows.iter().filter(|r| Some(&r.version) == latest).collect();
    builds
        .iter()
        .find(|r| r.arch.is_any())
        .or_else(|| {
            builds
                .iter()
                .filter(|r| !r.entry.description.is_empty())
                .min_by(|a, b| a.arch.cmp(&b.arch))
        })
        .map(|r| r.entry.description.clone())
}

/// Explicit tags plus the automatic `latest`, ordered by version.
pub fn tag_infos(
    state: &AppState,
    name: &str,
    rows: &[VersionRow],
) -> Result<Vec<TagInfo>, ApiError> {
    let mut tags: Vec<(Version, TagInfo)> = state
        .store
        .tags(name)?
        .into_iter()
        .map(|(tag, version)| {
            (
                version.clone(),
                TagInfo {
                    tag,
                    version: version.to_string(),
                    automatic: false,
                },
            )
        })
        .collect();
    if let Some(v) = latest(rows.iter().map(|r| &r.version)) {
        tags.push((
            v.clone(),
            TagInfo {
                tag: LATEST.to_owned(),
                version: v.to_string(),
                automatic: true,
            },
        ));
    }
    tags.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.automatic.cmp(&b.1.automatic))
            .then(a.1.tag.cmp(&b.1.tag))
    });
    Ok(tags.into_iter().map(|(_, t)| t).collect())
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "package {name} does not exist on this registry; try `niso search {name}`"
    ))
}

/// Every version, architecture and tag of a package.
#[utoipa::path(get, path = "/v1/packages/{name}", tag = "packages", operation_id = "getPackage",
    params(("name" = PackageName, Path, description = "Package name")),
    responses(
        (status = 200, description = "The package's versions, builds and tags", body = PackageDetail,
            links(
                ("tags" = (operation_id = "listTags", parameters(("name" = "$response.body#/name")))),
                ("firstBuild" = (operation_id = "getVersion", parameters(("name" = "$response.body#/name"), ("version" = "$response.body#/versions/0/version"), ("arch" = "$response.body#/versions/0/arch")))),
                ("downloadFirst" = (operation_id = "downloadBlob", parameters(("name" = "$response.body#/name"), ("digest" = "$response.body#/versions/0/digest")))),
            )),
        (status = 400, description = "Not a valid package name", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may not pull this package", body = ErrorBody),
        (status = 404, description = "No such package", body = ErrorBody),
    ))]
pub async fn detail(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PackageDetail>, ApiError> {
    let name = parse_name(&name)?;
    principal.require(Action::Pull, name.as_str())?;
    let rows = state.store.versions(name.as_str())?;
    let Some(package) = state.store.package(name.as_str())? else {
        return Err(not_found(name.as_str()));
    };
    let description = description_of(&rows, latest(rows.iter().map(|r| &r.version)))
        .unwrap_or(package.description);
    Ok(Json(PackageDetail {
        name: name.to_string(),
        description,
        tags: tag_infos(&state, name.as_str(), &rows)?,
        versions: rows.iter().map(version_info).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResolveQuery {
    /// A tag, an exact version or a version prefix such as `20`; omit for `latest`.
    #[serde(rename = "ref")]
    reference: Option<String>,
    /// The client's architecture; `any` builds also match. Omit to consider every build.
    #[param(value_type = Option<Arch>)]
    arch: Option<String>,
}

/// Resolves a reference (`latest`, a tag, a version, a version prefix) to one build.
#[utoipa::path(get, path = "/v1/packages/{name}/resolve", tag = "packages", operation_id = "resolveReference",
    params(("name" = PackageName, Path, description = "Package name"), ResolveQuery),
    responses(
        (status = 200, description = "The build the reference picks", body = Resolved,
            links(
                ("download" = (operation_id = "downloadBlob", parameters(("name" = "$response.body#/name"), ("digest" = "$response.body#/digest")))),
                ("check" = (operation_id = "checkBlob", parameters(("name" = "$response.body#/name"), ("digest" = "$response.body#/digest")))),
                ("build" = (operation_id = "getVersion", parameters(("name" = "$response.body#/name"), ("version" = "$response.body#/version"), ("arch" = "$response.body#/arch")))),
            )),
        (status = 400, description = "Not a valid package name or architecture", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may not pull this package", body = ErrorBody),
        (status = 404, description = "Nothing matches (the message lists what exists), or the version was deleted (`version_deleted`)", body = ErrorBody),
    ))]
pub async fn resolve_ref(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<ResolveQuery>,
) -> Result<Json<Resolved>, ApiError> {
    let name = parse_name(&name)?;
    principal.require(Action::Pull, name.as_str())?;
    let arch = query.arch.as_deref().map(parse_arch).transpose()?;
    let rows = state.store.versions(name.as_str())?;
    // An exact version that is gone for good says so, rather than "no such version".
    if let Some(version) = query
        .reference
        .as_deref()
        .and_then(|r| Version::parse(r).ok())
        && !rows.iter().any(|r| r.version == version)
        && state
            .store
            .was_deleted(name.as_str(), &version, arch.as_ref())?
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "version_deleted",
            format!("{name} {version} was deleted; deleted versions never come back, pick another"),
        ));
    }
    if rows.is_empty() {
        return Err(not_found(name.as_str()));
    }
    let usable: Vec<&VersionRow> = rows
        .iter()
        .filter(|r| {
            arch.as_ref()
                .is_none_or(|a| r.arch == *a || r.arch.is_any())
        })
        .collect();
    let mut versions: Vec<Version> = usable.iter().map(|r| r.version.clone()).collect();
    versions.dedup();
    let tags = state.store.tags(name.as_str())?;
    let resolution = resolve(
        name.as_str(),
        query.reference.as_deref(),
        &tags,
        &versions,
        arch.as_ref().map(Arch::as_str),
    )
    .map_err(|e| ApiError::not_found(e.to_string()))?;
    let version = resolution.version();
    let candidates: Vec<&&VersionRow> = usable.iter().filter(|r| &r.version == version).collect();
    // Prefer the exact architecture over `any`.
    let row = candidates
        .iter()
        .find(|r| arch.as_ref().is_some_and(|a| r.arch == *a))
        .or_else(|| candidates.iter().find(|r| r.arch.is_any()))
        .or_else(|| candidates.first())
        .ok_or_else(|| ApiError::not_found(format!("{name} {version} has no usable build")))?;
    Ok(Json(Resolved {
        name: name.to_string(),
        version: version.to_string(),
        arch: row.arch.to_string(),
        digest: row.digest().to_string(),
        size: row.entry.size,
        description: row.entry.description.clone(),
        matched: match resolution {
            Resolution::Latest(_) => "latest",
            Resolution::Tag { .. } => "tag",
            Resolution::Exact(_) => "exact",
            Resolution::Prefix { .. } => "prefix",
        }
        .to_owned(),
    }))
}

/// One build of one version.
#[utoipa::path(get, path = "/v1/packages/{name}/versions/{version}/{arch}", tag = "packages", operation_id = "getVersion",
    params(
        ("name" = PackageName, Path, description = "Package name"),
        ("version" = VersionString, Path, description = "Exact semver version"),
        ("arch" = Arch, Path, description = "Architecture"),
    ),
    responses(
        (status = 200, description = "The build", body = VersionInfo),
        (status = 400, description = "Not a valid package name, version or architecture", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may not pull this package", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
    ))]
pub async fn version(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath((name, version, arch)): ApiPath<(String, String, String)>,
) -> Result<Json<VersionInfo>, ApiError> {
    let name = parse_name(&name)?;
    principal.require(Action::Pull, name.as_str())?;
    let version = parse_version(&version)?;
    let arch = parse_arch(&arch)?;
    let entry = state
        .store
        .version(name.as_str(), &version, &arch)?
        .ok_or_else(|| ApiError::not_found(format!("{name} {version} ({arch}) does not exist")))?;
    Ok(Json(version_info(&VersionRow {
        version,
        arch,
        entry,
    })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete only this architecture; omit to delete every build of the version.
    #[param(value_type = Option<Arch>)]
    arch: Option<String>,
}

/// Deletes a version for good: a tombstone record replaces it, and the same name, version
/// and architecture can never be published again.
#[utoipa::path(delete, path = "/v1/packages/{name}/versions/{version}", tag = "packages", operation_id = "deleteVersion",
    params(
        ("name" = PackageName, Path, description = "Package name"),
        ("version" = VersionString, Path, description = "Exact semver version"),
        DeleteQuery,
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a valid package name, version or architecture", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may not delete this package", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "A tag points at the version, or it is already deleted", body = ErrorBody),
        (status = 507, description = "The node's disk is full; nothing was changed", body = ErrorBody),
    ))]
pub async fn delete_version(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath((name, version)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    principal.require(Action::Delete, name.as_str())?;
    let version = parse_version(&version)?;
    let arch = query.arch.as_deref().map(parse_arch).transpose()?;
    state
        .store
        .originate(LocalChange::Delete {
            name,
            version,
            arch,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
