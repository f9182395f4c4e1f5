//! Running a scenario: start the cluster, play the timeline, watch every node, check the
//! invariants, and build the report.

use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use niso_protocol::pack::Packer;
use rand::{Rng, SeedableRng};

use crate::{
    clock::Clock,
    cluster::{Cluster, Options},
    invariants,
    network::LinkSpec,
    observer::{Item, ItemKind, Observer},
    report::{Exact, ItemStats, Measured, Report, quantile},
    scenario::{Action, Scenario},
};

/// How often the observer looks at every node; timings have this resolution.
pub const SAMPLE: Duration = Duration::from_millis(25);

/// Where the nodes' wall clock starts under virtual time (2026-01-01T00:00:00Z): records signed
/// in a run carry the same timestamps for a seed, so the same bytes and gossip message ids.
const SIMULATED_EPOCH_MS: u64 = 1_767_225_600_000;

/// Progress callback: simulated seconds, events done, (converged, total) items.
pub type Progress<'a> = &'a mut (dyn FnMut(f64, usize, (usize, usize)) + Send);

/// Builds a package file deterministically from the seed.
fn make_package(
    dir: &Path,
    seed: u64,
    name: &str,
    version: &str,
    size_kib: u64,
) -> anyhow::Result<PathBuf> {
    let payload = dir.join(format!("{name}-{version}.payload"));
    {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(seed, name, version), &mut h);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(std::hash::Hasher::finish(&h));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&payload)?);
        let mut left = size_kib * 1024;
        let mut chunk = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            rng.fill_bytes(&mut chunk[..n]);
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
    }
    let out = dir.join(format!("{name}-{version}-any.niso"));
    let meta = format!(
        "name = \"{name}\"\nversion = \"{version}\"\narch = \"any\"\ndescription = \"simulated\"\n"
    );
    let mut packer = Packer::new(
        std::io::BufWriter::new(std::fs::File::create(&out)?),
        meta.as_bytes(),
    )?;
    let size = std::fs::metadata(&payload)?.len();
    packer.add_file("payload", false, size, std::fs::File::open(&payload)?)?;
    packer.finish()?.flush()?;
    std::fs::remove_file(payload)?;
    Ok(out)
}

/// A change made at `created` on `origin`, to be followed until every expected node holds it.
fn track(
    cluster: &Cluster,
    scenario: &Scenario,
    origin: usize,
    package: &str,
    created: f64,
    kind: ItemKind,
) -> Item {
    Item {
        kind,
        origin,
        package: package.to_owned(),
        created,
        expected: expected_holders(cluster, scenario, origin, package),
        held_at: vec![None; scenario.nodes],
        lazy: lazy_nodes(cluster, origin, package),
    }
}

/// Per node, whether it takes `package` from `origin` lazily.
fn lazy_nodes(cluster: &Cluster, origin: usize, package: &str) -> Vec<bool> {
    let origin_peer = &cluster.nodes[origin].peer_id;
    cluster
        .nodes
        .iter()
        .map(|n| {
            niso_node::trust::Trust::new(&n.config.replicate, &n.config.share).is_ok_and(|t| {
                t.accepts(origin_peer, package) == Some(niso_node::config::BlobMode::Lazy)
            })
        })
        .collect()
}

fn expected_holders(
    cluster: &Cluster,
    scenario: &Scenario,
    origin: usize,
    package: &str,
) -> Vec<usize> {
    let origin_peer = &cluster.nodes[origin].peer_id;
    (0..cluster.nodes.len())
        .filter(|&n| n != origin && !cluster.nodes[n].hostile)
        .filter(|&n| {
            let c = &cluster.nodes[n].config;
            niso_node::trust::Trust::new(&c.replicate, &c.share)
                .is_ok_and(|t| t.accepts(origin_peer, package).is_some())
        })
        .filter(|&n| {
            !scenario.expect.private.iter().any(|p| {
                p.nodes.contains(&n)
                    && p.packages.iter().any(|g| {
                        globset::Glob::new(g).is_ok_and(|g| g.compile_matcher().is_match(package))
                    })
            })
        })
        .collect()
}

