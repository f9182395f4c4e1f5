//! Read cost by key scope: `/v1/records` and `/v1/packages` on a log of 20,000 records, for a
//! key that may see one package, a key that sees nothing, and an admin key, measured in the
//! same run through the node's router (no sockets, so only the node's work is timed).
//!
//! Run: `cargo bench -p niso-node --bench reads` (records: `NISO_BENCH_RECORDS`, default
//! 20000, five versions per package). Prints per-call times and the narrow/admin ratio; the
//! target is that a narrow key costs no more than an admin key reading the same page size.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark program"
)]

use std::time::{Duration, Instant};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use http_body_util::BodyExt;
use niso_node::{Node, NodeConfig, api_keys::issue_key, p2p::TransportChoice};
use niso_protocol::{
    Arch, Digest, PackageName,
    record::{ManifestBody, NodeSecret, Record, RecordBody},
    scope::Scope,
};
use tower::ServiceExt;

const CALLS: u32 = 40;

async fn call(router: &Router, path: &str, key: &str) -> usize {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

async fn per_call(router: &Router, path: &str, key: &str) -> (Duration, usize) {
    let bytes = call(router, path, key).await;
    let start = Instant::now();
    for _ in 0..CALLS {
        call(router, path, key).await;
    }
    (start.elapsed() / CALLS, bytes)
}

#[tokio::main]
async fn main() {
    let records: u64 = std::env::var("NISO_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        data_dir: dir.path().join("data"),
        ..NodeConfig::default()
    };
    let mut config = config;
    config.p2p.enabled = Some(false);
    let node = Node::open_with(config, TransportChoice::Memory)
        .await
        .unwrap();
    let router = node.router();
    let store = &node.state().store;

    // Records of another origin, applied in batches as replication would.
    let origin = NodeSecret::from_bytes(&[5; 32]);
    let started = Instant::now();
    let mut batch = Vec::new();
    for seq in 1..=records {
        let (package, version) = ((seq - 1) / 5, (seq - 1) % 5);
        let name = format!("pkg-{package:05}");
        batch.push(Record::sign(
            &origin,
            seq,
            seq,
            RecordBody::Manifest(ManifestBody {
                name: PackageName::new(&name).unwrap(),
                version: format!("1.{version}.0").parse().unwrap(),
                arch: Arch::any(),
                digest: Digest::of(format!("{name}-{version}").as_bytes()),
                size: 1,
                description: format!("package {name}"),
            }),
        ));
        if batch.len() == 1000 || seq == records {
            let applied = store.apply_batch(std::mem::take(&mut batch)).await.unwrap();
            assert!(applied.iter().all(Result::is_ok));
        }
    }
    println!(
        "log of {records} records ({} packages) built in {:.1} s",
        records / 5,
        started.elapsed().as_secs_f64()
    );

    let admin = std::fs::read_to_string(dir.path().join("data/admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let key = |scope: &'static str| {
        let scopes: Vec<Scope> = vec![scope.parse().unwrap()];
        issue_key(store, scope.into(), scopes, None)
    };
    let (one, _) = key("pull:pkg-00042").await.unwrap();
    let (none, _) = key("pull:nothing-*").await.unwrap();
    let keys = [
        ("admin", admin.as_str()),
        ("one package", one.expose()),
        ("no package", none.expose()),
    ];
    for path in ["/v1/records?limit=1000", "/v1/packages?limit=100"] {
        println!("\n{path}");
        let mut admin_time = None;
        for (label, key) in keys {
            let (t, bytes) = per_call(&router, path, key).await;
            let base = *admin_time.get_or_insert(t);
            println!(
                "  {label:<12} {:>9.3} ms/call  {bytes:>8} bytes  {:.2} × admin",
                t.as_secs_f64() * 1000.0,
                t.as_secs_f64() / base.as_secs_f64()
            );
        }
    }
}
