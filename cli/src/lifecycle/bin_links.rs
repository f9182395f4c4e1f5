//! The bin directory's links to the executables of active packages.
//!
//! A link points through the package's `current` link, not at a version, so the one atomic
//! swap of `current` moves every executable of the package at once.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use niso_protocol::{PackageMeta, PackageName};

use crate::installed::Installed;

/// An executable a package declares, and the bin-dir link that exposes it.
pub struct BinLink {
    /// `$XDG_DATA_HOME/niso/bin/EXE`.
    pub link: PathBuf,
    /// What the link points at: `../pkgs/NAME/current/PATH`.
    pub target: PathBuf,
    /// `PATH` inside the package.
    pub inner: PathBuf,
}

/// Where `name`'s links point, relative to the bin dir.
fn current_prefix(name: &PackageName) -> PathBuf {
    package_prefix(name).join("current")
}

/// A link under this prefix belongs to `name`, whichever version it was made for.
pub fn package_prefix(name: &PackageName) -> PathBuf {
    Path::new("..").join("pkgs").join(name.as_str())
}

/// The links `meta` asks for.
pub fn declared(inst: &Installed, name: &PackageName, meta: &PackageMeta) -> Vec<BinLink> {
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
pub fn owned(inst: &Installed, name: &PackageName) -> anyhow::Result<Vec<PathBuf>> {
    let prefix = current_prefix(name);
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&inst.bin) else {
        return Ok(out);
    };
    for e in entries {
        let e = e.with_context(|| format!("could not read {}", inst.bin.display()))?;
        if let Ok(target) = std::fs::read_link(e.path())
            && target.starts_with(&prefix)
        {
            out.push(e.path());
        }
    }
    Ok(out)
}
