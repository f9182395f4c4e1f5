//! The local package store: verified `.niso` files under `$XDG_DATA_HOME/niso/packages`.

use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use niso_protocol::{Arch, Digest, PackageMeta, PackageName, Version};

/// `NAME-VERSION-ARCH.niso`: built from validated parts only, none of which can hold a `/`.
pub fn package_path(dir: &Path, name: &PackageName, version: &Version, arch: &Arch) -> PathBuf {
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

/// The `niso.toml` an archive starts with, read without decompressing the rest: enough to
/// learn what package the file claims to be. Installing runs the full checks on top.
pub fn claimed_meta(path: &Path) -> anyhow::Result<PackageMeta> {
    let file =
        std::fs::File::open(path).with_context(|| format!("could not open {}", path.display()))?;
    Ok(niso_protocol::archive::read_meta(io::BufReader::new(file))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_claim_of_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let meta = b"name = \"my-api\"\nversion = \"1.0.0\"\narch = \"any\"\n";
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(meta.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, niso_protocol::archive::META_ENTRY, &meta[..])
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let path = dir.path().join("a.niso");
        std::fs::write(&path, zstd::encode_all(&tar[..], 0).unwrap()).unwrap();
        let got = claimed_meta(&path).unwrap();
        assert_eq!(got.name.as_str(), "my-api");
        assert_eq!(got.version, Version::new(1, 0, 0));

        std::fs::write(&path, b"not zstd").unwrap();
        assert!(claimed_meta(&path).is_err());
    }

    #[test]
    fn names_files_from_validated_parts() {
        let path = package_path(
            Path::new("/store"),
            &PackageName::new("my-api").unwrap(),
            &Version::parse("1.0.0-rc.1").unwrap(),
            &Arch::any(),
        );
        assert_eq!(path, Path::new("/store/my-api-1.0.0-rc.1-any.niso"));
    }
}
