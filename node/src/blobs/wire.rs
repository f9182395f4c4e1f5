//! The blob protocol on the wire: the request and response frames, the bao-encoded ranges
//! that follow, and [`fetch_range`], which asks one peer for one range and verifies every
//! chunk group before writing it. No node state: callers pass paths and limits.
//!
//! On a multi-threaded runtime (a real node) a transfer streams through a thread of its own and
//! each chunk group is checked as it arrives; on a current-thread runtime (tests, and the
//! simulator's virtual time, `docs/simulator.md`) a range is read whole, then checked, on the
//! runtime's thread. Either way nothing unchecked is written.
//!
//! Every read and write on a blob stream runs under a deadline (see [`Deadlined`]): the
//! response header and the first byte within `first_byte`, every later read or write within
//! `idle` of the one before. A peer that goes silent mid-range therefore costs at most `idle`.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
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
use futures::AsyncWriteExt;
use libp2p::{PeerId, StreamProtocol};
use niso_protocol::{
    Digest,
    federation::{BLOB_CHUNK_LOG, BLOB_PROTOCOL, BlobHoldings, BlobRequest, BlobResponse},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    time::{Instant, Sleep},
};
use tokio_util::{compat::FuturesAsyncReadCompatExt, io::SyncIoBridge};

use super::{
    BlobLimits,
    have_list::{HaveList, MAX_HAVE_LIST},
};
use crate::{
    p2p::frames::{WireError, read_frame_within, write_frame},
    runtime_flavor::on_current_thread,
};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new(BLOB_PROTOCOL);
pub const BLOCK: BlockSize = BlockSize::from_chunk_log(BLOB_CHUNK_LOG);
/// The largest response header accepted.
const MAX_RESPONSE: usize = 1024;
/// Ranges honoured in one request; more are ignored.
const MAX_RANGES: usize = 1024;

