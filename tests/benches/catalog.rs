//! A large catalog of small packages: publish rate with 8 concurrent clients, read latency
//! (search, resolve, list) at 10k versions and at the full size, how fast a fresh peer catches
//! up (eager blobs, then records only), and the peak memory of both nodes. Real binaries over
//! loopback; the clients are Rust (one kept-alive HTTP/1.1 connection each), so the figures
//! are the node's.
//!
//! Run: `cargo bench -p niso-tests --bench catalog` (versions: `NISO_BENCH_VERSIONS`, default
//! 100000; 5 versions per package). It first prints the disk's fsync latency and what creating
//! a file costs, measured in the same run: publishing and eager catch-up wait on flushes and
//! create a file per version, so those are their baselines. Publishing and catching up also
//! print each node's CPU time per version, which flush latency does not move (a slow file
//! creation does, as kernel time, and so does the host's other load): the steadier figure to
//! compare runs of one hour by, since an eager catch-up keeps both cores of a 2-core machine
//! busy.
//! Targets (issue "Scale"): publish ≥ 500 versions/s; search and resolve p99 ≤ 10 ms and flat
//! from 10k to the full size; eager catch-up ≥ 2,000 versions/s; lazy catch-up ≥ 10,000
//! records/s; serving node's peak RSS during catch-up ≤ 64 MiB.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark program"
)]

use std::time::{Duration, Instant};

use niso_tests::{
    Sandbox, Server,
    catalog::{self, VERSIONS_PER_PACKAGE},
    cpu_secs,
    http1::Connection,
    peak_rss_kib, replica, rss_breakdown, sharing_node,
};
use rand::{RngExt, SeedableRng};

const CLIENTS: usize = 8;
const SAMPLES: usize = 300;
const SEED: u64 = 0xca7a_1009;

/// Publishes versions `from..to` with `CLIENTS` connections; returns versions per second.
fn publish(url: &str, key: &str, from: usize, to: usize) -> f64 {
    let start = Instant::now();
    catalog::publish(url, key, from, to, CLIENTS);
    (to - from) as f64 / start.elapsed().as_secs_f64()
}

/// p50 and p99 of `SAMPLES` requests, in milliseconds.
fn latency(http: &mut Connection, mut path: impl FnMut(usize) -> String) -> (f64, f64) {
    let mut took: Vec<Duration> = (0..SAMPLES)
        .map(|n| {
            let path = path(n);
            let start = Instant::now();
            let response = http.get(&path);
            let elapsed = start.elapsed();
            assert_eq!(response.status, 200, "{path}");
            elapsed
        })
        .collect();
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(took[SAMPLES / 2]), ms(took[SAMPLES * 99 / 100]))
}

fn reads(url: &str, key: &str, versions: usize) {
    let packages = versions / VERSIONS_PER_PACKAGE;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    let mut http = Connection::open(url, Some(key));
    let mut pick = move || rng.random_range(0..packages);
    let names: Vec<usize> = (0..SAMPLES).map(|_| pick()).collect();
    let (s50, s99) = latency(&mut http, |n| {
        format!("/v1/packages?q=pkg-{:05}&limit=20", names[n] / 10)
    });
    let (r50, r99) = latency(&mut http, |n| {
        format!("/v1/packages/pkg-{:06}/resolve?arch=any", names[n])
    });
    let (l50, l99) = latency(&mut http, |_| "/v1/packages?limit=100".to_owned());
    println!(
        "  at {versions:>7} versions   search p50 {s50:6.2} ms  p99 {s99:6.2} ms   resolve p50 {r50:6.2} ms  p99 {r99:6.2} ms   list p50 {l50:6.2} ms  p99 {l99:6.2} ms"
    );
}

/// The baseline this machine's disk sets, measured in the run: milliseconds for one small
/// new file's fsync plus its directory's, done one after another. A push and an eager
/// catch-up wait on such flushes (the blob's bytes, its directory, the database), so their
/// figures move with this one from day to day; the nodes' own speed is what is left.
fn fsync_pair_ms(dir: &std::path::Path) -> f64 {
    const FILES: usize = 200;
    let dir = dir.join("fsync-baseline");
    std::fs::create_dir_all(&dir).unwrap();
    let directory = std::fs::File::open(&dir).unwrap();
    let start = Instant::now();
    for n in 0..FILES {
        let path = dir.join(format!("f{n}"));
        std::fs::write(&path, [7u8; 600]).unwrap();
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
        directory.sync_all().unwrap();
    }
    // Kept until the sandbox goes: removing them now would slow the nodes' own file
    // creation (see `new_file_us`).
    start.elapsed().as_secs_f64() * 1000.0 / FILES as f64
}

