//! Kademlia's record store, sized for a registry: one provider key per blob it holds.
//!
//! libp2p's `MemoryStore` keeps each key's providers in a small-vector with room for 20
//! records inline, about 3 KB per key even when the only provider is this node, and keeps this
//! node's own records twice. A node serving 10,000 blobs held 45 MiB in it, and its memory grew
//! with its catalog. Here this node's own keys are kept as keys alone (its records carry no
//! addresses and no expiry, so they are rebuilt when asked for), and other peers' records are
//! capped in total, not per key, so a peer announcing many keys cannot grow the table past
//! [`ProviderLimits::max_records`]. Value records (nodes put none) stay in a `MemoryStore`.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
};

use libp2p::{
    PeerId,
    kad::{
        ProviderRecord, Record, RecordKey,
        store::{self, MemoryStore, MemoryStoreConfig, RecordStore},
    },
};

/// How many provider records of other peers the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderLimits {
    /// Other peers' provider records held at once, over every key.
    pub max_records: usize,
    /// Providers kept per key; more are ignored, as the stock store does.
    pub max_per_key: usize,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        Self {
            max_records: 32 * 1024,
            max_per_key: 64,
        }
    }
}

pub struct ProviderStore {
    local: PeerId,
    values: MemoryStore,
    /// Keys this node provides that are blob digests, as their 32 bytes: no allocation per
    /// key, which at 100k blobs saved about 5 MiB.
    provided: HashSet<[u8; 32]>,
    /// Keys this node provides of any other length (nodes make none today).
    provided_other: HashSet<RecordKey>,
    /// Other peers' provider records, by key.
    others: HashMap<RecordKey, Vec<ProviderRecord>>,
    /// Records in `others`.
    other_records: usize,
    limits: ProviderLimits,
}

impl ProviderStore {
    pub fn new(local: PeerId, limits: ProviderLimits) -> Self {
        let values = MemoryStore::with_config(
            local,
            MemoryStoreConfig {
                max_records: 1024,
                max_value_bytes: 64 * 1024,
                // Providers never reach the inner store.
                max_providers_per_key: 1,
                max_provided_keys: 1,
            },
        );
        Self {
            local,
            values,
            provided: HashSet::new(),
            provided_other: HashSet::new(),
            others: HashMap::new(),
            other_records: 0,
            limits,
        }
    }

    fn own(&self, key: &RecordKey) -> ProviderRecord {
        ProviderRecord::new(key.clone(), self.local, Vec::new())
    }
}

impl std::fmt::Debug for ProviderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderStore")
            .field(
                "provided",
                &(self.provided.len() + self.provided_other.len()),
            )
            .field("other_records", &self.other_records)
            .finish_non_exhaustive()
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = Box<dyn Iterator<Item = Cow<'a, ProviderRecord>> + 'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.values.get(k)
    }

    fn put(&mut self, r: Record) -> store::Result<()> {
        self.values.put(r)
    }

    fn remove(&mut self, k: &RecordKey) {
        self.values.remove(k);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.values.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        if record.provider == self.local {
            match digest_key(&record.key) {
                Some(d) => self.provided.insert(d),
                None => self.provided_other.insert(record.key),
            };
            return Ok(());
        }
        let full = self.other_records >= self.limits.max_records;
        let known = self.others.contains_key(&record.key);
        if full && !known {
            return Err(store::Error::MaxProvidedKeys);
        }
        let providers = self.others.entry(record.key.clone()).or_default();
        if let Some(p) = providers.iter_mut().find(|p| p.provider == record.provider) {
            *p = record;
            return Ok(());
        }
        if providers.len() >= self.limits.max_per_key || full {
            return Ok(());
        }
        providers.push(record);
        self.other_records += 1;
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut out = self.others.get(key).cloned().unwrap_or_default();
        let mine = match digest_key(key) {
            Some(d) => self.provided.contains(&d),
            None => self.provided_other.contains(key),
        };
        if mine {
            out.push(self.own(key));
        }
        out
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        let digests = self.provided.iter().map(RecordKey::new);
        let others = self.provided_other.iter().cloned();
        Box::new(digests.chain(others).map(|k| Cow::Owned(self.own(&k))))
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local {
            match digest_key(key) {
                Some(d) => self.provided.remove(&d),
                None => self.provided_other.remove(key),
            };
            return;
        }
        if let Some(providers) = self.others.get_mut(key) {
            let before = providers.len();
            providers.retain(|p| p.provider != *provider);
            self.other_records -= before - providers.len();
            if providers.is_empty() {
                self.others.remove(key);
            }
        }
    }
}

