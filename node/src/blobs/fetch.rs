//! The fetch task: one per digest, driving the [`Schedule`] and [`fetch_range`] until every
//! segment is verified, then hashing the whole and giving the blob its name. Also the
//! [`Fetcher`] that starts, joins and reads fetches, and the clean-up of `partial/`.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use libp2p::PeerId;
use niso_protocol::{Digest, PackageMeta};
use tokio::{
    io::{AsyncReadExt, AsyncSeekExt},
    sync::watch,
    task::{AbortHandle, JoinSet},
    time::Instant,
};

use super::{
    BlobLimits,
    have_list::HaveList,
    schedule::{Answer, Lease, Reported, Role, Schedule, segment_bytes, segment_count},
    turns::Turns,
    wire::{self, Meter, Order, RangeError, RangeWant, Source, Target, fetch_range},
    writeback::Writeback,
};
use crate::node::NodeState;

/// Why a fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("peer-to-peer networking is off")]
    NoNetwork,
    #[error("no peer could serve blob {0}")]
    NoProvider(Digest),
    #[error("fetched blob is not a valid package")]
    Invalid(#[source] Arc<crate::ingest::VerifyError>),
    #[error("fetched blob hashes to {got} instead of {want}")]
    WrongDigest { got: Digest, want: Digest },
    #[error("could not store the fetched blob")]
    Store(#[source] Arc<crate::store::StoreError>),
    #[error("local I/O failed while fetching")]
    Local(#[source] Arc<std::io::Error>),
    #[error("the fetch ended without a result")]
    Ended,
}

impl From<std::io::Error> for FetchError {
    fn from(e: std::io::Error) -> Self {
        Self::Local(Arc::new(e))
    }
}

#[derive(Debug, Clone)]
pub enum FetchState {
    /// Bytes `0..verified` are in the partial file and verified.
    Running {
        verified: u64,
    },
    /// The blob is durable in the store. `Some`: the `niso.toml` of the bytes this fetch
    /// checked, so whoever waited on it need not read the blob again to learn it; `None`: the
    /// blob was here already.
    Done(Option<Arc<PackageMeta>>),
    Failed(FetchError),
}

/// How far one running fetch has come.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FetchProgress {
    pub package: String,
    pub digest: String,
    pub size: u64,
    /// Bytes received and verified so far.
    pub verified: u64,
}

/// A blob being fetched: what other peers may already be served from it.
#[derive(Debug)]
pub struct Partial {
    pub package: String,
    pub size: u64,
    target: Target,
    schedule: Arc<Schedule>,
}

impl Partial {
    /// Whether every segment overlapping chunk range `[a, b)` is verified here.
    pub fn holds(&self, a: u64, b: u64) -> bool {
        self.schedule.holds(a, b)
    }

    /// Its verified segments, for a peer that asked for others.
    pub fn have_list(&self) -> HaveList {
        self.schedule.have_list()
    }

    /// The partial file and its tree, for serving verified segments onwards.
    pub fn source(&self) -> Source {
        Source {
            data: self.target.data.clone(),
            outboard: self.target.outboard.clone(),
            order: Order::Pre,
            size: self.size,
        }
    }
}

/// All fetches in flight, by digest.
#[derive(Debug)]
pub struct Fetcher {
    inflight: Mutex<HashMap<Digest, watch::Receiver<FetchState>>>,
    partials: Mutex<HashMap<Digest, Arc<Partial>>>,
    /// Turns to transfer and places to store: more wait.
    turns: Turns,
    /// Peers that went silent in a fetch, and until when no fetch recruits them as helpers.
    benched: Mutex<HashMap<PeerId, Instant>>,
    limits: BlobLimits,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new(BlobLimits::default())
    }
}

impl Fetcher {
    pub fn new(limits: BlobLimits) -> Self {
        Self {
            inflight: Mutex::default(),
            partials: Mutex::default(),
            turns: Turns::new(limits.fetches, limits.stores),
            benched: Mutex::default(),
            limits,
        }
    }

    pub fn limits(&self) -> &BlobLimits {
        &self.limits
    }

