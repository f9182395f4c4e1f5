//! Package downloads: a blob by digest, with `HEAD` and single-range `Range` support, streamed
//! from disk so memory stays flat in the blob's size.

use std::io::SeekFrom;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use niso_protocol::{Digest, PackageName, api::ErrorBody, api_schema::Bytes, scope::Action};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use tokio_util::io::ReaderStream;

use super::{
    AppState,
    error::ApiError,
    extract::{ApiPath, Auth},
    packages::parse_name,
};

/// Bytes under a digest never change, but only anonymously readable ones may sit in shared
/// caches: a blob fetched with a key is for that key's holder alone.
fn cache_control(principal: &crate::api_keys::Principal) -> &'static str {
    if principal.key_id.is_none() {
        "public, max-age=31536000, immutable"
    } else {
        "private, max-age=31536000, immutable"
    }
}

/// Read size when streaming a blob.
const STREAM_CHUNK: usize = 256 * 1024;

/// Downloads a package archive. `Range: bytes=A-B` resumes a partial download.
#[utoipa::path(get, path = "/v1/packages/{name}/blobs/{digest}", tag = "blobs", operation_id = "downloadBlob",
    params(
        ("name" = PackageName, Path, description = "Package the blob belongs to"),
        ("digest" = Digest, Path, description = "The blob's digest"),
        ("Range" = Option<String>, Header, description = "One range, `bytes=START-END`, `bytes=START-` or `bytes=-LAST`; several ranges get the whole blob",
            pattern = "^bytes=(?:[0-9]+-[0-9]*|-[0-9]+)(?:, *(?:[0-9]+-[0-9]*|-[0-9]+))*$"),
    ),
    responses(
        (status = 200, description = "The whole blob", body = Bytes, content_type = "application/octet-stream",
            headers(("ETag" = String, description = "The digest, quoted"))),
        (status = 206, description = "The requested range", body = Bytes, content_type = "application/octet-stream",
            headers(("Content-Range" = String, description = "`bytes START-END/SIZE`"))),
        (status = 400, description = "Not a valid package name or digest", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The key may not pull this package", body = ErrorBody),
        (status = 404, description = "The package has no version with this digest", body = ErrorBody),
        (status = 416, description = "The range does not fit the blob", body = ErrorBody,
            headers(("Content-Range" = String, description = "`bytes */SIZE`"))),
        (status = 502, description = "A lazily replicated blob could not be fetched from peers", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiPath((name, digest)): ApiPath<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    principal.require(Action::Pull, name.as_str())?;
    let digest: Digest = digest
        .parse()
        .map_err(|e: niso_protocol::digest::DigestError| {
            ApiError::bad_request("invalid_digest", e.to_string())
        })?;
    // A blob is served only through a package that references it, so a key scoped to some
    // packages cannot read another package's bytes by digest.
    let versions = state.store.versions(name.as_str())?;
    let Some(row) = versions.iter().find(|r| r.digest() == digest) else {
        return Err(ApiError::not_found(format!("{name} has no blob {digest}")));
    };
    let path = state.store.blobs().path(&digest);
    if !path.is_file() {
        // A lazily replicated version: fetch from peers, streaming verified bytes meanwhile.
        let origin = crate::identity::peer_id(&niso_protocol::record::OriginKey(row.entry.origin));
        return lazy(
            &state,
            name.as_str(),
            digest,
            row.entry.size,
            origin,
            headers.contains_key(header::RANGE),
            &method,
        )
        .await;
    }
    let mut file = tokio::fs::File::open(&path).await?;
    let size = file.metadata().await?.len();

    let range = match headers.get(header::RANGE) {
        None => None,
        Some(value) => {
            let text = value.to_str().unwrap_or_default();
            let parsed = http_range_header::parse_range_header(text).and_then(|r| r.validate(size));
            match parsed {
                Ok(ranges) if ranges.len() == 1 => Some(ranges[0].clone()),
                // Several ranges: answering with the whole blob is allowed and simpler.
                Ok(_) => None,
                Err(_) => {
                    let mut response = ApiError::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "range_not_satisfiable",
                        format!("range `{text}` does not fit a blob of {size} bytes"),
                    )
                    .into_response();
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                        response.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    return Ok(response);
                }
            }
        }
    };

    let (status, start, len) = match &range {
        Some(r) => (
            StatusCode::PARTIAL_CONTENT,
            *r.start(),
            r.end() - r.start() + 1,
        ),
        None => (StatusCode::OK, 0, size),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::CACHE_CONTROL, cache_control(&principal));
    if let Some(r) = &range {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", r.start(), r.end()),
        );
    }
    if method == Method::HEAD {
        return builder
            .body(Body::empty())
            .map_err(|e| ApiError::internal(&e));
    }
    file.seek(SeekFrom::Start(start)).await?;
    state.metrics.download_bytes.inc_by(len);
    let stream = ReaderStream::with_capacity(file.take(len), STREAM_CHUNK);
    builder
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(&e))
}

