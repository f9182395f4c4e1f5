//! One intake, four paths: a hostile origin's records reach a victim node by libp2p sync (with
//! `from = "*"`), by an operator's HTTP mirror, and by bundle import, and get the same
//! verdicts each way; a local push of the same kind of forgery is refused for the same
//! reasons. The victim's own packages and tags stay exactly as they were.

use std::collections::BTreeMap;

use axum::{
    body::Body,
    http::{Method, StatusCode},
};
use niso_node::{
    NodeConfig,
    config::{BlobMode, ReplicateRule, ShareRule},
    identity,
    p2p::TransportChoice,
};
use niso_protocol::{
    Arch, Digest, PackageName, Version,
    record::{ManifestBody, Record, RecordBody},
};
use serde_json::json;

use crate::{
    federation::{CONVERGE, address, until},
    support::{TestNode, package},
};

/// What every path must conclude about the hostile origin's log, by refusal reason.
fn expected() -> BTreeMap<String, u64> {
    BTreeMap::from([
        // own-pkg 9.0.0, the `stable` tag, the tombstone for the victim's own-pkg 1.0.0.
        // (The origin's own manifest for own-pkg 1.0.0 is not offered at all once deleted.)
        ("not_owner".to_owned(), 3),
        // my_api next to the victim's my-api.
        ("name_taken".to_owned(), 1),
        // s-pkg 1.0.0 whose blob is the package decoy 1.0.0.
        ("bad_blob".to_owned(), 1),
    ])
}

const VICTIM_OWN: &[u8] = b"the victim's own build";

/// The hostile origin: every forgery here is a well-signed record of its own.
async fn hostile_origin(share_to: &str) -> TestNode {
    let s = TestNode::with_transport(
        |c| {
            c.p2p.listen = vec!["/memory/0".into()];
            c.p2p.mdns = false;
            c.p2p.sync_interval_secs = 1;
            c.share = vec![ShareRule {
                to: share_to.to_owned(),
                packages: vec!["*".into()],
            }];
        },
        TransportChoice::Memory,
    )
    .await;
    let k = s.admin.clone();
    for (name, version, payload) in [
        ("own-pkg", "1.0.0", &b"hostile bytes"[..]),
        ("own-pkg", "9.0.0", b"hostile upgrade"),
        ("my_api", "1.0.0", b"lookalike"),
    ] {
        s.push(&k, name, &package(name, version, "any", payload))
            .await
            .expect(StatusCode::CREATED);
    }
    s.send_json(
        Method::PUT,
        "/v1/packages/own-pkg/tags/stable",
        Some(&k),
        json!({ "version": "9.0.0" }),
    )
    .await
    .expect(StatusCode::OK);
    s.call(
        Method::DELETE,
        "/v1/packages/own-pkg/versions/1.0.0",
        Some(&k),
        None,
        &[],
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    let decoy = package("decoy", "1.0.0", "any", b"decoy");
    s.push(&k, "decoy", &decoy)
        .await
        .expect(StatusCode::CREATED);
    // A manifest for s-pkg whose bytes are the decoy package: the digest verifies, the
    // contents do not match.
    let held = s
        .get("/v1/records?limit=1000", Some(&k))
        .await
        .expect(StatusCode::OK)
        .json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    let secret = identity::load_or_create(&s.dir.path().join("data")).unwrap();
    let forged = Record::sign(
        &secret,
        held + 1,
        1,
        RecordBody::Manifest(ManifestBody {
            name: PackageName::new("s-pkg").unwrap(),
            version: Version::new(1, 0, 0),
            arch: Arch::any(),
            digest: Digest::of(&decoy),
            size: decoy.len() as u64,
            description: String::new(),
        }),
    );
    let applied = s.node.state().store.apply(forged).await.unwrap();
    assert_eq!(applied, niso_node::store::Applied::Stored);
    // Last, so a replica holding it has judged everything before it.
    s.push(&k, "zz-last", &package("zz-last", "1.0.0", "any", b"z"))
        .await
        .expect(StatusCode::CREATED);
    s
}

/// A node that already published `own-pkg 1.0.0` (tagged `stable`) and `my-api` itself.
async fn victim(
    dir: tempfile::TempDir,
    p2p: bool,
    tweak: impl FnOnce(&mut NodeConfig),
) -> TestNode {
    let v = TestNode::in_dir(
        dir,
        |c| {
            c.p2p.enabled = Some(p2p);
            c.p2p.listen = vec!["/memory/0".into()];
            c.p2p.mdns = false;
            c.p2p.sync_interval_secs = 1;
            tweak(c);
        },
        TransportChoice::Memory,
    )
    .await;
    let k = v.admin.clone();
    v.push(
        &k,
        "own-pkg",
        &package("own-pkg", "1.0.0", "any", VICTIM_OWN),
    )
    .await
    .expect(StatusCode::CREATED);
    v.push(&k, "my-api", &package("my-api", "1.0.0", "any", b"mine"))
        .await
        .expect(StatusCode::CREATED);
    v.send_json(
        Method::PUT,
        "/v1/packages/own-pkg/tags/stable",
        Some(&k),
        json!({ "version": "1.0.0" }),
    )
    .await
    .expect(StatusCode::OK);
    v
}

fn trust_everyone(c: &mut NodeConfig) {
    c.replicate = vec![ReplicateRule {
        from: "*".into(),
        packages: vec!["*".into()],
        blobs: BlobMode::Eager,
    }];
}

/// `niso_records_refused_total` by reason, from the node's metrics.
async fn refusals(v: &TestNode) -> BTreeMap<String, u64> {
    let text =
        String::from_utf8(v.get("/metrics", None).await.expect(StatusCode::OK).body).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("niso_records_refused_total{reason=\""))
        .filter_map(|l| {
            let (reason, rest) = l.split_once("\"}")?;
            Some((reason.to_owned(), rest.trim().parse().ok()?))
        })
        .collect()
}

