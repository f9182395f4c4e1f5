//! API keys at rest: only a keyed hash of each key is stored, with its name, scopes, times.

use niso_protocol::{api_key::ApiKey, scope::Scope};
use redb::ReadableTable;

use super::{
    Store,
    entries::{KeyEntry, decode, encode},
    error::{StoreError, db},
    tables::{KEY_HASHES, KEYS},
};

impl Store {
    /// Stores a new key under `id`.
    pub async fn insert_key(
        &self,
        id: String,
        key: &ApiKey,
        entry: KeyEntry,
    ) -> Result<(), StoreError> {
        let hash = key.hash().0;
        debug_assert_eq!(entry.hash, hash);
        self.writer
            .write(move |txn| {
                let mut keys = txn.open_table(KEYS).map_err(db)?;
                keys.insert(id.as_str(), encode(&entry)?.as_slice())
                    .map_err(db)?;
                let mut hashes = txn.open_table(KEY_HASHES).map_err(db)?;
                hashes.insert(hash.as_slice(), id.as_str()).map_err(db)?;
                Ok::<_, StoreError>(())
            })
            .await
    }

    /// Finds the key whose hash matches `key`.
    pub fn find_key(&self, key: &ApiKey) -> Result<Option<(String, KeyEntry)>, StoreError> {
        let hash = key.hash().0;
        self.read(|txn| {
            let hashes = txn.open_table(KEY_HASHES).map_err(db)?;
            let Some(id) = hashes.get(hash.as_slice()).map_err(db)? else {
                return Ok(None);
            };
            let id = id.value().to_owned();
            let keys = txn.open_table(KEYS).map_err(db)?;
            let Some(entry) = keys.get(id.as_str()).map_err(db)? else {
                return Ok(None);
            };
            let entry: KeyEntry = decode(entry.value())?;
            // Hash lookups are exact, but compare in full anyway: the table is the authority.
            Ok((entry.hash == hash).then_some((id, entry)))
        })
    }

    pub fn list_keys(&self) -> Result<Vec<(String, KeyEntry)>, StoreError> {
        self.read(|txn| {
            let keys = txn.open_table(KEYS).map_err(db)?;
            let mut out = Vec::new();
            for item in keys.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                out.push((k.value().to_owned(), decode(v.value())?));
            }
            out.sort_by(|a: &(String, KeyEntry), b| {
                a.1.created_ms.cmp(&b.1.created_ms).then(a.0.cmp(&b.0))
            });
            Ok(out)
        })
    }

    /// Whether any stored key has the `admin` scope.
    /// Whether an admin key that still works exists: expired ones do not count, so a node
    /// whose every admin key expired issues a new `admin.key` at its next start.
    pub fn has_admin_key(&self) -> Result<bool, StoreError> {
        let admin = Scope::Admin.to_string();
        let now = crate::clock::now_ms();
        Ok(self
            .list_keys()?
            .iter()
            .any(|(_, e)| e.scopes.contains(&admin) && e.expires_at_ms.is_none_or(|at| at > now)))
    }

    /// Deletes a key. Returns whether it existed.
    pub async fn revoke_key(&self, id: String) -> Result<bool, StoreError> {
        self.writer
            .write(move |txn| {
                let mut keys = txn.open_table(KEYS).map_err(db)?;
                let Some(entry) = keys.remove(id.as_str()).map_err(db)? else {
                    return Ok(false);
                };
                let entry: KeyEntry = decode(entry.value())?;
                let mut hashes = txn.open_table(KEY_HASHES).map_err(db)?;
                hashes.remove(entry.hash.as_slice()).map_err(db)?;
                Ok::<_, StoreError>(true)
            })
            .await
    }

    /// Records when keys were last used, in one transaction.
    pub async fn touch_keys(&self, times: Vec<(String, u64)>) -> Result<(), StoreError> {
        self.writer
            .write(move |txn| {
                let mut keys = txn.open_table(KEYS).map_err(db)?;
                for (id, ms) in times {
                    let entry = keys
                        .get(id.as_str())
                        .map_err(db)?
                        .map(|v| decode::<KeyEntry>(v.value()))
                        .transpose()?;
                    // A key revoked since it was used has nothing left to update.
                    if let Some(mut entry) = entry
                        && entry.last_used_ms.is_none_or(|t| t < ms)
                    {
                        entry.last_used_ms = Some(ms);
                        keys.insert(id.as_str(), encode(&entry)?.as_slice())
                            .map_err(db)?;
                    }
                }
                Ok::<_, StoreError>(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use niso_protocol::{record::NodeSecret, scope::Scope};

    use crate::{api_keys::issue_key, clock::now_ms, failpoint::Failpoints, store::Store};

    #[tokio::test]
    async fn only_a_working_admin_key_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            NodeSecret::from_bytes(&[3; 32]),
            Failpoints::default(),
        )
        .unwrap();
        assert!(!store.has_admin_key().unwrap());
        let pull: Scope = "pull:*".parse().unwrap();
        issue_key(&store, "reader".into(), vec![pull], None)
            .await
            .unwrap();
        assert!(!store.has_admin_key().unwrap(), "a pull key is no admin");
        let (_, expired) = issue_key(&store, "old".into(), vec![Scope::Admin], Some(now_ms() - 1))
            .await
            .unwrap();
        assert!(
            !store.has_admin_key().unwrap(),
            "{} has expired",
            expired.id
        );
        issue_key(
            &store,
            "new".into(),
            vec![Scope::Admin],
            Some(now_ms() + 60_000),
        )
        .await
        .unwrap();
        assert!(store.has_admin_key().unwrap());
    }
}
