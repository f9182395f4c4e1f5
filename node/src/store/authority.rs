//! Who may change what: the checks a record passes before it changes any state, written once
//! over readable tables so the write path (`apply`, under the writer) and the read-only
//! pre-check of the intake (before a blob is fetched) decide identically.
//!
//! The rules (docs/records.md states them for operators):
//! - The first manifest this node applies for a package name claims the name, in that
//!   spelling, for its origin. Names equal up to runs of `-`, `_`, `.` are one name.
//! - Only the holder publishes new versions and moves or removes tags of the package.
//! - A tombstone counts only from the origin that published the version (or, once the
//!   version is gone here, from the holder of the name).
//! - A `(name, version, arch)` keeps its bytes forever: not after deletion (tombstone), not
//!   after local GC (`retired_v1`), not from another origin.
//! - A tag moves only forward: higher `tag_seq`, ties broken by origin key.

use niso_protocol::{
    Digest, PackageName,
    record::{ManifestBody, OriginKey, Record, RecordBody, TagBody, TombstoneBody},
};

use super::{
    catalog::StrTable,
    entries::{OwnerEntry, TagEntry, VersionEntry, decode},
    error::{ChangeError, StoreError, db},
    tables::{tag_key, version_key},
};
use crate::identity::peer_id;

/// The tables the rules read, from a read or a write transaction.
pub(crate) struct View<'a, T: StrTable> {
    pub owners: &'a T,
    pub versions: &'a T,
    pub tombstones: &'a T,
    pub retired: &'a T,
    pub tags: &'a T,
}

/// What a manifest that passed the checks does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ManifestEffect {
    /// A new version; `claim` when it is the first record for the name.
    Add { claim: bool },
    /// The same bytes under the same version are already here: the record only joins the log.
    Known,
}

impl<T: StrTable> View<'_, T> {
    pub fn owner(&self, name: &PackageName) -> Result<Option<OwnerEntry>, StoreError> {
        self.owners
            .get(name.canonical().as_str())
            .map_err(db)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Checks any record's body against the rules.
    pub fn check(&self, record: &Record) -> Result<(), ChangeError> {
        match &record.body {
            RecordBody::Manifest(m) => self.check_manifest(&record.origin, m).map(|_| ()),
            RecordBody::Tag(t) => self.check_tag(&record.origin, t),
            RecordBody::Tombstone(t) => self.check_tombstone(&record.origin, t),
        }
    }

    pub fn check_manifest(
        &self,
        origin: &OriginKey,
        m: &ManifestBody,
    ) -> Result<ManifestEffect, ChangeError> {
        let claim = match self.owner(&m.name)? {
            None => true,
            Some(owner) => {
                held_by(&m.name, &owner, origin, "publish")?;
                false
            }
        };
        let (name, version, arch) = (m.name.as_str(), m.version.to_string(), m.arch.as_str());
        let vk = version_key(name, &version, arch);
        if self.tombstones.get(vk.as_str()).map_err(db)?.is_some() {
            return Err(ChangeError::Deleted {
                name: name.to_owned(),
                version,
                arch: arch.to_owned(),
            });
        }
        let conflict = |existing: String| ChangeError::Conflict {
            name: name.to_owned(),
            version: version.clone(),
            arch: arch.to_owned(),
            existing,
        };
        if let Some(old) = self.retired.get(vk.as_str()).map_err(db)?
            && old.value() != m.digest.as_bytes().as_slice()
        {
            let existing = <[u8; 32]>::try_from(old.value())
                .map(|d| Digest::from_bytes(d).to_string())
                .unwrap_or_default();
            return Err(conflict(format!("{existing}, since removed here by GC")));
        }
        if let Some(existing) = self.versions.get(vk.as_str()).map_err(db)? {
            let existing: VersionEntry = decode(existing.value())?;
            if existing.digest == *m.digest.as_bytes() {
                return Ok(ManifestEffect::Known);
            }
            return Err(conflict(Digest::from_bytes(existing.digest).to_string()));
        }
        Ok(ManifestEffect::Add { claim })
    }

    pub fn check_tag(&self, origin: &OriginKey, t: &TagBody) -> Result<(), ChangeError> {
        self.require_holder(&t.name, origin, "tag")?;
        let current: Option<TagEntry> = self
            .tags
            .get(tag_key(t.name.as_str(), &t.tag).as_str())
            .map_err(db)?
            .map(|v| decode(v.value()))
            .transpose()?;
        if let Some(cur) = current
            // Concurrent moves with the same sequence are ordered by origin key, so every
            // node picks the same winner.
            && (t.tag_seq, origin.0) <= (cur.tag_seq, cur.origin)
        {
            return Err(ChangeError::TagRollback {
                name: t.name.to_string(),
                tag: t.tag.clone(),
                current: cur.tag_seq,
                offered: t.tag_seq,
            });
        }
        Ok(())
    }

    pub fn check_tombstone(&self, origin: &OriginKey, t: &TombstoneBody) -> Result<(), ChangeError> {
        let vk = version_key(t.name.as_str(), &t.version.to_string(), t.arch.as_str());
        let live: Option<VersionEntry> = self
            .versions
            .get(vk.as_str())
            .map_err(db)?
            .map(|v| decode(v.value()))
            .transpose()?;
        match live {
            // The version's own publisher decides, whoever holds the name now.
            Some(entry) => same_origin(&t.name, &OriginKey(entry.origin), origin, "delete"),
            None => self.require_holder(&t.name, origin, "delete"),
        }
    }

    fn require_holder(
        &self,
        name: &PackageName,
        origin: &OriginKey,
        action: &'static str,
    ) -> Result<(), ChangeError> {
        match self.owner(name)? {
            None => Err(ChangeError::UnknownPackage {
                name: name.to_string(),
            }),
            Some(owner) => held_by(name, &owner, origin, action),
        }
    }
}

fn held_by(
    name: &PackageName,
    owner: &OwnerEntry,
    origin: &OriginKey,
    action: &'static str,
) -> Result<(), ChangeError> {
    if owner.name != name.as_str() {
        return Err(ChangeError::NameTaken {
            name: name.to_string(),
            existing: owner.name.clone(),
        });
    }
    same_origin(name, &OriginKey(owner.origin), origin, action)
}

fn same_origin(
    name: &PackageName,
    owner: &OriginKey,
    offered: &OriginKey,
    action: &'static str,
) -> Result<(), ChangeError> {
    if owner == offered {
        return Ok(());
    }
    Err(ChangeError::NotOwner {
        name: name.to_string(),
        action,
        owner: peer_id(owner),
        offered: peer_id(offered),
    })
}
