//! Serving blob ranges to peers: which requests are admitted, in what order, and from what.
//! The serving rules ([`Serving`]) are pure state over time; what this node holds comes from
//! a [`Holdings`] (the node's store and running fetches), so the rules are tested alone.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use libp2p::PeerId;
use niso_protocol::{
    Digest,
    federation::{BLOB_PROTOCOL, BlobRequest},
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use super::{
    BlobLimits,
    have_list::HaveList,
    wire::{self, Order, Source},
};
use crate::{
    node::NodeState,
    p2p::{
        P2p,
        frames::{
            Admission, BLOB_SERVING, BLOB_STREAMS, SERVING_WAIT, StreamLimits, WireError,
            read_request, strike_bad_request,
        },
    },
};

/// Serving state: transfer slots per blob, and which ranges of complete blobs went out lately.
///
/// A node serves at most `per_blob` transfers of one blob at a time; further requests wait
/// up to `slot_wait` and are then told "not here", so requesters turn to other peers. Few
/// transfers at full speed beat many slow ones: a segment that arrives sooner is served
/// onwards sooner. A holder of a complete blob remembers the ranges it sent for
/// `resend_after`; another request for such a range is turned away (the peer that got it can
/// serve it) unless it is a last resort, and even then only once the range is settled (see
/// [`Sent::settled`]), a slot is free and no request for a range not sent yet is waiting: the
/// holder's uplink goes to new ranges first, so a popular blob leaves its origin about once
/// and spreads between peers.
///
/// Memory: a catch-up serves thousands of small blobs a second, and each range sent is
/// remembered for `resend_after`, so what is remembered per range is a small fixed record
/// ([`Sent`]); a blob's slots exist only while a transfer of it runs or waits.
#[derive(Debug)]
pub struct Serving {
    state: Arc<std::sync::Mutex<State>>,
    /// When idle slots and old ranges were last forgotten. Not on every request: that made
    /// serving a catch-up quadratic.
    swept: std::sync::Mutex<Instant>,
    limits: BlobLimits,
}

/// How often [`Serving`] forgets idle slots and ranges not sent within `resend_after`.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    /// Blobs with a transfer going out or waiting for a slot (idle ones until the next sweep).
    busy: HashMap<Digest, Busy>,
    /// Ranges of complete blobs sent lately, by blob and first chunk.
    sent: HashMap<(Digest, u64), Sent>,
}

#[derive(Debug)]
struct Busy {
    /// Held by every transfer and waiting request: the blob is idle when only the map holds it.
    slots: Arc<Semaphore>,
    /// Requests for ranges not sent lately that wait for a slot.
    fresh_waiting: usize,
}

impl Busy {
    fn idle(&self) -> bool {
        Arc::strong_count(&self.slots) == 1
    }
}

/// A fresh request counted in its blob's `fresh_waiting` while it waits for a slot.
struct Waiting<'a> {
    serving: &'a Serving,
    digest: Digest,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.serving.lock().busy.get_mut(&self.digest) {
            b.fresh_waiting = b.fresh_waiting.saturating_sub(1);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    /// When the last transfer of the range started or ended.
    at: Instant,
    in_flight: u32,
    /// Transfers of the range so far.
    times: u32,
}

impl Sent {
    /// Whether the range still counts as sent lately: in flight, or sent within `forget`.
    fn remembered(&self, now: Instant, forget: std::time::Duration) -> bool {
        self.in_flight > 0 || now - self.at < forget
    }

