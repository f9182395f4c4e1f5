//! What a name resolves to changes only the way its owner meant: tag names that would shadow
//! versions, republishing after GC or through build metadata, names that differ only in
//! separators, what a narrow key learns from errors, cache headers, and GC racing pushes.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::http::{Method, StatusCode};
use niso_protocol::Digest;
use serde_json::json;

use crate::support::{TestNode, package};

async fn set_tag(
    node: &TestNode,
    key: &str,
    name: &str,
    tag: &str,
    version: &str,
) -> crate::support::Reply {
    node.send_json(
        Method::PUT,
        &format!("/v1/packages/{name}/tags/{tag}"),
        Some(key),
        json!({ "version": version }),
    )
    .await
}

async fn resolve(node: &TestNode, name: &str, reference: &str) -> serde_json::Value {
    node.get(
        &format!("/v1/packages/{name}/resolve?ref={reference}"),
        Some(&node.admin),
    )
    .await
    .expect(StatusCode::OK)
    .json()
}

#[tokio::test]
async fn tags_cannot_shadow_versions_or_prefixes() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    for v in ["1.0.0", "1.0.1-evil", "1.2.0"] {
        node.push(&admin, "my-api", &package("my-api", v, "any", v.as_bytes()))
            .await
            .expect(StatusCode::CREATED);
    }
    for tag in ["1.0.0", "1.0.1", "1", "1.2", "2.0.0-rc1", "01"] {
        let reply = set_tag(&node, &admin, "my-api", tag, "1.0.1-evil").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "tag {tag}");
        assert_eq!(reply.code(), "invalid_tag");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("shadow"), "{message}");
    }
    let latest = set_tag(&node, &admin, "my-api", "latest", "1.0.0").await;
    assert_eq!(latest.status, StatusCode::BAD_REQUEST);
    set_tag(&node, &admin, "my-api", "stable", "1.0.1-evil")
        .await
        .expect(StatusCode::OK);
    // Exact versions and prefixes resolve to themselves, whatever tags exist.
    assert_eq!(resolve(&node, "my-api", "1.0.0").await["version"], "1.0.0");
    assert_eq!(resolve(&node, "my-api", "1.0.0").await["matched"], "exact");
    assert_eq!(resolve(&node, "my-api", "1").await["version"], "1.2.0");
    assert_eq!(
        resolve(&node, "my-api", "stable").await["version"],
        "1.0.1-evil"
    );
}

/// A `.niso` written by hand, so its `niso.toml` can say what `Packer` would refuse.
fn raw_package(meta: &str, payload: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in [("niso.toml", meta.as_bytes()), ("payload", payload)] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
    }
    zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap()
}

#[tokio::test]
async fn build_metadata_is_refused() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    node.push(&admin, "app", &package("app", "1.0.0", "any", b"one"))
        .await
        .expect(StatusCode::CREATED);
    let rebuilt = raw_package(
        "name = \"app\"\nversion = \"1.0.0+rebuild\"\narch = \"any\"\n",
        b"evil",
    );
    let reply = node.push(&admin, "app", &rebuilt).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("build metadata"), "{message}");
    let versions = node
        .get("/v1/packages/app", Some(&admin))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        1,
        "{versions}"
    );
    assert_eq!(resolve(&node, "app", "latest").await["version"], "1.0.0");
}

