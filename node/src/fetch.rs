//! Fetching blobs from peers: split into segments, pulled from several providers at once,
//! every chunk group verified on arrival, resumable across restarts, one fetch per digest.
//!
//! Peers that are fetching the same blob serve each other the segments they already hold, so
//! the peer that announced the blob (usually its origin) is asked for a segment only after
//! another peer turned out not to have it yet, and it declines ranges it sent to another peer
//! lately (`p2p::blob_exchange`): in a fan-out, the origin sends each byte about once and the
//! rest flows between peers. Each node walks the segments in its own order, so different peers
//! hold different segments early.
//!
//! Progress is published on a `watch` channel as the verified prefix grows, so an HTTP pull of
//! a lazily replicated package can stream bytes while the fetch is still running.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use libp2p::PeerId;
use niso_protocol::Digest;
use tokio::sync::{Notify, watch};

use crate::{
    ingest::store_blob,
    node::NodeState,
    p2p::blob_exchange::{RangeError, RangeWant, fetch_range},
};

/// Peers asked at once for one blob, besides the announcers.
const HELPERS: usize = 16;
/// How often a running fetch looks for connected peers it is not asking yet (peers that
/// connected since, or whose worker gave up before they held anything).
const RECRUIT_EVERY: Duration = Duration::from_secs(1);
/// With no segment verified for this long, peers that keep lacking segments stop being asked
/// and the fetch looks for other providers or gives up (the next sync round retries it). A
/// fetch must never wait forever on peers that cannot help, or a partition that heals leaves
/// it stuck.
const STALL: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchState {
    /// Bytes `0..verified` are in the partial file and verified.
    Running {
        verified: u64,
    },
    Done,
    Failed(String),
}

/// A blob being fetched: what other peers may already be served from it.
#[derive(Debug)]
pub struct Partial {
    pub package: String,
    pub size: u64,
    pub segment: u64,
    pub data: PathBuf,
    pub outboard: PathBuf,
    done: Mutex<HashSet<u64>>,
}

impl Partial {
    /// Whether every segment overlapping chunk range `[a, b)` is verified here.
    pub fn holds(&self, a: u64, b: u64) -> bool {
        if b <= a {
            return false;
        }
        let first = a * 1024 / self.segment;
        let last = ((b * 1024).min(self.size).saturating_sub(1)) / self.segment;
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        (first..=last).all(|s| done.contains(&s))
    }
}

/// All fetches in flight, by digest.
#[derive(Debug, Default)]
pub struct Fetcher {
    inflight: Mutex<HashMap<Digest, watch::Receiver<FetchState>>>,
    partials: Mutex<HashMap<Digest, Arc<Partial>>>,
}

impl Fetcher {
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
                Ok(()) => FetchState::Done,
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "blob fetch failed");
                    FetchState::Failed(e)
                }
            };
            let _ = tx.send(end);
            let mut inflight = state
                .fetcher
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            inflight.remove(&digest);
        });
        rx
    }

    /// Fetches `digest` and waits until it is durable in the blob store.
    pub async fn fetch(
        &self,
        state: &Arc<NodeState>,
        package: &str,
        digest: Digest,
        size: u64,
        hints: Vec<PeerId>,
    ) -> Result<(), String> {
        if state.store.blobs().contains(&digest) {
            return Ok(());
        }
        let mut rx = self.start(state, package, digest, size, hints);
        loop {
            match rx.borrow_and_update().clone() {
                FetchState::Done => return Ok(()),
                FetchState::Failed(e) => return Err(e),
                FetchState::Running { .. } => {}
            }
            if rx.changed().await.is_err() {
                return if state.store.blobs().contains(&digest) {
                    Ok(())
                } else {
                    Err("fetch ended without a result".into())
                };
            }
        }
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

/// Segment size: about 16 per blob, between 256 KiB and 8 MiB, in whole 16 KiB groups. Every
/// node computes the same segments for a blob, which is what lets peers serve each other.
pub fn segment_bytes(size: u64) -> u64 {
    let group = 16 * 1024;
    (size / 16)
        .clamp(256 * 1024, 8 * 1024 * 1024)
        .div_ceil(group)
        * group
}

fn done_path(partial: &Path) -> PathBuf {
    partial.with_extension("done")
}

/// Segments verified in an earlier run (each line of the `.done` file is one index).
fn load_done(partial: &Path) -> HashSet<u64> {
    std::fs::read_to_string(done_path(partial))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The segments still to fetch, and how often each was asked of a helper that lacked it.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<(u64, u32)>,
    in_flight: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Notify,
    partial: Arc<Partial>,
    bad: Mutex<HashSet<PeerId>>,
    done_file: Mutex<std::fs::File>,
    progress: watch::Sender<FetchState>,
    last_progress: Mutex<tokio::time::Instant>,
    /// Announcer workers still running: while one is, helpers lacking segments keep asking,
    /// because the announcer's transfers may simply be slow.
    announcers_alive: AtomicUsize,
    /// Announcer workers waiting for a segment: helpers then leave alone the segments every
    /// helper lacked, or an announcer can starve while helpers keep re-asking each other.
    announcers_idle: AtomicUsize,
}

/// Counts an announcer worker (as alive, or as idle) until dropped.
struct Alive<'a>(&'a AtomicUsize);

