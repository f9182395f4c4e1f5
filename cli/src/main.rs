//! `niso`: the registry client, and the registry node behind `niso registry serve`.
//!
//! This is the only place that reads the environment: it builds a [`context::Context`] and
//! hands it down.

#[macro_use]
mod output;

mod arch_arg;
mod cli;
mod client_config;
mod commands;
mod context;
mod exit;
mod failpoints;
mod installed;
mod lifecycle;
mod local_store;
mod pending_upload;
mod private_file;
mod progress;
mod registry_client;
mod resolved;
mod service;
mod table;
mod units;
mod unpack;

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::Parser;

use crate::{
    cli::{Cli, Command, RegistryCommand},
    context::Context,
};

/// jemalloc, not the system allocator: glibc keeps what one thread freed in that thread's arena,
/// so a serving node's resident memory kept the high-water mark of every burst (pushes, then
/// a peer's catch-up) in a different arena each time. ARCHITECTURE.md, "Memory", has figures.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Registry(RegistryCommand::Serve(_)));
    init_tracing(cli.global.verbose, serving);
    let ctx = match context_from_env(&cli) {
        Ok(ctx) => ctx,
        Err(message) => {
            eprintln!("niso: error: {message}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("niso: error: could not start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let (json, env_key) = (ctx.json, ctx.env_key.is_some());
    match runtime.block_on(commands::run(cli, ctx)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = exit::code(&err);
            let message = one_line(&err);
            let hint = exit::hint(&err, env_key);
            if json {
                // Scripts reading `--json` get the failure in the same shape, on stderr.
                eprintln!(
                    "{}",
                    serde_json::json!({"error": {"message": message, "hint": hint, "exit_code": code}})
                );
            } else {
                eprintln!("niso: error: {}", printable(&message));
                if let Some(hint) = hint {
                    eprintln!("niso: hint: {}", printable(&hint));
                }
            }
            ExitCode::from(code)
        }
    }
}

/// `context: cause: cause`, skipping causes whose text repeats the line so far.
fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Errors carry registries' own messages; their control characters are shown escaped, so an
/// answer cannot move the cursor, recolour or clear the terminal it is printed on.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn init_tracing(verbose: u8, serving: bool) {
    let default = match (verbose, serving) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = std::env::var("NISO_LOG").unwrap_or_else(|_| default.to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn context_from_env(cli: &Cli) -> Result<Context, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let stall_timeout = match var("NISO_STALL_TIMEOUT_SECS") {
        None => context::DEFAULT_STALL_TIMEOUT,
        Some(v) => match v.parse::<u64>() {
            Ok(secs) if secs > 0 => std::time::Duration::from_secs(secs),
            _ => {
                return Err(format!(
                    "NISO_STALL_TIMEOUT_SECS must be a whole number of seconds above 0, not {v:?}"
                ));
            }
        },
    };
    let home = var("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let config_home = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config"));
    let data_home = var("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".local/share"));
    let state_home = var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".local/state"));
    Ok(Context {
        config_path: config_home.join("niso/config.toml"),
        path_dirs: std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default(),
        config_home,
        data_home: data_home.join("niso"),
        state_home: state_home.join("niso"),
        registry: cli.global.registry.clone().or_else(|| var("NISO_REGISTRY")),
        env_key: var("NISO_KEY"),
        json: cli.global.json,
        systemd: var("NISO_NO_SYSTEMD").is_none(),
        progress: std::io::stderr().is_terminal() && !cli.global.json,
        failpoints: var("NISO_FAILPOINTS")
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        stall_timeout,
    })
}
