//! What a command may know about its surroundings. `main` fills it from the environment, so no
//! other code reads environment variables.

use std::{path::PathBuf, time::Duration};

/// How long a transfer may go without a byte before the command gives up on the connection.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Context {
    /// The client configuration file, `$XDG_CONFIG_HOME/niso/config.toml`.
    pub config_path: PathBuf,
    /// `$XDG_CONFIG_HOME` itself: systemd user units and the registry's config live under it.
    pub config_home: PathBuf,
    /// The directories of `PATH`, to tell users when the bin directory is missing from it.
    pub path_dirs: Vec<PathBuf>,
    /// `$XDG_DATA_HOME/niso`: pulled packages and the default registry data dir live here.
    pub data_home: PathBuf,
    /// `$XDG_STATE_HOME/niso`: what the client remembers between runs (pushes to resume).
    pub state_home: PathBuf,
    /// `--registry`, else `NISO_REGISTRY`.
    pub registry: Option<String>,
    /// `NISO_KEY`: a key that overrides the configured one.
    pub env_key: Option<String>,
    pub json: bool,
    /// Whether to draw progress bars (stderr is a terminal).
    pub progress: bool,
    /// Whether to use systemd for services when it runs (`NISO_NO_SYSTEMD` turns it off).
    pub systemd: bool,
    /// `NISO_FAILPOINTS`, for crash and fault tests.
    pub failpoints: Vec<String>,
    /// `NISO_STALL_TIMEOUT_SECS`: how long a download may receive nothing before this
    /// connection is given up on ([`DEFAULT_STALL_TIMEOUT`] unless set).
    pub stall_timeout: Duration,
}

impl Context {
    pub fn packages_dir(&self) -> PathBuf {
        self.data_home.join("packages")
    }

    pub fn default_registry_data(&self) -> PathBuf {
        self.data_home.join("registry")
    }

    /// The registry configuration `niso registry serve` reads when given no `--config`.
    pub fn default_registry_config(&self) -> PathBuf {
        self.config_home.join("niso/registry.toml")
    }
}
