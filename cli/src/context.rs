//! What a command may know about its surroundings. `main` fills it from the environment, so no
//! other code reads environment variables.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Context {
    /// The client configuration file, `$XDG_CONFIG_HOME/niso/config.toml`.
    pub config_path: PathBuf,
    /// `$XDG_DATA_HOME/niso`: pulled packages and the default registry data dir live here.
    pub data_home: PathBuf,
    /// `--registry`, else `NISO_REGISTRY`.
    pub registry: Option<String>,
    /// `NISO_KEY`: a key that overrides the configured one.
    pub env_key: Option<String>,
    pub json: bool,
    /// Whether to draw progress bars (stderr is a terminal).
    pub progress: bool,
    /// `NISO_FAILPOINTS`, for crash tests of `registry serve`.
    pub failpoints: Vec<String>,
}

impl Context {
    pub fn packages_dir(&self) -> PathBuf {
        self.data_home.join("packages")
    }

    pub fn default_registry_data(&self) -> PathBuf {
        self.data_home.join("registry")
    }
}
