//! Administrative endpoints: garbage collection and mirroring from another registry.

use std::time::Duration;

use axum::{Json, extract::State};
use niso_protocol::api::{GcReport, GcRequest, MirrorReport, MirrorRequest};

use super::{
    AppState,
    error::{ApiError, chain},
    extract::{ApiJson, Auth},
};
use crate::mirror::{MirrorError, mirror_from};

/// Removes old versions (never tagged ones or `latest`) and unreferenced blobs. Local only.
#[utoipa::path(post, path = "/v1/gc", tag = "admin", request_body = GcRequest,
    responses((status = 200, body = GcReport), (status = 400, body = niso_protocol::api::ErrorBody), (status = 403, body = niso_protocol::api::ErrorBody)))]
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
#[utoipa::path(post, path = "/v1/mirror", tag = "admin", request_body = MirrorRequest,
    responses(
        (status = 200, body = MirrorReport),
        (status = 400, body = niso_protocol::api::ErrorBody),
        (status = 502, description = "The source failed", body = niso_protocol::api::ErrorBody),
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
