//! Pushes this client may resume: when a push dies without cleaning up (killed, crashed, the
//! connection lost for good), the next push of the same file to the same registry continues
//! the upload recorded here instead of opening another.
//!
//! One file per `(registry, package, digest)` under `$XDG_STATE_HOME/niso/uploads/`. A file
//! is only a hint: it is checked against what is being pushed when read, a bad one is
//! ignored, and the registry has the last word on whether the upload still exists.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// An upload opened by an earlier push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingUpload {
    /// The registry's URL.
    pub registry: String,
    pub package: String,
    /// `blake3:…` of the file being pushed.
    pub digest: String,
    /// The registry's upload id.
    pub id: String,
}

impl PendingUpload {
    /// Where the record for this push lives. The name is a digest of what identifies the
    /// push, so no registry URL or package name ends up in a path.
    fn path(dir: &Path, registry: &str, package: &str, digest: &str) -> PathBuf {
        let mut hasher = blake3::Hasher::new();
        for part in [registry, package, digest] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let name = hasher.finalize().to_hex();
        dir.join("uploads").join(format!("{}.toml", &name[..32]))
    }

    /// The upload an earlier push of this file to this registry left open, if one was
    /// recorded and the record still describes this push.
    pub fn load(dir: &Path, registry: &str, package: &str, digest: &str) -> Option<Self> {
        let path = Self::path(dir, registry, package, digest);
        let text = std::fs::read_to_string(&path).ok()?;
        let found = toml::from_str::<Self>(&text).ok().filter(|p| {
            p.registry == registry
                && p.package == package
                && p.digest == digest
                && p.id.len() == 32
                && p.id.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if found.is_none() {
            tracing::info!(path = %path.display(), "ignoring an unusable pending-upload record");
            Self::forget_path(&path);
        }
        found
    }

    /// Records the upload so a later push can resume it (atomically, mode 0600).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(dir, &self.registry, &self.package, &self.digest);
        let text = toml::to_string(self).context("could not encode the pending upload")?;
        crate::private_file::write(&path, text.as_bytes())
    }

    /// Forgets the upload: it finished, was cancelled, or the registry no longer has it.
    pub fn forget(&self, dir: &Path) {
        Self::forget_path(&Self::path(
            dir,
            &self.registry,
            &self.package,
            &self.digest,
        ));
    }

    fn forget_path(path: &Path) {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a pending-upload record");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    fn pending() -> PendingUpload {
        PendingUpload {
            registry: "http://127.0.0.1:5000".into(),
            package: "my-api".into(),
            digest: DIGEST.into(),
            id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[test]
    fn round_trips_per_registry_package_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = pending();
        p.save(dir.path()).unwrap();
        assert_eq!(
            PendingUpload::load(dir.path(), &p.registry, &p.package, &p.digest),
            Some(p.clone())
        );
        assert_eq!(
            PendingUpload::load(dir.path(), "http://other:5000", &p.package, &p.digest),
            None,
            "another registry has no upload to resume"
        );
        p.forget(dir.path());
        assert_eq!(
            PendingUpload::load(dir.path(), &p.registry, &p.package, &p.digest),
            None
        );
    }

    #[test]
    fn a_record_that_does_not_describe_the_push_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = pending();
        let path = PendingUpload::path(dir.path(), &p.registry, &p.package, &p.digest);
        for bad in [
            PendingUpload {
                id: "../../etc/passwd".into(),
                ..pending()
            },
            PendingUpload {
                package: "other".into(),
                ..pending()
            },
        ] {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, toml::to_string(&bad).unwrap()).unwrap();
            assert_eq!(
                PendingUpload::load(dir.path(), &p.registry, &p.package, &p.digest),
                None
            );
            assert!(!path.exists(), "the bad record is removed");
        }
        std::fs::write(&path, "not toml [").unwrap();
        assert_eq!(
            PendingUpload::load(dir.path(), &p.registry, &p.package, &p.digest),
            None
        );
    }
}
