//! Continuous replication: the engine that turns peer events into synced records and fetched
//! blobs, and announces this node's new records to its peers.
//!
//! - New records in the local log (pushed here, mirrored, imported or replicated) are gossiped
//!   when their package is shared with everyone, and every connected peer they are shared with
//!   is poked to pull.
//! - On connect, on a poke, and every `sync_interval_secs`, the node pulls from each peer
//!   everything after the position it reached last time (anti-entropy).
//! - A record counts only with a valid signature and a `[[replicate]]` rule for its origin and
//!   package. For eager rules the blob is fetched and verified before the manifest is applied.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use libp2p::PeerId;
use niso_protocol::record::{Record, RecordBody};
use tokio::sync::mpsc;

use crate::{
    clock::now_ms,
    config::BlobMode,
    identity::peer_id as origin_peer_id,
    node::NodeState,
    p2p::{P2pEvent, sync},
    store::{Applied, ChangeError, PeerSync},
};

/// How a batch of incoming records is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Continuous replication: the `[[replicate]]` rules decide.
    Rules,
    /// An operator's `mirror`: everything the peer shares, blobs eagerly.
    Mirror,
}

/// Counts of what a batch of incoming records did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub seen: u64,
    pub applied: u64,
    pub versions: u64,
    pub tags: u64,
    pub deletions: u64,
    pub skipped: u64,
    pub untrusted: u64,
    pub blobs: u64,
    pub bytes: u64,
    /// Records left for a later attempt because their blob could not be fetched yet.
    pub incomplete: u64,
    pub rejected: Vec<String>,
}

/// Peers being synced right now, and those that asked again meanwhile.
#[derive(Debug, Default)]
pub struct SyncGate {
    running: Mutex<HashSet<PeerId>>,
    again: Mutex<HashSet<PeerId>>,
}

