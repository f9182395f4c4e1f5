//! The read side of the store: packages, versions, tags and the record log, as the API
//! presents them.

use std::collections::BTreeMap;

use niso_protocol::{
    Arch, Digest,
    record::{OriginKey, Record, RecordBody},
};
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};
use semver::Version;

use super::{
    Store,
    apply::parse_version_key,
    entries::{PackageEntry, TagEntry, VersionEntry, decode},
    error::{StoreError, corrupt, db},
    tables::{
        BLOB_VERSIONS, LOG, LOG_NAMES, PACKAGE_LOG, PACKAGES, RECORDS, TAGS, TOMBSTONES, VERSIONS,
        package_range, split_key, version_key,
    },
};

/// One live `(version, arch)` of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub version: Version,
    pub arch: Arch,
    pub entry: VersionEntry,
}

impl VersionRow {
    pub fn digest(&self) -> Digest {
        Digest::from_bytes(self.entry.digest)
    }
}

/// Which records a reader may see.
pub trait RecordFilter {
    fn allows(&self, record: &Record) -> bool;
}

impl<F: Fn(&Record) -> bool> RecordFilter for F {
    fn allows(&self, record: &Record) -> bool {
        self(record)
    }
}

impl Store {
    pub fn version(
        &self,
        name: &str,
        version: &Version,
        arch: &Arch,
    ) -> Result<Option<VersionEntry>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(VERSIONS).map_err(db)?;
            let key = version_key(name, &version.to_string(), arch.as_str());
            t.get(key.as_str())
                .map_err(db)?
                .map(|v| decode(v.value()))
                .transpose()
        })
    }

    pub fn is_deleted(
        &self,
        name: &str,
        version: &Version,
        arch: &Arch,
    ) -> Result<bool, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(TOMBSTONES).map_err(db)?;
            let key = version_key(name, &version.to_string(), arch.as_str());
            Ok(t.get(key.as_str()).map_err(db)?.is_some())
        })
    }

    /// Whether a build of `name` `version` was deleted: of `arch`, or of any architecture.
    pub fn was_deleted(
        &self,
        name: &str,
        version: &Version,
        arch: Option<&Arch>,
    ) -> Result<bool, StoreError> {
        let Some(arch) = arch else {
            let from = version_key(name, &version.to_string(), "");
            let to = format!("{name}\0{version}\u{1}");
            return self.read(|txn| {
                let t = txn.open_table(TOMBSTONES).map_err(db)?;
                Ok(t.range(from.as_str()..to.as_str())
                    .map_err(db)?
                    .next()
                    .is_some())
            });
        };
        self.is_deleted(name, version, arch)
    }

    /// Every live version of a package, newest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionRow>, StoreError> {
        self.read(|txn| versions_in(txn, name))
    }

    /// Explicit tags that currently point somewhere (removed tags are left out).
    pub fn tags(&self, name: &str) -> Result<BTreeMap<String, Version>, StoreError> {
        self.read(|txn| tags_in(txn, name))
    }

    pub fn tag_entry(&self, name: &str, tag: &str) -> Result<Option<TagEntry>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(TAGS).map_err(db)?;
            t.get(super::tables::tag_key(name, tag).as_str())
                .map_err(db)?
                .map(|v| decode(v.value()))
                .transpose()
        })
    }

    pub fn package(&self, name: &str) -> Result<Option<PackageEntry>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(PACKAGES).map_err(db)?;
            t.get(name)
                .map_err(db)?
                .map(|v| decode(v.value()))
                .transpose()
        })
    }

    /// Packages in name order, starting after `after`.
    pub fn packages_after(
        &self,
        after: Option<&str>,
        limit: usize,
        allow: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, PackageEntry)>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(PACKAGES).map_err(db)?;
            let range = match after {
                Some(a) => {
                    t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                }
                None => t.range::<&str>(..),
            }
            .map_err(db)?;
            let mut out = Vec::new();
            for item in range {
                let (k, v) = item.map_err(db)?;
                if !allow(k.value()) {
                    continue;
                }
                out.push((k.value().to_owned(), decode(v.value())?));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// `(packages, live versions)` held.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        self.read(|txn| {
            let p = txn.open_table(PACKAGES).map_err(db)?.len().map_err(db)?;
            let v = txn.open_table(VERSIONS).map_err(db)?.len().map_err(db)?;
            Ok((p, v))
        })
    }

    /// Every digest a live version references.
    pub fn live_digests(&self) -> Result<std::collections::HashSet<Digest>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(VERSIONS).map_err(db)?;
            let mut out = std::collections::HashSet::new();
            for item in t.iter().map_err(db)? {
                let (_, v) = item.map_err(db)?;
                let entry: VersionEntry = decode(v.value())?;
                out.insert(Digest::from_bytes(entry.digest));
            }
            Ok(out)
        })
    }

    /// Packages that have a live version whose blob is `digest`.
    pub fn packages_with_blob(&self, digest: &Digest) -> Result<Vec<String>, StoreError> {
        self.read(|txn| {
            let t = txn.open_multimap_table(BLOB_VERSIONS).map_err(db)?;
            let mut out: Vec<String> = Vec::new();
            for vk in t.get(&digest.as_bytes()[..]).map_err(db)? {
                let vk = vk.map_err(db)?;
                let name = split_key(vk.value())
                    .first()
                    .copied()
                    .unwrap_or_default()
                    .to_owned();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            Ok(out)
        })
    }

    /// Whether `(origin, seq)` is in the log.
    pub fn has_record(&self, origin: &OriginKey, seq: u64) -> Result<bool, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(RECORDS).map_err(db)?;
            let key = super::tables::record_key(origin, seq);
            Ok(t.get(key.as_slice()).map_err(db)?.is_some())
        })
    }

    /// Records in log order after position `after`, that `filter` allows, skipping manifests
    /// of versions this node no longer holds (so a reader never chases a missing blob).
    /// Scans at most `max_scan` positions. Returns the records, the last position scanned,
    /// and whether the log goes on.
    pub fn records_after(
        &self,
        after: u64,
        limit: usize,
        max_scan: usize,
        filter: &dyn RecordFilter,
    ) -> Result<(Vec<Record>, u64, bool), StoreError> {
        self.read(|txn| {
            let log = txn.open_table(LOG).map_err(db)?;
            let records = txn.open_table(RECORDS).map_err(db)?;
            let versions = txn.open_table(VERSIONS).map_err(db)?;
            let mut out = Vec::new();
            let mut last = after;
            let mut scanned = 0;
            let mut iter = log.range(after.saturating_add(1)..).map_err(db)?;
            let mut more = false;
            for item in iter.by_ref() {
                let (pos, key) = item.map_err(db)?;
                last = pos.value();
                scanned += 1;
                let bytes = records
                    .get(key.value())
                    .map_err(db)?
                    .ok_or_else(|| corrupt(MissingRecord(last)))?;
                // Signatures were checked once, when the record entered the log (the intake, or
                // signed here); re-verifying every record on every read cost most of a page.
                let record = Record::parse_unverified(bytes.value()).map_err(corrupt)?;
                let live = is_live(&versions, &record)?;
                if live && filter.allows(&record) {
                    out.push(record);
                }
                if out.len() >= limit || scanned >= max_scan {
                    more = true;
                    break;
                }
            }
            if more {
                more = iter.next().is_some();
            }
            Ok((out, last, more))
        })
    }
}

