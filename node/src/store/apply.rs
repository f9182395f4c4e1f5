//! The record log and the state derived from it. Every change, whether this node made it or a
//! peer relayed it, is a signed record appended here; the version, tag and tombstone tables
//! are a function of the records applied so far.

use niso_protocol::{
    Arch, Digest, PackageName,
    name::validate_tag,
    record::{ManifestBody, NodeSecret, OriginKey, Record, RecordBody, TagBody, TombstoneBody},
};
use redb::{MultimapTable, ReadableTable, Table, WriteTransaction};
use semver::Version;

use super::authority::{ManifestEffect, View};
use super::{
    catalog::{tags_from, versions_from},
    entries::{OwnerEntry, PackageEntry, TagEntry, VersionEntry, decode, encode},
    error::{ChangeError, StoreError, db},
    search_index::Reindex,
    tables::{
        BLOB_VERSIONS, LOG, LOG_NAMES, ORIGINS, OWNERS, PACKAGE_LOG, PACKAGES, RECORDS, RETIRED,
        TAGS, TOMBSTONES, VERSIONS, package_range, record_key, split_key, tag_key, version_key,
    },
};
use crate::clock::now_ms;

/// What applying a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// New record, now part of the log.
    Stored,
    /// The log already held this exact record.
    Duplicate,
}

/// A change this node makes on its own behalf, before it is signed.
#[derive(Debug, Clone)]
pub enum LocalChange {
    Publish(ManifestBody),
    SetTag {
        name: PackageName,
        tag: String,
        /// `None` removes the tag.
        version: Option<Version>,
    },
    Delete {
        name: PackageName,
        version: Version,
        /// `None` deletes every architecture of the version.
        arch: Option<Arch>,
    },
}

/// Signs `change` as this node's next record(s), made at `at_ms`, and applies them. The caller
/// reads the clock: this runs on the writer's thread, whose clock may not be the node's
/// (`clock.rs`).
pub fn originate(
    txn: &WriteTransaction,
    secret: &NodeSecret,
    change: LocalChange,
    at_ms: u64,
) -> Result<Vec<Record>, ChangeError> {
    let bodies = match change {
        LocalChange::Publish(m) => vec![RecordBody::Manifest(m)],
        LocalChange::SetTag { name, tag, version } => {
            vec![RecordBody::Tag(prepare_tag(txn, name, tag, version)?)]
        }
        LocalChange::Delete {
            name,
            version,
            arch,
        } => prepare_delete(txn, name, version, arch)?
            .into_iter()
            .map(RecordBody::Tombstone)
            .collect(),
    };
    let origin = secret.origin();
    let mut seq = current_seq(txn, &origin)?;
    let mut records = Vec::with_capacity(bodies.len());
    LogTables::with(txn, |tables| {
        for body in bodies {
            seq += 1;
            let record = Record::sign(secret, seq, at_ms, body);
            tables.apply(&record)?;
            records.push(record);
        }
        Ok(records)
    })
}

fn current_seq(txn: &WriteTransaction, origin: &OriginKey) -> Result<u64, StoreError> {
    let origins = txn.open_table(ORIGINS).map_err(db)?;
    Ok(origins
        .get(origin.0.as_slice())
        .map_err(db)?
        .map(|v| v.value())
        .unwrap_or(0))
}

fn prepare_tag(
    txn: &WriteTransaction,
    name: PackageName,
    tag: String,
    version: Option<Version>,
) -> Result<TagBody, ChangeError> {
    validate_tag(&tag).map_err(|e| ChangeError::Refused(e.to_string()))?;
    let tags = txn.open_table(TAGS).map_err(db)?;
    let current: Option<TagEntry> = tags
        .get(tag_key(name.as_str(), &tag).as_str())
        .map_err(db)?
        .map(|v| decode(v.value()))
        .transpose()?;
    match &version {
        Some(v) => {
            let live = live_versions(txn, name.as_str())?;
            if !live.iter().any(|(lv, _)| lv == v) {
                // No list of what exists: a push-only key may set tags on packages it cannot
                // pull, and must not learn their versions from this message.
                return Err(ChangeError::NotFound(format!(
                    "{name} has no version {v}; `niso search {name}` lists the versions you may see"
                )));
            }
        }
        None => {
            if current.as_ref().and_then(|c| c.version.as_ref()).is_none() {
                return Err(ChangeError::NotFound(format!("{name} has no tag `{tag}`")));
            }
        }
    }
    let tag_seq = match current {
        None => 1,
        // u64::MAX itself is refused by record checks, so a tag always has a next move.
        Some(c) => c
            .tag_seq
            .checked_add(1)
            .filter(|s| *s < u64::MAX)
            .ok_or_else(|| {
                ChangeError::Refused(format!(
                    "tag `{tag}` of {name} has used up its sequence numbers; remove it and pick another tag name"
                ))
            })?,
    };
    Ok(TagBody {
        name,
        tag,
        version,
        tag_seq,
    })
}

