//! The node's libp2p side. One task owns the `Swarm` (`event_loop.rs`); everything else talks
//! to it through the cloneable [`P2p`] handle (commands with `oneshot` replies over a bounded
//! channel) and opens protocol streams through `libp2p_stream::Control`; inbound streams of
//! our protocols arrive through `inbound`.

mod behaviour;
mod event_loop;
pub mod frames;
pub mod inbound;
mod provider_store;
mod redial;
mod room;
pub mod sync;
pub mod transport;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use libp2p::{Multiaddr, PeerId, StreamProtocol, identity::Keypair};
use niso_protocol::{Digest, record::Record};
use tokio::sync::{mpsc, oneshot};

use crate::{config::P2pConfig, trust::Trust};
use inbound::{Inbound, InboundStreams};

pub use transport::TransportChoice;

/// Commands the handle sends to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    Publish(Vec<u8>),
    Provide(Digest),
    Providers(Digest, oneshot::Sender<Vec<PeerId>>),
    Strike(PeerId, String),
}

/// What the event loop tells the replication engine.
#[derive(Debug)]
pub enum P2pEvent {
    Connected(PeerId),
    Disconnected(PeerId),
    /// A verified record that arrived by gossip.
    Gossip {
        from: PeerId,
        record: Box<Record>,
    },
    /// A peer says it has something new for us.
    Poked(PeerId),
}

/// What the node knows about one peer, as `GET /v1/peers` shows it.
pub use niso_protocol::api::PeerInfo;

#[derive(Debug)]
pub(crate) struct Shared {
    pub listen_addrs: RwLock<Vec<Multiaddr>>,
    pub peers: RwLock<HashMap<PeerId, PeerInfo>>,
    /// Bumped on every connection change and sync page, so callers can wait for one.
    pub connections: tokio::sync::watch::Sender<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            listen_addrs: RwLock::default(),
            peers: RwLock::default(),
            connections: tokio::sync::watch::channel(0).0,
        }
    }
}

/// Inbound streams of our own protocols, registered before the swarm connects anywhere.
#[derive(Debug)]
pub struct Incoming {
    pub sync: InboundStreams,
    pub blobs: InboundStreams,
}

/// Strikes after which a peer is blocked.
pub const MAX_STRIKES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("could not build the libp2p swarm")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("`{0}` is not a valid multiaddr")]
    BadAddr(String),
    #[error("could not listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the p2p event loop has stopped")]
    Stopped,
}

/// Whether opening a stream may dial the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Only over a connection the peer has now: sync rounds and pokes, which follow
    /// connections.
    Connected,
    /// Dial the peer if it has no connection: a mirror the user asked for, which keeps going
    /// when the connection drops between pages.
    Dial,
}

/// Why an outbound stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the peer is not connected")]
    NotConnected,
    #[error("could not open the stream")]
    Open(#[from] libp2p_stream::OpenStreamError),
}