/// A key that is a blob digest's bytes.
fn digest_key(key: &RecordKey) -> Option<[u8; 32]> {
    key.as_ref().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_peer as peer;

    fn key(n: u32) -> RecordKey {
        RecordKey::new(&n.to_be_bytes())
    }

    #[test]
    fn own_keys_are_provided_and_listed_without_being_stored_as_records() {
        let me = peer(1);
        let mut s = ProviderStore::new(me, ProviderLimits::default());
        for n in 0..1000 {
            s.add_provider(ProviderRecord::new(key(n), me, Vec::new()))
                .unwrap();
        }
        assert_eq!(s.provided().count(), 1000);
        assert_eq!(s.other_records, 0);
        let listed = s.providers(&key(7));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].provider, me);
        assert!(listed[0].addresses.is_empty() && listed[0].expires.is_none());
        s.remove_provider(&key(7), &me);
        assert!(s.providers(&key(7)).is_empty());
        assert_eq!(s.provided().count(), 999);
    }

    #[test]
    fn own_digest_keys_are_kept_as_their_bytes_and_listed_like_any_key() {
        let me = peer(1);
        let mut s = ProviderStore::new(me, ProviderLimits::default());
        let digest =
            |n: u32| RecordKey::new(niso_protocol::Digest::of(&n.to_le_bytes()).as_bytes());
        for n in 0..100 {
            s.add_provider(ProviderRecord::new(digest(n), me, Vec::new()))
                .unwrap();
        }
        s.add_provider(ProviderRecord::new(key(1), me, Vec::new()))
            .unwrap();
        assert_eq!((s.provided.len(), s.provided_other.len()), (100, 1));
        let listed: HashSet<RecordKey> = s.provided().map(|r| r.key.clone()).collect();
        assert_eq!(listed.len(), 101);
        assert!(listed.contains(&digest(7)) && listed.contains(&key(1)));
        let found = s.providers(&digest(7));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].provider, me);
        assert_eq!(found[0].key, digest(7));
        s.remove_provider(&digest(7), &me);
        assert!(s.providers(&digest(7)).is_empty());
        assert_eq!(s.provided().count(), 100);
    }

    #[test]
    fn other_peers_records_are_capped_in_total_and_per_key() {
        let me = peer(1);
        let limits = ProviderLimits {
            max_records: 10,
            max_per_key: 3,
        };
        let mut s = ProviderStore::new(me, limits);
        // One key, five announcers: three kept, the rest ignored.
        for p in 2..7 {
            s.add_provider(ProviderRecord::new(key(0), peer(p), Vec::new()))
                .unwrap();
        }
        assert_eq!(s.providers(&key(0)).len(), 3);
        // A flood of keys from one peer stops at the total.
        let mut refused = 0;
        for n in 1..100 {
            if s.add_provider(ProviderRecord::new(key(n), peer(9), Vec::new()))
                .is_err()
            {
                refused += 1;
            }
        }
        assert_eq!(s.other_records, 10);
        assert_eq!(refused, 99 - 7);
        // This node's own keys are never refused, whatever others filled.
        s.add_provider(ProviderRecord::new(key(500), me, Vec::new()))
            .unwrap();
        assert_eq!(s.providers(&key(500)).len(), 1);
        // An announcer already known for a key renews in place; removal frees room.
        s.add_provider(ProviderRecord::new(key(0), peer(2), Vec::new()))
            .unwrap();
        assert_eq!(s.other_records, 10);
        s.remove_provider(&key(0), &peer(2));
        assert_eq!(s.other_records, 9);
        s.add_provider(ProviderRecord::new(key(200), peer(9), Vec::new()))
            .unwrap();
        assert_eq!(s.providers(&key(200)).len(), 1);
    }
}