/// Most packages a key may see for [`Store::records_of`] to read them through the per-package
/// index; past this, scanning the log is as cheap.
pub const MAX_INDEXED_PACKAGES: usize = 256;

impl Store {
    /// Records after position `after` of the packages `allow` admits, read through the
    /// per-package index, so the cost follows what the key may see and not the log's length.
    /// `next` is the position of the last record considered, never one of a package the key
    /// cannot see. `None` when more than [`MAX_INDEXED_PACKAGES`] packages are admitted: scan
    /// the log with [`Store::records_after`] instead.
    pub fn records_of(
        &self,
        after: u64,
        limit: usize,
        allow: &dyn Fn(&str) -> bool,
    ) -> Result<Option<(Vec<Record>, u64, bool)>, StoreError> {
        self.read(|txn| {
            let names = txn.open_table(LOG_NAMES).map_err(db)?;
            let mut visible = Vec::new();
            for item in names.iter().map_err(db)? {
                let (name, _) = item.map_err(db)?;
                if allow(name.value()) {
                    visible.push(name.value().to_owned());
                    if visible.len() > MAX_INDEXED_PACKAGES {
                        return Ok(None);
                    }
                }
            }
            let index = txn.open_table(PACKAGE_LOG).map_err(db)?;
            // The first `limit + 1` positions of each package; the page is the lowest of all.
            let mut hits: Vec<(u64, Vec<u8>)> = Vec::new();
            for name in &visible {
                let from = (name.as_str(), after.saturating_add(1));
                let to = (name.as_str(), u64::MAX);
                for item in index.range(from..=to).map_err(db)?.take(limit + 1) {
                    let (k, v) = item.map_err(db)?;
                    hits.push((k.value().1, v.value().to_vec()));
                }
            }
            hits.sort_unstable_by_key(|(pos, _)| *pos);
            let more = hits.len() > limit;
            hits.truncate(limit);
            let next = hits.last().map_or(after, |(pos, _)| *pos);
            let records = txn.open_table(RECORDS).map_err(db)?;
            let versions = txn.open_table(VERSIONS).map_err(db)?;
            let mut out = Vec::with_capacity(hits.len());
            for (pos, key) in hits {
                let bytes = records
                    .get(key.as_slice())
                    .map_err(db)?
                    .ok_or_else(|| corrupt(MissingRecord(pos)))?;
                let record = Record::parse_unverified(bytes.value()).map_err(corrupt)?;
                if is_live(&versions, &record)? {
                    out.push(record);
                }
            }
            Ok(Some((out, next, more)))
        })
    }
}

