//! Push, pull, tags, deletion, GC, keys and the record log, end to end through the router.

use axum::{
    body::Body,
    http::{Method, StatusCode},
};
use niso_protocol::{Digest, record::Record};
use serde_json::json;

use crate::support::{TestNode, package};

#[tokio::test]
async fn versions_are_immutable_and_pushes_idempotent() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    let v1 = package("my-api", "1.0.0", "x86_64", b"first");
    let r = node
        .push(&k, "my-api", &v1)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.json()["created"], true);
    assert_eq!(r.json()["digest"], Digest::of(&v1).to_string());
    let r = node.push(&k, "my-api", &v1).await.expect(StatusCode::OK);
    assert_eq!(r.json()["created"], false);
    let other = package("my-api", "1.0.0", "x86_64", b"different");
    let r = node
        .push(&k, "my-api", &other)
        .await
        .expect(StatusCode::CONFLICT);
    assert_eq!(r.code(), "version_exists");
    // The original bytes are still what is served.
    let blob = node
        .get(
            &format!("/v1/packages/my-api/blobs/{}", Digest::of(&v1)),
            Some(&k),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(blob.body, v1);
    let missing = node
        .get(
            &format!("/v1/packages/my-api/blobs/{}", Digest::of(&other)),
            Some(&k),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn references_resolve_by_tag_version_prefix_and_latest() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    for (v, arch) in [
        ("1.0.0", "x86_64"),
        ("1.1.0-rc1", "x86_64"),
        ("1.1.0", "x86_64"),
        ("20.1.0", "any"),
        ("20.3.1", "aarch64"),
    ] {
        node.push(&k, "nodejs", &package("nodejs", v, arch, v.as_bytes()))
            .await
            .expect(StatusCode::CREATED);
    }
    node.send_json(
        Method::PUT,
        "/v1/packages/nodejs/tags/beta",
        Some(&k),
        json!({"version": "1.1.0-rc1"}),
    )
    .await
    .expect(StatusCode::OK);
    let resolve = |q: &'static str| {
        let node = &node;
        let k = k.clone();
        async move {
            let r = node
                .get(&format!("/v1/packages/nodejs/resolve?{q}"), Some(&k))
                .await;
            (r.status, r.json())
        }
    };
    // x86_64 sees 20.1.0 (any) but not 20.3.1 (aarch64).
    let (s, j) = resolve("arch=x86_64").await;
    assert_eq!(
        (
            s,
            j["version"].as_str(),
            j["arch"].as_str(),
            j["matched"].as_str()
        ),
        (StatusCode::OK, Some("20.1.0"), Some("any"), Some("latest"))
    );
    let (_, j) = resolve("arch=aarch64&ref=20").await;
    assert_eq!(
        (j["version"].as_str(), j["matched"].as_str()),
        (Some("20.3.1"), Some("prefix"))
    );
    let (_, j) = resolve("arch=x86_64&ref=beta").await;
    assert_eq!(
        (j["version"].as_str(), j["matched"].as_str()),
        (Some("1.1.0-rc1"), Some("tag"))
    );
    let (_, j) = resolve("arch=x86_64&ref=1.0.0").await;
    assert_eq!(j["matched"], "exact");
    let (_, j) = resolve("arch=x86_64&ref=1").await;
    assert_eq!(j["version"], "1.1.0");
    let (s, j) = resolve("arch=x86_64&ref=9").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("tags: beta, latest")
            && msg.contains("versions: 1.0.0, 1.1.0-rc1, 1.1.0, 20.1.0"),
        "{msg}"
    );

    // Tags list in version order with the automatic latest.
    let tags = node.get("/v1/packages/nodejs/tags", Some(&k)).await.json();
    let pairs: Vec<(String, String)> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tag"].as_str().unwrap().into(),
                t["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("beta".into(), "1.1.0-rc1".into()),
            ("latest".into(), "20.3.1".into())
        ]
    );
}

