//! `niso registry gc | mirror | info`.

use anyhow::Context as _;
use niso_protocol::api::{GcRequest, MirrorRequest};

use crate::{
    client_config::ClientConfig, context::Context, progress, registry_client::RegistryClient,
    units, units::plural,
};

pub async fn gc(
    ctx: &Context,
    client: &RegistryClient,
    keep: u32,
    dry_run: bool,
) -> anyhow::Result<()> {
    let report = client
        .gc(&GcRequest {
            keep_versions: keep,
            dry_run,
        })
        .await?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verb = if dry_run { "Would remove" } else { "Removed" };
    outln!(
        "  {verb} {} version{} and {} blob{} ({})",
        report.versions.len(),
        plural(report.versions.len() as u64),
        report.blobs,
        plural(report.blobs),
        units::size(report.blob_bytes)
    );
    for v in &report.versions {
        outln!(
            "    {} {} ({})  {}",
            v.name,
            v.version,
            v.arch,
            units::size(v.size)
        );
    }
    if report.blobs_in_grace > 0 {
        outln!(
            "  Kept {} unreferenced blob{} younger than the grace period",
            report.blobs_in_grace,
            plural(report.blobs_in_grace)
        );
    }
    if dry_run {
        outln!("  Nothing was removed (dry run).");
    }
    Ok(())
}

pub async fn mirror(ctx: &Context, from: &str, to: &str) -> anyhow::Result<()> {
    let config = ClientConfig::load(&ctx.config_path)?;
    let source = config.target(Some(from), None)?;
    let target = config.target(Some(to), ctx.env_key.as_deref())?;
    let client = RegistryClient::new(target.clone());
    let label = format!("mirroring {} → {}", source.name, target.name);
    let bar = progress::activity(ctx.progress, &label);
    let request = MirrorRequest {
        from: source.url.clone(),
        key: source.key.clone(),
    };
    let mirrored = client.mirror(&request);
    let report = tokio::select! {
        report = mirrored => report,
        never = watch_versions(ctx.progress, &client, &bar, &label) => match never {},
    };
    bar.finish_and_clear();
    let report =
        report.with_context(|| format!("mirroring {} into {} failed", source.name, target.name))?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    outln!(
        "  Mirrored {} → {} over {}: {} version{}, {} tag update{}, {} deletion{}",
        source.name,
        target.name,
        report.via,
        report.versions,
        plural(report.versions),
        report.tags,
        plural(report.tags),
        report.deletions,
        plural(report.deletions)
    );
    outln!(
        "  Fetched {} blob{} ({}); {} record{} already present",
        report.blobs_fetched,
        plural(report.blobs_fetched),
        units::size(report.bytes_fetched),
        report.skipped,
        plural(report.skipped)
    );
    if !report.via_reason.is_empty() {
        outln!("  Over {}: {}", report.via, report.via_reason);
    }
    if !report.offered.is_empty() {
        outln!(
            "  The source offered {}; records outside that were not seen",
            report.offered
        );
    }
    if report.untrusted > 0 {
        outln!(
            "  Skipped {} record{} that no [[replicate]] rule of {} accepts",
            report.untrusted,
            plural(report.untrusted),
            target.name
        );
    }
    if report.incomplete > 0 {
        outln!(
            "  Left {} record{} for a later mirror: {} blob could not be fetched (reasons below)",
            report.incomplete,
            plural(report.incomplete),
            if report.incomplete == 1 {
                "its"
            } else {
                "their"
            }
        );
    }
    for r in &report.rejected {
        outln!("  Refused: {r}");
    }
    Ok(())
}

/// While a node mirrors (one long request), how many versions it has gained, from its own
/// count once a second; never returns. Does nothing when progress is off.
async fn watch_versions(
    enabled: bool,
    client: &RegistryClient,
    bar: &indicatif::ProgressBar,
    label: &str,
) -> std::convert::Infallible {
    let start = match client.node_info().await {
        Ok(info) if enabled => info.versions,
        _ => std::future::pending().await,
    };
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if let Ok(info) = client.node_info().await {
            let gained = info.versions.saturating_sub(start);
            bar.set_message(format!(
                "{label}: {gained} version{} so far",
                plural(gained)
            ));
        }
    }
}

pub async fn info(ctx: &Context, client: &RegistryClient) -> anyhow::Result<()> {
    let info = client.node_info().await?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    outln!(
        "  Registry   {} ({})",
        client.target.name,
        client.target.url
    );
    outln!("  Peer id    {}", info.peer_id);
    outln!("  Version    {}", info.version);
    if info.p2p_addrs.is_empty() {
        outln!("  P2P        off");
    } else {
        for a in &info.p2p_addrs {
            outln!("  P2P        {a}");
        }
    }
    outln!(
        "  Packages   {} ({} version{})",
        info.packages,
        info.versions,
        plural(info.versions)
    );
    Ok(())
}

/// `registry info --data-dir DIR`: the identity of a node that need not be running.
pub fn info_offline(ctx: &Context, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let secret = niso_node::identity::load(data_dir)
        .with_context(|| format!("could not read the node identity in {}", data_dir.display()))?;
    let origin = secret.origin();
    let peer_id = niso_node::identity::peer_id(&origin);
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({"data_dir": data_dir, "peer_id": peer_id, "origin": origin.to_string()})
        );
        return Ok(());
    }
    outln!("  Data dir   {}", data_dir.display());
    outln!("  Peer id    {peer_id}");
    outln!("  Origin     {origin}");
    Ok(())
}

pub async fn peers(ctx: &Context, client: &RegistryClient) -> anyhow::Result<()> {
    let peers = client.peers().await?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&peers)?);
        return Ok(());
    }
    if peers.is_empty() {
        outln!("  No peers yet.");
        return Ok(());
    }
    let mut rows = vec![vec![
        "PEER".to_owned(),
        "STATE".to_owned(),
        "LATENCY".to_owned(),
        "SYNCED".to_owned(),
        "BEHIND".to_owned(),
        "REFUSED".to_owned(),
        "ADDRESS".to_owned(),
    ]];
    for p in peers {
        let state = if p.blocked {
            "blocked"
        } else if p.connected {
            "connected"
        } else {
            "known"
        };
        let latency = p
            .latency_ms
            .map(|l| format!("{l} ms"))
            .unwrap_or_else(|| "-".into());
        let synced = match (p.synced_to, p.last_sync_ms) {
            (Some(pos), Some(at)) => format!("#{pos} at {}", units::date(at)),
            _ => "never".into(),
        };
        let addr = p.addrs.first().map_or("-", String::as_str).to_owned();
        rows.push(vec![
            p.peer_id,
            state.to_owned(),
            latency,
            synced,
            // Positions of its log not applied here yet (blobs still coming hold them back).
            p.records_behind
                .map_or_else(|| "-".to_owned(), |b| b.to_string()),
            // Records it relayed that this node's intake refused (authority, conflicts, ...).
            p.records_refused.to_string(),
            addr,
        ]);
    }
    out!("{}", crate::table::render(&rows));
    Ok(())
}