/// A manifest counts only while this node holds its version with its digest (so readers never
/// chase a blob that is gone); tags and tombstones always count.
fn is_live(versions: &impl StrTable, record: &Record) -> Result<bool, StoreError> {
    let RecordBody::Manifest(m) = &record.body else {
        return Ok(true);
    };
    let vk = version_key(m.name.as_str(), &m.version.to_string(), m.arch.as_str());
    Ok(versions
        .get(vk.as_str())
        .map_err(db)?
        .map(|v| decode::<VersionEntry>(v.value()))
        .transpose()?
        .is_some_and(|e| e.digest == *m.digest.as_bytes()))
}

#[derive(Debug, thiserror::Error)]
#[error("log position {0} names a record that is not stored")]
struct MissingRecord(u64);

/// Byte-valued, string-keyed tables, readable from a read or a write transaction.
pub(crate) trait StrTable: ReadableTable<&'static str, &'static [u8]> {}
impl<T: ReadableTable<&'static str, &'static [u8]>> StrTable for T {}

pub(crate) fn versions_in(
    txn: &ReadTransaction,
    name: &str,
) -> Result<Vec<VersionRow>, StoreError> {
    versions_from(&txn.open_table(VERSIONS).map_err(db)?, name)
}

pub(crate) fn tags_in(
    txn: &ReadTransaction,
    name: &str,
) -> Result<BTreeMap<String, Version>, StoreError> {
    tags_from(&txn.open_table(TAGS).map_err(db)?, name)
}