/// The other baseline: microseconds to create one small file, without flushing it. Every
/// push and every fetched blob creates a file. Journal-less ext4 (this machine's) skips
/// inodes freed in the last few minutes when it picks one for a new file, so after a large
/// removal (the previous run's sandbox) creating a file can cost hundreds of microseconds of
/// kernel time instead of tens, and the publish and eager figures drop with it.
fn new_file_us(dir: &std::path::Path) -> f64 {
    const FILES: usize = 2000;
    let dir = dir.join("create-baseline");
    std::fs::create_dir_all(&dir).unwrap();
    let start = Instant::now();
    for n in 0..FILES {
        std::fs::write(dir.join(format!("f{n}")), [7u8; 600]).unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / FILES as f64
}

fn node_versions(url: &str, key: &str) -> u64 {
    Connection::open(url, Some(key)).get("/v1/node").json()["versions"]
        .as_u64()
        .unwrap()
}

/// What a catch-up took.
struct CatchUp {
    secs: f64,
    /// The replica's peak RSS, MiB.
    peak_mib: u64,
    /// CPU seconds the replica used (from its start) and the serving node used meanwhile.
    replica_cpu: f64,
    origin_cpu: f64,
}

/// Starts a fresh peer that replicates everything from `origin` with `blobs`, and waits
/// until it holds `versions` versions.
fn catch_up(
    user: &Sandbox,
    origin: &Server,
    origin_addr: &str,
    versions: usize,
    blobs: &str,
) -> CatchUp {
    // The serving node's peak from here on, not from the publishing before.
    std::fs::write(format!("/proc/{}/clear_refs", origin.child.id()), "5").unwrap();
    let origin_cpu = cpu_secs(origin.child.id());
    let start = Instant::now();
    let replica = replica(user, &format!("replica-{blobs}"), origin_addr, blobs);
    let key = replica.admin_key();
    let deadline = start + Duration::from_secs(3600);
    while node_versions(&replica.url, &key) < versions as u64 {
        assert!(
            Instant::now() < deadline,
            "the {blobs} replica did not catch up within an hour"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    CatchUp {
        secs: start.elapsed().as_secs_f64(),
        peak_mib: peak_rss_kib(replica.child.id()) / 1024,
        replica_cpu: cpu_secs(replica.child.id()),
        origin_cpu: cpu_secs(origin.child.id()) - origin_cpu,
    }
}

/// CPU milliseconds per version (or record), the replica's and the serving node's.
fn cpu_per_version(c: &CatchUp, versions: usize) -> String {
    let ms = |secs: f64| secs * 1000.0 / versions as f64;
    format!(
        "CPU {:.2} ms per version on the replica, {:.2} ms on the serving node",
        ms(c.replica_cpu),
        ms(c.origin_cpu)
    )
}

fn main() {
    let versions: usize = std::env::var("NISO_BENCH_VERSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    println!(
        "catalog benchmark: {versions} versions ({} packages × {VERSIONS_PER_PACKAGE}), {CLIENTS} publishing clients, loopback, seed {SEED:#x}",
        versions / VERSIONS_PER_PACKAGE
    );
    let user = Sandbox::new();
    println!(
        "  baseline: this disk takes {:.2} ms for a small new file's fsync and its directory's",
        fsync_pair_ms(user.path())
    );
    let create_us = new_file_us(user.path());
    println!("  baseline: creating a small file takes {create_us:.0} µs here");
    if create_us > 150.0 {
        println!(
            "  warning: creating a file is slow here now (30-45 µs on a quiet disk), which lowers the publish and eager figures; on journal-less ext4 a large removal (a previous run's sandbox) does this for a few minutes: wait, or point TMPDIR at a new directory at the top of the filesystem"
        );
    }
    let origin = sharing_node(&user, "origin");
    let key = origin.admin_key();
    let info = Connection::open(&origin.url, Some(&key))
        .get("/v1/node")
        .json();
    let origin_addr = info["p2p_addrs"][0].as_str().unwrap().to_owned();

    let first = versions.min(10_000);
    let before = cpu_secs(origin.child.id());
    let rate_first = publish(&origin.url, &key, 0, first);
    let mut publish_cpu = cpu_secs(origin.child.id()) - before;
    reads(&origin.url, &key, first);
    let rate_rest = if versions > first {
        let before = cpu_secs(origin.child.id());
        let rate = publish(&origin.url, &key, first, versions);
        publish_cpu += cpu_secs(origin.child.id()) - before;
        reads(&origin.url, &key, versions);
        Some(rate)
    } else {
        None
    };
    match rate_rest {
        Some(rest) => println!(
            "  publish: {rate_first:.0} versions/s for the first {first}, {rest:.0} versions/s after (target ≥ 500)"
        ),
        None => println!("  publish: {rate_first:.0} versions/s (target ≥ 500)"),
    }
    // The node's own work per push, which the disk's flush latency does not move.
    println!(
        "  publish: CPU {:.2} ms per version on the node",
        publish_cpu * 1000.0 / versions as f64
    );
    let publish_peak = peak_rss_kib(origin.child.id()) / 1024;
    let publish_now = rss_breakdown(origin.child.id());

    let eager = catch_up(&user, &origin, &origin_addr, versions, "eager");
    let origin_eager_rss = peak_rss_kib(origin.child.id()) / 1024;
    println!(
        "  eager catch-up: {:.1} s, {:.0} versions/s (target ≥ 2000); replica peak RSS {} MiB",
        eager.secs,
        versions as f64 / eager.secs,
        eager.peak_mib
    );
    println!("  eager catch-up: {}", cpu_per_version(&eager, versions));
    let lazy = catch_up(&user, &origin, &origin_addr, versions, "lazy");
    let origin_lazy_rss = peak_rss_kib(origin.child.id()) / 1024;
    println!(
        "  lazy catch-up: {:.1} s, {:.0} records/s (target ≥ 10000); replica peak RSS {} MiB",
        lazy.secs,
        versions as f64 / lazy.secs,
        lazy.peak_mib
    );
    println!("  lazy catch-up: {}", cpu_per_version(&lazy, versions));
    println!(
        "  serving node peak RSS: {publish_peak} MiB while publishing, {origin_eager_rss} MiB during eager catch-up, {origin_lazy_rss} MiB during lazy catch-up (target ≤ 64)"
    );
    println!(
        "  serving node now: {} (after publishing: {publish_now})",
        rss_breakdown(origin.child.id())
    );
}
