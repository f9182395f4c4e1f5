//! Length-prefixed postcard frames on libp2p streams, and every limit and deadline on the
//! streams peers open to us: frame sizes, how long a frame may take, and how many inbound
//! streams one peer and all peers may hold, so a slow or hostile peer cannot hold a task, a
//! slot or memory, nor take the service from others.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;
use niso_protocol::federation::{FrameError, MAX_FRAME, decode_frame, encode_frame};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long one frame may take to arrive or leave once a request is under way (a page, a
/// response header), and how long opening a stream may take.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request, the first frame on a stream a peer opens to us.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Inbound sync streams open at once across all peers: a backstop behind the per-peer limit,
/// sized so that peers up to the connection limit each fit a few.
pub const SYNC_STREAMS: usize = 256;
/// Pulls served at once; a slot is taken only once a well-formed request has arrived, so
/// idle streams never hold one.
pub const SYNC_SERVING: usize = 32;
/// Inbound blob streams open at once across all peers, waiting or served: the backstop.
pub const BLOB_STREAMS: usize = 256;
/// Blob transfers served at once, also taken only after the request.
pub const BLOB_SERVING: usize = 16;
/// Inbound streams of one protocol that may wait, negotiated, for the accept loop to take
/// them (see `inbound`). Room for a burst from many connections at once; the accept loop takes
/// each without waiting and then applies the limits above.
pub const INBOUND_BURST: usize = 128;
/// How many of those [`INBOUND_BURST`] places one peer may take, over all its connections, so
/// a peer that opens streams faster than we take them cannot crowd out everyone else's.
pub const INBOUND_BURST_PER_PEER: usize = 32;
/// How long a request waits for a serving slot before it is turned away.
pub const SERVING_WAIT: Duration = Duration::from_secs(1);
/// The shortest request deadline honoured: shorter would strike honest peers for latency.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);

/// Per-peer stream limits and the request deadline: `[p2p.limits]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamLimits {
    /// How long a peer that opened a stream has to send its request. Short, because an
    /// honest peer opens a stream with its request ready; an idle stream is a strike.
    pub request_timeout_ms: u64,
    /// Inbound `/niso/sync/2` streams (pulls and pokes) one peer may hold at once. A peer
    /// pulls one page at a time, so a few leave room for pokes and an operator's mirror.
    pub sync_per_peer: usize,
    /// Inbound `/niso/blob/1` streams one peer may hold at once. A fetch asks each peer for
    /// one segment at a time, so this is about how many blobs a peer may fetch from us at
    /// once; at most half the transfer slots.
    pub blob_per_peer: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            request_timeout_ms: 5_000,
            sync_per_peer: 4,
            blob_per_peer: 8,
        }
    }
}

impl StreamLimits {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms).max(MIN_REQUEST_TIMEOUT)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("stream I/O failed")]
    Io(#[from] std::io::Error),
    #[error("peer sent a frame of {0} bytes, more than allowed")]
    TooLarge(usize),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("peer took too long")]
    Timeout,
}

impl WireError {
    /// Whether a request that failed this way is the peer's misdeed: malformed, oversized, or
    /// not sent within the deadline. A stream closed or reset before its request is not: a
    /// peer may give up on a request, or lose its connection.
    pub fn is_bad_request(&self) -> bool {
        matches!(self, Self::TooLarge(_) | Self::Frame(_) | Self::Timeout)
    }
}

pub async fn write_frame<T: Serialize>(
    stream: &mut (impl AsyncWrite + Unpin),
    value: &T,
) -> Result<(), WireError> {
    let bytes = encode_frame(value)?;
    tokio::time::timeout(FRAME_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| WireError::Timeout)??;
    Ok(())
}

