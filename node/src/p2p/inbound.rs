//! Inbound streams of one of our protocols, handed from every connection to the node's accept
//! loop through a queue with room for a burst.
//!
//! `libp2p_stream` hands inbound streams over a channel that holds one: a connection that
//! negotiates several streams in one poll (or two connections at once) found it full and
//! reset the rest. Requesters saw a reset right after opening, counted it as a failure, and
//! after three dropped an honest, merely busy peer from a fetch; sync pulls were lost the same
//! way. Outbound streams still go through `libp2p_stream::Control`; inbound ones come here.
//! The queue is a burst buffer, not a limit: the accept loop drains it without waiting and
//! applies the per-peer and global limits of `frames::Admission`.

use std::{
    convert::Infallible,
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
}

/// The receiving end: streams of one protocol with the peer that opened each.
#[derive(Debug)]
pub struct InboundStreams {
    rx: mpsc::Receiver<(PeerId, Stream)>,
}

impl InboundStreams {
    /// The next stream, or `None` once the swarm is gone.
    pub async fn next(&mut self) -> Option<(PeerId, Stream)> {
        self.rx.recv().await
    }
}

impl Inbound {
    /// Accepts `protocol`, queueing up to `burst` streams the accept loop has not taken yet.
    pub fn new(protocol: StreamProtocol, burst: usize) -> (Self, InboundStreams) {
        let (queue, rx) = mpsc::channel(burst.max(1));
        (Self { protocol, queue }, InboundStreams { rx })
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler {
            peer,
            protocol: self.protocol.clone(),
            queue: self.queue.clone(),
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
        match self.queue.try_send((self.peer, stream)) {
            Ok(()) => {}
            // Dropping the stream resets it: the peer sees a refused stream, as it would
            // past the per-peer limit.
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(peer = %self.peer, protocol = %self.protocol, "inbound stream queue full, dropping a stream");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}
