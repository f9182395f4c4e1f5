//! `niso.toml`, the metadata file every package archive carries as its first entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Arch, PackageName};

/// Largest `niso.toml` accepted, in bytes.
pub const MAX_META_LEN: u64 = 64 * 1024;

/// What `niso.toml` declares about a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageMeta {
    pub name: PackageName,
    pub version: semver::Version,
    pub arch: Arch,
    #[serde(default)]
    pub description: String,
    /// Paths inside the package of executables that activation exposes on the user's PATH.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bin: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
}

/// A long-running process the package provides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Path inside the package, or a bare command name looked up on PATH.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Directory the service runs in, relative to the installed package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    #[default]
    OnFailure,
    Always,
}

/// Longest description accepted, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("niso.toml is not valid")]
    Toml(#[from] toml::de::Error),
    #[error("niso.toml is not UTF-8")]
    NotUtf8,
    #[error("niso.toml is larger than {MAX_META_LEN} bytes")]
    TooLarge,
    #[error("description is longer than {MAX_DESCRIPTION_LEN} characters")]
    DescriptionTooLong,
    #[error("`{0}` in niso.toml is not a relative path inside the package")]
    BadPath(String),
    #[error(
        "version {0} carries build metadata (`+…`); niso versions differ in their numbers or prerelease, never only in build metadata, so drop it or make it part of a prerelease (e.g. `1.0.0-rebuild.1`)"
    )]
    BuildMetadata(String),
}

impl PackageMeta {
    pub fn parse(bytes: &[u8]) -> Result<Self, MetaError> {
        if bytes.len() as u64 > MAX_META_LEN {
            return Err(MetaError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| MetaError::NotUtf8)?;
        let meta: Self = toml::from_str(text)?;
        meta.check()?;
        Ok(meta)
    }

    fn check(&self) -> Result<(), MetaError> {
        if !self.version.build.is_empty() {
            return Err(MetaError::BuildMetadata(self.version.to_string()));
        }
        if self.description.chars().count() > MAX_DESCRIPTION_LEN {
            return Err(MetaError::DescriptionTooLong);
        }
        // `working_dir = "."` is the package root itself, which no entry path can name.
        let service_paths = self.service.iter().flat_map(|s| {
            s.working_dir
                .iter()
                .filter(|d| d.as_str() != ".")
                .chain(std::iter::once(&s.command))
        });
        for p in self.bin.iter().chain(service_paths) {
            if crate::archive::check_entry_path(p).is_err() {
                return Err(MetaError::BadPath(p.clone()));
            }
        }
        Ok(())
    }

    /// The canonical archive file name: `NAME-VERSION-ARCH.niso`.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.niso", self.name, self.version, self.arch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_meta() {
        let meta = PackageMeta::parse(
            br#"
name = "my-api"
version = "1.0.0"
arch = "x86_64"
description = "My API"
bin = ["bin/my-api"]

[service]
command = "bin/my-api"
args = ["--port", "8080"]
env = { RUST_LOG = "info" }
restart = "always"
"#,
        )
        .unwrap();
        assert_eq!(meta.file_name(), "my-api-1.0.0-x86_64.niso");
        let service = meta.service.unwrap();
        assert_eq!(service.restart, RestartPolicy::Always);
        assert_eq!(service.env["RUST_LOG"], "info");
    }

    #[test]
    fn rejects_bad_meta() {
        let bad_version = PackageMeta::parse(b"name='a'\nversion='1.0'\narch='any'\n");
        assert!(matches!(bad_version, Err(MetaError::Toml(_))));
        let bad_name = PackageMeta::parse(b"name='A'\nversion='1.0.0'\narch='any'\n");
        assert!(bad_name.is_err());
        let unknown = PackageMeta::parse(b"name='a'\nversion='1.0.0'\narch='any'\nfoo=1\n");
        assert!(unknown.is_err());
        let escaping = PackageMeta::parse(b"name='a'\nversion='1.0.0'\narch='any'\nbin=['../x']\n");
        assert!(matches!(escaping, Err(MetaError::BadPath(_))));
        let build = PackageMeta::parse(b"name='a'\nversion='1.0.0+rebuild'\narch='any'\n");
        assert!(matches!(build, Err(MetaError::BuildMetadata(_))));
    }

    #[test]
    fn a_service_may_run_in_the_package_root_but_not_outside_it() {
        let meta = |dir: &str| {
            PackageMeta::parse(
                format!(
                    "name = \"a\"\nversion = \"1.0.0\"\narch = \"any\"\n[service]\ncommand = \"bin/a\"\nworking_dir = \"{dir}\"\n"
                )
                .as_bytes(),
            )
        };
        assert_eq!(
            meta(".").unwrap().service.unwrap().working_dir.as_deref(),
            Some(".")
        );
        assert!(meta("data").is_ok());
        assert!(matches!(meta(".."), Err(MetaError::BadPath(_))));
        assert!(matches!(meta("/etc"), Err(MetaError::BadPath(_))));
    }
}