/// Why fetching a range from one peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("peer claims size {theirs}, the signed manifest says {expected}")]
    WrongSize { theirs: u64, expected: u64 },
    #[error("chunk group at byte {0} fails its hash")]
    BadChunk(u64),
    #[error("tree hashes do not verify")]
    BadTree,
    /// The peer does not hold the range (yet), or declines to send it now; a peer fetching
    /// the blob itself may say which segments it holds.
    #[error("peer does not hold the range")]
    Missing(Option<HaveList>),
    /// A deadline passed: the peer went silent or trickles.
    #[error("peer went silent")]
    Stalled,
    #[error("could not open a stream to the peer")]
    Open(#[source] std::io::Error),
    #[error("blob stream failed")]
    Stream(#[source] std::io::Error),
    #[error("local I/O failed")]
    Local(#[source] std::io::Error),
}

impl RangeError {
    /// The peer sent bytes or claims that do not verify: penalise it.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            Self::WrongSize { .. } | Self::BadChunk(_) | Self::BadTree
        )
    }

    fn from_wire(e: WireError) -> Self {
        match e {
            WireError::Timeout => Self::Stalled,
            WireError::Io(e) => Self::from_io(e),
            other => Self::Stream(std::io::Error::other(other)),
        }
    }

    fn from_io(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::TimedOut {
            Self::Stalled
        } else {
            Self::Stream(e)
        }
    }
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

/// What a transfer in progress shares with whoever started it: the bytes read so far (a slow
/// transfer is not a dead one), and a flag that gives it up at its next read.
#[derive(Debug, Default)]
pub struct Meter {
    received: AtomicU64,
    stop: AtomicBool,
}

impl Meter {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Gives the transfer up: its next read or write fails.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Where a range lands: the partial data file and its pre-order hash tree (`None` for a blob
/// whose tree is its root alone, see [`has_tree`]).
#[derive(Debug, Clone)]
pub struct Target {
    pub data: PathBuf,
    pub outboard: Option<PathBuf>,
}

/// Whether a blob of `size` has hashes besides its root. One of at most one chunk group (16
/// KiB) has none: nothing to keep in a file, and its digest checks it whole. Most packages of
/// a catalog are that small, and a catch-up fetches thousands a second: a file per tree was
/// an inode created and removed per package.
pub fn has_tree(size: u64) -> bool {
    BaoTree::new(size, BLOCK).outboard_size() > 0
}

/// Encodings up to this size are read or written whole in memory on the runtime's thread:
/// a thread of their own costs more than checking them.
const INLINE_BYTES: u64 = 64 * 1024;

/// Fetches a chunk range of a blob from `peer`, verifying every chunk group before it is
/// written into the target at its offset; the tree's hashes go into the target's outboard
/// (pre-order), so the range can be served onwards before the blob is complete. `meter`
/// counts the bytes read from the peer and lets the caller give the transfer up.
pub async fn fetch_range(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    want: RangeWant,
    target: &Target,
    limits: &BlobLimits,
    meter: Arc<Meter>,
) -> Result<(), RangeError> {
    let RangeWant {
        digest,
        size,
        chunks,
        last_resort,
    } = want;
    let mut stream = tokio::time::timeout(limits.open, control.open_stream(peer, PROTOCOL))
        .await
        .map_err(|_| RangeError::Stalled)?
        .map_err(|e| RangeError::Open(std::io::Error::other(e)))?;
    write_frame(
        &mut stream,
        &BlobRequest {
            digest: *digest.as_bytes(),
            chunk_ranges: vec![chunks],
            last_resort,
        },
    )
    .await
    .map_err(RangeError::from_wire)?;
    match read_frame_within::<BlobResponse>(&mut stream, MAX_RESPONSE, limits.first_byte)
        .await
        .map_err(RangeError::from_wire)?
    {
        BlobResponse::NotFound => {
            return Err(RangeError::Missing(
                read_have_list(&mut stream, size, limits).await?,
            ));
        }
        BlobResponse::Ok { size: theirs } if theirs != size => {
            return Err(RangeError::WrongSize {
                theirs,
                expected: size,
            });
        }
        BlobResponse::Ok { .. } => {}
    }
    let reader = Deadlined::new(stream.compat(), limits.first_byte, limits.idle, meter);
    if on_current_thread() || encoded_bound(size, chunks) <= INLINE_BYTES {
        // One thread for everything, and perhaps a paused clock (or a range too small to be
        // worth a thread): the response is read here, then checked here, so neither the wait
        // nor the hashing happens off the runtime.
        let encoded = read_whole(reader, encoded_bound(size, chunks))
            .await
            .map_err(RangeError::from_io)?;
        return decode_into(std::io::Cursor::new(encoded), digest, size, chunks, target);
    }
    let reader = BufReader::with_capacity(256 * 1024, SyncIoBridge::new(reader));
    let target = target.clone();
    on_own_thread(move || decode_into(reader, digest, size, chunks, &target))
        .await
        .map_err(RangeError::Local)?
}

/// Most bytes an in-memory encoding reserves up front: a segment's, so a transfer of
/// one never reallocates, while a bound far above what a peer sends costs nothing up front.
const INLINE_RESERVE: u64 = 1 << 21;
/// Most bytes zeroed ahead of a read.
const READ_WINDOW: usize = 64 * 1024;

/// Reads `reader` to its end or to `bound` bytes, whichever is first.
///
/// Not `take(bound).read_to_end()`: `Take` hands each read a fresh, uninitialised view of the
/// buffer's spare room, which `Compat` then zeroes whole, so every read of 16 KiB zeroed up to
/// the rest of the buffer again (4 % of a 256-node simulation's host time). Here each byte is
/// zeroed once, in windows, and the buffer is sized for the bound up front.
async fn read_whole(mut reader: impl AsyncRead + Unpin, bound: u64) -> std::io::Result<Vec<u8>> {
    let bound = usize::try_from(bound).unwrap_or(usize::MAX);
    let mut buf = Vec::with_capacity(bound.min(INLINE_RESERVE as usize));
    let mut filled = 0;
    while filled < bound {
        if filled == buf.len() {
            buf.resize(filled + (bound - filled).min(READ_WINDOW), 0);
        }
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Checks the bao encoding of `chunks` read from `encoded` against `digest`, writing each
/// chunk group into the target once it verifies.
fn decode_into(
    encoded: impl std::io::Read,
    digest: Digest,
    size: u64,
    chunks: (u64, u64),
    target: &Target,
) -> Result<(), RangeError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&target.data)
        .map_err(RangeError::Local)?;
    let tree = BaoTree::new(size, BLOCK);
    let root = blake3::Hash::from_bytes(*digest.as_bytes());
    let ranges = ChunkRanges::from(ChunkNum(chunks.0)..ChunkNum(chunks.1));
    let decoded = match &target.outboard {
        Some(path) => {
            let data = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(RangeError::Local)?;
            decode_ranges(
                encoded,
                &ranges,
                &mut file,
                &mut PreOrderOutboard { tree, root, data },
            )
        }
        None if !has_tree(size) => decode_ranges(
            encoded,
            &ranges,
            &mut file,
            &mut PreOrderOutboard {
                tree,
                root,
                data: Vec::new(),
            },
        ),
        None => {
            return Err(RangeError::Local(std::io::Error::other(
                "a blob with a hash tree needs a file for it",
            )));
        }
    };
    match decoded {
        Ok(()) => Ok(()),
        Err(DecodeError::LeafHashMismatch(c)) => Err(RangeError::BadChunk(c.to_bytes())),
        Err(DecodeError::ParentHashMismatch(_)) => Err(RangeError::BadTree),
        Err(e @ (DecodeError::LeafNotFound(_) | DecodeError::ParentNotFound(_))) => {
            Err(RangeError::Stream(std::io::Error::other(e)))
        }
        Err(DecodeError::Io(e)) => Err(RangeError::from_io(e)),
    }
}

/// The most bytes the encoding of `chunks` of a blob of `size` can take: the data, one pair
/// of hashes per chunk group, and the pairs on the path from the root.
fn encoded_bound(size: u64, chunks: (u64, u64)) -> u64 {
    let data = chunks
        .1
        .saturating_mul(1024)
        .min(size)
        .saturating_sub(chunks.0.saturating_mul(1024));
    let group = BLOCK.bytes() as u64;
    data + (data / group + 2) * 64 + 64 * 64
}

/// Layout of a hash tree file: post-order beside stored blobs, pre-order while fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Post,
    Pre,
}

/// What a holder sends: the data file, its hash tree (`None` when the blob has none besides
/// its root, see [`has_tree`]), and the tree's layout.
#[derive(Debug, Clone)]
pub struct Source {
    pub data: PathBuf,
    pub outboard: Option<PathBuf>,
    pub order: Order,
    pub size: u64,
}

/// Answers a request with `NotFound`, then the have-list of a node fetching the blob itself,
/// and closes the stream.
pub async fn send_not_found(
    stream: &mut libp2p::Stream,
    held: Option<&HaveList>,
) -> Result<(), WireError> {
    write_frame(stream, &BlobResponse::NotFound).await?;
    if let Some(held) = held {
        let frame = held.to_frame();
        // Best effort: a requester of an earlier release hangs up after `NotFound`.
        if frame.held.len() < MAX_HAVE_LIST - 16 {
            let _ = write_frame(stream, &frame).await;
        }
    }
    let _ = stream.close().await;
    Ok(())
}

/// The have-list that may follow `NotFound`. The peer closes the stream after either, so
/// a peer of an earlier release (which sends none) costs no wait. A list that is malformed
/// or does not fit the blob is ignored, not held against the peer: it only steers which
/// segments the peer is asked for. A peer that neither sends nor closes within `idle` went
/// silent, like one that stops mid-range: the segment it holds up is no one else's until then.
async fn read_have_list<S>(
    stream: &mut S,
    size: u64,
    limits: &BlobLimits,
) -> Result<Option<HaveList>, RangeError>
where
    S: futures::AsyncRead + Unpin,
{
    match read_frame_within::<BlobHoldings>(stream, MAX_HAVE_LIST, limits.idle).await {
        Ok(frame) => Ok(HaveList::parse(frame, size)),
        Err(WireError::Timeout) => Err(RangeError::Stalled),
        Err(_) => Ok(None),
    }
}

/// Answers a request with `Ok{size}` and the bao encoding of `chunk_ranges` of `source`;
/// returns the data bytes sent. Every write must make progress within `idle`, so a
/// requester that stops reading frees the slot.
pub async fn send_ranges(
    mut stream: libp2p::Stream,
    digest: Digest,
    source: Source,
    chunk_ranges: &[(u64, u64)],
    idle: Duration,
) -> Result<u64, WireError> {
    let size = source.size;
    write_frame(&mut stream, &BlobResponse::Ok { size }).await?;
    let ranges = to_ranges(chunk_ranges);
    let served: u64 = chunk_ranges
        .iter()
        .take(MAX_RANGES)
        .map(|&(a, b)| {
            (b.saturating_mul(1024))
                .min(size)
                .saturating_sub(a.saturating_mul(1024))
        })
        .sum();
    let mut writer = Deadlined::new(stream.compat(), idle, idle, Arc::default());
    if on_current_thread() || served <= INLINE_BYTES {
        // As in `fetch_range`: encoded here, then written, all on the runtime's thread.
        // Sized for the data and its hashes, so the encoding is not copied as it grows.
        let bound: u64 = chunk_ranges
            .iter()
            .take(MAX_RANGES)
            .map(|&r| encoded_bound(size, r))
            .sum();
        let mut encoded =
            Vec::with_capacity(usize::try_from(bound.min(INLINE_RESERVE)).unwrap_or(0));
        encode_into(&mut encoded, digest, &source, &ranges)?;
        writer.write_all(&encoded).await?;
        writer.shutdown().await?;
        return Ok(served);
    }
    let writer = SyncIoBridge::new(writer);
    on_own_thread(move || -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(256 * 1024, writer);
        encode_into(&mut w, digest, &source, &ranges)?;
        let mut bridge = w.into_inner().map_err(|e| e.into_error())?;
        bridge.flush()?;
        bridge.shutdown()
    })
    .await??;
    Ok(served)
}

/// Writes the bao encoding of `ranges` of `source` to `w`.
fn encode_into(
    w: impl Write,
    digest: Digest,
    source: &Source,
    ranges: &ChunkRanges,
) -> std::io::Result<()> {
    let data = File::open(&source.data)?;
    let root = blake3::Hash::from_bytes(*digest.as_bytes());
    let tree = BaoTree::new(source.size, BLOCK);
    // Not rehashed here: stored blobs were verified when written, partial segments when they
    // arrived, and the receiver verifies every group against the digest anyway (it is the
    // receiver's check that keeps a bad sender out).
    let Some(outboard) = &source.outboard else {
        // The root alone: the encoding is the data, checked whole against the digest.
        let empty = PreOrderOutboard {
            root,
            tree,
            data: Vec::new(),
        };
        if has_tree(source.size) {
            return Err(std::io::Error::other(
                "a blob with a hash tree needs its file",
            ));
        }
        return encode_ranges(&data, &empty, ranges, w).map_err(std::io::Error::from);
    };
    let outboard = File::open(outboard)?;
    match source.order {
        Order::Post => encode_ranges(
            &data,
            &PostOrderOutboard {
                root,
                tree,
                data: outboard,
            },
            ranges,
            w,
        ),
        Order::Pre => encode_ranges(
            &data,
            &PreOrderOutboard {
                root,
                tree,
                data: outboard,
            },
            ranges,
            w,
        ),
    }
    .map_err(std::io::Error::from)
}

/// Runs `f`, blocking code that reads or writes a stream through a [`SyncIoBridge`], on a
/// thread of its own, and waits for its result.
///
/// Not on tokio's blocking pool: nothing there may wait on the network. A blocking task in
/// flight holds a paused clock still (see `store::writer`), and the network only moves when
/// the clock does, so the simulator's virtual time would stop for good.
async fn on_own_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("niso-blob-io".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("blob transfer thread panicked"))
}