impl<'a> Alive<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Alive(count)
    }
}

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn verified_prefix(&self) -> u64 {
        let done = self.partial.done.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        while done.contains(&n) {
            n += 1;
        }
        (n * self.partial.segment).min(self.partial.size)
    }

    fn done_count(&self) -> usize {
        self.partial
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn stalled(&self) -> bool {
        self.last_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            >= STALL
    }

    /// Segments not taken by any worker.
    fn waiting(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .len()
    }

    fn remaining(&self) -> bool {
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        !q.waiting.is_empty() || q.in_flight > 0
    }

    /// The next segment for a worker. Announcers take one that every helper lacked, else one
    /// that some helper lacked (an announcer turns away ranges it sent to another peer lately,
    /// and those then come from that peer); what helpers hold never costs the announcer.
    /// Helpers take any, except that while an announcer waits they leave it the segments
    /// every helper lacked, or it can starve while helpers keep re-asking each other.
    fn take(&self, announcer: bool, helpers: u32) -> Option<(u64, u32)> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let pos = if announcer {
            q.waiting
                .iter()
                .position(|(_, misses)| *misses >= helpers)
                .or_else(|| q.waiting.iter().position(|(_, misses)| *misses >= 1))?
        } else if helpers > 0 && self.announcers_idle.load(Ordering::SeqCst) > 0 {
            q.waiting.iter().position(|(_, misses)| *misses < helpers)?
        } else if q.waiting.is_empty() {
            return None;
        } else {
            0
        };
        let taken = q.waiting.remove(pos)?;
        q.in_flight += 1;
        Some(taken)
    }

    fn give_back(&self, index: u64, misses: u32) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.in_flight -= 1;
        q.waiting.push_back((index, misses));
        drop(q);
        self.changed.notify_waiters();
    }

    fn finish(&self, index: u64) {
        self.partial
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(index);
        *self.last_progress.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        if let Ok(mut f) = self.done_file.lock() {
            let _ = writeln!(f, "{index}");
        }
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_flight -= 1;
        let _ = self.progress.send(FetchState::Running {
            verified: self.verified_prefix(),
        });
        self.changed.notify_waiters();
    }
}

async fn worker(
    shared: Arc<Shared>,
    p2p: crate::p2p::P2p,
    peer: PeerId,
    digest: Digest,
    announcer: bool,
    helpers: u32,
) {
    let _alive = announcer.then(|| Alive::new(&shared.announcers_alive));
    let mut control = p2p.control();
    let mut misses_in_a_row = 0u32;
    let mut failures = 0u32;
    loop {
        let Some((index, misses)) = shared.take(announcer, helpers) else {
            if !shared.remaining() {
                return;
            }
            // Wait for a helper to miss something or a segment to finish.
            let _idle = announcer.then(|| Alive::new(&shared.announcers_idle));
            let _ =
                tokio::time::timeout(Duration::from_millis(100), shared.changed.notified()).await;
            continue;
        };
        let segment = shared.partial.segment;
        let size = shared.partial.size;
        let start = index * segment;
        let end = ((index + 1) * segment).min(size);
        let chunks = (start / 1024, end.div_ceil(1024));
        let outboard = shared.partial.outboard.clone();
        let t0 = tokio::time::Instant::now();
        let r = fetch_range(
            &mut control,
            peer,
            RangeWant {
                digest,
                size,
                chunks,
                last_resort: announcer && misses >= helpers,
            },
            &shared.partial.data,
            &outboard,
        )
        .await;
        tracing::trace!(me = %p2p.peer_id, %peer, %digest, announcer, index, misses, elapsed = ?t0.elapsed(), ok = r.is_ok(), "segment request");
        match r {
            Ok(()) => {
                misses_in_a_row = 0;
                failures = 0;
                shared.finish(index);
            }
            Err(RangeError::Missing) => {
                // Only helpers' misses count: they decide when the announcer is the last resort.
                shared.give_back(index, if announcer { misses } else { misses + 1 });
                misses_in_a_row += 1;
                let give_up = shared.stalled()
                    && (announcer || shared.announcers_alive.load(Ordering::SeqCst) == 0);
                if give_up {
                    return;
                }
                // A peer that had none of the segments we lack: ask again a little later.
                let pass = u32::try_from(shared.waiting()).unwrap_or(u32::MAX).max(2);
                if misses_in_a_row >= pass {
                    tokio::time::sleep(Duration::from_millis(
                        20 * u64::from((misses_in_a_row / pass).min(10)),
                    ))
                    .await;
                }
            }
            Err(e) => {
                shared.give_back(index, misses);
                failures += 1;
                // A refused or broken stream is often momentary (the peer is busy serving
                // others, a link flapped); a corrupt chunk is not.
                if failures < 3 && !matches!(e, RangeError::Corrupt(_)) {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(failures))).await;
                    continue;
                }
                shared
                    .bad
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(peer);
                if let RangeError::Corrupt(why) = &e {
                    p2p.strike(peer, &format!("sent a bad chunk of {digest}: {why}"))
                        .await;
                } else {
                    tracing::debug!(%peer, %digest, error = %e, "provider could not serve a segment");
                }
                return;
            }
        }
    }
}