    /// Whether the range may go out again to a last-resort request: not in flight, and, after
    /// its first transfer, not just arrived (the peer that got it will be asked soon). Once it
    /// went out twice, peers are evidently not passing it on (they may not share), so no hold.
    fn settled(&self, now: Instant, hold: std::time::Duration) -> bool {
        self.in_flight == 0 && (self.times > 1 || now - self.at >= hold)
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
/// A transfer that did not go out whole (the requester gave up, the stream broke) does not
/// count as sent: nobody may hold the range, so it must not be turned away as sent lately.
struct Slot {
    _permit: OwnedSemaphorePermit,
    range: Option<Taken>,
    state: Arc<std::sync::Mutex<State>>,
    sent_whole: bool,
}

/// The range a [`Slot`] sends, and what its [`Sent::at`] was before this transfer started, so
/// a transfer that breaks off leaves the range's clock where it was.
#[derive(Debug, Clone, Copy)]
struct Taken {
    digest: Digest,
    first: u64,
    started: Instant,
    before: Option<Instant>,
}

impl Slot {
    /// The range went out whole.
    fn sent(&mut self) {
        self.sent_whole = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(taken) = self.range else {
            return;
        };
        let mut state = lock(&self.state);
        let key = (taken.digest, taken.first);
        let Some(sent) = state.sent.get_mut(&key) else {
            return;
        };
        sent.in_flight = sent.in_flight.saturating_sub(1);
        if self.sent_whole {
            sent.at = Instant::now();
        } else {
            sent.times = sent.times.saturating_sub(1);
            // Unless a later transfer started meanwhile (its start stands).
            if sent.at == taken.started {
                sent.at = taken.before.unwrap_or(taken.started);
            }
        }
        if sent.times == 0 && sent.in_flight == 0 {
            state.sent.remove(&key);
        }
    }
}

fn lock(state: &std::sync::Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Serving {
    pub fn new(limits: BlobLimits) -> Self {
        Self {
            state: Arc::default(),
            swept: std::sync::Mutex::new(Instant::now()),
            limits,
        }
    }

    /// Waits for a slot to serve `digest`, or `None`: every slot stayed busy, or the range was
    /// sent lately and this is not a last resort. A range of a complete blob is recorded as
    /// sent once it has a slot.
    async fn enter(&self, digest: Digest, ask: Ask) -> Option<Slot> {
        let (per_blob, hold, forget) = (
            self.limits.per_blob,
            self.limits.resend_hold,
            self.limits.resend_after,
        );
        // Counted as waiting (and the slots cloned, which keeps the blob busy) under the lock,
        // so a sweep never drops slots that a request is about to use.
        let (slots, fresh) = {
            let mut state = self.lock();
            let now = Instant::now();
            if self.sweep_due(now) {
                state.busy.retain(|_, b| !b.idle());
                state.sent.retain(|_, s| s.remembered(now, forget));
                // A catch-up's burst leaves a large table behind: give most of it back.
                let kept = state.sent.len();
                if state.sent.capacity() > 4 * kept.max(1024) {
                    state.sent.shrink_to(2 * kept);
                }
            }
            let fresh = match ask {
                Ask::Partial => true,
                Ask::Complete { first, last_resort } => match state.sent.get(&(digest, first)) {
                    Some(s) if !s.remembered(now, forget) => true,
                    None => true,
                    Some(sent) if last_resort && sent.settled(now, hold) => false,
                    Some(_) => return None,
                },
            };
            let b = state.busy.entry(digest).or_insert_with(|| Busy {
                slots: Arc::new(Semaphore::new(per_blob)),
                fresh_waiting: 0,
            });
            if fresh {
                b.fresh_waiting += 1;
            } else if b.fresh_waiting > 0 {
                // A resend is not waited for, and yields to new ranges: the requester asks
                // about its other segments meanwhile, some of which may be new here.
                return None;
            }
            (b.slots.clone(), fresh)
        };
        let permit = if fresh {
            // Waits on a clone: `slots` stays alive until `waiting` takes the count back, so
            // the entry stays busy and the count comes off this entry, never off a new one
            // that a sweep and another request made meanwhile. `waiting` also takes it back
            // if this future is dropped mid-wait (its task aborted, or the runtime shutting
            // down); a request whose peer went away still waits out `slot_wait` first.
            let waiting = Waiting {
                serving: self,
                digest,
            };
            let permit =
                tokio::time::timeout(self.limits.slot_wait, slots.clone().acquire_owned()).await;
            drop(waiting);
            permit.ok()?.ok()?
        } else {
            slots.try_acquire_owned().ok()?
        };
        let mut range = None;
        if let Ask::Complete { first, last_resort } = ask {
            let mut state = self.lock();
            let now = Instant::now();
            let key = (digest, first);
            let old = state
                .sent
                .get(&key)
                .filter(|s| s.remembered(now, forget))
                .copied();
            // Another request for the same range may have had a slot meanwhile.
            if fresh
                && let Some(s) = old
                && (!last_resort || !s.settled(now, hold))
            {
                return None;
            }
            let sent = state.sent.entry(key).or_insert(Sent {
                at: now,
                in_flight: 0,
                times: 0,
            });
            if old.is_none() {
                // Forgotten (or never sent): counts start afresh.
                *sent = Sent {
                    at: now,
                    in_flight: 0,
                    times: 0,
                };
            }
            sent.at = now;
            sent.in_flight += 1;
            sent.times += 1;
            range = Some(Taken {
                digest,
                first,
                started: now,
                before: old.map(|s| s.at),
            });
        }
        Some(Slot {
            _permit: permit,
            range,
            state: self.state.clone(),
            sent_whole: false,
        })
    }

    /// Whether a sweep is due; if so, it counts as done now.
    fn sweep_due(&self, now: Instant) -> bool {
        let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
        if now - *swept < SWEEP_EVERY {
            return false;
        }
        *swept = now;
        true
    }

    /// Ranges remembered as sent now (old ones linger until the next sweep).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.lock().sent.len()
    }

    /// Blobs whose slots are kept now (idle ones linger until the next sweep).
    #[cfg(test)]
    fn busy(&self) -> usize {
        self.lock().busy.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// What this node holds of a blob, for one peer.
#[derive(Debug, Clone)]
pub enum Held {
    /// The whole blob, in the blob store: its hash tree is computed on first use.
    Complete { data: PathBuf, size: u64 },
    /// Verified segments of a blob being fetched, with its pre-order hash tree.
    Partial(Source),
    /// A blob being fetched that lacks some of the ranges asked: the segments it holds.
    Lacking(HaveList),
}

/// What the serving side needs from the node: what it holds and shares with a peer.
pub trait Holdings: Send + Sync + 'static {
    /// What of `digest` this node may send `peer` for `chunk_ranges`: a complete blob of a
    /// package shared with the peer, or a running fetch's verified segments covering every
    /// range (or, when they do not, what that fetch holds); `None` when none of these.
    fn held(
        &self,
        peer: &PeerId,
        digest: &Digest,
        chunk_ranges: &[(u64, u64)],
    ) -> std::io::Result<Option<Held>>;
    /// The post-order hash tree of a complete blob (blocking: computed on first use).
    fn outboard(&self, digest: &Digest) -> std::io::Result<PathBuf>;
    /// Counts bytes sent.
    fn served(&self, bytes: u64);
}

/// Serves blob ranges until the protocol is dropped. Streams are admitted per peer, then
/// against the global backstop (see `frames`); a transfer slot is waited for only once the
/// request has arrived.
pub async fn serve<H: Holdings>(
    holdings: Arc<H>,
    serving: Arc<Serving>,
    p2p: Option<P2p>,
    stream_limits: &StreamLimits,
    mut incoming: crate::p2p::inbound::InboundStreams,
) {
    let admission = Admission::new(BLOB_PROTOCOL, stream_limits.blob_per_peer, BLOB_STREAMS);
    let deadline = stream_limits.request_timeout();
    let permits = Arc::new(Semaphore::new(BLOB_SERVING));
    while let Some((peer, mut stream)) = incoming.next().await {
        let Some(admitted) = admission.admit(peer) else {
            continue;
        };
        let (holdings, serving, p2p, permits) = (
            holdings.clone(),
            serving.clone(),
            p2p.clone(),
            permits.clone(),
        );
        tokio::spawn(async move {
            let _admitted = admitted;
            let request = match read_request::<BlobRequest>(&mut stream, deadline).await {
                Ok(r) => r,
                Err(e) => {
                    strike_bad_request(p2p.as_ref(), peer, BLOB_PROTOCOL, &e).await;
                    return;
                }
            };
            // Busy: say "not here" (the requester tries someone else) rather than hang up.
            let permit = tokio::time::timeout(SERVING_WAIT, permits.acquire_owned()).await;
            let result = match permit {
                Ok(Ok(permit)) => {
                    let r = handle(&holdings, &serving, peer, stream, request).await;
                    drop(permit);
                    r
                }
                _ => wire::send_not_found(&mut stream, None).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "blob request failed");
            }
        });
    }
}

async fn handle<H: Holdings>(
    holdings: &Arc<H>,
    serving: &Serving,
    peer: PeerId,
    mut stream: libp2p::Stream,
    request: BlobRequest,
) -> Result<(), WireError> {
    let digest = Digest::from_bytes(request.digest);
    let held = holdings.held(&peer, &digest, &request.chunk_ranges)?;
    let ask = match &held {
        Some(Held::Complete { .. }) => Ask::Complete {
            first: request.chunk_ranges.first().map_or(0, |r| r.0),
            last_resort: request.last_resort,
        },
        Some(Held::Partial(_)) => Ask::Partial,
        Some(Held::Lacking(list)) => return wire::send_not_found(&mut stream, Some(list)).await,
        None => return wire::send_not_found(&mut stream, None).await,
    };
    let Some(mut slot) = serving.enter(digest, ask).await else {
        return wire::send_not_found(&mut stream, None).await;
    };
    let source = match held {
        Some(Held::Partial(source)) => source,
        Some(Held::Complete { data, size }) if !wire::has_tree(size) => Source {
            data,
            outboard: None,
            order: Order::Post,
            size,
        },
        Some(Held::Complete { data, size }) => {
            // Computing a tree reads the whole blob: never on the runtime's threads.
            let h = holdings.clone();
            let outboard = crate::offload::spawn(move || h.outboard(&digest))
                .await
                .map_err(|e| WireError::Io(std::io::Error::other(e)))??;
            Source {
                data,
                outboard: Some(outboard),
                order: Order::Post,
                size,
            }
        }
        Some(Held::Lacking(_)) | None => return wire::send_not_found(&mut stream, None).await,
    };
    let sent = wire::send_ranges(
        stream,
        digest,
        source,
        &request.chunk_ranges,
        serving.limits.idle,
    )
    .await?;
    slot.sent();
    holdings.served(sent);
    Ok(())
}

impl Holdings for NodeState {
    fn held(
        &self,
        peer: &PeerId,
        digest: &Digest,
        chunk_ranges: &[(u64, u64)],
    ) -> std::io::Result<Option<Held>> {
        let peer_s = peer.to_string();
        let shared = self
            .store
            .packages_with_blob(digest)
            .map_err(std::io::Error::other)?
            .iter()
            .any(|name| self.trust.shares_with(&peer_s, name));
        let path = self.store.blobs().path(digest);
        if shared && path.is_file() {
            let size = std::fs::metadata(&path)?.len();
            return Ok(Some(Held::Complete { data: path, size }));
        }
        // A blob still being fetched here can serve the segments already verified, and tell
        // a peer asking for others which those are.
        Ok(self
            .fetcher
            .partial(digest)
            .filter(|p| self.trust.shares_with(&peer_s, &p.package))
            .map(|p| {
                if chunk_ranges.iter().all(|&(a, b)| p.holds(a, b)) {
                    Held::Partial(p.source())
                } else {
                    Held::Lacking(p.have_list())
                }
            }))
    }

    fn outboard(&self, digest: &Digest) -> std::io::Result<PathBuf> {
        self.store.blobs().outboard(digest, wire::BLOCK)
    }

    fn served(&self, bytes: u64) {
        self.metrics.p2p_blob_bytes_served.inc_by(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(first: u64, last_resort: bool) -> Ask {
        Ask::Complete { first, last_resort }
    }

    /// The transfer in `slot` went out whole, and ended.
    fn went_out(slot: Option<Slot>) {
        slot.expect("a slot").sent();
    }

    #[tokio::test(start_paused = true)]
    async fn a_range_that_did_not_go_out_whole_is_not_turned_away() {
        let serving = Serving::new(BlobLimits::default());
        let d = Digest::of(b"blob");
        let broken = serving.enter(d, complete(0, false)).await;
        assert!(broken.is_some());
        assert!(
            serving.enter(d, complete(0, false)).await.is_none(),
            "in flight: not sent twice at once"
        );
        drop(broken);
        let again = serving.enter(d, complete(0, false)).await;
        assert!(
            again.is_some(),
            "the stream broke, nobody holds it: sent again"
        );
        went_out(again);
        assert!(
            serving.enter(d, complete(0, false)).await.is_none(),
            "this time it went out: ask the peer that got it"
        );
    }

    /// Ranges not sent within `resend_after` are forgotten by a sweep that runs once per
    /// `SWEEP_EVERY`, not on every request (an old range lingers until then); ranges in
    /// flight are kept. The same sweep drops the slots of blobs no transfer uses.
    #[tokio::test(start_paused = true)]
    async fn idle_blobs_are_forgotten_by_a_periodic_sweep() {
        let serving = Serving::new(BlobLimits::default());
        let forget = serving.limits.resend_after;
        for i in 0..100u32 {
            went_out(
                serving
                    .enter(Digest::of(&i.to_le_bytes()), complete(0, false))
                    .await,
            );
        }
        let busy = serving.enter(Digest::of(b"busy"), complete(0, false)).await;
        assert_eq!(serving.remembered(), 101);
        // A sweep just before the hundred turn idle for `resend_after`: they stay.
        tokio::time::advance(forget - SWEEP_EVERY / 2).await;
        went_out(serving.enter(Digest::of(b"a"), complete(0, false)).await);
        assert_eq!(serving.remembered(), 102);
        // Idle long enough now, but the last sweep was under `SWEEP_EVERY` ago: they linger.
        tokio::time::advance(SWEEP_EVERY * 3 / 4).await;
        went_out(serving.enter(Digest::of(b"b"), complete(0, false)).await);
        assert_eq!(serving.remembered(), 103, "no sweep on every request");
        tokio::time::advance(SWEEP_EVERY / 2).await;
        went_out(serving.enter(Digest::of(b"c"), complete(0, false)).await);
        assert_eq!(
            serving.remembered(),
            4,
            "the idle hundred went; the busy one and the three new ones stay"
        );
        assert_eq!(
            serving.busy(),
            2,
            "slots are kept for the blob in flight, and for `c` until the next sweep; \
             not for every blob sent lately"
        );
        drop(busy);
    }

    /// A range older than `resend_after` is new again at once, before any sweep forgets it,
    /// and its counts start afresh: it is held like a first transfer.
    #[tokio::test(start_paused = true)]
    async fn a_range_past_resend_after_is_new_again_before_the_sweep() {
        let serving = Serving::new(BlobLimits::default());
        let forget = serving.limits.resend_after;
        let d = Digest::of(b"blob");
        went_out(serving.enter(d, complete(0, false)).await);
        tokio::time::advance(forget - SWEEP_EVERY / 2).await;
        // A sweep now keeps the range: it is half a sweep short of `resend_after`.
        went_out(
            serving
                .enter(Digest::of(b"other"), complete(0, false))
                .await,
        );
        tokio::time::advance(SWEEP_EVERY * 3 / 4).await;
        assert_eq!(serving.remembered(), 2, "no sweep since: still remembered");
        let again = serving.enter(d, complete(0, false)).await;
        assert!(
            again.is_some(),
            "past `resend_after`: a new range, not a resend"
        );
        went_out(again);
        assert!(
            serving.enter(d, complete(0, true)).await.is_none(),
            "sent once since it was forgotten: just arrived, held"
        );
    }

    /// A last-resort transfer that breaks off leaves the range's clock at its last whole
    /// transfer: the requester, still lacking it, is not made to wait a hold again.
    #[tokio::test(start_paused = true)]
    async fn a_broken_resend_does_not_restart_the_hold() {
        let serving = Serving::new(BlobLimits::default());
        let d = Digest::of(b"blob");
        went_out(serving.enter(d, complete(0, false)).await);
        tokio::time::advance(serving.limits.resend_hold).await;
        let resend = serving.enter(d, complete(0, true)).await;
        assert!(resend.is_some(), "settled: a last resort is served");
        tokio::time::advance(serving.limits.resend_hold / 2).await;
        drop(resend);
        assert!(
            serving.enter(d, complete(0, true)).await.is_some(),
            "the resend broke off: the range is as settled as before it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_blob_goes_out_once_and_then_only_as_a_last_resort() {
        let serving = Serving::new(BlobLimits::default());
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
        went_out(first);
        assert!(
            serving.enter(d, complete(0, true)).await.is_none(),
            "just arrived: its first recipient will be asked soon"
        );
        tokio::time::advance(serving.limits.resend_hold).await;
        went_out(other);
        let again = serving.enter(d, complete(0, true)).await;
        assert!(again.is_some(), "a last resort once the range settled");
        went_out(again);
        let third = serving.enter(d, complete(0, true)).await;
        assert!(
            third.is_some(),
            "after two transfers peers are not passing it on: no hold"
        );
        went_out(third);
        tokio::time::advance(serving.limits.resend_after).await;
        assert!(
            serving.enter(d, complete(0, false)).await.is_some(),
            "forgotten after a while"
        );
    }

    /// Range 0 of `d` went out and settled, both slots are busy (ranges 16 and 32), and a
    /// request for a new range (48) waits for a slot.
    async fn a_new_range_waiting(
        serving: &Arc<Serving>,
        d: Digest,
    ) -> (Option<Slot>, Option<Slot>, tokio::task::JoinHandle<bool>) {
        went_out(serving.enter(d, complete(0, false)).await);
        tokio::time::advance(serving.limits.resend_hold).await;
        let a = serving.enter(d, complete(16, false)).await;
        let b = serving.enter(d, complete(32, false)).await;
        assert!(a.is_some() && b.is_some(), "two slots");
        let waiting = tokio::spawn({
            let serving = serving.clone();
            async move { serving.enter(d, complete(48, false)).await.is_some() }
        });
        tokio::task::yield_now().await;
        (a, b, waiting)
    }

    #[tokio::test(start_paused = true)]
    async fn new_ranges_go_before_resends_and_busy_slots_turn_requests_away() {
        let serving = Arc::new(Serving::new(BlobLimits::default()));
        let d = Digest::of(b"blob");
        // While a new range waits for a slot, a resend is turned away.
        let (a, b, waiting) = a_new_range_waiting(&serving, d).await;
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

    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_while_it_waits_no_longer_holds_resends_back() {
        let serving = Arc::new(Serving::new(BlobLimits::default()));
        let d = Digest::of(b"blob");
        let (a, b, waiting) = a_new_range_waiting(&serving, d).await;
        // Its task is aborted: the request is dropped while it waits for a slot.
        waiting.abort();
        assert!(waiting.await.is_err(), "aborted mid-wait");
        drop(a);
        assert!(
            serving.enter(d, complete(0, true)).await.is_some(),
            "no new range waits any more: the resend gets the free slot"
        );
        drop(b);
    }
}
