//! Node configuration: one serde struct with defaults, read from TOML and overridden by flags.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Everything a node can be told. Every field has a default, so an empty file is valid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Where the database, blobs and keys live. The binary fills in the user's data home.
    pub data_dir: PathBuf,
    /// Let clients without a key pull and search.
    pub anonymous_pull: bool,
    pub limits: Limits,
    pub gc: GcConfig,
    pub keys: KeysConfig,
    /// Named points where the node stops dead, for crash tests. Set by the binary from the
    /// environment; never read from a file.
    #[serde(skip)]
    pub failpoints: Vec<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::new(),
            anonymous_pull: false,
            limits: Limits::default(),
            gc: GcConfig::default(),
            keys: KeysConfig::default(),
            failpoints: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest `.niso` file accepted, in bytes.
    pub max_package_bytes: u64,
    /// Largest total size of the files inside a package, in bytes.
    pub max_unpacked_bytes: u64,
    /// Most entries a package may contain.
    pub max_entries: u64,
    /// Uploads one key may have open at once.
    pub max_open_uploads_per_key: usize,
    /// Largest JSON request body, in bytes.
    pub max_json_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_package_bytes: 16 * 1024 * 1024 * 1024,
            max_unpacked_bytes: 64 * 1024 * 1024 * 1024,
            max_entries: 100_000,
            max_open_uploads_per_key: 16,
            max_json_bytes: 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Unreferenced blobs younger than this survive a sweep, so a push in flight keeps its blob.
    pub grace_period_secs: u64,
    /// Uploads untouched for this long are abandoned and removed.
    pub upload_ttl_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            grace_period_secs: 3600,
            upload_ttl_secs: 24 * 3600,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// How often "last used" times are written to the database.
    pub last_used_flush_secs: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            last_used_flush_secs: 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

impl NodeConfig {
    /// Reads a TOML config file; absent fields keep their defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub(crate) fn archive_limits(&self) -> niso_protocol::archive::ArchiveLimits {
        niso_protocol::archive::ArchiveLimits {
            max_entries: self.limits.max_entries,
            max_unpacked_bytes: self.limits.max_unpacked_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults_and_unknown_keys_fail() {
        let c: NodeConfig = toml::from_str("").unwrap();
        assert_eq!(c, NodeConfig::default());
        let c: NodeConfig =
            toml::from_str("anonymous_pull = true\n[gc]\ngrace_period_secs = 5\n").unwrap();
        assert!(c.anonymous_pull);
        assert_eq!(c.gc.grace_period_secs, 5);
        assert_eq!(c.gc.upload_ttl_secs, GcConfig::default().upload_ttl_secs);
        assert!(toml::from_str::<NodeConfig>("anonymous_pul = true").is_err());
    }
}
