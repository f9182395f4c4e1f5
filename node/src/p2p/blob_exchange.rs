//! The blob protocol: verified byte ranges of a blob, bao-encoded with 16 KiB chunk groups.
//!
//! The receiver knows the blob's blake3 digest and size from a signed manifest, so every
//! chunk group is checked against the root as it arrives: a wrong byte is caught within one
//! group and the sender is penalised. Ranges let a transfer resume and let one blob come from
//! several peers at once.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, BufWriter, Write},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bao_tree::{
    BaoTree, BlockSize, ChunkNum, ChunkRanges,
    io::{
        DecodeError,
        outboard::{PostOrderOutboard, PreOrderOutboard},
        sync::{decode_ranges, encode_ranges},
    },
};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use niso_protocol::{
    Digest,
    federation::{BLOB_CHUNK_LOG, BLOB_PROTOCOL, BlobRequest, BlobResponse},
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::{compat::FuturesAsyncReadCompatExt, io::SyncIoBridge};

use super::frames::{
    Admission, BLOB_SERVING, BLOB_STREAMS, SERVING_WAIT, WireError, read_frame, read_request,
    strike_bad_request, write_frame,
};
use crate::node::NodeState;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new(BLOB_PROTOCOL);
pub const BLOCK: BlockSize = BlockSize::from_chunk_log(BLOB_CHUNK_LOG);
/// Transfers of one blob (complete or partial) served at once. Further requests wait a moment
/// for a slot and are then told "not here", so requesters turn to other peers. Few transfers
/// at full speed beat many slow ones: a segment that arrives sooner is served onwards sooner.
const PER_BLOB: usize = 2;
/// How long a request waits for a slot before it is turned away.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// A holder of a complete blob remembers the ranges it sent for this long. Another request
/// for such a range is turned away (the peer that got it can serve it) unless it is a last
/// resort (no other peer had it), and even then only once the range is settled (see
/// [`Sent::settled`]), a slot is free and no request for a range not sent yet is waiting:
/// the holder's uplink goes to new ranges first, so a popular blob leaves its origin about
/// once and spreads between peers.
const RESEND_AFTER: Duration = Duration::from_secs(30);
/// How long after a range arrived at one peer a last-resort request for it waits for that
/// peer to be able to serve it.
const RESEND_HOLD: Duration = Duration::from_millis(500);

/// Serving state per blob: transfer slots, and which ranges of a complete blob went out lately.
#[derive(Debug, Default)]
pub struct Serving(Arc<std::sync::Mutex<HashMap<Digest, BlobServing>>>);

#[derive(Debug)]
struct BlobServing {
    slots: Arc<Semaphore>,
    /// Requests for ranges not sent lately that wait for a slot.
    fresh_waiting: Arc<AtomicUsize>,
    /// Ranges sent lately, by first chunk.
    sent: HashMap<u64, Sent>,
    touched: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    /// When the last transfer of the range started or ended.
    at: Instant,
    in_flight: usize,
    /// Transfers of the range so far.
    times: u32,
}

impl Sent {
    /// Whether the range may go out again to a last-resort request: not in flight, and, after
    /// its first transfer, not just arrived (the peer that got it will be asked soon). Once it
    /// went out twice, peers are evidently not passing it on (they may not share), so no hold.
    fn settled(&self, now: Instant) -> bool {
        self.in_flight == 0 && (self.times > 1 || now - self.at >= RESEND_HOLD)
    }
}

/// What a request asks of the blob, for [`Serving::enter`].
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// Segments of a blob this node is still fetching.
    Partial,
    /// A range of a complete blob, by its first chunk.
    Complete { first: u64, last_resort: bool },
}

/// A transfer slot; on drop it frees the slot and records when the range finished going out.
struct Slot {
    _permit: OwnedSemaphorePermit,
    range: Option<(Digest, u64)>,
    serving: Arc<std::sync::Mutex<HashMap<Digest, BlobServing>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((digest, first)) = self.range else {
            return;
        };
        let mut map = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sent) = map.get_mut(&digest).and_then(|b| b.sent.get_mut(&first)) {
            sent.in_flight = sent.in_flight.saturating_sub(1);
            sent.at = Instant::now();
        }
    }
}

