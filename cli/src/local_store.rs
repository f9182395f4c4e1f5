//! The local package store: verified `.niso` files under `$XDG_DATA_HOME/niso/packages`.

use std::path::{Path, PathBuf};

use niso_protocol::Digest;

pub fn package_path(dir: &Path, name: &str, version: &str, arch: &str) -> PathBuf {
    dir.join(format!("{name}-{version}-{arch}.niso"))
}

/// blake3 of a file (memory-mapped, hashed on all cores), or `None` if it does not exist.
pub fn digest_of(path: &Path) -> std::io::Result<Option<Digest>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    Ok(Some(hasher.finalize().into()))
}
