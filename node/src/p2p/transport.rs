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
    noise, plaintext, tcp, yamux,
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

/// How a connection proves who is at the other end and hides what it carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Noise: the remote proves it holds its key and every byte is encrypted. What a node
    /// runs with.
    #[default]
    Noise,
    /// libp2p's plaintext handshake: the remote sends its public key and is taken at its word,
    /// and bytes travel as they are. Only for a network that exists inside one process, the
    /// simulator's, where nobody can listen in and encrypting costs host time without
    /// changing a simulated result.
    Plaintext,
}

/// Wraps any raw transport with `security` and yamux.
pub fn secure<T>(raw: T, key: &Keypair, security: Security) -> Result<BoxedTransport, noise::Error>
where
    T: libp2p::Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::ListenerUpgrade: Send + 'static,
    T::Dial: Send + 'static,
{
    let raw = raw.upgrade(Version::V1);
    let timeout = Duration::from_secs(20);
    Ok(match security {
        Security::Noise => raw
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            .boxed(),
        Security::Plaintext => raw
            .authenticate(plaintext::Config::new(key))
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            .boxed(),
    })
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
                secure(MemoryTransport::default(), k, Security::Noise)
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

    /// Dials a listener over the memory transport, each end with its own security; the
    /// peer each end authenticated, or the dialer's error.
    async fn handshake(listener: Security, dialer: Security) -> Result<(PeerId, PeerId), String> {
        use futures::StreamExt as _;
        use libp2p::Transport as _;
        use libp2p::core::{
            Endpoint,
            transport::{DialOpts, ListenerId, PortUse, TransportEvent},
        };

        let listen_key = Keypair::ed25519_from_bytes([1; 32]).unwrap();
        let dial_key = Keypair::ed25519_from_bytes([2; 32]).unwrap();
        let mut l = secure(MemoryTransport::default(), &listen_key, listener).unwrap();
        let mut d = secure(MemoryTransport::default(), &dial_key, dialer).unwrap();
        l.listen_on(ListenerId::next(), "/memory/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let Some(TransportEvent::NewAddress { listen_addr, .. }) = l.next().await {
                break listen_addr;
            }
        };
        let dial = d
            .dial(
                addr,
                DialOpts {
                    role: Endpoint::Dialer,
                    port_use: PortUse::New,
                },
            )
            .unwrap();
        let accept = async {
            loop {
                if let Some(TransportEvent::Incoming { upgrade, .. }) = l.next().await {
                    return upgrade.await;
                }
            }
        };
        let (dialed, accepted) = futures::join!(dial, accept);
        let (listener_seen, _) = dialed.map_err(|e| e.to_string())?;
        let (dialer_seen, _) = accepted.map_err(|e| e.to_string())?;
        assert_eq!(listener_seen, listen_key.public().to_peer_id());
        assert_eq!(dialer_seen, dial_key.public().to_peer_id());
        Ok((listener_seen, dialer_seen))
    }

    #[tokio::test]
    async fn both_securities_authenticate_the_peer_and_do_not_mix() {
        handshake(Security::Noise, Security::Noise).await.unwrap();
        handshake(Security::Plaintext, Security::Plaintext)
            .await
            .unwrap();
        // Each refuses the other's protocol: were `Plaintext` noise after all, these would
        // connect.
        handshake(Security::Plaintext, Security::Noise)
            .await
            .unwrap_err();
        handshake(Security::Noise, Security::Plaintext)
            .await
            .unwrap_err();
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