fn prepare_delete(
    txn: &WriteTransaction,
    name: PackageName,
    version: Version,
    arch: Option<Arch>,
) -> Result<Vec<TombstoneBody>, ChangeError> {
    let arches: Vec<Arch> = live_versions(txn, name.as_str())?
        .into_iter()
        .filter(|(v, a)| *v == version && arch.as_ref().is_none_or(|want| want == a))
        .map(|(_, a)| a)
        .collect();
    if arches.is_empty() {
        let what = match &arch {
            Some(a) => format!("{name} {version} ({a})"),
            None => format!("{name} {version}"),
        };
        let tombstones = txn.open_table(TOMBSTONES).map_err(db)?;
        let deleted = match &arch {
            Some(a) => {
                let key = version_key(name.as_str(), &version.to_string(), a.as_str());
                tombstones.get(key.as_str()).map_err(db)?.is_some()
            }
            None => {
                let from = version_key(name.as_str(), &version.to_string(), "");
                let to = format!("{name}\0{version}\u{1}");
                tombstones
                    .range(from.as_str()..to.as_str())
                    .map_err(db)?
                    .next()
                    .is_some()
            }
        };
        if deleted {
            return Err(ChangeError::NotFound(format!(
                "{what} was deleted already; deleted versions stay deleted"
            )));
        }
        return Err(ChangeError::NotFound(format!("{what} does not exist")));
    }
    let tags = tags_from(&txn.open_table(TAGS).map_err(db)?, name.as_str())?;
    if let Some((tag, _)) = tags.iter().find(|(_, v)| **v == version) {
        return Err(ChangeError::Refused(format!(
            "{name} {version} is tagged `{tag}`; move or remove the tag first"
        )));
    }
    Ok(arches
        .into_iter()
        .map(|arch| TombstoneBody {
            name: name.clone(),
            version: version.clone(),
            arch,
        })
        .collect())
}

/// Every live `(version, arch)` of a package, newest first.
fn live_versions(txn: &WriteTransaction, name: &str) -> Result<Vec<(Version, Arch)>, StoreError> {
    let versions = txn.open_table(VERSIONS).map_err(db)?;
    Ok(versions_from(&versions, name)?
        .into_iter()
        .map(|r| (r.version, r.arch))
        .collect())
}

pub(crate) fn parse_version_key(key: &str) -> Option<(Version, Arch)> {
    let parts = split_key(key);
    let version = Version::parse(parts.get(1)?).ok()?;
    let arch = Arch::new(*parts.get(2)?).ok()?;
    Some((version, arch))
}

/// Every table applying a record writes, opened once for a whole batch. Opening a redb table
/// looks it up in the transaction's table tree and closing it writes its root back: opened per
/// record, that was a fifth of the writer's time in a lazy catch-up.
///
/// Only [`LogTables::with`] hands them out, and it moves the search index for every package
/// entry they changed before it returns, so no change can leave the index behind.
pub(crate) struct LogTables<'txn> {
    records: Table<'txn, &'static [u8], &'static [u8]>,
    log: Table<'txn, u64, &'static [u8]>,
    package_log: Table<'txn, (&'static str, u64), &'static [u8]>,
    log_names: Table<'txn, &'static str, ()>,
    origins: Table<'txn, &'static [u8], u64>,
    owners: Table<'txn, &'static str, &'static [u8]>,
    versions: Table<'txn, &'static str, &'static [u8]>,
    blob_versions: MultimapTable<'txn, &'static [u8], &'static str>,
    tombstones: Table<'txn, &'static str, &'static [u8]>,
    pub(super) retired: Table<'txn, &'static str, &'static [u8]>,
    tags: Table<'txn, &'static str, &'static [u8]>,
    packages: Table<'txn, &'static str, &'static [u8]>,
    /// The log position the next new record takes (read once: only this struct appends).
    next_position: u64,
    /// The package entries changed so far, for the search index.
    reindex: Reindex,
}

