//! JSON bodies of the HTTP API (`/v1`). The node serves them, the client reads them, and the
//! OpenAPI document is generated from these definitions.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    Arch, Digest, PackageName,
    api_schema::{KeyId, KeyName, ScopeString, UploadId, VersionString},
    record::Record,
    whole_number,
};

/// Every error response: `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, stable: e.g. `not_found`, `version_exists`, `missing_scope`.
    pub code: String,
    /// Human-readable explanation with what to do next.
    pub message: String,
}

/// `GET /v1/node`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// libp2p peer id derived from the node's ed25519 identity.
    pub peer_id: String,
    /// Addresses the node listens on for peers (empty while p2p is off).
    pub p2p_addrs: Vec<String>,
    /// niso version of the node.
    pub version: String,
    /// Hex ed25519 public key that signs this node's records.
    pub origin: String,
    pub packages: u64,
    pub versions: u64,
    pub anonymous_pull: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PackageSummary {
    #[schema(value_type = PackageName)]
    pub name: String,
    /// Highest non-prerelease version, if any.
    #[schema(value_type = Option<VersionString>)]
    pub latest: Option<String>,
    pub description: String,
}

/// `GET /v1/packages`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PackageList {
    pub packages: Vec<PackageSummary>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    #[schema(value_type = VersionString)]
    pub version: String,
    #[schema(value_type = Arch)]
    pub arch: String,
    #[schema(value_type = Digest)]
    pub digest: String,
    pub size: u64,
    pub description: String,
    pub published_ms: u64,
    /// Hex key of the node that published it.
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TagInfo {
    /// A tag, or `latest`.
    pub tag: String,
    #[schema(value_type = VersionString)]
    pub version: String,
    /// `true` for `latest`, which the node maintains itself.
    pub automatic: bool,
}

/// `GET /v1/packages/{name}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PackageDetail {
    #[schema(value_type = PackageName)]
    pub name: String,
    pub description: String,
    pub versions: Vec<VersionInfo>,
    pub tags: Vec<TagInfo>,
}

/// `GET /v1/packages/{name}/tags`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TagList {
    pub tags: Vec<TagInfo>,
}

/// `PUT /v1/packages/{name}/tags/{tag}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SetTag {
    /// The exact version the tag is to point at; it must exist.
    #[schema(value_type = VersionString)]
    pub version: String,
}

/// `GET /v1/packages/{name}/resolve`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Resolved {
    #[schema(value_type = PackageName)]
    pub name: String,
    #[schema(value_type = VersionString)]
    pub version: String,
    #[schema(value_type = Arch)]
    pub arch: String,
    #[schema(value_type = Digest)]
    pub digest: String,
    pub size: u64,
    pub description: String,
    /// How the reference matched: `latest`, `tag`, `exact` or `prefix`.
    pub matched: String,
}

/// `POST /v1/packages/{name}/uploads`, `HEAD`/`PATCH /v1/uploads/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadStatus {
    #[schema(value_type = UploadId)]
    pub id: String,
    /// Bytes received so far; the next `PATCH` must start here.
    pub offset: u64,
}

/// `GET /v1/uploads`: one open upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UploadInfo {
    #[schema(value_type = UploadId)]
    pub id: String,
    /// The package the upload was opened for.
    #[schema(value_type = PackageName)]
    pub package: String,
    /// Bytes received so far.
    pub offset: u64,
    /// The key that opened it.
    #[schema(value_type = Option<KeyId>)]
    pub key_id: Option<String>,
    /// Milliseconds since the Unix epoch when it was opened.
    pub created_ms: u64,
    /// Milliseconds since it last received bytes (or was opened); it expires when this
    /// passes the node's `limits.upload_idle_timeout_secs`.
    pub idle_ms: u64,
}

/// `GET /v1/uploads`: the calling key's open uploads, or every key's for an admin key.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadList {
    pub uploads: Vec<UploadInfo>,
}

/// `PUT /v1/uploads/{id}`: the package is published.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Published {
    #[schema(value_type = PackageName)]
    pub name: String,
    #[schema(value_type = VersionString)]
    pub version: String,
    #[schema(value_type = Arch)]
    pub arch: String,
    #[schema(value_type = Digest)]
    pub digest: String,
    pub size: u64,
    /// `false` when the exact same bytes were already published.
    pub created: bool,
}

/// `POST /v1/keys`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateKey {
    /// 1 to 64 characters, not all spaces, no control characters; surrounding spaces are
    /// dropped.
    #[schema(value_type = KeyName)]
    pub name: String,
    #[schema(value_type = Vec<ScopeString>, min_items = 1)]
    pub scopes: Vec<String>,
    /// Milliseconds since the Unix epoch after which the key stops working; in the future.
    #[serde(default, deserialize_with = "whole_number::option_u64")]
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    pub expires_at_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The secret key. Shown once; the node keeps only a hash.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyInfo {
    #[schema(value_type = KeyId)]
    pub id: String,
    pub name: String,
    #[schema(value_type = Vec<ScopeString>)]
    pub scopes: Vec<String>,
    pub created_ms: u64,
    pub last_used_ms: Option<u64>,
    pub expires_at_ms: Option<u64>,
}