/// Nothing the hostile origin sent changed what the victim's names resolve to.
async fn untouched(v: &TestNode) {
    let k = v.admin.clone();
    let own = v
        .get("/v1/packages/own-pkg/resolve?ref=stable", Some(&k))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(own["version"], "1.0.0");
    let mine = package("own-pkg", "1.0.0", "any", VICTIM_OWN);
    assert_eq!(own["digest"], Digest::of(&mine).to_string());
    let versions = v.node.state().store.versions("own-pkg").unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    for absent in ["my_api", "s-pkg"] {
        assert!(
            v.node.state().store.versions(absent).unwrap().is_empty(),
            "{absent}"
        );
    }
    assert_eq!(v.node.state().store.versions("decoy").unwrap().len(), 1);
}

#[tokio::test]
async fn forged_records_get_the_same_verdicts_on_every_path() {
    // libp2p sync, the victim trusting every origin.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let victim_peer = identity::peer_id(
        &identity::load_or_create(&dir.path().join("data"))
            .unwrap()
            .origin(),
    );
    // Shared with the victim alone: nothing is gossiped, so each record arrives once.
    let s = hostile_origin(&victim_peer).await;
    let s_addr = address(&s.node).await;
    // Connected only once the victim has published its own packages, so it saw them first.
    let v = victim(dir, true, trust_everyone).await;
    v.node
        .state()
        .p2p
        .as_ref()
        .unwrap()
        .dial(s_addr.parse().unwrap())
        .await
        .unwrap();
    until(&v.node, "the hostile origin's log on the victim", || {
        !v.node.state().store.versions("zz-last").unwrap().is_empty()
    })
    .await;
    // Packages with blobs to fetch are judged each on its own: wait until none waits.
    let mut deferred = v.node.state().sync_gate.watch_deferred();
    tokio::time::timeout(CONVERGE, deferred.wait_for(|n| *n == 0))
        .await
        .expect("records still waiting on blobs")
        .unwrap();
    assert_eq!(refusals(&v).await, expected(), "libp2p sync");
    untouched(&v).await;
    let peers = v
        .get("/v1/peers", Some(&v.admin))
        .await
        .expect(StatusCode::OK)
        .json();
    let refused: u64 = peers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["records_refused"].as_u64())
        .sum();
    assert_eq!(refused, 5, "{peers}");

    // An operator's HTTP mirror from the hostile node.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = s.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let v = victim(tempfile::tempdir().unwrap(), false, |_| {}).await;
    let report = v
        .send_json(
            Method::POST,
            "/v1/mirror",
            Some(&v.admin),
            json!({ "from": url, "key": s.admin }),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(refusals(&v).await, expected(), "HTTP mirror: {report}");
    assert_eq!(report["rejected"].as_array().unwrap().len(), 5, "{report}");
    untouched(&v).await;

    // Bundle import.
    let bundle = s
        .get("/v1/export", Some(&s.admin))
        .await
        .expect(StatusCode::OK)
        .body;
    let v = victim(tempfile::tempdir().unwrap(), false, trust_everyone).await;
    let report = v
        .call(
            Method::POST,
            "/v1/import",
            Some(&v.admin),
            Some(Body::from(bundle)),
            &[],
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(refusals(&v).await, expected(), "bundle import: {report}");
    assert_eq!(report["refused"].as_array().unwrap().len(), 5, "{report}");
    untouched(&v).await;

    // HTTP push on the victim: the same kinds of forgery, refused for the same reasons.
    let k = v.admin.clone();
    let lookalike = v
        .push(
            &k,
            "my_api",
            &package("my_api", "1.0.0", "any", b"lookalike"),
        )
        .await;
    assert_eq!(lookalike.code(), "name_taken");
    let mismatch = v
        .push(&k, "s-pkg", &package("decoy", "1.0.0", "any", b"decoy"))
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert_eq!(mismatch.code(), "name_mismatch");
    untouched(&v).await;
}

/// Pushing on a node to a package another origin owns there is refused, so the replica of a
/// package cannot fork it.
#[tokio::test]
async fn a_replica_cannot_publish_under_a_replicated_name() {
    let s = hostile_origin("*").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = s.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let v = TestNode::new().await;
    v.send_json(
        Method::POST,
        "/v1/mirror",
        Some(&v.admin),
        json!({ "from": url, "key": s.admin }),
    )
    .await
    .expect(StatusCode::OK);
    let k = v.admin.clone();
    let reply = v
        .push(&k, "decoy", &package("decoy", "2.0.0", "any", b"fork"))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.json());
    assert_eq!(reply.code(), "not_owner");
    let tag = v
        .send_json(
            Method::PUT,
            "/v1/packages/decoy/tags/stable",
            Some(&k),
            json!({ "version": "1.0.0" }),
        )
        .await;
    assert_eq!(tag.code(), "not_owner");
}

