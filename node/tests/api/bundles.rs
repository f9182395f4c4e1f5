//! Bundles that are whole or refused: export on a lazy replica fetches what it needs or fails
//! before sending a byte, and a bundle cut at an entry boundary is rejected on import.

use axum::{
    body::Body,
    http::{Method, StatusCode},
};
use niso_node::config::{BlobMode, ReplicateRule};
use niso_protocol::Digest;

use crate::{
    federation::lazy_pair,
    support::{TestNode, package},
};

async fn lazy_setup() -> (TestNode, TestNode, Vec<u8>) {
    let bytes = package("lazy-pkg", "1.0.0", "any", b"lazy bytes");
    let (a, b) = lazy_pair(&bytes).await;
    (a, b, bytes)
}

/// The entries of a tar, in order, with their contents.
fn entries(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut tar = tar::Archive::new(bundle);
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (path, data)
        })
        .collect()
}

fn retar(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, path, &data[..]).unwrap();
    }
    out.into_inner().unwrap()
}

async fn import(node: &TestNode, bundle: Vec<u8>) -> crate::support::Reply {
    node.call(
        Method::POST,
        "/v1/import",
        Some(&node.admin),
        Some(Body::from(bundle)),
        &[],
    )
    .await
}

#[tokio::test]
async fn export_on_a_lazy_replica_fetches_the_blobs_it_needs() {
    let (_a, b, bytes) = lazy_setup().await;
    let bundle = b
        .get("/v1/export", Some(&b.admin))
        .await
        .expect(StatusCode::OK)
        .body;
    let names: Vec<String> = entries(&bundle).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        names,
        [
            "niso-bundle.json".to_owned(),
            "records.bin".to_owned(),
            format!("blobs/{}", Digest::of(&bytes).hex()),
            "niso-bundle-end.json".to_owned(),
        ]
    );
    // A node that trusts everyone takes it in whole.
    let c = TestNode::with(|c| {
        c.replicate = vec![ReplicateRule {
            from: "*".into(),
            packages: vec!["*".into()],
            blobs: BlobMode::Eager,
        }];
    })
    .await;
    let report = import(&c, bundle).await.expect(StatusCode::OK).json();
    assert_eq!(report["versions"], 1, "{report}");
    let pulled = c
        .get(
            &format!("/v1/packages/lazy-pkg/blobs/{}", Digest::of(&bytes)),
            Some(&c.admin),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(pulled.body, bytes);
}

#[tokio::test]
async fn export_fails_loudly_when_a_blob_cannot_be_had() {
    let (a, b, bytes) = lazy_setup().await;
    // The only holder loses the bytes: nobody can provide them any more.
    std::fs::remove_file(a.node.state().store.blobs().path(&Digest::of(&bytes))).unwrap();
    let reply = b.get("/v1/export", Some(&b.admin)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.json());
    assert_eq!(reply.code(), "blob_unavailable");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("nothing was exported"), "{message}");
}

#[tokio::test]
async fn a_bundle_cut_at_an_entry_boundary_is_rejected() {
    let origin = TestNode::new().await;
    let k = origin.admin.clone();
    for v in ["1.0.0", "1.1.0"] {
        origin
            .push(&k, "app", &package("app", v, "any", v.as_bytes()))
            .await
            .expect(StatusCode::CREATED);
    }
    let bundle = origin
        .get("/v1/export", Some(&k))
        .await
        .expect(StatusCode::OK)
        .body;
    let whole = entries(&bundle);
    assert_eq!(whole.last().unwrap().0, "niso-bundle-end.json");
    let target = || {
        TestNode::with(|c| {
            c.replicate = vec![ReplicateRule {
                from: "*".into(),
                packages: vec!["*".into()],
                blobs: BlobMode::Eager,
            }];
        })
    };
    // Without its trailer, and without its last blob (trailer kept): both refused whole.
    let without_trailer = retar(&whole[..whole.len() - 1]);
    let mut without_blob = whole.clone();
    without_blob.remove(whole.len() - 2);
    for (what, cut) in [
        ("no trailer", without_trailer),
        ("a blob short", retar(&without_blob)),
    ] {
        let c = target().await;
        let reply = import(&c, cut).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            reply.json()
        );
        assert_eq!(reply.code(), "invalid_bundle", "{what}");
        assert!(
            c.node.state().store.versions("app").unwrap().is_empty(),
            "{what}"
        );
    }
    let c = target().await;
    let report = import(&c, retar(&whole))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(report["versions"], 2, "{report}");
}
