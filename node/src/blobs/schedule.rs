//! Which segment of a blob goes to which peer: the pool of segments still wanted, a lease per
//! segment in flight, and what each answer does to the segment and the peer. Pure: no I/O,
//! no tasks; the fetch task asks it and reports to it, and tests drive it with fake peers on
//! paused time. One lock guards it all, so every decision sees one consistent state.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Mutex,
};

use libp2p::PeerId;
use tokio::time::Instant;

use super::{BlobLimits, have_list::HaveList};

/// Segment size: about 128 per blob, between 256 KiB and 1 MiB, in whole 16 KiB groups. Every
/// node computes the same segments for a blob, which is what lets peers serve each other.
/// Small segments keep a fan-out's end short: the last segments the origin sends must still
/// be passed on from peer to peer, one segment's transfer per hop (1/16 of a 128 MiB blob
/// took 0.7 s per hop at 100 Mbit/s). Their cost, not measured yet: a peer holds one lease at
/// a time, so over a long round trip its link idles between segments (at 50 ms and 100
/// Mbit/s, about 60 % busy with 1 MiB segments against over 90 % with 8 MiB ones) unless
/// other peers fill it.
pub fn segment_bytes(size: u64) -> u64 {
    let group = 16 * 1024;
    (size / 128).clamp(256 * 1024, 1024 * 1024).div_ceil(group) * group
}

/// How many segments a blob of `size` bytes has (one for an empty blob).
pub fn segment_count(size: u64) -> u64 {
    size.div_ceil(segment_bytes(size)).max(1)
}

/// How a peer came to be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Named by whoever sent us the record (usually its origin): asked only for segments
    /// helpers lacked, so what helpers hold never costs it.
    Announcer,
    /// Any other connected peer (or a DHT provider): asked for anything.
    Helper,
}

/// A segment handed to one peer until `deadline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub peer: PeerId,
    pub segment: u64,
    /// Half-open range of 1 KiB chunks.
    pub chunks: (u64, u64),
    /// Every helper lacked it: the announcer should send it even if it sent it lately.
    pub last_resort: bool,
    pub deadline: Instant,
}

/// What became of a lease, as the fetch task reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Every chunk group of the segment verified and is on disk.
    Verified,
    /// The peer does not hold it, or declined to send it now.
    Missing,
    /// A refused or broken stream: often momentary.
    Failed,
    /// The peer went silent (a deadline passed).
    Stalled,
    /// The peer sent bytes that do not verify.
    Corrupt,
    /// This node could not write: no fault of the peer.
    Local,
}

/// What a report changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// The segment is done.
    Finished,
    /// The segment is back in the pool; the peer may be asked again.
    GaveBack,
    /// The segment is back in the pool and the peer is asked no more in this fetch.
    Dropped,
    /// The lease had already expired and its segment gone back: the answer changes nothing.
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    /// In the pool.
    Waiting,
    Leased,
    Done,
}

#[derive(Debug)]
struct Peer {
    role: Role,
    lease: Option<u64>,
    /// Segments the peer lacked, by index: when it last said so, and how many times so far.
    /// Indexed, not hashed: `next` reads it for every waiting segment and every helper.
    lacked: Vec<Option<(Instant, u32)>>,
    failures: u32,
    dropped: bool,
    not_before: Instant,
}

impl Peer {
    fn lacked(&self, segment: u64) -> Option<(Instant, u32)> {
        let i = usize::try_from(segment).ok()?;
        self.lacked.get(i).copied().flatten()
    }

    fn lacks(&self, segment: u64) -> bool {
        self.lacked(segment).is_some()
    }

    fn set_lacked(&mut self, segment: u64, word: (Instant, u32)) {
        let Ok(i) = usize::try_from(segment) else {
            return;
        };
        if self.lacked.len() <= i {
            self.lacked.resize(i + 1, None);
        }
        self.lacked[i] = Some(word);
    }
}

