//! Administrative endpoints: garbage collection and mirroring from another registry.

use std::time::Duration;

use axum::{Json, extract::State};
use niso_protocol::api::{ErrorBody, GcReport, GcRequest, MirrorReport, MirrorRequest};

use super::{
    AppState,
    error::{ApiError, chain},
    extract::{ApiJson, Auth},
};
use crate::mirror::{MirrorError, mirror_from};

/// Removes old versions (never tagged ones or `latest`) and unreferenced blobs. Local only.
#[utoipa::path(post, path = "/v1/gc", tag = "admin", operation_id = "collectGarbage", request_body = GcRequest,
    responses(
        (status = 200, description = "What was removed (or would be, on a dry run)", body = GcReport),
        (status = 400, description = "`keep_versions` is 0, or a body that is not `GcRequest` JSON", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
        (status = 413, description = "The body is over the node's `limits.max_json_bytes`", body = ErrorBody),
        (status = 507, description = "The node's disk is full", body = ErrorBody),
    ))]
pub async fn gc(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(request): ApiJson<GcRequest>,
) -> Result<Json<GcReport>, ApiError> {
    principal.require_admin()?;
    if request.keep_versions == 0 {
        return Err(ApiError::bad_request(
            "invalid_gc",
            "keep_versions must be at least 1; delete versions explicitly to remove them all",
        ));
    }
    let grace = Duration::from_secs(state.config.gc.grace_period_secs);
    let keep = usize::try_from(request.keep_versions).unwrap_or(usize::MAX);
    let outcome = state
        .store
        .gc(keep, request.dry_run, grace, &state.failpoints)
        .await?;
    if !request.dry_run {
        state.metrics.gc_runs.inc();
        state.last_gc.record(crate::last_gc::GcRun {
            at_ms: crate::clock::now_ms(),
            versions: outcome.versions.len() as u64,
            blobs: outcome.blobs,
            bytes: outcome.blob_bytes,
        });
        crate::upload_expiry::sweep(&state).await?;
    }
    tracing::info!(
        dry_run = request.dry_run,
        versions = outcome.versions.len(),
        blobs = outcome.blobs,
        bytes = outcome.blob_bytes,
        "gc finished"
    );
    Ok(Json(GcReport {
        dry_run: request.dry_run,
        versions: outcome.versions,
        blobs: outcome.blobs,
        blob_bytes: outcome.blob_bytes,
        blobs_in_grace: outcome.blobs_in_grace,
    }))
}

/// Copies into this node every package, version and tag that the source lets `key` pull,
/// verifying signatures and digests.
#[utoipa::path(post, path = "/v1/mirror", tag = "admin", operation_id = "mirrorRegistry", request_body = MirrorRequest,
    responses(
        (status = 200, description = "What was copied, skipped and refused", body = MirrorReport),
        (status = 400, description = "Not an http(s) URL, or a body that is not `MirrorRequest` JSON", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
        (status = 413, description = "The body is over the node's `limits.max_json_bytes`", body = ErrorBody),
        (status = 502, description = "The source failed: unreachable, refused the key, or sent something invalid", body = ErrorBody),
        (status = 507, description = "The node's disk is full", body = ErrorBody),
    ))]
pub async fn mirror(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(request): ApiJson<MirrorRequest>,
) -> Result<Json<MirrorReport>, ApiError> {
    principal.require_admin()?;
    match mirror_from(&state, &request.from, request.key.as_deref()).await {
        Ok(report) => Ok(Json(report)),
        Err(e @ MirrorError::BadUrl(_)) => Err(ApiError::bad_request("invalid_url", e.to_string())),
        Err(MirrorError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "source_failed",
            chain(&e),
        )),
    }
}
