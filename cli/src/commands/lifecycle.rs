//! `niso install`, `activate`, `deactivate`, `rollback`, `upgrade`, `list`, `remove` and
//! `service run`: each parses its arguments, fetches what it needs from the registry, hands the
//! verified archive to [`crate::lifecycle`], and prints what that reports.

use niso_protocol::{PackageName, Version, reference::PackageRef};

use crate::{
    commands::pull,
    context::Context,
    failpoints::Failpoints,
    lifecycle::{Activation, Deactivation, Installation, Lifecycle, ServiceOutcome},
    registry_client::RegistryClient,
    resolved::ResolvedPackage,
    service, table,
};

fn lifecycle(ctx: &Context) -> Lifecycle {
    Lifecycle::new(
        &ctx.data_home,
        &ctx.config_home,
        ctx.systemd,
        Failpoints::new(&ctx.failpoints),
    )
}

fn report(ctx: &Context, line: &str) {
    if !ctx.json {
        outln!("  {line}");
    }
}

fn report_service(ctx: &Context, name: &PackageName, service: &ServiceOutcome) {
    match service {
        ServiceOutcome::None => {}
        ServiceOutcome::UnderSystemd { unit } => {
            report(ctx, &format!("Service {unit} is running under systemd"));
        }
        ServiceOutcome::NoSystemd => report(
            ctx,
            &format!(
                "systemd is not running here; run the service in the foreground with `niso service run {name}`"
            ),
        ),
    }
}

/// Pulls (verified) and installs `resolved` unless that exact build is installed already.
async fn install_resolved(
    ctx: &Context,
    client: &RegistryClient,
    resolved: &ResolvedPackage,
) -> anyhow::Result<Installation> {
    let lifecycle = lifecycle(ctx);
    if lifecycle.has_build(resolved)? {
        return Ok(Installation::AlreadyInstalled);
    }
    let archive = pull::fetch(ctx, client, resolved).await?;
    let resolved = resolved.clone();
    tokio::task::spawn_blocking(move || lifecycle.install(&archive, &resolved)).await?
}

/// Where the version a reference names comes from.
enum Source {
    /// That exact version is installed already.
    Installed(Version),
    Registry(ResolvedPackage),
}

/// Finds `reference` installed when it names an exact installed version, else resolves it
/// against the registry.
async fn resolve_for_install(
    ctx: &Context,
    client: &RegistryClient,
    reference: &PackageRef,
) -> anyhow::Result<Source> {
    if let Some(version) =
        lifecycle(ctx).installed_exact(&reference.name, reference.selector.as_deref())?
    {
        return Ok(Source::Installed(version));
    }
    Ok(Source::Registry(
        pull::resolve(client, &reference.to_string(), None).await?,
    ))
}

pub async fn install(
    ctx: &Context,
    client: &RegistryClient,
    reference: &str,
) -> anyhow::Result<()> {
    let r: PackageRef = reference.parse()?;
    let Source::Registry(resolved) = resolve_for_install(ctx, client, &r).await? else {
        report(ctx, &format!("{reference} is already installed"));
        return Ok(());
    };
    let verb = match install_resolved(ctx, client, &resolved).await? {
        Installation::Installed => "Installed",
        Installation::AlreadyInstalled => "Already installed",
    };
    report(ctx, &format!("{verb} {resolved}"));
    Ok(())
}

pub async fn activate(
    ctx: &Context,
    client: &RegistryClient,
    reference: &str,
    system: bool,
) -> anyhow::Result<()> {
    let r: PackageRef = reference.parse()?;
    let version = match resolve_for_install(ctx, client, &r).await? {
        Source::Installed(version) => version,
        Source::Registry(resolved) => {
            install_resolved(ctx, client, &resolved).await?;
            lifecycle(ctx).remember_registry(&r.name, &client.target.name)?;
            resolved.version
        }
    };
    let activation = lifecycle(ctx).activate(&r.name, &version, system)?;
    report_service(ctx, &r.name, &activation.service);
    report(ctx, &format!("Activated {} {version}", r.name));
    bin_path_hint(ctx);
    Ok(())
}

fn bin_path_hint(ctx: &Context) {
    let lifecycle = lifecycle(ctx);
    let bin = lifecycle.bin_dir();
    if !ctx.path_dirs.iter().any(|d| d == bin) {
        report(
            ctx,
            &format!(
                "Add {} to your PATH to run package executables",
                bin.display()
            ),
        );
    }
}

pub fn deactivate(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let name = &PackageName::new(name)?;
    let done = lifecycle(ctx).deactivate(name)?;
    report_deactivation(ctx, name, &done);
    Ok(())
}

fn report_deactivation(ctx: &Context, name: &PackageName, done: &Deactivation) {
    if let Some(unit) = &done.stopped_unit {
        report(ctx, &format!("Stopped and removed {unit}"));
    }
    report(ctx, &format!("Deactivated {name} {}", done.version));
}

pub fn rollback(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let name = &PackageName::new(name)?;
    let done = lifecycle(ctx).rollback(name)?;
    report_service(ctx, name, &done.service);
    let to = &done.to;
    report(ctx, &format!("Rolled back {name} to {to}"));
    if let Some(from) = &done.held_from {
        report(
            ctx,
            &format!(
                "{name} is held at {to}: `niso upgrade` leaves it; `niso upgrade {name}` moves on from {from} again"
            ),
        );
    }
    Ok(())
}