#[derive(Debug)]
struct Inner {
    size: u64,
    segment: u64,
    segs: Vec<Seg>,
    /// Waiting segments, in the order they are offered.
    pool: VecDeque<u64>,
    peers: HashMap<PeerId, Peer>,
    leases: HashMap<u64, Lease>,
    next_lease: u64,
    last_verified: Instant,
}

/// The segments of one blob and who fetches which.
#[derive(Debug)]
pub struct Schedule {
    limits: BlobLimits,
    inner: Mutex<Inner>,
}

impl Schedule {
    /// A schedule for a blob of `size` bytes of which `done` segments are already verified.
    /// `me` orders the pool, so different nodes walk the segments in different orders and
    /// hold different ones early.
    pub fn new(size: u64, done: &HashSet<u64>, me: &[u8], limits: BlobLimits) -> Self {
        let count = segment_count(size);
        let segs: Vec<Seg> = (0..count)
            .map(|i| {
                if done.contains(&i) {
                    Seg::Done
                } else {
                    Seg::Waiting
                }
            })
            .collect();
        let mut order: Vec<u64> = (0..count).filter(|i| !done.contains(i)).collect();
        order.sort_by_key(|i| {
            let mut h = blake3::Hasher::new();
            h.update(me);
            h.update(&i.to_be_bytes());
            *h.finalize().as_bytes()
        });
        Self {
            limits,
            inner: Mutex::new(Inner {
                size,
                segment: segment_bytes(size),
                segs,
                pool: order.into(),
                peers: HashMap::new(),
                leases: HashMap::new(),
                next_lease: 0,
                last_verified: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn segment(&self) -> u64 {
        self.lock().segment
    }

    /// Starts asking `peer`; `false` if it is asked already or was dropped from this fetch.
    pub fn add_peer(&self, peer: PeerId, role: Role) -> bool {
        let mut s = self.lock();
        if s.peers.contains_key(&peer) {
            return false;
        }
        s.peers.insert(
            peer,
            Peer {
                role,
                lease: None,
                lacked: Vec::new(),
                failures: 0,
                dropped: false,
                not_before: Instant::now(),
            },
        );
        true
    }

    /// Peers known to this fetch, dropped ones included (they are not to be asked again).
    pub fn known(&self) -> HashSet<PeerId> {
        self.lock().peers.keys().copied().collect()
    }

    /// Peers still asked (not dropped).
    pub fn live(&self) -> usize {
        self.lock().peers.values().filter(|p| !p.dropped).count()
    }

    /// Peers that may be offered a segment now: not dropped, holding no lease, not waiting
    /// out a retry delay. Announcers come first: they are asked only for what helpers lacked,
    /// and helpers re-asking for it after `recheck` would otherwise take it first every time.
    pub fn idle(&self, now: Instant) -> Vec<PeerId> {
        let s = self.lock();
        let mut idle: Vec<(bool, PeerId)> = s
            .peers
            .iter()
            .filter(|(_, p)| !p.dropped && p.lease.is_none() && p.not_before <= now)
            .map(|(id, p)| (p.role == Role::Helper, *id))
            .collect();
        idle.sort();
        idle.into_iter().map(|(_, id)| id).collect()
    }

    /// The next segment for `peer`, leased to it, or `None`: nothing it should be asked now.
    ///
    /// Each segment is leased to one peer at a time; a segment in flight is never offered
    /// again until its lease ends (no end-game duplicates: a provider that stalls loses its
    /// lease within the deadlines, and that is what ends a fetch's tail).
    pub fn next(&self, peer: PeerId, now: Instant) -> Option<Lease> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let p = s.peers.get(&peer)?;
        if p.dropped || p.lease.is_some() || p.not_before > now {
            return None;
        }
        let helpers = u32::try_from(
            s.peers
                .values()
                .filter(|p| !p.dropped && p.role == Role::Helper)
                .count(),
        )
        .unwrap_or(u32::MAX);
        let announcers = s
            .peers
            .values()
            .any(|p| !p.dropped && p.role == Role::Announcer);
        let recheck = self.limits.recheck;
        // A helper is asked again for a segment `recheck` after it lacked it, twice that after
        // it lacked it twice, up to 8 times: one that fills up is asked soon, and one that
        // never shares (or never gets it) is not asked five times a second forever. An
        // announcer holds the blob: its "not now" is about its slots or a range it sent
        // lately (ask again soon, as a last resort once helpers lack it), so it waits
        // `recheck`.
        let fresh = |i: &u64| {
            p.lacked(*i).is_none_or(|(at, n)| {
                let n = if p.role == Role::Helper { n } else { 1 };
                now - at >= recheck * (1 << n.clamp(1, 4) >> 1)
            })
        };
        // Live helpers whose last word on segment `i` was that they lack it. A helper is
        // asked again after `recheck` (helpers fill up as the fetch goes on), and an answer
        // replaces its word; until then its miss stands, however busy the others are.
        //
        // A helper asked again counts its own earlier miss, so with no announcer it is the
        // last resort once all but one of the others lacked the segment. Deliberate: not
        // counting it (waiting for every other helper's word) made the 256 MiB fan-out slower
        // and the origin send more (34.8 s and 1.54 x against 33.9 s and 1.48 x, virtual
        // time, seed 1): helpers waited on peers that could not have the segment yet.
        let misses = |i: &u64| {
            let n = s
                .peers
                .values()
                .filter(|h| !h.dropped && h.role == Role::Helper && h.lacks(*i))
                .count();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        let pos = match p.role {
            // Segments every helper lacked first, then those some helper lacked: what helpers
            // hold never costs the announcer.
            Role::Announcer => s
                .pool
                .iter()
                .position(|i| fresh(i) && misses(i) >= helpers)
                .or_else(|| s.pool.iter().position(|i| fresh(i) && misses(i) >= 1))?,
            // A helper is not asked again for what it lacked until its recheck delay passed:
            // meanwhile, once every helper lacked a segment, only the announcer is asked.
            Role::Helper => s.pool.iter().position(fresh)?,
        };
        let index = s.pool.remove(pos)?;
        let misses = misses(&index);
        // Every other live helper lacked it: this peer is asked as the last resort. Helpers
        // are only while no announcer is live (a holder that sent the range lately sends it
        // again only to a last resort, and with the announcer gone nobody else would ask).
        let others = match p.role {
            Role::Announcer => helpers,
            Role::Helper => helpers.saturating_sub(1),
        };
        let last_resort = (p.role == Role::Announcer || !announcers) && misses >= others;
        let id = s.next_lease;
        s.next_lease += 1;
        let start = index * s.segment;
        let end = ((index + 1) * s.segment).min(s.size);
        let lease = Lease {
            id,
            peer,
            segment: index,
            chunks: (start / 1024, end.div_ceil(1024)),
            last_resort,
            deadline: now + self.limits.lease(end - start),
        };
        s.segs[index as usize] = Seg::Leased;
        if let Some(p) = s.peers.get_mut(&peer) {
            p.lease = Some(id);
        }
        s.leases.insert(id, lease.clone());
        Some(lease)
    }

    /// Records the answer to lease `id`.
    pub fn report(&self, id: u64, answer: Answer, now: Instant) -> Reported {
        let mut guard = self.lock();
        let s = &mut *guard;
        let Some(lease) = s.leases.remove(&id) else {
            return Reported::Stale;
        };
        if s.segs[lease.segment as usize] != Seg::Leased {
            return Reported::Stale;
        }
        let failures = self.limits.failures;
        let Some(p) = s.peers.get_mut(&lease.peer) else {
            return Reported::Stale;
        };
        p.lease = None;
        let reported = match answer {
            Answer::Verified => {
                p.failures = 0;
                s.segs[lease.segment as usize] = Seg::Done;
                s.last_verified = now;
                return Reported::Finished;
            }
            Answer::Missing => {
                let n = p.lacked(lease.segment).map_or(0, |(_, n)| n);
                p.set_lacked(lease.segment, (now, n.saturating_add(1)));
                s.segs[lease.segment as usize] = Seg::Waiting;
                Reported::GaveBack
            }
            Answer::Failed => {
                p.failures += 1;
                s.segs[lease.segment as usize] = Seg::Waiting;
                if p.failures >= failures {
                    p.dropped = true;
                    Reported::Dropped
                } else {
                    p.not_before =
                        now + std::time::Duration::from_millis(50 * u64::from(p.failures));
                    Reported::GaveBack
                }
            }
            Answer::Stalled | Answer::Corrupt => {
                p.dropped = true;
                s.segs[lease.segment as usize] = Seg::Waiting;
                Reported::Dropped
            }
            Answer::Local => {
                s.segs[lease.segment as usize] = Seg::Waiting;
                Reported::GaveBack
            }
        };
        s.pool.push_back(lease.segment);
        reported
    }

    /// Ends every lease past its deadline: the segment goes back to the pool (others get it at
    /// once) and the peer is dropped from this fetch. Returns the ended leases, whose
    /// transfers the caller abandons.
    pub fn expire(&self, now: Instant) -> Vec<Lease> {
        let expired: Vec<u64> = {
            let s = self.lock();
            let mut ids: Vec<u64> = s
                .leases
                .values()
                .filter(|l| l.deadline <= now)
                .map(|l| l.id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let mut out = Vec::new();
        for id in expired {
            let lease = self.lock().leases.get(&id).cloned();
            if let Some(lease) = lease
                && self.report(id, Answer::Stalled, now) == Reported::Dropped
            {
                out.push(lease);
            }
        }
        out
    }

    /// Whether every segment is verified.
    pub fn complete(&self) -> bool {
        self.lock().segs.iter().all(|s| *s == Seg::Done)
    }

    /// Leases in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().leases.len()
    }

    pub fn verified_count(&self) -> usize {
        self.lock().segs.iter().filter(|s| **s == Seg::Done).count()
    }

    /// When a segment was last verified (or the schedule made).
    pub fn last_verified(&self) -> Instant {
        self.lock().last_verified
    }

    /// Gives the peers a fresh stall window, as if a segment had just arrived: a peer was
    /// dropped (its segment is back for the others) or new providers were found.
    pub fn restart_clock(&self, now: Instant) {
        self.lock().last_verified = now;
    }

    /// Bytes `0..n` that are verified.
    pub fn verified_prefix(&self) -> u64 {
        let s = self.lock();
        let n = s.segs.iter().take_while(|seg| **seg == Seg::Done).count() as u64;
        (n * s.segment).min(s.size)
    }

    /// The verified segments, for a peer that asked for one this node lacks.
    pub fn have_list(&self) -> HaveList {
        let s = self.lock();
        HaveList::new(s.size, |i| s.segs.get(i as usize) == Some(&Seg::Done))
    }

    /// Takes `peer`'s word on what it holds, sent with a miss. The segments it says it lacks
    /// count as misses from now: it is not asked for them before `recheck`, so it is asked
    /// for what it holds next, and once every helper lacks one the announcer is asked for it
    /// without each helper being asked first. Its word never clears a miss it answered: a
    /// peer that lies gets what one answering every request with a miss would, asked less
    /// itself and the announcer asked sooner, only without the round trips.
    pub fn learned(&self, peer: PeerId, held: &HaveList, now: Instant) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let Some(p) = s.peers.get_mut(&peer) else {
            return;
        };
        if p.dropped || held.count() != s.segs.len() as u64 {
            return;
        }
        for (i, seg) in (0..).zip(&s.segs) {
            if *seg != Seg::Done && !held.contains(i) {
                // Fresh word, not a further miss: the back-off does not grow.
                let n = p.lacked(i).map_or(1, |(_, n)| n);
                p.set_lacked(i, (now, n));
            }
        }
    }

    /// Whether every segment overlapping chunk range `[a, b)` is verified.
    pub fn holds(&self, a: u64, b: u64) -> bool {
        let s = self.lock();
        if b <= a || a.saturating_mul(1024) >= s.size {
            return false;
        }
        let first = a * 1024 / s.segment;
        let last = (b.saturating_mul(1024).min(s.size) - 1) / s.segment;
        (first..=last).all(|i| s.segs.get(i as usize) == Some(&Seg::Done))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::identity::test_peer as peer;

    const MIB: u64 = 1024 * 1024;

    fn schedule(size: u64) -> Schedule {
        Schedule::new(size, &HashSet::new(), b"me", BlobLimits::default())
    }

    #[test]
    fn segments_are_whole_groups() {
        assert_eq!(segment_bytes(1000), 256 * 1024);
        assert_eq!(segment_bytes(64 * MIB), MIB / 2);
        assert_eq!(segment_bytes(u64::MAX / 2), MIB);
        assert_eq!(segment_bytes(100 * MIB + 7) % (16 * 1024), 0);
        assert_eq!(segment_count(0), 1);
        assert_eq!(segment_count(256 * 1024), 1);
        assert_eq!(segment_count(256 * 1024 + 1), 2);
        assert_eq!(segment_count(128 * MIB), 128);
    }

    #[test]
    fn knows_which_ranges_it_holds() {
        let s = Schedule::new(
            1000 * 1024,
            &HashSet::from([0, 2]),
            b"me",
            BlobLimits::default(),
        );
        assert!(s.holds(0, 256));
        assert!(!s.holds(0, 257));
        assert!(s.holds(512, 768));
        assert!(!s.holds(768, 1000));
        assert_eq!(s.verified_prefix(), 256 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_lease_goes_back_to_the_pool_and_its_peer_is_dropped() {
        let s = schedule(4 * MIB);
        let (origin, silent) = (peer(1), peer(2));
        s.add_peer(origin, Role::Announcer);
        s.add_peer(silent, Role::Helper);
        let now = Instant::now();
        assert_eq!(s.next(origin, now), None, "the helper is asked first");
        let held = s.next(silent, now).unwrap();
        assert_eq!(s.expire(now), vec![], "not yet");
        tokio::time::advance(s.limits.lease(s.segment()) + Duration::from_millis(1)).await;
        let now = Instant::now();
        assert_eq!(
            s.expire(now),
            vec![held.clone()],
            "the silent peer loses its lease"
        );
        assert_eq!(s.live(), 1, "and is asked no more");
        assert!(
            !s.add_peer(silent, Role::Helper),
            "not even when recruited again"
        );
        assert!(s.idle(now).contains(&origin) && !s.idle(now).contains(&silent));
        // With no helper left, the announcer takes everything, the given-back segment too.
        let mut taken = Vec::new();
        while let Some(l) = s.next(origin, now) {
            assert!(l.last_resort);
            taken.push(l.segment);
            assert_eq!(s.report(l.id, Answer::Verified, now), Reported::Finished);
        }
        assert!(taken.contains(&held.segment));
        assert!(s.complete());
        assert_eq!(
            s.report(held.id, Answer::Verified, now),
            Reported::Stale,
            "a late answer from the dropped peer changes nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reports_a_stall_loses_its_segment_to_the_others_at_once() {
        let s = schedule(2 * MIB);
        let (a, b) = (peer(1), peer(2));
        s.add_peer(a, Role::Helper);
        s.add_peer(b, Role::Helper);
        let now = Instant::now();
        let la = s.next(a, now).unwrap();
        let lb = s.next(b, now).unwrap();
        assert_ne!(la.segment, lb.segment, "one peer per segment");
        assert_eq!(s.report(la.id, Answer::Stalled, now), Reported::Dropped);
        assert_eq!(s.report(lb.id, Answer::Verified, now), Reported::Finished);
        // The segment `a` held is offered to `b` (it went to the back of the pool).
        let mut seen = Vec::new();
        while let Some(l) = s.next(b, now) {
            seen.push(l.segment);
            s.report(l.id, Answer::Verified, now);
        }
        assert!(seen.contains(&la.segment));
        assert!(s.complete());
        assert_eq!(s.next(a, now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_announcer_gets_only_what_helpers_lacked_and_last_resorts_first() {
        let s = schedule(2 * MIB);
        let (origin, h1, h2) = (peer(1), peer(2), peer(3));
        s.add_peer(origin, Role::Announcer);
        s.add_peer(h1, Role::Helper);
        s.add_peer(h2, Role::Helper);
        let now = Instant::now();
        assert_eq!(s.next(origin, now), None, "nobody lacked anything yet");
        let l1 = s.next(h1, now).unwrap();
        assert_eq!(s.report(l1.id, Answer::Missing, now), Reported::GaveBack);
        let l2 = s.next(h2, now).unwrap();
        assert_ne!(l2.segment, l1.segment, "h2 walks on");
        let one_miss = s.next(origin, now).unwrap();
        assert_eq!(one_miss.segment, l1.segment);
        assert!(!one_miss.last_resort, "h2 may still have it");
        s.report(one_miss.id, Answer::Failed, now);
        s.report(l2.id, Answer::Verified, now);
        // h2 lacks it too: every helper's last word on it is that it lacks it.
        let mut l3 = s.next(h2, now).unwrap();
        while l3.segment != l1.segment {
            s.report(l3.id, Answer::Verified, now);
            l3 = s.next(h2, now).unwrap();
        }
        s.report(l3.id, Answer::Missing, now);
        for h in [h1, h2] {
            assert!(
                s.next(h, now).is_none_or(|l| {
                    s.report(l.id, Answer::Failed, now);
                    l.segment != l1.segment
                }),
                "a helper is not asked again for what it lacked"
            );
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        let now = Instant::now();
        assert!(s.idle(now).contains(&origin));
        let last = s.next(origin, now).unwrap();
        assert_eq!(last.segment, l1.segment, "the announcer takes it");
        assert!(last.last_resort);
        s.report(last.id, Answer::Missing, now);
        // After `recheck` helpers are asked again (they may have fetched it meanwhile), and
        // one that now holds it sends it.
        tokio::time::advance(s.limits.recheck).await;
        let now = Instant::now();
        let idle = s.idle(now);
        assert_eq!(idle[0], origin, "the announcer is offered first");
        let mut again = s.next(h1, now).unwrap();
        while again.segment != l1.segment {
            s.report(again.id, Answer::Verified, now);
            again = s.next(h1, now).unwrap();
        }
        assert!(!again.last_resort);
        assert_eq!(
            s.report(again.id, Answer::Verified, now),
            Reported::Finished
        );
    }

    /// With no announcer, a helper asked again for a segment it lacked counts its own earlier
    /// miss: once it and another of three helpers lacked it, it asks as the last resort.
    #[tokio::test(start_paused = true)]
    async fn a_helper_asked_again_counts_its_own_miss_toward_the_last_resort() {
        let s = schedule(256 * 1024);
        let (h1, h2, h3) = (peer(1), peer(2), peer(3));
        for h in [h1, h2, h3] {
            s.add_peer(h, Role::Helper);
        }
        let now = Instant::now();
        let first = s.next(h1, now).unwrap();
        assert!(!first.last_resort);
        s.report(first.id, Answer::Missing, now);
        let second = s.next(h2, now).unwrap();
        assert!(!second.last_resort, "one miss of three: not yet");
        s.report(second.id, Answer::Missing, now);
        tokio::time::advance(s.limits.recheck).await;
        let now = Instant::now();
        let again = s.next(h1, now).unwrap();
        assert_eq!(again.segment, first.segment);
        assert!(again.last_resort, "h1 and h2 lacked it: {again:?}");
    }

    /// A helper that keeps lacking a segment is asked for it less and less often (up to 8 ×
    /// `recheck` apart), while the announcer, which holds the blob, is asked again after
    /// `recheck` each time.
    #[tokio::test(start_paused = true)]
    async fn a_helper_that_keeps_lacking_a_segment_is_asked_less_often() {
        let s = schedule(256 * 1024);
        let (origin, h) = (peer(1), peer(2));
        s.add_peer(origin, Role::Announcer);
        s.add_peer(h, Role::Helper);
        let recheck = s.limits.recheck;
        let mut asked_helper = Vec::new();
        let mut asked_origin = 0;
        let start = Instant::now();
        while Instant::now() - start < recheck * 40 {
            let now = Instant::now();
            for p in s.idle(now) {
                if let Some(l) = s.next(p, now) {
                    if p == h {
                        asked_helper.push(now - start);
                    } else {
                        asked_origin += 1;
                    }
                    s.report(l.id, Answer::Missing, now);
                }
            }
            tokio::time::advance(recheck / 4).await;
        }
        let gaps: Vec<Duration> = asked_helper.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            &gaps[..4],
            &[recheck, recheck * 2, recheck * 4, recheck * 8],
            "the helper's recheck doubles: {gaps:?}"
        );
        assert!(
            gaps[4..].iter().all(|g| *g == recheck * 8),
            "and stays at 8 ×: {gaps:?}"
        );
        assert!(
            asked_origin >= 30,
            "the announcer is asked every recheck: {asked_origin} times"
        );
    }

    /// The segment `peer` would be offered last by a schedule like `schedule(size)`: one a
    /// helper would not be asked for next without a have-list.
    fn offered_last(size: u64, peer: PeerId, now: Instant) -> u64 {
        let twin = schedule(size);
        twin.add_peer(peer, Role::Helper);
        let mut last = None;
        while let Some(l) = twin.next(peer, now) {
            last = Some(l.segment);
            twin.report(l.id, Answer::Verified, now);
        }
        last.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_have_list_steers_a_helper_to_what_it_holds_and_the_rest_to_the_announcer() {
        let size = 4 * MIB;
        let s = schedule(size);
        let count = segment_count(size);
        let (origin, h) = (peer(1), peer(2));
        s.add_peer(origin, Role::Announcer);
        s.add_peer(h, Role::Helper);
        let now = Instant::now();
        let held = offered_last(size, h, now);
        let first = s.next(h, now).unwrap();
        assert_ne!(first.segment, held);
        s.report(first.id, Answer::Missing, now);
        s.learned(h, &HaveList::new(size, |i| i == held), now);
        let l = s.next(h, now).unwrap();
        assert_eq!(l.segment, held, "what it holds goes first");
        let mine = |s: &Schedule| s.have_list().held().collect::<Vec<_>>();
        assert_eq!(
            mine(&s),
            Vec::<u64>::new(),
            "a segment in flight is not held yet"
        );
        s.report(l.id, Answer::Verified, now);
        assert_eq!(mine(&s), vec![held]);
        assert_eq!(
            s.next(h, now),
            None,
            "it is not asked for what it said it lacks before `recheck`"
        );
        // The only helper lacks every other segment: the announcer sends them at once, as
        // last resorts, without the helper being asked for each first.
        let mut sent = HashSet::new();
        while let Some(l) = s.next(origin, now) {
            assert!(l.last_resort, "segment {}", l.segment);
            sent.insert(l.segment);
            s.report(l.id, Answer::Verified, now);
        }
        assert_eq!(sent.len() as u64, count - 1);
        assert!(s.complete());
    }

    #[tokio::test(start_paused = true)]
    async fn a_have_list_does_not_clear_a_miss_or_fit_another_blob() {
        let size = 4 * MIB;
        let s = schedule(size);
        let (origin, h) = (peer(1), peer(2));
        s.add_peer(origin, Role::Announcer);
        s.add_peer(h, Role::Helper);
        let now = Instant::now();
        let missed = s.next(h, now).unwrap();
        s.report(missed.id, Answer::Missing, now);
        // A list of a larger blob is not this one's; one claiming everything does not undo
        // the miss it came with.
        s.learned(h, &HaveList::new(2 * size, |_| false), now);
        s.learned(h, &HaveList::new(size, |_| true), now);
        let mut asked = 0;
        while let Some(l) = s.next(h, now) {
            assert_ne!(l.segment, missed.segment, "asked again for what it lacked");
            asked += 1;
            s.report(l.id, Answer::Verified, now);
        }
        assert_eq!(asked, segment_count(size) - 1);
        let last = s.next(origin, now).unwrap();
        assert_eq!(last.segment, missed.segment, "the announcer takes the miss");
    }

    #[tokio::test(start_paused = true)]
    async fn end_game_never_duplicates_and_the_tail_moves_on_a_stall() {
        let s = schedule(MIB);
        let (slow, quick) = (peer(1), peer(2));
        s.add_peer(slow, Role::Helper);
        s.add_peer(quick, Role::Helper);
        let now = Instant::now();
        let tail = s.next(slow, now).unwrap();
        while let Some(l) = s.next(quick, now) {
            s.report(l.id, Answer::Verified, now);
        }
        assert!(!s.complete());
        assert_eq!(s.in_flight(), 1);
        assert_eq!(
            s.next(quick, now),
            None,
            "the last segment is in flight: not asked twice"
        );
        tokio::time::advance(s.limits.lease(s.segment())).await;
        let now = Instant::now();
        assert_eq!(s.expire(now).len(), 1);
        let again = s.next(quick, now).unwrap();
        assert_eq!(
            again.segment, tail.segment,
            "the stalled tail goes to the quick peer"
        );
        s.report(again.id, Answer::Verified, now);
        assert!(s.complete());
    }

    /// Fake peers answering at random (seeded), on paused time: every segment is verified
    /// exactly once, no segment is ever leased to two peers at once, and the fetch completes
    /// while one honest peer remains.
    #[tokio::test(start_paused = true)]
    async fn no_segment_is_lost_or_fetched_twice() {
        for seed in 0..20u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let s = schedule(40 * MIB);
            let peers: Vec<PeerId> = (1..=6).map(peer).collect();
            s.add_peer(peers[0], Role::Announcer);
            for p in &peers[1..] {
                s.add_peer(*p, Role::Helper);
            }
            let mut verified: HashMap<u64, u32> = HashMap::new();
            let mut in_flight: Vec<Lease> = Vec::new();
            for _ in 0..100_000 {
                if s.complete() {
                    break;
                }
                let now = Instant::now();
                for p in s.idle(now) {
                    if let Some(l) = s.next(p, now) {
                        assert!(
                            in_flight.iter().all(|o| o.segment != l.segment),
                            "seed {seed}: segment {} leased twice",
                            l.segment
                        );
                        in_flight.push(l);
                    }
                }
                if !in_flight.is_empty() {
                    let l = in_flight.swap_remove(rng.random_range(0..in_flight.len()));
                    // The announcer always has the bytes; helpers often lack or fail.
                    let answer = if l.peer == peers[0] {
                        Answer::Verified
                    } else {
                        match rng.random_range(0..20) {
                            0..=9 => Answer::Verified,
                            10..=15 => Answer::Missing,
                            16..=17 => Answer::Failed,
                            18 => Answer::Stalled,
                            _ => Answer::Corrupt,
                        }
                    };
                    if s.report(l.id, answer, now) == Reported::Finished {
                        *verified.entry(l.segment).or_default() += 1;
                    }
                }
                tokio::time::advance(Duration::from_millis(rng.random_range(0..100))).await;
                for l in s.expire(Instant::now()) {
                    in_flight.retain(|o| o.id != l.id);
                }
            }
            assert!(s.complete(), "seed {seed}: the fetch did not complete");
            let count = (40 * MIB).div_ceil(s.segment());
            assert_eq!(verified.len() as u64, count, "seed {seed}");
            assert!(
                verified.values().all(|&n| n == 1),
                "seed {seed}: a segment was verified twice"
            );
        }
    }
}
