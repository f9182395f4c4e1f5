//! Node configuration: one serde struct with defaults, read from TOML and overridden by flags.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::Durability;

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
    pub http: HttpConfig,
    pub limits: Limits,
    pub gc: GcConfig,
    pub keys: KeysConfig,
    pub p2p: P2pConfig,
    pub ui: UiConfig,
    /// What this node takes in from peers, continuously. None: nothing.
    pub replicate: Vec<ReplicateRule>,
    /// What this node gives out, and to whom. None: nothing, not even names.
    pub share: Vec<ShareRule>,
    /// Named points where the node stops dead, for crash tests. Set by the binary from the
    /// environment; never read from a file.
    #[serde(skip)]
    pub failpoints: Vec<String>,
    /// Whether commits wait for the disk. Always [`Durability::Flushed`] but in the
    /// simulator, whose nodes share a process that outlives them; never read from a file.
    #[serde(skip)]
    pub durability: Durability,
    /// Deliberate faults, for showing that the simulator catches them. Test builds only.
    #[cfg(feature = "fault-injection")]
    #[serde(skip)]
    pub faults: Faults,
}

/// Faults a test build can switch on.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Accept replicated records without checking their signatures.
    pub skip_signature_checks: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::new(),
            anonymous_pull: false,
            http: HttpConfig::default(),
            limits: Limits::default(),
            gc: GcConfig::default(),
            keys: KeysConfig::default(),
            p2p: P2pConfig::default(),
            ui: UiConfig::default(),
            replicate: Vec::new(),
            share: Vec::new(),
            failpoints: Vec::new(),
            durability: Durability::Flushed,
            #[cfg(feature = "fault-injection")]
            faults: Faults::default(),
        }
    }
}

/// `[http]`: how long the HTTP server waits on a client, and how many it holds at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A connection with no request in flight is closed after this many seconds, and a
    /// request head must arrive whole within it.
    pub header_read_timeout_secs: u64,
    /// A request body that delivers no bytes for this many seconds fails (an upload keeps
    /// what arrived before and can be resumed at once); a client that takes no response bytes
    /// for this long loses the connection.
    pub body_idle_timeout_secs: u64,
    /// Most connections held at once; further ones are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Most connections held at once from one IP address, so that one client cannot take
    /// every slot and health checks from elsewhere still get in. Behind a reverse proxy every
    /// client shares the proxy's address: raise this to `max_connections` there.
    pub max_connections_per_ip: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            body_idle_timeout_secs: 30,
            max_connections: 512,
            max_connections_per_ip: 256,
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
    /// Most bytes a package's zstd stream may decompress to per compressed byte, checked
    /// while streaming; every package may unpack to this times 1 MiB whatever its ratio.
    /// Clients check with the default (200), so a higher value here admits packages that
    /// clients will refuse to install.
    pub max_unpack_ratio: u64,
    /// Uploads one key may have open at once. Checked and taken in one database
    /// transaction, so concurrent opens cannot pass it.
    pub max_open_uploads_per_key: usize,
    /// An upload that receives no bytes for this long is abandoned: a background sweep
    /// removes it and frees its slot. A client killed mid-push locks nothing out for longer.
    pub upload_idle_timeout_secs: u64,
    /// Largest JSON request body, in bytes.
    pub max_json_bytes: usize,
    /// Largest bundle `niso registry import` accepts, in bytes.
    pub max_bundle_bytes: u64,
    /// Memory the database may hold as cached pages, in bytes. redb's own default is 1 GiB,
    /// which a node serving a large catalog fills: its memory then grew with the catalog.
    pub db_cache_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_package_bytes: 16 * 1024 * 1024 * 1024,
            max_unpacked_bytes: 64 * 1024 * 1024 * 1024,
            max_entries: 100_000,
            max_unpack_ratio: niso_protocol::archive::DEFAULT_MAX_UNPACK_RATIO,
            max_open_uploads_per_key: 16,
            upload_idle_timeout_secs: 3600,
            max_json_bytes: 1024 * 1024,
            max_bundle_bytes: 1024 * 1024 * 1024 * 1024,
            db_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Unreferenced blobs younger than this survive a sweep, so a push in flight keeps its blob.
    pub grace_period_secs: u64,
    /// Superseded by `limits.upload_idle_timeout_secs`; still accepted so older config files
    /// parse, and otherwise ignored (the node warns at start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_ttl_secs: Option<u64>,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            grace_period_secs: 3600,
            upload_ttl_secs: None,
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

