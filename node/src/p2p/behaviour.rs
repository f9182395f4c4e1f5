//! The libp2p behaviours a node runs, composed into one.

use std::time::Duration;

use libp2p::{
    StreamProtocol, allow_block_list, connection_limits, gossipsub, identify,
    identity::Keypair,
    kad, mdns, ping,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
};
use niso_protocol::federation::{IDENTIFY_PROTOCOL, KAD_PROTOCOL};

use super::{
    inbound::Inbound,
    provider_store::{ProviderLimits, ProviderStore},
    room::Room,
};
use crate::config::P2pConfig;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// First, so a connection it refuses costs no other behaviour anything.
    pub room: Room,
    pub limits: connection_limits::Behaviour,
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub gossipsub: gossipsub::Behaviour,
    pub kad: kad::Behaviour<ProviderStore>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    /// Opens our protocols' outbound streams (`P2p::control`).
    pub stream: libp2p_stream::Behaviour,
    /// Accepts inbound `/niso/sync/…` streams.
    pub sync_in: Inbound,
    /// Accepts inbound `/niso/blob/…` streams.
    pub blobs_in: Inbound,
}

/// The accepting behaviours of our own protocols, made before the swarm (their receiving
/// ends go to the serving loops).
pub struct Accept {
    pub sync: Inbound,
    pub blobs: Inbound,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Behaviour {
    pub fn new(
        key: &Keypair,
        config: &P2pConfig,
        mdns_enabled: bool,
        accept: Accept,
    ) -> Result<Self, BoxError> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(64))
            .with_max_pending_outgoing(Some(64))
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(2));

        // Message ids come from the content, so the same record relayed by two peers is one
        // message; nothing is forwarded before the application has validated it.
        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_millis(700))
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(16 * 1024)
            .message_id_fn(|m: &gossipsub::Message| {
                gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
            })
            .build()?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )?;
        gossipsub.with_peer_score(
            gossipsub::PeerScoreParams::default(),
            gossipsub::PeerScoreThresholds::default(),
        )?;

        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config.set_query_timeout(Duration::from_secs(20));
        // A registry provides one key per blob: a store whose cost per key is the key.
        let store = ProviderStore::new(peer_id, ProviderLimits::default());
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
        kad.set_mode(Some(kad::Mode::Server));

        let mdns = if mdns_enabled {
            let cfg = mdns::Config {
                query_interval: Duration::from_secs(5),
                ..mdns::Config::default()
            };
            Some(mdns::tokio::Behaviour::new(cfg, peer_id)?)
        } else {
            None
        };

        Ok(Self {
            room: Room::new(config.max_connections as usize),
            limits: connection_limits::Behaviour::new(limits),
            blocked: allow_block_list::Behaviour::default(),
            gossipsub,
            kad,
            mdns: Toggle::from(mdns),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                    .with_agent_version(concat!("niso/", env!("CARGO_PKG_VERSION")).to_owned()),
            ),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(10))),
            stream: libp2p_stream::Behaviour::new(),
            sync_in: accept.sync,
            blobs_in: accept.blobs,
        })
    }
}
