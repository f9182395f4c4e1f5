//! Building the swarm over real TCP, the in-memory transport, or a transport the caller
//! supplies (the simulator's fault-injecting one).

use std::time::Duration;

use libp2p::{
    PeerId, Swarm, SwarmBuilder,
    core::{
        muxing::StreamMuxerBox,
        transport::{Boxed, MemoryTransport},
        upgrade::Version,
    },
    identity::Keypair,
    noise, tcp, yamux,
};

use super::{
    P2pError,
    behaviour::{Behaviour, BoxError},
};
use crate::config::P2pConfig;

/// A boxed, authenticated, multiplexed transport.
pub type BoxedTransport = Boxed<(PeerId, StreamMuxerBox)>;

/// Builds a transport from the node's key.
pub type MakeTransport = Box<dyn FnOnce(&Keypair) -> Result<BoxedTransport, BoxError> + Send>;

/// Which transport the swarm runs on.
pub enum TransportChoice {
    /// TCP + noise + yamux (production).
    Tcp,
    /// libp2p's in-process memory transport + noise + yamux (tests).
    Memory,
    /// Any transport the caller builds from the node's key (the simulator's fault layer).
    Custom(MakeTransport),
}

impl std::fmt::Debug for TransportChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "Tcp",
            Self::Memory => "Memory",
            Self::Custom(_) => "Custom",
        })
    }
}

/// Wraps any raw transport with noise and yamux.
pub fn secure<T>(raw: T, key: &Keypair) -> Result<BoxedTransport, noise::Error>
where
    T: libp2p::Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::ListenerUpgrade: Send + 'static,
    T::Dial: Send + 'static,
{
    Ok(raw
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed())
}

pub(super) fn build(
    key: Keypair,
    config: &P2pConfig,
    mdns: bool,
    transport: TransportChoice,
) -> Result<Swarm<Behaviour>, P2pError> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| P2pError::Build(e);
    let idle = Duration::from_secs(120);
    let swarm = match transport {
        TransportChoice::Tcp => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| err(Box::new(e)))?
            .with_behaviour(|k| Behaviour::new(k, config, mdns))
            .map_err(|e| err(Box::new(e)))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        TransportChoice::Memory => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|k| {
                secure(MemoryTransport::default(), k)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
            .map_err(|e| err(Box::new(e)))?
            .with_behaviour(|k| Behaviour::new(k, config, false))
            .map_err(|e| err(Box::new(e)))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        TransportChoice::Custom(make) => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(make)
            .map_err(|e| err(Box::new(e)))?
            .with_behaviour(|k| Behaviour::new(k, config, false))
            .map_err(|e| err(Box::new(e)))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    Ok(swarm)
}
