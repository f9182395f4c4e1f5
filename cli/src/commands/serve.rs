//! `niso registry serve`: run a node until interrupted.

use std::io::Write;

use anyhow::Context as _;
use niso_node::{ADMIN_KEY_FILE, Node, NodeConfig};

use crate::{cli::ServeArgs, context::Context};

/// Builds the node's configuration: file (if any), then flags, then the default data dir.
pub fn config(ctx: &Context, args: &ServeArgs) -> anyhow::Result<NodeConfig> {
    let default_file = ctx.default_registry_config();
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None if default_file.is_file() => NodeConfig::from_file(&default_file)?,
        None => NodeConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if config.data_dir.as_os_str().is_empty() {
        config.data_dir = ctx.default_registry_data();
    }
    if args.anonymous_pull {
        config.anonymous_pull = true;
    }
    // Asking for a p2p address or a peer on the command line is asking for p2p.
    if !args.p2p_listen.is_empty() {
        config.p2p.listen = args.p2p_listen.clone();
        config.p2p.enabled = Some(true);
    }
    if !args.bootstrap.is_empty() {
        config.p2p.bootstrap.extend(args.bootstrap.iter().cloned());
        config.p2p.enabled = Some(true);
    }
    if args.no_p2p {
        config.p2p.enabled = Some(false);
    }
    if args.no_mdns {
        config.p2p.mdns = false;
    }
    config.failpoints = ctx.failpoints.clone();
    Ok(config)
}

pub async fn run(ctx: &Context, args: &ServeArgs) -> anyhow::Result<()> {
    let config = config(ctx, args)?;
    let data_dir = config.data_dir.clone();
    let p2p = config.p2p_enabled();
    // Take the HTTP port before touching the data dir: a port in use must leave nothing
    // behind (no data dir, no admin key) for a second attempt to trip over.
    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another program, perhaps another registry, listens there; pick another with --listen)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("could not listen on {listen}{hint}"))
    })?;
    let node = Node::open(config)
        .await
        .with_context(|| format!("could not start a registry in {}", data_dir.display()))?;
    let addr = listener.local_addr()?;
    {
        // The first line is the readiness signal scripts and tests wait for.
        let mut out = std::io::stdout().lock();
        writeln!(out, "  niso registry listening on http://{addr}")?;
        writeln!(out, "  Data directory: {}", data_dir.display())?;
        let admin_key = data_dir.join(ADMIN_KEY_FILE);
        if admin_key.exists() {
            writeln!(
                out,
                "  Admin key: {} (log in with: niso login http://{addr} --key \"$(cat {})\")",
                admin_key.display(),
                admin_key.display()
            )?;
        }
        if !p2p {
            writeln!(
                out,
                "  Peer-to-peer: off (no [[replicate]] or [[share]] rules; see `niso registry serve --help`)"
            )?;
        }
        out.flush()?;
    }
    node.serve(listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
