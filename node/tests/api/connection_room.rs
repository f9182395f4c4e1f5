//! A node holding `max_connections` refuses a dial before the handshake: it answers not even
//! the first protocol negotiation, so a full node spends nothing on a connection it would drop.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{
    Multiaddr, Transport,
    core::{
        Endpoint,
        transport::{DialOpts, MemoryTransport, PortUse},
    },
    multiaddr::Protocol,
};
use niso_node::{
    config::P2pConfig,
    p2p::{P2p, TransportChoice},
    trust::Trust,
};

use crate::support::bare_peer;

const DEADLINE: Duration = Duration::from_secs(10);

/// Opens a raw connection to `addr`, proposes noise as libp2p's multistream-select does, and
/// returns what the listener sent back before it closed or `DEADLINE` passed.
async fn probe(addr: &Multiaddr) -> Vec<u8> {
    let bare: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    let opts = DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::Reuse,
    };
    let mut conn = MemoryTransport::default()
        .dial(bare, opts)
        .unwrap()
        .await
        .unwrap();
    // Each message is its length (one byte here) and the text.
    conn.write_all(b"\x13/multistream/1.0.0\n\x07/noise\n")
        .await
        .unwrap();
    conn.flush().await.unwrap();
    let mut answer = vec![0; 64];
    let n = tokio::time::timeout(DEADLINE, conn.read(&mut answer))
        .await
        .expect("the listener answers or closes within the deadline")
        .unwrap_or(0);
    answer.truncate(n);
    answer
}

#[tokio::test]
async fn a_full_node_closes_a_dial_before_negotiating_anything() {
    let config = P2pConfig {
        listen: vec!["/memory/0".into()],
        mdns: false,
        max_connections: 1,
        ..P2pConfig::default()
    };
    let (full, mut events, _tx, _task, _incoming) =
        P2p::start([7; 32], &config, Trust::default(), TransportChoice::Memory)
            .await
            .unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    assert!(full.wait_listening(DEADLINE).await);
    let addr: Multiaddr = full.listen_addrs().remove(0).parse().unwrap();

    // With room, the probe is answered: it can tell an accepted dial from a refused one.
    let answer = probe(&addr).await;
    assert!(
        answer.starts_with(b"\x13/multistream/1.0.0\n"),
        "a node with room negotiates: {answer:?}"
    );

    let (other, _, _incoming) = bare_peer([8; 32]).await;
    other.dial(addr.clone()).await.unwrap();
    assert!(full.wait_connected(&other.peer_id, DEADLINE).await);

    assert_eq!(
        probe(&addr).await,
        b"",
        "a full node closes the connection without a word"
    );
    assert!(
        full.is_connected(&other.peer_id),
        "the connection it holds stays"
    );
}
