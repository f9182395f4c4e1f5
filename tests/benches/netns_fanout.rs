//! Fan-out on a real kernel network: one origin and N replicas, each in its own network
//! namespace on one bridge, every uplink shaped with `tc` to 100 Mbit/s. The origin is pushed
//! a package of random bytes; the replicas (eager, sharing with each other, found by mDNS)
//! fetch it. Prints the time until the last replica holds it over size ÷ uplink rate, and
//! the origin's bytes sent over the size, both measured in the run (targets ≤ 1.2 ×).
//!
//! Run as root: `cargo bench -p niso-tests --bench netns_fanout` (`NISO_BENCH_MIB`, default
//! 128; `NISO_BENCH_REPLICAS`, default 7). Without root, `ip` or `tc` it says so and exits 0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark program"
)]

use std::time::{Duration, Instant};

use niso_tests::{Sandbox, Server, follow_records, http1::Connection, lan::Lan, random_package};

const UPLINK_MBIT: f64 = 100.0;
const SUBNET: u8 = 78;
const SEED: u64 = 0xfa40_0128;
const READY: Duration = Duration::from_secs(120);
const DONE: Duration = Duration::from_secs(1800);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn connected_peers(node: &Server, key: &str) -> usize {
    Connection::open(&node.url, Some(key))
        .get("/v1/peers")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["connected"] == true)
        .count()
}

fn main() {
    if !Lan::available() {
        println!(
            "netns_fanout: skipped: it needs root, iproute2's `ip` and `tc` (network namespaces and traffic shaping)"
        );
        return;
    }
    let mib = env_or("NISO_BENCH_MIB", 128);
    let replicas = usize::try_from(env_or("NISO_BENCH_REPLICAS", 7)).unwrap();
    let nodes = replicas + 1;
    println!(
        "netns fan-out: {mib} MiB, 1 → {replicas} nodes, {UPLINK_MBIT} Mbit/s uplinks (tc tbf), one namespace per node, seed {SEED:#x}"
    );
    let lan = Lan::new(nodes, SUBNET, Some(&format!("{UPLINK_MBIT}mbit")));
    let user = Sandbox::new();
    let p2p = "[p2p]\nlisten = [\"/ip4/0.0.0.0/tcp/4001\"]\nmdns = true\n\n[[share]]\nto = \"*\"\npackages = [\"*\"]\n";
    let origin_cfg = user.path().join("origin.toml");
    std::fs::write(&origin_cfg, p2p).unwrap();
    let replica_cfg = user.path().join("replica.toml");
    std::fs::write(
        &replica_cfg,
        format!("{p2p}\n[[replicate]]\nfrom = \"*\"\npackages = [\"*\"]\nblobs = \"eager\"\n"),
    )
    .unwrap();
    let servers: Vec<Server> = (0..nodes)
        .map(|i| {
            let cfg = if i == 0 { &origin_cfg } else { &replica_cfg };
            lan.serve(i, &user, &user.path().join(format!("node{i}")), cfg)
        })
        .collect();
    let keys: Vec<String> = servers.iter().map(Server::admin_key).collect();

    // Every node connected to every other before the push, so the figure is the transfer's.
    let deadline = Instant::now() + READY;
    for (node, key) in servers.iter().zip(&keys) {
        loop {
            let connected = connected_peers(node, key);
            if connected >= nodes - 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} is connected to {connected} of {} peers after {READY:?}",
                node.url,
                nodes - 1
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let archive = random_package(&user, "big", mib, SEED);
    let size = std::fs::metadata(&archive).unwrap().len();
    user.ok(&[
        "registry",
        "add",
        "origin",
        &servers[0].url,
        "--key",
        &keys[0],
    ]);
    let sent_before = lan.tx_bytes(0);
    user.ok(&["push", archive.to_str().unwrap(), "--registry", "origin"]);
    let start = Instant::now();

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for (node, key) in servers.iter().zip(&keys).skip(1) {
            let done_tx = done_tx.clone();
            let url = node.url.clone();
            s.spawn(move || {
                follow_records(&url, key, DONE, |seen| {
                    seen.iter()
                        .any(|r| r["kind"] == "manifest" && r["name"] == "big")
                })
                .unwrap_or_else(|_| panic!("{url} did not get the package within {DONE:?}"));
                done_tx.send(start.elapsed()).unwrap();
            });
        }
    });
    drop(done_tx);
    let mut times: Vec<Duration> = done_rx.iter().collect();
    times.sort();
    let sent = lan.tx_bytes(0) - sent_before;
    let ideal = size as f64 * 8.0 / (UPLINK_MBIT * 1_000_000.0);
    let last = times.last().unwrap().as_secs_f64();
    let each: Vec<String> = times
        .iter()
        .map(|t| format!("{:.1}", t.as_secs_f64()))
        .collect();
    println!(
        "  size ÷ rate {ideal:.1} s; replicas done after {} s",
        each.join(", ")
    );
    println!(
        "  last replica: {last:.1} s = {:.2} × size ÷ rate (target ≤ 1.2)",
        last / ideal
    );
    println!(
        "  origin sent {:.1} MiB = {:.2} × size (target ≤ 1.2)",
        sent as f64 / (1024.0 * 1024.0),
        sent as f64 / size as f64
    );
}
