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
        outboard::{EmptyOutboard, PostOrderOutboard},
        sync::{decode_ranges, encode_ranges_validated},
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

/// Serves blob ranges until the protocol is dropped.
pub async fn serve(state: Arc<NodeState>, mut incoming: libp2p_stream::IncomingStreams) {
    let permits = Arc::new(Semaphore::new(CONCURRENT));
    while let Some((peer, stream)) = incoming.next().await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many blob requests, dropping one");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(&state, peer, stream).await {
                tracing::debug!(%peer, error = %e, "blob request failed");
            }
            drop(permit);
        });
    }
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
    if !shared || !path.is_file() {
        write_frame(&mut stream, &BlobResponse::NotFound).await?;
        let _ = stream.close().await;
        return Ok(());
    }
    let size = std::fs::metadata(&path)?.len();
    let outboard = {
        let blobs = state.store.blobs().clone();
        tokio::task::spawn_blocking(move || blobs.outboard(&digest, BLOCK))
            .await
            .map_err(|e| WireError::Io(std::io::Error::other(e)))??
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
        let ob = PostOrderOutboard {
            root: blake3::Hash::from_bytes(*digest.as_bytes()),
            tree: BaoTree::new(size, BLOCK),
            data: File::open(&outboard)?,
        };
        let mut w = BufWriter::with_capacity(256 * 1024, writer);
        encode_ranges_validated(&data, &ob, &ranges, &mut w).map_err(std::io::Error::from)?;
        let mut bridge = w.into_inner().map_err(|e| e.into_error())?;
        bridge.flush()?;
        bridge.shutdown()
    })
    .await
    .map_err(|e| WireError::Io(std::io::Error::other(e)))??;
    state.metrics.p2p_blob_bytes_served.inc_by(served);
    Ok(())
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
    /// The peer does not have it, hung up, or was too slow.
    #[error("peer could not serve the range: {0}")]
    Unavailable(String),
    #[error("local I/O failed")]
    Local(#[from] std::io::Error),
}

/// Fetches chunk range `[start, end)` of `digest` from `peer`, verifying every chunk group
/// before it is written into `target` at its offset.
pub async fn fetch_range(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    digest: Digest,
    size: u64,
    chunks: (u64, u64),
    target: &Path,
) -> Result<(), RangeError> {
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
        },
    )
    .await
    .map_err(|e| unavailable(&e))?;
    match read_frame::<BlobResponse>(&mut stream, 1024)
        .await
        .map_err(|e| unavailable(&e))?
    {
        BlobResponse::NotFound => return Err(RangeError::Unavailable("not found".into())),
        BlobResponse::Ok { size: theirs } if theirs != size => {
            return Err(RangeError::Corrupt(format!(
                "claims size {theirs}, the signed manifest says {size}"
            )));
        }
        BlobResponse::Ok { .. } => {}
    }
    let reader = SyncIoBridge::new(stream.compat());
    let target = target.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new().write(true).open(&target)?;
        let mut outboard = EmptyOutboard {
            tree: BaoTree::new(size, BLOCK),
            root: blake3::Hash::from_bytes(*digest.as_bytes()),
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
