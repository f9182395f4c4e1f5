//! Continuous replication: the engine that turns peer events into synced records and fetched
//! blobs, and announces this node's new records to its peers.
//!
//! - New records in the local log (pushed here, mirrored, imported or replicated) are gossiped
//!   when their package is shared with everyone, and every connected peer they are shared with
//!   is poked to pull.
//! - On connect and on a poke, the node pulls from that peer everything after the position it
//!   reached last time; every `sync_interval_secs` it does so with the next
//!   `sync_peers_per_round` connected peers in turn (anti-entropy, see `sync_rota`).
//! - Every record goes through `intake::admit` (signature, replicate rules, authority, blob
//!   verified against the manifest, one write); for eager rules the blob is fetched from
//!   peers before the manifest is applied.
//! - A sync round never waits on one blob: records of packages with nothing to fetch are
//!   admitted at once, and each package with a blob to fetch waits as a group (see
//!   `deferred`), admitted in order when its fetch ends. Only when the groups are full does
//!   the round pause, until one is admitted.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use libp2p::PeerId;
use niso_protocol::{
    federation::SyncPage,
    record::{ManifestBody, Record, RecordBody},
};
use tokio::sync::mpsc;

use crate::{
    blobs::FetchState,
    clock::now_ms,
    deferred::Deferred,
    intake::{self, BlobError, BlobSource, Outcome, Policy, Provided},
    node::NodeState,
    p2p::{P2p, P2pEvent, PeerInfo, Reach, sync},
    signatures::Prechecked,
    store::PeerSync,
    sync_rota::SyncRota,
};

/// Peers being synced right now, those that asked again meanwhile, and the sync records
/// waiting on blob fetches.
#[derive(Debug, Default)]
pub struct SyncGate {
    running: Mutex<HashSet<PeerId>>,
    again: Mutex<HashSet<PeerId>>,
    deferred: Arc<Deferred>,
}

/// Every peer this node knows, with how far behind each one's log this node is: the
/// position pulled to, held back by record groups still waiting for their blobs.
pub fn peer_report(state: &NodeState) -> Vec<PeerInfo> {
    let Some(p2p) = &state.p2p else {
        return Vec::new();
    };
    let deferred = &state.sync_gate.deferred;
    let mut peers = p2p.peers();
    for info in &mut peers {
        let Ok(peer) = info.peer_id.parse::<PeerId>() else {
            continue;
        };
        let (applied, waiting) = deferred.progress(peer, info.synced_to.unwrap_or(0));
        info.blobs_pending = waiting as u64;
        if let Some(head) = info.log_head {
            info.records_behind = Some(head.saturating_sub(applied));
        }
    }
    peers
}

pub async fn run(state: Arc<NodeState>, mut events: mpsc::Receiver<P2pEvent>) {
    let Some(p2p) = state.p2p.clone() else { return };
    let mut log = state.store.watch_log();
    let mut announced = state.store.log_position();
    let period = Duration::from_secs(state.config.p2p.sync_interval_secs.max(1));
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + first_round_offset(&state.peer_id, period),
        period,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_round = state.config.p2p.sync_peers_per_round.max(1);
    let mut rota = SyncRota::default();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                None => break,
                Some(P2pEvent::Connected(peer) | P2pEvent::Poked(peer)) => spawn_sync(&state, peer),
                Some(P2pEvent::Disconnected(_)) => {}
                Some(P2pEvent::Gossip { from, record }) => {
                    let Some(place) = state.gossip_room.enter(from) else {
                        tracing::debug!(%from, "dropped a gossiped record: no room to take it in");
                        continue;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _place = place;
                        let outcome = take_in(
                            &state,
                            from,
                            (vec![*record], 0),
                            Policy::Rules,
                            &Prechecked::default(),
                            &mut PeerBlobs { from },
                        )
                        .await;
                        if outcome.applied > 0 {
                            tracing::debug!(%from, "applied a gossiped record");
                        }
                    });
                }
            },
            changed = log.changed() => {
                if changed.is_err() {
                    break;
                }
                announced = announce(&state, announced).await;
            }
            _ = tick.tick() => {
                for peer in rota.next_round(p2p.connected_peers(), per_round) {
                    spawn_sync(&state, peer);
                }
            }
        }
    }
}