/// Connected peers to ask as helpers: not announcers, not bad, not asked already; at most
/// `room`.
fn idle_helpers(
    p2p: &crate::p2p::P2p,
    hints: &[PeerId],
    bad: &HashSet<PeerId>,
    busy: &HashSet<PeerId>,
    room: usize,
) -> Vec<PeerId> {
    p2p.connected_peers()
        .into_iter()
        .filter(|p| !hints.contains(p) && !bad.contains(p) && !busy.contains(p))
        .take(room)
        .collect()
}

/// One round of a fetch: a worker per peer asked, until every worker has ended.
struct Round {
    workers: tokio::task::JoinSet<()>,
    /// The peer each running worker asks.
    asking: HashMap<tokio::task::Id, PeerId>,
    shared: Arc<Shared>,
    p2p: crate::p2p::P2p,
    digest: Digest,
    /// Helpers at the start of the round: how many misses make a segment a last resort.
    helpers: u32,
}

impl Round {
    fn ask(&mut self, peer: PeerId, announcer: bool) {
        let task = self.workers.spawn(worker(
            self.shared.clone(),
            self.p2p.clone(),
            peer,
            self.digest,
            announcer,
            self.helpers,
        ));
        self.asking.insert(task.id(), peer);
    }

    /// Waits for every worker to end, asking up to `room` peers at once meanwhile.
    async fn run(mut self, hints: &[PeerId], room: usize) {
        let mut recruit = tokio::time::interval(RECRUIT_EVERY);
        recruit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recruit.tick().await;
        loop {
            tokio::select! {
                joined = self.workers.join_next_with_id() => match joined {
                    None => return,
                    Some(Ok((id, ()))) => { self.asking.remove(&id); }
                    Some(Err(e)) => { self.asking.remove(&e.id()); }
                },
                _ = recruit.tick() => {
                    // Segments are arriving, so peers that had nothing may have some now: ask
                    // the connected peers nobody is asking (a worker that gave up early would
                    // otherwise leave the rest of the fetch to fewer peers).
                    if self.shared.stalled() || !self.shared.remaining() {
                        continue;
                    }
                    let bad = self.shared.bad.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let busy: HashSet<PeerId> = self.asking.values().copied().collect();
                    let free = room.saturating_sub(busy.len());
                    for peer in idle_helpers(&self.p2p, hints, &bad, &busy, free) {
                        self.ask(peer, false);
                    }
                }
            }
        }
    }
}