    /// Starts fetching `digest` (or joins the fetch already running) and returns its progress.
    pub fn start(
        &self,
        state: &Arc<NodeState>,
        package: &str,
        digest: Digest,
        size: u64,
        hints: Vec<PeerId>,
    ) -> watch::Receiver<FetchState> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = inflight.get(&digest)
            && !matches!(*rx.borrow(), FetchState::Failed(_))
        {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(FetchState::Running { verified: 0 });
        inflight.insert(digest, rx.clone());
        let state = state.clone();
        let package = package.to_owned();
        tokio::spawn(async move {
            let result = run(&state, &package, digest, size, hints, &tx).await;
            state
                .fetcher
                .partials
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&digest);
            let end = match result {
                Ok(meta) => FetchState::Done(meta),
                Err(e) => {
                    tracing::warn!(%digest, error = %crate::http::error::chain(&e), "blob fetch failed");
                    FetchState::Failed(e)
                }
            };
            // Removed before the last state is sent: whoever sees the end and starts again
            // gets a new fetch.
            state
                .fetcher
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&digest);
            let _ = tx.send(end);
        });
        rx
    }

    /// Fetches `digest` and waits until it is durable in the blob store; returns its package's
    /// `niso.toml` when a fetch checked the bytes (see [`FetchState::Done`]).
    pub async fn fetch(
        &self,
        state: &Arc<NodeState>,
        package: &str,
        digest: Digest,
        size: u64,
        hints: Vec<PeerId>,
    ) -> Result<Option<Arc<PackageMeta>>, FetchError> {
        if state.store.blobs().contains(&digest) {
            return Ok(None);
        }
        let mut rx = self.start(state, package, digest, size, hints);
        loop {
            match rx.borrow_and_update().clone() {
                FetchState::Done(meta) => return Ok(meta),
                FetchState::Failed(e) => return Err(e),
                FetchState::Running { .. } => {}
            }
            if rx.changed().await.is_err() {
                return if state.store.blobs().contains(&digest) {
                    Ok(None)
                } else {
                    Err(FetchError::Ended)
                };
            }
        }
    }

    /// A reader of `digest` that yields each byte once it is verified, starting (or joining)
    /// its fetch. With `whole`, it waits until the blob is stored and reads that.
    pub async fn open(
        &self,
        state: &Arc<NodeState>,
        package: &str,
        digest: Digest,
        size: u64,
        hints: Vec<PeerId>,
        whole: bool,
    ) -> Result<BlobReader, FetchError> {
        let stored = state.store.blobs().path(&digest);
        let mut progress = self.start(state, package, digest, size, hints);
        loop {
            let now = progress.borrow_and_update().clone();
            match now {
                FetchState::Failed(e) => return Err(e),
                FetchState::Done(_) => {
                    let file = tokio::fs::File::open(&stored).await?;
                    return Ok(BlobReader::new(file, size, progress));
                }
                FetchState::Running { .. } if !whole => {
                    if let Some(p) = self.partial(&digest) {
                        // The partial file takes the blob's name by a rename, so this handle
                        // reads on across it.
                        let file = tokio::fs::File::open(&p.target.data).await?;
                        return Ok(BlobReader::new(file, size, progress));
                    }
                }
                FetchState::Running { .. } => {}
            }
            if progress.changed().await.is_err() {
                if stored.is_file() {
                    let file = tokio::fs::File::open(&stored).await?;
                    return Ok(BlobReader::new(file, size, progress));
                }
                return Err(FetchError::Ended);
            }
        }
    }

    /// Keeps `peer` out of every fetch's helpers for a while: it went silent in one.
    fn bench(&self, peer: PeerId) {
        let now = Instant::now();
        let mut benched = self.benched.lock().unwrap_or_else(|p| p.into_inner());
        benched.retain(|_, until| *until > now);
        benched.insert(peer, now + self.limits.bench);
    }

    fn is_benched(&self, peer: &PeerId) -> bool {
        self.benched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Fetches holding one of the [`BlobLimits::stores`] places: checking and storing their
    /// blob, every byte of it verified.
    pub fn storing(&self) -> usize {
        self.turns.storing()
    }

    /// Every fetch running now: its package, size and the bytes verified so far.
    pub fn in_flight(&self) -> Vec<FetchProgress> {
        let partials: Vec<(Digest, Arc<Partial>)> = self
            .partials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(d, p)| (*d, p.clone()))
            .collect();
        let inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<FetchProgress> = partials
            .into_iter()
            .map(|(digest, partial)| FetchProgress {
                verified: match inflight.get(&digest).map(|rx| rx.borrow().clone()) {
                    Some(FetchState::Running { verified }) => verified,
                    Some(FetchState::Done(_)) => partial.size,
                    Some(FetchState::Failed(_)) | None => 0,
                },
                package: partial.package.clone(),
                digest: digest.to_string(),
                size: partial.size,
            })
            .collect();
        out.sort_by(|a, b| a.package.cmp(&b.package).then(a.digest.cmp(&b.digest)));
        out
    }

    /// The part of `digest` this node holds while fetching it, if it is fetching it.
    pub fn partial(&self, digest: &Digest) -> Option<Arc<Partial>> {
        self.partials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()
    }
}

