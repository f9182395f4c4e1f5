//! Sync records that wait on a blob fetch. A sync page is split: records of packages with no
//! blob to fetch are admitted at once; a manifest whose eager blob is missing, and every later
//! record of the same package (its tags, deletions), are deferred as one group to a task that
//! admits them in order once the fetch ends. Groups of one package run one after another.
//!
//! Sync positions: a deferred group holds the *saved* position of its peer at the start of
//! its page until it is admitted, so a restart re-pulls it; within a run the peer is pulled
//! on from where it reached, so nothing is judged twice. A group that ends incomplete (its
//! fetch failed) sends the next round back to its page.
//!
//! Room: at most [`GROUPS`] groups wait at once, at most half of them one peer's; a sync that
//! has no room pauses until one of its groups, or another, is admitted. Dropping the group
//! and pulling its page again instead cost a catch-up most of its time: every later page was
//! pulled, and its signatures checked, once per round, and a round admitted only about
//! [`GROUPS`] packages.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use libp2p::PeerId;
use niso_protocol::record::{Record, RecordBody};
use tokio::sync::{Semaphore, watch};

use crate::{config::BlobMode, identity::peer_id, node::NodeState};

/// Deferred groups waiting at once; a sync with more to defer waits for room.
const GROUPS: usize = 256;

/// Of those, the most one peer's groups may take: one peer whose blobs never come leaves
/// the other half to the others.
const GROUPS_PER_PEER: usize = GROUPS / 2;

#[derive(Debug, Default)]
struct Inner {
    /// Per peer, the position this run of the node pulled up to.
    reached: HashMap<PeerId, u64>,
    /// Per peer, page starts with groups waiting, counted.
    holding: HashMap<PeerId, BTreeMap<u64, usize>>,
    /// Per peer, packages with groups waiting, counted (a page pulled again defers its
    /// package a second time while the first group still waits).
    packages: HashMap<PeerId, BTreeMap<String, usize>>,
    /// Per peer, the page start the next round must re-pull from.
    retry: HashMap<PeerId, u64>,
    /// Per peer with groups waiting or about to, its share of the room.
    rooms: HashMap<PeerId, Arc<Semaphore>>,
    /// Per package (canonical name), the end of the last group deferred for it.
    names: HashMap<String, watch::Receiver<bool>>,
    groups: usize,
}

/// Deferred sync records and the positions they hold; one lock.
#[derive(Debug)]
pub struct Deferred {
    inner: Mutex<Inner>,
    /// Groups waiting, for whoever needs to know when every deferred record was judged.
    waiting: watch::Sender<usize>,
    /// One permit per group that may wait; a group holds its permit until it is admitted.
    room: Arc<Semaphore>,
    /// Permits each peer's share of the room starts with.
    per_peer: usize,
}

impl Default for Deferred {
    fn default() -> Self {
        Self::with_room(GROUPS, GROUPS_PER_PEER)
    }
}

impl Deferred {
    /// Room for `groups` waiting groups, `per_peer` of them one peer's.
    fn with_room(groups: usize, per_peer: usize) -> Self {
        Self {
            inner: Mutex::default(),
            waiting: watch::channel(0).0,
            room: Arc::new(Semaphore::new(groups.max(1))),
            per_peer: per_peer.max(1),
        }
    }

    /// The number of groups waiting, as it changes.
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.waiting.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a sync with `peer` starts: what this run reached past the saved position, or the
    /// page a failed group must retry.
    pub fn resume(&self, peer: PeerId, saved: u64) -> u64 {
        let mut s = self.lock();
        let mut at = saved.max(s.reached.get(&peer).copied().unwrap_or(0));
        if let Some(retry) = s.retry.remove(&peer) {
            at = at.min(retry);
        }
        at
    }

    /// Forgets how far this run reached with `peer` (its rules changed: start over).
    pub fn restart(&self, peer: PeerId) {
        let mut s = self.lock();
        s.reached.remove(&peer);
        s.retry.remove(&peer);
    }

