//! Hostile archives and hostile requests: each gets a clear 4xx, nothing is stored, and the
//! node stays healthy.

use axum::{
    body::Body,
    http::{Method, StatusCode},
};
use niso_protocol::Digest;
use serde_json::json;

use crate::support::{TestNode, package};

/// A tar+zstd archive whose second entry has raw header fields, as an attacker would write it.
fn evil(path: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let meta = b"name = \"evil\"\nversion = \"1.0.0\"\narch = \"any\"\n";
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(meta.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "niso.toml", &meta[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(0o644);
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

async fn assert_nothing_stored(node: &TestNode) {
    let store = &node.node.state().store;
    assert_eq!(store.counts().unwrap(), (0, 0), "a version became visible");
    assert!(
        store.blobs().list().unwrap().is_empty(),
        "a blob was stored"
    );
    assert!(
        store.uploads().unwrap().is_empty(),
        "a failed upload was kept"
    );
    node.get("/healthz", None).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn hostile_archives_are_refused_whole() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    use tar::EntryType::*;
    let cases = [
        (
            "traversal",
            evil("../../etc/cron.d/x", Regular, None),
            "`..`",
        ),
        ("absolute", evil("/etc/passwd", Regular, None), "absolute"),
        ("device", evil("dev/sda", Block, None), "block device"),
        (
            "symlink escape",
            evil("lib", Symlink, Some("../../../")),
            "outside",
        ),
        (
            "hard link",
            evil("h", Link, Some("/etc/shadow")),
            "hard link",
        ),
        (
            "not zstd",
            b"PK\x03\x04 a zip file".to_vec(),
            "not a valid .niso",
        ),
    ];
    for (what, bytes, want) in cases {
        let r = node.push(&k, "evil", &bytes).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(r.code(), "invalid_archive", "{what}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(want), "{what}: `{msg}` lacks `{want}`");
    }
    let good = package("evil", "1.0.0", "any", &vec![1u8; 100_000]);
    let r = node.push(&k, "evil", &good[..good.len() / 2]).await;
    assert_eq!(
        r.expect(StatusCode::BAD_REQUEST).code(),
        "invalid_archive",
        "truncated archive"
    );
    let r = node.push(&k, "someone-else", &good).await;
    assert_eq!(r.expect(StatusCode::BAD_REQUEST).code(), "name_mismatch");
    assert_nothing_stored(&node).await;
}

#[tokio::test]
async fn bad_digests_and_oversized_uploads() {
    let node = TestNode::with(|c| {
        c.limits.max_package_bytes = 20_000;
        c.limits.max_json_bytes = 1024;
    })
    .await;
    let k = node.admin.clone();
    let bytes = package("p", "1.0.0", "any", b"payload");
    let r = node
        .push_claiming(&k, "p", &bytes, Digest::of(b"something else"))
        .await;
    assert_eq!(r.expect(StatusCode::BAD_REQUEST).code(), "digest_mismatch");
    let r = node
        .call(
            Method::PUT,
            "/v1/uploads/00000000000000000000000000000000?digest=blake3:zz",
            Some(&k),
            None,
            &[],
        )
        .await;
    assert_eq!(r.expect(StatusCode::BAD_REQUEST).code(), "invalid_digest");

    // Incompressible bytes, so the archive really is past the limit.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..30_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let big = package("p", "1.0.0", "any", &noise);
    assert!(big.len() > 20_000);
    let r = node.push(&k, "p", &big).await;
    assert_eq!(r.expect(StatusCode::PAYLOAD_TOO_LARGE).code(), "too_large");
    // A streamed body without Content-Length is cut off at the limit too.
    let id = node
        .call(Method::POST, "/v1/packages/p/uploads", Some(&k), None, &[])
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let r = node
        .call(
            Method::PATCH,
            &format!("/v1/uploads/{id}"),
            Some(&k),
            Some(Body::from_stream(futures::stream::iter(chunks))),
            &[("upload-offset", "0".into())],
        )
        .await;
    assert_eq!(r.expect(StatusCode::PAYLOAD_TOO_LARGE).code(), "too_large");

    let huge_json = json!({"name": "x".repeat(5000), "scopes": ["pull:*"]});
    let r = node
        .send_json(Method::POST, "/v1/keys", Some(&k), huge_json)
        .await;
    assert_eq!(r.expect(StatusCode::PAYLOAD_TOO_LARGE).code(), "too_large");
    assert_nothing_stored(&node).await;
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    node.push(&k, "p", &package("p", "1.0.0", "any", b"x"))
        .await
        .expect(StatusCode::CREATED);
    let raw = |method: Method, path: &'static str, body: &'static str| {
        let node = &node;
        let k = k.clone();
        async move {
            node.call(
                method,
                path,
                Some(&k),
                Some(Body::from(body)),
                &[("content-type", "application/json".into())],
            )
            .await
        }
    };
    let cases = [
        (
            raw(Method::PUT, "/v1/packages/p/tags/stable", "{not json").await,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            raw(
                Method::PUT,
                "/v1/packages/p/tags/stable",
                r#"{"version": 5}"#,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            raw(
                Method::PUT,
                "/v1/packages/p/tags/stable",
                r#"{"version": "one"}"#,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_version",
        ),
        (
            raw(
                Method::POST,
                "/v1/keys",
                r#"{"name": "x", "scopes": ["write:*"]}"#,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            raw(
                Method::POST,
                "/v1/keys",
                r#"{"name": "", "scopes": ["pull:*"]}"#,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_key_name",
        ),
        (
            raw(
                Method::POST,
                "/v1/keys",
                r#"{"name": "x", "scopes": ["pull:*"], "expires_at_ms": 5}"#,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_expiry",
        ),
        (
            raw(Method::POST, "/v1/gc", r#"{"keep_versions": 0}"#).await,
            StatusCode::BAD_REQUEST,
            "invalid_gc",
        ),
        (
            raw(Method::POST, "/v1/gc", r#"{"keep_versions": -1}"#).await,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            node.get("/v1/packages?limit=100000", Some(&k)).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            node.get("/v1/packages?limit=0", Some(&k)).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            node.get("/v1/packages?limit=99999999999999999999999999", Some(&k))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            node.get("/v1/packages?q=p&cursor=zzz", Some(&k)).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            node.get("/v1/records?after=-1", Some(&k)).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            node.get("/v1/records?limit=1001", Some(&k)).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            node.get("/v1/packages/..%2F..%2Fetc", Some(&k)).await,
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            node.get("/v1/packages/P", Some(&k)).await,
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            node.get("/v1/packages/p/blobs/blake3:..%2F..%2F", Some(&k))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_digest",
        ),
        (
            node.get("/v1/packages/p/versions/one/any", Some(&k)).await,
            StatusCode::BAD_REQUEST,
            "invalid_version",
        ),
        (
            node.get("/v1/packages/p/versions/1.0.0/..", Some(&k)).await,
            StatusCode::BAD_REQUEST,
            "invalid_arch",
        ),
        (
            node.get("/v1/uploads/..%2F..%2Fniso.redb", Some(&k)).await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            node.get("/v1/nope", Some(&k)).await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            node.call(Method::PATCH, "/v1/uploads/0", Some(&k), None, &[])
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            node.get("/v1/whoami", Some("not-a-key")).await,
            StatusCode::UNAUTHORIZED,
            "malformed_key",
        ),
    ];
    for (i, (reply, status, code)) in cases.into_iter().enumerate() {
        assert_eq!(
            (reply.status, reply.code()),
            (status, code.to_owned()),
            "case {i}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        // Every error, however it arose, is the JSON envelope.
        assert!(
            reply.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "case {i}"
        );
    }
    // A missing Upload-Offset is a clear 400.
    let id = node
        .call(Method::POST, "/v1/packages/p/uploads", Some(&k), None, &[])
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = node
        .call(
            Method::PATCH,
            &format!("/v1/uploads/{id}"),
            Some(&k),
            Some(Body::from("x")),
            &[],
        )
        .await;
    assert_eq!(r.expect(StatusCode::BAD_REQUEST).code(), "invalid_offset");
    // Still exactly one package, still healthy.
    assert_eq!(node.node.state().store.counts().unwrap(), (1, 1));
    node.get("/healthz", None).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn open_uploads_per_key_are_limited() {
    let node = TestNode::with(|c| c.limits.max_open_uploads_per_key = 2).await;
    let k = node.admin.clone();
    for _ in 0..2 {
        node.call(Method::POST, "/v1/packages/p/uploads", Some(&k), None, &[])
            .await
            .expect(StatusCode::CREATED);
    }
    let r = node
        .call(Method::POST, "/v1/packages/p/uploads", Some(&k), None, &[])
        .await;
    assert_eq!(
        r.expect(StatusCode::TOO_MANY_REQUESTS).code(),
        "too_many_uploads"
    );
}
