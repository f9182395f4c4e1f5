//! Files only the user may read (the client config holds API keys; pending uploads name
//! registries): written whole or not at all, mode 0600, durable before they replace the old.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::Context as _;

/// Writes `contents` to `path` through a temp file beside it, creating the parent directory.
pub fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let tmp = path.with_extension("toml.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("could not write {}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("could not write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("could not replace {}", path.display()))
}
