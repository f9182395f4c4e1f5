//! Simulator benchmarks, printing figures:
//!
//! - `fanout`: one origin, 15 nodes on 100 Mbit/s uplinks, a 256 MiB package (`NISO_BENCH_MIB`
//!   to change). Time for all to hold the verified package as a multiple of size ÷ link
//!   bandwidth (target ≤ 1.5), origin egress as a multiple of the size (target ≤ 2), and a
//!   hub-and-spoke baseline (only the origin shares, so every node pulls from it) in the same
//!   run.
//! - `lossy-64`: share of 64 nodes holding a new record 2 s after it was made, at 5 % loss
//!   (target ≥ 99 %).
//!
//! Run: `cargo bench -p niso-sim --bench simulation`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark program"
)]

use std::path::Path;

use niso_sim::{
    cluster::Options,
    run::run,
    scenario::{Action, Scenario},
};

fn load(name: &str) -> Scenario {
    Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(format!("{name}.toml")),
    )
    .unwrap()
}

fn main() {
    let mib: u64 = std::env::var("NISO_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut fanout = load("fanout");
    for e in &mut fanout.events {
        if let Action::Push { size_kib, .. } = &mut e.action {
            *size_kib = mib * 1024;
        }
    }
    let mbit = fanout.uplink_mbit.unwrap_or(100.0);
    // Hub and spoke: only the origin gives anything out.
    let mut hub = fanout.clone();
    hub.name = "fanout (hub and spoke)".into();
    for group in &mut hub.rules {
        group.share.clear();
    }
    hub.rules.push(niso_sim::scenario::RuleGroup {
        nodes: niso_sim::scenario::Nodes::List(vec![0]),
        replicate: vec![],
        share: vec![niso_sim::scenario::Share {
            to: "*".into(),
            packages: vec!["*".into()],
        }],
    });

    println!(
        "simulation benchmarks ({} MiB fan-out to 15 nodes at {mbit} Mbit/s uplinks)",
        mib
    );
    for (label, scenario) in [("fan-out", &fanout), ("hub and spoke", &hub)] {
        let (report, observer) = rt
            .block_on(run(scenario, 1, Options::default(), &mut |_, _, _| {}))
            .unwrap();
        let item = &observer.items[0];
        let size = match &item.kind {
            niso_sim::observer::ItemKind::Version { size, .. } => *size as f64,
            _ => unreachable!(),
        };
        let ideal = size / (mbit * 1_000_000.0 / 8.0);
        let done = report.measured.items[0].max_secs.unwrap_or(f64::NAN);
        println!();
        println!("  {label}");
        println!("    all 15 hold the verified package after {done:>8.2} s");
        println!("    size / link bandwidth                   {ideal:>8.2} s");
        println!(
            "    time as a multiple of that              {:>8.2}   target <= 1.5 (fan-out)",
            done / ideal
        );
        println!(
            "    origin egress (x size)                  {:>8.2}   target <= 2 (fan-out)",
            report.measured.origin_egress_x.unwrap_or(f64::NAN)
        );
        println!(
            "    invariants                              {}",
            if report.ok() { "all hold" } else { "VIOLATED" }
        );
    }

    let lossy = load("lossy-64");
    let (report, observer) = rt
        .block_on(run(&lossy, 1, Options::default(), &mut |_, _, _| {}))
        .unwrap();
    let item = &observer.items[0];
    let within = item
        .expected
        .iter()
        .filter(|&&n| item.held_at[n].is_some_and(|t| t - item.created <= 2.0))
        .count();
    let share = within as f64 / item.expected.len() as f64 * 100.0;
    println!();
    println!("  lossy-64 (5 % loss, 64 nodes)");
    println!("    nodes holding the record after 2 s      {share:>7.1} %   target >= 99 %");
    println!(
        "    p99 delay                               {:>8.2} s",
        report.measured.items[0].p99_secs.unwrap_or(f64::NAN)
    );
    println!(
        "    invariants                              {}",
        if report.ok() { "all hold" } else { "VIOLATED" }
    );
    println!();
    println!(
        "  (the simulator runs in real time: on a machine with few cores, CPU for 16 nodes' encryption"
    );
    println!("   and hashing, not the simulated links, can bound the fan-out time)");
}