/// Reads a blob while it is fetched: each chunk only once it is verified.
#[derive(Debug)]
pub struct BlobReader {
    file: tokio::fs::File,
    offset: u64,
    size: u64,
    progress: watch::Receiver<FetchState>,
}

impl BlobReader {
    fn new(file: tokio::fs::File, size: u64, progress: watch::Receiver<FetchState>) -> Self {
        Self {
            file,
            offset: 0,
            size,
            progress,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next verified bytes (at most `max`), `None` at the end, or the error that ended
    /// the fetch.
    pub async fn next_chunk(&mut self, max: usize) -> Option<std::io::Result<Bytes>> {
        if self.offset >= self.size {
            return None;
        }
        loop {
            let allowed = match &*self.progress.borrow_and_update() {
                FetchState::Running { verified } => *verified,
                FetchState::Done(_) => self.size,
                FetchState::Failed(e) => {
                    self.offset = self.size;
                    return Some(Err(std::io::Error::other(e.clone())));
                }
            };
            if allowed > self.offset {
                let want = usize::try_from((allowed - self.offset).min(max as u64)).unwrap_or(max);
                let mut buf = vec![0u8; want];
                let read = async {
                    self.file
                        .seek(std::io::SeekFrom::Start(self.offset))
                        .await?;
                    self.file.read_exact(&mut buf).await
                }
                .await;
                return Some(match read {
                    Ok(_) => {
                        self.offset += want as u64;
                        Ok(Bytes::from(buf))
                    }
                    Err(e) => {
                        self.offset = self.size;
                        Err(e)
                    }
                });
            }
            if self.progress.changed().await.is_err()
                && !matches!(*self.progress.borrow(), FetchState::Done(_))
            {
                self.offset = self.size;
                return Some(Err(std::io::Error::other(FetchError::Ended)));
            }
        }
    }
}

/// Appends a verified segment to the segment list at `path`, opening it on first use.
fn note_done(file: &mut Option<std::fs::File>, path: &Path, segment: u64) -> std::io::Result<()> {
    let file = match file {
        Some(f) => f,
        None => file.insert(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    };
    writeln!(file, "{segment}")
}

/// The list of verified segments of a blob of `size` bytes, if it can have one: the segment
/// that ends a fetch is not noted, so a blob of one segment never has one. Named by the
/// segment size, so that a list written under another size (by an earlier release) is never
/// read as this one's: its indices would name other bytes, which this node would then serve.
pub fn done_file(data: &Path, size: u64) -> Option<PathBuf> {
    (segment_count(size) > 1)
        .then(|| data.with_extension(format!("done-{}k", segment_bytes(size) / 1024)))
}

/// The name releases before segment-sized lists gave the list; never read, only removed.
const LEGACY_DONE: &str = "done";

/// Segments verified in an earlier run (each line of the list is one index).
fn load_done(data: &Path, size: u64) -> HashSet<u64> {
    done_file(data, size)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Removes a fetch's files under `partial/`: its data unless the blob store took it, and the
/// files a blob of its size can have beside it (a catch-up of small packages would otherwise
/// try two removals that fail per package).
fn remove_partial(target: &Target, size: u64, data_taken: bool) {
    let data = (!data_taken).then_some(&target.data);
    let done = done_file(&target.data, size);
    let legacy = done
        .is_some()
        .then(|| target.data.with_extension(LEGACY_DONE));
    for p in data
        .into_iter()
        .chain(&done)
        .chain(&legacy)
        .chain(&target.outboard)
    {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %p.display(), error = %e, "could not remove a partial file");
            }
            _ => {}
        }
    }
}

/// Removes `partial/` files no fetch will resume: blobs now stored, names that are not a
/// digest's, segment lists of an earlier release, and fetches untouched for `stale_partial`
/// (given up on, or of a digest nobody wants any more). A fresh one stays even if no version
/// names its digest: an eager fetch runs before its record is applied, and resumes after a
/// restart. Runs at start.
pub fn sweep_partials(state: &NodeState) {
    let dir = state.store.blobs().partial_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    let stale = state.fetcher.limits.stale_partial;
    for entry in entries.flatten() {
        let path = entry.path();
        let digest = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(Digest::from_hex);
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age >= stale));
        let legacy = path.extension().is_some_and(|e| e == LEGACY_DONE);
        let keep = digest.is_some_and(|d| !old && !legacy && !state.store.blobs().contains(&d));
        if !keep {
            tracing::info!(path = %path.display(), "removing an abandoned partial fetch");
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a partial file");
            }
        }
    }
}