pub async fn run(state: Arc<NodeState>, mut events: mpsc::Receiver<P2pEvent>) {
    let Some(p2p) = state.p2p.clone() else { return };
    let mut log = state.store.watch_log();
    let mut announced = state.store.log_position();
    let mut tick = tokio::time::interval(Duration::from_secs(
        state.config.p2p.sync_interval_secs.max(1),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                None => break,
                Some(P2pEvent::Connected(peer) | P2pEvent::Poked(peer)) => spawn_sync(&state, peer),
                Some(P2pEvent::Disconnected(_)) => {}
                Some(P2pEvent::Gossip { from, record }) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let outcome = take_in(&state, from, vec![*record], Mode::Rules).await;
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
                for peer in p2p.connected_peers() {
                    spawn_sync(&state, peer);
                }
            }
        }
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
        let mut control = p2p.control();
        tokio::spawn(async move {
            if let Err(e) = sync::poke(&mut control, peer).await {
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
                tracing::debug!(%peer, error = %e, "sync failed");
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
    let mut cursor = state.store.peer_sync(&peer_s).unwrap_or_default();
    let replicate_fp = state.trust.replicate_fingerprint();
    if cursor.replicate_fingerprint != replicate_fp {
        cursor = PeerSync {
            replicate_fingerprint: replicate_fp,
            ..PeerSync::default()
        };
    }
    let mut control = p2p.control();
    let mut total = Outcome::default();
    loop {
        let page = sync::pull(&mut control, peer, cursor.cursor, state.trust.wants()).await?;
        if page.share_fingerprint != cursor.share_fingerprint && cursor.cursor != 0 {
            // The peer's sharing changed: earlier positions may hold records now visible.
            cursor = PeerSync {
                cursor: 0,
                share_fingerprint: page.share_fingerprint,
                replicate_fingerprint: replicate_fp,
            };
            continue;
        }
        cursor.share_fingerprint = page.share_fingerprint;
        let records = decode_page(state, &p2p, peer, &page.records).await;
        let outcome = take_in(state, peer, records, Mode::Rules).await;
        let incomplete = outcome.incomplete > 0;
        merge(&mut total, outcome);
        if incomplete {
            // Keep the cursor before this page: the next round retries the missing blobs
            // (records already applied are skipped cheaply).
            break;
        }
        cursor.cursor = page.next.max(cursor.cursor);
        if let Err(e) = state
            .store
            .set_peer_sync(peer_s.clone(), cursor.clone())
            .await
        {
            tracing::warn!(error = %e, "could not save sync progress");
        }
        p2p.note_sync(&peer, cursor.cursor, now_ms());
        if !page.more {
            break;
        }
    }
    Ok(total)
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
    let mut control = p2p.control();
    let mut after = 0;
    let mut total = Outcome::default();
    loop {
        let page = sync::pull(
            &mut control,
            peer,
            after,
            vec![("*".into(), vec!["*".into()])],
        )
        .await?;
        let records = decode_page(state, &p2p, peer, &page.records).await;
        merge(
            &mut total,
            take_in(state, peer, records, Mode::Mirror).await,
        );
        after = page.next.max(after);
        if !page.more {
            break;
        }
    }
    Ok(total)
}

async fn decode_page(
    state: &NodeState,
    p2p: &crate::p2p::P2p,
    peer: PeerId,
    raw: &[Vec<u8>],
) -> Vec<Record> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bad = 0;
    for bytes in raw {
        match decode(state, bytes) {
            Ok(r) => out.push(r),
            Err(e) => {
                bad += 1;
                tracing::warn!(security = true, %peer, error = %e, "peer sent an invalid record");
            }
        }
    }
    if bad > 0 {
        p2p.strike(
            peer,
            &format!("sent {bad} invalid record(s) in a sync page"),
        )
        .await;
    }
    out
}

fn merge(total: &mut Outcome, o: Outcome) {
    total.seen += o.seen;
    total.applied += o.applied;
    total.versions += o.versions;
    total.tags += o.tags;
    total.deletions += o.deletions;
    total.skipped += o.skipped;
    total.untrusted += o.untrusted;
    total.blobs += o.blobs;
    total.bytes += o.bytes;
    total.incomplete += o.incomplete;
    total.rejected.extend(o.rejected);
}

/// Judges and applies records that came from `from`, fetching blobs first where needed.
pub async fn take_in(
    state: &Arc<NodeState>,
    from: PeerId,
    records: Vec<Record>,
    mode: Mode,
) -> Outcome {
    let mut out = Outcome::default();
    let mut waiting: HashMap<niso_protocol::Digest, bool> = HashMap::new();
    for record in records {
        out.seen += 1;
        if state
            .store
            .has_record(&record.origin, record.seq)
            .unwrap_or(false)
        {
            out.skipped += 1;
            continue;
        }
        let package = record.body.package().to_string();
        let blob_mode = match mode {
            Mode::Mirror => BlobMode::Eager,
            Mode::Rules => match state
                .trust
                .accepts(&origin_peer_id(&record.origin), &package)
            {
                Some(m) => m,
                None => {
                    out.untrusted += 1;
                    continue;
                }
            },
        };
        let mut _pin = None;
        if let RecordBody::Manifest(m) = &record.body {
            if m.size > state.config.limits.max_package_bytes {
                out.rejected.push(format!(
                    "{package} {}: larger than this node accepts",
                    m.version
                ));
                continue;
            }
            let have = state.store.blobs().contains(&m.digest);
            if blob_mode == BlobMode::Eager && !have {
                let fetched = match waiting.get(&m.digest) {
                    Some(ok) => *ok,
                    None => {
                        let ok = match state
                            .fetcher
                            .fetch(state, &package, m.digest, m.size, vec![from])
                            .await
                        {
                            Ok(()) => {
                                out.blobs += 1;
                                out.bytes += m.size;
                                true
                            }
                            Err(e) => {
                                out.incomplete += 1;
                                out.rejected.push(format!(
                                    "{package} {}: blob not fetched yet: {e}",
                                    m.version
                                ));
                                false
                            }
                        };
                        waiting.insert(m.digest, ok);
                        ok
                    }
                };
                if !fetched {
                    continue;
                }
            }
            if state.store.blobs().contains(&m.digest) {
                _pin = Some(state.store.blobs().pin(m.digest));
            }
        }
        let kind = record.body.kind();
        let what = format!(
            "{kind} record {}#{} for {package}",
            record.origin, record.seq
        );
        match apply(state, record).await {
            Ok(Applied::Stored) => {
                out.applied += 1;
                state.metrics.records_applied.inc();
                match kind {
                    "manifest" => out.versions += 1,
                    "tag" => out.tags += 1,
                    _ => out.deletions += 1,
                }
            }
            Ok(Applied::Duplicate) => out.skipped += 1,
            Err(e) => {
                state.metrics.records_rejected.inc();
                let security = matches!(
                    e,
                    ChangeError::Conflict { .. }
                        | ChangeError::TagRollback { .. }
                        | ChangeError::Equivocation { .. }
                );
                tracing::warn!(security, %from, record = %what, reason = %e, "refused a replicated record");
                out.rejected.push(format!("{what}: {e}"));
            }
        }
    }
    out
}

/// Parses a record from a peer; checks its signature unless a test build broke that on
/// purpose.
fn decode(state: &NodeState, bytes: &[u8]) -> Result<Record, niso_protocol::record::RecordError> {
    #[cfg(feature = "fault-injection")]
    if state.config.faults.skip_signature_checks {
        return Record::parse_unverified(bytes);
    }
    let _ = state;
    Record::from_bytes(bytes)
}

async fn apply(state: &NodeState, record: Record) -> Result<Applied, ChangeError> {
    #[cfg(feature = "fault-injection")]
    if state.config.faults.skip_signature_checks {
        return state.store.apply_unverified(record).await;
    }
    state.store.apply(record).await
}
