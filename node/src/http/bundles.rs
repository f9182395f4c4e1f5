//! Air-gapped bundles over HTTP: export streams a bundle out, import streams one in and
//! verifies it whole before anything becomes visible. Admin only.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio_util::io::{ReaderStream, SyncIoBridge};
use utoipa::IntoParams;

use super::{
    AppState,
    error::{ApiError, chain},
    extract::{ApiQuery, Auth},
};
use crate::bundle::{self, BundleError, ExportFilter, ImportReport, import};
use niso_protocol::{api::ErrorBody, api_schema::Bytes};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Log position to start after: the `mark` of the previous bundle (0 for everything).
    #[serde(default)]
    #[param(format = "uint64", maximum = 18446744073709551615_u64)]
    since: u64,
    /// Comma-separated package-name globs; omit for every package.
    packages: Option<String>,
}

/// Streams a bundle (tar) of records and blobs. Its `niso-bundle.json` carries the `mark`
/// for the next incremental export.
#[utoipa::path(get, path = "/v1/export", tag = "admin", operation_id = "exportBundle", params(ExportQuery),
    responses(
        (status = 200, description = "The bundle", body = Bytes, content_type = "application/x-tar"),
        (status = 400, description = "An invalid package glob, or `since` that is not a number", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
        (status = 502, description = "A blob the bundle needs is not here and could not be fetched; nothing was exported", body = ErrorBody),
    ))]
pub async fn export_bundle(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let mut filter = ExportFilter {
        since: query.since,
        packages: Vec::new(),
    };
    for g in query
        .packages
        .iter()
        .flat_map(|p| p.split(','))
        .filter(|g| !g.is_empty())
    {
        let glob = globset::Glob::new(g).map_err(|e| {
            ApiError::bad_request(
                "invalid_query",
                format!("package glob `{g}` is invalid: {}", e.kind()),
            )
        })?;
        filter.packages.push(glob.compile_matcher());
    }
    // Everything that can fail for a reason the caller should hear about fails here, before
    // the first byte: a blob this node cannot produce is an error, never a short bundle.
    let plan = bundle::plan(&state, &filter)?;
    let pins = bundle::gather(&state, &plan).await?;
    let (writer, reader) = tokio::io::duplex(1 << 20);
    let exporting = state.clone();
    tokio::task::spawn_blocking(move || {
        let out = SyncIoBridge::new(writer);
        // A failure midway (I/O) truncates the stream; the trailer lets readers know.
        if let Err(e) = bundle::write(&exporting, &plan, out) {
            tracing::warn!(error = %chain(&e), "export failed");
        }
        drop(pins);
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"niso-bundle.tar\"",
            ),
        ],
        Body::from_stream(ReaderStream::with_capacity(reader, 256 * 1024)),
    )
        .into_response())
}

/// Verifies and imports a bundle. Records no `[[replicate]]` rule accepts are skipped; any bad
/// signature or digest rejects the bundle whole.
#[utoipa::path(post, path = "/v1/import", tag = "admin", operation_id = "importBundle",
    request_body(content = Bytes, description = "A bundle as `GET /v1/export` writes it", content_type = "application/x-tar"),
    responses(
        (status = 200, description = "What the import took in and refused", body = ImportReport),
        (status = 400, description = "Invalid or tampered bundle, or one that broke off; nothing was imported", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
        (status = 413, description = "The bundle is over the node's `limits.max_bundle_bytes`", body = ErrorBody),
        (status = 507, description = "The node's disk is full; nothing was imported", body = ErrorBody),
    ))]
pub async fn import_bundle(
    State(state): State<AppState>,
    Auth(principal): Auth,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    principal.require_admin()?;
    let path = state.store.blobs().temp_path("bundle")?;
    let max = state.config.limits.max_bundle_bytes;
    let received = async {
        let mut file =
            tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&path).await?);
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(
                    "upload_interrupted",
                    format!("the bundle upload broke off: {e}"),
                )
            })?;
            total += chunk.len() as u64;
            if total > max {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("bundle is larger than this registry's limit of {max} bytes"),
                ));
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = received {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    let outcome = import(&state, path.clone()).await;
    let _ = tokio::fs::remove_file(&path).await;
    match outcome {
        Ok(report) => {
            tracing::info!(source = %report.source, applied = report.records_applied, blobs = report.blobs, "bundle imported");
            Ok(Json(report))
        }
        Err(e) => {
            tracing::warn!(error = %e, "bundle rejected");
            Err(e.into())
        }
    }
}

impl From<BundleError> for ApiError {
    fn from(e: BundleError) -> Self {
        match e {
            BundleError::Invalid(_) | BundleError::Tampered(_) => {
                ApiError::bad_request("invalid_bundle", format!("{e}; nothing was imported"))
            }
            BundleError::MissingBlob { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "blob_unavailable",
                format!("{e}; nothing was exported"),
            ),
            BundleError::Io(e) => e.into(),
            BundleError::Store(e) => e.into(),
        }
    }
}