/// Where in the first `period` this node's sync rounds start: spread by its identity, so
/// nodes started together (a site's boot, a simulator) do not all pull at the same instant.
/// Aligned rounds arrive at each peer as a burst beyond its stream limits, and the pulls it
/// drops are the same ones round after round.
fn first_round_offset(peer_id: &str, period: Duration) -> Duration {
    let hash = blake3::hash(peer_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    let millis = period.as_millis().max(1) as u64;
    Duration::from_millis(u64::from_le_bytes(bytes) % millis)
}

impl SyncGate {
    /// How many groups of sync records wait on blob fetches, as it changes (tests wait for
    /// zero to know every record pulled so far was judged).
    pub fn watch_deferred(&self) -> tokio::sync::watch::Receiver<usize> {
        self.deferred.watch()
    }
}

/// Gossips and pokes about log entries after `from`; returns the new announced position.
async fn announce(state: &Arc<NodeState>, from: u64) -> u64 {
    let Some(p2p) = state.p2p.clone() else {
        return from;
    };
    let mut after = from;
    let mut poke: HashSet<PeerId> = HashSet::new();
    let connected = p2p.connected_peers();
    loop {
        let Ok((records, next, more)) =
            state
                .store
                .records_after(after, 500, 5000, &|_: &Record| true)
        else {
            return after;
        };
        for record in &records {
            let package = record.body.package().as_str();
            if state.trust.shares_publicly(package) {
                let _ = p2p.publish(record).await;
                if let RecordBody::Manifest(m) = &record.body
                    && state.store.blobs().contains(&m.digest)
                {
                    let _ = p2p.provide(m.digest).await;
                }
            }
            for peer in &connected {
                if state.trust.shares_with(&peer.to_string(), package) {
                    poke.insert(*peer);
                }
            }
        }
        after = next.max(after);
        if !more {
            break;
        }
    }
    for peer in poke {
        let p2p = p2p.clone();
        tokio::spawn(async move {
            if let Err(e) = sync::poke(&p2p, peer).await {
                tracing::debug!(%peer, error = %e, "poke failed");
            }
        });
    }
    after
}

fn spawn_sync(state: &Arc<NodeState>, peer: PeerId) {
    if !state.trust.replicates_anything() {
        return;
    }
    {
        let mut running = state
            .sync_gate
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !running.insert(peer) {
            state
                .sync_gate
                .again
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(peer);
            return;
        }
    }
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = sync_with(&state, peer).await {
                tracing::debug!(%peer, error = %crate::http::error::chain(&e), "sync failed");
                if e.is_misbehaviour()
                    && let Some(p2p) = &state.p2p
                {
                    p2p.strike(peer, &format!("bad sync response: {e}")).await;
                }
            }
            let again = state
                .sync_gate
                .again
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&peer);
            if !again {
                break;
            }
        }
        state
            .sync_gate
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer);
    });
}

/// Pulls everything new from `peer` under the replicate rules.
pub async fn sync_with(state: &Arc<NodeState>, peer: PeerId) -> Result<Outcome, sync::SyncError> {
    let Some(p2p) = state.p2p.clone() else {
        return Ok(Outcome::default());
    };
    let peer_s = peer.to_string();
    let deferred = state.sync_gate.deferred.clone();
    let mut cursor = state.store.peer_sync(&peer_s).unwrap_or_default();
    let replicate_fp = state.trust.replicate_fingerprint();
    if cursor.replicate_fingerprint != replicate_fp {
        cursor = PeerSync {
            replicate_fingerprint: replicate_fp,
            ..PeerSync::default()
        };
        deferred.restart(peer);
    }
    cursor.cursor = deferred.resume(peer, cursor.cursor);
    let mut total = Outcome::default();
    // The next page, pulled and its signatures checked while this one is judged and written
    // (its position is known as soon as this one arrives), so a catch-up is not one round trip
    // per page plus the work, and checking overlaps with writing.
    let mut prefetched: Option<Pulled> = None;
    loop {
        let pulled = match prefetched.take() {
            Some(pulled) => pulled,
            None => Pulled::pull(state, &p2p, peer, cursor.cursor).await?,
        };
        let page = &pulled.page;
        if page.share_fingerprint != cursor.share_fingerprint && cursor.cursor != 0 {
            // The peer's sharing changed: earlier positions may hold records now visible.
            cursor = PeerSync {
                cursor: 0,
                share_fingerprint: page.share_fingerprint,
                replicate_fingerprint: replicate_fp,
            };
            deferred.restart(peer);
            continue;
        }
        cursor.share_fingerprint = page.share_fingerprint;
        let start = cursor.cursor;
        let after = page.next.max(cursor.cursor);
        let more = page.more;
        let head = page.head;
        let next_pull = async {
            if more {
                Some(Pulled::pull(state, &p2p, peer, after).await)
            } else {
                None
            }
        };
        let work = take_page(state, peer, &deferred, pulled, start);
        let (next, outcome) = tokio::join!(next_pull, work);
        total.merge(outcome);
        cursor.cursor = after;
        let saved = PeerSync {
            cursor: deferred.reached(peer, cursor.cursor),
            ..cursor.clone()
        };
        if let Err(e) = state.store.set_peer_sync(peer_s.clone(), saved).await {
            tracing::warn!(error = %e, "could not save sync progress");
        }
        p2p.note_sync(&peer, cursor.cursor, head, now_ms());
        match next {
            None => break,
            Some(next) => prefetched = Some(next?),
        }
    }
    Ok(total)
}

