//! Upload slots and leases: abandoned uploads expire on their own, the per-key limit holds
//! under concurrent opens, published bytes need no slot, keys see and cancel only their own
//! uploads, and a silent `PATCH` sender loses its lease.

use std::time::{Duration, Instant};

use axum::{
    body::Body,
    http::{Method, StatusCode},
};
use niso_protocol::Digest;
use serde_json::Value;

use crate::support::{Reply, TestNode, package};

/// Opens an upload for `name` and returns its id.
async fn open(node: &TestNode, key: &str, name: &str) -> String {
    node.call(
        Method::POST,
        &format!("/v1/packages/{name}/uploads"),
        Some(key),
        None,
        &[],
    )
    .await
    .expect(StatusCode::CREATED)
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn open_reply(node: &TestNode, key: &str, name: &str) -> Reply {
    node.call(
        Method::POST,
        &format!("/v1/packages/{name}/uploads"),
        Some(key),
        None,
        &[],
    )
    .await
}

/// The ids `GET /v1/uploads` lists for `key`, oldest first.
async fn listed(node: &TestNode, key: &str) -> Vec<Value> {
    node.get("/v1/uploads", Some(key))
        .await
        .expect(StatusCode::OK)
        .json()["uploads"]
        .as_array()
        .unwrap()
        .clone()
}

fn ids(uploads: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = uploads
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn abandoned_uploads_expire_in_the_background_and_free_the_key() {
    let node = TestNode::with(|c| {
        c.limits.max_open_uploads_per_key = 3;
        c.limits.upload_idle_timeout_secs = 1;
    })
    .await;
    let k = node.admin.clone();
    // Three pushes killed mid-way: one sent some bytes, two never got that far.
    let first = open(&node, &k, "app").await;
    node.patch_upload(&k, &first, vec![7u8; 1000], "0".into())
        .await
        .expect(StatusCode::OK);
    open(&node, &k, "app").await;
    open(&node, &k, "app").await;
    assert_eq!(
        open_reply(&node, &k, "app")
            .await
            .expect(StatusCode::TOO_MANY_REQUESTS)
            .code(),
        "too_many_uploads"
    );
    assert_eq!(listed(&node, &k).await.len(), 3);

    // No GC run, no request: the node's own sweep removes them once idle.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !listed(&node, &k).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "abandoned uploads were never swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::fs::read_dir(node.dir.path().join("data/uploads"))
            .unwrap()
            .next()
            .is_none(),
        "their partial files went too"
    );
    let bytes = package("app", "1.0.0", "any", b"after the lock-out");
    node.push(&k, "app", &bytes)
        .await
        .expect(StatusCode::CREATED);
    let metrics = String::from_utf8(node.get("/metrics", None).await.body).unwrap();
    assert!(
        metrics.contains("niso_uploads_expired_total 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_per_key_limit_holds_under_concurrent_opens() {
    const LIMIT: usize = 4;
    let node = TestNode::with(|c| c.limits.max_open_uploads_per_key = LIMIT).await;
    let k = node.admin.clone();
    let other = node.key(&["push:*"]).await;
    let attempts = (0..LIMIT * 4).map(|_| {
        let node = &node;
        let k = k.clone();
        async move { open_reply(node, &k, "app").await.status }
    });
    let statuses = futures::future::join_all(attempts).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((created, refused), (LIMIT, LIMIT * 3), "{statuses:?}");
    assert_eq!(listed(&node, &k).await.len(), LIMIT);
    // The limit is per key: another key still opens its own.
    open(&node, &other, "app").await;
}

#[tokio::test]
async fn a_push_of_published_bytes_needs_no_upload_slot() {
    let node = TestNode::with(|c| c.limits.max_open_uploads_per_key = 1).await;
    let k = node.key(&["push:app"]).await;
    let bytes = package("app", "1.0.0", "any", b"published once");
    node.push(&k, "app", &bytes)
        .await
        .expect(StatusCode::CREATED);
    // The one slot is taken by a push that died.
    open(&node, &k, "app").await;
    assert_eq!(
        open_reply(&node, &k, "app").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let digest = Digest::of(&bytes);
    let same = node
        .call(
            Method::POST,
            &format!("/v1/packages/app/uploads?digest={digest}"),
            Some(&k),
            None,
            &[],
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(same["version"], "1.0.0");
    assert_eq!(same["arch"], "any");
    assert_eq!(same["digest"], digest.to_string());
    assert_eq!(same["created"], false);
    assert_eq!(listed(&node, &k).await.len(), 1, "no upload was opened");

    // Bytes not published here still need a slot.
    let unknown = Digest::of(b"something else");
    assert_eq!(
        node.call(
            Method::POST,
            &format!("/v1/packages/app/uploads?digest={unknown}"),
            Some(&k),
            None,
            &[],
        )
        .await
        .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let bad = node
        .call(
            Method::POST,
            "/v1/packages/app/uploads?digest=nonsense",
            Some(&k),
            None,
            &[],
        )
        .await;
    assert_eq!(bad.expect(StatusCode::BAD_REQUEST).code(), "invalid_digest");
}

#[tokio::test]
async fn keys_see_and_cancel_only_their_own_uploads() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    let alice = node.key(&["push:*"]).await;
    let bob = node.key(&["push:*", "pull:*"]).await;
    let a = open(&node, &alice, "app").await;
    let b1 = open(&node, &bob, "app").await;
    let b2 = open(&node, &bob, "lib").await;
    node.patch_upload(&bob, &b1, vec![1u8; 1234], "0".into())
        .await
        .expect(StatusCode::OK);

    assert_eq!(ids(&listed(&node, &alice).await), vec![a.clone()]);
    let mut bobs = vec![b1.clone(), b2.clone()];
    bobs.sort();
    assert_eq!(ids(&listed(&node, &bob).await), bobs);
    let all = listed(&node, &admin).await;
    assert_eq!(all.len(), 3);
    let b1_row = all.iter().find(|u| u["id"] == b1.as_str()).unwrap();
    assert_eq!(b1_row["offset"], 1234);
    assert_eq!(b1_row["package"], "app");
    assert!(b1_row["key_id"].as_str().unwrap().starts_with("key_"));
    node.get("/v1/uploads", None)
        .await
        .expect(StatusCode::UNAUTHORIZED);

    // Another key's upload does not exist for alice, whatever she tries.
    for method in [Method::DELETE, Method::GET] {
        node.call(
            method,
            &format!("/v1/uploads/{b1}"),
            Some(&alice),
            None,
            &[],
        )
        .await
        .expect(StatusCode::NOT_FOUND);
    }
    node.patch_upload(&alice, &b1, vec![2u8; 10], "1234".into())
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_eq!(listed(&node, &bob).await.len(), 2, "bob's uploads survive");

    node.call(
        Method::DELETE,
        &format!("/v1/uploads/{a}"),
        Some(&alice),
        None,
        &[],
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    assert!(listed(&node, &alice).await.is_empty());
    // An admin key cancels anyone's.
    node.call(
        Method::DELETE,
        &format!("/v1/uploads/{b2}"),
        Some(&admin),
        None,
        &[],
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    assert_eq!(ids(&listed(&node, &bob).await), vec![b1]);
}

#[tokio::test]
async fn a_silent_patch_sender_loses_its_lease_and_keeps_its_bytes() {
    let node = TestNode::with(|c| c.http.body_idle_timeout_secs = 1).await;
    let k = node.admin.clone();
    let bytes = package(
        "app",
        "1.0.0",
        "any",
        &(0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    );
    let id = open(&node, &k, "app").await;
    let sent = bytes.len() / 2;
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    futures::SinkExt::send(&mut tx, Ok(bytes[..sent].to_vec()))
        .await
        .unwrap();
    // The sender stays open and says nothing more: a client that hung, not one that left.
    let stalled = tokio::time::timeout(
        Duration::from_secs(20),
        node.call(
            Method::PATCH,
            &format!("/v1/uploads/{id}"),
            Some(&k),
            Some(Body::from_stream(rx)),
            &[
                ("upload-offset", "0".into()),
                ("content-length", bytes.len().to_string()),
            ],
        ),
    )
    .await
    .expect("the stalled PATCH never ended");
    assert_eq!(
        stalled.expect(StatusCode::REQUEST_TIMEOUT).code(),
        "upload_stalled"
    );
    // The lease is gone and the bytes are there: a resumed PATCH is accepted at once.
    let status = node
        .get(&format!("/v1/uploads/{id}"), Some(&k))
        .await
        .expect(StatusCode::OK);
    assert_eq!(status.json()["offset"], sent);
    node.patch_upload(&k, &id, bytes[sent..].to_vec(), sent.to_string())
        .await
        .expect(StatusCode::OK);
    node.finish_upload(&k, &id, Digest::of(&bytes))
        .await
        .expect(StatusCode::CREATED);
    drop(tx);
}

/// A request racing the one that cancels (or ends) an upload finds it whole or not at all:
/// never a vanished file, which used to answer 500 when the canceller let go of the upload
/// before deleting it. Found by schemathesis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_racing_a_cancel_get_404_not_500() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    let send = |method: Method, id: &str, offset: Option<u64>| {
        let router = node.router.clone();
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(format!("/v1/uploads/{id}"))
            .header("authorization", format!("Bearer {k}"));
        if let Some(offset) = offset {
            req = req.header("upload-offset", offset.to_string());
        }
        let req = req.body(Body::from(&b"more"[..])).unwrap();
        tokio::spawn(async move {
            use tower::ServiceExt;
            router.oneshot(req).await.unwrap().status()
        })
    };
    let mut raced = 0;
    for _ in 0..200 {
        let id = open(&node, &k, "app").await;
        node.patch_upload(&k, &id, b"first".to_vec(), "0".into())
            .await
            .expect(StatusCode::OK);
        let cancel = send(Method::DELETE, &id, None);
        let append = send(Method::PATCH, &id, Some(5));
        let status = send(Method::GET, &id, None);
        let statuses = [
            cancel.await.unwrap(),
            append.await.unwrap(),
            status.await.unwrap(),
        ];
        assert!(
            statuses.iter().all(|s| !s.is_server_error()),
            "{statuses:?}"
        );
        // The append met the cancel: it found the upload busy or gone.
        raced += usize::from(statuses[1] != StatusCode::OK);
        if statuses[0] != StatusCode::NO_CONTENT {
            // The append or the status check held the upload: cancel once they are done.
            node.call(
                Method::DELETE,
                &format!("/v1/uploads/{id}"),
                Some(&k),
                None,
                &[],
            )
            .await
            .expect(StatusCode::NO_CONTENT);
        }
    }
    assert!(raced > 0, "no append ever met the cancel");
}
