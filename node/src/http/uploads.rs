//! Pushing a package: open an upload, send its bytes in one or more `PATCH`es (resuming at the
//! offset the node reports), then `PUT` with the expected digest to verify and publish.

use std::time::Duration;

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use niso_protocol::{
    Digest, PackageName,
    api::{ErrorBody, Published, UploadInfo, UploadList, UploadStatus},
    api_schema::{Bytes, UploadId},
    record::ManifestBody,
    scope::Action,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    AppState,
    error::{ApiError, chain},
    extract::{ApiPath, ApiQuery, Auth},
    packages::parse_name,
};
use crate::{
    api_keys::Principal,
    clock::now_ms,
    ingest::{VerifyError, store_blob, verify_file},
    node::UploadLease,
    store::{ChangeError, LocalChange, OpenUploadError, UploadEntry},
};

/// Header carrying the byte offset of an upload.
pub const UPLOAD_OFFSET: &str = "upload-offset";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// The `blake3:` digest of the package about to be sent. When these exact bytes are
    /// already published under this package, the answer is `200` with the published version
    /// and no upload is opened.
    #[param(value_type = Option<Digest>)]
    digest: Option<String>,
}

/// Starts an upload for a package the key may push.
#[utoipa::path(post, path = "/v1/packages/{name}/uploads", tag = "uploads", operation_id = "openUpload",
    params(("name" = PackageName, Path, description = "Package being pushed"), CreateQuery),
    responses(
        (status = 201, description = "The upload is open and empty", body = UploadStatus,
            headers(("Upload-Offset" = u64, description = "Bytes held: 0")),
            links(
                ("append" = (operation_id = "appendToUpload", parameters(("id" = "$response.body#/id")))),
                ("status" = (operation_id = "getUpload", parameters(("id" = "$response.body#/id")))),
                ("finish" = (operation_id = "finishUpload", parameters(("id" = "$response.body#/id")))),
                ("cancel" = (operation_id = "cancelUpload", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 200, description = "These exact bytes were already published; no upload was opened", body = Published),
        (status = 400, description = "Not a valid package name or digest", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may not push to this package", body = ErrorBody),
        (status = 429, description = "Too many open uploads for this key", body = ErrorBody),
        (status = 507, description = "The node's disk is full; no upload was opened", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<CreateQuery>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    principal.require(Action::Push, name.as_str())?;
    if let Some(digest) = query.digest.as_deref() {
        let digest: Digest = digest
            .parse()
            .map_err(|e: niso_protocol::digest::DigestError| {
                ApiError::bad_request("invalid_digest", e.to_string())
            })?;
        // The answer names only what the caller's own file already says (name, version,
        // arch, size), so a push-only key may have it; a blake3 digest cannot be guessed.
        if let Some(row) = state
            .store
            .versions(name.as_str())?
            .into_iter()
            .find(|row| row.digest() == digest)
        {
            let published = Published {
                name: name.to_string(),
                version: row.version.to_string(),
                arch: row.arch.to_string(),
                digest: digest.to_string(),
                size: row.entry.size,
                created: false,
            };
            return Ok((StatusCode::OK, Json(published)).into_response());
        }
    }
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| ApiError::internal(&std::io::Error::other(e)))?;
    let id = niso_protocol::hex::encode(&random);
    let max = state.config.limits.max_open_uploads_per_key;
    let opened = state
        .store
        .create_upload(
            id.clone(),
            UploadEntry {
                name: name.to_string(),
                key_id: principal.key_id.clone(),
                created_ms: now_ms(),
            },
            max,
        )
        .await;
    match opened {
        Ok(()) => {}
        Err(OpenUploadError::TooMany { open, limit }) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_uploads",
                format!(
                    "this key already has {open} open uploads (limit {limit}); list them with `niso registry uploads` and cancel with `--cancel ID`, or wait: uploads idle for {} s expire",
                    state.config.limits.upload_idle_timeout_secs
                ),
            ));
        }
        Err(OpenUploadError::Store(e)) => return Err(e.into()),
    }
    tracing::info!(upload = %id, package = %name, key_id = principal.key_id.as_deref().unwrap_or("-"), "upload opened");
    Ok(status_response(StatusCode::CREATED, id, 0))
}

/// Whether `principal` may see and use an upload: its own key's, or any with an admin key.
fn may_use(principal: &Principal, entry: &UploadEntry) -> bool {
    principal.scopes.is_admin() || (principal.key_id.is_some() && principal.key_id == entry.key_id)
}

/// Lists open uploads: the calling key's own, or every key's for an admin key.
#[utoipa::path(get, path = "/v1/uploads", tag = "uploads", operation_id = "listUploads",
    responses(
        (status = 200, description = "Open uploads, oldest first", body = UploadList),
        (status = 401, description = "No valid key (anonymous callers have no uploads)", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Json<UploadList>, ApiError> {
    principal.anonymous_needs_key()?;
    let now = std::time::SystemTime::now();
    let mut uploads = Vec::new();
    for (id, entry) in state.store.uploads()? {
        if !may_use(&principal, &entry) {
            continue;
        }
        // A file gone between the read and now is an upload that just ended.
        let path = state.store.upload_path(&id);
        let Ok(meta) = crate::offload::io(move || std::fs::metadata(path)).await else {
            continue;
        };
        let idle = meta
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        uploads.push(UploadInfo {
            id,
            package: entry.name,
            offset: meta.len(),
            key_id: entry.key_id,
            created_ms: entry.created_ms,
            idle_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
        });
    }
    uploads.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    Ok(Json(UploadList { uploads }))
}

fn status_response(status: StatusCode, id: String, offset: u64) -> Response {
    let mut response = (status, Json(UploadStatus { id, offset })).into_response();
    response
        .headers_mut()
        .insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    response
}

/// Looks up an upload, checks the key may push its package, and takes it for this request.
async fn open_upload<'a>(
    state: &'a AppState,
    principal: &Principal,
    id: &str,
) -> Result<(UploadEntry, UploadLease<'a>, std::path::PathBuf), ApiError> {
    let missing = || {
        ApiError::not_found(format!(
            "upload {id} does not exist (finished, cancelled or expired); start a new push"
        ))
    };
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.len() != 32 {
        return Err(missing());
    }
    let entry = state.store.upload(id)?.ok_or_else(missing)?;
    // Another key's upload reads as absent: its id is not for this key to learn about.
    if !may_use(principal, &entry) {
        return Err(missing());
    }
    principal.require(Action::Push, &entry.name)?;
    let lease = state.lease_upload(id).ok_or_else(|| {
        ApiError::conflict(
            "upload_busy",
            "another request is writing to this upload; retry when it ends",
        )
    })?;
    let path = state.store.upload_path(id);
    if !path.exists() {
        return Err(missing());
    }
    Ok((entry, lease, path))
}

/// Deletes an upload, holding its lease until the file and the row are gone: the next request
/// to take the upload finds it whole or not at all, never a row whose file vanishes under it.
async fn remove(state: &AppState, id: String, lease: UploadLease<'_>) -> Result<(), ApiError> {
    state.store.remove_upload(id).await?;
    drop(lease);
    Ok(())
}

/// Reports how many bytes an upload holds (also in the `Upload-Offset` header).
#[utoipa::path(get, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "getUpload",
    params(("id" = UploadId, Path, description = "Upload id")),
    responses(
        (status = 200, description = "The bytes held so far", body = UploadStatus,
            headers(("Upload-Offset" = u64, description = "Bytes held: where the next `PATCH` starts"))),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may no longer push to the upload's package", body = ErrorBody),
        (status = 404, description = "No such upload for this key (finished, cancelled, expired or another key's)", body = ErrorBody),
        (status = 409, description = "Another request is writing to this upload (`upload_busy`)", body = ErrorBody),
    ))]
