//! Room for gossiped records being taken in, in all and per relaying peer.
//!
//! Each gossiped record is judged in a task of its own, and a manifest's task waits for its
//! blob's fetch. A peer that gossips records faster than their blobs arrive (or whose blobs
//! never come) would otherwise pile those tasks up without end, and its fetches would hold
//! every fetch turn: the turns bound the transfers, not the tasks waiting for one. Gossip is
//! only the fast path, since sync rounds pull every record from the peers that hold it, so a
//! record that finds no room is dropped rather than queued.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use libp2p::PeerId;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

/// Gossiped records taken in at once, from all peers.
const TAKING: usize = 256;

/// Of those, the most one relaying peer's may be: half the 8 fetch turns
/// (`BlobLimits::fetches`), so a peer whose blobs never come leaves the other half, and the
/// rest of the room, to everyone else.
const TAKING_PER_PEER: usize = 4;

/// What the room has seen, as it changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipCounts {
    /// Records being taken in now.
    pub taking: usize,
    /// The most ever taken in at once.
    pub peak: usize,
    /// Records that found room.
    pub entered: u64,
    /// Records dropped for want of room.
    pub dropped: u64,
}

/// The places for gossiped records being taken in, counted in all and per relaying peer.
#[derive(Debug)]
pub struct GossipRoom {
    total: usize,
    per_peer: usize,
    by_peer: Mutex<HashMap<PeerId, usize>>,
    counts: watch::Sender<GossipCounts>,
    /// `niso_gossip_dropped_total`.
    dropped: Counter,
}

/// A gossiped record's place in the room, given back when dropped.
#[derive(Debug)]
pub struct GossipPlace {
    room: Arc<GossipRoom>,
    from: PeerId,
}

impl GossipRoom {
    /// The node's room; records dropped are also counted in `dropped`.
    pub fn new(dropped: Counter) -> Self {
        Self::with_room(TAKING, TAKING_PER_PEER, dropped)
    }

    fn with_room(total: usize, per_peer: usize, dropped: Counter) -> Self {
        Self {
            total: total.max(1),
            per_peer: per_peer.max(1),
            by_peer: Mutex::default(),
            counts: watch::channel(GossipCounts::default()).0,
            dropped,
        }
    }

    /// A place for a record relayed by `from`, or `None` (counted as dropped) when all places
    /// or `from`'s share of them are taken.
    pub fn enter(self: &Arc<Self>, from: PeerId) -> Option<GossipPlace> {
        let mut by_peer = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        let taking = self.counts.borrow().taking;
        let mine = by_peer.get(&from).copied().unwrap_or(0);
        if taking >= self.total || mine >= self.per_peer {
            self.dropped.inc();
            self.counts.send_modify(|c| c.dropped += 1);
            return None;
        }
        by_peer.insert(from, mine + 1);
        self.counts.send_modify(|c| {
            c.taking += 1;
            c.peak = c.peak.max(c.taking);
            c.entered += 1;
        });
        Some(GossipPlace {
            room: self.clone(),
            from,
        })
    }

    /// The counts, as they change (tests wait on them).
    pub fn watch(&self) -> watch::Receiver<GossipCounts> {
        self.counts.subscribe()
    }
}

impl Drop for GossipPlace {
    fn drop(&mut self) {
        let mut by_peer = self.room.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_peer.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                by_peer.remove(&self.from);
            }
        }
        self.room.counts.send_modify(|c| c.taking -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_takes_its_share_and_all_peers_the_total() {
        let dropped = Counter::default();
        let room = Arc::new(GossipRoom::with_room(5, 3, dropped.clone()));
        let (a, b) = (PeerId::random(), PeerId::random());
        let held_a: Vec<_> = (0..4).map(|_| room.enter(a)).collect();
        assert_eq!(
            held_a.iter().filter(|p| p.is_some()).count(),
            3,
            "a peer gets its share and no more"
        );
        let held_b: Vec<_> = (0..3).map(|_| room.enter(b)).collect();
        assert_eq!(
            held_b.iter().filter(|p| p.is_some()).count(),
            2,
            "the total caps every peer together"
        );
        let counts = *room.watch().borrow();
        assert_eq!(
            counts,
            GossipCounts {
                taking: 5,
                peak: 5,
                entered: 5,
                dropped: 2,
            }
        );
        assert_eq!(dropped.get(), 2, "the metric counts the drops too");

        // A place given back is a place for the next record, of that peer or another.
        drop(held_a);
        assert!(room.enter(b).is_some(), "the total had room again");
        assert!(room.enter(a).is_some(), "a's share was given back");
        drop(held_b);
        let counts = *room.watch().borrow();
        assert_eq!((counts.taking, counts.peak), (0, 5));
        assert!(
            room.by_peer.lock().unwrap().is_empty(),
            "peers with nothing taken are forgotten"
        );
    }
}
