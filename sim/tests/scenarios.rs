//! The shipped scenarios, run over fixed seeds with every invariant holding; the same seed
//! giving the same exact report; and a deliberately broken node caught by the checks.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};

use niso_sim::{
    cluster::Options,
    run::run,
    scenario::{Action, Scenario},
};

fn scenario(name: &str) -> Scenario {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"));
    let mut s = Scenario::load(&path).unwrap();
    // CI runs the fanout with a smaller package; the benchmark runs it at full size.
    for e in &mut s.events {
        if let Action::Push { size_kib, .. } = &mut e.action {
            *size_kib = (*size_kib).min(8 * 1024);
        }
    }
    s
}

/// The simulator runs in real time, so its bounds assume it has the machine: cargo runs a
/// binary's tests on parallel threads, and two clusters at once on two cores would measure
/// each other. One scenario at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_seed(s: &Scenario, seed: u64, options: Options) -> niso_sim::report::Report {
    // A scenario that failed an assertion poisons the lock; the next one may still run.
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (report, _) = rt
        .block_on(run(s, seed, options, &mut |_, _, _| {}))
        .unwrap();
    report
}

fn holds_everywhere(name: &str, seeds: &[u64]) {
    let s = scenario(name);
    for &seed in seeds {
        let report = run_seed(&s, seed, Options::default());
        assert!(
            report.ok(),
            "{name} failed with seed {seed} (replay: niso-sim run sim/scenarios/{name}.toml --seed {seed}):\n{}",
            report.render()
        );
        assert!(!report.measured.items.is_empty());
    }
}

#[test]
fn fanout() {
    holds_everywhere("fanout", &[1, 2]);
}

#[test]
fn hub_and_spoke() {
    // Peers that cannot help must not starve the one that can.
    holds_everywhere("hub-and-spoke", &[1, 2]);
}

#[test]
fn partition_heal() {
    holds_everywhere("partition-heal", &[1, 2, 3]);
}

#[test]
fn churn() {
    holds_everywhere("churn", &[1, 2, 3]);
}

#[test]
fn lossy_64() {
    holds_everywhere("lossy-64", &[1, 2]);
}

#[test]
fn hostile_peer() {
    holds_everywhere("hostile-peer", &[1, 2, 3]);
}

#[test]
fn stalled_peer() {
    // A peer that goes silent mid-transfer holds up no one.
    holds_everywhere("stalled-peer", &[1, 2]);
}

#[test]
fn private_sharing() {
    holds_everywhere("private-sharing", &[1, 2, 3]);
}

/// Exact figures (identities, schedule, final holdings, verdicts) repeat for a seed; timings and
/// traffic depend on the host's scheduling and are not compared.
#[test]
fn the_same_seed_gives_the_same_exact_report() {
    let s = scenario("partition-heal");
    let a = run_seed(&s, 7, Options::default());
    let b = run_seed(&s, 7, Options::default());
    assert_eq!(a.exact, b.exact);
    let c = run_seed(&s, 8, Options::default());
    assert_ne!(
        a.exact.peer_ids, c.exact.peer_ids,
        "another seed, other identities"
    );
}

/// A node that skips signature checks (compiled into test builds only) accepts the hostile
/// peer's forged records: the simulator must say so.
#[test]
fn a_broken_node_fails_the_hostile_scenario() {
    let s = scenario("hostile-peer");
    let report = run_seed(
        &s,
        1,
        Options {
            broken_node: Some(1),
        },
    );
    assert!(
        !report.ok(),
        "the broken node went unnoticed:\n{}",
        report.render()
    );
    let failed: Vec<&str> = report
        .exact
        .invariants
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        failed.contains(&"nothing unverified stored or served"),
        "{failed:?}\n{}",
        report.render()
    );
    let detail = &report.exact.invariants[0].detail;
    assert!(detail.contains("node 1"), "{detail}");
}
