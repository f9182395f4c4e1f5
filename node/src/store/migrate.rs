//! Bringing a data dir written by an older version up to date, once, inside the same
//! transaction that creates the new tables (all or nothing).
//!
//! - `package_log_v1` and `log_names_v1` are filled from the log.
//! - `owners_v1` is filled by replaying the log in the order this node learned it: the first
//!   manifest for a canonical name claims it for its origin, exactly as live intake would have.
//! - Tags whose names read as versions or version prefixes (allowed before) are dropped from
//!   `tags_v1`. Their records stay in the log; resolution never consults such tags anyway, so
//!   dropping them only removes them from listings. Nothing here can fail on bad data: a record
//!   that does not parse is skipped and logged, never a reason to refuse to start.

use niso_protocol::{
    record::{Record, RecordBody},
    reference::is_version_like,
};
use redb::{ReadableTable, TableHandle, WriteTransaction};

use super::{
    apply::index_log_entry,
    entries::{OwnerEntry, encode},
    error::{StoreError, db},
    tables::{LOG, LOG_NAMES, OWNERS, PACKAGE_LOG, RECORDS, TAGS, split_key},
};

/// Creates the per-package log index, filling it from the log when the data dir predates it.
pub(super) fn index_package_log(txn: &WriteTransaction) -> Result<(), StoreError> {
    let exists = txn
        .list_tables()
        .map_err(db)?
        .any(|t| t.name() == PACKAGE_LOG.name());
    let mut package_log = txn.open_table(PACKAGE_LOG).map_err(db)?;
    let mut log_names = txn.open_table(LOG_NAMES).map_err(db)?;
    if exists {
        return Ok(());
    }
    let entries: Vec<(u64, Vec<u8>, String)> = {
        let log = txn.open_table(LOG).map_err(db)?;
        let records = txn.open_table(RECORDS).map_err(db)?;
        let mut out = Vec::new();
        for item in log.iter().map_err(db)? {
            let (pos, key) = item.map_err(db)?;
            let Some(bytes) = records.get(key.value()).map_err(db)? else {
                continue;
            };
            if let Ok(record) = Record::parse_unverified(bytes.value()) {
                out.push((
                    pos.value(),
                    key.value().to_vec(),
                    record.body.package().to_string(),
                ));
            }
        }
        out
    };
    for (pos, key, package) in entries {
        index_log_entry(&mut package_log, &mut log_names, &package, pos, &key)?;
    }
    Ok(())
}

/// Creates `owners_v1`, filling it from the log when the data dir predates it.
pub(super) fn claim_owners(txn: &WriteTransaction) -> Result<(), StoreError> {
    let exists = txn
        .list_tables()
        .map_err(db)?
        .any(|t| t.name() == OWNERS.name());
    let mut owners = txn.open_table(OWNERS).map_err(db)?;
    if exists {
        return Ok(());
    }
    let log = txn.open_table(LOG).map_err(db)?;
    let records = txn.open_table(RECORDS).map_err(db)?;
    let mut claimed = 0u64;
    for item in log.iter().map_err(db)? {
        let (_, key) = item.map_err(db)?;
        let Some(bytes) = records.get(key.value()).map_err(db)? else {
            continue;
        };
        let record = match Record::parse_unverified(bytes.value()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable record while claiming names");
                continue;
            }
        };
        let RecordBody::Manifest(m) = &record.body else {
            continue;
        };
        let canonical = m.name.canonical();
        if owners.get(canonical.as_str()).map_err(db)?.is_some() {
            continue;
        }
        let entry = OwnerEntry {
            name: m.name.to_string(),
            origin: record.origin.0,
        };
        owners
            .insert(canonical.as_str(), encode(&entry)?.as_slice())
            .map_err(db)?;
        claimed += 1;
    }
    if claimed > 0 {
        tracing::info!(
            packages = claimed,
            "recorded which origin owns each package"
        );
    }
    drop_version_like_tags(txn)
}

fn drop_version_like_tags(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut tags = txn.open_table(TAGS).map_err(db)?;
    let mut doomed = Vec::new();
    for item in tags.iter().map_err(db)? {
        let (k, _) = item.map_err(db)?;
        if split_key(k.value())
            .get(1)
            .is_some_and(|t| is_version_like(t))
        {
            doomed.push(k.value().to_owned());
        }
    }
    for key in &doomed {
        tags.remove(key.as_str()).map_err(db)?;
        tracing::warn!(
            tag = %key.replace('\0', ":"),
            "dropped a tag named like a version; versions and prefixes resolve only to themselves"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use niso_protocol::{
        Arch, Digest, PackageName,
        record::{ManifestBody, NodeSecret, Record, RecordBody},
    };

    use redb::ReadableDatabase;

    use super::*;
    use crate::{
        failpoint::Failpoints,
        store::{Store, raw_database, tables::tag_key},
    };

    fn manifest(who: u8, seq: u64, name: &str) -> Record {
        Record::sign(
            &NodeSecret::from_bytes(&[who; 32]),
            seq,
            seq,
            RecordBody::Manifest(ManifestBody {
                name: PackageName::new(name).unwrap(),
                version: "1.0.0".parse().unwrap(),
                arch: Arch::any(),
                digest: Digest::of(name.as_bytes()),
                size: 1,
                description: String::new(),
            }),
        )
    }

    #[tokio::test]
    async fn an_older_data_dir_gets_owners_from_its_log_and_loses_version_like_tags() {
        let dir = tempfile::tempdir().unwrap();
        let secret = NodeSecret::from_bytes(&[9; 32]);
        {
            let store = Store::open(dir.path(), secret.clone(), Failpoints::default()).unwrap();
            let applied = store
                .apply_batch(vec![manifest(1, 1, "alpha"), manifest(2, 1, "beta")])
                .await
                .unwrap();
            assert!(applied.iter().all(Result::is_ok));
        }
        // Before the rules: no owners table, a second origin's spelling of alpha in the log,
        // and a tag named like a version.
        {
            let db = raw_database(dir.path());
            let txn = db.begin_write().unwrap();
            assert!(txn.delete_table(OWNERS).unwrap());
            txn.open_table(TAGS)
                .unwrap()
                .insert(tag_key("alpha", "1.0.0").as_str(), &[][..])
                .unwrap();
            txn.open_table(TAGS)
                .unwrap()
                .insert(tag_key("alpha", "stable").as_str(), &[][..])
                .unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path(), secret, Failpoints::default()).unwrap();
        // The first publisher of each name holds it now.
        let later = store
            .apply_batch(vec![manifest(2, 2, "alpha"), manifest(1, 2, "beta")])
            .await
            .unwrap();
        let refused: Vec<String> = later
            .iter()
            .map(|r| match r {
                Err(crate::store::ChangeError::NotOwner { name, .. }) => name.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(refused, ["alpha", "beta"]);
        let db = store.db.get().unwrap();
        let txn = db.begin_read().unwrap();
        let tags = txn.open_table(TAGS).unwrap();
        assert!(
            tags.get(tag_key("alpha", "1.0.0").as_str())
                .unwrap()
                .is_none()
        );
        assert!(
            tags.get(tag_key("alpha", "stable").as_str())
                .unwrap()
                .is_some()
        );
    }
}
