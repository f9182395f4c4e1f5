//! Package search over names and descriptions, ranked: exact name, name prefix, name
//! substring, then description.

use redb::ReadableTable;

use super::{
    Store,
    entries::{PackageEntry, decode},
    error::{StoreError, db},
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
    pub fn search(
        &self,
        query: &str,
        offset: usize,
        limit: usize,
        allow: impl Fn(&str) -> bool,
    ) -> Result<(Vec<SearchHit>, usize), StoreError> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        let mut hits = self.read(|txn| {
            let t = txn.open_table(PACKAGES).map_err(db)?;
            let mut hits = Vec::new();
            for item in t.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let name = k.value();
                if !allow(name) {
                    continue;
                }
                let entry: PackageEntry = decode(v.value())?;
                if let Some(rank) = rank(&words, name, &entry.description) {
                    hits.push(SearchHit {
                        name: name.to_owned(),
                        entry,
                        rank,
                    });
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
    use super::rank;

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
