//! Fetching blobs from peers: split into segments, pulled from several providers at once,
//! every chunk group verified on arrival, resumable across restarts, one fetch per digest.
//!
//! Progress is published on a `watch` channel as the verified prefix grows, so an HTTP pull of
//! a lazily replicated package can stream bytes while the fetch is still running.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use libp2p::PeerId;
use niso_protocol::Digest;
use tokio::sync::watch;

use crate::{
    ingest::store_blob,
    node::NodeState,
    p2p::blob_exchange::{RangeError, fetch_range},
};

/// Providers asked at once for one blob.
const PARALLEL: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchState {
    /// Bytes `0..verified` are in the partial file and verified.
    Running {
        verified: u64,
    },
    Done,
    Failed(String),
}

/// All fetches in flight, by digest.
#[derive(Debug, Default)]
pub struct Fetcher {
    inflight: Mutex<HashMap<Digest, watch::Receiver<FetchState>>>,
}

impl Fetcher {
    /// Starts fetching `digest` (or joins the fetch already running) and returns its progress.
    pub fn start(
        &self,
        state: &Arc<NodeState>,
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
        tokio::spawn(async move {
            let result = run(&state, digest, size, hints, &tx).await;
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
        digest: Digest,
        size: u64,
        hints: Vec<PeerId>,
    ) -> Result<(), String> {
        if state.store.blobs().contains(&digest) {
            return Ok(());
        }
        let mut rx = self.start(state, digest, size, hints);
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
}

/// Segment size: about 16 per blob, between 256 KiB and 8 MiB, in whole 16 KiB groups.
pub fn segment_bytes(size: u64) -> u64 {
    let group = 16 * 1024;
    (size / 16)
        .clamp(256 * 1024, 8 * 1024 * 1024)
        .div_ceil(group)
        * group
}

struct Plan {
    segment: u64,
    count: u64,
    done: HashSet<u64>,
}

impl Plan {
    fn verified_prefix(&self, size: u64) -> u64 {
        let mut n = 0;
        while n < self.count && self.done.contains(&n) {
            n += 1;
        }
        (n * self.segment).min(size)
    }
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

async fn run(
    state: &Arc<NodeState>,
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
    let partial = dir.join(digest.hex());
    {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&partial)
            .map_err(|e| e.to_string())?;
        f.set_len(size).map_err(|e| e.to_string())?;
    }
    let segment = segment_bytes(size);
    let count = size.div_ceil(segment).max(1);
    let plan = Arc::new(Mutex::new(Plan {
        segment,
        count,
        done: load_done(&partial),
    }));
    let queue: Arc<Mutex<VecDeque<u64>>> = Arc::new(Mutex::new(
        (0..count)
            .filter(|i| {
                !plan
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .done
                    .contains(i)
            })
            .collect(),
    ));
    let _ = progress.send(FetchState::Running {
        verified: plan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .verified_prefix(size),
    });

    // Candidates: the peers that told us about the blob, then every connected peer, then the
    // DHT's providers. Peers that fail or cheat drop out of this fetch.
    let mut candidates: Vec<PeerId> = hints;
    for p in p2p.connected_peers() {
        if !candidates.contains(&p) {
            candidates.push(p);
        }
    }
    let mut asked_dht = false;
    let bad: Arc<Mutex<HashSet<PeerId>>> = Arc::default();
    let done_file = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(done_path(&partial))
            .map_err(|e| e.to_string())?,
    ));

    loop {
        if queue.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            break;
        }
        let healthy: Vec<PeerId> = {
            let bad = bad.lock().unwrap_or_else(|p| p.into_inner());
            candidates
                .iter()
                .filter(|p| !bad.contains(p))
                .copied()
                .collect()
        };
        if healthy.is_empty() {
            if asked_dht {
                return Err(format!("no peer could serve blob {digest}"));
            }
            asked_dht = true;
            for p in p2p.providers(digest).await {
                if !candidates.contains(&p) {
                    candidates.push(p);
                }
            }
            continue;
        }
        let mut workers = tokio::task::JoinSet::new();
        for peer in healthy.iter().copied().take(PARALLEL) {
            let mut control = p2p.control();
            let (queue, plan, bad, done_file, partial, progress, p2p) = (
                queue.clone(),
                plan.clone(),
                bad.clone(),
                done_file.clone(),
                partial.clone(),
                progress.clone(),
                p2p.clone(),
            );
            workers.spawn(async move {
                loop {
                    let Some(index) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                        return;
                    };
                    let start = index * segment;
                    let end = ((index + 1) * segment).min(size);
                    let chunks = (start / 1024, end.div_ceil(1024));
                    match fetch_range(&mut control, peer, digest, size, chunks, &partial).await {
                        Ok(()) => {
                            let mut plan = plan.lock().unwrap_or_else(|p| p.into_inner());
                            plan.done.insert(index);
                            if let Ok(mut f) = done_file.lock() {
                                let _ = writeln!(f, "{index}");
                            }
                            let _ = progress.send(FetchState::Running {
                                verified: plan.verified_prefix(size),
                            });
                        }
                        Err(e) => {
                            queue.lock().unwrap_or_else(|p| p.into_inner()).push_front(index);
                            bad.lock().unwrap_or_else(|p| p.into_inner()).insert(peer);
                            if let RangeError::Corrupt(why) = &e {
                                p2p.strike(peer, &format!("sent a bad chunk of {digest}: {why}")).await;
                            } else {
                                tracing::debug!(%peer, %digest, error = %e, "provider could not serve a segment");
                            }
                            return;
                        }
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }

    // Every segment verified against the digest's tree; hash the whole once more before the
    // blob takes its name, and check the archive like any pushed package.
    let check = partial.clone();
    let limits = state.config.archive_limits();
    let verified = tokio::task::spawn_blocking(move || crate::ingest::verify_file(&check, &limits))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("fetched blob is not a valid package: {e}"))?;
    if verified.digest != digest {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(done_path(&partial));
        return Err(format!(
            "fetched blob hashes to {} instead of {digest}",
            verified.digest
        ));
    }
    let _pin = store_blob(&state.store, partial.clone(), digest)
        .await
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(done_path(&partial));
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
}
