//! A stranger that floods a node's sync protocol with idle streams, or sends it bad requests:
//! an honest peer's sync still goes through while the stranger holds its streams, and the
//! stranger is struck until blocked. A stream closed before its request costs nothing. And
//! streams that several peers open at once all reach the node, none refused by a full queue.

use std::time::Duration;

use axum::http::StatusCode;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use niso_node::{
    Node,
    blobs::wire,
    config::{BlobMode, ReplicateRule, ShareRule},
    p2p::{P2p, PeerInfo, Reach, frames::MAX_REQUEST, sync},
};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    federation::{CONVERGE, address, has_version, mem_node},
    support::{TestNode, bare_peer, package},
};

/// Idle streams the stranger opens, more than the 32 sync requests a node used to serve.
const FLOOD: usize = 40;
/// How long the origin gives a stream to send its request, in this test.
const REQUEST_DEADLINE: Duration = Duration::from_secs(8);
/// How soon an honest replica must have a package pushed to the origin while the stranger
/// holds its streams: under the request deadline (so it is not the deadline that saved it)
/// and far under the 30 s frame timeout.
const SYNC_BOUND: Duration = Duration::from_secs(4);

async fn origin() -> TestNode {
    mem_node(|c| {
        c.share = vec![ShareRule {
            to: "*".into(),
            packages: vec!["*".into()],
        }];
        c.p2p.limits.request_timeout_ms = REQUEST_DEADLINE.as_millis() as u64;
    })
    .await
}

/// A bare libp2p peer with no rules, connected to `to`.
async fn stranger(secret: u8, to: &Node) -> P2p {
    let (p2p, _, _) = bare_peer([secret; 32]).await;
    let target = to.state().p2p.as_ref().unwrap().peer_id;
    p2p.dial(address(to).await.parse().unwrap()).await.unwrap();
    assert!(p2p.wait_connected(&target, CONVERGE).await);
    p2p
}

fn info(node: &Node, peer: &PeerId) -> PeerInfo {
    let id = peer.to_string();
    node.state()
        .p2p
        .as_ref()
        .unwrap()
        .peers()
        .into_iter()
        .find(|p| p.peer_id == id)
        .unwrap_or_default()
}

/// Waits (on the node's peer table, with a deadline) until `check` holds for `peer`.
async fn until_peer(node: &Node, peer: &PeerId, what: &str, check: impl Fn(&PeerInfo) -> bool) {
    let mut changes = node.state().p2p.as_ref().unwrap().watch_peers();
    let wait = async {
        while !check(&info(node, peer)) {
            if changes.changed().await.is_err() {
                break;
            }
        }
    };
    if tokio::time::timeout(CONVERGE, wait).await.is_err() {
        panic!("timed out waiting for {what}: {:?}", info(node, peer));
    }
}

/// Returns once the node's p2p event loop has handled every command sent to it before,
/// strikes included: it handles commands in order and answers a dial at once (this one fails
/// later, harmlessly: nobody listens there).
async fn settled(node: &Node) {
    let addr = format!("/memory/{}/p2p/{}", u64::MAX, PeerId::random());
    let p2p = node.state().p2p.as_ref().unwrap();
    let _ = p2p.dial(addr.parse().unwrap()).await;
}

/// `peer` as the node's `/v1/peers` shows it.
async fn listed(node: &TestNode, peer: &PeerId) -> PeerInfo {
    let reply = node
        .get("/v1/peers", Some(&node.admin))
        .await
        .expect(StatusCode::OK);
    let peers: Vec<PeerInfo> = serde_json::from_slice(&reply.body).unwrap();
    let id = peer.to_string();
    peers
        .into_iter()
        .find(|p| p.peer_id == id)
        .unwrap_or_default()
}

/// Opens a stream, sends `bytes` (closing the stream when they are empty), and returns once
/// the other side has ended it: by then any strike it earned has been sent to its event loop.
async fn send_and_wait_for_end(p2p: &P2p, to: PeerId, protocol: StreamProtocol, bytes: &[u8]) {
    let mut stream = p2p.control().open_stream(to, protocol).await.unwrap();
    if bytes.is_empty() {
        stream.close().await.unwrap();
    } else {
        stream.write_all(bytes).await.unwrap();
        stream.flush().await.unwrap();
    }
    let mut buf = [0u8; 64];
    let ended = async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(CONVERGE, ended)
        .await
        .expect("the node never ended the stream");
}