pub async fn read_frame<T: for<'de> Deserialize<'de>>(
    stream: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<T, WireError> {
    read_frame_within(stream, max, FRAME_TIMEOUT).await
}

/// Reads the request that opens an inbound stream: at most [`MAX_REQUEST`] bytes, within
/// `deadline`.
pub async fn read_request<T: for<'de> Deserialize<'de>>(
    stream: &mut (impl AsyncRead + Unpin),
    deadline: Duration,
) -> Result<T, WireError> {
    read_frame_within(stream, MAX_REQUEST, deadline).await
}

pub(crate) async fn read_frame_within<T: for<'de> Deserialize<'de>>(
    stream: &mut (impl AsyncRead + Unpin),
    max: usize,
    deadline: Duration,
) -> Result<T, WireError> {
    tokio::time::timeout(deadline, async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > max.min(MAX_FRAME) {
            return Err(WireError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Ok(decode_frame(&body)?)
    })
    .await
    .map_err(|_| WireError::Timeout)?
}

/// Strikes `peer` if its request on `protocol` failed by its own fault.
pub(crate) async fn strike_bad_request(
    p2p: Option<&super::P2p>,
    peer: PeerId,
    protocol: &str,
    error: &WireError,
) {
    if !error.is_bad_request() {
        tracing::debug!(%peer, protocol, error = %error, "stream ended before its request");
        return;
    }
    if let Some(p2p) = p2p {
        p2p.strike(peer, &format!("bad {protocol} request: {error}"))
            .await;
    }
}

/// Admission of inbound streams of one protocol: at most `per_peer` open per peer, then at
/// most `total` across peers. The per-peer check comes first, so a peer at its limit never
/// takes a global slot, and one peer can hold at most `per_peer` of them.
#[derive(Debug)]
pub struct Admission {
    protocol: &'static str,
    per_peer: usize,
    total: Arc<Semaphore>,
    peers: Arc<Mutex<HashMap<PeerId, PeerStreams>>>,
}

#[derive(Debug, Default)]
struct PeerStreams {
    open: usize,
    /// Streams refused since the peer last held none, so a flood is logged once, not per
    /// stream.
    refused: u64,
}

/// An admitted stream's places; dropping it frees them.
#[derive(Debug)]
pub struct Admitted {
    peer: PeerId,
    peers: Arc<Mutex<HashMap<PeerId, PeerStreams>>>,
    _total: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = peers.get_mut(&self.peer) {
            s.open = s.open.saturating_sub(1);
            // Only peers holding streams stay in the map, so it is bounded by `total`.
            if s.open == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

impl Admission {
    pub fn new(protocol: &'static str, per_peer: usize, total: usize) -> Self {
        Self {
            protocol,
            per_peer: per_peer.max(1),
            total: Arc::new(Semaphore::new(total)),
            peers: Arc::default(),
        }
    }

    /// Places for a new stream from `peer`, or `None`: the caller drops the stream at once.
    /// Never waits, so the accept loop keeps up with a flood.
    pub fn admit(&self, peer: PeerId) -> Option<Admitted> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let entry = peers.entry(peer).or_default();
        if entry.open >= self.per_peer {
            entry.refused += 1;
            if entry.refused == 1 {
                tracing::warn!(%peer, protocol = self.protocol, limit = self.per_peer, "peer holds too many streams, dropping its new ones");
            } else {
                tracing::debug!(%peer, protocol = self.protocol, refused = entry.refused, "dropped a stream over the per-peer limit");
            }
            return None;
        }
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            if entry.open == 0 {
                peers.remove(&peer);
            }
            tracing::debug!(%peer, protocol = self.protocol, "every stream slot taken, dropping one");
            return None;
        };
        entry.open += 1;
        Some(Admitted {
            peer,
            peers: self.peers.clone(),
            _total: permit,
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use niso_protocol::federation::SyncMessage;

    use super::*;
    use crate::identity::test_peer as peer;

    #[test]
    fn one_peer_never_takes_every_slot_and_places_come_back() {
        let admission = Admission::new("/test/1", 2, 3);
        let (a, b) = (peer(1), peer(2));
        let a1 = admission.admit(a).unwrap();
        let a2 = admission.admit(a).unwrap();
        assert!(admission.admit(a).is_none(), "a is at its limit");
        let b1 = admission.admit(b).unwrap();
        assert!(
            admission.admit(b).is_none(),
            "every global slot is taken: the backstop holds"
        );
        drop(a1);
        assert!(
            admission.admit(b).is_some(),
            "a freed place goes to whoever asks"
        );
        drop((a2, b1));
        assert!(
            admission.peers.lock().unwrap().is_empty(),
            "peers with no streams are forgotten"
        );
    }

    #[test]
    fn limits_are_set_under_p2p_limits() {
        let c: crate::config::NodeConfig =
            toml::from_str("[p2p.limits]\nsync_per_peer = 2\nrequest_timeout_ms = 0\n").unwrap();
        assert_eq!(c.p2p.limits.sync_per_peer, 2);
        assert_eq!(
            c.p2p.limits.blob_per_peer,
            StreamLimits::default().blob_per_peer
        );
        assert_eq!(c.p2p.limits.request_timeout(), MIN_REQUEST_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_requests_are_misdeeds_and_a_clean_close_is_not() {
        let deadline = Duration::from_secs(5);
        let read = |bytes: Vec<u8>| async move {
            read_request::<SyncMessage>(&mut futures::io::Cursor::new(bytes), deadline).await
        };
        let ok = encode_frame(&SyncMessage::Poke).unwrap();
        assert_eq!(read(ok).await.unwrap(), SyncMessage::Poke);
        let closed = read(Vec::new()).await.unwrap_err();
        assert!(!closed.is_bad_request(), "{closed}");
        let cut = read(vec![0, 0]).await.unwrap_err();
        assert!(!cut.is_bad_request(), "{cut}");
        let malformed = read(vec![0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap_err();
        assert!(
            matches!(malformed, WireError::Frame(_)) && malformed.is_bad_request(),
            "{malformed}"
        );
        let big = ((MAX_REQUEST + 1) as u32).to_be_bytes().to_vec();
        let oversized = read(big).await.unwrap_err();
        assert!(
            matches!(oversized, WireError::TooLarge(_)) && oversized.is_bad_request(),
            "{oversized}"
        );
        let mut idle = futures::stream::pending::<std::io::Result<Vec<u8>>>().into_async_read();
        let started = tokio::time::Instant::now();
        let late = read_request::<SyncMessage>(&mut idle, deadline)
            .await
            .unwrap_err();
        assert!(
            matches!(late, WireError::Timeout) && late.is_bad_request(),
            "{late}"
        );
        assert_eq!(started.elapsed(), deadline);
    }
}