pub async fn status(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (_, _lease, path) = open_upload(&state, &principal, &id).await?;
    let offset = upload_len(&path).await?;
    Ok(status_response(StatusCode::OK, id, offset))
}

/// Appends the request body to the upload. `Upload-Offset` must equal the bytes already held.
#[utoipa::path(patch, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "appendToUpload",
    params(
        ("id" = UploadId, Path, description = "Upload id"),
        ("Upload-Offset" = u64, Header, description = "Where this chunk starts: the bytes the upload holds", format = "uint64", maximum = 18446744073709551615_u64),
    ),
    request_body(content = Option<Bytes>, description = "The next bytes of the package; none appends nothing", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The bytes were appended", body = UploadStatus,
            headers(("Upload-Offset" = u64, description = "Bytes held now"))),
        (status = 400, description = "No `Upload-Offset` header, or the body broke off (`upload_interrupted`; the bytes that arrived are kept)", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may no longer push to the upload's package", body = ErrorBody),
        (status = 404, description = "No such upload for this key", body = ErrorBody),
        (status = 408, description = "The body went silent for the node's `http.body_idle_timeout_secs`; the bytes that arrived are kept", body = ErrorBody),
        (status = 409, description = "Offset mismatch (the message gives the right one), or another request is writing to this upload", body = ErrorBody),
        (status = 413, description = "The package would pass the node's `limits.max_package_bytes`; the upload is removed", body = ErrorBody),
        (status = 507, description = "The node's disk is full; the bytes before it are kept", body = ErrorBody),
    ))]
