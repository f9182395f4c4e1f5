//! redb table definitions and key encodings. Table names carry a version so a future layout can
//! live beside this one during a migration.

use niso_protocol::record::OriginKey;
use redb::{MultimapTableDefinition, TableDefinition};

/// `origin (32) ‖ seq (u64 BE)` → the record's wire bytes.
pub const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records_v1");
/// Local log position → `origin ‖ seq`: the order this node learned records in.
pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log_v1");
/// `(package, local log position)` → `origin ‖ seq`: each package's records in log order, so a
/// key that may see a few packages reads their records without scanning the whole log.
pub const PACKAGE_LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("package_log_v1");
/// Every package name that has records in the log (those of [`PACKAGE_LOG`]).
pub const LOG_NAMES: TableDefinition<&str, ()> = TableDefinition::new("log_names_v1");
/// Origin → highest sequence number held.
pub const ORIGINS: TableDefinition<&[u8], u64> = TableDefinition::new("origins_v1");
/// `name \0 version \0 arch` → [`super::entries::VersionEntry`].
pub const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions_v1");
/// Blob digest (32) → every `name \0 version \0 arch` in [`VERSIONS`] with that digest: who may
/// be served a blob, asked on every peer's blob request.
pub const BLOB_VERSIONS: MultimapTableDefinition<&[u8], &str> =
    MultimapTableDefinition::new("blob_versions_v1");
/// `name \0 tag` → [`super::entries::TagEntry`].
pub const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags_v1");
/// `name \0 version \0 arch` → `origin ‖ seq` of the tombstone.
pub const TOMBSTONES: TableDefinition<&str, &[u8]> = TableDefinition::new("tombstones_v1");
/// Canonical package name ([`niso_protocol::PackageName::canonical`]) → [`super::entries::OwnerEntry`]:
/// which spelling and which origin hold the name. Written by the first manifest this node
/// applies for the name and never removed, so a name cannot change hands, even once empty.
pub const OWNERS: TableDefinition<&str, &[u8]> = TableDefinition::new("owners_v1");
/// `name \0 version \0 arch` → blob digest (32) of a version local GC removed: the version may
/// come back only with the same bytes.
pub const RETIRED: TableDefinition<&str, &[u8]> = TableDefinition::new("retired_v1");
/// Package name → [`super::entries::PackageEntry`] (only while it has live versions).
pub const PACKAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("packages_v1");
/// Key id → [`super::entries::KeyEntry`].
pub const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys_v1");
/// Key hash → key id.
pub const KEY_HASHES: TableDefinition<&[u8], &str> = TableDefinition::new("key_hashes_v1");
/// Upload id → [`super::entries::UploadEntry`].
pub const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads_v1");

pub fn record_key(origin: &OriginKey, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&origin.0);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn version_key(name: &str, version: &str, arch: &str) -> String {
    format!("{name}\0{version}\0{arch}")
}

pub fn tag_key(name: &str, tag: &str) -> String {
    format!("{name}\0{tag}")
}

/// The half-open key range holding every `name \0 …` key of one package.
pub fn package_range(name: &str) -> (String, String) {
    (format!("{name}\0"), format!("{name}\u{1}"))
}

/// Splits a `a \0 b \0 c` key.
pub fn split_key(key: &str) -> Vec<&str> {
    key.split('\0').collect()
}
/// Peer id → postcard `PeerSync`: how far this node has pulled from that peer.
pub const PEER_SYNC: TableDefinition<&str, &[u8]> = TableDefinition::new("peer_sync_v1");