/// Peer-to-peer networking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// Run the libp2p side: `true`, `false`, or unset, which means on exactly when this node
    /// has `[[replicate]]` or `[[share]]` rules. A node with nothing to take in or give out
    /// opens no p2p port and announces nothing on the LAN.
    pub enabled: Option<bool>,
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Peers to dial at start (multiaddrs ending in `/p2p/PEER_ID`).
    pub bootstrap: Vec<String>,
    /// Find peers on the local network by mDNS.
    pub mdns: bool,
    /// Most connections held at once.
    pub max_connections: u32,
    /// How often to run an anti-entropy sync round.
    pub sync_interval_secs: u64,
    /// How many connected peers each sync round pulls from, in turn (new connections and
    /// pokes are pulled from at once, whatever this says).
    pub sync_peers_per_round: usize,
    /// `[p2p.limits]`: inbound streams per peer and the request deadline.
    pub limits: crate::p2p::frames::StreamLimits,
}

impl Default for P2pConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            listen: vec!["/ip4/0.0.0.0/tcp/4001".to_owned()],
            bootstrap: Vec::new(),
            mdns: true,
            max_connections: 128,
            sync_interval_secs: 10,
            sync_peers_per_round: 8,
            limits: crate::p2p::frames::StreamLimits::default(),
        }
    }
}

/// `[ui]`: the web UI served at `/` beside the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Serve the web UI; when off, its pages answer 404 like any unknown path.
    pub enabled: bool,
    /// A web session unused for this many seconds ends; the next page asks for a key again.
    pub session_idle_secs: u64,
    /// Most web sessions held at once; signing in past it ends the least recently used one.
    pub max_sessions: usize,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_idle_secs: 12 * 3600,
            max_sessions: 10_000,
        }
    }
}

/// `[[replicate]]`: take in records of `packages` signed by `from`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateRule {
    /// An origin's peer id, or `*` for any origin.
    pub from: String,
    /// Package-name globs.
    pub packages: Vec<String>,
    #[serde(default)]
    pub blobs: BlobMode,
}

/// When replicated package bytes are fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobMode {
    /// As soon as the record arrives; the version becomes visible once its bytes are here.
    #[default]
    Eager,
    /// On the first pull; the version is visible at once and the pull streams while it fetches.
    Lazy,
}