impl<'txn> LogTables<'txn> {
    /// Runs `f` over the tables, opened in `txn` (which may open none of them itself
    /// meanwhile), then moves the search index for the package entries `f` changed.
    pub fn with<T, E: From<StoreError>>(
        txn: &'txn WriteTransaction,
        f: impl FnOnce(&mut LogTables<'txn>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut tables = Self::open(txn)?;
        let out = f(&mut tables)?;
        let reindex = tables.reindex;
        reindex.apply(txn)?;
        Ok(out)
    }

    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let log = txn.open_table(LOG).map_err(db)?;
        let next_position = log
            .last()
            .map_err(db)?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1);
        Ok(Self {
            records: txn.open_table(RECORDS).map_err(db)?,
            log,
            package_log: txn.open_table(PACKAGE_LOG).map_err(db)?,
            log_names: txn.open_table(LOG_NAMES).map_err(db)?,
            origins: txn.open_table(ORIGINS).map_err(db)?,
            owners: txn.open_table(OWNERS).map_err(db)?,
            versions: txn.open_table(VERSIONS).map_err(db)?,
            blob_versions: txn.open_multimap_table(BLOB_VERSIONS).map_err(db)?,
            tombstones: txn.open_table(TOMBSTONES).map_err(db)?,
            retired: txn.open_table(RETIRED).map_err(db)?,
            tags: txn.open_table(TAGS).map_err(db)?,
            packages: txn.open_table(PACKAGES).map_err(db)?,
            next_position,
            reindex: Reindex::default(),
        })
    }

    /// Applies one verified record to the log and the derived tables, if the rules in
    /// [`super::authority`] allow it.
    pub fn apply(&mut self, record: &Record) -> Result<Applied, ChangeError> {
        let key = record_key(&record.origin, record.seq);
        let bytes = record.to_bytes();
        if let Some(applied) = check_log(&self.records, record, &bytes)? {
            return Ok(applied);
        }
        let view = View {
            owners: &self.owners,
            versions: &self.versions,
            tombstones: &self.tombstones,
            retired: &self.retired,
            tags: &self.tags,
        };
        match &record.body {
            RecordBody::Manifest(m) => {
                // With the same bytes already here the record only joins the log.
                if let ManifestEffect::Add { claim } = view.check_manifest(&record.origin, m)? {
                    self.add_version(record, m, claim)?;
                }
            }
            RecordBody::Tag(t) => {
                view.check(record)?;
                self.set_tag(record, t)?;
            }
            RecordBody::Tombstone(t) => {
                view.check(record)?;
                self.bury(t)?;
            }
        }
        self.records
            .insert(key.as_slice(), bytes.as_slice())
            .map_err(db)?;
        let position = self.next_position;
        self.log.insert(position, key.as_slice()).map_err(db)?;
        self.next_position += 1;
        index_log_entry(
            &mut self.package_log,
            &mut self.log_names,
            record.body.package().as_str(),
            position,
            &key,
        )?;
        let high = self
            .origins
            .get(record.origin.0.as_slice())
            .map_err(db)?
            .map(|v| v.value())
            .unwrap_or(0);
        if record.seq > high {
            self.origins
                .insert(record.origin.0.as_slice(), record.seq)
                .map_err(db)?;
        }
        Ok(Applied::Stored)
    }

    fn add_version(
        &mut self,
        record: &Record,
        m: &ManifestBody,
        claim: bool,
    ) -> Result<(), ChangeError> {
        let name = m.name.as_str();
        let vk = version_key(name, &m.version.to_string(), m.arch.as_str());
        if claim {
            let owner = OwnerEntry {
                name: name.to_owned(),
                origin: record.origin.0,
            };
            self.owners
                .insert(m.name.canonical().as_str(), encode(&owner)?.as_slice())
                .map_err(db)?;
        }
        let entry = VersionEntry {
            digest: *m.digest.as_bytes(),
            size: m.size,
            description: m.description.clone(),
            published_ms: record.timestamp_ms,
            origin: record.origin.0,
            seq: record.seq,
        };
        self.versions
            .insert(vk.as_str(), encode(&entry)?.as_slice())
            .map_err(db)?;
        self.blob_versions
            .insert(&entry.digest[..], vk.as_str())
            .map_err(db)?;
        let package = PackageEntry {
            description: m.description.clone(),
            updated_ms: now_ms(),
        };
        let old = self
            .packages
            .insert(name, encode(&package)?.as_slice())
            .map_err(db)?
            .map(|v| decode::<PackageEntry>(v.value()))
            .transpose()?;
        self.reindex.note(name, old, Some(package));
        Ok(())
    }

    fn set_tag(&mut self, record: &Record, t: &TagBody) -> Result<(), ChangeError> {
        let entry = TagEntry {
            version: t.version.as_ref().map(ToString::to_string),
            tag_seq: t.tag_seq,
            origin: record.origin.0,
            updated_ms: record.timestamp_ms,
        };
        self.tags
            .insert(
                tag_key(t.name.as_str(), &t.tag).as_str(),
                encode(&entry)?.as_slice(),
            )
            .map_err(db)?;
        Ok(())
    }

    fn bury(&mut self, t: &TombstoneBody) -> Result<(), ChangeError> {
        let name = t.name.as_str();
        let vk = version_key(name, &t.version.to_string(), t.arch.as_str());
        self.tombstones.insert(vk.as_str(), &[][..]).map_err(db)?;
        self.remove_version(name, &vk)?;
        Ok(())
    }

    /// Removes a live version (deletion or local GC) and drops the package from listings once
    /// it has no versions left. Returns the removed version's digest.
    pub fn remove_version(&mut self, name: &str, vk: &str) -> Result<Option<Digest>, StoreError> {
        let removed = match self.versions.remove(vk).map_err(db)? {
            Some(old) => {
                let entry: VersionEntry = decode(old.value())?;
                self.blob_versions
                    .remove(&entry.digest[..], vk)
                    .map_err(db)?;
                Some(Digest::from_bytes(entry.digest))
            }
            None => None,
        };
        let (lo, hi) = package_range(name);
        let empty = self
            .versions
            .range(lo.as_str()..hi.as_str())
            .map_err(db)?
            .next()
            .is_none();
        if empty {
            let old = self
                .packages
                .remove(name)
                .map_err(db)?
                .map(|v| decode::<PackageEntry>(v.value()))
                .transpose()?;
            self.reindex.note(name, old, None);
        }
        Ok(removed)
    }
}

