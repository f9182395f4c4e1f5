//! Values stored in the tables, encoded with postcard. Adding a field means a new table version.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::error::{StoreError, corrupt};

/// A live `(name, version, arch)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntry {
    pub digest: [u8; 32],
    pub size: u64,
    pub description: String,
    pub published_ms: u64,
    pub origin: [u8; 32],
    pub seq: u64,
}

/// Where a tag points (`None` once removed; the entry stays to block rollbacks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEntry {
    pub version: Option<String>,
    pub tag_seq: u64,
    pub origin: [u8; 32],
    pub updated_ms: u64,
}

/// Who holds a package name: the spelling first published and the origin that published it.
/// Only that origin's records may add, tag or delete the package's versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerEntry {
    pub name: String,
    pub origin: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageEntry {
    pub description: String,
    pub updated_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub name: String,
    pub hash: [u8; 32],
    pub scopes: Vec<String>,
    pub created_ms: u64,
    pub last_used_ms: Option<u64>,
    pub expires_at_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadEntry {
    pub name: String,
    pub key_id: Option<String>,
    pub created_ms: u64,
}

/// Sync progress with one peer: its log position we have pulled to, and the fingerprints of
/// the rules that position was reached under (a change restarts from 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSync {
    pub cursor: u64,
    pub share_fingerprint: u64,
    pub replicate_fingerprint: u64,
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(v).map_err(corrupt)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(corrupt)
}