#[tokio::test]
async fn tags_move_forward_and_latest_is_read_only() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    for v in ["1.0.0", "1.1.0"] {
        node.push(&k, "app", &package("app", v, "any", v.as_bytes()))
            .await
            .expect(StatusCode::CREATED);
    }
    let set = |tag: &'static str, v: &'static str| {
        let (node, k) = (&node, k.clone());
        async move {
            node.send_json(
                Method::PUT,
                &format!("/v1/packages/app/tags/{tag}"),
                Some(&k),
                json!({"version": v}),
            )
            .await
        }
    };
    set("stable", "1.0.0").await.expect(StatusCode::OK);
    set("stable", "1.1.0").await.expect(StatusCode::OK);
    assert_eq!(
        set("latest", "1.0.0")
            .await
            .expect(StatusCode::BAD_REQUEST)
            .code(),
        "invalid_tag"
    );
    assert_eq!(
        set("stable", "9.9.9")
            .await
            .expect(StatusCode::NOT_FOUND)
            .code(),
        "not_found"
    );
    let entry = node
        .node
        .state()
        .store
        .tag_entry("app", "stable")
        .unwrap()
        .unwrap();
    assert_eq!(
        (entry.version.as_deref(), entry.tag_seq),
        (Some("1.1.0"), 2)
    );
    // Deleting a tagged version is refused until the tag moves.
    let r = node
        .call(
            Method::DELETE,
            "/v1/packages/app/versions/1.1.0",
            Some(&k),
            None,
            &[],
        )
        .await;
    assert_eq!(r.expect(StatusCode::CONFLICT).code(), "refused");
}

#[tokio::test]
async fn deletion_is_permanent() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    let bytes = package("gone", "1.0.0", "x86_64", b"x");
    node.push(&k, "gone", &bytes)
        .await
        .expect(StatusCode::CREATED);
    node.call(
        Method::DELETE,
        "/v1/packages/gone/versions/1.0.0?arch=x86_64",
        Some(&k),
        None,
        &[],
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    node.get("/v1/packages/gone", Some(&k))
        .await
        .expect(StatusCode::NOT_FOUND);
    let r = node
        .push(&k, "gone", &bytes)
        .await
        .expect(StatusCode::CONFLICT);
    assert_eq!(r.code(), "version_deleted");
    let again = node
        .call(
            Method::DELETE,
            "/v1/packages/gone/versions/1.0.0",
            Some(&k),
            None,
            &[],
        )
        .await
        .expect(StatusCode::NOT_FOUND);
    assert!(
        String::from_utf8_lossy(&again.body).contains("gone 1.0.0 was deleted already"),
        "deleting twice says it was deleted: {}",
        String::from_utf8_lossy(&again.body)
    );
    // Resolving it says so too, for a pull.
    let pulled = node
        .get("/v1/packages/gone/resolve?ref=1.0.0&arch=x86_64", Some(&k))
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_eq!(pulled.code(), "version_deleted");
    assert!(
        pulled.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("gone 1.0.0 was deleted"),
        "{}",
        pulled.json()
    );
}

#[tokio::test]
async fn range_and_head_downloads() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    let bytes = package("r", "1.0.0", "any", &vec![9u8; 50_000]);
    node.push(&k, "r", &bytes).await.expect(StatusCode::CREATED);
    let path = format!("/v1/packages/r/blobs/{}", Digest::of(&bytes));
    let part = node
        .call(
            Method::GET,
            &path,
            Some(&k),
            None,
            &[("range", "bytes=10-19".into())],
        )
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, bytes[10..20]);
    assert_eq!(
        part.headers["content-range"],
        format!("bytes 10-19/{}", bytes.len())
    );
    let tail = node
        .call(
            Method::GET,
            &path,
            Some(&k),
            None,
            &[("range", "bytes=-5".into())],
        )
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.body, bytes[bytes.len() - 5..]);
    let head = node
        .call(Method::HEAD, &path, Some(&k), None, &[])
        .await
        .expect(StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], bytes.len().to_string());
    let bad = node
        .call(
            Method::GET,
            &path,
            Some(&k),
            None,
            &[("range", format!("bytes={}-", bytes.len() + 10))],
        )
        .await;
    assert_eq!(
        bad.expect(StatusCode::RANGE_NOT_SATISFIABLE).code(),
        "range_not_satisfiable"
    );
}

