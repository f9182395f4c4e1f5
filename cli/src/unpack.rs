//! Installing an archive's files: the same checks a registry runs at push, again, because a
//! registry can be hostile; then an extraction that only ever creates paths inside the target.

use std::{
    fs,
    io::{self, Read},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::{Context as _, bail};
use niso_protocol::{
    PackageMeta,
    archive::{ArchiveLimits, META_ENTRY, check_entry_path, inspect},
};

use crate::{failpoints::Failpoints, resolved::ResolvedPackage};

/// Checks `archive` fully, and that it is the build `expected` names, then extracts it into
/// `dest`, which must not exist yet.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    expected: &ResolvedPackage,
    failpoints: &Failpoints,
) -> anyhow::Result<PackageMeta> {
    let file =
        fs::File::open(archive).with_context(|| format!("could not open {}", archive.display()))?;
    let inspection =
        inspect(io::BufReader::new(file), &ArchiveLimits::default()).with_context(|| {
            format!(
                "{} failed the package checks; nothing was installed",
                archive.display()
            )
        })?;
    expected.check_meta(&inspection.meta)?;
    fs::create_dir(dest).with_context(|| format!("could not create {}", dest.display()))?;

    let file = fs::File::open(archive)?;
    // The same window cap the checks above ran under.
    let decoder = niso_protocol::archive::decoder(io::BufReader::new(file))?;
    let mut tar = tar::Archive::new(decoder);
    for (i, entry) in tar.entries()?.enumerate() {
        let mut entry = entry?;
        let raw = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| anyhow::anyhow!("entry path is not UTF-8"))?;
        // The file could have changed since the check above: check each path again.
        check_entry_path(&raw).map_err(|p| anyhow::anyhow!("entry `{raw}` is not allowed: {p}"))?;
        let rel = raw.trim_end_matches('/');
        let target = dest.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        if i == 1 {
            failpoints.check("install-write")?;
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let executable = entry.header().mode().unwrap_or(0o644) & 0o111 != 0;
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o755 } else { 0o644 })
                    .custom_flags(nix_no_follow())
                    .open(&target)
                    .with_context(|| format!("could not create {}", target.display()))?;
                let size = entry.size();
                io::copy(&mut (&mut entry).take(size), &mut out)?;
                out.sync_all()?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| anyhow::anyhow!("symlink `{raw}` has no target"))?;
                std::os::unix::fs::symlink(link, &target)?;
            }
            _ => bail!("entry `{raw}` has a type packages may not contain"),
        }
    }
    // Directories from the archive get a fixed mode, whatever the archive said.
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))?;
    if !dest.join(META_ENTRY).is_file() {
        bail!("the archive has no niso.toml");
    }
    Ok(inspection.meta)
}

/// `O_NOFOLLOW`: never write through a symlink that appeared at a file's path.
fn nix_no_follow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}
