//! The niso registry node as a library: storage, the HTTP API, API keys and scopes, garbage
//! collection and HTTP mirroring.
//!
//! Architecture invariant: this crate never installs a tracing subscriber and never reads the
//! environment; the binary decides both and hands the node a [`NodeConfig`].

pub mod api_keys;
pub mod blobs;
pub mod bundle;
pub mod clock;
pub mod config;
mod deferred;
pub mod failpoint;
pub mod gossip_room;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod intake;
pub mod last_gc;
mod last_used;
pub mod metrics;
pub mod mirror;
mod node;
pub mod offload;
pub mod p2p;
pub mod replication;
mod runtime_flavor;
pub mod signatures;
pub mod store;
mod sync_rota;
pub mod trust;
pub mod ui;
pub mod upload_expiry;

pub use config::NodeConfig;
pub use node::{ADMIN_KEY_FILE, Node, NodeError, NodeState};
