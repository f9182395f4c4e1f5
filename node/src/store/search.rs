//! Package search over names and descriptions, ranked: exact name, name prefix, name
//! substring, then description. Candidates come from the trigram index (`search_index`).

use redb::{ReadTransaction, ReadableTable};

use super::{
    Store,
    entries::{PackageEntry, decode},
    error::{StoreError, db},
    search_index::{SEARCH_GRAMS, word_grams},
    tables::PACKAGES,
};

#[derive(Debug, Clone)]
pub struct SearchHit {
    pub name: String,
    pub entry: PackageEntry,
    rank: u8,
}

impl Store {
    /// Packages matching every word of `query`, best first. `allow` hides packages the caller
    /// may not see. Returns one page and the total number of matches.
    ///
    /// Reads only the packages under the query's rarest trigram (see `search_index`) when a
    /// word has one, so the cost follows how many packages could match, not the catalog.
    pub fn search(
        &self,
        query: &str,
        offset: usize,
        limit: usize,
        allow: impl Fn(&str) -> bool,
    ) -> Result<(Vec<SearchHit>, usize), StoreError> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        let mut hits = self.read(|txn| {
            let packages = txn.open_table(PACKAGES).map_err(db)?;
            let mut hits = Vec::new();
            let mut consider = |name: &str, entry: PackageEntry| {
                if let Some(rank) = rank(&words, name, &entry.description) {
                    hits.push(SearchHit {
                        name: name.to_owned(),
                        entry,
                        rank,
                    });
                }
            };
            match candidates(txn, &words)? {
                Some(names) => {
                    for name in names.iter().filter(|n| allow(n)) {
                        if let Some(v) = packages.get(name.as_str()).map_err(db)? {
                            consider(name, decode(v.value())?);
                        }
                    }
                }
                None => {
                    for item in packages.iter().map_err(db)? {
                        let (k, v) = item.map_err(db)?;
                        if allow(k.value()) {
                            consider(k.value(), decode(v.value())?);
                        }
                    }
                }
            }
            Ok(hits)
        })?;
        hits.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.name.cmp(&b.name)));
        let total = hits.len();
        let page = hits.into_iter().skip(offset).take(limit).collect();
        Ok((page, total))
    }
}

/// The packages under the rarest trigram of any query word: every match is among them.
/// `None` when no word is long enough to have a trigram (then every package is a candidate).
fn candidates(txn: &ReadTransaction, words: &[String]) -> Result<Option<Vec<String>>, StoreError> {
    let grams = txn.open_multimap_table(SEARCH_GRAMS).map_err(db)?;
    let mut rarest: Option<(u64, &[u8])> = None;
    for gram in words.iter().flat_map(|w| word_grams(w)) {
        let n = grams.get(gram).map_err(db)?.len();
        if rarest.is_none_or(|(least, _)| n < least) {
            rarest = Some((n, gram));
        }
        if n == 0 {
            break;
        }
    }
    let Some((_, gram)) = rarest else {
        return Ok(None);
    };
    let mut names = Vec::new();
    for name in grams.get(gram).map_err(db)? {
        names.push(name.map_err(db)?.value().to_owned());
    }
    Ok(Some(names))
}

