//! The blob protocol: verified byte ranges of a blob, bao-encoded with 16 KiB chunk groups.
//!
//! The receiver knows the blob's blake3 digest and size from a signed manifest, so every
//! chunk group is checked against the root as it arrives: a wrong byte is caught within one
//! group and the sender is penalised. Ranges let a transfer resume and let one blob come from
//! several peers at once.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    path::Path,
    sync::Arc,
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
use tokio::sync::Semaphore;
use tokio_util::{compat::FuturesAsyncReadCompatExt, io::SyncIoBridge};

use super::frames::{WireError, read_frame, write_frame};
use crate::node::NodeState;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new(BLOB_PROTOCOL);
pub const BLOCK: BlockSize = BlockSize::from_chunk_log(BLOB_CHUNK_LOG);
const CONCURRENT: usize = 16;
/// Transfers of one complete blob served at once. Further requests wait a moment for a slot
/// and are then told "not here", so requesters turn to other peers and a popular blob spreads
/// between peers instead of every copy leaving its origin. Last-resort requests (no other peer
/// had the range) skip the limit.
const PER_BLOB: usize = 2;
/// How long a request waits for a slot before it is turned away.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serving slots per blob.
#[derive(Debug, Default)]
pub struct Serving(std::sync::Mutex<std::collections::HashMap<Digest, Arc<Semaphore>>>);

impl Serving {
    async fn enter(&self, digest: Digest) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slots = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < PER_BLOB);
            map.entry(digest)
                .or_insert_with(|| Arc::new(Semaphore::new(PER_BLOB)))
                .clone()
        };
        tokio::time::timeout(SLOT_WAIT, slots.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// Serves blob ranges until the protocol is dropped.
pub async fn serve(state: Arc<NodeState>, mut incoming: libp2p_stream::IncomingStreams) {
    let permits = Arc::new(Semaphore::new(CONCURRENT));
    // Requests past the first few hundred waiting are dropped outright: a flood costs at most
    // that many small tasks.
    let waiting = Arc::new(Semaphore::new(CONCURRENT * 16));
    while let Some((peer, mut stream)) = incoming.next().await {
        let Ok(queued) = waiting.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many blob requests, dropping one");
            continue;
        };
        let state = state.clone();
        let permits = permits.clone();
        tokio::spawn(async move {
            // Busy: say "not here" (the requester tries someone else) rather than hang up.
            let permit = tokio::time::timeout(SLOT_WAIT, permits.acquire_owned()).await;
            let result = match permit {
                Ok(Ok(permit)) => {
                    let r = handle(&state, peer, stream).await;
                    drop(permit);
                    r
                }
                _ => refuse(&mut stream).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "blob request failed");
            }
            drop(queued);
        });
    }
}

async fn refuse(stream: &mut libp2p::Stream) -> Result<(), WireError> {
    let _: BlobRequest = read_frame(stream, 64 * 1024).await?;
    write_frame(stream, &BlobResponse::NotFound).await?;
    let _ = stream.close().await;
    Ok(())
}

async fn handle(
    state: &Arc<NodeState>,
    peer: PeerId,
    mut stream: libp2p::Stream,
) -> Result<(), WireError> {
    let request: BlobRequest = read_frame(&mut stream, 64 * 1024).await?;
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
    // A last-resort request is served at once: nobody else has what it asks for, so turning it
    // away would only slow the requester down.
    let slot = if complete && !request.last_resort {
        state.serving.enter(digest).await
    } else {
        None
    };
    let (path, size, outboard, order) = if complete && (request.last_resort || slot.is_some()) {
        let size = std::fs::metadata(&path)?.len();
        let blobs = state.store.blobs().clone();
        let outboard = tokio::task::spawn_blocking(move || blobs.outboard(&digest, BLOCK))
            .await
            .map_err(|e| WireError::Io(std::io::Error::other(e)))??;
        (path, size, outboard, Order::Post)
    } else if let Some(p) = partial {
        (p.data.clone(), p.size, p.outboard.clone(), Order::Pre)
    } else {
        write_frame(&mut stream, &BlobResponse::NotFound).await?;
        let _ = stream.close().await;
        return Ok(());
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
