//! The search index: every 3-byte window (trigram) of a package's name and of its lowercased
//! description, mapped to the package. A query word of three bytes or more can only match
//! (as a substring) a package holding all of its trigrams, so the packages under its rarest
//! trigram are a complete candidate set, and search reads those instead of every package.
//!
//! Kept in the same transactions that write [`PACKAGES`]: wherever an entry is written or
//! removed, the change is noted in a [`Reindex`] with the entry it replaces, and the
//! transaction moves the index once per package before it commits (`LogTables::with` in
//! `apply.rs`, the only writer of [`PACKAGES`], does both). A catch-up batch holds
//! several versions of a package, each rewriting its entry; the trigrams in between were
//! inserted and removed again for nothing (a third of the writer's time in a lazy catch-up).

use std::collections::{BTreeMap, BTreeSet};

use redb::{MultimapTableDefinition, MultimapTableHandle, ReadableTable, WriteTransaction};

use super::{
    entries::{PackageEntry, decode},
    error::{StoreError, db},
    tables::PACKAGES,
};

/// Trigram → every package whose name or lowercased description contains it.
pub const SEARCH_GRAMS: MultimapTableDefinition<&[u8], &str> =
    MultimapTableDefinition::new("search_grams_v1");

/// Words shorter than this have no trigram: a query made only of them scans every package.
pub const GRAM: usize = 3;

/// The trigrams a package is found by. Bytes, not characters: a substring's byte windows are
/// windows of the text's bytes, whatever the encoding.
fn grams(name: &str, description: &str) -> BTreeSet<[u8; GRAM]> {
    let description = description.to_lowercase();
    [name.as_bytes(), description.as_bytes()]
        .into_iter()
        .flat_map(|text| text.windows(GRAM))
        .filter_map(|w| <[u8; GRAM]>::try_from(w).ok())
        .collect()
}

/// The trigrams of a query word (empty when it is too short to have any).
pub fn word_grams(word: &str) -> impl Iterator<Item = &[u8]> {
    word.as_bytes().windows(GRAM)
}

/// The package entries one transaction changed, each as it found it and as it leaves it.
/// Nothing reads the index inside a write transaction, so it may lag until [`Reindex::apply`].
#[derive(Debug, Default)]
#[must_use = "the search index moves only when the changes are applied"]
pub struct Reindex(BTreeMap<String, (Option<PackageEntry>, Option<PackageEntry>)>);

impl Reindex {
    /// Notes that `name`'s entry went from `old` to `new` (`None`: absent). Only the first
    /// `old` of a package counts: it is what the index holds.
    pub fn note(&mut self, name: &str, old: Option<PackageEntry>, new: Option<PackageEntry>) {
        match self.0.get_mut(name) {
            Some(change) => change.1 = new,
            None => {
                self.0.insert(name.to_owned(), (old, new));
            }
        }
    }

    /// Moves the index of every noted package, in `txn` (the one that changed them). Each
    /// chunk of packages moves in trigram order, so neighbouring changes meet the same pages;
    /// chunks bound the memory a large GC would otherwise spend on its list of moves.
    pub fn apply(self, txn: &WriteTransaction) -> Result<(), StoreError> {
        const CHUNK: usize = 256;
        let changes: Vec<_> = self.0.iter().collect();
        let mut table = None;
        for chunk in changes.chunks(CHUNK) {
            let mut removals = Vec::new();
            let mut additions = Vec::new();
            for (name, (old, new)) in chunk {
                let (gone, added) = regram(name, old.as_ref(), new.as_ref());
                removals.extend(gone.into_iter().map(|gram| (gram, name.as_str())));
                additions.extend(added.into_iter().map(|gram| (gram, name.as_str())));
            }
            if removals.is_empty() && additions.is_empty() {
                continue;
            }
            removals.sort_unstable();
            additions.sort_unstable();
            let table = match &mut table {
                Some(table) => table,
                None => table.insert(txn.open_multimap_table(SEARCH_GRAMS).map_err(db)?),
            };
            for (gram, name) in removals {
                table.remove(&gram[..], name).map_err(db)?;
            }
            for (gram, name) in additions {
                table.insert(&gram[..], name).map_err(db)?;
            }
        }
        Ok(())
    }
}

/// The trigrams `name` loses and gains when its entry goes from `old` to `new` (`None`:
/// absent).
fn regram(
    name: &str,
    old: Option<&PackageEntry>,
    new: Option<&PackageEntry>,
) -> (Vec<[u8; GRAM]>, Vec<[u8; GRAM]>) {
    let before = old.map(|e| grams(name, &e.description)).unwrap_or_default();
    let after = new.map(|e| grams(name, &e.description)).unwrap_or_default();
    (
        before.difference(&after).copied().collect(),
        after.difference(&before).copied().collect(),
    )
}

