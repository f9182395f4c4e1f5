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

/// Most bytes noise puts in one frame (a frame is at most 65,535 bytes with its 16-byte tag).
/// Noise writes a frame when it is full or flushed; plaintext connections write the same
/// pieces through a buffer this size, so that a socket (the simulator's, which stamps each
/// write with its own delay) sees writes as it would under noise, not yamux's 12-byte headers
/// apart from their bodies.
const NOISE_FRAME: usize = 65_535 - 16;

/// Wraps any raw transport with `security` and yamux.
pub fn secure<T>(raw: T, key: &Keypair, security: Security) -> Result<BoxedTransport, noise::Error>
where
    T: libp2p::Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::ListenerUpgrade: Send + 'static,
    T::Dial: Send + 'static,
{
    use libp2p::Transport as _;
    let timeout = Duration::from_secs(20);
    Ok(match security {
        Security::Noise => raw
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            .boxed(),
        Security::Plaintext => raw
            .map(|socket, _| futures::io::BufWriter::with_capacity(NOISE_FRAME, socket))
            .upgrade(Version::V1)
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
    use std::{
        pin::Pin,
        sync::{Arc, Mutex},
        task::{Context, Poll},
    };

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

    /// A connection that notes the size of each write it passes on.
    struct Recorded<S> {
        inner: S,
        writes: Arc<Mutex<Vec<usize>>>,
    }

    impl<S: futures::AsyncRead + Unpin> futures::AsyncRead for Recorded<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<S: futures::AsyncWrite + Unpin> futures::AsyncWrite for Recorded<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let written = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = &written {
                self.writes.lock().unwrap().push(*n);
            }
            written
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_close(cx)
        }
    }

    /// Both ends of a connection.
    struct Connected {
        /// At the dialer: the listener's peer id, as the handshake proved it, and the muxer.
        at_dialer: (PeerId, StreamMuxerBox),
        /// At the listener: the dialer's peer id and the muxer.
        at_listener: (PeerId, StreamMuxerBox),
        /// Every write the dialer made on its raw connection.
        dialer_writes: Arc<Mutex<Vec<usize>>>,
    }

    /// Dials a listener over the memory transport, each end with its own security; the
    /// dialer's error if the handshake fails.
    async fn connect(listener: Security, dialer: Security) -> Result<Connected, String> {
        use futures::StreamExt as _;
        use libp2p::Transport as _;
        use libp2p::core::{
            Endpoint,
            transport::{DialOpts, ListenerId, PortUse, TransportEvent},
        };

        let listen_key = Keypair::ed25519_from_bytes([1; 32]).unwrap();
        let dial_key = Keypair::ed25519_from_bytes([2; 32]).unwrap();
        let writes = Arc::new(Mutex::new(Vec::new()));
        let recorded = {
            let writes = writes.clone();
            MemoryTransport::default().map(move |inner, _| Recorded {
                inner,
                writes: writes.clone(),
            })
        };
        let mut l = secure(MemoryTransport::default(), &listen_key, listener).unwrap();
        let mut d = secure(recorded, &dial_key, dialer).unwrap();
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
        let at_dialer = dialed.map_err(|e| e.to_string())?;
        let at_listener = accepted.map_err(|e| e.to_string())?;
        assert_eq!(at_dialer.0, listen_key.public().to_peer_id());
        assert_eq!(at_listener.0, dial_key.public().to_peer_id());
        Ok(Connected {
            at_dialer,
            at_listener,
            dialer_writes: writes,
        })
    }

    #[tokio::test]
    async fn both_securities_authenticate_the_peer_and_do_not_mix() {
        connect(Security::Noise, Security::Noise).await.unwrap();
        connect(Security::Plaintext, Security::Plaintext)
            .await
            .unwrap();
        // Each refuses the other's protocol: were `Plaintext` noise after all, these would
        // connect.
        assert!(connect(Security::Plaintext, Security::Noise).await.is_err());
        assert!(connect(Security::Noise, Security::Plaintext).await.is_err());
    }

    /// yamux writes each frame's 12-byte header and its body apart; noise sends both in one
    /// frame, and plaintext's buffer must too, or the simulator would stamp them as two
    /// segments, each with its own jitter and chance of loss.
    #[tokio::test]
    async fn a_plaintext_connection_writes_a_frame_and_its_header_at_once() {
        use futures::{AsyncReadExt as _, AsyncWriteExt as _, future::poll_fn};
        use libp2p::core::muxing::StreamMuxerExt as _;

        let Connected {
            at_dialer: (_, mut sender),
            at_listener: (_, mut receiver),
            dialer_writes,
        } = connect(Security::Plaintext, Security::Plaintext)
            .await
            .unwrap();
        let before = dialer_writes.lock().unwrap().len();
        let payload = vec![7u8; 100_000];
        let mut out = poll_fn(|cx| sender.poll_outbound_unpin(cx)).await.unwrap();
        let send = async {
            out.write_all(&payload).await.unwrap();
            out.close().await.unwrap();
        };
        let receive = async {
            let mut inbound = poll_fn(|cx| {
                let _ = receiver.poll_unpin(cx);
                receiver.poll_inbound_unpin(cx)
            })
            .await
            .unwrap();
            let mut got = Vec::new();
            let read = inbound.read_to_end(&mut got);
            let drive = poll_fn(|cx| receiver.poll_unpin(cx).map(|_| ()));
            futures::pin_mut!(read, drive);
            match futures::future::select(read, drive).await {
                futures::future::Either::Left((read, _)) => read.unwrap(),
                futures::future::Either::Right(_) => panic!("the receiver's connection ended"),
            };
            got
        };
        let drive = poll_fn(|cx| sender.poll_unpin(cx).map(|_| ()));
        let both = async { futures::join!(send, receive).1 };
        futures::pin_mut!(both, drive);
        let got = match futures::future::select(both, drive).await {
            futures::future::Either::Left((got, _)) => got,
            futures::future::Either::Right(_) => panic!("the sender's connection ended"),
        };
        assert_eq!(got, payload);
        let writes = dialer_writes.lock().unwrap()[before..].to_vec();
        // A full frame is a 16 KiB body behind its header, in one write; never a bare body.
        assert!(writes.contains(&(12 + 16 * 1024)), "{writes:?}");
        assert!(!writes.contains(&(16 * 1024)), "{writes:?}");
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