impl Serving {
    /// Waits for a slot to serve `digest`, or `None`: every slot stayed busy, or the range was
    /// sent lately and this is not a last resort. A range of a complete blob is recorded as
    /// sent once it has a slot.
    async fn enter(&self, digest: Digest, ask: Ask) -> Option<Slot> {
        let (slots, fresh_waiting, fresh) = {
            let mut map = self.lock();
            let now = Instant::now();
            map.retain(|_, b| {
                b.slots.available_permits() < PER_BLOB || now - b.touched < RESEND_AFTER
            });
            let b = map.entry(digest).or_insert_with(|| BlobServing {
                slots: Arc::new(Semaphore::new(PER_BLOB)),
                fresh_waiting: Arc::default(),
                sent: HashMap::new(),
                touched: now,
            });
            b.touched = now;
            b.sent
                .retain(|_, s| s.in_flight > 0 || now - s.at < RESEND_AFTER);
            let fresh = match ask {
                Ask::Partial => true,
                Ask::Complete { first, last_resort } => match b.sent.get(&first) {
                    None => true,
                    Some(sent) if last_resort && sent.settled(now) => false,
                    Some(_) => return None,
                },
            };
            (b.slots.clone(), b.fresh_waiting.clone(), fresh)
        };
        let permit = if fresh {
            fresh_waiting.fetch_add(1, Ordering::SeqCst);
            let permit = tokio::time::timeout(SLOT_WAIT, slots.acquire_owned()).await;
            fresh_waiting.fetch_sub(1, Ordering::SeqCst);
            permit.ok()?.ok()?
        } else {
            // A resend is not waited for, and yields to new ranges: the requester asks about
            // its other segments meanwhile, some of which may be new here.
            if fresh_waiting.load(Ordering::SeqCst) > 0 {
                return None;
            }
            slots.try_acquire_owned().ok()?
        };
        let mut range = None;
        if let Ask::Complete { first, last_resort } = ask {
            let mut map = self.lock();
            let now = Instant::now();
            if let Some(b) = map.get_mut(&digest) {
                // Another request for the same range may have had a slot meanwhile.
                if fresh
                    && let Some(s) = b.sent.get(&first)
                    && (!last_resort || !s.settled(now))
                {
                    return None;
                }
                let sent = b.sent.entry(first).or_insert(Sent {
                    at: now,
                    in_flight: 0,
                    times: 0,
                });
                sent.at = now;
                sent.in_flight += 1;
                sent.times += 1;
                range = Some((digest, first));
            }
        }
        Some(Slot {
            _permit: permit,
            range,
            serving: self.0.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, BlobServing>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves blob ranges until the protocol is dropped. Streams are admitted per peer, then
/// against the global backstop (see `frames`); a transfer slot is waited for only once the
/// request has arrived.
pub async fn serve(state: Arc<NodeState>, mut incoming: libp2p_stream::IncomingStreams) {
    let limits = &state.config.p2p.limits;
    let admission = Admission::new(BLOB_PROTOCOL, limits.blob_per_peer, BLOB_STREAMS);
    let deadline = limits.request_timeout();
    let permits = Arc::new(Semaphore::new(BLOB_SERVING));
    while let Some((peer, mut stream)) = incoming.next().await {
        let Some(admitted) = admission.admit(peer) else {
            continue;
        };
        let state = state.clone();
        let permits = permits.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let request = match read_request::<BlobRequest>(&mut stream, deadline).await {
                Ok(r) => r,
                Err(e) => {
                    strike_bad_request(state.p2p.as_ref(), peer, BLOB_PROTOCOL, &e).await;
                    return;
                }
            };
            // Busy: say "not here" (the requester tries someone else) rather than hang up.
            let permit = tokio::time::timeout(SERVING_WAIT, permits.acquire_owned()).await;
            let result = match permit {
                Ok(Ok(permit)) => {
                    let r = handle(&state, peer, stream, request).await;
                    drop(permit);
                    r
                }
                _ => not_found(&mut stream).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "blob request failed");
            }
        });
    }
}

async fn not_found(stream: &mut libp2p::Stream) -> Result<(), WireError> {
    write_frame(stream, &BlobResponse::NotFound).await?;
    let _ = stream.close().await;
    Ok(())
}

async fn handle(
    state: &Arc<NodeState>,
    peer: PeerId,
    mut stream: libp2p::Stream,
    request: BlobRequest,
) -> Result<(), WireError> {
    let digest = Digest::from_bytes(request.digest);
    let peer_s = peer.to_string();
    let shared = state
        .store
        .packages_with_blob(&digest)
        .map_err(|e| WireError::Io(std::io::Error::other(e)))?
        .iter()
        .any(|name| state.trust.shares_with(&peer_s, name));
    let path = state.store.blobs().path(&digest);
    // A blob still being fetched here can serve the segments already verified.
    let partial = state.fetcher.partial(&digest).filter(|p| {
        state.trust.shares_with(&peer_s, &p.package)
            && request.chunk_ranges.iter().all(|&(a, b)| p.holds(a, b))
    });
    let complete = shared && path.is_file();
    let ask = if complete {
        Ask::Complete {
            first: request.chunk_ranges.first().map_or(0, |r| r.0),
            last_resort: request.last_resort,
        }
    } else if partial.is_some() {
        Ask::Partial
    } else {
        return not_found(&mut stream).await;
    };
    let Some(_slot) = state.serving.enter(digest, ask).await else {
        return not_found(&mut stream).await;
    };
    let (path, size, outboard, order) = match partial {
        Some(p) if !complete => (p.data.clone(), p.size, p.outboard.clone(), Order::Pre),
        _ => {
            let size = std::fs::metadata(&path)?.len();
            let blobs = state.store.blobs().clone();
            let outboard = tokio::task::spawn_blocking(move || blobs.outboard(&digest, BLOCK))
                .await
                .map_err(|e| WireError::Io(std::io::Error::other(e)))??;
            (path, size, outboard, Order::Post)
        }
    };
    write_frame(&mut stream, &BlobResponse::Ok { size }).await?;
    let ranges = to_ranges(&request.chunk_ranges);
    let served: u64 = request
        .chunk_ranges
        .iter()
        .map(|&(a, b)| {
            (b.saturating_mul(1024))
                .min(size)
                .saturating_sub(a.saturating_mul(1024))
        })
        .sum();
    let writer = SyncIoBridge::new(stream.compat());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let data = File::open(&path)?;
        let root = blake3::Hash::from_bytes(*digest.as_bytes());
        let tree = BaoTree::new(size, BLOCK);
        let mut w = BufWriter::with_capacity(256 * 1024, writer);
        // Not rehashed here: stored blobs were verified when written, partial segments when
        // they arrived, and the receiver verifies every group against the digest anyway (it
        // is the receiver's check that keeps a bad sender out).
        match order {
            Order::Post => {
                let ob = PostOrderOutboard {
                    root,
                    tree,
                    data: File::open(&outboard)?,
                };
                encode_ranges(&data, &ob, &ranges, &mut w)
            }
            Order::Pre => {
                let ob = PreOrderOutboard {
                    root,
                    tree,
                    data: File::open(&outboard)?,
                };
                encode_ranges(&data, &ob, &ranges, &mut w)
            }
        }
        .map_err(std::io::Error::from)?;
        let mut bridge = w.into_inner().map_err(|e| e.into_error())?;
        bridge.flush()?;
        bridge.shutdown()
    })
    .await
    .map_err(|e| WireError::Io(std::io::Error::other(e)))??;
    state.metrics.p2p_blob_bytes_served.inc_by(served);
    Ok(())
}