/// Runs `scenario` with `seed` on the clock `options` asks for (or the scenario's default), on
/// a runtime of its own. Under virtual time that runtime lives on a new thread whose random
/// stream starts from the seed (`entropy.rs`): nothing drawn before, by this process or by an
/// earlier run in it, shifts what the run draws.
pub fn simulate(
    scenario: &Scenario,
    seed: u64,
    options: Options,
    progress: Progress<'_>,
) -> anyhow::Result<(Report, Observer)> {
    let clock = Clock::for_scenario(scenario, options.clock)?;
    let options = Options {
        clock: Some(clock),
        ..options
    };
    let mut on_runtime = move || {
        let runtime = clock.runtime()?;
        let outcome = clock.block_on(&runtime, run(scenario, seed, options, progress));
        // Nodes' writer threads and blocking work outlive their tasks briefly; do not wait on them.
        runtime.shutdown_background();
        outcome
    };
    match clock {
        Clock::Real => on_runtime(),
        Clock::Virtual => std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("niso-sim-run".into())
                .spawn_scoped(s, move || {
                    crate::entropy::reseed(seed);
                    on_runtime()
                })
                .context("could not start the run's thread")?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

async fn run(
    scenario: &Scenario,
    seed: u64,
    options: Options,
    progress: Progress<'_>,
) -> anyhow::Result<(Report, Observer)> {
    let wall = std::time::Instant::now();
    if options.clock == Some(Clock::Virtual) {
        // One thread runs everything: the order of events must not depend on when another
        // thread finishes, nor the nodes' records on the host's clock (`clock.rs`).
        niso_node::offload::in_place_on_this_thread();
        niso_node::clock::follow_runtime_clock(SIMULATED_EPOCH_MS);
    }
    let dir = tempfile::tempdir().context("could not create a work directory")?;
    let pkgs = dir.path().join("packages");
    std::fs::create_dir_all(&pkgs)?;
    let mut cluster = Cluster::new(scenario, seed, dir.path(), options)?;
    for i in 0..scenario.nodes {
        cluster
            .start(i)
            .await
            .with_context(|| format!("starting node {i}"))?;
    }
    let mut events = scenario.events.clone();
    events.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    let mut observer = Observer::default();
    let mut schedule = Vec::new();
    let mut crashed: HashSet<usize> = HashSet::new();
    // Silenced nodes and when they fell silent.
    let mut silenced: Vec<(usize, f64)> = Vec::new();
    // Tokio's clock: simulated time under the virtual clock, the wall clock otherwise.
    let start = tokio::time::Instant::now();
    let now = || start.elapsed().as_secs_f64();
    let last_fault = scenario.last_fault_end();
    let deadline =
        last_fault.max(scenario.last_change()) + scenario.expect.converge_within_secs + 5.0;
    let mut next = 0;
    let mut blob_sizes: Vec<(usize, u64)> = Vec::new();
    loop {
        while next < events.len() && events[next].at_secs <= now() {
            let event = &events[next];
            next += 1;
            schedule.push(format!("{:.1}s {}", event.at_secs, describe(&event.action)));
            match &event.action {
                Action::Push {
                    node,
                    package,
                    version,
                    size_kib,
                } => {
                    let file = make_package(&pkgs, seed, package, version, *size_kib)?;
                    let size = std::fs::metadata(&file)?.len();
                    let digest = cluster
                        .push(*node, package, &file)
                        .await
                        .with_context(|| format!("push of {package} {version}"))?;
                    blob_sizes.push((*node, size));
                    observer.add(track(
                        &cluster,
                        scenario,
                        *node,
                        package,
                        now(),
                        ItemKind::Version {
                            name: package.clone(),
                            version: version.clone(),
                            digest,
                            size,
                        },
                    ));
                }
                Action::Tag {
                    node,
                    package,
                    tag,
                    version,
                } => {
                    cluster.tag(*node, package, tag, version).await?;
                    let seq = cluster
                        .store(*node)
                        .and_then(|s| s.tag_entry(package, tag).ok().flatten())
                        .map(|e| e.tag_seq)
                        .unwrap_or(0);
                    observer.add(track(
                        &cluster,
                        scenario,
                        *node,
                        package,
                        now(),
                        ItemKind::Tag {
                            name: package.clone(),
                            tag: tag.clone(),
                            version: version.clone(),
                            tag_seq: seq,
                        },
                    ));
                }
                Action::Delete {
                    node,
                    package,
                    version,
                } => {
                    cluster.delete(*node, package, version).await?;
                    observer.add(track(
                        &cluster,
                        scenario,
                        *node,
                        package,
                        now(),
                        ItemKind::Deletion {
                            name: package.clone(),
                            version: version.clone(),
                        },
                    ));
                }
                Action::Partition { groups } => cluster.net.partition(groups),
                Action::Heal => cluster.net.heal(),
                Action::Clog { a, b, for_secs } => {
                    cluster.net.clog(*a, *b, Duration::from_secs_f64(*for_secs))
                }
                Action::Crash { node } => {
                    cluster.crash(*node);
                    crashed.insert(*node);
                }
                Action::Restart { node } => {
                    cluster.start(*node).await?;
                    crashed.remove(node);
                }
                Action::Silence { node } => {
                    cluster.net.silence(*node);
                    silenced.push((*node, now()));
                }
                Action::Loss { value } => {
                    let link = scenario.link;
                    cluster.net.set_all_links(LinkSpec {
                        latency: Duration::from_secs_f64(link.latency_ms / 1000.0),
                        jitter: Duration::from_secs_f64(link.jitter_ms / 1000.0),
                        loss: *value,
                    });
                }
            }
        }
        // Nodes that are down at the end cannot be expected to converge.
        // A silenced node never comes back: nobody expects anything of it.
        for item in &mut observer.items {
            item.expected.retain(|n| {
                (!crashed.contains(n) || next < events.len())
                    && !silenced.iter().any(|(s, _)| s == n)
            });
        }
        observer.sample(&cluster, now());
        let converged = observer.items.iter().filter(|i| i.converged()).count();
        progress(now(), next, (converged, observer.items.len()));
        let timeline_done = next >= events.len();
        if timeline_done && observer.all_converged() && now() >= last_fault {
            break;
        }
        if now() > deadline {
            break;
        }
        tokio::time::sleep(SAMPLE).await;
    }
    let duration = now();

    let converge_after_heal = observer
        .items
        .iter()
        .flat_map(|i| i.expected.iter().filter_map(|&n| i.held_at[n]))
        .fold(None::<f64>, |m, t| Some(m.map_or(t, |m: f64| m.max(t))))
        .map(|t| (t - last_fault).max(0.0));
    let invariants = invariants::check_all(
        &cluster,
        scenario,
        &observer,
        converge_after_heal,
        &silenced,
    );
    let bytes_sent = cluster.net.bytes_sent();
    let needed: u64 = observer
        .items
        .iter()
        .filter_map(|i| match &i.kind {
            ItemKind::Version { size, .. } => {
                Some(size * i.expected.iter().filter(|&&n| !i.lazy[n]).count() as u64)
            }
            _ => None,
        })
        .sum();
    let served: u64 = (0..scenario.nodes)
        .filter_map(|n| {
            cluster
                .node(n)
                .map(|node| node.state().metrics.p2p_blob_bytes_served.get())
        })
        .sum();
    let largest = blob_sizes.iter().max_by_key(|(_, s)| *s).copied();
    let measured = Measured {
        duration_secs: duration,
        wall_secs: wall.elapsed().as_secs_f64(),
        items: observer
            .items
            .iter()
            .map(|i| {
                let d = i.delays();
                ItemStats {
                    item: i.label(),
                    holders: d.len(),
                    expected: i.expected.len(),
                    p50_secs: quantile(&d, 0.5),
                    p99_secs: quantile(&d, 0.99),
                    max_secs: quantile(&d, 1.0),
                }
            })
            .collect(),
        bytes_per_blob_byte_per_node: (needed > 0)
            .then(|| bytes_sent.iter().sum::<u64>() as f64 / needed as f64),
        origin_egress_x: largest.map(|(o, size)| bytes_sent[o] as f64 / size as f64),
        duplicate_transfer_x: (needed > 0)
            .then(|| (served as f64 - needed as f64).max(0.0) / needed as f64),
        converge_after_heal_secs: converge_after_heal,
        bytes_sent,
    };
    let holdings = (0..scenario.nodes)
        .map(|n| {
            let mut held: Vec<String> = observer
                .items
                .iter()
                .filter(|i| i.origin == n || i.held_at[n].is_some())
                .map(Item::label)
                .collect();
            held.sort();
            held
        })
        .collect();
    let report = Report {
        scenario: scenario.name.clone(),
        seed,
        clock: options.clock.unwrap_or(Clock::Real).to_string(),
        exact: Exact {
            nodes: scenario.nodes,
            peer_ids: cluster.nodes.iter().map(|n| n.peer_id.clone()).collect(),
            events: schedule,
            holdings,
            invariants,
        },
        measured,
    };
    cluster.shutdown();
    Ok((report, observer))
}

fn describe(action: &Action) -> String {
    match action {
        Action::Push {
            node,
            package,
            version,
            size_kib,
        } => format!("push {package} {version} ({size_kib} KiB) on node {node}"),
        Action::Tag {
            node,
            package,
            tag,
            version,
        } => format!("tag {package}:{version} as {tag} on node {node}"),
        Action::Delete {
            node,
            package,
            version,
        } => format!("delete {package} {version} on node {node}"),
        Action::Partition { groups } => format!("partition {groups:?}"),
        Action::Heal => "heal".into(),
        Action::Clog { a, b, for_secs } => format!("clog {a}-{b} for {for_secs}s"),
        Action::Crash { node } => format!("crash node {node}"),
        Action::Restart { node } => format!("restart node {node}"),
        Action::Silence { node } => format!("silence node {node}"),
        Action::Loss { value } => format!("loss {value}"),
    }
}