#[tokio::test]
async fn a_large_batch_has_every_signature_checked_and_refuses_exactly_the_forged_ones() {
    use niso_node::intake::{NoBlobs, Policy, admit};
    use niso_protocol::record::NodeSecret;

    let node = TestNode::new().await;
    let state = node.node.state();
    let secret = NodeSecret::from_bytes(&[42; 32]);
    // Past the size checked on one thread, so the batch is split across blocking threads;
    // the forged records sit in every share.
    let records: Vec<Record> = (1..=200u64)
        .map(|seq| {
            let mut r = Record::sign(
                &secret,
                seq,
                1,
                RecordBody::Manifest(ManifestBody {
                    name: PackageName::new(format!("batch-{seq}")).unwrap(),
                    version: Version::new(1, 0, 0),
                    arch: Arch::any(),
                    digest: Digest::of(&seq.to_be_bytes()),
                    size: 1,
                    description: String::new(),
                }),
            );
            if seq % 20 == 7 {
                r.signature[0] ^= 1;
            }
            r
        })
        .collect();
    let outcome = admit(state, Policy::Rules, records, &mut NoBlobs)
        .await
        .unwrap();
    // No replicate rule trusts this origin: every well-signed record is untrusted, and only
    // the forged ones are invalid.
    assert_eq!(outcome.invalid(), 10, "{:?}", outcome.refusal_messages());
    assert_eq!(outcome.seen, 200);
    assert!(
        outcome
            .refusal_messages()
            .iter()
            .all(|m| m.contains("signature")),
        "{:?}",
        outcome.refusal_messages()
    );
}

/// A source that stores the bytes itself and hands over the `niso.toml` its check read, as a
/// libp2p fetch does.
struct StoresChecked {
    bytes: Vec<u8>,
}

impl niso_node::intake::BlobSource for StoresChecked {
    async fn provide(
        &mut self,
        state: &std::sync::Arc<niso_node::NodeState>,
        m: &ManifestBody,
    ) -> Result<niso_node::intake::Provided, niso_node::intake::BlobError> {
        let blobs = state.store.blobs();
        let tmp = blobs.temp_path("test").unwrap();
        std::fs::write(&tmp, &self.bytes).unwrap();
        blobs.commit(&tmp, &m.digest).unwrap();
        let meta = niso_protocol::archive::read_meta(&self.bytes[..]).unwrap();
        Ok(niso_node::intake::Provided::Stored(Some(
            std::sync::Arc::new(meta),
        )))
    }
}

#[tokio::test]
async fn checked_bytes_of_another_package_are_refused_without_reading_them_again() {
    use niso_node::intake::{Policy, Reason, admit};
    use niso_protocol::record::NodeSecret;

    let node = TestNode::new().await;
    let state = node.node.state();
    let secret = NodeSecret::from_bytes(&[43; 32]);
    let decoy = package("decoy", "1.0.0", "any", b"decoy");
    let manifest = |seq: u64, name: &str| {
        Record::sign(
            &secret,
            seq,
            1,
            RecordBody::Manifest(ManifestBody {
                name: PackageName::new(name).unwrap(),
                version: Version::new(1, 0, 0),
                arch: Arch::any(),
                digest: Digest::of(&decoy),
                size: decoy.len() as u64,
                description: String::new(),
            }),
        )
    };
    // The digest verifies, but the bytes are `decoy`'s: the metadata the source read says so.
    let mut source = StoresChecked {
        bytes: decoy.clone(),
    };
    let outcome = admit(
        state,
        Policy::Operator,
        vec![manifest(1, "s-pkg")],
        &mut source,
    )
    .await
    .unwrap();
    assert_eq!(outcome.applied, 0, "{:?}", outcome.verdicts);
    assert_eq!(outcome.refused.len(), 1, "{:?}", outcome.verdicts);
    assert_eq!(outcome.refused[0].reason, Reason::BadBlob);
    assert!(
        outcome.refused[0].message.contains("the blob holds decoy"),
        "{}",
        outcome.refused[0].message
    );
    assert!(state.store.versions("s-pkg").unwrap().is_empty());
    // The same bytes under their own name are taken.
    let outcome = admit(
        state,
        Policy::Operator,
        vec![manifest(2, "decoy")],
        &mut source,
    )
    .await
    .unwrap();
    assert_eq!(outcome.applied, 1, "{:?}", outcome.verdicts);
    assert_eq!(state.store.versions("decoy").unwrap().len(), 1);
}