#[tokio::test]
async fn uploads_resume_at_the_reported_offset() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    let bytes = package(
        "big",
        "1.0.0",
        "any",
        &(0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    );
    let id = node
        .call(
            Method::POST,
            "/v1/packages/big/uploads",
            Some(&k),
            None,
            &[],
        )
        .await
        .expect(StatusCode::CREATED)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let half = bytes.len() / 2;
    // The first attempt breaks after `half` bytes.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(bytes[..half].to_vec()),
        Err(std::io::Error::other("connection reset")),
    ];
    let r = node
        .call(
            Method::PATCH,
            &format!("/v1/uploads/{id}"),
            Some(&k),
            Some(Body::from_stream(futures::stream::iter(chunks))),
            &[("upload-offset", "0".into())],
        )
        .await;
    assert_eq!(
        r.expect(StatusCode::BAD_REQUEST).code(),
        "upload_interrupted"
    );
    let status = node
        .get(&format!("/v1/uploads/{id}"), Some(&k))
        .await
        .expect(StatusCode::OK);
    assert_eq!(status.json()["offset"], half);
    let wrong = node
        .patch_upload(&k, &id, bytes[1..].to_vec(), "1".into())
        .await;
    assert_eq!(wrong.expect(StatusCode::CONFLICT).code(), "offset_mismatch");
    node.patch_upload(&k, &id, bytes[half..].to_vec(), half.to_string())
        .await
        .expect(StatusCode::OK);
    node.finish_upload(&k, &id, Digest::of(&bytes))
        .await
        .expect(StatusCode::CREATED);
    node.get(&format!("/v1/uploads/{id}"), Some(&k))
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn gc_keeps_newest_tagged_and_latest_and_dry_run_matches() {
    let node = TestNode::with(|c| c.gc.grace_period_secs = 0).await;
    let k = node.admin.clone();
    for v in ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "2.0.0-rc1"] {
        node.push(&k, "svc", &package("svc", v, "x86_64", v.as_bytes()))
            .await
            .expect(StatusCode::CREATED);
    }
    node.send_json(
        Method::PUT,
        "/v1/packages/svc/tags/lts",
        Some(&k),
        json!({"version": "1.0.0"}),
    )
    .await
    .expect(StatusCode::OK);
    let gc = |dry| {
        node.send_json(
            Method::POST,
            "/v1/gc",
            Some(&k),
            json!({"keep_versions": 1, "dry_run": dry}),
        )
    };
    let dry = gc(true).await.expect(StatusCode::OK).json();
    let names = |j: &serde_json::Value| -> Vec<String> {
        j["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap().to_owned())
            .collect()
    };
    // Kept: 2.0.0-rc1 (newest), 1.3.0 (latest), 1.0.0 (tagged).
    assert_eq!(names(&dry), vec!["1.1.0", "1.2.0"]);
    assert_eq!(dry["blobs"], 2);
    assert_eq!(
        node.node.state().store.blobs().list().unwrap().len(),
        5,
        "dry run removed files"
    );
    let real = gc(false).await.expect(StatusCode::OK).json();
    assert_eq!(names(&real), names(&dry));
    assert_eq!(real["blobs"], dry["blobs"]);
    assert_eq!(real["blob_bytes"], dry["blob_bytes"]);
    assert_eq!(node.node.state().store.blobs().list().unwrap().len(), 3);
    let detail = node.get("/v1/packages/svc", Some(&k)).await.json();
    assert_eq!(detail["versions"].as_array().unwrap().len(), 3);
    // GC is local: it wrote no record.
    let records = node.get("/v1/records", Some(&k)).await.json();
    let kinds: Vec<&str> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["manifest", "manifest", "manifest", "tag"],
        "manifests of collected versions are not offered"
    );
}

