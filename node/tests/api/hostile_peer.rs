//! A hostile peer, in process: forged signatures, unknown origins, a conflicting manifest, a
//! tag rollback, wrong blob bytes, an oversized message and a flood. Each is refused, the peer
//! is penalised until blocked, and nothing unverified is stored or served.

use std::time::Duration;

use axum::http::StatusCode;
use bao_tree::{
    ChunkNum, ChunkRanges, io::outboard::PreOrderMemOutboard, io::sync::encode_ranges_validated,
};
use futures::AsyncWriteExt;
use niso_node::{
    blobs::wire,
    config::{BlobMode, P2pConfig, ReplicateRule},
    p2p::{P2p, TransportChoice, frames},
    trust::Trust,
};
use niso_protocol::{
    Arch, Digest, PackageName,
    federation::{BlobRequest, BlobResponse, MAX_FRAME, SyncMessage, SyncPage},
    record::{ManifestBody, NodeSecret, Record, RecordBody, TagBody},
};

use crate::{
    federation::{CONVERGE, mem_node, until},
    support::package,
};

fn manifest(name: &str, version: &str, bytes: &[u8]) -> RecordBody {
    RecordBody::Manifest(ManifestBody {
        name: PackageName::new(name).unwrap(),
        version: version.parse().unwrap(),
        arch: Arch::any(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        description: String::new(),
    })
}

fn tag(seq: u64, version: &str) -> RecordBody {
    RecordBody::Tag(TagBody {
        name: PackageName::new("good-pkg").unwrap(),
        tag: "stable".into(),
        version: Some(version.parse().unwrap()),
        tag_seq: seq,
    })
}

#[tokio::test]
async fn a_hostile_peer_is_refused_penalised_and_blocked() {
    let legit = NodeSecret::from_bytes(&[7; 32]);
    let stranger = NodeSecret::from_bytes(&[9; 32]);
    let legit_peer = niso_node::identity::peer_id(&legit.origin());
    let good = package("good-pkg", "1.0.0", "any", b"the real bytes");
    let other = package("good-pkg", "1.0.0", "any", b"other bytes, same version");
    let bad_blob = package("badblob-pkg", "1.0.0", "any", &vec![5u8; 40_000]);

    let forged = {
        let mut r = Record::sign(&legit, 2, 1, manifest("forged-pkg", "1.0.0", b"x"));
        r.signature[0] ^= 0xff;
        r
    };
    let page_one = vec![
        Record::sign(&legit, 1, 1, manifest("good-pkg", "1.0.0", &good)).to_bytes(),
        forged.to_bytes(),
        Record::sign(&stranger, 1, 1, manifest("untrusted-pkg", "1.0.0", b"y")).to_bytes(),
        Record::sign(&legit, 3, 1, manifest("good-pkg", "1.0.0", &other)).to_bytes(),
        Record::sign(&legit, 4, 1, tag(5, "1.0.0")).to_bytes(),
        Record::sign(&legit, 5, 1, tag(2, "1.0.0")).to_bytes(),
        Record::sign(&legit, 6, 1, manifest("badblob-pkg", "1.0.0", &bad_blob)).to_bytes(),
    ];

    // The hostile peer: a bare libp2p side with scripted answers.
    let config = P2pConfig {
        listen: vec!["/memory/0".into()],
        mdns: false,
        ..P2pConfig::default()
    };
    let (evil, _events, _tx, _task, incoming) =
        P2p::start([66; 32], &config, Trust::default(), TransportChoice::Memory)
            .await
            .unwrap();
    assert!(evil.wait_listening(Duration::from_secs(10)).await);
    let evil_addr = evil.listen_addrs().remove(0);
    let mut sync_in = incoming.sync;
    tokio::spawn(async move {
        let mut pulls = 0;
        while let Some((_, mut stream)) = sync_in.next().await {
            let Ok(SyncMessage::Pull { .. }) =
                frames::read_frame::<SyncMessage>(&mut stream, 65536).await
            else {
                continue;
            };
            pulls += 1;
            if pulls == 1 {
                let page = SyncPage {
                    records: page_one.clone(),
                    next: 7,
                    more: false,
                    share_fingerprint: 1,
                    head: 7,
                };
                let _ = frames::write_frame(&mut stream, &page).await;
            } else {
                // An oversized frame: the length alone is past the limit.
                let _ = stream
                    .write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
                    .await;
                let _ = stream.write_all(&[0; 1024]).await;
            }
            let _ = stream.close().await;
        }
    });
    let mut blob_in = incoming.blobs;
    let (good2, bad2) = (good.clone(), bad_blob.clone());
    tokio::spawn(async move {
        while let Some((_, mut stream)) = blob_in.next().await {
            let Ok(req) = frames::read_frame::<BlobRequest>(&mut stream, 65536).await else {
                continue;
            };
            let bytes = if req.digest == *Digest::of(&good2).as_bytes() {
                good2.clone()
            } else {
                bad2.clone()
            };
            let _ = frames::write_frame(
                &mut stream,
                &BlobResponse::Ok {
                    size: bytes.len() as u64,
                },
            )
            .await;
            // Encode against the honest tree, then corrupt the data of the bad blob.
            let ob = PreOrderMemOutboard::create(&bytes, wire::BLOCK);
            let ranges =
                ChunkRanges::from(ChunkNum(req.chunk_ranges[0].0)..ChunkNum(req.chunk_ranges[0].1));
            let mut encoded = Vec::new();
            encode_ranges_validated(&bytes[..], &ob, &ranges, &mut encoded).unwrap();
            if bytes != good2 {
                let n = encoded.len();
                for b in &mut encoded[n / 2..n / 2 + 64] {
                    *b ^= 0x55;
                }
            }
            let _ = stream.write_all(&encoded).await;
            let _ = stream.close().await;
        }
    });

    let victim = mem_node(|c| {
        c.p2p.bootstrap = vec![evil_addr.clone()];
        c.replicate = vec![ReplicateRule {
            from: legit_peer.clone(),
            packages: vec!["*".into()],
            blobs: BlobMode::Eager,
        }];
    })
    .await;
    let v = victim.node.state().clone();

    until(&victim.node, "the honest record and tag", || {
        v.store.versions("good-pkg").unwrap().len() == 1
            && v.store.tags("good-pkg").unwrap().contains_key("stable")
    })
    .await;
    // A flood of garbage gossip and pokes: each invalid message is a strike.
    for i in 0..50u32 {
        let _ = evil.publish_raw(format!("garbage {i}").into_bytes()).await;
    }
    let evil_id = evil.peer_id.to_string();
    let mut changes = v.p2p.as_ref().unwrap().watch_peers();
    let blocked = async {
        loop {
            if v.p2p
                .as_ref()
                .unwrap()
                .peers()
                .iter()
                .any(|p| p.peer_id == evil_id && p.blocked)
            {
                return;
            }
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(CONVERGE, blocked)
        .await
        .expect("the hostile peer was never blocked");

    // Only the honest, verified state is there.
    let rows = v.store.versions("good-pkg").unwrap();
    assert_eq!(
        rows[0].digest(),
        Digest::of(&good),
        "the conflicting manifest did not replace the first"
    );
    let stable = v.store.tag_entry("good-pkg", "stable").unwrap().unwrap();
    assert_eq!(stable.tag_seq, 5, "the tag was not rolled back");
    for gone in ["forged-pkg", "untrusted-pkg", "badblob-pkg"] {
        assert!(
            v.store.versions(gone).unwrap().is_empty(),
            "{gone} was accepted"
        );
    }
    assert!(!v.store.has_record(&stranger.origin(), 1).unwrap());
    let blobs: Vec<Digest> = v
        .store
        .blobs()
        .list()
        .unwrap()
        .into_iter()
        .map(|b| b.digest)
        .collect();
    assert_eq!(
        blobs,
        vec![Digest::of(&good)],
        "nothing unverified was stored"
    );
    let body = victim
        .get(
            &format!("/v1/packages/good-pkg/blobs/{}", Digest::of(&good)),
            Some(&victim.admin),
        )
        .await;
    assert_eq!(body.expect(StatusCode::OK).body, good);
    assert!(v.metrics.render().contains("niso_records_rejected_total"));
    victim.get("/healthz", None).await.expect(StatusCode::OK);
}
