//! A provider that goes silent mid-range: it takes a segment request, answers `Ok{size}`,
//! sends part of the range and then nothing, forever, holding the stream open. The fetch
//! must finish from the origin within a few seconds, and a record that needs no part of that
//! blob (another package pushed meanwhile) must be applied while the fetch is stuck.

use std::time::Duration;

use axum::http::StatusCode;
use bao_tree::{
    ChunkNum, ChunkRanges, io::outboard::PreOrderMemOutboard, io::sync::encode_ranges_validated,
};
use futures::{AsyncReadExt, AsyncWriteExt};
use niso_node::{
    blobs::{BlobLimits, wire},
    config::{BlobMode, ReplicateRule},
    p2p::{P2p, frames},
};
use niso_protocol::{
    Digest,
    federation::{BlobRequest, BlobResponse},
};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    federation::{address, has_version, mem_node, peer_id, sharing_origin, until},
    support::{bare_peer, package},
};

/// How soon after the provider went silent the blob must be complete: its idle deadline plus
/// the transfer from the origin, with room for a slow host, and far below the 30 s a frame
/// used to get.
const BOUND: Duration = Duration::from_secs(15);

fn noise(len: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut out = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// What the silent provider saw.
#[derive(Debug)]
enum Seen {
    /// It sent part of a range and fell silent.
    WentSilent,
    /// The requester gave the stream up.
    Released,
}

/// A bare libp2p peer that answers every blob request for `bytes` with `Ok`, about half of
/// the encoded range, and then silence, keeping the stream open until the requester drops it.
async fn silent_provider(bytes: Vec<u8>, seen: mpsc::Sender<Seen>) -> P2p {
    let (p2p, _, incoming) = bare_peer([77; 32]).await;
    let mut blobs = incoming.blobs;
    // The sync side is never answered: requests to it just wait (as on a stopped process).
    let sync = incoming.sync;
    tokio::spawn(async move {
        let _sync = sync;
        while let Some((_, mut stream)) = blobs.next().await {
            let bytes = bytes.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(req) = frames::read_frame::<BlobRequest>(&mut stream, 65536).await else {
                    return;
                };
                let ok = BlobResponse::Ok {
                    size: bytes.len() as u64,
                };
                frames::write_frame(&mut stream, &ok).await.unwrap();
                let ob = PreOrderMemOutboard::create(&bytes, wire::BLOCK);
                let (a, b) = req.chunk_ranges[0];
                let ranges = ChunkRanges::from(ChunkNum(a)..ChunkNum(b));
                let mut encoded = Vec::new();
                encode_ranges_validated(&bytes[..], &ob, &ranges, &mut encoded).unwrap();
                stream
                    .write_all(&encoded[..encoded.len() / 2])
                    .await
                    .unwrap();
                stream.flush().await.unwrap();
                let _ = seen.send(Seen::WentSilent).await;
                // Silence: never another byte, never a close; wait for the requester to go.
                let mut buf = [0u8; 1];
                let _ = stream.read(&mut buf).await;
                let _ = seen.send(Seen::Released).await;
            });
        }
    });
    p2p
}

