//! Command-line grammar: every command, flag and help text, with an example on each command.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "niso",
    version,
    about = "Push, pull, search and manage niso packages; run a registry node.",
    after_help = "Examples:\n  niso registry serve\n  niso login http://127.0.0.1:5000 --key \"$(cat ~/.local/share/niso/registry/admin.key)\"\n  niso push my-api-1.0.0-x86_64.niso\n  niso pull my-api:1.0.0\n\nExit codes: 0 ok, 1 error, 2 usage, 3 authentication or permission, 4 not found,\n5 conflict, 6 registry unreachable, 7 verification failed, 130 interrupted (Ctrl-C)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Registry to talk to: a configured name or a URL (default: the configured default).
    #[arg(long, global = true, value_name = "NAME|URL")]
    pub registry: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save a registry URL and API key, checking the key first.
    #[command(after_help = "Example:\n  niso login https://registry.example.com --key niso_k1_...")]
    Login {
        /// Registry URL.
        url: String,
        /// API key.
        #[arg(long)]
        key: String,
        /// Name to save it under (default: the URL's host).
        #[arg(long)]
        name: Option<String>,
        /// Make it the default registry.
        #[arg(long)]
        default: bool,
    },
    /// Build a reproducible .niso package from a directory containing niso.toml.
    #[command(
        after_help = "Examples:\n  niso pack ./my-api          # writes ./my-api-1.0.0-x86_64.niso\n  niso pack --self            # this niso as the niso-registry package"
    )]
    Pack {
        /// Directory with niso.toml at its root.
        #[arg(required_unless_present = "self_package")]
        dir: Option<PathBuf>,
        /// Package this niso binary as `niso-registry`, whose service runs `niso registry serve`.
        #[arg(long = "self", conflicts_with = "dir")]
        self_package: bool,
        /// Output file (default: NAME-VERSION-ARCH.niso in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Upload a package file.
    #[command(
        after_help = "A broken connection is retried from the offset the registry reports, and a \
registry that restarts is waited for (up to 60 s). A push stopped for good (Ctrl-C, killed) \
resumes where it stopped when the same file is pushed to the same registry again; \
`niso registry uploads --cancel ID` discards an upload instead.\n\n\
Examples:\n  niso push my-api-1.0.0-x86_64.niso\n  niso push my-api-1.0.0-x86_64.niso --registry private"
    )]
    Push {
        /// The .niso file.
        file: PathBuf,
    },
    /// Download a package into the local store, verifying its digest.
    #[command(
        after_help = "Examples:\n  niso pull my-api           # latest release\n  niso pull my-api:1.0.0     # exact version\n  niso pull my-api:stable    # tag\n  niso pull nodejs:20        # highest 20.x.y"
    )]
    Pull {
        /// NAME, NAME:TAG, NAME:VERSION or NAME:PREFIX.
        reference: String,
        /// Architecture to pull (default: this machine's, else `any`).
        #[arg(long)]
        arch: Option<String>,
        /// Also copy the package here.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Try every configured registry, nearest (lowest latency) first, falling back on failure.
        #[arg(long)]
        nearest: bool,
    },
    /// Search packages by name and description.
    #[command(after_help = "Example:\n  niso search postgres")]
    Search {
        /// Words to look for.
        query: Vec<String>,
        /// Most results to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show a package's versions, architectures and tags.
    #[command(after_help = "Example:\n  niso show my-api")]
    Show {
        /// Package name.
        name: String,
    },
    /// Point a tag at a version: `niso tag SOURCE TARGET`.
    #[command(after_help = "Example:\n  niso tag my-api:1.0.0 my-api:stable")]
    Tag {
        /// NAME:VERSION (or NAME:TAG) to tag.
        source: String,
        /// NAME:TAG to create or move.
        target: String,
    },
    /// Remove a tag (needs a `push:` scope for the package); the version stays.
    #[command(after_help = "Example:\n  niso untag my-api:stable")]
    Untag {
        /// NAME:TAG.
        reference: String,
    },
    /// Delete a version for good (needs a `delete:` scope).
    #[command(after_help = "Example:\n  niso delete my-api:1.0.0 --arch x86_64")]
    Delete {
        /// NAME:VERSION.
        reference: String,
        /// Only this architecture (default: every build of the version).
        #[arg(long)]
        arch: Option<String>,
    },
    /// Download, verify and unpack a package without activating it.
    #[command(after_help = "Example:\n  niso install my-api:1.0.0")]
    Install {
        /// NAME, NAME:TAG, NAME:VERSION or NAME:PREFIX.
        reference: String,
    },
    /// Make a version the active one (installing it first if needed); runs its service.
    #[command(
        after_help = "Examples:\n  niso activate my-api:1.0.0\n  niso activate niso-registry"
    )]
    Activate {
        reference: String,
        /// Install the service as a system unit instead of a user unit.
        #[arg(long)]
        system: bool,
    },
    /// Stop a package's service and remove its executables from the bin directory.
    #[command(after_help = "Example:\n  niso deactivate my-api")]
    Deactivate { name: String },
    /// Switch back to the previously active version.
    #[command(after_help = "Example:\n  niso rollback my-api")]
    Rollback { name: String },
    /// Pull, install and activate in one step; with no name, upgrade everything installed.
    #[command(
        after_help = "Examples:\n  niso upgrade my-api\n  niso upgrade my-api:1.1.0\n  niso upgrade"
    )]
    Upgrade {
        /// NAME or NAME:REF; the reference is remembered for later upgrades.
        reference: Option<String>,
        /// Install services as system units instead of user units.
        #[arg(long)]
        system: bool,
    },
    /// List installed packages and their active versions.
    #[command(after_help = "Example:\n  niso list")]
    List,
    /// Remove installed versions (the active one only with --force).
    #[command(after_help = "Examples:\n  niso remove my-api:1.0.0\n  niso remove my-api --force")]
    Remove {
        /// NAME (every version) or NAME:VERSION.
        reference: String,
        #[arg(long)]
        force: bool,
    },
    /// Run package services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Run and administer registries.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Print shell completions.
    #[command(
        after_help = "Example:\n  niso completions bash > ~/.local/share/bash-completion/completions/niso"
    )]
    Completions { shell: clap_complete::Shell },
    /// Print the niso(1) man page, or write a page for every command into a directory.
    #[command(
        after_help = "Examples:\n  niso man | man -l -\n  niso man --dir ~/.local/share/man/man1   # niso.1, niso-push.1, niso-registry-serve.1, ..."
    )]
    Man {
        /// Write niso.1 and a niso-COMMAND.1 page for every command here (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Run the active version's service in the foreground, with its restart policy.
    #[command(after_help = "Example:\n  niso service run niso-registry")]
    Run { name: String },
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Run a registry node.
    #[command(
        after_help = "Peer-to-peer networking starts only when the config has [[replicate]] or [[share]] rules, \
or with [p2p] enabled = true, --p2p-listen or --bootstrap; otherwise the node opens no p2p port.\n\n\
Examples:\n  niso registry serve\n  niso registry serve --listen 0.0.0.0:5000 --data-dir /var/lib/niso-registry"
    )]
    Serve(ServeArgs),
    /// Show a node's identity and size; with --data-dir, the identity of a node that is not
    /// running, read from its data directory.
    #[command(
        after_help = "Examples:\n  niso registry info --registry private\n  niso registry info --data-dir /var/lib/niso-registry"
    )]
    Info {
        /// Read the peer id from this data directory instead of asking a running node.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List a node's peers: addresses, latency, sync state (needs an admin key).
    #[command(after_help = "Example:\n  niso registry peers --registry private")]
    Peers,
    /// Add a named registry to the client configuration.
    #[command(
        after_help = "Example:\n  niso registry add private https://registry.example.com --key niso_k1_abc123 --default"
    )]
    Add {
        name: String,
        url: String,
        /// API key for it.
        #[arg(long)]
        key: Option<String>,
        /// Make it the default registry.
        #[arg(long)]
        default: bool,
    },
    /// Show the default registry, or make NAME the default.
    #[command(after_help = "Examples:\n  niso registry default\n  niso registry default private")]
    Default {
        /// A configured registry's name.
        name: Option<String>,
    },
    /// List configured registries.
    #[command(after_help = "Example:\n  niso registry list")]
    List,
    /// Remove a configured registry.
    #[command(after_help = "Example:\n  niso registry remove private")]
    Remove { name: String },
    /// List a package's tags.
    #[command(after_help = "Example:\n  niso registry list-tags my-api")]
    ListTags { name: String },
    /// Create an API key (needs an admin key).
    #[command(
        after_help = "Examples:\n  niso registry create-key --scope \"push:my-*\" --name ci-deploy\n  niso registry create-key --scope pull:* --scope push:team-* --name team --expires 90d"
    )]
    CreateKey {
        /// `push:GLOB`, `pull:GLOB`, `delete:GLOB` or `admin`; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// A label for the key.
        #[arg(long)]
        name: String,
        /// When the key stops working: a duration (`30m` minutes, `12h`, `30d`, `2w`) or a
        /// date (`2027-01-31`, UTC midnight).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List API keys (needs an admin key).
    #[command(after_help = "Example:\n  niso registry list-keys")]
    ListKeys,
    /// Revoke an API key by id (needs an admin key).
    #[command(after_help = "Example:\n  niso registry revoke-key key_abc123")]
    RevokeKey { id: String },
    /// List open uploads (your key's; every key's with an admin key), or cancel one.
    #[command(
        after_help = "An upload stays open while a push is under way, and after a push that was killed; \
pushing the same file again resumes it. One that receives no bytes for the registry's \
limits.upload_idle_timeout_secs (1 h by default) expires on its own.\n\n\
Examples:\n  niso registry uploads\n  niso registry uploads --cancel 5f0c2d9e8b7a41c3a2e4f6b8d0c1e3a5"
    )]
    Uploads {
        /// Cancel the upload with this id and delete what it received.
        #[arg(long, value_name = "ID")]
        cancel: Option<String>,
    },
    /// Remove old versions and unreferenced blobs (needs an admin key).
    #[command(
        after_help = "Examples:\n  niso registry gc --keep-versions 5 --dry-run\n  niso registry gc --keep-versions 5"
    )]
    Gc {
        /// Keep the newest N versions per package and architecture (tagged ones always stay).
        #[arg(long)]
        keep_versions: u32,
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write records and blobs into one bundle file, for air-gapped sites.
    #[command(
        after_help = "Examples:\n  niso registry export --to all.niso-bundle\n  niso registry export --to week.niso-bundle --packages 'acme-*' --since 1042"
    )]
    Export {
        /// The bundle file to write.
        #[arg(long)]
        to: PathBuf,
        /// Only these packages (globs); repeat for several.
        #[arg(long = "packages", num_args = 1..)]
        packages: Vec<String>,
        /// Only changes after this mark (printed by the previous export).
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// Verify a bundle file and add what it holds to a registry (needs an admin key).
    #[command(after_help = "Example:\n  niso registry import week.niso-bundle --registry airgap")]
    Import {
        /// The bundle file.
        file: PathBuf,
    },
    /// Copy every package one registry shares into another.
    #[command(after_help = "Example:\n  niso registry mirror --from niso.dev --to private")]
    Mirror {
        /// Source registry (name or URL).
        #[arg(long)]
        from: String,
        /// Target registry (name or URL); needs an admin key there.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:5000; port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where to keep the database and blobs (default: $XDG_DATA_HOME/niso/registry).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file; flags override it (default: $XDG_CONFIG_HOME/niso/registry.toml if present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Let clients without a key pull and search.
    #[arg(long)]
    pub anonymous_pull: bool,
    /// libp2p listen multiaddr (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long = "p2p-listen", value_name = "MULTIADDR")]
    pub p2p_listen: Vec<String>,
    /// Peer to dial at start (repeatable): /ip4/…/tcp/…/p2p/PEER_ID.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Run without peer-to-peer networking (HTTP only).
    #[arg(long)]
    pub no_p2p: bool,
    /// Do not look for peers on the local network.
    #[arg(long)]
    pub no_mdns: bool,
}