#[tokio::test]
async fn a_stranger_holding_idle_sync_streams_does_not_stop_an_honest_sync() {
    let a = origin().await;
    let a_node = &a.node;
    let a_peer = a_node.state().p2p.as_ref().unwrap().peer_id;
    let a_addr = address(a_node).await;
    let b = mem_node(|c| {
        c.p2p.bootstrap = vec![a_addr.clone()];
        c.replicate = vec![ReplicateRule {
            from: a_peer.to_string(),
            packages: vec!["*".into()],
            blobs: BlobMode::Eager,
        }];
    })
    .await;
    let b_peer = b.node.state().p2p.as_ref().unwrap().peer_id;
    assert!(
        b.node
            .state()
            .p2p
            .as_ref()
            .unwrap()
            .wait_connected(&a_peer, CONVERGE)
            .await
    );
    let s = stranger(0x51, a_node).await;

    // The flood: idle streams, each held by a task that reports when the origin ends it.
    let (ended_tx, mut ended_rx) = mpsc::channel(FLOOD);
    let mut control = s.control();
    let opened = Instant::now();
    for _ in 0..FLOOD {
        let tx = ended_tx.clone();
        match control.open_stream(a_peer, sync::PROTOCOL).await {
            Ok(mut stream) => {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1];
                    let _ = stream.read(&mut buf).await;
                    let _ = tx.send(()).await;
                });
            }
            Err(_) => tx.send(()).await.unwrap(),
        }
    }
    // Past its per-peer limit the origin drops the stranger's streams at once, well before
    // the request deadline would end them.
    let per_peer = a_node.state().config.p2p.limits.sync_per_peer;
    let mut ended = 0;
    while ended < FLOOD - per_peer {
        tokio::time::timeout_at(opened + REQUEST_DEADLINE / 4, ended_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the origin kept {} of the stranger's streams",
                    FLOOD - ended
                )
            })
            .unwrap();
        ended += 1;
    }

    // While the stranger holds the rest, a package pushed to the origin reaches the replica.
    let bytes = package("after-flood", "1.0.0", "any", b"still syncing");
    a.push(&a.admin, "after-flood", &bytes)
        .await
        .expect(StatusCode::CREATED);
    let pushed = Instant::now();
    let mut log = b.node.state().store.watch_log();
    let replicated = async {
        while !has_version(&b.node, "after-flood", "1.0.0") {
            log.changed().await.unwrap();
        }
    };
    tokio::time::timeout(SYNC_BOUND, replicated)
        .await
        .unwrap_or_else(|_| panic!("the replica did not sync within {SYNC_BOUND:?} of the push"));
    let took = pushed.elapsed();
    while ended_rx.try_recv().is_ok() {
        ended += 1;
    }
    assert!(
        ended < FLOOD,
        "the stranger held no stream any more when the replica synced"
    );
    assert_eq!(
        info(a_node, &s.peer_id).strikes,
        0,
        "the stranger's streams had not yet reached their deadline"
    );

    // Then the held streams run out the request deadline: a strike each, and three block.
    until_peer(a_node, &s.peer_id, "the stranger blocked", |p| p.blocked).await;
    assert!(
        opened.elapsed() >= REQUEST_DEADLINE,
        "struck before the deadline"
    );
    let stranger = listed(&a, &s.peer_id).await;
    assert!(
        stranger.blocked && stranger.strikes >= 3,
        "/v1/peers shows {stranger:?}"
    );
    let honest = listed(&a, &b_peer).await;
    assert!(
        honest.strikes == 0 && !honest.blocked && honest.connected,
        "the honest replica was struck: {honest:?}"
    );
    eprintln!(
        "replica synced {took:?} after the push while the stranger held {} streams",
        FLOOD - ended
    );
}