/// A sync page as pulled, its records decoded and their signatures checked.
struct Pulled {
    page: SyncPage,
    records: Vec<Record>,
    unparseable: usize,
    /// Shared with the page's deferred groups, admitted once their blobs are here.
    prechecked: Arc<Prechecked>,
}

impl Pulled {
    async fn pull(
        state: &Arc<NodeState>,
        p2p: &P2p,
        peer: PeerId,
        after: u64,
    ) -> Result<Self, sync::SyncError> {
        let mut page = sync::pull(p2p, peer, Reach::Connected, after, state.trust.wants()).await?;
        let (records, unparseable) = decode_page(peer, &std::mem::take(&mut page.records));
        let prechecked = Arc::new(Prechecked::check(state, &records).await);
        Ok(Self {
            page,
            records,
            unparseable,
            prechecked,
        })
    }
}

/// Judges and admits one sync page from `peer` that started at position `start`: records
/// needing no fetch at once, each package with a blob to fetch as a deferred group.
async fn take_page(
    state: &Arc<NodeState>,
    peer: PeerId,
    deferred: &Arc<Deferred>,
    pulled: Pulled,
    start: u64,
) -> Outcome {
    let Pulled {
        records,
        unparseable,
        prechecked,
        ..
    } = pulled;
    // Records that need no fetch now, first: they never wait, not even while the deferred
    // groups are full. Each package with a blob to fetch waits as a group, so a large blob
    // never holds up the records of other packages.
    let (now, later) = deferred.split(state, records);
    let outcome = take_in(
        state,
        peer,
        (now, unparseable),
        Policy::Rules,
        &prechecked,
        &mut StartBlobs { from: peer },
    )
    .await;
    if outcome.incomplete > 0 {
        // Keep the page for the next round: its missing blobs are being fetched.
        deferred.retry_from(peer, start);
    }
    for group in later {
        let state2 = state.clone();
        let prechecked = prechecked.clone();
        let admit = move |records: Vec<Record>| async move {
            let outcome = take_in(
                &state2,
                peer,
                (records, 0),
                Policy::Rules,
                &prechecked,
                &mut PeerBlobs { from: peer },
            )
            .await;
            outcome.incomplete == 0
        };
        let state3 = state.clone();
        // Lets the saved position (and the peers report) move past the page.
        let released = move || spawn_sync(&state3, peer);
        // Waits while the deferred groups are full: pulling on would only pull this page again.
        deferred.defer(peer, start, group, admit, released).await;
    }
    outcome
}

/// Everything `peer` shares with us, now, whatever the replicate rules say (an operator's
/// explicit mirror). Starts from the beginning of the peer's log; records already held are
/// skipped cheaply.
pub async fn mirror_from_peer(
    state: &Arc<NodeState>,
    peer: PeerId,
) -> Result<Outcome, sync::SyncError> {
    let Some(p2p) = state.p2p.clone() else {
        return Ok(Outcome::default());
    };
    let mut after = 0;
    let mut total = Outcome::default();
    loop {
        let page = sync::pull(
            &p2p,
            peer,
            Reach::Dial,
            after,
            vec![("*".into(), vec!["*".into()])],
        )
        .await?;
        let records = decode_page(peer, &page.records);
        total.merge(
            take_in(
                state,
                peer,
                records,
                Policy::Operator,
                &Prechecked::default(),
                &mut PeerBlobs { from: peer },
            )
            .await,
        );
        after = page.next.max(after);
        if !page.more {
            break;
        }
    }
    Ok(total)
}

