//! Bringing a data dir written before the authority rules up to them, once, inside the same
//! transaction that creates the new tables (all or nothing).
//!
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
    entries::{OwnerEntry, encode},
    error::{StoreError, db},
    tables::{LOG, OWNERS, RECORDS, TAGS, split_key},
};

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