pub async fn append(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (_, lease, path) = open_upload(&state, &principal, &id).await?;
    let current = upload_len(&path).await?;
    let offset: u64 = headers
        .get(UPLOAD_OFFSET)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_offset",
                "send the `Upload-Offset` header with the byte offset this chunk starts at",
            )
        })?;
    if offset != current {
        return Err(ApiError::conflict(
            "offset_mismatch",
            format!("upload holds {current} bytes; resume with Upload-Offset: {current}"),
        ));
    }
    let max = state.config.limits.max_package_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| current.saturating_add(len) > max) {
        remove(&state, id, lease).await?;
        return Err(too_large(max));
    }
    let mut file = crate::offload::Appender::open(&path).await?;
    let mut written = current;
    let mut stream = body.into_data_stream();
    let body_idle = Duration::from_secs(state.config.http.body_idle_timeout_secs.max(1));
    let mut ended = BodyEnd::Complete;
    loop {
        // A sender that goes silent must not hold the upload: after `body_idle` without a
        // byte the request ends and the lease goes with it, so a resumed PATCH gets in.
        let chunk = match tokio::time::timeout(body_idle, stream.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                ended = BodyEnd::Stalled;
                break;
            }
        };
        match chunk {
            Ok(bytes) => {
                written += bytes.len() as u64;
                if written > max {
                    drop(file);
                    remove(&state, id, lease).await?;
                    return Err(too_large(max));
                }
                file.write_all(&bytes).await?;
                state.failpoints.hit("upload-bytes", written).await;
            }
            // The HTTP server's own body-idle deadline (the same length) may fire first.
            Err(e) if went_silent(&e) => {
                ended = BodyEnd::Stalled;
                break;
            }
            Err(e) => {
                ended = BodyEnd::Broken(e);
                break;
            }
        }
    }
    // The offset the client is told (now, or by a later GET) must survive a node crash.
    file.sync(state.config.durability).await?;
    drop(file);
    drop(lease);
    state.metrics.upload_bytes.inc_by(written - current);
    match ended {
        BodyEnd::Complete => {}
        BodyEnd::Broken(e) => {
            // What arrived is kept: the client asks for the offset and resumes from there.
            tracing::info!(upload = %id, held = written, error = %e, "upload interrupted");
            return Err(ApiError::bad_request(
                "upload_interrupted",
                format!(
                    "the request body ended early; the upload holds {written} bytes, resume from there"
                ),
            ));
        }
        BodyEnd::Stalled => {
            tracing::info!(upload = %id, held = written, idle_secs = body_idle.as_secs(), "upload body stalled");
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_stalled",
                format!(
                    "no bytes arrived for {} s; the upload holds {written} bytes, resume from there",
                    body_idle.as_secs()
                ),
            ));
        }
    }
    Ok(status_response(StatusCode::OK, id, written))
}

/// How many bytes an upload's file holds.
async fn upload_len(path: &std::path::Path) -> std::io::Result<u64> {
    let path = path.to_owned();
    crate::offload::io(move || std::fs::metadata(path).map(|m| m.len())).await
}

