//! The task that owns the `Swarm`: it runs discovery, gossip validation, DHT queries, peer
//! bookkeeping, and the commands the rest of the node sends.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify, kad, mdns, ping,
    swarm::{SwarmEvent, dial_opts::DialOpts},
};
use niso_protocol::{federation::RECORDS_TOPIC, record::Record};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    Command, MAX_STRIKES, P2pEvent, Shared,
    behaviour::{Behaviour, BehaviourEvent},
    redial::{self, Redial},
};
use crate::{identity::peer_id as origin_peer_id, trust::Trust};

/// Providers found so far for one DHT query, and who is waiting for them.
type ProviderQuery = (HashSet<PeerId>, Option<oneshot::Sender<Vec<PeerId>>>);

struct Loop {
    swarm: Swarm<Behaviour>,
    events: mpsc::Sender<P2pEvent>,
    shared: Arc<Shared>,
    trust: Trust,
    topic: gossipsub::IdentTopic,
    provider_queries: HashMap<kad::QueryId, ProviderQuery>,
    strikes: HashMap<PeerId, u32>,
    redial: Redial,
}

pub(super) async fn run(
    swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<P2pEvent>,
    shared: Arc<Shared>,
    trust: Trust,
    bootstrap: Vec<Multiaddr>,
) {
    let topic = gossipsub::IdentTopic::new(RECORDS_TOPIC);
    let mut state = Loop {
        swarm,
        events,
        shared,
        trust,
        topic,
        provider_queries: HashMap::new(),
        strikes: HashMap::new(),
        redial: Redial::new(bootstrap, Instant::now()),
    };
    if let Err(e) = state
        .swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&state.topic)
    {
        tracing::error!(error = %e, "could not subscribe to the records topic");
    }
    // The first tick comes at once: every bootstrap address is due then.
    let mut redial_tick = tokio::time::interval(redial::TICK);
    redial_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = state.swarm.select_next_some() => state.on_swarm_event(event),
            command = commands.recv() => match command {
                Some(c) => state.on_command(c),
                None => break,
            },
            _ = redial_tick.tick() => state.dial_bootstrap(),
        }
    }
    tracing::info!("p2p event loop stopped");
}

impl Loop {
    fn dial_bootstrap(&mut self) {
        for (addr, peer) in self.redial.due(Instant::now()) {
            if let Some(peer) = peer {
                // `Redial` knows connections from their events; the swarm has the last word.
                if self.swarm.is_connected(&peer) {
                    continue;
                }
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial failed");
            }
        }
    }

    fn peer_mut(&self, peer: &PeerId, f: impl FnOnce(&mut super::PeerInfo)) {
        let mut peers = self.shared.peers.write().unwrap_or_else(|p| p.into_inner());
        let info = peers.entry(*peer).or_insert_with(|| super::PeerInfo {
            peer_id: peer.to_string(),
            ..super::PeerInfo::default()
        });
        f(info);
    }

    fn emit(&self, event: P2pEvent) {
        // Bounded: if the replication engine is behind, drop; periodic sync catches up.
        if self.events.try_send(event).is_err() {
            tracing::debug!("replication queue full, dropping a p2p event");
        }
    }