    /// Notes that a sync with `peer` reached `at`; returns the position that may be saved:
    /// `at`, or the first page start that still has records waiting.
    pub fn reached(&self, peer: PeerId, at: u64) -> u64 {
        let mut s = self.lock();
        s.reached.insert(peer, at);
        let held = s
            .holding
            .get(&peer)
            .and_then(|h| h.keys().next().copied())
            .unwrap_or(u64::MAX);
        let retry = s.retry.get(&peer).copied().unwrap_or(u64::MAX);
        at.min(held).min(retry)
    }

    /// How far `peer`'s log is applied here when it was pulled to `pulled` (no further than
    /// the first page with a group waiting or to re-pull), and how many packages wait.
    pub fn progress(&self, peer: PeerId, pulled: u64) -> (u64, usize) {
        let s = self.lock();
        let held = s
            .holding
            .get(&peer)
            .and_then(|h| h.keys().next().copied())
            .unwrap_or(u64::MAX);
        let retry = s.retry.get(&peer).copied().unwrap_or(u64::MAX);
        let waiting = s.packages.get(&peer).map_or(0, BTreeMap::len);
        (pulled.min(held).min(retry), waiting)
    }

    /// Sends the next round with `peer` back to `page`.
    pub fn retry_from(&self, peer: PeerId, page: u64) {
        let mut s = self.lock();
        let r = s.retry.entry(peer).or_insert(page);
        *r = (*r).min(page);
    }

    /// Splits `records` into those to admit now and groups (per package, in order) to defer.
    pub fn split(
        &self,
        state: &NodeState,
        records: Vec<Record>,
    ) -> (Vec<Record>, Vec<Vec<Record>>) {
        let pending: Vec<String> = {
            let s = self.lock();
            s.names
                .iter()
                .filter(|(_, done)| !*done.borrow())
                .map(|(n, _)| n.clone())
                .collect()
        };
        let fetches = needs_fetch(state, &records);
        let mut now = Vec::new();
        let mut groups: Vec<(String, Vec<Record>)> = Vec::new();
        for (record, fetch) in records.into_iter().zip(fetches) {
            let name = record.body.package().canonical();
            if let Some((_, g)) = groups.iter_mut().find(|(n, _)| *n == name) {
                g.push(record);
            } else if fetch || pending.contains(&name) {
                groups.push((name, vec![record]));
            } else {
                now.push(record);
            }
        }
        (now, groups.into_iter().map(|(_, g)| g).collect())
    }

    /// Defers `group` (records of one package from the page starting at `page`), admitted by
    /// `admit` after the groups of its package deferred before it. When `admit` says the group
    /// is complete, `released` runs once the group no longer holds its page, so a sync it
    /// starts can move the saved position past it. Waits while [`GROUPS`] groups wait, or
    /// [`GROUPS_PER_PEER`] of `peer`'s.
    pub async fn defer<F, Fut, R>(
        self: &Arc<Self>,
        peer: PeerId,
        page: u64,
        group: Vec<Record>,
        admit: F,
        released: R,
    ) where
        F: FnOnce(Vec<Record>) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
        R: FnOnce() + Send + 'static,
    {
        let Some(first) = group.first() else {
            return;
        };
        let name = first.body.package().canonical();
        let share = self
            .lock()
            .rooms
            .entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_peer)))
            .clone();
        // Never closed: `Err` cannot happen, and would only mean no limit. The peer's share
        // first, so a peer at its share does not hold a place in the room while it waits.
        let room = (
            share.acquire_owned().await.ok(),
            self.room.clone().acquire_owned().await.ok(),
        );
        let (done_tx, done_rx) = watch::channel(false);
        let before = {
            let mut s = self.lock();
            s.groups += 1;
            self.waiting.send_replace(s.groups);
            *s.holding.entry(peer).or_default().entry(page).or_default() += 1;
            *s.packages
                .entry(peer)
                .or_default()
                .entry(name.clone())
                .or_default() += 1;
            s.names.insert(name.clone(), done_rx.clone())
        };
        let me = self.clone();
        tokio::spawn(async move {
            if let Some(mut before) = before {
                // Ends when the earlier group is done or its task is gone.
                let _ = before.wait_for(|done| *done).await;
            }
            let complete = admit(group).await;
            let _ = done_tx.send(true);
            let mut s = me.lock();
            s.groups -= 1;
            me.waiting.send_replace(s.groups);
            count_down(&mut s.holding, peer, &page);
            count_down(&mut s.packages, peer, &name);
            if s.names.get(&name).is_some_and(|r| r.same_channel(&done_rx)) {
                s.names.remove(&name);
            }
            if !complete {
                let r = s.retry.entry(peer).or_insert(page);
                *r = (*r).min(page);
            }
            drop(room);
            // A share nobody holds or waits for is forgotten (this task held the last clone
            // besides the map's, and waiters hold one too).
            if let Some(share) = s.rooms.get(&peer)
                && Arc::strong_count(share) == 1
            {
                s.rooms.remove(&peer);
            }
            drop(s);
            if complete {
                released();
            }
        });
    }
}