async fn run(
    state: &Arc<NodeState>,
    package: &str,
    digest: Digest,
    size: u64,
    hints: Vec<PeerId>,
    progress: &watch::Sender<FetchState>,
) -> Result<(), String> {
    if state.store.blobs().contains(&digest) {
        return Ok(());
    }
    let Some(p2p) = state.p2p.clone() else {
        return Err("peer-to-peer networking is off".into());
    };
    let dir = state.store.blobs().partial_dir();
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let data = dir.join(digest.hex());
    let outboard = data.with_extension("obao");
    for (path, len) in [
        (&data, size),
        (
            &outboard,
            bao_tree::BaoTree::new(size, crate::p2p::blob_exchange::BLOCK).outboard_size(),
        ),
    ] {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        f.set_len(len).map_err(|e| e.to_string())?;
    }
    let segment = segment_bytes(size);
    let count = size.div_ceil(segment).max(1);
    let done = load_done(&data);
    // Each node walks the segments in its own order, so peers hold different ones early.
    let mut order: Vec<u64> = (0..count).filter(|i| !done.contains(i)).collect();
    let me = p2p.peer_id.to_bytes();
    order.sort_by_key(|i| {
        let mut h = blake3::Hasher::new();
        h.update(&me);
        h.update(&i.to_be_bytes());
        *h.finalize().as_bytes()
    });
    let partial = Arc::new(Partial {
        package: package.to_owned(),
        size,
        segment,
        data: data.clone(),
        outboard: outboard.clone(),
        done: Mutex::new(done),
    });
    state
        .fetcher
        .partials
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(digest, partial.clone());
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            waiting: order.into_iter().map(|i| (i, 0)).collect(),
            in_flight: 0,
        }),
        changed: Notify::new(),
        partial,
        bad: Mutex::default(),
        done_file: Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(done_path(&data))
                .map_err(|e| e.to_string())?,
        ),
        progress: progress.clone(),
        last_progress: Mutex::new(tokio::time::Instant::now()),
        announcers_alive: AtomicUsize::new(0),
        announcers_idle: AtomicUsize::new(0),
    });
    let _ = progress.send(FetchState::Running {
        verified: shared.verified_prefix(),
    });

    let mut hints = hints;
    let mut asked_dht = false;
    loop {
        if !shared.remaining() {
            break;
        }
        let before = shared.done_count();
        let bad = shared.bad.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let announcers: Vec<PeerId> = hints.iter().filter(|p| !bad.contains(p)).copied().collect();
        let helpers = idle_helpers(&p2p, &hints, &bad, &HashSet::new(), HELPERS);
        if !announcers.is_empty() || !helpers.is_empty() {
            let mut round = Round {
                workers: tokio::task::JoinSet::new(),
                asking: HashMap::new(),
                shared: shared.clone(),
                p2p: p2p.clone(),
                digest,
                helpers: u32::try_from(helpers.len()).unwrap_or(u32::MAX),
            };
            let room = HELPERS + announcers.len();
            for peer in announcers {
                round.ask(peer, true);
            }
            for peer in helpers {
                round.ask(peer, false);
            }
            round.run(&hints, room).await;
            if shared.done_count() > before || !shared.remaining() {
                continue;
            }
        }
        // Nobody we asked could help: look for other providers once, then give up.
        if asked_dht {
            return Err(format!("no peer could serve blob {digest}"));
        }
        asked_dht = true;
        let found: Vec<PeerId> = p2p
            .providers(digest)
            .await
            .into_iter()
            .filter(|p| !bad.contains(p) && !hints.contains(p))
            .take(HELPERS)
            .collect();
        if found.is_empty() {
            return Err(format!("no peer could serve blob {digest}"));
        }
        hints.extend(found);
        *shared
            .last_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
    }

    // Every segment verified against the digest's tree; hash the whole once more before the
    // blob takes its name, and check the archive like any pushed package.
    let check = data.clone();
    let limits = state.config.archive_limits();
    let verified = tokio::task::spawn_blocking(move || crate::ingest::verify_file(&check, &limits))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("fetched blob is not a valid package: {e}"))?;
    if verified.digest != digest {
        for p in [&data, &done_path(&data), &outboard] {
            let _ = std::fs::remove_file(p);
        }
        return Err(format!(
            "fetched blob hashes to {} instead of {digest}",
            verified.digest
        ));
    }
    let _pin = store_blob(&state.store, data.clone(), digest)
        .await
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(done_path(&data));
    let _ = std::fs::remove_file(&outboard);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_whole_groups() {
        assert_eq!(segment_bytes(1000), 256 * 1024);
        assert_eq!(segment_bytes(64 * 1024 * 1024), 4 * 1024 * 1024);
        assert_eq!(segment_bytes(u64::MAX / 2), 8 * 1024 * 1024);
        assert_eq!(segment_bytes(100 * 1024 * 1024) % (16 * 1024), 0);
    }

    #[test]
    fn partial_knows_which_ranges_it_holds() {
        let p = Partial {
            package: "p".into(),
            size: 1000 * 1024,
            segment: 256 * 1024,
            data: PathBuf::new(),
            outboard: PathBuf::new(),
            done: Mutex::new(HashSet::from([0, 2])),
        };
        assert!(p.holds(0, 256));
        assert!(!p.holds(0, 257));
        assert!(p.holds(512, 768));
        assert!(!p.holds(768, 1000));
    }
}