#[tokio::test]
async fn malformed_and_oversized_requests_draw_strikes_until_blocked() {
    let a = origin().await;
    let a_node = &a.node;
    let a_peer = a_node.state().p2p.as_ref().unwrap().peer_id;
    let s = stranger(0x52, a_node).await;
    let strikes = || info(a_node, &s.peer_id).strikes;

    // A stream closed before its request, as a peer that gives up closes it: no strike.
    send_and_wait_for_end(&s, a_peer, sync::PROTOCOL, &[]).await;
    // A frame that is not a sync message.
    send_and_wait_for_end(&s, a_peer, sync::PROTOCOL, &[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    settled(a_node).await;
    assert_eq!(strikes(), 1, "only the malformed frame is a strike");

    // A length prefix past the request limit: refused before the body is read.
    let oversized = u32::try_from(MAX_REQUEST + 1).unwrap().to_be_bytes();
    send_and_wait_for_end(&s, a_peer, sync::PROTOCOL, &oversized).await;
    settled(a_node).await;
    assert_eq!(strikes(), 2, "the oversized frame is a strike");
    assert!(!info(a_node, &s.peer_id).blocked);

    // The blob protocol strikes the same way; the third strike blocks.
    send_and_wait_for_end(&s, a_peer, wire::PROTOCOL, &[0, 0, 0, 2, 0xff, 0xff]).await;
    until_peer(a_node, &s.peer_id, "the stranger blocked", |p| p.blocked).await;
    let stranger = listed(&a, &s.peer_id).await;
    assert_eq!(stranger.strikes, 3, "/v1/peers shows {stranger:?}");
    assert!(stranger.blocked && !stranger.connected);
}

/// Peers opening streams at the same moment: each is answered. The node once handed inbound
/// streams over a queue of one, and reset the rest of a burst; a requester took the reset as
/// a failure and, after three, dropped an honest peer from its fetch.
#[tokio::test]
async fn streams_opened_at_once_by_several_peers_are_all_answered() {
    const PEERS: u8 = 3;
    const EACH: usize = 6;
    let a = origin().await;
    let a_node = &a.node;
    let a_peer = a_node.state().p2p.as_ref().unwrap().peer_id;
    let mut strangers = Vec::new();
    for i in 0..PEERS {
        strangers.push(stranger(0x60 + i, a_node).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let target = wire::Target {
        data: dir.path().join("data"),
        outboard: Some(dir.path().join("obao")),
    };
    let limits = a_node.state().fetcher.limits().clone();
    let asks = strangers.iter().flat_map(|s| {
        (0..EACH).map(|i| {
            let (mut control, target, limits) = (s.control(), target.clone(), limits.clone());
            let want = wire::RangeWant {
                digest: niso_protocol::Digest::of(format!("nobody holds {i}").as_bytes()),
                size: 4096,
                chunks: (0, 4),
                last_resort: false,
            };
            async move {
                wire::fetch_range(
                    &mut control,
                    a_peer,
                    want,
                    &target,
                    &limits,
                    Default::default(),
                )
                .await
            }
        })
    });
    let answers = tokio::time::timeout(CONVERGE, futures::future::join_all(asks))
        .await
        .expect("the node answered every stream in time");
    let refused: Vec<String> = answers
        .iter()
        .filter(|r| !matches!(r, Err(wire::RangeError::Missing(_))))
        .map(|r| format!("{r:?}"))
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {} streams were not answered \"not here\": {refused:?}",
        refused.len(),
        answers.len()
    );
}

/// The same burst on the sync protocol: pulls that several peers send at once, each peer up to
/// its stream limit, all get their page.
#[tokio::test]
async fn pulls_sent_at_once_by_several_peers_are_all_answered() {
    const PEERS: u8 = 3;
    let a = origin().await;
    let a_node = &a.node;
    let a_peer = a_node.state().p2p.as_ref().unwrap().peer_id;
    let each = a_node.state().config.p2p.limits.sync_per_peer;
    let mut strangers = Vec::new();
    for i in 0..PEERS {
        strangers.push(stranger(0x70 + i, a_node).await);
    }
    let pulls = strangers.iter().flat_map(|s| {
        (0..each).map(|_| {
            let s = s.clone();
            async move { sync::pull(&s, a_peer, Reach::Connected, 0, Vec::new()).await }
        })
    });
    let answers = tokio::time::timeout(CONVERGE, futures::future::join_all(pulls))
        .await
        .expect("the node answered every pull in time");
    assert_eq!(answers.len(), PEERS as usize * each);
    let failed: Vec<String> = answers
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:?}")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} pulls failed: {failed:?}",
        failed.len(),
        answers.len()
    );
}
