//! Mirroring over HTTP: pull every record another registry lets us see, fetch the blobs they
//! reference, verify both, and apply them here with their original signatures.

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures::StreamExt;
use niso_protocol::{
    api::{ErrorBody, MirrorReport, NodeInfo, RecordPage, WhoAmI},
    record::ManifestBody,
};
use tokio::io::AsyncWriteExt;

use crate::{
    intake::{self, BlobError, BlobSource, Outcome, Policy, Provided},
    node::NodeState,
    replication,
    store::StoreError,
};

/// How long a source found over HTTP gets to answer a libp2p dial before HTTP is used.
const P2P_DIAL_WAIT: Duration = Duration::from_secs(5);

/// Records requested per page from the source.
const PAGE: usize = 500;

/// Most bytes of one JSON body read from the source. A page of [`PAGE`] records of at most
/// `MAX_RECORD_LEN` bytes each, hex in JSON, stays well under it; the bound is what keeps a
/// hostile or broken source from growing this node's memory without end.
const MAX_JSON_BYTES: usize = 16 << 20;

/// Most bytes of an error body read from the source: only its message is kept.
const MAX_ERROR_BYTES: usize = 64 << 10;

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
    #[error("the source registry's response from {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("the source registry sent invalid JSON from {url}")]
    BadJson {
        url: String,
        #[source]
        source: serde_json::Error,
    },
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
    let why_http = match mirror_over_p2p(state, base).await {
        // A peer that shares nothing with us over libp2p may still let our key pull over HTTP.
        Ok(report) if report.records_seen > 0 || key.is_none() => return Ok(report),
        Ok(_) => "the source offered this node nothing over libp2p, and a key was given for HTTP"
            .to_owned(),
        Err(why) => why,
    };
    let mut outcome = Outcome::default();
    let mut blobs = HttpBlobs {
        base: base.to_owned(),
        key: key.map(str::to_owned),
    };
    let mut after = 0u64;
    loop {
        let url = format!("{base}/v1/records?after={after}&limit={PAGE}");
        let page: RecordPage = get_json(state, &url, key).await?;
        outcome.merge(intake::admit(state, Policy::Operator, page.records, &mut blobs).await?);
        if !page.more || page.next <= after {
            break;
        }
        after = page.next;
    }
    let mut report = outcome.mirror_report("http");
    report.via_reason = why_http;
    report.offered = offered_over_http(state, base, key).await;
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

/// When the source is a node this one can reach over libp2p, a targeted sync from it;
/// otherwise why not, in words for the report.
async fn mirror_over_p2p(state: &Arc<NodeState>, base: &str) -> Result<MirrorReport, String> {
    let p2p = state.p2p.as_ref().ok_or("this node runs without libp2p")?;
    let info: NodeInfo = get_json(state, &format!("{base}/v1/node"), None)
        .await
        .map_err(|e| format!("the source did not say its peer id ({e})"))?;
    let peer: libp2p::PeerId = info
        .peer_id
        .parse()
        .map_err(|_| "the source's peer id is not valid".to_owned())?;
    if peer == p2p.peer_id {
        return Err("the source is this node".to_owned());
    }
    if !p2p.is_connected(&peer) {
        for addr in &info.p2p_addrs {
            if let Ok(addr) = addr.parse() {
                let _ = p2p.dial(addr).await;
            }
        }
        if !p2p.wait_connected(&peer, P2P_DIAL_WAIT).await {
            tracing::info!(%peer, "source is not reachable over libp2p, mirroring over HTTP");
            return Err(format!(
                "the source did not answer over libp2p within {} s",
                P2P_DIAL_WAIT.as_secs()
            ));
        }
    }
    match replication::mirror_from_peer(state, peer).await {
        Ok(o) => {
            let mut report = o.mirror_report("p2p");
            report.via_reason = "the source is a libp2p peer of this node".to_owned();
            report.offered = "the source's [[share]] rules for this node".to_owned();
            Ok(report)
        }
        Err(e) => {
            tracing::info!(%peer, error = %e, "libp2p mirror failed, falling back to HTTP");
            Err(format!("syncing over libp2p failed ({e})"))
        }
    }
}

