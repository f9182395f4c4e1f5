//! The package lifecycle on this machine: install, activate, deactivate, rollback, upgrade,
//! list, remove, and running a package's service in the foreground.
//!
//! Every step is verified and ordered so that a failure leaves the previously active version
//! active and intact: a new version is unpacked beside the old ones and becomes active only by
//! one atomic symlink swap, after every check has passed.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use niso_protocol::{
    PackageMeta, PackageName, Version, archive::META_ENTRY, reference::PackageRef,
};

use crate::{
    commands::pull,
    context::Context,
    failpoints::Failpoints,
    installed::{Installed, InstalledVersion, PackageState, swap_symlink},
    registry_client::RegistryClient,
    resolved::ResolvedPackage,
    service, table,
    unpack::unpack,
};

fn installed(ctx: &Context) -> Installed {
    Installed::new(&ctx.data_home)
}

fn read_meta(dir: &Path) -> anyhow::Result<PackageMeta> {
    let bytes = std::fs::read(dir.join(META_ENTRY))
        .with_context(|| format!("{} is not an installed package", dir.display()))?;
    Ok(PackageMeta::parse(&bytes)?)
}

/// Pulls (verified) and unpacks `resolved` unless that exact build is already installed.
/// Returns whether anything was installed.
async fn install_resolved(
    ctx: &Context,
    client: &RegistryClient,
    resolved: &ResolvedPackage,
) -> anyhow::Result<bool> {
    let inst = installed(ctx);
    let name = &resolved.name;
    let version = &resolved.version;
    let mut state = inst.state(name)?;
    if let Some(have) = state.installed.get(version) {
        if have.digest == resolved.digest {
            return Ok(false);
        }
        bail!(
            "{name} {version} is already installed from other bytes ({} {}); remove it first with `niso remove {name}:{version}`",
            have.arch,
            have.digest,
        );
    }
    let archive = pull::fetch(ctx, client, resolved).await?;
    let dest = inst.version_dir(name, version);
    let tmp = inst.staging_dir(name, version);
    std::fs::create_dir_all(inst.package_dir(name))?;
    inst.remove_tree(&tmp)?;
    // Left by an install that crashed after its rename but before its state write.
    inst.remove_tree(&dest)?;
    let failpoints = Failpoints::new(&ctx.failpoints);
    let check = (archive, tmp.clone(), resolved.clone());
    let meta =
        tokio::task::spawn_blocking(move || unpack(&check.0, &check.1, &check.2, &failpoints))
            .await?;
    if let Err(e) = meta {
        let _ = inst.remove_tree(&tmp);
        return Err(e.context(format!("could not install {name} {version}")));
    }
    std::fs::rename(&tmp, &dest)?;
    state.installed.insert(
        version.clone(),
        InstalledVersion {
            arch: resolved.arch.clone(),
            digest: resolved.digest,
        },
    );
    inst.save_state(name, &state)?;
    Ok(true)
}

/// An executable a package declares, and the bin-dir link that exposes it.
struct BinLink {
    /// `$XDG_DATA_HOME/niso/bin/EXE`.
    link: PathBuf,
    /// What the link points at: `../pkgs/NAME/current/PATH`, so a version swap moves it too.
    target: PathBuf,
    /// `PATH` inside the package.
    inner: PathBuf,
}

fn current_prefix(name: &PackageName) -> PathBuf {
    Path::new("..")
        .join("pkgs")
        .join(name.as_str())
        .join("current")
}

fn bin_links(inst: &Installed, name: &PackageName, meta: &PackageMeta) -> Vec<BinLink> {
    meta.bin
        .iter()
        .map(|path| {
            let inner = PathBuf::from(path);
            let exe = inner
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| inner.clone());
            BinLink {
                link: inst.bin.join(exe),
                target: current_prefix(name).join(&inner),
                inner,
            }
        })
        .collect()
}

