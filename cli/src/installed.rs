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
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// What `state.toml` records about one package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The reference `niso upgrade` follows: `latest`, a tag, or a version prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// Registry (name or URL) the package came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Whether the service was installed as a system (not user) unit.
    #[serde(default)]
    pub system_service: bool,
    #[serde(default)]
    pub installed: BTreeMap<String, InstalledVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledVersion {
    pub arch: String,
    pub digest: String,
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

    pub fn package_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.root.join(name).join(version)
    }

    pub fn current_link(&self, name: &str) -> PathBuf {
        self.root.join(name).join("current")
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("state.toml")
    }

    pub fn state(&self, name: &str) -> anyhow::Result<PackageState> {
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
    pub fn save_state(&self, name: &str, state: &PackageState) -> anyhow::Result<()> {
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

    /// Names of packages with any installed version, sorted.
    pub fn packages(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str()
                && self.state_path(name).exists()
            {
                out.push(name.to_owned());
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
