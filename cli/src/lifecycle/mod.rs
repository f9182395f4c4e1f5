//! The transactions on this machine's installed packages: install a verified archive,
//! activate, deactivate, roll back, switch (upgrade's last step) and remove. Each returns what
//! it did; none prints or talks to a registry (`commands/lifecycle.rs` fetches and prints).
//!
//! Every step is ordered so that a failure leaves the previously active version active and
//! intact: a new version is unpacked beside the old ones, takes its name by one rename, and
//! becomes active only by one atomic swap of `pkgs/NAME/current`, after every check has passed.

mod bin_links;
mod error;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use niso_protocol::{
    PackageMeta, PackageName, Version, archive::META_ENTRY, package_meta::ServiceSpec,
};

pub use self::error::LifecycleError;
use crate::{
    failpoints::Failpoints,
    installed::{Installed, InstalledVersion, PackageState, swap_symlink},
    resolved::ResolvedPackage,
    service,
    unpack::unpack,
};

/// The installed packages of one user, and how their services are run.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    installed: Installed,
    /// `$XDG_CONFIG_HOME`, under which user units go.
    config_home: PathBuf,
    /// Whether services may be handed to systemd when it runs here.
    systemd: bool,
    failpoints: Failpoints,
}

/// What [`Lifecycle::install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installation {
    Installed,
    /// These very bytes were installed already; nothing changed.
    AlreadyInstalled,
}

/// What became of the service of a version that was made active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceOutcome {
    /// The package declares no service.
    None,
    /// The unit is installed, enabled and (re)started.
    UnderSystemd { unit: String },
    /// systemd is not running here (or was turned off); `niso service run` runs it instead.
    NoSystemd,
}

/// What [`Lifecycle::activate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// The version that was active before, if any.
    pub replaced: Option<Version>,
    pub service: ServiceOutcome,
}

/// What [`Lifecycle::deactivate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivation {
    /// The version that was active.
    pub version: Version,
    /// The systemd unit that was stopped and removed, if there was one.
    pub stopped_unit: Option<String>,
}

/// What [`Lifecycle::rollback`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// The version now active.
    pub to: Version,
    /// The version rolled away from, where the package is now held (see
    /// [`PackageState::held_from`]); none when nothing was active.
    pub held_from: Option<Version>,
    pub service: ServiceOutcome,
}

/// What [`Lifecycle::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Set when `force` deactivated the active version first.
    pub deactivated: Option<Deactivation>,
    /// The versions removed, in version order.
    pub removed: Vec<Version>,
}

fn read_meta(dir: &Path) -> anyhow::Result<PackageMeta> {
    let bytes = std::fs::read(dir.join(META_ENTRY))
        .with_context(|| format!("{} is not an installed package", dir.display()))?;
    Ok(PackageMeta::parse(&bytes)?)
}

impl Lifecycle {
    /// `data_home` is `$XDG_DATA_HOME/niso`; `systemd: false` never hands a service to
    /// systemd, even where it runs.
    pub fn new(
        data_home: &Path,
        config_home: &Path,
        systemd: bool,
        failpoints: Failpoints,
    ) -> Self {
        Self {
            installed: Installed::new(data_home),
            config_home: config_home.to_owned(),
            systemd,
            failpoints,
        }
    }

    /// The directory active packages' executables are linked into.
    pub fn bin_dir(&self) -> &Path {
        &self.installed.bin
    }

    pub fn state(&self, name: &PackageName) -> anyhow::Result<PackageState> {
        self.installed.state(name)
    }

    /// Every package with an installed version, by name, with its state.
    pub fn list(&self) -> anyhow::Result<Vec<(PackageName, PackageState)>> {
        self.installed
            .packages()?
            .into_iter()
            .map(|name| {
                let state = self.installed.state(&name)?;
                Ok((name, state))
            })
            .collect()
    }

    /// The installed version an exact `NAME:VERSION` selector names; none for tags, prefixes
    /// and versions not installed here.
    pub fn installed_exact(
        &self,
        name: &PackageName,
        selector: Option<&str>,
    ) -> anyhow::Result<Option<Version>> {
        let Some(version) = selector.and_then(|sel| Version::parse(sel).ok()) else {
            return Ok(None);
        };
        let state = self.installed.state(name)?;
        Ok(state.installed.contains_key(&version).then_some(version))
    }

    /// Whether the build `resolved` names is installed, byte for byte. Other bytes under the
    /// same version are refused: a version never changes its contents here either.
    pub fn has_build(&self, resolved: &ResolvedPackage) -> anyhow::Result<bool> {
        let state = self.installed.state(&resolved.name)?;
        match state.installed.get(&resolved.version) {
            None => Ok(false),
            Some(have) if have.digest == resolved.digest => Ok(true),
            Some(have) => Err(LifecycleError::OtherBytes {
                name: resolved.name.clone(),
                version: resolved.version.clone(),
                arch: have.arch.clone(),
                digest: have.digest,
            }
            .into()),
        }
    }

