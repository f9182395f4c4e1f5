//! A hostile peer, in process: forged signatures, unknown origins, a conflicting manifest, a
//! tag rollback, wrong blob bytes, an oversized message and a flood. Each is refused, the peer
//! is penalised until blocked, and nothing unverified is stored or served. Gossip whose blobs
//! never come holds one peer's share of the node's room for it, and no more.

use axum::http::StatusCode;
use bao_tree::{
    ChunkNum, ChunkRanges, io::outboard::PreOrderMemOutboard, io::sync::encode_ranges_validated,
};
use futures::AsyncWriteExt;
use niso_node::{
    blobs::wire,
    config::{BlobMode, ReplicateRule},
    p2p::frames,
};
use niso_protocol::{
    Arch, Digest, PackageName,
    federation::{BlobRequest, BlobResponse, MAX_FRAME, SyncMessage, SyncPage},
    record::{ManifestBody, NodeSecret, Record, RecordBody, TagBody},
};

use crate::{
    federation::{CONVERGE, has_version, mem_node, until},
    support::{bare_peer, package},
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

/// Answers a blob request with the asked range of `bytes`, encoded against their honest tree;
/// with `corrupt`, part of the data is then flipped.
async fn answer(
    stream: &mut (impl futures::AsyncWrite + Unpin),
    req: &BlobRequest,
    bytes: &[u8],
    corrupt: bool,
) {
    let ok = BlobResponse::Ok {
        size: bytes.len() as u64,
    };
    let _ = frames::write_frame(stream, &ok).await;
    let ob = PreOrderMemOutboard::create(bytes, wire::BLOCK);
    let ranges =
        ChunkRanges::from(ChunkNum(req.chunk_ranges[0].0)..ChunkNum(req.chunk_ranges[0].1));
    let mut encoded = Vec::new();
    encode_ranges_validated(bytes, &ob, &ranges, &mut encoded).unwrap();
    if corrupt {
        let n = encoded.len();
        for b in &mut encoded[n / 2..n / 2 + 64] {
            *b ^= 0x55;
        }
    }
    let _ = stream.write_all(&encoded).await;
    let _ = stream.close().await;
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
    let (evil, evil_addr, incoming) = bare_peer([66; 32]).await;
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
                &good2
            } else {
                &bad2
            };
            answer(&mut stream, &req, bytes, *bytes != good2).await;
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

/// A peer that gossips manifests whose blobs never come gets its share of the room for
/// gossiped records being taken in (4, half the fetch turns), and no more: the rest are
/// dropped (sync rounds would pull them), where each used to hold a task waiting on its fetch.
#[tokio::test]
async fn gossip_whose_blobs_never_come_takes_one_share_of_the_room() {
    const GOSSIPED: u64 = 100;
    let origin = NodeSecret::from_bytes(&[8; 32]);
    let probe = package("probe-pkg", "1.0.0", "any", b"the probe's bytes");
    let first = Record::sign(&origin, 1, 1, manifest("probe-pkg", "1.0.0", &probe));

    let (evil, evil_addr, incoming) = bare_peer([67; 32]).await;
    // The probe comes by sync, blob and all, so the two sides are fully connected (gossip
    // subscriptions exchanged) before any gossip.
    let mut sync_in = incoming.sync;
    tokio::spawn(async move {
        let mut pulls = 0;
        while let Some((_, mut stream)) = sync_in.next().await {
            if frames::read_frame::<SyncMessage>(&mut stream, 65536)
                .await
                .is_err()
            {
                continue;
            }
            pulls += 1;
            let records = if pulls == 1 {
                vec![first.to_bytes()]
            } else {
                Vec::new()
            };
            let page = SyncPage {
                records,
                next: 1,
                more: false,
                share_fingerprint: 1,
                head: 1,
            };
            let _ = frames::write_frame(&mut stream, &page).await;
            let _ = stream.close().await;
        }
    });
    // Every other blob is asked for and never answered: its stream is held open, silent.
    let mut blob_in = incoming.blobs;
    let probe2 = probe.clone();
    tokio::spawn(async move {
        let mut silent = Vec::new();
        while let Some((_, mut stream)) = blob_in.next().await {
            let Ok(req) = frames::read_frame::<BlobRequest>(&mut stream, 65536).await else {
                continue;
            };
            if req.digest == *Digest::of(&probe2).as_bytes() {
                answer(&mut stream, &req, &probe2, false).await;
            } else {
                silent.push(stream);
            }
        }
    });

    let victim = mem_node(|c| {
        c.p2p.bootstrap = vec![evil_addr];
        c.replicate = vec![ReplicateRule {
            from: niso_node::identity::peer_id(&origin.origin()),
            packages: vec!["*".into()],
            blobs: BlobMode::Eager,
        }];
    })
    .await;
    let v = victim.node.state().clone();
    until(&victim.node, "the probe", || {
        has_version(&victim.node, "probe-pkg", "1.0.0")
    })
    .await;

    let mut counts = v.gossip_room.watch();
    for seq in 2..2 + GOSSIPED {
        let body = manifest(
            &format!("slow-{seq}"),
            "1.0.0",
            format!("never {seq}").as_bytes(),
        );
        evil.publish_raw(Record::sign(&origin, seq, 1, body).to_bytes())
            .await
            .unwrap();
    }
    let seen = tokio::time::timeout(
        CONVERGE,
        counts.wait_for(|c| c.entered + c.dropped == GOSSIPED),
    )
    .await
    .expect("every gossiped record was either taken in or dropped")
    .map(|c| *c)
    .unwrap();
    // Each fetch waits `BlobLimits::default().first_byte` (5 s) for a first byte, so the
    // first records are still being taken in when the fifth arrives.
    assert_eq!(
        seen.peak, 4,
        "one peer's share is 4 records at once: {seen:?}"
    );
    assert!(seen.dropped > 0, "{seen:?}");
    assert!(
        v.metrics
            .render()
            .contains(&format!("niso_gossip_dropped_total {}", seen.dropped)),
        "the drops are counted"
    );
    victim.get("/healthz", None).await.expect(StatusCode::OK);
}
