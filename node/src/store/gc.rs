//! Garbage collection: drop old versions locally (keeping the newest N per package and
//! architecture, every tagged version, and `latest`), then sweep blob files nothing references.
//!
//! GC is local: it writes no record, so it never propagates to peers. Versions are removed in
//! one transaction before any file is deleted, so a crash mid-GC leaves at worst unreferenced
//! blobs, which the next sweep removes.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, SystemTime},
};

use niso_protocol::{Arch, api::GcVersion, reference::latest};
use redb::{ReadTransaction, ReadableTable};
use semver::Version;

use super::{
    Store,
    apply::LogTables,
    catalog::{StrTable, tags_from, versions_from},
    error::{StoreError, db},
    tables::{BLOB_VERSIONS, PACKAGES, TAGS, VERSIONS, version_key},
};
use crate::failpoint::Failpoints;

/// What a GC run removed, or would remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcOutcome {
    pub versions: Vec<GcVersion>,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub blobs_in_grace: u64,
}

impl Store {
    pub async fn gc(
        &self,
        keep: usize,
        dry_run: bool,
        grace: Duration,
        failpoints: &Failpoints,
    ) -> Result<GcOutcome, StoreError> {
        let doomed = self.read(|txn| {
            plan(
                &txn.open_table(PACKAGES).map_err(db)?,
                &txn.open_table(VERSIONS).map_err(db)?,
                &txn.open_table(TAGS).map_err(db)?,
                keep,
            )
        })?;
        let mut outcome = GcOutcome {
            versions: doomed.clone(),
            ..GcOutcome::default()
        };
        if dry_run {
            let doomed_keys: HashSet<(String, String, String)> = doomed
                .iter()
                .map(|v| (v.name.clone(), v.version.clone(), v.arch.clone()))
                .collect();
            self.sweep(Some(&doomed_keys), grace, true, &mut outcome)?;
            return Ok(outcome);
        }
        let removed = self
            .writer
            .write(move |txn| {
                // Re-plan inside the transaction: a tag set since planning must still protect.
                let still = plan(
                    &txn.open_table(PACKAGES).map_err(db)?,
                    &txn.open_table(VERSIONS).map_err(db)?,
                    &txn.open_table(TAGS).map_err(db)?,
                    keep,
                )?;
                LogTables::with(txn, |tables| {
                    let mut removed = Vec::new();
                    for v in still {
                        let vk = version_key(&v.name, &v.version, &v.arch);
                        if let Some(digest) = tables.remove_version(&v.name, &vk)? {
                            // Remember the bytes, so the version can never come back as others.
                            tables
                                .retired
                                .insert(vk.as_str(), digest.as_bytes().as_slice())
                                .map_err(db)?;
                            removed.push(v);
                        }
                    }
                    Ok::<_, StoreError>(removed)
                })
            })
            .await?;
        outcome.versions = removed;
        failpoints.hit("gc-versions-removed", 0).await;
        self.sweep(None, grace, false, &mut outcome)?;
        Ok(outcome)
    }

    /// Removes (or, dry, counts) blob files no version references. The listing comes first and
    /// the live set is read after it, so a blob listed here whose record committed before the
    /// read is seen as live; one committing later is pinned by its writer, and the final check
    /// under the pin lock (`remove_unless_needed`) asks the database once more.
    fn sweep(
        &self,
        doomed: Option<&HashSet<(String, String, String)>>,
        grace: Duration,
        dry_run: bool,
        outcome: &mut GcOutcome,
    ) -> Result<(), StoreError> {
        let listed = self.blobs.list()?;
        let empty = HashSet::new();
        let live = self.read(|txn| live_digests_except(txn, doomed.unwrap_or(&empty)))?;
        let now = SystemTime::now();
        for blob in listed {
            if live.contains(&blob.digest) || self.blobs.is_pinned(&blob.digest) {
                continue;
            }
            let age = now.duration_since(blob.modified).unwrap_or_default();
            if age < grace {
                outcome.blobs_in_grace += 1;
                continue;
            }
            if !dry_run {
                let removed = self.blobs.remove_unless_needed(&blob.digest, || {
                    self.blob_referenced(&blob.digest)
                        .map_err(std::io::Error::other)
                })?;
                if !removed {
                    continue;
                }
            }
            outcome.blobs += 1;
            outcome.blob_bytes += blob.size;
        }
        Ok(())
    }

