//! The scope matrix: every endpoint × {no key, wrong scope, glob miss, glob hit, revoked,
//! expired, admin}, asserting the status codes.

use axum::http::{Method, StatusCode};
use niso_protocol::Digest;
use serde_json::json;

use crate::support::{TestNode, package};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    Pull,
    Push,
    Delete,
    Admin,
    AnyKey,
}

const WHO: [&str; 7] = [
    "no key",
    "wrong scope",
    "glob miss",
    "glob hit",
    "revoked",
    "expired",
    "admin",
];

struct Keys {
    wrong: String,
    miss: String,
    hit: String,
    revoked: String,
    expired: String,
}

async fn keys_for(node: &TestNode, need: Need) -> Keys {
    let (wrong, miss, hit): (&[&str], &[&str], &[&str]) = match need {
        Need::Pull => (&["push:*"], &["pull:other-*"], &["pull:my-*"]),
        Need::Push => (&["pull:*"], &["push:other-*"], &["push:my-*"]),
        Need::Delete => (&["push:*", "pull:*"], &["delete:other-*"], &["delete:my-*"]),
        Need::Admin => (
            &["push:*", "pull:*", "delete:*"],
            &["push:my-*"],
            &["pull:my-*", "push:my-*", "delete:my-*"],
        ),
        Need::AnyKey => (&["push:other"], &["pull:other-*"], &["pull:my-*"]),
    };
    let revoked = node.key(hit).await;
    let id = node
        .send_json(Method::GET, "/v1/whoami", Some(&revoked), json!(null))
        .await
        .json()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    node.call(
        Method::DELETE,
        &format!("/v1/keys/{id}"),
        Some(&node.admin),
        None,
        &[],
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    Keys {
        wrong: node.key(wrong).await,
        miss: node.key(miss).await,
        hit: node.key(hit).await,
        revoked,
        expired: node.key_expiring(hit, Some(1)).await,
    }
}

/// Runs one request as each principal and compares the statuses with `want`.
async fn check<F, Fut>(node: &TestNode, label: &str, need: Need, want: [u16; 7], request: F)
where
    F: Fn(Option<String>, usize) -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let keys = keys_for(node, need).await;
    let principals = [
        None,
        Some(keys.wrong),
        Some(keys.miss),
        Some(keys.hit),
        Some(keys.revoked),
        Some(keys.expired),
        Some(node.admin.clone()),
    ];
    let mut got = [0u16; 7];
    for (i, key) in principals.into_iter().enumerate() {
        got[i] = request(key, i).await;
    }
    let table: Vec<String> = WHO
        .iter()
        .zip(got.iter().zip(want.iter()))
        .map(|(w, (g, e))| format!("{w}: got {g} want {e}"))
        .collect();
    assert_eq!(got, want, "{label}\n{}", table.join("\n"));
}

const DENY_PULL: [u16; 7] = [401, 403, 403, 200, 401, 401, 200];

