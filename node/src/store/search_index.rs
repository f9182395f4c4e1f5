//! The search index: every 3-byte window (trigram) of a package's name and of its lowercased
//! description, mapped to the package. A query word of three bytes or more can only match
//! (as a substring) a package holding all of its trigrams, so the packages under its rarest
//! trigram are a complete candidate set, and search reads those instead of every package.
//!
//! Kept in the same transactions that write [`PACKAGES`]: one call wherever an entry is
//! written or removed, with the entry it replaces.

use std::collections::BTreeSet;

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

/// Moves `name`'s entries from what `old` described to what `new` does (`None`: absent).
pub fn reindex(
    txn: &WriteTransaction,
    name: &str,
    old: Option<&PackageEntry>,
    new: Option<&PackageEntry>,
) -> Result<(), StoreError> {
    let before = old.map(|e| grams(name, &e.description)).unwrap_or_default();
    let after = new.map(|e| grams(name, &e.description)).unwrap_or_default();
    if before == after {
        return Ok(());
    }
    let mut table = txn.open_multimap_table(SEARCH_GRAMS).map_err(db)?;
    for gram in before.difference(&after) {
        table.remove(&gram[..], name).map_err(db)?;
    }
    for gram in after.difference(&before) {
        table.insert(&gram[..], name).map_err(db)?;
    }
    Ok(())
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
    for (name, entry) in &packages {
        reindex(txn, name, None, Some(entry))?;
    }
    if !packages.is_empty() {
        tracing::info!(packages = packages.len(), "built the search index");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