    /// Unpacks `archive`, whose digest the caller has verified to be `resolved.digest`, as
    /// `resolved`'s version: checked in full and unpacked in a staging directory, which takes
    /// the version's name only once everything passed. A failure removes the staging
    /// directory and changes nothing else.
    pub fn install(
        &self,
        archive: &Path,
        resolved: &ResolvedPackage,
    ) -> anyhow::Result<Installation> {
        if self.has_build(resolved)? {
            return Ok(Installation::AlreadyInstalled);
        }
        let inst = &self.installed;
        let (name, version) = (&resolved.name, &resolved.version);
        let dest = inst.version_dir(name, version);
        let staging = inst.staging_dir(name, version);
        let package_dir = inst.package_dir(name);
        std::fs::create_dir_all(&package_dir)
            .with_context(|| format!("could not create {}", package_dir.display()))?;
        inst.remove_tree(&staging)?;
        // Left by an install that crashed after its rename but before its state write.
        inst.remove_tree(&dest)?;
        if let Err(e) = unpack(archive, &staging, resolved, &self.failpoints) {
            // The unpack error is the one worth reporting; a staging dir that also resists
            // removal is cleared by the next install of this version.
            let _ = inst.remove_tree(&staging);
            return Err(e.context(format!("could not install {name} {version}")));
        }
        std::fs::rename(&staging, &dest)
            .with_context(|| format!("could not move {} into place", dest.display()))?;
        let mut state = inst.state(name)?;
        state.installed.insert(
            version.clone(),
            InstalledVersion {
                arch: resolved.arch.clone(),
                digest: resolved.digest,
            },
        );
        inst.save_state(name, &state)?;
        Ok(Installation::Installed)
    }

    /// Records the registry `name` came from.
    pub fn remember_registry(&self, name: &PackageName, registry: &str) -> anyhow::Result<()> {
        let mut state = self.installed.state(name)?;
        state.registry = Some(registry.to_owned());
        self.installed.save_state(name, &state)
    }

    /// Makes the installed `version` the active one: checks its executables and their links
    /// first, then one atomic swap of `current`, then the bin links and the service.
    /// `system`: install the service as a system unit rather than a user unit.
    pub fn activate(
        &self,
        name: &PackageName,
        version: &Version,
        system: bool,
    ) -> anyhow::Result<Activation> {
        let inst = &self.installed;
        let mut state = inst.state(name)?;
        if !state.installed.contains_key(version) {
            bail!(LifecycleError::VersionNotInstalled {
                name: name.clone(),
                version: version.clone(),
            });
        }
        let dir = inst.version_dir(name, version);
        let meta = read_meta(&dir)?;
        let links = bin_links::declared(inst, name, &meta);
        for l in &links {
            if !dir.join(&l.inner).is_file() {
                bail!(LifecycleError::MissingExecutable {
                    name: name.clone(),
                    version: version.clone(),
                    path: l.inner.clone(),
                });
            }
            if let Ok(owner) = std::fs::read_link(&l.link)
                && !owner.starts_with(bin_links::package_prefix(name))
            {
                bail!(LifecycleError::LinkTaken {
                    link: l.link.clone(),
                    owner,
                });
            }
        }
        std::fs::create_dir_all(&inst.bin)
            .with_context(|| format!("could not create {}", inst.bin.display()))?;
        let current = inst.current_link(name);
        swap_symlink(Path::new(&version.to_string()), &current)
            .with_context(|| format!("could not point {} at {version}", current.display()))?;
        for stale in bin_links::owned(inst, name)? {
            if !links.iter().any(|l| l.link == stale) {
                std::fs::remove_file(&stale)
                    .with_context(|| format!("could not remove {}", stale.display()))?;
            }
        }
        for l in &links {
            swap_symlink(&l.target, &l.link)
                .with_context(|| format!("could not link {}", l.link.display()))?;
        }
        let replaced = state.active.clone();
        if state.active.as_ref() != Some(version) {
            state.previous = state.active.take();
            state.active = Some(version.clone());
        }
        state.system_service = system;
        inst.save_state(name, &state)?;
        let service = self.start_service(name, &meta, system)?;
        Ok(Activation { replaced, service })
    }

    fn start_service(
        &self,
        name: &PackageName,
        meta: &PackageMeta,
        system: bool,
    ) -> anyhow::Result<ServiceOutcome> {
        let Some(spec) = &meta.service else {
            return Ok(ServiceOutcome::None);
        };
        if !(self.systemd && service::systemd_available()) {
            return Ok(ServiceOutcome::NoSystemd);
        }
        let unit = service::unit_text(
            name.as_str(),
            &meta.description,
            spec,
            &self.installed.current_link(name),
        );
        service::install_and_start(
            &service::unit_dir(system, &self.config_home),
            name.as_str(),
            &unit,
            system,
        )?;
        Ok(ServiceOutcome::UnderSystemd {
            unit: service::unit_name(name.as_str()),
        })
    }