#[tokio::test]
async fn a_provider_silent_mid_range_loses_it_and_other_records_go_on() {
    let big = package("big-pkg", "1.0.0", "any", &noise(4 * 1024 * 1024, 9));
    let a = sharing_origin().await;
    let a_addr = address(&a.node).await;
    let (seen_tx, mut seen) = mpsc::channel(64);
    let silent = silent_provider(big.clone(), seen_tx).await;
    let c = mem_node(|cfg| {
        cfg.p2p.bootstrap = vec![a_addr.clone()];
        cfg.replicate = vec![ReplicateRule {
            from: peer_id(&a.node),
            packages: vec!["*".into()],
            blobs: BlobMode::Eager,
        }];
    })
    .await;
    // Both providers are connected before the fetch starts: the silent one is a helper, so
    // it is asked first (the origin only for what helpers lack).
    let c_p2p = c.node.state().p2p.clone().unwrap();
    silent
        .dial(address(&c.node).await.parse().unwrap())
        .await
        .unwrap();
    assert!(c_p2p.wait_connected(&silent.peer_id, BOUND).await);
    let a_peer = a.node.state().p2p.as_ref().unwrap().peer_id;
    assert!(c_p2p.wait_connected(&a_peer, BOUND).await);

    a.push(&a.admin.clone(), "big-pkg", &big)
        .await
        .expect(StatusCode::CREATED);
    let silent_at = match tokio::time::timeout(BOUND, seen.recv()).await {
        Ok(Some(Seen::WentSilent)) => Instant::now(),
        other => panic!("the silent provider was never asked: {other:?}"),
    };

    // While the big blob waits on the silent provider, another package comes through.
    let small = package("small-pkg", "1.0.0", "any", b"small and unrelated");
    a.push(&a.admin.clone(), "small-pkg", &small)
        .await
        .expect(StatusCode::CREATED);
    until(&c.node, "the small package on c", || {
        has_version(&c.node, "small-pkg", "1.0.0")
    })
    .await;
    let state = c.node.state();
    assert!(
        !state.store.blobs().contains(&Digest::of(&big)),
        "the small package must not wait for the big blob, which is still in flight"
    );
    assert!(
        state.store.versions("big-pkg").unwrap().is_empty(),
        "eager: no version before its blob"
    );

    // The peers report shows the origin's log as not all applied: the big package's group
    // waits for its blob and holds the position back, though later records came through.
    // (The small package's group may still be finishing its bookkeeping: its end starts a
    // sync, and each sync page bumps the peers watch.)
    let origin = a_peer.to_string();
    let mut changes = c_p2p.watch_peers();
    let only_big_waits = async {
        loop {
            let report = origin_report(&c, &origin).await;
            if report["blobs_pending"] == 1 {
                return report;
            }
            if changes.changed().await.is_err() {
                return report;
            }
        }
    };
    let report = tokio::time::timeout(BOUND, only_big_waits)
        .await
        .expect("the small package's group never ended");
    assert_eq!(
        report["blobs_pending"], 1,
        "one package waits, however often its page was pulled: {report}"
    );
    assert!(report["records_behind"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        report["log_head"].as_u64().unwrap() >= report["records_behind"].as_u64().unwrap(),
        "{report}"
    );

    // The silent provider loses its segment, and the origin serves the rest.
    tokio::time::timeout(
        BOUND,
        until(&c.node, "the big package on c", || {
            has_version(&c.node, "big-pkg", "1.0.0")
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("the big package took longer than {BOUND:?} after a stall"));
    let took = silent_at.elapsed();
    // The silent provider's last byte may have been read a moment before it said so.
    assert!(
        took + Duration::from_millis(500) >= BlobLimits::default().idle,
        "finished in {took:?}: before the idle deadline, so the silent provider was not waited on at all?"
    );
    let released = async {
        loop {
            match seen.recv().await {
                Some(Seen::Released) => return true,
                Some(Seen::WentSilent) => continue,
                None => return false,
            }
        }
    };
    assert!(
        tokio::time::timeout(BOUND, released).await.unwrap_or(false),
        "the requester never gave up the silent stream"
    );
    // Once the group is in, the sync it starts brings the report to zero behind.
    let caught_up = async {
        loop {
            let report = origin_report(&c, &origin).await;
            if report["records_behind"] == 0 && report["blobs_pending"] == 0 {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    };
    assert!(
        tokio::time::timeout(BOUND, caught_up).await.is_ok(),
        "still behind: {}",
        origin_report(&c, &origin).await
    );
    let report = origin_report(&c, &origin).await;
    assert_eq!(report["records_behind"], 0, "{report}");
    let bytes = c
        .get(
            &format!("/v1/packages/big-pkg/blobs/{}", Digest::of(&big)),
            Some(&c.admin),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(bytes.body, big);
}

/// `GET /v1/peers` on `node`: the entry of `peer`.
async fn origin_report(node: &crate::support::TestNode, peer: &str) -> serde_json::Value {
    let peers = node
        .get("/v1/peers", Some(&node.admin))
        .await
        .expect(StatusCode::OK)
        .json();
    peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == peer)
        .cloned()
        .unwrap_or_else(|| panic!("{peer} not in {peers}"))
}