    /// Whether any live version names `digest`, as of now.
    fn blob_referenced(&self, digest: &niso_protocol::Digest) -> Result<bool, StoreError> {
        self.read(|txn| {
            let index = txn.open_multimap_table(BLOB_VERSIONS).map_err(db)?;
            let mut values = index.get(&digest.as_bytes()[..]).map_err(db)?;
            Ok(values.next().is_some())
        })
    }
}

/// The versions a GC keeping `keep` per package and arch would remove. Works on the tables of
/// a read transaction (dry run, planning) or of the write transaction that removes them.
fn plan(
    packages: &impl StrTable,
    versions: &impl StrTable,
    tags: &impl StrTable,
    keep: usize,
) -> Result<Vec<GcVersion>, StoreError> {
    let mut out = Vec::new();
    for item in packages.iter().map_err(db)? {
        let (name, _) = item.map_err(db)?;
        let name = name.value().to_owned();
        let rows: Vec<(Version, Arch, u64)> = versions_from(versions, &name)?
            .into_iter()
            .map(|r| (r.version, r.arch, r.entry.size))
            .collect();
        let tagged: HashSet<Version> = tags_from(tags, &name)?.into_values().collect();
        out.extend(doomed_versions(&name, rows, &tagged, keep));
    }
    Ok(out)
}

/// Per arch: keep the newest `keep` versions, every tagged version and the automatic latest.
fn doomed_versions(
    name: &str,
    rows: Vec<(Version, Arch, u64)>,
    tagged: &HashSet<Version>,
    keep: usize,
) -> Vec<GcVersion> {
    let latest = latest(rows.iter().map(|(v, _, _)| v)).cloned();
    let mut by_arch: BTreeMap<Arch, Vec<(Version, u64)>> = BTreeMap::new();
    for (v, a, size) in rows {
        by_arch.entry(a).or_default().push((v, size));
    }
    let mut out = Vec::new();
    for (arch, mut versions) in by_arch {
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        for (v, size) in versions.into_iter().skip(keep) {
            if tagged.contains(&v) || latest.as_ref() == Some(&v) {
                continue;
            }
            out.push(GcVersion {
                name: name.to_owned(),
                version: v.to_string(),
                arch: arch.to_string(),
                size,
            });
        }
    }
    out.sort_by(|a, b| (&a.name, &a.arch, &a.version).cmp(&(&b.name, &b.arch, &b.version)));
    out
}

fn live_digests_except(
    txn: &ReadTransaction,
    doomed: &HashSet<(String, String, String)>,
) -> Result<HashSet<niso_protocol::Digest>, StoreError> {
    let t = txn.open_table(VERSIONS).map_err(db)?;
    let mut out = HashSet::new();
    for item in t.iter().map_err(db)? {
        let (k, v) = item.map_err(db)?;
        let parts = super::tables::split_key(k.value());
        let key = (
            parts.first().copied().unwrap_or_default().to_owned(),
            parts.get(1).copied().unwrap_or_default().to_owned(),
            parts.get(2).copied().unwrap_or_default().to_owned(),
        );
        if doomed.contains(&key) {
            continue;
        }
        let entry: super::entries::VersionEntry = super::entries::decode(v.value())?;
        out.insert(niso_protocol::Digest::from_bytes(entry.digest));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn keeps_newest_tagged_and_latest_per_arch() {
        let x86 = Arch::new("x86_64").unwrap();
        let arm = Arch::new("aarch64").unwrap();
        let rows = vec![
            (v("1.0.0"), x86.clone(), 1),
            (v("1.1.0"), x86.clone(), 1),
            (v("1.2.0"), x86.clone(), 1),
            (v("2.0.0-rc1"), x86.clone(), 1),
            (v("1.0.0"), arm.clone(), 1),
        ];
        let tagged = HashSet::from([v("1.0.0")]);
        let doomed = doomed_versions("p", rows, &tagged, 1);
        // 2.0.0-rc1 is newest (kept by N), 1.2.0 is latest (kept), 1.0.0 is tagged (kept).
        let names: Vec<_> = doomed
            .iter()
            .map(|d| format!("{} {}", d.version, d.arch))
            .collect();
        assert_eq!(names, vec!["1.1.0 x86_64"]);
    }
}