/// The headers a download would carry (size, `ETag`, `Content-Range`), without the bytes.
#[utoipa::path(head, path = "/v1/packages/{name}/blobs/{digest}", tag = "blobs", operation_id = "checkBlob",
    params(
        ("name" = PackageName, Path, description = "Package the blob belongs to"),
        ("digest" = Digest, Path, description = "The blob's digest"),
        ("Range" = Option<String>, Header, description = "As for a download",
            pattern = "^bytes=(?:[0-9]+-[0-9]*|-[0-9]+)(?:, *(?:[0-9]+-[0-9]*|-[0-9]+))*$"),
    ),
    responses(
        (status = 200, description = "The blob is here; `Content-Length` is its size",
            headers(("ETag" = String, description = "The digest, quoted"))),
        (status = 206, description = "The range fits the blob",
            headers(("Content-Range" = String, description = "`bytes START-END/SIZE`"))),
        (status = 400, description = "Not a valid package name or digest"),
        (status = 401, description = "No valid key"),
        (status = 403, description = "The key may not pull this package"),
        (status = 404, description = "The package has no version with this digest"),
        (status = 416, description = "The range does not fit the blob"),
        (status = 502, description = "A lazily replicated blob could not be fetched from peers"),
    ))]
pub async fn head(
    state: State<AppState>,
    auth: Auth,
    path: ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get(state, auth, path, Method::HEAD, headers).await
}

/// Serves a blob this node holds only as a record: starts (or joins) the fetch from peers and
/// streams each verified byte as it lands. Range requests wait for the whole blob.
async fn lazy(
    state: &AppState,
    package: &str,
    digest: Digest,
    size: u64,
    origin: String,
    ranged: bool,
    method: &Method,
) -> Result<Response, ApiError> {
    if state.p2p.is_none() {
        tracing::error!(%digest, "blob referenced by a live version is missing");
        return Err(ApiError::not_found(format!(
            "blob {digest} is missing on this node"
        )));
    }
    let hints: Vec<libp2p::PeerId> = origin.parse().into_iter().collect();
    let reader = state
        .fetcher
        .open(state, package, digest, size, hints, ranged)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "fetch_failed",
                format!(
                    "this node replicates the package lazily and could not fetch it from peers: {}",
                    super::error::chain(&e)
                ),
            )
        })?;
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .header(header::ETAG, format!("\"{digest}\""));
    if *method == Method::HEAD {
        return builder
            .body(Body::empty())
            .map_err(|e| ApiError::internal(&e));
    }
    state.metrics.download_bytes.inc_by(size);
    let stream = futures::stream::unfold(reader, |mut reader| async move {
        let chunk = reader.next_chunk(STREAM_CHUNK).await?;
        Some((chunk, reader))
    });
    builder
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(&e))
}
