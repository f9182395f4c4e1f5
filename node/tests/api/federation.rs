//! Federation between in-process nodes on libp2p's memory transport.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use niso_node::{
    Node, NodeConfig,
    config::{BlobMode, ReplicateRule, ShareRule},
    p2p::TransportChoice,
};
use niso_protocol::Digest;
use serde_json::json;

use crate::support::{TestNode, package};

/// How long replication may take before a test fails.
pub const CONVERGE: Duration = Duration::from_secs(30);

pub async fn mem_node(tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
    TestNode::with_transport(
        |c| {
            c.p2p.listen = vec!["/memory/0".into()];
            c.p2p.mdns = false;
            c.p2p.sync_interval_secs = 1;
            tweak(c);
        },
        TransportChoice::Memory,
    )
    .await
}

pub async fn address(node: &Node) -> String {
    let p2p = node.state().p2p.as_ref().unwrap();
    assert!(p2p.wait_listening(Duration::from_secs(10)).await);
    p2p.listen_addrs().remove(0)
}

pub fn peer_id(node: &Node) -> String {
    node.state().peer_id.clone()
}

/// Waits (on the node's log, with a deadline) until `check` holds.
pub async fn until(node: &Node, what: &str, mut check: impl FnMut() -> bool) {
    let mut log = node.state().store.watch_log();
    // Eager replication applies a manifest only after its blob is stored, so every state
    // worth waiting for is announced by a log change.
    let wait = async {
        while !check() {
            if log.changed().await.is_err() {
                break;
            }
        }
    };
    if tokio::time::timeout(CONVERGE, wait).await.is_err() {
        panic!("timed out waiting for {what}");
    }
}

pub fn has_version(node: &Node, name: &str, version: &str) -> bool {
    node.state().store.versions(name).unwrap().iter().any(|r| {
        r.version.to_string() == version && node.state().store.blobs().contains(&r.digest())
    })
}

#[tokio::test]
async fn push_replicates_to_a_trusting_peer_and_private_stays_home() {
    let a = mem_node(|c| {
        c.share = vec![ShareRule {
            to: "*".into(),
            packages: vec!["public-*".into()],
        }];
    })
    .await;
    let a_addr = address(&a.node).await;
    let a_peer = peer_id(&a.node);
    let b = mem_node(|c| {
        c.p2p.bootstrap = vec![a_addr.clone()];
        c.replicate = vec![ReplicateRule {
            from: a_peer.clone(),
            packages: vec!["*".into()],
            blobs: BlobMode::Eager,
        }];
    })
    .await;
    let k = a.admin.clone();
    let public = package("public-api", "1.0.0", "any", b"shared bytes");
    a.push(&k, "public-api", &public)
        .await
        .expect(StatusCode::CREATED);
    a.push(
        &k,
        "private-api",
        &package("private-api", "1.0.0", "any", b"secret"),
    )
    .await
    .expect(StatusCode::CREATED);
    a.send_json(
        Method::PUT,
        "/v1/packages/public-api/tags/stable",
        Some(&k),
        json!({"version": "1.0.0"}),
    )
    .await
    .expect(StatusCode::OK);

    until(&b.node, "public-api on b", || {
        has_version(&b.node, "public-api", "1.0.0")
    })
    .await;
    until(&b.node, "the tag on b", || {
        b.node
            .state()
            .store
            .tags("public-api")
            .unwrap()
            .contains_key("stable")
    })
    .await;
    // The bytes b serves are the verified blob.
    let blob = b
        .get(
            &format!("/v1/packages/public-api/blobs/{}", Digest::of(&public)),
            Some(&b.admin),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(blob.body, public);
    // The private package never left a, not even its name.
    assert!(
        b.node
            .state()
            .store
            .versions("private-api")
            .unwrap()
            .is_empty()
    );
    let records = b.get("/v1/records?limit=1000", Some(&b.admin)).await.body;
    assert!(!String::from_utf8_lossy(&records).contains("private-api"));
}