/// Layout of the hash tree file: post-order beside stored blobs, pre-order while fetching.
#[derive(Clone, Copy)]
enum Order {
    Post,
    Pre,
}

fn to_ranges(raw: &[(u64, u64)]) -> ChunkRanges {
    let mut ranges = ChunkRanges::empty();
    for &(a, b) in raw.iter().take(1024) {
        if a < b {
            ranges |= ChunkRanges::from(ChunkNum(a)..ChunkNum(b));
        }
    }
    ranges
}

/// Why fetching a range from one peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// The peer sent bytes or hashes that do not verify: penalise it.
    #[error("peer sent data that does not match the digest ({0})")]
    Corrupt(String),
    /// The peer does not hold that range (yet).
    #[error("peer does not hold the range")]
    Missing,
    /// The peer hung up or was too slow.
    #[error("peer could not serve the range: {0}")]
    Unavailable(String),
    #[error("local I/O failed")]
    Local(#[from] std::io::Error),
}

/// One range of a blob to ask a peer for.
#[derive(Debug, Clone, Copy)]
pub struct RangeWant {
    pub digest: Digest,
    /// The blob's size, from its signed manifest.
    pub size: u64,
    /// Half-open range of 1 KiB chunks.
    pub chunks: (u64, u64),
    /// No other peer had this range (see [`BlobRequest::last_resort`]).
    pub last_resort: bool,
}

