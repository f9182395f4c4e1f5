//! Building the swarm over real TCP, the in-memory transport, or a transport the caller
//! supplies (the simulator's fault-injecting one).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder,
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
    behaviour::{Accept, Behaviour, BoxError},
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
    accept: Accept,
) -> Result<Swarm<Behaviour>, P2pError> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| P2pError::Build(e);
    let swarm = match transport {
        TransportChoice::Tcp => {
            for addr in &config.listen {
                ensure_free(addr)?;
            }
            SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default(),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .map_err(|e| err(Box::new(e)))?
                .with_behaviour(|k| Behaviour::new(k, config, mdns, accept))
                .map_err(|e| err(Box::new(e)))?
                .with_swarm_config(swarm_config)
                .build()
        }
        TransportChoice::Memory => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|k| {
                secure(MemoryTransport::default(), k)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
            .map_err(|e| err(Box::new(e)))?
            .with_behaviour(|k| Behaviour::new(k, config, false, accept))
            .map_err(|e| err(Box::new(e)))?
            .with_swarm_config(swarm_config)
            .build(),
        TransportChoice::Custom(make) => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(make)
            .map_err(|e| err(Box::new(e)))?
            .with_behaviour(|k| Behaviour::new(k, config, false, accept))
            .map_err(|e| err(Box::new(e)))?
            .with_swarm_config(swarm_config)
            .build(),
    };
    Ok(swarm)
}

/// Connections close after two idle minutes. A substream settles on its one protocol
/// without waiting for the listener's echo ("lazy" multistream-select): a node opens a stream
/// per blob request and per sync page, and libp2p-stream opens one at a time per connection,
/// so each open's round trip queued the next. A substream carries a single protocol, never
/// nested ones, so the lazy variant's one pitfall does not arise; a listener that lacks the
/// protocol still refuses it, and the dialer sees that on its first read.
fn swarm_config(c: libp2p::swarm::Config) -> libp2p::swarm::Config {
    c.with_idle_connection_timeout(Duration::from_secs(120))
        .with_substream_upgrade_protocol_override(Version::V1Lazy)
}

/// Fails when another socket already listens on the TCP address `addr`.
///
/// libp2p's TCP transport sets `SO_REUSEPORT` on every listening socket, so a second node
/// given the same port binds it too and the kernel splits incoming connections between the
/// two. A plain bind (no `SO_REUSEPORT`) conflicts with any socket listening there, so trying
/// one first finds the port taken. The probe is released before libp2p binds: two nodes
/// started within that instant can still both listen. For an IPv6 address the probe is
/// dual-stack while libp2p's socket is v6-only, so a port held only on IPv4 also counts as
/// taken there. Addresses libp2p's TCP transport would not bind, and port 0, are left to it.
fn ensure_free(addr: &str) -> Result<(), P2pError> {
    let Some(socket) = tcp_socket_addr(addr) else {
        return Ok(());
    };
    match std::net::TcpListener::bind(socket) {
        Ok(_probe) => Ok(()),
        Err(e) => Err(P2pError::Listen {
            addr: addr.to_owned(),
            source: Box::new(e),
        }),
    }
}

/// The socket libp2p's TCP transport would bind for `addr`, read the way it reads it: IP and
/// port at the end, before an optional `/p2p/…`.
fn tcp_socket_addr(addr: &str) -> Option<SocketAddr> {
    use libp2p::multiaddr::Protocol;
    let mut ma: Multiaddr = addr.parse().ok()?;
    let mut port = None;
    while let Some(part) = ma.pop() {
        let ip = match (part, port) {
            (Protocol::P2p(_), None) => continue,
            (Protocol::Tcp(p), None) => {
                port = Some(p);
                continue;
            }
            (Protocol::Ip4(ip), Some(_)) => IpAddr::V4(ip),
            (Protocol::Ip6(ip), Some(_)) => IpAddr::V6(ip),
            _ => return None,
        };
        return port.filter(|p| *p != 0).map(|p| SocketAddr::new(ip, p));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_the_socket_libp2p_would_bind() {
        assert_eq!(
            tcp_socket_addr("/ip4/127.0.0.1/tcp/4001"),
            Some("127.0.0.1:4001".parse().unwrap())
        );
        assert_eq!(
            tcp_socket_addr("/ip6/::1/tcp/4001"),
            Some("[::1]:4001".parse().unwrap())
        );
        assert_eq!(
            tcp_socket_addr(
                "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
            ),
            Some("10.0.0.1:4001".parse().unwrap())
        );
        assert_eq!(tcp_socket_addr("/ip4/0.0.0.0/tcp/0"), None);
        assert_eq!(tcp_socket_addr("/ip4/127.0.0.1"), None);
        assert_eq!(tcp_socket_addr("/tcp/4001"), None);
        assert_eq!(tcp_socket_addr("/memory/4001"), None);
        assert_eq!(tcp_socket_addr("/dns4/localhost/tcp/4001"), None);
        assert_eq!(tcp_socket_addr("/ip4/127.0.0.1/udp/4001/quic-v1"), None);
        assert_eq!(tcp_socket_addr("not an address"), None);
    }

    #[test]
    fn a_port_someone_listens_on_is_refused() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let addr = format!("/ip4/127.0.0.1/tcp/{port}");
        let err = ensure_free(&addr).unwrap_err();
        assert!(
            matches!(&err, P2pError::Listen { addr: a, .. } if *a == addr),
            "{err:?}"
        );
        drop(taken);
        ensure_free(&addr).unwrap();
    }
}