    /// Stops the active version's service, removes its executables from the bin dir and its
    /// `current` link; the version stays installed and becomes the one to roll back to.
    pub fn deactivate(&self, name: &PackageName) -> anyhow::Result<Deactivation> {
        let inst = &self.installed;
        let mut state = inst.state(name)?;
        let Some(active) = state.active.take() else {
            bail!(LifecycleError::NotActive { name: name.clone() });
        };
        let unit_dir = service::unit_dir(state.system_service, &self.config_home);
        let stopped_unit =
            service::stop_and_remove(&unit_dir, name.as_str(), state.system_service)?
                .then(|| service::unit_name(name.as_str()));
        for link in bin_links::owned(inst, name)? {
            std::fs::remove_file(&link)
                .with_context(|| format!("could not remove {}", link.display()))?;
        }
        let current = inst.current_link(name);
        if std::fs::symlink_metadata(&current).is_ok() {
            std::fs::remove_file(&current)
                .with_context(|| format!("could not remove {}", current.display()))?;
        }
        state.previous = Some(active.clone());
        inst.save_state(name, &state)?;
        Ok(Deactivation {
            version: active,
            stopped_unit,
        })
    }

    /// Activates the previous version again and holds the package there: a bare
    /// `niso upgrade` would otherwise undo the rollback at once.
    pub fn rollback(&self, name: &PackageName) -> anyhow::Result<Rollback> {
        let inst = &self.installed;
        let state = inst.state(name)?;
        if state.installed.is_empty() {
            bail!(LifecycleError::NothingToRollBack { name: name.clone() });
        }
        let Some(previous) = state.previous.clone() else {
            bail!(LifecycleError::NoPrevious {
                name: name.clone(),
                active: state.active,
            });
        };
        if !state.installed.contains_key(&previous) {
            bail!(LifecycleError::PreviousGone {
                name: name.clone(),
                version: previous,
            });
        }
        let activation = self.activate(name, &previous, state.system_service)?;
        let mut held = inst.state(name)?;
        held.held_from = state.active.clone();
        inst.save_state(name, &held)?;
        Ok(Rollback {
            to: previous,
            held_from: state.active,
            service: activation.service,
        })
    }

    /// Records that `name` follows `track` on `registry`. Naming the package in an upgrade
    /// ends a rollback's hold, so this does too.
    pub fn follow(&self, name: &PackageName, track: &str, registry: &str) -> anyhow::Result<()> {
        let mut state = self.installed.state(name)?;
        state.track = Some(track.to_owned());
        state.registry = Some(registry.to_owned());
        state.held_from = None;
        self.installed.save_state(name, &state)
    }

    /// An upgrade's last step: activates the installed `version`, then follows `track`.
    pub fn switch(
        &self,
        name: &PackageName,
        version: &Version,
        track: &str,
        registry: &str,
        system: bool,
    ) -> anyhow::Result<Activation> {
        let activation = self.activate(name, version, system)?;
        self.follow(name, track, registry)?;
        Ok(activation)
    }

    /// Removes `version` (every version when none), refusing the active one unless `force`,
    /// which deactivates it first. The package's directory goes with its last version.
    pub fn remove(
        &self,
        name: &PackageName,
        version: Option<&str>,
        force: bool,
    ) -> anyhow::Result<Removal> {
        let inst = &self.installed;
        let mut state = inst.state(name)?;
        if state.installed.is_empty() {
            bail!(LifecycleError::NotInstalled { name: name.clone() });
        }
        let versions: Vec<Version> = match version {
            Some(sel) => match Version::parse(sel) {
                Ok(v) if state.installed.contains_key(&v) => vec![v],
                _ => bail!(LifecycleError::NoSuchVersion {
                    name: name.clone(),
                    selector: sel.to_owned(),
                    installed: state.installed.keys().cloned().collect(),
                }),
            },
            None => state.installed.keys().cloned().collect(),
        };
        let mut deactivated = None;
        if let Some(active) = state.active.clone()
            && versions.contains(&active)
        {
            if !force {
                bail!(LifecycleError::Active {
                    name: name.clone(),
                    version: active,
                });
            }
            deactivated = Some(self.deactivate(name)?);
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
        Ok(Removal {
            deactivated,
            removed: versions,
        })
    }

    /// The active version's service, and the directory it runs from (the `current` link, so
    /// a restart after a switch runs the new version).
    pub fn active_service(&self, name: &PackageName) -> anyhow::Result<(ServiceSpec, PathBuf)> {
        let state = self.installed.state(name)?;
        let Some(active) = state.active else {
            bail!(LifecycleError::NothingToRun { name: name.clone() });
        };
        let meta = read_meta(&self.installed.version_dir(name, &active))?;
        let Some(spec) = meta.service else {
            bail!(LifecycleError::NoService {
                name: name.clone(),
                version: active,
            });
        };
        Ok((spec, self.installed.current_link(name)))
    }
}
