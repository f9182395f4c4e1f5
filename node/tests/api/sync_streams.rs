//! Sync streams follow connections: a pull or a poke to a peer that has gone fails at once and
//! dials nobody. (libp2p_stream would dial it back; a peer at its connection limit, which
//! accepts the handshake and then closes, made each pull started by that brief connection
//! dial it again, without end.) A mirror's pull still dials.

use std::time::Duration;

use niso_node::{
    config::P2pConfig,
    p2p::{OpenError, P2p, Reach, TransportChoice, sync},
    trust::Trust,
};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_pull_or_poke_to_a_peer_that_has_gone_fails_without_dialing() {
    let config = P2pConfig {
        listen: vec!["/memory/0".into()],
        mdns: false,
        ..P2pConfig::default()
    };
    let start = |secret| P2p::start(secret, &config, Trust::default(), TransportChoice::Memory);
    let (a, mut a_events, _a_tx, _a_task, _a_in) = start([71; 32]).await.unwrap();
    tokio::spawn(async move { while a_events.recv().await.is_some() {} });
    let (b, mut b_events, _b_tx, b_task, _b_in) = start([72; 32]).await.unwrap();
    tokio::spawn(async move { while b_events.recv().await.is_some() {} });
    assert!(b.wait_listening(WAIT).await);
    let b_addr = b.listen_addrs().remove(0);

    a.dial(b_addr.parse().unwrap()).await.unwrap();
    assert!(a.wait_connected(&b.peer_id, WAIT).await);
    sync::poke(&a, b.peer_id)
        .await
        .expect("a connected peer takes a poke");

    // B goes away; A still knows its address (it dialed it), so libp2p could dial it back.
    b_task.abort();
    let mut changes = a.watch_peers();
    tokio::time::timeout(WAIT, async {
        while a.is_connected(&b.peer_id) {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("A notices B has gone");

    let pulled = sync::pull(&a, b.peer_id, Reach::Connected, 0, Vec::new()).await;
    assert!(
        matches!(pulled, Err(sync::SyncError::Open(OpenError::NotConnected))),
        "{pulled:?}"
    );
    let poked = sync::poke(&a, b.peer_id).await;
    assert!(
        matches!(poked, Err(sync::SyncError::Open(OpenError::NotConnected))),
        "{poked:?}"
    );
    // A mirror's pull may dial: it tries B's address, which nobody listens on any more.
    let mirrored = sync::pull(&a, b.peer_id, Reach::Dial, 0, Vec::new()).await;
    assert!(
        matches!(mirrored, Err(sync::SyncError::Open(OpenError::Open(_)))),
        "{mirrored:?}"
    );
}