/// Parses a page's records; returns them and how many entries were not records at all.
/// Signatures are checked by the intake, or ahead of it (`Prechecked`).
fn decode_page(peer: PeerId, raw: &[Vec<u8>]) -> (Vec<Record>, usize) {
    let mut out = Vec::with_capacity(raw.len());
    let mut bad = 0;
    for bytes in raw {
        match Record::parse_unverified(bytes) {
            Ok(r) => out.push(r),
            Err(e) => {
                bad += 1;
                tracing::warn!(security = true, %peer, error = %e, "peer sent an invalid record");
            }
        }
    }
    (out, bad)
}

/// Blobs from the peer that sent the records (and any other peer that has them), waited for.
struct PeerBlobs {
    from: PeerId,
}

impl BlobSource for PeerBlobs {
    async fn provide(
        &mut self,
        state: &Arc<NodeState>,
        m: &ManifestBody,
    ) -> Result<Provided, BlobError> {
        state
            .fetcher
            .fetch(state, m.name.as_str(), m.digest, m.size, vec![self.from])
            .await
            .map(Provided::Stored)
            .map_err(|e| BlobError::Unavailable(crate::http::error::chain(&e)))
    }
}

/// Blobs for the records of a sync page admitted at once, which should need none: should one
/// be missing after all, its fetch is started (or joined) and not waited for, so the record is
/// left incomplete and the rest of the page goes on.
struct StartBlobs {
    from: PeerId,
}

impl BlobSource for StartBlobs {
    async fn provide(
        &mut self,
        state: &Arc<NodeState>,
        m: &ManifestBody,
    ) -> Result<Provided, BlobError> {
        let progress =
            state
                .fetcher
                .start(state, m.name.as_str(), m.digest, m.size, vec![self.from]);
        if let FetchState::Done(meta) = &*progress.borrow() {
            return Ok(Provided::Stored(meta.clone()));
        }
        if state.store.blobs().contains(&m.digest) {
            return Ok(Provided::Stored(None));
        }
        Err(BlobError::Unavailable("its fetch is under way".into()))
    }
}

/// Hands records that came from `from` to the intake, then strikes `from` once if the batch
/// held entries that were not records (`unparseable`) or records that are invalid. Once, and
/// after the intake: a bad page is one misdeed, and the good records in it are judged first.
async fn take_in(
    state: &Arc<NodeState>,
    from: PeerId,
    (records, unparseable): (Vec<Record>, usize),
    policy: Policy,
    prechecked: &Prechecked,
    blobs: &mut (impl BlobSource + Send),
) -> Outcome {
    let outcome = match intake::admit_prechecked(state, policy, records, prechecked, blobs).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(%from, error = %e, "could not store replicated records");
            // Counted as incomplete, so a sync round keeps its cursor and retries.
            Outcome {
                incomplete: 1,
                ..Outcome::default()
            }
        }
    };
    let invalid = outcome.invalid();
    if invalid + unparseable > 0
        && let Some(p2p) = &state.p2p
    {
        p2p.strike(
            from,
            &format!("sent {unparseable} unparseable and {invalid} invalid record(s)"),
        )
        .await;
    }
    if let Some(p2p) = &state.p2p
        && !outcome.refused.is_empty()
    {
        p2p.note_refused(&from, outcome.refused.len() as u64);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, time::Duration};

    use super::first_round_offset;

    #[test]
    fn nodes_start_their_sync_rounds_spread_over_the_period() {
        let period = Duration::from_secs(10);
        let offsets: Vec<Duration> = (0..64)
            .map(|i| first_round_offset(&format!("12D3KooWnode{i}"), period))
            .collect();
        assert!(offsets.iter().all(|o| *o < period));
        // The same identity, the same offset: a node's rounds do not drift between restarts.
        assert_eq!(offsets[3], first_round_offset("12D3KooWnode3", period));
        let seconds: HashSet<u64> = offsets.iter().map(Duration::as_secs).collect();
        assert!(seconds.len() >= 8, "64 nodes landed in {seconds:?}");
    }
}