#[tokio::test]
async fn gc_remembers_the_bytes_of_what_it_removed() {
    let node = TestNode::with(|c| c.gc.grace_period_secs = 0).await;
    let admin = node.admin.clone();
    let original = package("app", "1.0.0", "any", b"original");
    node.push(&admin, "app", &original)
        .await
        .expect(StatusCode::CREATED);
    for v in ["1.1.0", "1.2.0"] {
        node.push(&admin, "app", &package("app", v, "any", v.as_bytes()))
            .await
            .expect(StatusCode::CREATED);
    }
    let report = node
        .send_json(
            Method::POST,
            "/v1/gc",
            Some(&admin),
            json!({ "keep_versions": 1 }),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    let removed: Vec<&str> = report["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert!(removed.contains(&"1.0.0"), "{report}");
    // Other bytes under the removed version: refused for good.
    let other = node
        .push(&admin, "app", &package("app", "1.0.0", "any", b"evil"))
        .await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.json());
    assert_eq!(other.code(), "version_exists");
    // The same bytes may come back.
    node.push(&admin, "app", &original)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(
        resolve(&node, "app", "1.0.0").await["digest"],
        Digest::of(&original).to_string()
    );
}

#[tokio::test]
async fn names_that_differ_only_in_separators_are_one_name() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    node.push(&admin, "my-api", &package("my-api", "1.0.0", "any", b"a"))
        .await
        .expect(StatusCode::CREATED);
    for variant in ["my_api", "my.api", "my--api", "my-_api"] {
        let reply = node
            .push(&admin, variant, &package(variant, "2.0.0", "any", b"b"))
            .await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{variant}");
        assert_eq!(reply.code(), "name_taken", "{variant}");
        node.get(&format!("/v1/packages/{variant}"), Some(&admin))
            .await
            .expect(StatusCode::NOT_FOUND);
    }
    // The holder's own spelling keeps working.
    node.push(&admin, "my-api", &package("my-api", "1.1.0", "any", b"c"))
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn errors_reveal_only_what_the_key_may_see() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    let secret = package("secret-app", "1.0.0", "any", b"secret bytes");
    node.push(&admin, "secret-app", &secret)
        .await
        .expect(StatusCode::CREATED);
    node.push(
        &admin,
        "secret-app",
        &package("secret-app", "1.3.7", "any", b"x"),
    )
    .await
    .expect(StatusCode::CREATED);
    let pusher = node.key(&["push:secret-*"]).await;
    let conflict = node
        .push(
            &pusher,
            "secret-app",
            &package("secret-app", "1.0.0", "any", b"other"),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    let text = String::from_utf8_lossy(&conflict.body).into_owned();
    assert!(!text.contains(&Digest::of(&secret).to_string()), "{text}");
    let tag = set_tag(&node, &pusher, "secret-app", "stable", "9.9.9").await;
    assert_eq!(tag.status, StatusCode::NOT_FOUND);
    let text = String::from_utf8_lossy(&tag.body).into_owned();
    assert!(!text.contains("1.3.7") && !text.contains("1.0.0"), "{text}");
    // A key that may pull sees the digest it conflicts with.
    let full = node
        .push(
            &admin,
            "secret-app",
            &package("secret-app", "1.0.0", "any", b"other"),
        )
        .await;
    let text = String::from_utf8_lossy(&full.body).into_owned();
    assert!(text.contains(&Digest::of(&secret).to_string()), "{text}");
}

#[tokio::test]
async fn blobs_fetched_with_a_key_are_not_publicly_cacheable() {
    let node = TestNode::with(|c| c.anonymous_pull = true).await;
    let admin = node.admin.clone();
    let bytes = package("pub", "1.0.0", "any", b"p");
    node.push(&admin, "pub", &bytes)
        .await
        .expect(StatusCode::CREATED);
    let path = format!("/v1/packages/pub/blobs/{}", Digest::of(&bytes));
    let keyed = node.get(&path, Some(&admin)).await.expect(StatusCode::OK);
    let cache = keyed.headers["cache-control"].to_str().unwrap();
    assert!(cache.starts_with("private"), "{cache}");
    let anonymous = node.get(&path, None).await.expect(StatusCode::OK);
    let cache = anonymous.headers["cache-control"].to_str().unwrap();
    assert!(cache.starts_with("public"), "{cache}");
}

/// Publishing while GC sweeps back to back with no grace period: every version that was
/// acknowledged with 201 must still download, byte for byte. Bounded in count and time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_pushes_never_loses_a_published_blob() {
    let node = Arc::new(TestNode::with(|c| c.gc.grace_period_secs = 0).await);
    let admin = node.admin.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (node, admin, stop) = (node.clone(), admin.clone(), stop.clone());
        tokio::spawn(async move {
            let mut runs = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                node.send_json(
                    Method::POST,
                    "/v1/gc",
                    Some(&admin),
                    json!({ "keep_versions": 100_000 }),
                )
                .await
                .expect(StatusCode::OK);
                runs += 1;
            }
            runs
        })
    };
    let mut pushers = Vec::new();
    for worker in 0..4u32 {
        let (node, admin) = (node.clone(), admin.clone());
        pushers.push(tokio::spawn(async move {
            let mut published = BTreeMap::new();
            for i in 0..60u32 {
                let version = format!("{worker}.{i}.0");
                let bytes = package("race", &version, "any", version.as_bytes());
                let reply = node.push(&admin, "race", &bytes).await;
                if reply.status == StatusCode::CREATED {
                    published.insert(version, bytes);
                }
            }
            published
        }));
    }
    let mut published = BTreeMap::new();
    for p in pushers {
        published.extend(
            tokio::time::timeout(Duration::from_secs(120), p)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = gc.await.unwrap();
    assert!(runs > 0);
    assert_eq!(
        published.len(),
        240,
        "every push should have been acknowledged"
    );
    for (version, bytes) in &published {
        let path = format!("/v1/packages/race/blobs/{}", Digest::of(bytes));
        let got = node.get(&path, Some(&admin)).await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "{version} lost its blob after {runs} GC runs"
        );
        assert_eq!(&got.body, bytes, "{version}");
    }
}