#[tokio::test]
async fn gc_sweep_spares_young_blobs() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    // An orphan blob (as a crash between blob and record leaves one).
    let orphan = node.node.state().store.blobs().temp_path("t").unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();
    node.node
        .state()
        .store
        .blobs()
        .commit(&orphan, &Digest::of(b"orphan"))
        .unwrap();
    let r = node
        .send_json(
            Method::POST,
            "/v1/gc",
            Some(&k),
            json!({"keep_versions": 1}),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        (r["blobs"].as_u64(), r["blobs_in_grace"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(
        node.node
            .state()
            .store
            .blobs()
            .contains(&Digest::of(b"orphan"))
    );
}

#[tokio::test]
async fn keys_record_use_and_revocation_is_immediate() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    let created = node
        .send_json(
            Method::POST,
            "/v1/keys",
            Some(&admin),
            json!({"name": "ci-deploy", "scopes": ["push:my-*"]}),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("niso_k1_"));
    async fn listed(node: &TestNode, admin: &str, id: &str) -> Option<serde_json::Value> {
        let keys = node.get("/v1/keys", Some(admin)).await.json();
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .cloned()
    }
    assert_eq!(
        listed(&node, &admin, &id).await.unwrap()["last_used_ms"],
        serde_json::Value::Null
    );
    node.get("/v1/whoami", Some(&key))
        .await
        .expect(StatusCode::OK);
    assert!(
        listed(&node, &admin, &id).await.unwrap()["last_used_ms"]
            .as_u64()
            .is_some()
    );
    // After a flush the time is in the database too.
    node.node.state().flush_last_used().await;
    let stored = node.node.state().store.list_keys().unwrap();
    assert!(
        stored
            .iter()
            .any(|(i, e)| *i == id && e.last_used_ms.is_some())
    );
    node.call(
        Method::DELETE,
        &format!("/v1/keys/{id}"),
        Some(&admin),
        None,
        &[],
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    let r = node
        .get("/v1/whoami", Some(&key))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unknown_key");
    assert!(listed(&node, &admin, &id).await.is_none());
    // Typos are caught by the checksum before any lookup.
    let mut typo = key.clone().into_bytes();
    typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
    let r = node
        .get("/v1/whoami", Some(&String::from_utf8(typo).unwrap()))
        .await;
    assert_eq!(r.expect(StatusCode::UNAUTHORIZED).code(), "malformed_key");
    let expired = node.key_expiring(&["pull:*"], Some(1)).await;
    assert_eq!(
        node.get("/v1/whoami", Some(&expired))
            .await
            .expect(StatusCode::UNAUTHORIZED)
            .code(),
        "key_expired"
    );
}

#[tokio::test]
async fn data_dir_never_holds_a_key_in_clear() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    let mut keys = vec![admin.clone()];
    for i in 0..3 {
        let k = node
            .send_json(
                Method::POST,
                "/v1/keys",
                Some(&admin),
                json!({"name": format!("k{i}"), "scopes": ["pull:*"]}),
            )
            .await
            .expect(StatusCode::CREATED)
            .json();
        let key = k["key"].as_str().unwrap().to_owned();
        node.get("/v1/whoami", Some(&key))
            .await
            .expect(StatusCode::OK);
        keys.push(key);
    }
    node.push(&admin, "p", &package("p", "1.0.0", "any", b"x"))
        .await
        .expect(StatusCode::CREATED);
    node.node.state().flush_last_used().await;
    let files = node.data_files();
    assert!(files.iter().any(|f| f.ends_with("niso.redb")));
    for file in files {
        if file.ends_with("admin.key") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        for key in &keys {
            // Neither the whole key nor its secret part may appear anywhere.
            let secret = &key.as_bytes()[8..40];
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{} holds a key in clear",
                file.display()
            );
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(node.dir.path().join("data/admin.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn records_are_signed_and_filtered() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    node.push(&k, "a-pkg", &package("a-pkg", "1.0.0", "any", b"a"))
        .await
        .expect(StatusCode::CREATED);
    node.push(&k, "b-pkg", &package("b-pkg", "1.0.0", "any", b"b"))
        .await
        .expect(StatusCode::CREATED);
    node.send_json(
        Method::PUT,
        "/v1/packages/a-pkg/tags/stable",
        Some(&k),
        json!({"version": "1.0.0"}),
    )
    .await
    .expect(StatusCode::OK);
    let page = node
        .get("/v1/records?limit=2", Some(&k))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    assert_eq!(page["more"], true);
    let next = page["next"].as_u64().unwrap();
    let rest = node
        .get(&format!("/v1/records?after={next}"), Some(&k))
        .await
        .json();
    assert_eq!(rest["records"].as_array().unwrap().len(), 1);
    assert_eq!(rest["more"], false);
    let origin = node.node.state().store.origin();
    for r in page["records"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["records"].as_array().unwrap())
    {
        let rec: Record = serde_json::from_value(r.clone()).unwrap();
        rec.verify().unwrap();
        assert_eq!(rec.origin, origin);
    }
    let only_a = node.key(&["pull:a-*"]).await;
    let seen = node.get("/v1/records", Some(&only_a)).await.json();
    let names: Vec<&str> = seen["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a-pkg", "a-pkg"]);
}

#[tokio::test]
async fn search_ranks_and_pages() {
    let node = TestNode::new().await;
    let k = node.admin.clone();
    for name in ["postgres", "postgres-tools", "pgadmin", "mariadb"] {
        node.push(&k, name, &package(name, "1.0.0", "any", name.as_bytes()))
            .await
            .expect(StatusCode::CREATED);
    }
    let r = node.get("/v1/packages?q=postgres", Some(&k)).await.json();
    let names: Vec<&str> = r["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["postgres", "postgres-tools"]);
    assert_eq!(r["packages"][0]["latest"], "1.0.0");
    let page1 = node.get("/v1/packages?limit=3", Some(&k)).await.json();
    assert_eq!(page1["packages"].as_array().unwrap().len(), 3);
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let page2 = node
        .get(&format!("/v1/packages?limit=3&cursor={cursor}"), Some(&k))
        .await
        .json();
    assert_eq!(page2["packages"].as_array().unwrap().len(), 1);
    assert!(page2["next_cursor"].is_null());
}

#[tokio::test]
async fn anonymous_pull_when_enabled() {
    let closed = TestNode::new().await;
    closed
        .get("/v1/packages", None)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let open = TestNode::with(|c| c.anonymous_pull = true).await;
    let bytes = package("pub", "1.0.0", "any", b"p");
    open.push(&open.admin.clone(), "pub", &bytes)
        .await
        .expect(StatusCode::CREATED);
    open.get("/v1/packages/pub/resolve", None)
        .await
        .expect(StatusCode::OK);
    open.get(
        &format!("/v1/packages/pub/blobs/{}", Digest::of(&bytes)),
        None,
    )
    .await
    .expect(StatusCode::OK);
    // Anonymous callers still cannot push: they need a key, so 401.
    open.call(Method::POST, "/v1/packages/pub/uploads", None, None, &[])
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn node_info_health_and_metrics() {
    let node = TestNode::new().await;
    let info = node
        .get("/v1/node", None)
        .await
        .expect(StatusCode::OK)
        .json();
    assert!(info["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
    assert!(info["p2p_addrs"].is_array());
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        node.get("/healthz", None).await.expect(StatusCode::OK).body,
        b"ok\n"
    );
    node.push(
        &node.admin.clone(),
        "m",
        &package("m", "1.0.0", "any", b"m"),
    )
    .await
    .expect(StatusCode::CREATED);
    let metrics =
        String::from_utf8(node.get("/metrics", None).await.expect(StatusCode::OK).body).unwrap();
    assert!(
        metrics.contains("niso_packages_published_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("niso_packages 1"), "{metrics}");
}

/// A package is described by its latest version, not by whichever build was pushed last.
#[tokio::test]
async fn the_description_is_the_latest_versions() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    let described = |version: &str, arch: &str, description: &str| {
        let meta = format!(
            "name = \"tool\"\nversion = \"{version}\"\narch = \"{arch}\"\ndescription = \"{description}\"\n"
        );
        let mut p = niso_protocol::pack::Packer::new(Vec::new(), meta.as_bytes()).unwrap();
        p.add_file("payload", false, 1, &b"x"[..]).unwrap();
        p.finish().unwrap()
    };
    for (version, arch, description) in [
        ("2.0.0", "x86_64", "Tool two"),
        ("1.0.1", "x86_64", "An old patch release"),
    ] {
        node.push(&admin, "tool", &described(version, arch, description))
            .await
            .expect(StatusCode::CREATED);
    }
    assert_eq!(
        described_as(&node).await,
        std::array::from_fn(|_| json!("Tool two"))
    );

    // Two builds of the latest version: the `any` build speaks for the package.
    node.push(&admin, "tool", &described("3.0.0", "any", "Tool three"))
        .await
        .expect(StatusCode::CREATED);
    node.push(
        &admin,
        "tool",
        &described("3.0.0", "x86_64", "Tool three, x86 build"),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(
        described_as(&node).await,
        std::array::from_fn(|_| json!("Tool three"))
    );
}

/// The description the list, the search and the detail page show for `tool`.
async fn described_as(node: &TestNode) -> [serde_json::Value; 3] {
    let list = node.get("/v1/packages", Some(&node.admin)).await.json();
    let search = node
        .get("/v1/packages?q=tool", Some(&node.admin))
        .await
        .json();
    let detail = node
        .get("/v1/packages/tool", Some(&node.admin))
        .await
        .json();
    [
        list["packages"][0]["description"].clone(),
        search["packages"][0]["description"].clone(),
        detail["description"].clone(),
    ]
}