/// Whether a body error is the server's body-idle deadline (`http::server`).
fn went_silent(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<super::server::BodyIdle>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// How a `PATCH` body stopped.
enum BodyEnd {
    Complete,
    /// The connection broke or the body was shorter than announced.
    Broken(axum::Error),
    /// Nothing arrived for the body-idle timeout.
    Stalled,
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("package is larger than this registry's limit of {max} bytes"),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FinishQuery {
    /// The `blake3:` digest of the whole package, as the client computed it.
    #[param(value_type = Digest)]
    digest: String,
}

/// Verifies the uploaded package against its digest and its own contents, then publishes it.
#[utoipa::path(put, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "finishUpload",
    params(("id" = UploadId, Path, description = "Upload id"), FinishQuery),
    responses(
        (status = 201, description = "Published", body = Published,
            links(
                ("build" = (operation_id = "getVersion", parameters(("name" = "$response.body#/name"), ("version" = "$response.body#/version"), ("arch" = "$response.body#/arch")))),
                ("download" = (operation_id = "downloadBlob", parameters(("name" = "$response.body#/name"), ("digest" = "$response.body#/digest")))),
            )),
        (status = 200, description = "These exact bytes were already published", body = Published),
        (status = 400, description = "No valid digest, a digest mismatch, an invalid archive or the wrong package name; the upload is removed", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may no longer push to the upload's package", body = ErrorBody),
        (status = 404, description = "No such upload for this key", body = ErrorBody),
        (status = 409, description = "The version exists with other contents, or was deleted, or another request is writing to this upload", body = ErrorBody),
        (status = 413, description = "The package is over the node's `limits.max_package_bytes`", body = ErrorBody),
        (status = 507, description = "The node's disk is full; nothing was published", body = ErrorBody),
    ))]
pub async fn finish(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<FinishQuery>,
) -> Result<Response, ApiError> {
    let expected: Digest =
        query
            .digest
            .parse()
            .map_err(|e: niso_protocol::digest::DigestError| {
                ApiError::bad_request("invalid_digest", e.to_string())
            })?;
    let (entry, lease, path) = open_upload(&state, &principal, &id).await?;
    let verified = match check_upload(&state, &entry, &path, expected).await {
        Ok(v) => v,
        Err(error) => {
            // A bad upload can never succeed: drop it rather than keep its bytes around.
            if error.status != StatusCode::INTERNAL_SERVER_ERROR {
                remove(&state, id, lease).await?;
            }
            return Err(error);
        }
    };
    let meta = &verified.meta;
    let mut published = Published {
        name: meta.name.to_string(),
        version: meta.version.to_string(),
        arch: meta.arch.to_string(),
        digest: verified.digest.to_string(),
        size: verified.size,
        created: true,
    };
    // Answer what can be answered before the blob is stored, so a refused push leaves no
    // orphan behind. The writer checks again under its lock.
    let manifest = ManifestBody {
        name: meta.name.clone(),
        version: meta.version.clone(),
        arch: meta.arch.clone(),
        digest: verified.digest,
        size: verified.size,
        description: meta.description.clone(),
    };
    // A push-only key learns that the version exists, not what it holds.
    let may_see = principal.scopes.allows(Action::Pull, meta.name.as_str());
    let shown = |e: ChangeError| if may_see { e } else { e.redacted() };
    let new = match state.store.check_publish(&manifest) {
        Ok(new) => new,
        Err(ChangeError::Store(e)) => return Err(e.into()),
        Err(refusal) => {
            remove(&state, id, lease).await?;
            return Err(shown(refusal).into());
        }
    };
    if !new {
        remove(&state, id, lease).await?;
        // The same bytes already published: succeed without a new record.
        published.created = false;
        return Ok((StatusCode::OK, Json(published)).into_response());
    }
    state.failpoints.hit("push-before-blob", 0).await;
    let _pin = store_blob(&state.store, path, verified.digest).await?;
    state.failpoints.hit("push-blob-committed", 0).await;
    let change = LocalChange::Publish(manifest);
    match state.store.originate_from_upload(change, id.clone()).await {
        Ok(_) => drop(lease),
        Err(refusal) => {
            remove(&state, id, lease).await?;
            return Err(shown(refusal).into());
        }
    }
    state.metrics.packages_published.inc();
    tracing::info!(
        package = %published.name,
        version = %published.version,
        arch = %published.arch,
        size = published.size,
        "published"
    );
    Ok((StatusCode::CREATED, Json(published)).into_response())
}

/// Hashes and inspects the uploaded file and checks it is what the client said it pushed.
async fn check_upload(
    state: &AppState,
    entry: &UploadEntry,
    path: &std::path::Path,
    expected: Digest,
) -> Result<crate::ingest::Verified, ApiError> {
    let limits = state.config.archive_limits();
    let file = path.to_owned();
    let verified = crate::offload::spawn(move || verify_file(&file, &limits))
        .await
        .map_err(|e| ApiError::internal(&std::io::Error::other(e)))?
        .map_err(|e| match e {
            VerifyError::Archive(e) => ApiError::bad_request("invalid_archive", chain(&e)),
            VerifyError::Io(e) => ApiError::internal(&e),
        })?;
    if verified.digest != expected {
        return Err(ApiError::bad_request(
            "digest_mismatch",
            format!(
                "the upload hashes to {} but the client said {expected}; the bytes changed in transit, push again",
                verified.digest
            ),
        ));
    }
    if verified.meta.name.as_str() != entry.name {
        return Err(ApiError::bad_request(
            "name_mismatch",
            format!(
                "the archive's niso.toml names package {} but the upload was opened for {}",
                verified.meta.name, entry.name
            ),
        ));
    }
    if verified.size > state.config.limits.max_package_bytes {
        return Err(too_large(state.config.limits.max_package_bytes));
    }
    Ok(verified)
}

/// Cancels an upload and deletes what it received.
#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "cancelUpload",
    params(("id" = UploadId, Path, description = "Upload id")),
    responses(
        (status = 204, description = "Cancelled; its bytes are deleted"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may no longer push to the upload's package", body = ErrorBody),
        (status = 404, description = "No such upload for this key", body = ErrorBody),
        (status = 409, description = "Another request is writing to this upload (`upload_busy`)", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let (_, lease, _) = open_upload(&state, &principal, &id).await?;
    remove(&state, id, lease).await?;
    Ok(StatusCode::NO_CONTENT)
}