    fn strike(&mut self, peer: PeerId, reason: &str) {
        let n = self.strikes.entry(peer).or_default();
        *n += 1;
        let n = *n;
        tracing::warn!(security = true, %peer, strikes = n, reason, "strike against peer");
        self.peer_mut(&peer, |i| i.strikes = n);
        // Announced like a connection change, so a strike can be waited for.
        self.shared.connections.send_modify(|n| *n += 1);
        if n >= MAX_STRIKES {
            tracing::warn!(security = true, %peer, "blocking peer");
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            let _ = self.swarm.disconnect_peer_id(peer);
            self.peer_mut(&peer, |i| {
                i.blocked = true;
                i.connected = false;
            });
            self.shared.connections.send_modify(|n| *n += 1);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial(addr, reply) => match self.swarm.dial(DialOpts::from(addr.clone())) {
                Ok(()) => {
                    // The dial's outcome arrives as a swarm event; answer optimistically now and
                    // let callers wait for the connection themselves.
                    let _ = reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.to_string()));
                }
            },
            Command::Publish(bytes) => {
                let topic = self.topic.clone();
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                    tracing::debug!(error = %e, "gossip publish skipped");
                }
            }
            Command::Provide(digest) => {
                let key = kad::RecordKey::new(digest.as_bytes());
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                    tracing::warn!(error = %e, "could not announce a blob provider record");
                }
            }
            Command::Providers(digest, reply) => {
                let key = kad::RecordKey::new(digest.as_bytes());
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.provider_queries
                    .insert(id, (HashSet::new(), Some(reply)));
            }
            Command::Strike(peer, reason) => self.strike(peer, &reason),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "p2p listening");
                {
                    let mut addrs = self
                        .shared
                        .listen_addrs
                        .write()
                        .unwrap_or_else(|p| p.into_inner());
                    if !addrs.contains(&address) {
                        addrs.push(address);
                    }
                }
                self.shared.connections.send_modify(|n| *n += 1);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let mut addrs = self
                    .shared
                    .listen_addrs
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                addrs.retain(|a| *a != address);
            }
            // Binding fails at start-up, before this loop runs; these come later (an interface
            // going away, accept failing for lack of file descriptors) and must not pass
            // unnoticed, nor leave addresses advertised that no longer take connections.
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                match reason {
                    Ok(()) => tracing::info!(?addresses, "p2p listener closed"),
                    Err(e) => tracing::error!(?addresses, error = %e, "p2p listener failed"),
                }
                let mut addrs = self
                    .shared
                    .listen_addrs
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                addrs.retain(|a| !addresses.contains(a));
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(error = %error, "p2p listener error");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                tracing::info!(peer = %peer_id, %addr, "peer connected");
                self.redial.connected(
                    peer_id,
                    endpoint.is_dialer().then_some(&addr),
                    Instant::now(),
                );
                self.peer_mut(&peer_id, |i| {
                    i.connected = true;
                    let a = addr.to_string();
                    if !i.addrs.contains(&a) {
                        i.addrs.push(a);
                    }
                });
                if endpoint.is_dialer() {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                self.shared.connections.send_modify(|n| *n += 1);
                if num_established.get() == 1 {
                    self.emit(P2pEvent::Connected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                tracing::info!(peer = %peer_id, "peer disconnected");
                self.redial.disconnected(peer_id, Instant::now());
                self.peer_mut(&peer_id, |i| i.connected = false);
                self.shared.connections.send_modify(|n| *n += 1);
                self.emit(P2pEvent::Disconnected(peer_id));
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            // libp2p logs neither: without them, how many dials the limits refuse cannot be
            // counted (docs/simulator.md).
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(error = %error, "incoming p2p connection failed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, error = %error, "outgoing p2p connection failed");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Room(never)
            | BehaviourEvent::Limits(never)
            | BehaviourEvent::Blocked(never) => match never {},
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let acceptance = self.validate_gossip(propagation_source, &message.data);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            BehaviourEvent::Gossipsub(_) => {}
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
                        continue;
                    }
                    tracing::info!(%peer, %addr, "found peer by mDNS");
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    let _ = self
                        .swarm
                        .dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                self.peer_mut(&peer, |i| {
                    i.latency_ms = Some(u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX))
                });
            }
            BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => {
                if let kad::QueryResult::GetProviders(result) = result {
                    if let Some((found, _)) = self.provider_queries.get_mut(&id)
                        && let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result
                    {
                        found.extend(providers);
                    }
                    if step.last
                        && let Some((found, Some(reply))) = self.provider_queries.remove(&id)
                    {
                        let me = *self.swarm.local_peer_id();
                        let _ = reply.send(found.into_iter().filter(|p| *p != me).collect());
                    }
                }
            }
            BehaviourEvent::Kad(_) => {}
            BehaviourEvent::Stream(()) => {}
        }
    }

    /// Application-level validation before gossipsub forwards anything: the record must be
    /// well-formed and signed by its origin (else the sender is penalised), and this node
    /// forwards it only if it shares the package with everyone itself.
    fn validate_gossip(&mut self, from: PeerId, data: &[u8]) -> gossipsub::MessageAcceptance {
        let record = match Record::from_bytes(data) {
            Ok(r) => r,
            Err(e) => {
                self.strike(from, &format!("invalid gossiped record: {e}"));
                return gossipsub::MessageAcceptance::Reject;
            }
        };
        let package = record.body.package().to_string();
        let origin = origin_peer_id(&record.origin);
        if self.trust.accepts(&origin, &package).is_some() {
            self.emit(P2pEvent::Gossip {
                from,
                record: Box::new(record),
            });
        }
        if self.trust.shares_publicly(&package) {
            gossipsub::MessageAcceptance::Accept
        } else {
            gossipsub::MessageAcceptance::Ignore
        }
    }
}
