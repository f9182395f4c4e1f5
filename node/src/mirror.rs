//! Mirroring over HTTP: pull every record another registry lets us see, fetch the blobs they
//! reference, verify both, and apply them here with their original signatures.

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures::StreamExt;
use niso_protocol::{
    Digest,
    api::{ErrorBody, MirrorReport, NodeInfo, RecordPage},
    record::{Record, RecordBody},
};
use tokio::io::AsyncWriteExt;

use crate::{
    ingest::{store_blob, verify_file},
    node::NodeState,
    replication,
    store::{Applied, ChangeError, StoreError},
};

/// Records requested per page from the source.
const PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("source URL `{0}` is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("could not reach the source registry at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the source registry refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the source registry sent an invalid response")]
    BadResponse(#[source] reqwest::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Builds the HTTP client a node uses to talk to other registries.
pub fn http_client() -> reqwest::Client {
    // Installing the process-wide TLS provider fails only if one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .user_agent(concat!("niso-node/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

pub async fn mirror_from(
    state: &Arc<NodeState>,
    base: &str,
    key: Option<&str>,
) -> Result<MirrorReport, MirrorError> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(MirrorError::BadUrl(base.to_owned()));
    }
    if let Some(report) = mirror_over_p2p(state, base).await {
        // A peer that shares nothing with us over libp2p may still let our key pull over HTTP.
        if report.records_seen > 0 || key.is_none() {
            return Ok(report);
        }
    }
    let mut report = MirrorReport {
        via: "http".to_owned(),
        ..MirrorReport::default()
    };
    let mut after = 0u64;
    loop {
        let url = format!("{base}/v1/records?after={after}&limit={PAGE}");
        let page: RecordPage = get_json(state, &url, key).await?;
        for record in page.records {
            report.records_seen += 1;
            mirror_record(state, base, key, record, &mut report).await?;
        }
        if !page.more || page.next <= after {
            break;
        }
        after = page.next;
    }
    tracing::info!(
        source = base,
        applied = report.records_applied,
        blobs = report.blobs_fetched,
        bytes = report.bytes_fetched,
        rejected = report.rejected.len(),
        "mirror finished"
    );
    Ok(report)
}

/// When the source is a node this one can reach over libp2p, a targeted sync from it.
/// `None` means: use HTTP.
async fn mirror_over_p2p(state: &Arc<NodeState>, base: &str) -> Option<MirrorReport> {
    let p2p = state.p2p.as_ref()?;
    let info: NodeInfo = get_json(state, &format!("{base}/v1/node"), None)
        .await
        .ok()?;
    let peer: libp2p::PeerId = info.peer_id.parse().ok()?;
    if peer == p2p.peer_id {
        return None;
    }
    if !p2p.is_connected(&peer) {
        for addr in &info.p2p_addrs {
            if let Ok(addr) = addr.parse() {
                let _ = p2p.dial(addr).await;
            }
        }
        if !p2p.wait_connected(&peer, Duration::from_secs(5)).await {
            tracing::info!(%peer, "source is not reachable over libp2p, mirroring over HTTP");
            return None;
        }
    }
    match replication::mirror_from_peer(state, peer).await {
        Ok(o) => Some(MirrorReport {
            via: "p2p".to_owned(),
            records_seen: o.seen,
            records_applied: o.applied,
            versions: o.versions,
            tags: o.tags,
            deletions: o.deletions,
            blobs_fetched: o.blobs,
            bytes_fetched: o.bytes,
            skipped: o.skipped,
            rejected: o.rejected,
        }),
        Err(e) => {
            tracing::info!(%peer, error = %e, "libp2p mirror failed, falling back to HTTP");
            None
        }
    }
}

async fn mirror_record(
    state: &NodeState,
    base: &str,
    key: Option<&str>,
    record: Record,
    report: &mut MirrorReport,
) -> Result<(), MirrorError> {
    if let Err(e) = record.verify() {
        reject(state, report, &record, &e.to_string());
        return Ok(());
    }
    if state.store.has_record(&record.origin, record.seq)? {
        report.skipped += 1;
        return Ok(());
    }
    let mut _pin = None;
    if let RecordBody::Manifest(m) = &record.body {
        if state
            .store
            .is_deleted(m.name.as_str(), &m.version, &m.arch)?
        {
            reject(state, report, &record, "version was deleted here");
            return Ok(());
        }
        if !state.store.blobs().contains(&m.digest) {
            match fetch_blob(state, base, key, m.name.as_str(), &m.digest, m.size).await {
                Ok((file, size)) => {
                    let limits = state.config.archive_limits();
                    let check = file.clone();
                    let verified =
                        tokio::task::spawn_blocking(move || verify_file(&check, &limits))
                            .await
                            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
                    let problem = match &verified {
                        Err(e) => Some(e.to_string()),
                        Ok(v) if v.digest != m.digest => Some(format!(
                            "blob hashed to {} instead of {}",
                            v.digest, m.digest
                        )),
                        Ok(v)
                            if v.meta.name != m.name
                                || v.meta.version != m.version
                                || v.meta.arch != m.arch =>
                        {
                            Some("package contents do not match the manifest".to_owned())
                        }
                        Ok(_) => None,
                    };
                    if let Some(problem) = problem {
                        let _ = tokio::fs::remove_file(&file).await;
                        reject(state, report, &record, &problem);
                        return Ok(());
                    }
                    _pin = Some(store_blob(&state.store, file, m.digest).await?);
                    state.failpoints.hit("mirror-blob-committed", 0).await;
                    report.blobs_fetched += 1;
                    report.bytes_fetched += size;
                }
                Err(FetchError::Mirror(e)) => return Err(e),
                Err(FetchError::Bad(problem)) => {
                    reject(state, report, &record, &problem);
                    return Ok(());
                }
            }
        } else {
            _pin = Some(state.store.blobs().pin(m.digest));
        }
    }
    let kind = record.body.kind();
    match state.store.apply(record.clone()).await {
        Ok(Applied::Stored) => {
            report.records_applied += 1;
            state.metrics.records_applied.inc();
            match kind {
                "manifest" => report.versions += 1,
                "tag" => report.tags += 1,
                _ => report.deletions += 1,
            }
        }
        Ok(Applied::Duplicate) => report.skipped += 1,
        Err(ChangeError::Store(e)) => return Err(e.into()),
        Err(e) => reject(state, report, &record, &e.to_string()),
    }
    Ok(())
}

fn reject(state: &NodeState, report: &mut MirrorReport, record: &Record, why: &str) {
    state.metrics.records_rejected.inc();
    tracing::warn!(
        origin = %record.origin,
        seq = record.seq,
        package = %record.body.package(),
        kind = record.body.kind(),
        reason = why,
        "mirror refused a record"
    );
    report.rejected.push(format!(
        "{} record {}#{} for {}: {why}",
        record.body.kind(),
        record.origin,
        record.seq,
        record.body.package()
    ));
}

enum FetchError {
    Mirror(MirrorError),
    Bad(String),
}

impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        Self::Mirror(e.into())
    }
}

