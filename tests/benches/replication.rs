//! Replication of one large package from an origin to 4 peers over loopback (real binaries,
//! real TCP), beside a plain sequential HTTP mirror to 4 other nodes, in the same run.
//!
//! Run: `cargo bench -p niso-tests --bench replication` (size in MiB: `NISO_BENCH_MIB`,
//! default 256). Prints seconds until every peer holds a verified copy and the bytes the
//! origin sent, for both.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark program"
)]

use std::time::{Duration, Instant};

use niso_tests::{Sandbox, Server, follow_records, http_get, random_package, sharing_node};

const PEERS: usize = 4;

/// A counter from a node's `/metrics`.
fn metric(url: &str, name: &str) -> u64 {
    let (_, body) = http_get(url, "/metrics").unwrap();
    body.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0) as u64
}

fn info(user: &Sandbox, registry: &str) -> serde_json::Value {
    serde_json::from_str(&user.ok(&["registry", "info", "--json", "--registry", registry])).unwrap()
}

fn main() {
    let mib: u64 = std::env::var("NISO_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let user = Sandbox::new();
    println!("replication benchmark: {mib} MiB package, origin + {PEERS} peers, loopback");

    let file = random_package(&user, "fanout", mib, 0xfa17);
    let size = std::fs::metadata(&file).unwrap().len();

    // Peer-to-peer: each peer trusts everything and knows the origin and the earlier peers.
    let origin = sharing_node(&user, "origin");
    user.ok(&[
        "registry",
        "add",
        "origin",
        &origin.url,
        "--key",
        &origin.admin_key(),
    ]);
    let mut known = vec![
        info(&user, "origin")["p2p_addrs"][0]
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    let mut peers = Vec::new();
    for i in 0..PEERS {
        let cfg = user.path().join(format!("peer{i}.toml"));
        let bootstrap: Vec<String> = known.iter().map(|a| format!("\"{a}\"")).collect();
        std::fs::write(
            &cfg,
            format!("[p2p]\nbootstrap = [{}]\n\n[[replicate]]\nfrom = \"*\"\npackages = [\"*\"]\n\n[[share]]\nto = \"*\"\npackages = [\"*\"]\n", bootstrap.join(", ")),
        )
        .unwrap();
        let peer = Server::start(
            &user,
            &user.path().join(format!("peer{i}")),
            &["--config", cfg.to_str().unwrap()],
            &[("NISO_LOG", "warn")],
        );
        user.ok(&[
            "registry",
            "add",
            &format!("peer{i}"),
            &peer.url,
            "--key",
            &peer.admin_key(),
        ]);
        known.push(
            info(&user, &format!("peer{i}"))["p2p_addrs"][0]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        peers.push(peer);
    }
    user.ok(&["push", file.to_str().unwrap(), "--registry", "origin"]);
    let start = Instant::now();
    for peer in &peers {
        follow_records(
            &peer.url,
            &peer.admin_key(),
            Duration::from_secs(1800),
            |r| {
                r.iter()
                    .any(|x| x["kind"] == "manifest" && x["name"] == "fanout")
            },
        )
        .unwrap();
    }
    let p2p_secs = start.elapsed().as_secs_f64();
    let p2p_origin = metric(&origin.url, "niso_p2p_blob_bytes_served_total");

    // Baseline: the origin's HTTP API, mirrored to each of 4 fresh nodes one after another.
    let mut plain = Vec::new();
    for i in 0..PEERS {
        let node = Server::start(
            &user,
            &user.path().join(format!("plain{i}")),
            &["--no-p2p"],
            &[("NISO_LOG", "warn")],
        );
        user.ok(&[
            "registry",
            "add",
            &format!("plain{i}"),
            &node.url,
            "--key",
            &node.admin_key(),
        ]);
        plain.push(node);
    }
    let served_before = metric(&origin.url, "niso_download_bytes_total");
    let start = Instant::now();
    for i in 0..PEERS {
        user.ok(&[
            "registry",
            "mirror",
            "--from",
            "origin",
            "--to",
            &format!("plain{i}"),
        ]);
    }
    let http_secs = start.elapsed().as_secs_f64();
    let http_origin = metric(&origin.url, "niso_download_bytes_total") - served_before;

    let mib_f = size as f64 / 1048576.0;
    println!();
    println!("  package size                  {mib_f:>10.1} MiB");
    println!("  p2p: all {PEERS} peers verified in  {p2p_secs:>10.2} s");
    println!(
        "  p2p: origin sent              {:>10.1} MiB  ({:.2} x size)",
        p2p_origin as f64 / 1048576.0,
        p2p_origin as f64 / size as f64
    );
    println!("  http mirror, sequential       {http_secs:>10.2} s");
    println!(
        "  http: origin sent             {:>10.1} MiB  ({:.2} x size)",
        http_origin as f64 / 1048576.0,
        http_origin as f64 / size as f64
    );
    println!(
        "  time p2p / http               {:>10.2}",
        p2p_secs / http_secs
    );
    drop((origin, peers, plain));
}