/// A transfer in flight: the task, its lease and its meter. Dropping it gives the transfer
/// up, even the part that runs on a blocking thread.
struct Running {
    lease: Lease,
    meter: Arc<Meter>,
    task: AbortHandle,
    /// Bytes it had read at the last tick.
    seen: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.meter.stop();
        self.task.abort();
    }
}

async fn transfer(
    mut control: libp2p_stream::Control,
    lease: Lease,
    want: RangeWant,
    target: Target,
    limits: BlobLimits,
    meter: Arc<Meter>,
) -> (u64, Result<(), RangeError>) {
    let r = fetch_range(&mut control, lease.peer, want, &target, &limits, meter).await;
    (lease.id, r)
}

fn answer(r: &Result<(), RangeError>) -> Answer {
    match r {
        Ok(()) => Answer::Verified,
        Err(RangeError::Missing(_)) => Answer::Missing,
        Err(RangeError::Stalled) => Answer::Stalled,
        Err(e) if e.is_corrupt() => Answer::Corrupt,
        Err(RangeError::Local(_)) => Answer::Local,
        Err(_) => Answer::Failed,
    }
}

async fn run(
    state: &Arc<NodeState>,
    package: &str,
    digest: Digest,
    size: u64,
    hints: Vec<PeerId>,
    progress: &watch::Sender<FetchState>,
) -> Result<Option<Arc<PackageMeta>>, FetchError> {
    if state.store.blobs().contains(&digest) {
        return Ok(None);
    }
    let Some(p2p) = state.p2p.clone() else {
        return Err(FetchError::NoNetwork);
    };
    let fetcher = &state.fetcher;
    let limits = fetcher.limits.clone();
    // Bounded transfers at once: a page of many manifests queues here, not on the network.
    let turn = fetcher.turns.transfer().await.ok_or(FetchError::Ended)?;
    if state.store.blobs().contains(&digest) {
        return Ok(None);
    }
    let dir = state.store.blobs().partial_dir();
    let data = dir.join(digest.hex());
    let target = Target {
        data: data.clone(),
        outboard: wire::has_tree(size).then(|| data.with_extension("obao")),
    };
    let files = [
        Some((&target.data, size)),
        target.outboard.as_ref().map(|path| {
            (
                path,
                bao_tree::BaoTree::new(size, wire::BLOCK).outboard_size(),
            )
        }),
    ];
    let open = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
    };
    for (path, len) in files.into_iter().flatten() {
        // `partial/` is made by the first fetch, not asked after by every one.
        let f = match open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)?;
                open(path)?
            }
            other => other?,
        };
        f.set_len(len)?;
    }
    let schedule = Arc::new(Schedule::new(
        size,
        &load_done(&data, size),
        &p2p.peer_id.to_bytes(),
        limits.clone(),
    ));
    fetcher
        .partials
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            digest,
            Arc::new(Partial {
                package: package.to_owned(),
                size,
                target: target.clone(),
                schedule: schedule.clone(),
            }),
        );
    // Opened when a segment is verified that does not end the fetch: a blob of one segment
    // has nothing to resume, and no list.
    let done_list = done_file(&data, size);
    let mut done_writer: Option<std::fs::File> = None;
    let _ = progress.send(FetchState::Running {
        verified: schedule.verified_prefix(),
    });

    for peer in &hints {
        schedule.add_peer(*peer, Role::Announcer);
    }
    let recruit = |schedule: &Schedule| {
        let known = schedule.known();
        let helpers = known.len().saturating_sub(hints.len());
        for peer in p2p
            .connected_peers()
            .into_iter()
            .filter(|p| !known.contains(p) && !fetcher.is_benched(p))
            .take(limits.helpers.saturating_sub(helpers))
        {
            schedule.add_peer(peer, Role::Helper);
        }
    };
    recruit(&schedule);

    let mut workers: JoinSet<(u64, Result<(), RangeError>)> = JoinSet::new();
    let mut running: HashMap<u64, Running> = HashMap::new();
    let mut tick = tokio::time::interval(limits.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_transfer = Instant::now();
    let mut writeback = Writeback::default();
    // The DHT lookup runs beside the transfers, never in their way.
    let mut dht: Option<tokio::task::JoinHandle<Vec<PeerId>>> = None;
    let mut asked_dht = false;
    while !schedule.complete() {
        let now = Instant::now();
        // Once nothing has arrived for `stall`, no new requests: the ones in flight end
        // within their deadlines, and then the fetch looks elsewhere or gives up.
        let quiet = now - schedule.last_verified().max(last_transfer);
        let peers = if quiet < limits.stall {
            schedule.idle(now)
        } else {
            Vec::new()
        };
        for peer in peers {
            let Some(lease) = schedule.next(peer, now) else {
                continue;
            };
            let meter = Arc::new(Meter::default());
            let want = RangeWant {
                digest,
                size,
                chunks: lease.chunks,
                last_resort: lease.last_resort,
            };
            let task = workers.spawn(transfer(
                p2p.control(),
                lease.clone(),
                want,
                target.clone(),
                limits.clone(),
                meter.clone(),
            ));
            running.insert(
                lease.id,
                Running {
                    lease,
                    meter,
                    task,
                    seen: 0,
                },
            );
        }
        tokio::select! {
            joined = workers.join_next(), if !workers.is_empty() => {
                let Some(Ok((id, result))) = joined else { continue };
                let Some(run) = running.remove(&id) else { continue };
                let now = Instant::now();
                let peer = run.lease.peer;
                let reported = schedule.report(id, answer(&result), now);
                if let Err(RangeError::Missing(Some(held))) = &result {
                    schedule.learned(peer, held, now);
                }
                tracing::trace!(%peer, %digest, segment = run.lease.segment, ?reported, error = result.as_ref().err().map(|e| crate::http::error::chain(e)), "segment answered");
                match (reported, result) {
                    (Reported::Finished, _) => {
                        writeback.verified(&target.data, run.lease.chunks);
                        if !schedule.complete()
                            && let Some(path) = &done_list
                            && let Err(e) = note_done(&mut done_writer, path, run.lease.segment)
                        {
                            tracing::warn!(%digest, error = %e, "could not record a verified segment");
                        }
                        let _ = progress.send(FetchState::Running {
                            verified: schedule.verified_prefix(),
                        });
                    }
                    (_, Err(RangeError::Local(e))) => return Err(e.into()),
                    (Reported::Dropped, Err(e)) => {
                        // The segment is back in the pool: the others get a fresh window to
                        // take it before the fetch counts as stalled.
                        schedule.restart_clock(now);
                        if matches!(e, RangeError::Stalled) {
                            fetcher.bench(peer);
                        }
                        if e.is_corrupt() {
                            p2p.strike(peer, &format!("sent a bad chunk of {digest}: {e}")).await;
                        } else {
                            tracing::debug!(%peer, %digest, error = %crate::http::error::chain(&e), "provider dropped from a fetch");
                        }
                    }
                    _ => {}
                }
            }
            found = async {
                match dht.as_mut() {
                    Some(lookup) => lookup.await.unwrap_or_default(),
                    None => std::future::pending().await,
                }
            }, if dht.is_some() => {
                dht = None;
                let known = schedule.known();
                let found: Vec<PeerId> = found
                    .into_iter()
                    .filter(|p| !known.contains(p))
                    .take(limits.helpers)
                    .collect();
                if found.is_empty() && schedule.live() == 0 && running.is_empty() {
                    return Err(FetchError::NoProvider(digest));
                }
                for peer in found {
                    schedule.add_peer(peer, Role::Helper);
                }
                schedule.restart_clock(Instant::now());
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for lease in schedule.expire(now) {
                    tracing::debug!(peer = %lease.peer, %digest, segment = lease.segment, "provider held a segment past its lease");
                    // Dropping it gives the transfer up.
                    running.remove(&lease.id);
                    fetcher.bench(lease.peer);
                    schedule.restart_clock(now);
                }
                // Bytes arriving on any transfer count as progress: a large segment on a
                // slow link is not a stall.
                let mut flowing = false;
                for r in running.values_mut() {
                    let received = r.meter.received();
                    flowing |= received > r.seen;
                    r.seen = received;
                }
                if flowing {
                    last_transfer = now;
                }
                recruit(&schedule);
                let quiet = now - schedule.last_verified().max(last_transfer);
                let nobody = schedule.live() == 0 && running.is_empty();
                if !nobody && (quiet < limits.stall || !running.is_empty()) {
                    continue;
                }
                // Nobody we asked could help: look for other providers once, then give up
                // (the record stays unapplied and the next sync round retries).
                if dht.is_some() {
                    continue;
                }
                if asked_dht {
                    return Err(FetchError::NoProvider(digest));
                }
                asked_dht = true;
                let p2p = p2p.clone();
                dht = Some(tokio::spawn(async move { p2p.providers(digest).await }));
            }
        }
    }
    drop(done_writer);
    // The bytes are here: checking and storing them wait on the CPU and the disk (an fsync of
    // the file and one of its directory), not on the network, so the next transfer need not
    // wait for them.
    let _place = turn.store().await.ok_or(FetchError::Ended)?;
    finish(state, digest, size, &target).await.map(Some)
}