/// Takes one off `peer`'s count for `key`, dropping counts and peers that reach zero.
fn count_down<K: Ord>(counts: &mut HashMap<PeerId, BTreeMap<K, usize>>, peer: PeerId, key: &K) {
    if let Some(c) = counts.get_mut(&peer) {
        if let Some(n) = c.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                c.remove(key);
            }
        }
        if c.is_empty() {
            counts.remove(&peer);
        }
    }
}

/// Whether admitting each of `records` now would wait on a fetch: a manifest not held yet,
/// under an eager rule, whose blob is not here. The rule is asked first (it is in memory, and
/// a lazy catch-up asks this of every record), then the blob store, then, in one read for
/// the page, the log.
fn needs_fetch(state: &NodeState, records: &[Record]) -> Vec<bool> {
    let mut fetch: Vec<bool> = records
        .iter()
        .map(|record| match &record.body {
            RecordBody::Manifest(m) => {
                state
                    .trust
                    .accepts(&peer_id(&record.origin), m.name.as_str())
                    == Some(BlobMode::Eager)
                    && !state.store.blobs().contains(&m.digest)
            }
            _ => false,
        })
        .collect();
    let asked: Vec<&Record> = records
        .iter()
        .zip(&fetch)
        .filter(|(_, fetch)| **fetch)
        .map(|(record, _)| record)
        .collect();
    if asked.is_empty() {
        return fetch;
    }
    // Not knowing whether it is held, fetching is the safe guess: a held record is a
    // duplicate whose fetch finds the bytes here.
    let held = state
        .store
        .holds_exact_all(asked.iter().copied())
        .unwrap_or_else(|_| vec![false; asked.len()]);
    let mut held = held.into_iter();
    for f in fetch.iter_mut().filter(|f| **f) {
        if held.next().unwrap_or(false) {
            *f = false;
        }
    }
    fetch
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use niso_protocol::{
        Arch, Digest, PackageName,
        record::{ManifestBody, NodeSecret},
    };
    use tokio::sync::{mpsc, oneshot};

    use super::*;

    fn manifest(name: &str, seq: u64) -> Record {
        Record::sign(
            &NodeSecret::from_bytes(&[3; 32]),
            seq,
            1,
            RecordBody::Manifest(ManifestBody {
                name: PackageName::new(name).unwrap(),
                version: format!("1.0.{seq}").parse().unwrap(),
                arch: Arch::any(),
                digest: Digest::of(name.as_bytes()),
                size: 1,
                description: String::new(),
            }),
        )
    }

    fn peer() -> PeerId {
        crate::identity::test_peer(1)
    }

    #[tokio::test]
    async fn only_eager_manifests_not_held_and_without_their_blob_are_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let origin = crate::identity::peer_id(&NodeSecret::from_bytes(&[3; 32]).origin());
        let mut config = crate::NodeConfig {
            data_dir: dir.path().join("data"),
            ..crate::NodeConfig::default()
        };
        config.p2p.enabled = Some(false);
        config.replicate = vec![
            crate::config::ReplicateRule {
                from: origin.clone(),
                packages: vec!["eager-*".into()],
                blobs: BlobMode::Eager,
            },
            crate::config::ReplicateRule {
                from: origin,
                packages: vec!["lazy-*".into()],
                blobs: BlobMode::Lazy,
            },
        ];
        let node = crate::Node::open(config).await.unwrap();
        let state = node.state();
        // Held already (taken in lazily before the rule turned eager): a duplicate, no fetch.
        let held = manifest("eager-held", 1);
        state.store.apply(held.clone()).await.unwrap();
        // Its blob is here already (`manifest` names the blob of the package's name).
        state.store.blobs().put_bytes(b"eager-here").unwrap();
        let records = vec![
            held,
            manifest("eager-new", 3),
            manifest("eager-here", 2),
            manifest("lazy-new", 4),
        ];
        let (now, later) = Deferred::default().split(state, records);
        let names = |records: &[Record]| -> Vec<String> {
            records
                .iter()
                .map(|r| r.body.package().to_string())
                .collect()
        };
        assert_eq!(names(&now), ["eager-held", "eager-here", "lazy-new"]);
        assert_eq!(later.len(), 1);
        assert_eq!(names(&later[0]), ["eager-new"]);
        node.shutdown();
    }

    #[tokio::test]
    async fn a_waiting_group_holds_the_saved_position_and_a_failed_one_sends_the_next_round_back() {
        let d = Arc::new(Deferred::default());
        let p = peer();
        let (release, released) = oneshot::channel::<bool>();
        let (ended, mut end) = mpsc::channel(4);
        let e1 = ended.clone();
        d.defer(
            p,
            10,
            vec![manifest("big", 1)],
            move |_| async move {
                let ok = released.await.unwrap_or(false);
                e1.send(()).await.unwrap();
                ok
            },
            || {},
        )
        .await;
        assert_eq!(
            d.reached(p, 50),
            10,
            "saved position held at the waiting page"
        );
        assert_eq!(
            d.resume(p, 10),
            50,
            "this run pulls on from where it reached"
        );
        release.send(false).unwrap();
        tokio::time::timeout(Duration::from_secs(10), end.recv())
            .await
            .unwrap();
        // The task updates the positions right after its admit returns, then the count.
        let mut waiting = d.watch();
        tokio::time::timeout(Duration::from_secs(10), waiting.wait_for(|n| *n == 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            d.resume(p, 10),
            10,
            "the failed group's page is pulled again"
        );
        assert_eq!(d.resume(p, 10), 50, "once");
        assert_eq!(d.reached(p, 60), 60, "nothing holds the position any more");
        assert!(
            d.lock().rooms.is_empty(),
            "a peer's share ends with its groups"
        );
    }

    #[tokio::test]
    async fn progress_counts_waiting_groups_and_stops_at_the_first_held_page() {
        let d = Arc::new(Deferred::default());
        let p = peer();
        assert_eq!(
            d.progress(p, 40),
            (40, 0),
            "nothing waits: applied as pulled"
        );
        let (release, released) = oneshot::channel::<bool>();
        d.defer(
            p,
            10,
            vec![manifest("big", 1)],
            move |_| async move { released.await.unwrap_or(false) },
            || {},
        )
        .await;
        d.defer(
            p,
            20,
            vec![manifest("other", 2)],
            |_| std::future::pending(),
            || {},
        )
        .await;
        d.defer(
            p,
            30,
            vec![manifest("other", 3)],
            |_| std::future::pending(),
            || {},
        )
        .await;
        assert_eq!(
            d.progress(p, 40),
            (10, 2),
            "held at the first waiting page; two packages wait"
        );
        release.send(true).unwrap();
        let mut waiting = d.watch();
        tokio::time::timeout(Duration::from_secs(10), waiting.wait_for(|n| *n == 2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.progress(p, 40), (20, 1), "the next waiting page holds it");
    }

    async fn next(order: &mut mpsc::Receiver<u32>) -> Option<u32> {
        tokio::time::timeout(Duration::from_secs(10), order.recv())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn groups_of_one_package_are_admitted_in_order() {
        let d = Arc::new(Deferred::default());
        let p = peer();
        let (release, released) = oneshot::channel::<()>();
        let (order_tx, mut order) = mpsc::channel(4);
        let first = order_tx.clone();
        d.defer(
            p,
            0,
            vec![manifest("pkg", 1)],
            move |_| async move {
                let _ = released.await;
                first.send(1).await.unwrap();
                true
            },
            || {},
        )
        .await;
        let second = order_tx.clone();
        d.defer(
            p,
            5,
            vec![manifest("pkg", 2)],
            move |_| async move {
                second.send(2).await.unwrap();
                true
            },
            || {},
        )
        .await;
        let other = order_tx.clone();
        d.defer(
            p,
            5,
            vec![manifest("other", 3)],
            move |_| async move {
                other.send(3).await.unwrap();
                true
            },
            || {},
        )
        .await;
        assert_eq!(
            next(&mut order).await,
            Some(3),
            "another package does not wait"
        );
        release.send(()).unwrap();
        assert_eq!(next(&mut order).await, Some(1));
        assert_eq!(
            next(&mut order).await,
            Some(2),
            "the same package waits its turn"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_with_every_group_waiting_pauses_until_one_is_admitted() {
        let d = Arc::new(Deferred::with_room(2, 2));
        let p = peer();
        let (release, released) = oneshot::channel::<()>();
        d.defer(
            p,
            0,
            vec![manifest("first", 1)],
            move |_| async move {
                let _ = released.await;
                true
            },
            || {},
        )
        .await;
        d.defer(
            p,
            0,
            vec![manifest("second", 2)],
            |_| std::future::pending(),
            || {},
        )
        .await;
        let (admitted_tx, admitted) = oneshot::channel::<()>();
        let third = d.defer(
            p,
            5,
            vec![manifest("third", 3)],
            move |_| async move {
                let _ = admitted_tx.send(());
                true
            },
            || {},
        );
        tokio::pin!(third);
        // Paused time: the runtime runs every task it can before this timeout fires.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), &mut third)
                .await
                .is_err(),
            "no room: the third group waits, and is not dropped"
        );
        assert_eq!(d.progress(p, 10), (0, 2), "two groups wait");
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(60), third)
            .await
            .expect("room once the first group is admitted");
        tokio::time::timeout(Duration::from_secs(60), admitted)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_at_its_share_waits_while_another_peer_still_finds_room() {
        let d = Arc::new(Deferred::with_room(3, 2));
        let (a, b) = (peer(), crate::identity::test_peer(2));
        for (seq, name) in [(1, "a1"), (2, "a2")] {
            d.defer(
                a,
                0,
                vec![manifest(name, seq)],
                |_| std::future::pending(),
                || {},
            )
            .await;
        }
        let more_of_a = d.defer(
            a,
            5,
            vec![manifest("a3", 3)],
            |_| std::future::pending(),
            || {},
        );
        // Kept waiting while the other peer defers: a wait that held a place in the room
        // would leave it none.
        tokio::pin!(more_of_a);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), &mut more_of_a)
                .await
                .is_err(),
            "a third group of one peer waits, though the room has a place"
        );
        tokio::time::timeout(
            Duration::from_secs(60),
            d.defer(
                b,
                0,
                vec![manifest("b1", 4)],
                |_| std::future::pending(),
                || {},
            ),
        )
        .await
        .expect("the other peer takes the place");
        assert_eq!(d.progress(b, 10), (0, 1));
    }
}
