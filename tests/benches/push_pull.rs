//! Push and pull of a large package over loopback against the real `niso` binary, beside the
//! raw copy speed of the same file measured in the same run.
//!
//! Run: `cargo bench -p niso-tests --bench push_pull` (size in MiB: `NISO_BENCH_MIB`, default
//! 1024). Prints throughput, the pull/raw-copy ratio (target ≥ 0.5) and the node's peak RSS
//! (target < 100 MiB).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark program"
)]

use std::{
    io::{Read, Write},
    path::Path,
    time::Instant,
};

use niso_tests::{Sandbox, Server, random_package};

fn mib_per_sec(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}

/// Copies through user space with a 1 MiB buffer and fsyncs, as a pull writes its file.
fn raw_copy(from: &Path, to: &Path) -> f64 {
    let start = Instant::now();
    let mut src = std::fs::File::open(from).unwrap();
    let mut dst = std::fs::File::create(to).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n]).unwrap();
    }
    dst.sync_all().unwrap();
    start.elapsed().as_secs_f64()
}

fn main() {
    let mib: u64 = std::env::var("NISO_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let seed = 0xbe9c_0001_u64;
    let user = Sandbox::new();
    println!("push/pull benchmark: {mib} MiB incompressible payload, seed {seed:#x}");

    // A package directory with one large file, packed by the real client.
    let file = random_package(&user, "bench", mib, seed);
    let size = std::fs::metadata(&file).unwrap().len();

    // Warm the page cache the same way for every contender, then measure the baseline.
    raw_copy(&file, &user.path().join("warm.copy"));
    let raw_secs = raw_copy(&file, &user.path().join("raw.copy"));
    std::fs::remove_file(user.path().join("raw.copy")).unwrap();
    std::fs::remove_file(user.path().join("warm.copy")).unwrap();

    let node = Server::start(
        &user,
        &user.path().join("node"),
        &[],
        &[("NISO_LOG", "warn")],
    );
    user.ok(&["login", &node.url, "--key", &node.admin_key()]);

    let start = Instant::now();
    user.ok(&["push", file.to_str().unwrap()]);
    let push_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    user.ok(&["pull", "bench:1.0.0"]);
    let pull_secs = start.elapsed().as_secs_f64();
    let rss_mib = niso_tests::peak_rss_kib(node.child.id()) as f64 / 1024.0;

    let raw = mib_per_sec(size, raw_secs);
    let push = mib_per_sec(size, push_secs);
    let pull = mib_per_sec(size, pull_secs);
    let ratio = pull / raw;
    println!();
    println!(
        "  package size         {:>10.1} MiB",
        size as f64 / 1048576.0
    );
    println!("  raw copy (baseline)  {raw:>10.1} MiB/s");
    println!(
        "  push                 {push:>10.1} MiB/s   ({push_secs:.2} s, includes hashing and verification)"
    );
    println!(
        "  pull                 {pull:>10.1} MiB/s   ({pull_secs:.2} s, includes digest check)"
    );
    println!(
        "  pull / raw copy      {ratio:>10.2}        target >= 0.50  {}",
        verdict(ratio >= 0.5)
    );
    println!(
        "  node peak RSS        {rss_mib:>10.1} MiB       target <  100   {}",
        verdict(rss_mib < 100.0)
    );
    node.stop();
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}