/// `niso upgrade [NAME[:REF]]`: pull, install and activate the newest build the tracked
/// reference names. Without a name, every installed package.
pub async fn upgrade(
    ctx: &Context,
    client: &RegistryClient,
    reference: Option<&str>,
    system: bool,
) -> anyhow::Result<()> {
    let lifecycle = lifecycle(ctx);
    // A named package without a reference means `latest`; no name means each package's
    // tracked reference.
    let targets: Vec<(PackageName, Option<String>)> = match reference {
        Some(r) => {
            let r: PackageRef = r.parse()?;
            let selector = r.selector.unwrap_or_else(|| "latest".to_owned());
            vec![(r.name, Some(selector))]
        }
        None => lifecycle
            .list()?
            .into_iter()
            .map(|(name, _)| (name, None))
            .collect(),
    };
    if targets.is_empty() {
        report(ctx, "Nothing is installed");
        return Ok(());
    }
    let mut failures = Vec::new();
    for (name, selector) in targets {
        let state = lifecycle.state(&name)?;
        if let (None, Some(from), Some(active)) = (&selector, &state.held_from, &state.active) {
            report(
                ctx,
                &format!(
                    "{name} is held at {active} (rolled back from {from}); `niso upgrade {name}` to move on"
                ),
            );
            continue;
        }
        let track = selector
            .or(state.track.clone())
            .unwrap_or_else(|| "latest".to_owned());
        match upgrade_one(ctx, client, &name, &track, state.active.as_ref(), system).await {
            Ok(line) => report(ctx, &line),
            Err(e) => {
                // With nothing installed there is nothing to keep; the error says what failed.
                if let Some(active) = &state.active {
                    report(
                        ctx,
                        &format!("{name}: upgrade failed, {active} stays active"),
                    );
                }
                failures.push(e.context(format!("upgrading {name}")));
            }
        }
    }
    match failures.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Upgrades one package; returns the line that says what happened.
async fn upgrade_one(
    ctx: &Context,
    client: &RegistryClient,
    name: &PackageName,
    track: &str,
    active: Option<&Version>,
    system: bool,
) -> anyhow::Result<String> {
    let reference = format!("{name}:{track}");
    let resolved = pull::resolve(client, &reference, None).await?;
    let registry = &client.target.name;
    if active == Some(&resolved.version) {
        lifecycle(ctx).follow(name, track, registry)?;
        return Ok(format!(
            "{name} {} is up to date ({track})",
            resolved.version
        ));
    }
    install_resolved(ctx, client, &resolved).await?;
    let Activation { replaced, service } =
        lifecycle(ctx).switch(name, &resolved.version, track, registry, system)?;
    report_service(ctx, name, &service);
    Ok(match replaced {
        Some(old) => format!("Upgraded {name} {old} → {} ({track})", resolved.version),
        None => format!(
            "Installed and activated {name} {} ({track})",
            resolved.version
        ),
    })
}

pub fn list(ctx: &Context) -> anyhow::Result<()> {
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "ACTIVE".to_owned(),
        "INSTALLED".to_owned(),
        "TRACKS".to_owned(),
    ]];
    let mut json = Vec::new();
    for (name, state) in lifecycle(ctx).list()? {
        // The map's keys are versions, so they come out in version order.
        let versions: Vec<String> = state.installed.keys().map(Version::to_string).collect();
        let active = state.active.as_ref().map(Version::to_string);
        json.push(serde_json::json!({
            "name": name, "active": active, "installed": versions, "track": state.track,
            "held_from": state.held_from.as_ref().map(Version::to_string),
        }));
        let tracks = match &state.held_from {
            Some(from) => format!("held (rolled back from {from})"),
            None => state.track.clone().unwrap_or_else(|| "-".into()),
        };
        rows.push(vec![
            name.to_string(),
            active.unwrap_or_else(|| "-".into()),
            versions.join(", "),
            tracks,
        ]);
    }
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&json)?);
    } else if rows.len() == 1 {
        outln!("  Nothing is installed. Try `niso upgrade NAME`.");
    } else {
        out!("{}", table::render(&rows));
    }
    Ok(())
}

pub fn remove(ctx: &Context, reference: &str, force: bool) -> anyhow::Result<()> {
    let r: PackageRef = reference.parse()?;
    let name = &r.name;
    let done = lifecycle(ctx).remove(name, r.selector.as_deref(), force)?;
    if let Some(deactivated) = &done.deactivated {
        report_deactivation(ctx, name, deactivated);
    }
    let removed: Vec<String> = done.removed.iter().map(Version::to_string).collect();
    report(ctx, &format!("Removed {name} {}", removed.join(", ")));
    Ok(())
}

/// `niso service run NAME`: the active version's service, in the foreground.
pub async fn service_run(ctx: &Context, name: &str) -> anyhow::Result<i32> {
    let name = &PackageName::new(name)?;
    let (spec, root) = lifecycle(ctx).active_service(name)?;
    service::run_foreground(name.as_str(), &spec, &root).await
}
