//! `niso-sim`: run a federation scenario over many seeds and report convergence, traffic and
//! the invariants checked. Exits with 1 when any invariant is violated.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use niso_sim::{clock::Clock, cluster::Options, plot, run::simulate, scenario::Scenario};

#[derive(Debug, Parser)]
#[command(
    name = "niso-sim",
    version,
    about = "Simulate a federation of niso nodes under network faults."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file and print its report.
    #[command(
        after_help = "Examples:\n  niso-sim run sim/scenarios/partition-heal.toml --seed 7\n  niso-sim run sim/scenarios/lossy-64.toml --seeds 5 --json\n  niso-sim run sim/scenarios/fanout.toml --plot fanout.svg\n  niso-sim run sim/scenarios/churn.toml --clock real"
    )]
    Run {
        file: PathBuf,
        /// The seed (the first one, with --seeds).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Run this many consecutive seeds.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// Print reports as JSON lines.
        #[arg(long)]
        json: bool,
        /// Write the convergence curve of each run as SVG (`-SEED` is added for several seeds).
        #[arg(long)]
        plot: Option<PathBuf>,
        /// `virtual` (simulated time on one paused runtime) or `real` (the wall clock).
        /// Default: virtual, unless the timeline crashes or restarts a node.
        #[arg(long)]
        clock: Option<Clock>,
    },
}

/// Answers every draw of randomness in this process from the seeded streams of
/// `niso_sim::entropy` instead of the kernel. The standard library and the `getrandom` crate
/// find this definition by name at run time (rustc exports an executable's `no_mangle`
/// functions for such lookups).
///
/// # Safety
/// The caller passes a buffer of `len` writable bytes, as the C library's `getrandom` asks.
#[expect(
    unsafe_code,
    reason = "the only way to stand in for a C library function the runtime looks up"
)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getrandom(buf: *mut u8, len: usize, _flags: u32) -> isize {
    // A zero-length call (with a dangling pointer) is how callers probe for support.
    if len == 0 || buf.is_null() {
        return 0;
    }
    // SAFETY: the caller hands over `len` writable bytes at `buf` (the function's contract).
    let buf = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    niso_sim::entropy::fill(buf);
    isize::try_from(len).unwrap_or(isize::MAX)
}

fn main() -> ExitCode {
    let Command::Run {
        file,
        seed,
        seeds,
        json,
        plot: plot_path,
        clock,
    } = Cli::parse().command;
    if let Ok(filter) = std::env::var("NISO_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let scenario = match Scenario::load(&file) {
        Ok(s) => s,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                msg.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("niso-sim: error: {msg}");
            return ExitCode::from(2);
        }
    };
    let interactive = std::io::stderr().is_terminal() && !json;
    let mut failed = false;
    for s in seed..seed + seeds.max(1) {
        let bar = if interactive {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut progress = |t: f64, events: usize, (done, total): (usize, usize)| {
            bar.set_message(format!(
                "{} seed {s}: {t:.1}s simulated, {events}/{} events, {done}/{total} changes converged",
                scenario.name,
                scenario.events.len()
            ));
        };
        let options = Options {
            clock,
            ..Options::default()
        };
        let outcome = simulate(&scenario, s, options, &mut progress);
        bar.finish_and_clear();
        let (report, observer) = match outcome {
            Ok(r) => r,
            Err(e) => {
                eprintln!("niso-sim: error: seed {s}: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        if std::env::var_os("NISO_SIM_TRACE").is_some() {
            for item in &observer.items {
                eprintln!(
                    "{} created {:.2}: {:?}",
                    item.label(),
                    item.created,
                    item.held_at
                );
            }
        }
        if json {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
        } else {
            print!("{}", report.render());
        }
        if let Some(path) = &plot_path {
            let path = if seeds > 1 {
                path.with_file_name(format!(
                    "{}-{s}.svg",
                    path.file_stem()
                        .map(|x| x.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ))
            } else {
                path.clone()
            };
            let svg = plot::svg(
                &format!("{} (seed {s})", scenario.name),
                &observer.curves(),
                report.measured.duration_secs,
            );
            if let Err(e) = std::fs::write(&path, svg) {
                eprintln!("niso-sim: error: could not write {}: {e}", path.display());
            }
        }
        if !report.ok() {
            eprintln!(
                "niso-sim: invariant violated in {} with seed {s}; replay with --seed {s}",
                scenario.name
            );
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