/// A cloneable handle to the node's libp2p side.
#[derive(Clone)]
pub struct P2p {
    tx: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    pub peer_id: PeerId,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for P2p {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2p")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// Bound on queued commands and events: beyond it senders wait (commands) or events are
/// dropped (anti-entropy recovers anything gossip loses).
const QUEUE: usize = 1024;

impl P2p {
    /// Builds the swarm, starts listening and dialing, and spawns the event loop.
    pub async fn start(
        secret: [u8; 32],
        config: &P2pConfig,
        trust: Trust,
        transport: TransportChoice,
    ) -> Result<
        (
            Self,
            mpsc::Receiver<P2pEvent>,
            mpsc::Sender<P2pEvent>,
            tokio::task::AbortHandle,
            Incoming,
        ),
        P2pError,
    > {
        let key = Keypair::ed25519_from_bytes(secret).map_err(|e| P2pError::Build(Box::new(e)))?;
        let peer_id = key.public().to_peer_id();
        let mdns = config.mdns && matches!(transport, TransportChoice::Tcp);
        // Our protocols are accepted from the first connection on, so no early stream is
        // refused.
        let (sync_in, sync) = Inbound::new(
            sync::PROTOCOL,
            frames::INBOUND_BURST,
            frames::INBOUND_BURST_PER_PEER,
        );
        let (blobs_in, blobs) = Inbound::new(
            crate::blobs::wire::PROTOCOL,
            frames::INBOUND_BURST,
            frames::INBOUND_BURST_PER_PEER,
        );
        let accept = behaviour::Accept {
            sync: sync_in,
            blobs: blobs_in,
        };
        let incoming = Incoming { sync, blobs };
        let mut swarm = transport::build(key, config, mdns, transport, accept)?;
        for addr in &config.listen {
            let ma: Multiaddr = addr.parse().map_err(|_| P2pError::BadAddr(addr.clone()))?;
            swarm.listen_on(ma).map_err(|e| P2pError::Listen {
                addr: addr.clone(),
                source: Box::new(e),
            })?;
        }
        let control = swarm.behaviour().stream.new_control();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (events_tx, events_rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let mut bootstrap = Vec::new();
        for addr in &config.bootstrap {
            bootstrap.push(
                addr.parse::<Multiaddr>()
                    .map_err(|_| P2pError::BadAddr(addr.clone()))?,
            );
        }
        let task = tokio::spawn(event_loop::run(
            swarm,
            rx,
            events_tx.clone(),
            shared.clone(),
            trust,
            bootstrap,
        ));
        Ok((
            Self {
                tx,
                control,
                peer_id,
                shared,
            },
            events_rx,
            events_tx,
            task.abort_handle(),
            incoming,
        ))
    }

    /// Opens outbound streams. Never `accept` our own protocols on it: `inbound` accepts
    /// them, and a second acceptor would compete with it for the same streams (and hand its
    /// share through libp2p_stream's queue of one, which resets bursts).
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Opens a stream of `protocol` to `peer`; with `Reach::Connected`, only if this node
    /// knows it connected now.
    ///
    /// `libp2p_stream` dials a peer it has no connection to, and sync pulls and pokes are
    /// started by connection events: a peer at its connection limit accepts our handshake and
    /// then closes, and a pull started by that brief connection would dial it again, each
    /// round costing both ends a full handshake, without end. A peer that is gone is pulled
    /// from again when it connects. The check reads the event loop's view, which learns of a
    /// closed connection a moment after libp2p does: a pull in that moment can still dial,
    /// but it no longer starts the next one.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
        reach: Reach,
    ) -> Result<libp2p::Stream, OpenError> {
        if reach == Reach::Connected && !self.is_connected(&peer) {
            return Err(OpenError::NotConnected);
        }
        Ok(self.control.clone().open_stream(peer, protocol).await?)
    }

    /// Listen addresses, each ending in `/p2p/PEER_ID`.
    pub fn listen_addrs(&self) -> Vec<String> {
        let addrs = self
            .shared
            .listen_addrs
            .read()
            .unwrap_or_else(|p| p.into_inner());
        addrs
            .iter()
            .map(|a| format!("{a}/p2p/{}", self.peer_id))
            .collect()
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        let peers = self.shared.peers.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<PeerInfo> = peers.values().cloned().collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }

    pub fn connected_peers(&self) -> Vec<PeerId> {
        let peers = self.shared.peers.read().unwrap_or_else(|p| p.into_inner());
        peers
            .iter()
            .filter(|(_, i)| i.connected && !i.blocked)
            .map(|(p, _)| *p)
            .collect()
    }

    /// A receiver that changes whenever a peer connects, disconnects, is struck or is blocked,
    /// and when a sync page is taken from it.
    pub fn watch_peers(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.connections.subscribe()
    }

    /// Waits until `peer` is connected, up to `timeout`.
    pub async fn wait_connected(&self, peer: &PeerId, timeout: Duration) -> bool {
        let mut changes = self.shared.connections.subscribe();
        let wait = async {
            loop {
                if self.is_connected(peer) {
                    return true;
                }
                if changes.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Waits until the swarm listens somewhere (or `timeout` passes).
    pub async fn wait_listening(&self, timeout: Duration) -> bool {
        let mut changes = self.shared.connections.subscribe();
        let wait = async {
            loop {
                if !self
                    .shared
                    .listen_addrs
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty()
                {
                    return true;
                }
                if changes.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    pub fn is_connected(&self, peer: &PeerId) -> bool {
        let peers = self.shared.peers.read().unwrap_or_else(|p| p.into_inner());
        peers.get(peer).is_some_and(|i| i.connected)
    }

    /// Records a finished sync page from `peer`: the position pulled to and its log head.
    pub(crate) fn note_sync(&self, peer: &PeerId, position: u64, head: u64, at_ms: u64) {
        self.update_peer(peer, |info| {
            info.synced_to = Some(position);
            info.log_head = Some(head);
            info.last_sync_ms = Some(at_ms);
        });
        self.shared.connections.send_modify(|n| *n += 1);
    }

    /// Counts records from `peer` the intake refused.
    pub(crate) fn note_refused(&self, peer: &PeerId, count: u64) {
        self.update_peer(peer, |info| info.records_refused += count);
    }

    fn update_peer(&self, peer: &PeerId, change: impl FnOnce(&mut PeerInfo)) {
        let mut peers = self.shared.peers.write().unwrap_or_else(|p| p.into_inner());
        change(peers.entry(*peer).or_insert_with(|| PeerInfo {
            peer_id: peer.to_string(),
            ..PeerInfo::default()
        }));
    }

    async fn send(&self, cmd: Command) -> Result<(), P2pError> {
        self.tx.send(cmd).await.map_err(|_| P2pError::Stopped)
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<(), P2pError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Dial(addr.clone(), tx)).await?;
        rx.await
            .map_err(|_| P2pError::Stopped)?
            .map_err(|e| P2pError::Listen {
                addr: addr.to_string(),
                source: e.into(),
            })
    }

    /// Broadcasts a record of a package shared with everyone.
    pub async fn publish(&self, record: &Record) -> Result<(), P2pError> {
        self.send(Command::Publish(record.to_bytes())).await
    }

    /// Broadcasts arbitrary bytes on the records topic. Honest nodes only publish records;
    /// tests and the simulator use this to play a hostile peer.
    pub async fn publish_raw(&self, bytes: Vec<u8>) -> Result<(), P2pError> {
        self.send(Command::Publish(bytes)).await
    }

    pub async fn provide(&self, digest: Digest) -> Result<(), P2pError> {
        self.send(Command::Provide(digest)).await
    }

    /// Peers the DHT lists as holding `digest` (waits at most a few seconds).
    pub async fn providers(&self, digest: Digest) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Providers(digest, tx)).await.is_err() {
            return Vec::new();
        }
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Counts a misdeed against `peer`; enough of them block it.
    pub async fn strike(&self, peer: PeerId, reason: &str) {
        tracing::warn!(security = true, %peer, reason, "peer misbehaved");
        let _ = self.send(Command::Strike(peer, reason.to_owned())).await;
    }
}
