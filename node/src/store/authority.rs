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

    /// Whether `m`'s exact bytes are already live under its version, whoever published them.
    pub fn holds_bytes(&self, m: &ManifestBody) -> Result<bool, StoreError> {
        let vk = version_key(m.name.as_str(), &m.version.to_string(), m.arch.as_str());
        let existing: Option<VersionEntry> = self
            .versions
            .get(vk.as_str())
            .map_err(db)?
            .map(|v| decode(v.value()))
            .transpose()?;
        Ok(existing.is_some_and(|e| e.digest == *m.digest.as_bytes()))
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

    pub fn check_tombstone(
        &self,
        origin: &OriginKey,
        t: &TombstoneBody,
    ) -> Result<(), ChangeError> {
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

#[cfg(test)]
mod tests {
    use niso_protocol::{
        Arch, Digest, PackageName, Version,
        record::{ManifestBody, NodeSecret, Record, RecordBody, TagBody, TombstoneBody},
    };

    use crate::{
        failpoint::Failpoints,
        store::{Applied, ChangeError, Store},
    };

    /// Two origins, A and B; records are written out by hand so every order can be tried.
    fn secret(who: char) -> NodeSecret {
        NodeSecret::from_bytes(&[who as u8; 32])
    }

    fn manifest(who: char, seq: u64, name: &str, version: &str, bytes: &[u8]) -> Record {
        Record::sign(
            &secret(who),
            seq,
            seq,
            RecordBody::Manifest(ManifestBody {
                name: PackageName::new(name).unwrap(),
                version: version.parse().unwrap(),
                arch: Arch::any(),
                digest: Digest::of(bytes),
                size: bytes.len() as u64,
                description: String::new(),
            }),
        )
    }

    fn tag(who: char, seq: u64, name: &str, tag: &str, version: &str, tag_seq: u64) -> Record {
        Record::sign(
            &secret(who),
            seq,
            seq,
            RecordBody::Tag(TagBody {
                name: PackageName::new(name).unwrap(),
                tag: tag.into(),
                version: Some(version.parse().unwrap()),
                tag_seq,
            }),
        )
    }

    fn tombstone(who: char, seq: u64, name: &str, version: &str) -> Record {
        Record::sign(
            &secret(who),
            seq,
            seq,
            RecordBody::Tombstone(TombstoneBody {
                name: PackageName::new(name).unwrap(),
                version: version.parse::<Version>().unwrap(),
                arch: Arch::any(),
            }),
        )
    }

    /// The short name of an outcome, for the table.
    fn outcome(r: &Result<Applied, ChangeError>) -> &'static str {
        match r {
            Ok(Applied::Stored) => "stored",
            Ok(Applied::Duplicate) => "duplicate",
            Err(e) => kind(e),
        }
    }

    fn kind(e: &ChangeError) -> &'static str {
        match e {
            ChangeError::Conflict { .. } => "conflict",
            ChangeError::Deleted { .. } => "deleted",
            ChangeError::TagRollback { .. } => "tag_rollback",
            ChangeError::Equivocation { .. } => "equivocation",
            ChangeError::NotOwner { .. } => "not_owner",
            ChangeError::NameTaken { .. } => "name_taken",
            ChangeError::UnknownPackage { .. } => "unknown_package",
            _ => "other",
        }
    }

    #[tokio::test]
    async fn the_rules_decide_every_order_the_same_way() {
        type Case = (&'static str, Vec<Record>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                "the first manifest claims the name; another origin cannot publish under it",
                vec![
                    manifest('a', 1, "p", "1.0.0", b"a1"),
                    manifest('b', 1, "p", "2.0.0", b"b2"),
                ],
                vec!["stored", "not_owner"],
            ),
            (
                "not even the same bytes from another origin",
                vec![
                    manifest('a', 1, "p", "1.0.0", b"a1"),
                    manifest('b', 1, "p", "1.0.0", b"a1"),
                ],
                vec!["stored", "not_owner"],
            ),
            (
                "names equal up to separators are one name",
                vec![
                    manifest('a', 1, "my-api", "1.0.0", b"x"),
                    manifest('a', 2, "my_api", "1.0.0", b"y"),
                    manifest('b', 1, "my.api", "1.0.0", b"z"),
                ],
                vec!["stored", "name_taken", "name_taken"],
            ),
            (
                "a version keeps its bytes; the same bytes only join the log",
                vec![
                    manifest('a', 1, "p", "1.0.0", b"one"),
                    manifest('a', 2, "p", "1.0.0", b"two"),
                    manifest('a', 3, "p", "1.0.0", b"one"),
                ],
                vec!["stored", "conflict", "stored"],
            ),
            (
                "only the owner tags",
                vec![
                    manifest('a', 1, "p", "1.0.0", b"a1"),
                    tag('b', 1, "p", "stable", "1.0.0", 9),
                    tag('a', 2, "p", "stable", "1.0.0", 1),
                ],
                vec!["stored", "not_owner", "stored"],
            ),
            (
                "tags move forward only; the same sequence from the owner is a rollback",
                vec![
                    manifest('a', 1, "p", "1.0.0", b"a1"),
                    tag('a', 2, "p", "stable", "1.0.0", 2),
                    tag('a', 3, "p", "stable", "1.0.0", 1),
                    tag('a', 4, "p", "stable", "1.0.0", 2),
                    tag('a', 5, "p", "stable", "1.0.0", 3),
                ],
                vec!["stored", "stored", "tag_rollback", "tag_rollback", "stored"],
            ),
            (
                "a tag for a package never published here is refused, not stored",
                vec![tag('a', 1, "ghost", "stable", "1.0.0", 1)],
                vec!["unknown_package"],
            ),
            (
                "only the publisher deletes",
                vec![
                    manifest('a', 1, "p", "1.0.0", b"a1"),
                    tombstone('b', 1, "p", "1.0.0"),
                    tombstone('a', 2, "p", "1.0.0"),
                ],
                vec!["stored", "not_owner", "stored"],
            ),
            (
                "a tombstone before its manifest blocks it for good",
                vec![
                    manifest('a', 1, "p", "1.0.0", b"a1"),
                    tombstone('a', 3, "p", "2.0.0"),
                    manifest('a', 2, "p", "2.0.0", b"a2"),
                ],
                vec!["stored", "stored", "deleted"],
            ),
            (
                "an unknown package's tombstone is refused, not stored",
                vec![tombstone('b', 1, "q", "1.0.0")],
                vec!["unknown_package"],
            ),
            (
                "the same (origin, seq) with other bytes is equivocation; the same bytes a duplicate",
                vec![
                    manifest('a', 1, "p", "1.0.0", b"a1"),
                    manifest('a', 1, "p", "1.1.0", b"a2"),
                    manifest('a', 1, "p", "1.0.0", b"a1"),
                ],
                vec!["stored", "equivocation", "duplicate"],
            ),
        ];
        for (what, records, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), secret('n'), Failpoints::default()).unwrap();
            let results = store.apply_batch(records.clone()).await.unwrap();
            let got: Vec<&str> = results.iter().map(outcome).collect();
            assert_eq!(got, want, "{what}");
            // The read-only pre-check agrees with the write for every record, replayed on an
            // empty store in the same order.
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), secret('n'), Failpoints::default()).unwrap();
            for (record, want) in records.into_iter().zip(&want) {
                let pre = store.precheck_all(&[&record]).unwrap().remove(0);
                let applied = store.apply_batch(vec![record]).await.unwrap().remove(0);
                // `Ok` from the pre-check means "go ahead": stored, or a duplicate.
                let agrees = match &pre {
                    Ok(()) => applied.is_ok(),
                    Err(e) => kind(e) == outcome(&applied),
                };
                assert!(agrees, "{what}: precheck {pre:?} vs {want}");
            }
        }
    }
}