/// Every live version of a package in the versions table, newest first.
pub(crate) fn versions_from(t: &impl StrTable, name: &str) -> Result<Vec<VersionRow>, StoreError> {
    let (lo, hi) = package_range(name);
    let mut out = Vec::new();
    for item in t.range(lo.as_str()..hi.as_str()).map_err(db)? {
        let (k, v) = item.map_err(db)?;
        if let Some((version, arch)) = parse_version_key(k.value()) {
            out.push(VersionRow {
                version,
                arch,
                entry: decode(v.value())?,
            });
        }
    }
    out.sort_by(|a, b| b.version.cmp(&a.version).then(a.arch.cmp(&b.arch)));
    Ok(out)
}

/// Tags of a package in the tags table that currently point at a version.
pub(crate) fn tags_from(
    t: &impl StrTable,
    name: &str,
) -> Result<BTreeMap<String, Version>, StoreError> {
    let (lo, hi) = package_range(name);
    let mut out = BTreeMap::new();
    for item in t.range(lo.as_str()..hi.as_str()).map_err(db)? {
        let (k, v) = item.map_err(db)?;
        let entry: TagEntry = decode(v.value())?;
        let key = k.value().to_owned();
        let Some(tag) = split_key(&key).get(1).map(|s| (*s).to_owned()) else {
            continue;
        };
        if let Some(version) = entry.version.and_then(|v| Version::parse(&v).ok()) {
            out.insert(tag, version);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use niso_protocol::{
        arch::Arch,
        name::PackageName,
        record::{ManifestBody, NodeSecret},
    };
    use redb::ReadableDatabase;

    use super::*;
    use crate::{failpoint::Failpoints, store::LocalChange};

    fn open(dir: &std::path::Path) -> Store {
        Store::open(dir, NodeSecret::from_bytes(&[7; 32]), Failpoints::default()).unwrap()
    }

    async fn publish(store: &Store, name: &str, version: &str, digest: Digest) {
        store
            .originate(LocalChange::Publish(ManifestBody {
                name: PackageName::new(name).unwrap(),
                version: version.parse().unwrap(),
                arch: Arch::any(),
                digest,
                size: 1,
                description: String::new(),
            }))
            .await
            .unwrap();
    }

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        names.sort();
        names
    }

    #[tokio::test]
    async fn the_blob_index_follows_publishes_and_deletions_and_is_rebuilt_for_old_data_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, other) = (Digest::of(b"shared"), Digest::of(b"other"));
        {
            let store = open(dir.path());
            publish(&store, "alpha", "1.0.0", shared).await;
            publish(&store, "beta", "1.0.0", shared).await;
            publish(&store, "beta", "2.0.0", other).await;
            assert_eq!(
                sorted(store.packages_with_blob(&shared).unwrap()),
                ["alpha", "beta"]
            );
            assert_eq!(store.packages_with_blob(&other).unwrap(), ["beta"]);
            store
                .originate(LocalChange::Delete {
                    name: PackageName::new("alpha").unwrap(),
                    version: "1.0.0".parse().unwrap(),
                    arch: None,
                })
                .await
                .unwrap();
            assert_eq!(store.packages_with_blob(&shared).unwrap(), ["beta"]);
            assert!(
                store
                    .packages_with_blob(&Digest::of(b"nobody"))
                    .unwrap()
                    .is_empty()
            );
        }
        // A data dir from before the index: the table is missing and rebuilt on open.
        {
            let db = crate::store::raw_database(dir.path());
            let txn = db.begin_write().unwrap();
            assert!(txn.delete_multimap_table(BLOB_VERSIONS).unwrap());
            txn.commit().unwrap();
            let txn = db.begin_read().unwrap();
            assert!(txn.open_multimap_table(BLOB_VERSIONS).is_err());
        }
        let store = open(dir.path());
        assert_eq!(store.packages_with_blob(&shared).unwrap(), ["beta"]);
        assert_eq!(store.packages_with_blob(&other).unwrap(), ["beta"]);
    }
}