/// Fetches a chunk range of a blob from `peer`, verifying every chunk group before it is
/// written into `target` at its offset; the tree's hashes go into `outboard` (pre-order), so
/// the range can be served onwards before the blob is complete.
pub async fn fetch_range(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    want: RangeWant,
    target: &Path,
    outboard: &Path,
) -> Result<(), RangeError> {
    let RangeWant {
        digest,
        size,
        chunks,
        last_resort,
    } = want;
    let unavailable = |e: &dyn std::fmt::Display| RangeError::Unavailable(e.to_string());
    let mut stream = tokio::time::timeout(
        super::frames::FRAME_TIMEOUT,
        control.open_stream(peer, PROTOCOL),
    )
    .await
    .map_err(|e| unavailable(&e))?
    .map_err(|e| unavailable(&e))?;
    write_frame(
        &mut stream,
        &BlobRequest {
            digest: *digest.as_bytes(),
            chunk_ranges: vec![chunks],
            last_resort,
        },
    )
    .await
    .map_err(|e| unavailable(&e))?;
    match read_frame::<BlobResponse>(&mut stream, 1024)
        .await
        .map_err(|e| unavailable(&e))?
    {
        BlobResponse::NotFound => return Err(RangeError::Missing),
        BlobResponse::Ok { size: theirs } if theirs != size => {
            return Err(RangeError::Corrupt(format!(
                "claims size {theirs}, the signed manifest says {size}"
            )));
        }
        BlobResponse::Ok { .. } => {}
    }
    let reader = SyncIoBridge::new(stream.compat());
    let target = target.to_owned();
    let outboard_path = outboard.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new().write(true).open(&target)?;
        let mut outboard = PreOrderOutboard {
            tree: BaoTree::new(size, BLOCK),
            root: blake3::Hash::from_bytes(*digest.as_bytes()),
            data: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&outboard_path)?,
        };
        let ranges = ChunkRanges::from(ChunkNum(chunks.0)..ChunkNum(chunks.1));
        match decode_ranges(
            BufReader::with_capacity(256 * 1024, reader),
            &ranges,
            &mut file,
            &mut outboard,
        ) {
            Ok(()) => Ok(()),
            Err(DecodeError::LeafHashMismatch(c)) => Err(RangeError::Corrupt(format!(
                "chunk group at byte {} fails its hash",
                c.to_bytes()
            ))),
            Err(DecodeError::ParentHashMismatch(_)) => {
                Err(RangeError::Corrupt("tree hashes do not verify".into()))
            }
            Err(e @ (DecodeError::LeafNotFound(_) | DecodeError::ParentNotFound(_))) => {
                Err(RangeError::Unavailable(e.to_string()))
            }
            Err(DecodeError::Io(e)) => Err(RangeError::Unavailable(e.to_string())),
        }
    })
    .await
    .map_err(|e| RangeError::Local(std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(first: u64, last_resort: bool) -> Ask {
        Ask::Complete { first, last_resort }
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_blob_goes_out_once_and_then_only_as_a_last_resort() {
        let serving = Serving::default();
        let d = Digest::of(b"blob");
        let first = serving.enter(d, complete(0, false)).await;
        assert!(first.is_some(), "a range not sent yet is served");
        assert!(
            serving.enter(d, complete(0, false)).await.is_none(),
            "sent lately: ask the peer that got it"
        );
        assert!(
            serving.enter(d, complete(0, true)).await.is_none(),
            "not even as a last resort while it is in flight"
        );
        let other = serving.enter(d, complete(16, false)).await;
        assert!(other.is_some(), "another range is new");
        drop(first);
        assert!(
            serving.enter(d, complete(0, true)).await.is_none(),
            "just arrived: its first recipient will be asked soon"
        );
        tokio::time::advance(RESEND_HOLD).await;
        drop(other);
        let again = serving.enter(d, complete(0, true)).await;
        assert!(again.is_some(), "a last resort once the range settled");
        drop(again);
        let third = serving.enter(d, complete(0, true)).await;
        assert!(
            third.is_some(),
            "after two transfers peers are not passing it on: no hold"
        );
        drop(third);
        tokio::time::advance(RESEND_AFTER).await;
        assert!(
            serving.enter(d, complete(0, false)).await.is_some(),
            "forgotten after a while"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn new_ranges_go_before_resends_and_busy_slots_turn_requests_away() {
        let serving = Arc::new(Serving::default());
        let d = Digest::of(b"blob");
        let sent = serving.enter(d, complete(0, false)).await;
        drop(sent);
        tokio::time::advance(RESEND_HOLD).await;
        let a = serving.enter(d, complete(16, false)).await;
        let b = serving.enter(d, complete(32, false)).await;
        assert!(a.is_some() && b.is_some(), "two slots");
        // A new range waits for a slot; while it waits, a resend is turned away.
        let waiting = tokio::spawn({
            let serving = serving.clone();
            async move { serving.enter(d, complete(48, false)).await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(a);
        assert!(
            serving.enter(d, complete(0, true)).await.is_none(),
            "the freed slot goes to the new range"
        );
        assert!(waiting.await.unwrap(), "the new range got the slot");
        // Both slots busy past the wait: turned away.
        let c = serving.enter(d, complete(64, false)).await;
        assert!(c.is_some());
        assert!(
            serving.enter(d, Ask::Partial).await.is_none(),
            "no slot within the wait"
        );
        drop((b, c));
    }
}