/// Every segment verified against the digest's tree; hashes the whole once more before the
/// blob takes its name, and checks the archive like any pushed package. Returns the package's
/// `niso.toml` as the check read it. Checking and storing run as one blocking task: a catch-up
/// of small packages does this thousands of times a second, and each hand-off to the blocking
/// pool and back costs two context switches.
async fn finish(
    state: &Arc<NodeState>,
    digest: Digest,
    size: u64,
    target: &Target,
) -> Result<Arc<PackageMeta>, FetchError> {
    state.failpoints.hit("fetch-finish", 0).await;
    let data = target.data.clone();
    let archive = state.config.archive_limits();
    let blobs = state.store.blobs().clone();
    // Held until the blob has its name and this fetch ends; GC's grace period keeps it after.
    let _pin = blobs.pin(digest);
    let stored = crate::offload::spawn(move || {
        let verified = crate::ingest::verify_file(&data, &archive)
            .map_err(|e| FetchError::Invalid(Arc::new(e)))?;
        if verified.digest != digest {
            return Err(FetchError::WrongDigest {
                got: verified.digest,
                want: digest,
            });
        }
        blobs
            .commit(&data, &digest)
            .map_err(|e| FetchError::Store(Arc::new(e.into())))?;
        Ok(Arc::new(verified.meta))
    })
    .await
    .map_err(|e| FetchError::Local(Arc::new(std::io::Error::other(e))))?;
    match stored {
        Ok(meta) => {
            remove_partial(target, size, true);
            Ok(meta)
        }
        // Bytes that are no package, or not the digest's: nothing to resume.
        Err(e @ (FetchError::Invalid(_) | FetchError::WrongDigest { .. })) => {
            remove_partial(target, size, false);
            Err(e)
        }
        Err(e) => Err(e),
    }
}
