//! Installed packages on this machine:
//!
//! ```text
//! $XDG_DATA_HOME/niso/pkgs/NAME/VERSION/    unpacked trees, one per version
//! $XDG_DATA_HOME/niso/pkgs/NAME/current     symlink to the active VERSION
//! $XDG_DATA_HOME/niso/pkgs/NAME/state.toml  active, previous, tracked ref, installed versions
//! $XDG_DATA_HOME/niso/bin/EXE               symlinks to pkgs/NAME/current/…
//! ```

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, bail};
use niso_protocol::{Arch, Digest, PackageName, Version};
use serde::{Deserialize, Serialize};

/// What `state.toml` records about one package. Versions, architectures and digests are the
/// protocol's validated types, so a state file cannot name a path outside the package's
/// directory either.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Version>,
    /// The reference `niso upgrade` follows: `latest`, a tag, or a version prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// Set by `niso rollback` to the version rolled away from: a bare `niso upgrade` leaves
    /// the package where it is until `niso upgrade NAME` names it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_from: Option<Version>,
    /// Registry (name or URL) the package came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Whether the service was installed as a system (not user) unit.
    #[serde(default)]
    pub system_service: bool,
    #[serde(default)]
    pub installed: BTreeMap<Version, InstalledVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledVersion {
    pub arch: Arch,
    pub digest: Digest,
}

/// The installed-packages area of one user.
#[derive(Debug, Clone)]
pub struct Installed {
    pub root: PathBuf,
    pub bin: PathBuf,
}

impl Installed {
    pub fn new(data_home: &Path) -> Self {
        Self {
            root: data_home.join("pkgs"),
            bin: data_home.join("bin"),
        }
    }

    pub fn package_dir(&self, name: &PackageName) -> PathBuf {
        self.root.join(name.as_str())
    }

    pub fn version_dir(&self, name: &PackageName, version: &Version) -> PathBuf {
        self.package_dir(name).join(version.to_string())
    }

    /// Where a version is unpacked before it takes its place, hidden by its leading dot.
    pub fn staging_dir(&self, name: &PackageName, version: &Version) -> PathBuf {
        self.package_dir(name)
            .join(format!(".{version}.installing"))
    }

    pub fn current_link(&self, name: &PackageName) -> PathBuf {
        self.package_dir(name).join("current")
    }

    fn state_path(&self, name: &PackageName) -> PathBuf {
        self.package_dir(name).join("state.toml")
    }

    pub fn state(&self, name: &PackageName) -> anyhow::Result<PackageState> {
        let path = self.state_path(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PackageState::default()),
            Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
        }
    }

    /// Replaces `state.toml` atomically.
    pub fn save_state(&self, name: &PackageName, state: &PackageState) -> anyhow::Result<()> {
        let path = self.state_path(name);
        std::fs::create_dir_all(self.package_dir(name))?;
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(toml::to_string_pretty(state)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("could not write {}", path.display()))?;
        Ok(())
    }

    /// Removes a directory tree of this store, once it is certain `dir` is one: below
    /// `pkgs/`, through plain names only, and a real directory rather than a link to one.
    /// A missing directory is already removed.
    pub fn remove_tree(&self, dir: &Path) -> anyhow::Result<()> {
        let inside = dir.strip_prefix(&self.root).is_ok_and(|rel| {
            rel.components().next().is_some()
                && rel.components().all(|c| matches!(c, Component::Normal(_)))
        });
        if !inside {
            bail!(
                "refusing to remove {}: it is not inside {}",
                dir.display(),
                self.root.display()
            );
        }
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("could not read {}", dir.display())),
            Ok(m) if !m.is_dir() => bail!(
                "refusing to remove {}: it is not a directory",
                dir.display()
            ),
            Ok(_) => std::fs::remove_dir_all(dir)
                .with_context(|| format!("could not remove {}", dir.display())),
        }
    }

    /// Names of packages with any installed version, sorted. Entries that are not package
    /// names were not made by niso and are left out.
    pub fn packages(&self) -> anyhow::Result<Vec<PackageName>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str()
                && let Ok(name) = PackageName::new(name)
                && self.state_path(&name).exists()
            {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Points `link` at `target` atomically: a new symlink renamed over the old one.
pub fn swap_symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    let tmp = link.with_extension("swap-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_with_typed_versions() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Installed::new(dir.path());
        let name = PackageName::new("my-api").unwrap();
        let mut state = PackageState {
            active: Some(Version::new(1, 10, 0)),
            previous: Some(Version::new(1, 9, 0)),
            track: Some("latest".into()),
            ..PackageState::default()
        };
        for v in ["1.9.0", "1.10.0", "2.0.0-rc.1"] {
            state.installed.insert(
                Version::parse(v).unwrap(),
                InstalledVersion {
                    arch: Arch::any(),
                    digest: Digest::of(v.as_bytes()),
                },
            );
        }
        inst.save_state(&name, &state).unwrap();
        let text = std::fs::read_to_string(dir.path().join("pkgs/my-api/state.toml")).unwrap();
        assert!(text.contains("active = \"1.10.0\""), "{text}");
        assert!(text.contains("[installed.\"2.0.0-rc.1\"]"), "{text}");
        assert_eq!(inst.state(&name).unwrap(), state);
        assert_eq!(inst.packages().unwrap(), vec![name]);
    }

    #[test]
    fn a_state_naming_a_path_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Installed::new(dir.path());
        let name = PackageName::new("my-api").unwrap();
        std::fs::create_dir_all(inst.package_dir(&name)).unwrap();
        std::fs::write(
            dir.path().join("pkgs/my-api/state.toml"),
            "active = \"../../x\"\n",
        )
        .unwrap();
        let err = inst.state(&name).unwrap_err();
        assert!(format!("{err:#}").contains("is corrupt"), "{err:#}");
    }

    #[test]
    fn removes_only_trees_inside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Installed::new(&dir.path().join("niso"));
        let victim = dir.path().join("victim");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("file"), b"keep").unwrap();
        let name = PackageName::new("a").unwrap();
        for outside in [
            victim.clone(),
            inst.root.join("../../victim"),
            inst.root.join("a/../../../victim"),
            inst.root.clone(),
        ] {
            let err = inst.remove_tree(&outside).unwrap_err();
            assert!(err.to_string().starts_with("refusing to remove"), "{err}");
        }
        // A link planted where a version directory belongs is not followed.
        std::fs::create_dir_all(inst.package_dir(&name)).unwrap();
        let link = inst.version_dir(&name, &Version::new(1, 0, 0));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(inst.remove_tree(&link).is_err());
        assert_eq!(std::fs::read(victim.join("file")).unwrap(), b"keep");

        let real = inst.version_dir(&name, &Version::new(2, 0, 0));
        std::fs::create_dir_all(real.join("bin")).unwrap();
        inst.remove_tree(&real).unwrap();
        assert!(!real.exists());
        inst.remove_tree(&real).unwrap();
    }
}