/// Lower is better; `None` when some word matches neither name nor description.
fn rank(words: &[String], name: &str, description: &str) -> Option<u8> {
    let description = description.to_lowercase();
    let mut best = u8::MAX;
    for word in words {
        let r = if name == word {
            0
        } else if name.starts_with(word.as_str()) {
            1
        } else if name.contains(word.as_str()) {
            2
        } else if description.contains(word.as_str()) {
            3
        } else {
            return None;
        };
        best = best.min(r);
    }
    Some(if words.is_empty() { 4 } else { best })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use niso_protocol::{
        Digest,
        arch::Arch,
        name::PackageName,
        record::{ManifestBody, NodeSecret},
    };
    use rand::{RngExt, SeedableRng};

    use super::{rank, *};
    use crate::{failpoint::Failpoints, store::LocalChange};

    const SEED: u64 = 0x5ea7c4;

    fn open(dir: &std::path::Path) -> Store {
        Store::open(dir, NodeSecret::from_bytes(&[7; 32]), Failpoints::default()).unwrap()
    }

    async fn publish(store: &Store, name: &str, version: &str, description: &str) {
        store
            .originate(LocalChange::Publish(ManifestBody {
                name: PackageName::new(name).unwrap(),
                version: version.parse().unwrap(),
                arch: Arch::any(),
                digest: Digest::of(format!("{name}{version}").as_bytes()),
                size: 1,
                description: description.to_owned(),
            }))
            .await
            .unwrap();
    }

    fn names(store: &Store, query: &str) -> Vec<String> {
        let (hits, total) = store.search(query, 0, usize::MAX, |_| true).unwrap();
        assert_eq!(hits.len(), total);
        hits.into_iter().map(|h| h.name).collect()
    }

    /// What a scan of every package answers: the index must change nothing but the cost.
    fn scanned(model: &BTreeMap<String, String>, query: &str) -> Vec<String> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        let mut hits: Vec<(u8, String)> = model
            .iter()
            .filter_map(|(n, d)| rank(&words, n, d).map(|r| (r, n.clone())))
            .collect();
        hits.sort();
        hits.into_iter().map(|(_, n)| n).collect()
    }

    #[tokio::test]
    async fn indexed_search_answers_like_a_scan_through_updates_deletions_and_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
        let words = ["fast", "Tool", "database", "Ünïcode", "db", "cli", "x"];
        let mut model = BTreeMap::new();
        for i in 0..120 {
            let name = format!("pkg-{:03}", rng.random_range(0..60));
            let description = format!(
                "{} {} {i}",
                words[rng.random_range(0..words.len())],
                words[rng.random_range(0..words.len())]
            );
            // A later version's description replaces the earlier one in search.
            publish(&store, &name, &format!("1.0.{i}"), &description).await;
            model.insert(name, description);
        }
        let gone = model.keys().next().unwrap().clone();
        for r in store.versions(&gone).unwrap() {
            store
                .originate(LocalChange::Delete {
                    name: PackageName::new(&gone).unwrap(),
                    version: r.version.clone(),
                    arch: None,
                })
                .await
                .unwrap();
        }
        model.remove(&gone);
        let queries = [
            "pkg",
            "pkg-01",
            "pkg-059",
            "fast",
            "FAST tool",
            "ünïcode",
            "db",
            "x",
            "database cli",
            "nothing-like-this",
            "g-0 tool",
            "3",
        ];
        for q in queries {
            assert_eq!(
                names(&store, q),
                scanned(&model, q),
                "seed {SEED:#x}, query {q:?}"
            );
        }
        assert!(
            names(&store, &gone).is_empty(),
            "a deleted package is not found"
        );
        // A data dir from before the index: rebuilt on open, with the same answers.
        drop(store);
        {
            let db = crate::store::raw_database(dir.path());
            let txn = db.begin_write().unwrap();
            assert!(txn.delete_multimap_table(SEARCH_GRAMS).unwrap());
            txn.commit().unwrap();
        }
        let store = open(dir.path());
        for q in queries {
            assert_eq!(
                names(&store, q),
                scanned(&model, q),
                "seed {SEED:#x}, query {q:?}"
            );
        }
    }

    #[test]
    fn ranks() {
        let w = |s: &str| vec![s.to_owned()];
        assert_eq!(
            rank(&w("postgres"), "postgres", "Official PostgreSQL package"),
            Some(0)
        );
        assert_eq!(rank(&w("postgres"), "postgres-tools", ""), Some(1));
        assert_eq!(rank(&w("sql"), "mariadb", "SQL database"), Some(3));
        assert_eq!(rank(&w("redis"), "mariadb", "SQL database"), None);
        let both = vec!["official".to_owned(), "maria".to_owned()];
        assert_eq!(rank(&both, "mariadb", "Official MariaDB package"), Some(1));
    }
}