/// Links in the bin dir that point into `name`'s current version.
fn owned_links(inst: &Installed, name: &PackageName) -> anyhow::Result<Vec<PathBuf>> {
    let prefix = current_prefix(name);
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&inst.bin) else {
        return Ok(out);
    };
    for e in entries {
        let e = e?;
        if let Ok(target) = std::fs::read_link(e.path())
            && target.starts_with(&prefix)
        {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// Makes `version` the active one: checks, then one atomic swap of `current`, then the bin
/// links and the service.
fn activate_installed(
    ctx: &Context,
    name: &PackageName,
    version: &Version,
    system: bool,
) -> anyhow::Result<()> {
    let inst = installed(ctx);
    let mut state = inst.state(name)?;
    if !state.installed.contains_key(version) {
        bail!("{name} {version} is not installed");
    }
    let dir = inst.version_dir(name, version);
    let meta = read_meta(&dir)?;
    let links = bin_links(&inst, name, &meta);
    for l in &links {
        if !dir.join(&l.inner).is_file() {
            bail!(
                "{name} {version} declares executable {} but does not contain it",
                l.inner.display()
            );
        }
        if let Ok(existing) = std::fs::read_link(&l.link)
            && !existing.starts_with(Path::new("..").join("pkgs").join(name.as_str()))
        {
            bail!(
                "{} already belongs to another package ({})",
                l.link.display(),
                existing.display()
            );
        }
    }
    std::fs::create_dir_all(&inst.bin)?;
    swap_symlink(Path::new(&version.to_string()), &inst.current_link(name))?;
    for stale in owned_links(&inst, name)? {
        if !links.iter().any(|l| l.link == stale) {
            std::fs::remove_file(stale)?;
        }
    }
    for l in &links {
        swap_symlink(&l.target, &l.link)?;
    }
    if state.active.as_ref() != Some(version) {
        state.previous = state.active.take();
        state.active = Some(version.clone());
    }
    state.system_service = system;
    inst.save_state(name, &state)?;
    if let Some(spec) = &meta.service {
        if ctx.systemd && service::systemd_available() {
            let unit = service::unit_text(
                name.as_str(),
                &meta.description,
                spec,
                &inst.current_link(name),
            );
            service::install_and_start(
                &service::unit_dir(system, &ctx.config_home),
                name.as_str(),
                &unit,
                system,
            )?;
            report(
                ctx,
                &format!(
                    "Service {} is running under systemd",
                    service::unit_name(name.as_str())
                ),
            );
        } else {
            report(
                ctx,
                &format!(
                    "systemd is not running here; run the service in the foreground with `niso service run {name}`"
                ),
            );
        }
    }
    Ok(())
}

fn report(ctx: &Context, line: &str) {
    if !ctx.json {
        outln!("  {line}");
    }
}

/// Where the version a reference names comes from.
enum Source {
    /// That exact version is installed already.
    Installed(Version),
    Registry(ResolvedPackage),
}

/// Resolves `reference` against the registry, or finds it installed locally when it names an
/// exact installed version.
async fn resolve_for_install(
    ctx: &Context,
    client: &RegistryClient,
    reference: &PackageRef,
) -> anyhow::Result<Source> {
    if let Some(version) = reference
        .selector
        .as_deref()
        .and_then(|sel| Version::parse(sel).ok())
    {
        let state = installed(ctx).state(&reference.name)?;
        if state.installed.contains_key(&version) {
            return Ok(Source::Installed(version));
        }
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
    let fresh = install_resolved(ctx, client, &resolved).await?;
    let verb = if fresh {
        "Installed"
    } else {
        "Already installed"
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
            let inst = installed(ctx);
            let mut state = inst.state(&r.name)?;
            state.registry = Some(client.target.name.clone());
            inst.save_state(&r.name, &state)?;
            resolved.version
        }
    };
    activate_installed(ctx, &r.name, &version, system)?;
    report(ctx, &format!("Activated {} {version}", r.name));
    bin_path_hint(ctx);
    Ok(())
}

fn bin_path_hint(ctx: &Context) {
    let bin = installed(ctx).bin;
    if !ctx.path_dirs.contains(&bin) {
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
    let inst = installed(ctx);
    let mut state = inst.state(name)?;
    let Some(active) = state.active.take() else {
        bail!("{name} is not active");
    };
    let unit_dir = service::unit_dir(state.system_service, &ctx.config_home);
    if service::stop_and_remove(&unit_dir, name.as_str(), state.system_service)? {
        report(
            ctx,
            &format!("Stopped and removed {}", service::unit_name(name.as_str())),
        );
    }
    for link in owned_links(&inst, name)? {
        std::fs::remove_file(link)?;
    }
    let current = inst.current_link(name);
    if current.exists() || std::fs::symlink_metadata(&current).is_ok() {
        std::fs::remove_file(current)?;
    }
    state.previous = Some(active.clone());
    inst.save_state(name, &state)?;
    report(ctx, &format!("Deactivated {name} {active}"));
    Ok(())
}

pub fn rollback(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let name = &PackageName::new(name)?;
    let inst = installed(ctx);
    let state = inst.state(name)?;
    if state.installed.is_empty() {
        bail!("{name} is not installed here (see `niso list`)");
    }
    let Some(previous) = state.previous.clone() else {
        bail!(
            "{name} has no previous version to roll back to: only {} was ever active here",
            state
                .active
                .as_ref()
                .map_or_else(|| "nothing".to_owned(), Version::to_string)
        );
    };
    if !state.installed.contains_key(&previous) {
        bail!("{name} {previous} is no longer installed");
    }
    activate_installed(ctx, name, &previous, state.system_service)?;
    // Hold it here: a bare `niso upgrade` would otherwise undo the rollback at once.
    let mut held = inst.state(name)?;
    held.held_from = state.active.clone();
    inst.save_state(name, &held)?;
    report(ctx, &format!("Rolled back {name} to {previous}"));
    if let Some(from) = &state.active {
        report(
            ctx,
            &format!(
                "{name} is held at {previous}: `niso upgrade` leaves it; `niso upgrade {name}` moves on from {from} again"
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
    let inst = installed(ctx);
    // A named package without a reference means `latest`; no name means each package's
    // tracked reference.
    let targets: Vec<(PackageName, Option<String>)> = match reference {
        Some(r) => {
            let r: PackageRef = r.parse()?;
            let selector = r.selector.unwrap_or_else(|| "latest".to_owned());
            vec![(r.name, Some(selector))]
        }
        None => inst.packages()?.into_iter().map(|n| (n, None)).collect(),
    };
    if targets.is_empty() {
        report(ctx, "Nothing is installed");
        return Ok(());
    }
    let mut failures = Vec::new();
    for (name, selector) in targets {
        let state = inst.state(&name)?;
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
        match upgrade_one(ctx, client, &name, &track, &state, system).await {
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

async fn upgrade_one(
    ctx: &Context,
    client: &RegistryClient,
    name: &PackageName,
    track: &str,
    state: &PackageState,
    system: bool,
) -> anyhow::Result<String> {
    let reference = format!("{name}:{track}");
    let resolved = pull::resolve(client, &reference, None).await?;
    if state.active.as_ref() == Some(&resolved.version) {
        save_track(ctx, name, track, client)?;
        return Ok(format!(
            "{name} {} is up to date ({track})",
            resolved.version
        ));
    }
    install_resolved(ctx, client, &resolved).await?;
    activate_installed(ctx, name, &resolved.version, system)?;
    save_track(ctx, name, track, client)?;
    Ok(match &state.active {
        Some(old) => format!("Upgraded {name} {old} → {} ({track})", resolved.version),
        None => format!(
            "Installed and activated {name} {} ({track})",
            resolved.version
        ),
    })
}

fn save_track(
    ctx: &Context,
    name: &PackageName,
    track: &str,
    client: &RegistryClient,
) -> anyhow::Result<()> {
    let inst = installed(ctx);
    let mut state = inst.state(name)?;
    state.track = Some(track.to_owned());
    state.registry = Some(client.target.name.clone());
    // Naming the package in an upgrade ends a rollback's hold.
    state.held_from = None;
    inst.save_state(name, &state)
}

pub fn list(ctx: &Context) -> anyhow::Result<()> {
    let inst = installed(ctx);
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "ACTIVE".to_owned(),
        "INSTALLED".to_owned(),
        "TRACKS".to_owned(),
    ]];
    let mut json = Vec::new();
    for name in inst.packages()? {
        let state = inst.state(&name)?;
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
    let inst = installed(ctx);
    let mut state = inst.state(name)?;
    if state.installed.is_empty() {
        bail!("{name} is not installed");
    }
    let versions: Vec<Version> = match &r.selector {
        Some(sel) => match Version::parse(sel) {
            Ok(v) if state.installed.contains_key(&v) => vec![v],
            _ => bail!(
                "{name} {sel} is not installed; installed: {}",
                state
                    .installed
                    .keys()
                    .map(Version::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        None => state.installed.keys().cloned().collect(),
    };
    if let Some(active) = state.active.clone()
        && versions.contains(&active)
    {
        if !force {
            bail!(
                "{name} {active} is active; deactivate it first (`niso deactivate {name}`) or pass --force"
            );
        }
        deactivate(ctx, name.as_str())?;
        state = inst.state(name)?;
    }
    for v in &versions {
        inst.remove_tree(&inst.version_dir(name, v))?;
        state.installed.remove(v);
        if state.previous.as_ref() == Some(v) {
            state.previous = None;
        }
    }
    if state.installed.is_empty() {
        inst.remove_tree(&inst.package_dir(name))?;
    } else {
        inst.save_state(name, &state)?;
    }
    let removed: Vec<String> = versions.iter().map(Version::to_string).collect();
    report(ctx, &format!("Removed {name} {}", removed.join(", ")));
    Ok(())
}

/// `niso service run NAME`: the active version's service, in the foreground.
pub async fn service_run(ctx: &Context, name: &str) -> anyhow::Result<i32> {
    let name = &PackageName::new(name)?;
    let inst = installed(ctx);
    let state = inst.state(name)?;
    let Some(active) = state.active else {
        bail!("{name} is not active; activate it with `niso activate {name}`");
    };
    let dir = inst.version_dir(name, &active);
    let meta = read_meta(&dir)?;
    let Some(spec) = &meta.service else {
        bail!("{name} {active} declares no [service]");
    };
    service::run_foreground(name.as_str(), spec, &inst.current_link(name)).await
}