/// What the source lets `key` see over HTTP, in words: the key's pull scopes as the source
/// reports them, or anonymous access.
async fn offered_over_http(state: &NodeState, base: &str, key: Option<&str>) -> String {
    match get_json::<WhoAmI>(state, &format!("{base}/v1/whoami"), key).await {
        Ok(who) if who.key_id.is_none() => {
            "what the source shows anyone (no key was given)".to_owned()
        }
        Ok(who) => format!(
            "what key {} may pull there ({})",
            who.name.or(who.key_id).unwrap_or_default(),
            if who.scopes.is_empty() {
                "no scopes".to_owned()
            } else {
                who.scopes.join(", ")
            }
        ),
        Err(_) => "what the key may pull there (the source did not say its scopes)".to_owned(),
    }
}

/// Blobs from the source registry's HTTP API, checked by the intake before they are stored.
struct HttpBlobs {
    base: String,
    key: Option<String>,
}

impl BlobSource for HttpBlobs {
    async fn provide(
        &mut self,
        state: &Arc<NodeState>,
        m: &ManifestBody,
    ) -> Result<Provided, BlobError> {
        let file = fetch_blob(
            state,
            &self.base,
            self.key.as_deref(),
            m.name.as_str(),
            &m.digest.to_string(),
            m.size,
        )
        .await?;
        Ok(Provided::File(file))
    }

    fn committed_failpoint(&self) -> &'static str {
        "mirror-blob-committed"
    }
}

impl From<std::io::Error> for BlobError {
    fn from(e: std::io::Error) -> Self {
        Self::Unavailable(format!("could not write the blob here: {e}"))
    }
}

/// Streams a blob into a temp file, refusing more bytes than the manifest announced.
async fn fetch_blob(
    state: &NodeState,
    base: &str,
    key: Option<&str>,
    name: &str,
    digest: &str,
    size: u64,
) -> Result<PathBuf, BlobError> {
    let url = format!("{base}/v1/packages/{name}/blobs/{digest}");
    let unavailable = |e: MirrorError| BlobError::Unavailable(crate::http::error::chain(&e));
    let response = send(state, &url, key).await.map_err(unavailable)?;
    let path = state.store.blobs().temp_path("mirror")?;
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&path).await?);
    let mut received = 0u64;
    let mut stream = response.bytes_stream();
    let problem = loop {
        let chunk = match stream.next().await {
            None => break None,
            Some(Err(e)) => break Some(unavailable(MirrorError::BadResponse(e))),
            Some(Ok(chunk)) => chunk,
        };
        received += chunk.len() as u64;
        if received > size {
            break Some(BlobError::Bad(
                "the source sent more bytes than the manifest says".into(),
            ));
        }
        if let Err(e) = file.write_all(&chunk).await {
            break Some(e.into());
        }
    };
    let problem = match (problem, file.flush().await) {
        (Some(p), _) => Some(p),
        (None, Err(e)) => Some(e.into()),
        (None, Ok(())) if received != size => Some(BlobError::Bad(format!(
            "the source sent {received} bytes, the manifest says {size}"
        ))),
        (None, Ok(())) => None,
    };
    if let Some(problem) = problem {
        drop(file);
        let _ = tokio::fs::remove_file(&path).await;
        return Err(problem);
    }
    Ok(path)
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
    let message = match read_bounded(response, url, MAX_ERROR_BYTES).await {
        Ok(body) => match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(body) => body.error.message,
            Err(_) => "no details".to_owned(),
        },
        Err(MirrorError::TooLarge { limit, .. }) => {
            format!("no details (its error body is larger than {limit} bytes)")
        }
        Err(_) => "no details".to_owned(),
    };
    Err(MirrorError::Refused { status, message })
}

async fn get_json<T: serde::de::DeserializeOwned>(
    state: &NodeState,
    url: &str,
    key: Option<&str>,
) -> Result<T, MirrorError> {
    let response = send(state, url, key).await?;
    let body = read_bounded(response, url, MAX_JSON_BYTES).await?;
    serde_json::from_slice(&body).map_err(|source| MirrorError::BadJson {
        url: url.to_owned(),
        source,
    })
}

/// The whole body of `response`, refused as soon as it passes `limit` bytes: by its
/// `Content-Length` before reading, or by counting as it streams when that is absent or false.
async fn read_bounded(
    response: reqwest::Response,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, MirrorError> {
    let too_large = || MirrorError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    let announced = response.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(too_large());
    }
    // Capacity from the header only up to the limit, so a lying header cannot reserve more.
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(limit).min(limit));
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(MirrorError::BadResponse)?;
        if chunk.len() > limit - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
