//! Simulator benchmarks, printing figures:
//!
//! - `fanout`: one origin, 15 nodes on 100 Mbit/s uplinks, a 256 MiB package (`NISO_BENCH_MIB`
//!   to change). Time for all to hold the verified package as a multiple of size ÷ link
//!   bandwidth (target ≤ 1.2), origin egress as a multiple of the size (target ≤ 1.2), and a
//!   hub-and-spoke baseline (only the origin shares, so every node pulls from it) in the same
//!   run.
//! - `lossy-64`: share of 64 nodes holding a new record 2 s after it was made, at 5 % loss
//!   (target ≥ 99 %).
//! - `fanout-256` (64 MiB to 255 nodes) and `lossy-256`, the same figures at 256 nodes, and the
//!   host time each took (target < 5 min).
//!
//! All on the virtual clock (`docs/simulator.md`): timings are simulated time.
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
    run::simulate,
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
        "simulation benchmarks, virtual clock ({} MiB fan-out to 15 nodes at {mbit} Mbit/s uplinks)",
        mib
    );
    fan_out("fan-out", &fanout, mbit, "target <= 1.2");
    fan_out("hub and spoke", &hub, mbit, "baseline");
    spread(&load("lossy-64"));
    // Both 1.2 targets (time and origin egress) are the 16-node fan-out's; at 256 nodes the
    // target is host time.
    fan_out(
        "fanout-256 (64 MiB, 255 nodes)",
        &load("fanout-256"),
        mbit,
        "no target at 256 nodes",
    );
    spread(&load("lossy-256"));
}

/// Runs a fan-out and prints its time against size ÷ link bandwidth and its origin egress,
/// each beside `target` (the same for both).
fn fan_out(label: &str, scenario: &Scenario, mbit: f64, target: &str) {
    let (report, observer) = simulate(scenario, 1, Options::default(), &mut |_, _, _| {}).unwrap();
    let item = &observer.items[0];
    let size = match &item.kind {
        niso_sim::observer::ItemKind::Version { size, .. } => *size as f64,
        _ => unreachable!(),
    };
    let ideal = size / (mbit * 1_000_000.0 / 8.0);
    let done = report.measured.items[0].max_secs.unwrap_or(f64::NAN);
    let nodes = item.expected.len();
    println!();
    println!("  {label}");
    println!("    all {nodes:>3} hold the verified package after {done:>8.2} s");
    println!("    size / link bandwidth                   {ideal:>8.2} s");
    println!(
        "    time as a multiple of that              {:>8.2}   {target}",
        done / ideal
    );
    println!(
        "    origin egress (x size)                  {:>8.2}   {target}",
        report.measured.origin_egress_x.unwrap_or(f64::NAN)
    );
    print_footer(&report);
}

/// Runs a record spread and prints the share of nodes holding it within 2 s.
fn spread(scenario: &Scenario) {
    let (report, observer) = simulate(scenario, 1, Options::default(), &mut |_, _, _| {}).unwrap();
    let item = &observer.items[0];
    let within = item
        .expected
        .iter()
        .filter(|&&n| item.held_at[n].is_some_and(|t| t - item.created <= 2.0))
        .count();
    let share = within as f64 / item.expected.len() as f64 * 100.0;
    println!();
    println!("  {} (5 % loss, {} nodes)", scenario.name, scenario.nodes);
    println!("    nodes holding the record after 2 s      {share:>7.1} %   target >= 99 %");
    println!(
        "    p99 delay                               {:>8.2} s",
        report.measured.items[0].p99_secs.unwrap_or(f64::NAN)
    );
    print_footer(&report);
}

fn print_footer(report: &niso_sim::report::Report) {
    println!(
        "    invariants                              {}",
        if report.ok() { "all hold" } else { "VIOLATED" }
    );
    println!(
        "    host time                               {:>8.1} s   target < 300 s (256 nodes)",
        report.measured.wall_secs
    );
}
