//! Watching the cluster: when each node first holds each change, and whether any tag ever
//! moves backwards on any node.

use std::collections::HashMap;

use niso_protocol::{Arch, Digest};
use semver::Version;

use crate::cluster::Cluster;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    /// A published version, held once its bytes are verified and stored.
    Version {
        name: String,
        version: String,
        digest: Digest,
        size: u64,
    },
    /// A tag move, held once the node's tag is at this move or a later one.
    Tag {
        name: String,
        tag: String,
        version: String,
        tag_seq: u64,
    },
    /// A deletion, held once the node has the tombstone.
    Deletion { name: String, version: String },
}

#[derive(Debug, Clone)]
pub struct Item {
    pub kind: ItemKind,
    pub origin: usize,
    pub package: String,
    /// Seconds into the run when the origin held it.
    pub created: f64,
    /// Nodes that should come to hold it.
    pub expected: Vec<usize>,
    /// When each node first held it.
    pub held_at: Vec<Option<f64>>,
    /// Nodes that replicate this package lazily: for them the record is what counts.
    pub lazy: Vec<bool>,
}

impl Item {
    pub fn label(&self) -> String {
        match &self.kind {
            ItemKind::Version { name, version, .. } => format!("version {name} {version}"),
            ItemKind::Tag {
                name, tag, version, ..
            } => format!("tag {name}:{tag} -> {version}"),
            ItemKind::Deletion { name, version } => format!("deletion {name} {version}"),
        }
    }

    /// Delays (from creation) of the expected nodes that hold it.
    pub fn delays(&self) -> Vec<f64> {
        self.expected
            .iter()
            .filter_map(|&n| self.held_at[n].map(|t| (t - self.created).max(0.0)))
            .collect()
    }

    pub fn converged(&self) -> bool {
        self.expected.iter().all(|&n| self.held_at[n].is_some())
    }
}

#[derive(Debug, Default)]
pub struct Observer {
    pub items: Vec<Item>,
    /// Highest tag sequence seen per (node, package, tag).
    tag_seqs: HashMap<(usize, String, String), u64>,
    pub rollbacks: Vec<String>,
}

pub fn holds(cluster: &Cluster, node: usize, kind: &ItemKind, lazy: bool) -> bool {
    let Some(store) = cluster.store(node) else {
        return false;
    };
    match kind {
        ItemKind::Version {
            name,
            version,
            digest,
            ..
        } => {
            let Ok(v) = Version::parse(version) else {
                return false;
            };
            matches!(store.version(name, &v, &Arch::any()), Ok(Some(e)) if e.digest == *digest.as_bytes())
                && (lazy || store.blobs().contains(digest))
        }
        ItemKind::Tag {
            name, tag, tag_seq, ..
        } => {
            matches!(store.tag_entry(name, tag), Ok(Some(e)) if e.tag_seq >= *tag_seq)
        }
        ItemKind::Deletion { name, version } => {
            let Ok(v) = Version::parse(version) else {
                return false;
            };
            store.is_deleted(name, &v, &Arch::any()).unwrap_or(false)
        }
    }
}

impl Observer {
    pub fn add(&mut self, item: Item) {
        self.items.push(item);
    }

    /// Looks at every node once.
    pub fn sample(&mut self, cluster: &Cluster, now: f64) {
        for item in &mut self.items {
            for n in 0..cluster.nodes.len() {
                if item.held_at[n].is_none() && holds(cluster, n, &item.kind, item.lazy[n]) {
                    item.held_at[n] = Some(now);
                }
            }
        }
        let tags: Vec<(String, String)> = self
            .items
            .iter()
            .filter_map(|i| match &i.kind {
                ItemKind::Tag { name, tag, .. } => Some((name.clone(), tag.clone())),
                _ => None,
            })
            .collect();
        for (name, tag) in tags {
            for n in 0..cluster.nodes.len() {
                let Some(store) = cluster.store(n) else {
                    continue;
                };
                if let Ok(Some(e)) = store.tag_entry(&name, &tag) {
                    let seen = self
                        .tag_seqs
                        .entry((n, name.clone(), tag.clone()))
                        .or_default();
                    if e.tag_seq < *seen {
                        self.rollbacks.push(format!(
                            "node {n}: tag {name}:{tag} went from sequence {seen} back to {}",
                            e.tag_seq
                        ));
                    }
                    *seen = (*seen).max(e.tag_seq);
                }
            }
        }
    }

    pub fn all_converged(&self) -> bool {
        self.items.iter().all(Item::converged)
    }

    /// Nodes holding each version item over time, for the convergence plot.
    pub fn curves(&self) -> Vec<(String, Vec<f64>, usize)> {
        self.items
            .iter()
            .filter(|i| matches!(i.kind, ItemKind::Version { .. }))
            .map(|i| {
                let mut times: Vec<f64> = i.expected.iter().filter_map(|&n| i.held_at[n]).collect();
                times.sort_by(f64::total_cmp);
                (i.label(), times, i.expected.len())
            })
            .collect()
    }
}