/// `[[share]]`: give out `packages` to peer `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRule {
    /// A peer id, or `*` for every peer.
    pub to: String,
    /// Package-name globs.
    pub packages: Vec<String>,
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

    /// Whether the node runs its libp2p side (see [`P2pConfig::enabled`]).
    pub fn p2p_enabled(&self) -> bool {
        self.p2p
            .enabled
            .unwrap_or(!self.replicate.is_empty() || !self.share.is_empty())
    }

    pub(crate) fn archive_limits(&self) -> niso_protocol::archive::ArchiveLimits {
        niso_protocol::archive::ArchiveLimits {
            max_entries: self.limits.max_entries,
            max_unpacked_bytes: self.limits.max_unpacked_bytes,
            max_unpack_ratio: self.limits.max_unpack_ratio,
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
        assert_eq!(
            c.limits.upload_idle_timeout_secs,
            Limits::default().upload_idle_timeout_secs
        );
        let c: NodeConfig = toml::from_str(
            "[gc]\nupload_ttl_secs = 60\n[limits]\nupload_idle_timeout_secs = 5\n[http]\nbody_idle_timeout_secs = 2\n",
        )
        .unwrap();
        assert_eq!(c.gc.upload_ttl_secs, Some(60), "old files still parse");
        assert_eq!(c.limits.upload_idle_timeout_secs, 5);
        assert_eq!(c.http.body_idle_timeout_secs, 2);
        assert!(toml::from_str::<NodeConfig>("anonymous_pul = true").is_err());
    }

    #[test]
    fn p2p_runs_only_with_rules_unless_told() {
        let parse = |s: &str| toml::from_str::<NodeConfig>(s).unwrap().p2p_enabled();
        assert!(!parse(""), "no rules: no p2p listener");
        assert!(!parse("[p2p]\nmdns = true\n"));
        assert!(parse("[[share]]\nto = \"*\"\npackages = [\"*\"]\n"));
        assert!(parse("[[replicate]]\nfrom = \"*\"\npackages = [\"*\"]\n"));
        assert!(parse("[p2p]\nenabled = true\n"));
        assert!(!parse(
            "[p2p]\nenabled = false\n[[share]]\nto = \"*\"\npackages = [\"*\"]\n"
        ));
    }

    #[test]
    fn archive_limits_come_from_the_limits_section() {
        let c: NodeConfig = toml::from_str("").unwrap();
        assert_eq!(
            c.archive_limits(),
            niso_protocol::archive::ArchiveLimits::default()
        );
        let c: NodeConfig =
            toml::from_str("[limits]\nmax_unpack_ratio = 50\nmax_entries = 7\n").unwrap();
        let limits = c.archive_limits();
        assert_eq!(limits.max_unpack_ratio, 50);
        assert_eq!(limits.max_entries, 7);
    }

    #[test]
    fn federation_rules_parse_as_the_design_shows() {
        let c: NodeConfig = toml::from_str(
            r#"
[p2p]
listen = ["/ip4/0.0.0.0/tcp/4001"]
bootstrap = ["/ip4/192.0.2.10/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"]
mdns = true

[[replicate]]
from = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
packages = ["acme-*"]
blobs = "lazy"

[[share]]
to = "*"
packages = ["public-*"]
"#,
        )
        .unwrap();
        assert_eq!(c.replicate[0].blobs, BlobMode::Lazy);
        assert_eq!(c.share[0].to, "*");
        assert!(c.p2p.mdns);
    }

    /// The TOML block under the README's node configuration heading, with settings shown
    /// commented out (`# key = value`: those whose default is "unset") switched on.
    fn readme_reference() -> String {
        let readme = include_str!("../../README.md");
        let section = &readme[readme
            .find("### Node (`niso registry serve --config FILE`)")
            .expect("the README has a node configuration reference")..];
        let open = section.find("```toml\n").expect("with a TOML block") + "```toml\n".len();
        let close = section[open..].find("```").expect("that ends");
        section[open..open + close]
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
                {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every key in `value` as a dotted path; the entries of arrays of tables as `name[]`.
    fn key_paths(value: &toml::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        let toml::Value::Table(table) = value else {
            return;
        };
        for (key, v) in table {
            let path = format!("{prefix}{key}");
            match v {
                toml::Value::Array(items)
                    if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
                {
                    for item in items {
                        key_paths(item, &format!("{path}[]."), out);
                    }
                }
                toml::Value::Table(_) => key_paths(v, &format!("{path}."), out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }

    #[test]
    fn the_readme_reference_lists_every_field_with_its_default() {
        let text = readme_reference();
        // Unknown keys fail here (`deny_unknown_fields`): nothing listed is made up.
        let parsed: NodeConfig =
            toml::from_str(&text).expect("the README's reference parses as a node config");
        let mut listed = std::collections::BTreeSet::new();
        key_paths(&toml::from_str(&text).unwrap(), "", &mut listed);
        let mut fields = std::collections::BTreeSet::new();
        key_paths(&toml::Value::try_from(&parsed).unwrap(), "", &mut fields);
        let missing: Vec<_> = fields.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "README.md's node configuration reference lacks {missing:?}"
        );
        // The values shown are the defaults, except where the README shows an example.
        let defaults = NodeConfig::default();
        assert_eq!(parsed.listen, defaults.listen);
        assert_eq!(parsed.http, defaults.http);
        assert_eq!(parsed.limits, defaults.limits);
        assert_eq!(parsed.gc, defaults.gc);
        assert_eq!(parsed.keys, defaults.keys);
        assert_eq!(parsed.ui, defaults.ui);
        assert_eq!(
            P2pConfig {
                enabled: None,
                ..parsed.p2p
            },
            defaults.p2p
        );
    }

    #[test]
    fn every_node_config_example_of_the_readme_parses() {
        let readme = include_str!("../../README.md");
        let mut found = 0;
        for block in readme.split("```toml\n").skip(1) {
            let body = block.split("```").next().unwrap_or_default();
            let first = body.lines().next().unwrap_or_default();
            if first.starts_with("# niso registry serve --config")
                || first.starts_with("# ~/.config/niso/registry.toml")
            {
                if let Err(e) = toml::from_str::<NodeConfig>(body) {
                    panic!("a node config example in README.md does not parse: {e}\n{body}");
                }
                found += 1;
            }
        }
        assert!(found >= 2, "README.md shows {found} node config examples");
    }
}