/// Creates the index, filling it from [`PACKAGES`] when a data dir from before it is opened
/// (in the caller's transaction: all or nothing).
pub fn create(txn: &WriteTransaction) -> Result<(), StoreError> {
    let exists = txn
        .list_multimap_tables()
        .map_err(db)?
        .any(|t| t.name() == SEARCH_GRAMS.name());
    txn.open_multimap_table(SEARCH_GRAMS).map_err(db)?;
    if exists {
        return Ok(());
    }
    let packages: Vec<(String, PackageEntry)> = {
        let table = txn.open_table(PACKAGES).map_err(db)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.push((k.value().to_owned(), decode(v.value())?));
        }
        out
    };
    let count = packages.len();
    let mut all = Reindex::default();
    for (name, entry) in packages {
        all.note(&name, None, Some(entry));
    }
    all.apply(txn)?;
    if count > 0 {
        tracing::info!(packages = count, "built the search index");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use niso_protocol::{
        Arch, Digest, PackageName,
        record::{ManifestBody, NodeSecret, Record, RecordBody, TombstoneBody},
    };
    use redb::{ReadableDatabase, ReadableMultimapTable};

    use super::*;
    use crate::{
        failpoint::Failpoints,
        store::{Applied, Store, raw_database},
    };

    fn manifest(seq: u64, name: &str, version: &str, description: &str) -> Record {
        Record::sign(
            &NodeSecret::from_bytes(&[9; 32]),
            seq,
            1,
            RecordBody::Manifest(ManifestBody {
                name: PackageName::new(name).unwrap(),
                version: version.parse().unwrap(),
                arch: Arch::any(),
                digest: Digest::of(format!("{name} {version}").as_bytes()),
                size: 1,
                description: description.to_owned(),
            }),
        )
    }

    fn tombstone(seq: u64, name: &str, version: &str) -> Record {
        Record::sign(
            &NodeSecret::from_bytes(&[9; 32]),
            seq,
            1,
            RecordBody::Tombstone(TombstoneBody {
                name: PackageName::new(name).unwrap(),
                version: version.parse().unwrap(),
                arch: Arch::any(),
            }),
        )
    }

    #[tokio::test]
    async fn a_batch_that_rewrites_and_removes_packages_leaves_the_index_a_rebuild_would_make() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            NodeSecret::from_bytes(&[7; 32]),
            Failpoints::default(),
        )
        .unwrap();
        // One batch: a package whose description changes twice, one added and deleted whole,
        // and one written once; enough others that the index moves in more than one chunk,
        // with "gamma" sorting into the last.
        let mut batch = vec![
            manifest(1, "alpha", "1.0.0", "first words"),
            manifest(2, "alpha", "1.0.1", "second phrase"),
            manifest(3, "beta", "1.0.0", "doomed package"),
            manifest(4, "alpha", "1.0.2", "third wording"),
            tombstone(5, "beta", "1.0.0"),
            manifest(6, "gamma", "1.0.0", "stays put"),
        ];
        batch.extend(
            (0..300).map(|n| manifest(7 + n, &format!("filler-{n:03}"), "1.0.0", "padding")),
        );
        let results = store.apply_batch(batch).await.unwrap();
        assert!(
            results.iter().all(|r| matches!(r, Ok(Applied::Stored))),
            "{results:?}"
        );
        let found = |query: &str| -> Vec<String> {
            let (hits, _) = store.search(query, 0, usize::MAX, |_| true).unwrap();
            hits.into_iter().map(|h| h.name).collect()
        };
        assert_eq!(found("wording"), ["alpha"]);
        assert_eq!(found("stays"), ["gamma"]);
        assert_eq!(found("filler-299"), ["filler-299"]);
        for gone in ["first", "phrase", "doomed", "beta"] {
            assert!(found(gone).is_empty(), "{gone:?} found {:?}", found(gone));
        }
        drop(store);
        let db = raw_database(dir.path());
        let txn = db.begin_read().unwrap();
        let mut held = BTreeSet::new();
        for item in txn
            .open_multimap_table(SEARCH_GRAMS)
            .unwrap()
            .iter()
            .unwrap()
        {
            let (gram, names) = item.unwrap();
            for name in names {
                held.insert((gram.value().to_vec(), name.unwrap().value().to_owned()));
            }
        }
        let mut rebuilt = BTreeSet::new();
        for item in txn.open_table(PACKAGES).unwrap().iter().unwrap() {
            let (name, entry) = item.unwrap();
            let entry: PackageEntry = decode(entry.value()).unwrap();
            for gram in grams(name.value(), &entry.description) {
                rebuilt.insert((gram.to_vec(), name.value().to_owned()));
            }
        }
        assert!(!rebuilt.is_empty());
        assert_eq!(held, rebuilt, "no stale entry, none missing");
    }

    #[test]
    fn grams_cover_every_substring_of_three_bytes_or_more() {
        let g = grams("pkg-001234", "A Fast Ünïcode tool");
        for word in ["pkg", "001234", "g-0", "fast", "ünï", "tool", "code t"] {
            for w in word_grams(word) {
                assert!(g.contains(&<[u8; GRAM]>::try_from(w).unwrap()), "{word}");
            }
        }
        assert!(!g.contains(b"Fas"), "descriptions are indexed lowercased");
        assert_eq!(word_grams("ab").count(), 0);
    }
}