#[tokio::test]
async fn every_endpoint_checks_scopes() {
    let node = TestNode::new().await;
    let admin = node.admin.clone();
    let bytes = package("my-api", "1.0.0", "x86_64", b"v1");
    node.push(&admin, "my-api", &bytes)
        .await
        .expect(StatusCode::CREATED);
    let digest = Digest::of(&bytes);
    node.send_json(
        Method::PUT,
        "/v1/packages/my-api/tags/stable",
        Some(&admin),
        json!({"version": "1.0.0"}),
    )
    .await
    .expect(StatusCode::OK);

    let n = &node;
    let get = |path: String| {
        move |key: Option<String>, _: usize| {
            let path = path.clone();
            async move { n.get(&path, key.as_deref()).await.status.as_u16() }
        }
    };

    check(
        n,
        "GET /v1/packages/my-api",
        Need::Pull,
        DENY_PULL,
        get("/v1/packages/my-api".into()),
    )
    .await;
    check(
        n,
        "GET resolve",
        Need::Pull,
        DENY_PULL,
        get("/v1/packages/my-api/resolve?ref=stable".into()),
    )
    .await;
    check(
        n,
        "GET version",
        Need::Pull,
        DENY_PULL,
        get("/v1/packages/my-api/versions/1.0.0/x86_64".into()),
    )
    .await;
    check(
        n,
        "GET tags",
        Need::Pull,
        DENY_PULL,
        get("/v1/packages/my-api/tags".into()),
    )
    .await;
    check(
        n,
        "GET blob",
        Need::Pull,
        DENY_PULL,
        get(format!("/v1/packages/my-api/blobs/{digest}")),
    )
    .await;
    check(
        n,
        "GET /v1/whoami",
        Need::AnyKey,
        [401, 200, 200, 200, 401, 401, 200],
        get("/v1/whoami".into()),
    )
    .await;

    // Listing and the record log filter by glob instead of refusing: a miss gets 200 but must
    // not learn the name, a hit must see it.
    for path in ["/v1/packages", "/v1/records"] {
        check(
            n,
            path,
            Need::Pull,
            [401, 403, 200, 200, 401, 401, 200],
            |key, i| async move {
                let r = n.get(path, key.as_deref()).await;
                if r.status == StatusCode::OK {
                    let sees = String::from_utf8_lossy(&r.body).contains("my-api");
                    assert_eq!(sees, i != 2, "{path} as {}: visibility wrong", WHO[i]);
                }
                r.status.as_u16()
            },
        )
        .await;
    }

    check(
        n,
        "PUT tag",
        Need::Push,
        [401, 403, 403, 200, 401, 401, 200],
        |key, _| async move {
            n.send_json(
                Method::PUT,
                "/v1/packages/my-api/tags/beta",
                key.as_deref(),
                json!({"version": "1.0.0"}),
            )
            .await
            .status
            .as_u16()
        },
    )
    .await;

    check(
        n,
        "DELETE tag",
        Need::Push,
        [401, 403, 403, 204, 401, 401, 204],
        |key, i| async move {
            let tag = format!("t{i}");
            n.send_json(
                Method::PUT,
                &format!("/v1/packages/my-api/tags/{tag}"),
                Some(&n.admin),
                json!({"version": "1.0.0"}),
            )
            .await
            .expect(StatusCode::OK);
            n.call(
                Method::DELETE,
                &format!("/v1/packages/my-api/tags/{tag}"),
                key.as_deref(),
                None,
                &[],
            )
            .await
            .status
            .as_u16()
        },
    )
    .await;

    check(
        n,
        "POST upload",
        Need::Push,
        [401, 403, 403, 201, 401, 401, 201],
        |key, _| async move {
            n.call(
                Method::POST,
                "/v1/packages/my-api/uploads",
                key.as_deref(),
                None,
                &[],
            )
            .await
            .status
            .as_u16()
        },
    )
    .await;

    // An upload belongs to the key that opened it: to any other key but an admin key it does
    // not exist, whatever that key's scopes (its own uploads: `uploads.rs`).
    check(
        n,
        "GET another key's upload",
        Need::Push,
        [401, 404, 404, 404, 401, 401, 200],
        |key, _| async move {
            let created = n
                .call(
                    Method::POST,
                    "/v1/packages/my-api/uploads",
                    Some(&n.admin),
                    None,
                    &[],
                )
                .await
                .expect(StatusCode::CREATED);
            let id = created.json()["id"].as_str().unwrap().to_owned();
            n.get(&format!("/v1/uploads/{id}"), key.as_deref())
                .await
                .status
                .as_u16()
        },
    )
    .await;

    check(
        n,
        "DELETE version",
        Need::Delete,
        [401, 403, 403, 204, 401, 401, 204],
        |key, i| async move {
            let version = format!("2.0.{i}");
            n.push(
                &n.admin,
                "my-api",
                &package("my-api", &version, "x86_64", b"x"),
            )
            .await
            .expect(StatusCode::CREATED);
            n.call(
                Method::DELETE,
                &format!("/v1/packages/my-api/versions/{version}"),
                key.as_deref(),
                None,
                &[],
            )
            .await
            .status
            .as_u16()
        },
    )
    .await;

    let deny_admin = |ok: u16| [401, 403, 403, 403, 401, 401, ok];
    check(
        n,
        "POST /v1/keys",
        Need::Admin,
        deny_admin(201),
        |key, _| async move {
            n.send_json(
                Method::POST,
                "/v1/keys",
                key.as_deref(),
                json!({"name": "x", "scopes": ["pull:*"]}),
            )
            .await
            .status
            .as_u16()
        },
    )
    .await;
    check(
        n,
        "GET /v1/keys",
        Need::Admin,
        deny_admin(200),
        get("/v1/keys".into()),
    )
    .await;
    check(
        n,
        "DELETE /v1/keys/{id}",
        Need::Admin,
        deny_admin(204),
        |key, _| async move {
            let victim = n.key(&["pull:*"]).await;
            let id = n.get("/v1/whoami", Some(&victim)).await.json()["key_id"]
                .as_str()
                .unwrap()
                .to_owned();
            n.call(
                Method::DELETE,
                &format!("/v1/keys/{id}"),
                key.as_deref(),
                None,
                &[],
            )
            .await
            .status
            .as_u16()
        },
    )
    .await;
    check(
        n,
        "POST /v1/gc",
        Need::Admin,
        deny_admin(200),
        |key, _| async move {
            n.send_json(
                Method::POST,
                "/v1/gc",
                key.as_deref(),
                json!({"keep_versions": 5, "dry_run": true}),
            )
            .await
            .status
            .as_u16()
        },
    )
    .await;
    // An admin passes the scope check and then fails on the bad URL: 400, not 403.
    check(
        n,
        "POST /v1/mirror",
        Need::Admin,
        deny_admin(400),
        |key, _| async move {
            n.send_json(
                Method::POST,
                "/v1/mirror",
                key.as_deref(),
                json!({"from": "ftp://x"}),
            )
            .await
            .status
            .as_u16()
        },
    )
    .await;
}