fn to_ranges(raw: &[(u64, u64)]) -> ChunkRanges {
    let mut ranges = ChunkRanges::empty();
    for &(a, b) in raw.iter().take(MAX_RANGES) {
        if a < b {
            ranges |= ChunkRanges::from(ChunkNum(a)..ChunkNum(b));
        }
    }
    ranges
}

/// A stream whose every read and write must make progress within a deadline: `first` for
/// the first, `idle` for each later one. A missed deadline is a `TimedOut` error; a stopped
/// [`Meter`] fails the next read or write.
pub struct Deadlined<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// Whether the timer is armed for the operation in progress.
    armed: bool,
    meter: Arc<Meter>,
}

impl<S> Deadlined<S> {
    pub fn new(inner: S, first: Duration, idle: Duration, meter: Arc<Meter>) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(first)),
            armed: true,
            meter,
        }
    }

    /// Polls the deadline of an operation that is pending.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let at = Instant::now() + self.idle;
            self.timer.as_mut().reset(at);
            self.armed = true;
        }
        self.timer.as_mut().poll(cx).is_ready()
    }

    /// An operation made progress: the next one gets a fresh `idle`.
    fn progressed(&mut self) {
        self.armed = false;
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "peer went silent")
}

fn given_up() -> std::io::Error {
    std::io::Error::other("transfer given up")
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlined<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.meter.stopped() {
            return Poll::Ready(Err(given_up()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let n = buf.filled().len() - before;
                self.meter.received.fetch_add(n as u64, Ordering::Relaxed);
                self.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.meter.stopped() {
            return Poll::Ready(Err(given_up()));
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                self.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_times_out_after_first_then_idle() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tx, rx) = tokio::io::duplex(64);
        let meter = Arc::new(Meter::default());
        let mut r = Deadlined::new(
            rx,
            Duration::from_secs(5),
            Duration::from_secs(2),
            meter.clone(),
        );
        let start = Instant::now();
        tx.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"abc");
        assert_eq!(meter.received(), 3);
        // Bytes flowed; now silence: the idle deadline, not the first-byte one, applies.
        let err = r.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // A trickle keeps a stream alive until whoever started it gives it up.
        tx.write_all(b"d").await.unwrap();
        r.read_exact(&mut buf[..1]).await.unwrap();
        meter.stop();
        tx.write_all(b"e").await.unwrap();
        let err = r.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Other, "{err}");
        assert_eq!(meter.received(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_at_all_times_out_after_first() {
        use tokio::io::AsyncReadExt;
        let (_tx, rx) = tokio::io::duplex(64);
        let mut r = Deadlined::new(
            rx,
            Duration::from_secs(5),
            Duration::from_secs(2),
            Arc::default(),
        );
        let start = Instant::now();
        let err = r.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_whole_read_stops_at_its_bound_or_at_the_end() {
        use tokio::io::AsyncReadExt;
        // Several windows long, in reads of uneven size, so the buffer grows mid-transfer.
        let data: Vec<u8> = (0..3 * READ_WINDOW + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let reader = || {
            let (mut tx, rx) = tokio::io::duplex(7_001);
            let data = data.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                tx.write_all(&data).await.unwrap();
            });
            rx
        };
        let whole = read_whole(reader(), u64::MAX).await.unwrap();
        assert_eq!(whole, data);
        // A bound inside the data: exactly that much, and the rest stays unread.
        let bound = 2 * READ_WINDOW + 5;
        let mut r = reader();
        let head = read_whole(&mut r, bound as u64).await.unwrap();
        assert_eq!(head, data[..bound]);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, data[bound..]);
        assert!(read_whole(&b""[..], 10).await.unwrap().is_empty());
    }

    fn list_frame(size: u64, held: impl Fn(u64) -> bool) -> Vec<u8> {
        niso_protocol::federation::encode_frame(&HaveList::new(size, held).to_frame()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_have_list_after_not_found_is_read_and_silence_after_it_is_a_stall() {
        use tokio::io::AsyncWriteExt;
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let size = 4 * 1024 * 1024;
        let limits = BlobLimits::default();
        let read = |bytes: Vec<u8>, close: bool| {
            let limits = limits.clone();
            async move {
                let (mut tx, rx) = tokio::io::duplex(4096);
                tx.write_all(&bytes).await.unwrap();
                // An open stream that says nothing more, or one the peer closed.
                let _kept = (!close).then_some(tx);
                let start = Instant::now();
                let list = read_have_list(&mut rx.compat(), size, &limits).await;
                (list.map_err(|e| e.to_string()), start.elapsed())
            }
        };
        let (list, waited) = read(list_frame(size, |i| i % 3 == 0), true).await;
        let list = list.unwrap().unwrap();
        assert!(list.contains(0) && !list.contains(1) && list.contains(3));
        assert_eq!(waited, Duration::ZERO);
        // An earlier release closes the stream after `NotFound`.
        assert_eq!(read(Vec::new(), true).await, (Ok(None), Duration::ZERO));
        // A list of another blob, or garbage: ignored.
        assert_eq!(
            read(list_frame(2 * size, |_| true), true).await,
            (Ok(None), Duration::ZERO)
        );
        assert_eq!(
            read(vec![0, 0, 0, 2, 0xff, 0xff], true).await,
            (Ok(None), Duration::ZERO)
        );
        // A peer that neither sends nor closes went silent: a stall, after `idle`.
        assert_eq!(
            read(Vec::new(), false).await,
            (Err(RangeError::Stalled.to_string()), limits.idle)
        );
    }
}