/// Adds a log entry to the per-package index.
pub(crate) fn index_log_entry(
    package_log: &mut Table<'_, (&'static str, u64), &'static [u8]>,
    log_names: &mut Table<'_, &'static str, ()>,
    package: &str,
    position: u64,
    key: &[u8],
) -> Result<(), StoreError> {
    package_log.insert((package, position), key).map_err(db)?;
    // Inserting a name already there would still copy its page and the pages above it into
    // the commit: most records are of a package the log already holds.
    if log_names.get(package).map_err(db)?.is_none() {
        log_names.insert(package, ()).map_err(db)?;
    }
    Ok(())
}

/// `Some(Duplicate)` when the log holds exactly this record, equivocation when it holds
/// another under the same (origin, seq), `None` when the record is new.
pub(crate) fn check_log(
    records: &impl ReadableTable<&'static [u8], &'static [u8]>,
    record: &Record,
    bytes: &[u8],
) -> Result<Option<Applied>, ChangeError> {
    let key = record_key(&record.origin, record.seq);
    match records.get(key.as_slice()).map_err(db)? {
        None => Ok(None),
        Some(existing) if existing.value() == bytes => Ok(Some(Applied::Duplicate)),
        Some(_) => Err(ChangeError::Equivocation {
            origin: record.origin.to_string(),
            seq: record.seq,
        }),
    }
}