impl From<std::io::Error> for FetchError {
    fn from(e: std::io::Error) -> Self {
        Self::Mirror(StoreError::Io(e).into())
    }
}

/// Streams a blob into a temp file, refusing more bytes than the manifest announced.
async fn fetch_blob(
    state: &NodeState,
    base: &str,
    key: Option<&str>,
    name: &str,
    digest: &Digest,
    size: u64,
) -> Result<(PathBuf, u64), FetchError> {
    if size > state.config.limits.max_package_bytes {
        return Err(FetchError::Bad(format!(
            "package of {size} bytes exceeds this node's limit"
        )));
    }
    let url = format!("{base}/v1/packages/{name}/blobs/{digest}");
    let response = send(state, &url, key).await.map_err(FetchError::Mirror)?;
    let path = state.store.blobs().temp_path("mirror")?;
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&path).await?);
    let mut received = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| FetchError::Mirror(MirrorError::BadResponse(e)))?;
        received += chunk.len() as u64;
        if received > size {
            drop(file);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(FetchError::Bad(
                "source sent more bytes than the manifest says".into(),
            ));
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    if received != size {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(FetchError::Bad(format!(
            "source sent {received} bytes, manifest says {size}"
        )));
    }
    Ok((path, received))
}

async fn send(
    state: &NodeState,
    url: &str,
    key: Option<&str>,
) -> Result<reqwest::Response, MirrorError> {
    let mut request = state.http.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .map_err(|source| MirrorError::Unreachable {
            url: url.to_owned(),
            source,
        })?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let message = match response.json::<ErrorBody>().await {
        Ok(body) => body.error.message,
        Err(_) => "no details".to_owned(),
    };
    Err(MirrorError::Refused { status, message })
}

async fn get_json<T: serde::de::DeserializeOwned>(
    state: &NodeState,
    url: &str,
    key: Option<&str>,
) -> Result<T, MirrorError> {
    send(state, url, key)
        .await?
        .json()
        .await
        .map_err(MirrorError::BadResponse)
}
