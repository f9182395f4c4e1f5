//! The checks every run ends with. Safety: nothing unverified stored or served, nothing private
//! leaked, no tag rolled back, no conflicting manifest accepted. Liveness: every node that
//! should hold a change holds it, within the scenario's bound after the last fault heals.

use niso_protocol::{Digest, record::Record};

use crate::{
    cluster::Cluster,
    hostile::FORGED_PREFIX,
    observer::{ItemKind, Observer},
    report::Check,
    scenario::Scenario,
};

fn check(kind: &str, name: &str, problems: Vec<String>) -> Check {
    Check {
        kind: kind.to_owned(),
        name: name.to_owned(),
        ok: problems.is_empty(),
        detail: problems.into_iter().take(5).collect::<Vec<_>>().join("; "),
    }
}

fn honest_up(cluster: &Cluster) -> Vec<usize> {
    (0..cluster.nodes.len())
        .filter(|&n| !cluster.nodes[n].hostile && cluster.store(n).is_some())
        .collect()
}

/// Every record a node holds verifies, every blob matches its name, and no forged package is
/// visible (so none can be served).
fn unverified(cluster: &Cluster) -> Vec<String> {
    let mut problems = Vec::new();
    for n in honest_up(cluster) {
        let Some(store) = cluster.store(n) else {
            continue;
        };
        let all = |_: &Record| true;
        let mut after = 0;
        loop {
            match store.records_after(after, 1000, 100_000, &all) {
                Ok((_, next, more)) => {
                    after = next;
                    if !more {
                        break;
                    }
                }
                Err(e) => {
                    problems.push(format!(
                        "node {n} stores a record that does not verify ({e})"
                    ));
                    break;
                }
            }
        }
        match store.blobs().list() {
            Ok(blobs) => {
                for b in blobs {
                    let path = store.blobs().path(&b.digest);
                    match niso_node::store::hash_file(&path) {
                        Ok((d, _)) if d == b.digest => {}
                        _ => problems.push(format!(
                            "node {n} holds blob {} whose bytes do not match",
                            b.digest
                        )),
                    }
                }
            }
            Err(e) => problems.push(format!("node {n}: cannot list blobs: {e}")),
        }
        for i in 0..8 {
            let name = format!("{FORGED_PREFIX}{i}");
            if store.versions(&name).is_ok_and(|v| !v.is_empty()) {
                problems.push(format!(
                    "node {n} accepted and serves forged package {name}"
                ));
            }
        }
    }
    problems
}

fn leaked(cluster: &Cluster, scenario: &Scenario) -> Vec<String> {
    let mut problems = Vec::new();
    for rule in &scenario.expect.private {
        let globs: Vec<globset::GlobMatcher> = rule
            .packages
            .iter()
            .filter_map(|g| globset::Glob::new(g).ok().map(|g| g.compile_matcher()))
            .collect();
        for &n in &rule.nodes {
            let Some(store) = cluster.store(n) else {
                continue;
            };
            let all = |_: &Record| true;
            if let Ok((records, _, _)) = store.records_after(0, 1000, 100_000, &all) {
                for r in records {
                    let name = r.body.package().to_string();
                    if globs.iter().any(|g| g.is_match(&name)) {
                        problems.push(format!("node {n} learned of private package {name}"));
                    }
                }
            }
        }
    }
    problems
}

fn conflicting(cluster: &Cluster, observer: &Observer) -> Vec<String> {
    let mut problems = Vec::new();
    for item in &observer.items {
        let ItemKind::Version {
            name,
            version,
            digest,
            ..
        } = &item.kind
        else {
            continue;
        };
        let Ok(v) = semver::Version::parse(version) else {
            continue;
        };
        for n in honest_up(cluster) {
            let Some(store) = cluster.store(n) else {
                continue;
            };
            if let Ok(Some(e)) = store.version(name, &v, &niso_protocol::Arch::any())
                && Digest::from_bytes(e.digest) != *digest
            {
                problems.push(format!(
                    "node {n} holds {name} {version} with other contents"
                ));
            }
        }
    }
    problems
}

/// Nobody waits on a silenced peer: every node expected to hold a change holds it within the
/// scenario's bound of the change or of the silence, whichever came later. A fetch or a sync
/// that waited on the silent node would hold its changes until the end of the run.
fn waited_on_silence(
    scenario: &Scenario,
    observer: &Observer,
    silenced: &[(usize, f64)],
) -> Vec<String> {
    let Some(since) = silenced.iter().map(|(_, t)| *t).reduce(f64::min) else {
        return Vec::new();
    };
    let bound = scenario.expect.converge_within_secs;
    let mut problems = Vec::new();
    for item in &observer.items {
        let from = item.created.max(since);
        for &n in &item.expected {
            match item.held_at[n] {
                Some(t) if t - from <= bound => {}
                Some(t) => problems.push(format!(
                    "node {n} got {} {:.1}s after the silence, more than {bound:.1}s",
                    item.label(),
                    t - from
                )),
                None => problems.push(format!(
                    "node {n} never got {} while a peer was silent",
                    item.label()
                )),
            }
        }
    }
    problems
}

pub fn check_all(
    cluster: &Cluster,
    scenario: &Scenario,
    observer: &Observer,
    converge_after_heal: Option<f64>,
    silenced: &[(usize, f64)],
) -> Vec<Check> {
    let mut not_converged = Vec::new();
    for item in &observer.items {
        for &n in &item.expected {
            if item.held_at[n].is_none() {
                not_converged.push(format!("node {n} never got {}", item.label()));
            }
        }
    }
    if let Some(t) = converge_after_heal
        && t > scenario.expect.converge_within_secs
    {
        not_converged.push(format!(
            "converged {t:.1}s after the last fault, more than the {:.1}s allowed",
            scenario.expect.converge_within_secs
        ));
    }
    let mut checks = vec![
        check(
            "safety",
            "nothing unverified stored or served",
            unverified(cluster),
        ),
        check(
            "safety",
            "nothing private leaked",
            leaked(cluster, scenario),
        ),
        check("safety", "no tag rolled back", observer.rollbacks.clone()),
        check(
            "safety",
            "no conflicting manifest accepted",
            conflicting(cluster, observer),
        ),
        check(
            "liveness",
            &format!(
                "all converge within {:.0}s after faults heal",
                scenario.expect.converge_within_secs
            ),
            not_converged,
        ),
    ];
    if !silenced.is_empty() {
        checks.push(check(
            "liveness",
            "nobody waits on a silent peer",
            waited_on_silence(scenario, observer, silenced),
        ));
    }
    checks
}