/// `GET /v1/keys`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// `GET /v1/whoami`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// Absent for anonymous access.
    #[schema(value_type = Option<KeyId>)]
    pub key_id: Option<String>,
    pub name: Option<String>,
    #[schema(value_type = Vec<ScopeString>)]
    pub scopes: Vec<String>,
}

/// `POST /v1/gc`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GcRequest {
    /// Keep the newest N versions of each package and architecture (tagged ones always stay).
    #[serde(deserialize_with = "whole_number::u32")]
    #[schema(minimum = 1, format = "uint32", maximum = 4294967295_u32)]
    pub keep_versions: u32,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcVersion {
    #[schema(value_type = PackageName)]
    pub name: String,
    #[schema(value_type = VersionString)]
    pub version: String,
    #[schema(value_type = Arch)]
    pub arch: String,
    pub size: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    pub dry_run: bool,
    /// Versions removed (or that would be).
    pub versions: Vec<GcVersion>,
    /// Blob files removed (or that would be).
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Unreferenced blobs left alone because they are younger than the grace period.
    pub blobs_in_grace: u64,
}

/// `POST /v1/mirror`: pull everything `from` lets `key` pull into this node.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MirrorRequest {
    /// Base URL of the source registry: `http://` or `https://`.
    #[schema(pattern = "^https?://[^/]")]
    pub from: String,
    /// API key for the source, if it needs one.
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct MirrorReport {
    /// `p2p` when the target synced from the source over libp2p, `http` otherwise.
    pub via: String,
    pub records_seen: u64,
    pub records_applied: u64,
    pub versions: u64,
    pub tags: u64,
    pub deletions: u64,
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    /// Records this node already had.
    pub skipped: u64,
    /// Records of origins or packages this node does not take in.
    #[serde(default)]
    pub untrusted: u64,
    /// Records left for a later mirror because their blob could not be fetched.
    #[serde(default)]
    pub incomplete: u64,
    /// Records refused (or left incomplete), each with the reason.
    pub rejected: Vec<String>,
    /// Why that transport: what made libp2p usable, or why HTTP was used instead.
    #[serde(default)]
    pub via_reason: String,
    /// What decided which records the source offered: its share rules for this node, or the
    /// key's pull scopes. Records outside it were never seen, so no count includes them.
    #[serde(default)]
    pub offered: String,
}

/// `GET /v1/records`: signed records in this node's log order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordPage {
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Record>,
    /// Position after the last record returned; pass as `after` to continue.
    pub next: u64,
    /// Whether more records follow.
    pub more: bool,
}

/// `GET /v1/peers`: what the node knows about one peer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct PeerInfo {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub connected: bool,
    /// Round-trip time of the last ping, in milliseconds.
    pub latency_ms: Option<u64>,
    /// When records were last pulled from this peer, in ms since the epoch.
    pub last_sync_ms: Option<u64>,
    /// This peer's log position we have synced up to.
    pub synced_to: Option<u64>,
    /// This peer's last log position when it last answered a sync.
    #[serde(default)]
    pub log_head: Option<u64>,
    /// Positions of this peer's log whose records are not all applied here yet: its head
    /// minus the position up to which they are (records waiting for their blobs count as not
    /// applied). 0 when caught up; unknown before the first sync.
    #[serde(default)]
    pub records_behind: Option<u64>,
    /// Packages whose records from this peer wait for a blob fetch (one group each).
    #[serde(default)]
    pub blobs_pending: u64,
    /// Bad messages or bytes received from it; at 3 it is blocked.
    pub strikes: u32,
    /// Records it relayed that this node refused (authority, conflicts, invalid, ...); the
    /// node's log and `records_refused` metric say why.
    #[serde(default)]
    pub records_refused: u64,
    pub blocked: bool,
}

/// `POST /v1/import`: what an import did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// Peer id of the node that wrote the bundle.
    pub source: String,
    /// The bundle's `mark`: pass as `since` for the next incremental export.
    pub mark: u64,
    pub records_applied: u64,
    pub versions: u64,
    pub tags: u64,
    pub deletions: u64,
    pub blobs: u64,
    pub bytes: u64,
    /// Records already held.
    pub duplicates: u64,
    /// Records no `[[replicate]]` rule accepts.
    pub untrusted: u64,
    /// Records the intake refused (bad signature, authority, conflicts, rollbacks, a blob that
    /// is not the manifest's package), each with the reason.
    pub refused: Vec<String>,
}

/// `niso-bundle.json`, the first entry of the tar that `GET /v1/export` streams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    pub format: String,
    /// Peer id of the node that wrote the bundle.
    pub source: String,
    /// Log position the bundle starts after (0 for a full export).
    pub since: u64,
    /// Log position it ends at: pass as `--since` for the next incremental export.
    pub mark: u64,
    pub records: u64,
    pub blobs: u64,
}
