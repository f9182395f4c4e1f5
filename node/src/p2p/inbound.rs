//! Inbound streams of one of our protocols, handed from every connection to the node's accept
//! loop through a queue with room for a burst.
//!
//! `libp2p_stream` hands inbound streams over a channel that holds one: a connection that
//! negotiates several streams in one poll (or two connections at once) found it full and
//! reset the rest. Requesters saw a reset right after opening, counted it as a failure, and
//! after three dropped an honest, merely busy peer from a fetch; sync pulls were lost the same
//! way. Outbound streams still go through `libp2p_stream::Control`; inbound ones come here.
//! The queue is a burst buffer, not a limit: the accept loop drains it without waiting and
//! applies the per-peer and global limits of `frames::Admission`. One peer may hold only part
//! of it at once, over all its connections, so a flood from one peer is refused here while
//! other peers' streams still find room.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId, Stream, StreamProtocol,
    core::{Endpoint, transport::PortUse, upgrade::ReadyUpgrade},
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        handler::{ConnectionEvent, FullyNegotiatedInbound},
    },
};
use tokio::sync::mpsc;

/// Accepts `protocol` on every connection and queues its streams for [`InboundStreams`].
pub struct Inbound {
    protocol: StreamProtocol,
    queue: mpsc::Sender<(PeerId, Stream)>,
    queued: Queued,
}

/// The receiving end: streams of one protocol with the peer that opened each.
#[derive(Debug)]
pub struct InboundStreams {
    rx: mpsc::Receiver<(PeerId, Stream)>,
    queued: Queued,
}

impl InboundStreams {
    /// The next stream, or `None` once the swarm is gone.
    pub async fn next(&mut self) -> Option<(PeerId, Stream)> {
        let (peer, stream) = self.rx.recv().await?;
        self.queued.taken(peer);
        Some((peer, stream))
    }
}

/// How many streams each peer has in the queue, shared by every connection's handler (which
/// adds) and the receiving end (which takes away).
#[derive(Clone, Debug)]
struct Queued {
    per_peer: usize,
    counts: Arc<Mutex<HashMap<PeerId, usize>>>,
}

impl Queued {
    /// Takes a place for one more stream of `peer`, or says it already holds its share.
    fn reserve(&self, peer: PeerId) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(peer).or_insert(0);
        if *n >= self.per_peer {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back a place: the stream was taken, or never made it into the queue.
    fn taken(&self, peer: PeerId) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&peer);
            }
        }
    }
}

impl Inbound {
    /// Accepts `protocol`, queueing up to `burst` streams the accept loop has not taken yet,
    /// at most `per_peer` of them from one peer.
    pub fn new(protocol: StreamProtocol, burst: usize, per_peer: usize) -> (Self, InboundStreams) {
        let (queue, rx) = mpsc::channel(burst.max(1));
        let queued = Queued {
            per_peer: per_peer.max(1),
            counts: Arc::default(),
        };
        (
            Self {
                protocol,
                queue,
                queued: queued.clone(),
            },
            InboundStreams { rx, queued },
        )
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler {
            peer,
            protocol: self.protocol.clone(),
            queue: self.queue.clone(),
            queued: self.queued.clone(),
        }
    }
}

impl NetworkBehaviour for Inbound {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// One connection's side of [`Inbound`]: offers the protocol and queues what is negotiated.
pub struct Handler {
    peer: PeerId,
    protocol: StreamProtocol,
    queue: mpsc::Sender<(PeerId, Stream)>,
    queued: Queued,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Infallible, Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol, (), Infallible>,
    ) {
        let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
        else {
            return;
        };
        // Dropping the stream resets it: the peer sees a refused stream, as it would past the
        // per-peer limit.
        if !self.queued.reserve(self.peer) {
            tracing::warn!(peer = %self.peer, protocol = %self.protocol, limit = self.queued.per_peer, "peer opens streams faster than they are taken, dropping a stream");
            return;
        }
        match self.queue.try_send((self.peer, stream)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued.taken(self.peer);
                tracing::debug!(peer = %self.peer, protocol = %self.protocol, "inbound stream queue full, dropping a stream");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued.taken(self.peer);
                tracing::trace!(peer = %self.peer, protocol = %self.protocol, "node is shutting down, dropping an inbound stream");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_holds_at_most_its_share_of_the_queue() {
        let queued = Queued {
            per_peer: 2,
            counts: Arc::default(),
        };
        let (flooder, other) = (PeerId::random(), PeerId::random());
        assert!(queued.reserve(flooder));
        assert!(queued.reserve(flooder));
        assert!(!queued.reserve(flooder), "a third place is refused");
        assert!(queued.reserve(other), "another peer still finds room");
        queued.taken(flooder);
        assert!(queued.reserve(flooder), "a place comes back once taken");
        queued.taken(flooder);
        queued.taken(flooder);
        queued.taken(other);
        assert!(
            queued.counts.lock().unwrap().is_empty(),
            "peers with nothing queued are forgotten"
        );
    }
}
