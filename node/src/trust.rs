//! Trust and sharing: which records this node takes in (`[[replicate]]`) and what it gives out
//! to whom (`[[share]]`). Private by default: with no rules nothing comes in and nothing,
//! not even a package name, goes out.

use std::hash::{Hash, Hasher};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::{BlobMode, ReplicateRule, ShareRule};

/// Matches "any peer" or one peer id (base58 text, as libp2p prints it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PeerMatch {
    Any,
    One(String),
}

impl PeerMatch {
    fn matches(&self, peer: &str) -> bool {
        match self {
            Self::Any => true,
            Self::One(p) => p == peer,
        }
    }
}

#[derive(Clone, Debug)]
struct Rule {
    peer: PeerMatch,
    globs: Vec<String>,
    set: GlobSet,
    blobs: BlobMode,
}

#[derive(Clone, Debug, Default)]
pub struct Trust {
    replicate: Vec<Rule>,
    share: Vec<Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("`{0}` is neither `*` nor a peer id")]
    BadPeer(String),
    #[error("package glob `{glob}` is invalid: {reason}")]
    BadGlob { glob: String, reason: String },
    #[error("a rule needs at least one package glob")]
    NoPackages,
}

fn peer_match(s: &str) -> Result<PeerMatch, TrustError> {
    if s == "*" {
        return Ok(PeerMatch::Any);
    }
    s.parse::<libp2p_identity::PeerId>()
        .map(|p| PeerMatch::One(p.to_string()))
        .map_err(|_| TrustError::BadPeer(s.to_owned()))
}

fn compile(peer: &str, packages: &[String], blobs: BlobMode) -> Result<Rule, TrustError> {
    if packages.is_empty() {
        return Err(TrustError::NoPackages);
    }
    let mut b = GlobSetBuilder::new();
    for g in packages {
        b.add(Glob::new(g).map_err(|e| TrustError::BadGlob {
            glob: g.clone(),
            reason: e.kind().to_string(),
        })?);
    }
    Ok(Rule {
        peer: peer_match(peer)?,
        globs: packages.to_vec(),
        set: b.build().map_err(|e| TrustError::BadGlob {
            glob: packages.join(","),
            reason: e.kind().to_string(),
        })?,
        blobs,
    })
}

impl Trust {
    pub fn new(replicate: &[ReplicateRule], share: &[ShareRule]) -> Result<Self, TrustError> {
        Ok(Self {
            replicate: replicate
                .iter()
                .map(|r| compile(&r.from, &r.packages, r.blobs))
                .collect::<Result<_, _>>()?,
            share: share
                .iter()
                .map(|r| compile(&r.to, &r.packages, BlobMode::Eager))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether to take in a record of `package` signed by `origin`, and how to fetch its bytes.
    /// The first matching rule decides.
    pub fn accepts(&self, origin: &str, package: &str) -> Option<BlobMode> {
        self.replicate
            .iter()
            .find(|r| r.peer.matches(origin) && r.set.is_match(package))
            .map(|r| r.blobs)
    }

    /// Whether `package` may be named or sent to `peer`.
    pub fn shares_with(&self, peer: &str, package: &str) -> bool {
        self.share
            .iter()
            .any(|r| r.peer.matches(peer) && r.set.is_match(package))
    }

    /// Whether `package` is shared with everyone, so it may be broadcast.
    pub fn shares_publicly(&self, package: &str) -> bool {
        self.share
            .iter()
            .any(|r| r.peer == PeerMatch::Any && r.set.is_match(package))
    }

    /// Whether any rule would take records from anyone: without one, there is nothing to sync.
    pub fn replicates_anything(&self) -> bool {
        !self.replicate.is_empty()
    }

    /// What this node wants, as `(origin or *, globs)`, sent with sync requests so peers skip
    /// what would be refused anyway.
    pub fn wants(&self) -> Vec<(String, Vec<String>)> {
        self.replicate
            .iter()
            .map(|r| {
                let peer = match &r.peer {
                    PeerMatch::Any => "*".to_owned(),
                    PeerMatch::One(p) => p.clone(),
                };
                (peer, r.globs.clone())
            })
            .collect()
    }

    /// A summary of the share rules that apply to `peer`: when it changes, the peer must sync
    /// from the beginning, since records it could not see before may now be visible.
    pub fn share_fingerprint(&self, peer: &str) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for r in self.share.iter().filter(|r| r.peer.matches(peer)) {
            r.peer.hash(&mut h);
            r.globs.hash(&mut h);
        }
        h.finish()
    }

    /// A summary of the replicate rules: when it changes, this node must sync from the
    /// beginning, since records it refused before may now be wanted.
    pub fn replicate_fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for r in &self.replicate {
            r.peer.hash(&mut h);
            r.globs.hash(&mut h);
        }
        h.finish()
    }
}

/// Filters by a peer's stated wants (the same shape as [`Trust::wants`]).
pub fn wanted(wants: &[(String, Vec<String>)], origin: &str, package: &str) -> bool {
    wants.iter().any(|(peer, globs)| {
        (peer == "*" || peer == origin)
            && globs
                .iter()
                .any(|g| Glob::new(g).is_ok_and(|g| g.compile_matcher().is_match(package)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    const B: &str = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE";

    fn trust() -> Trust {
        Trust::new(
            &[ReplicateRule {
                from: A.into(),
                packages: vec!["acme-*".into()],
                blobs: BlobMode::Lazy,
            }],
            &[
                ShareRule {
                    to: "*".into(),
                    packages: vec!["public-*".into()],
                },
                ShareRule {
                    to: B.into(),
                    packages: vec!["secret-*".into()],
                },
            ],
        )
        .unwrap()
    }

    #[test]
    fn private_by_default() {
        let t = Trust::default();
        assert_eq!(t.accepts(A, "anything"), None);
        assert!(!t.shares_with(B, "anything"));
        assert!(!t.replicates_anything());
    }

    #[test]
    fn rules_match_origin_peer_and_package() {
        let t = trust();
        assert_eq!(t.accepts(A, "acme-api"), Some(BlobMode::Lazy));
        assert_eq!(t.accepts(B, "acme-api"), None);
        assert_eq!(t.accepts(A, "other"), None);
        assert!(t.shares_with(B, "secret-x"));
        assert!(t.shares_with(A, "public-x"));
        assert!(!t.shares_with(A, "secret-x"));
        assert!(t.shares_publicly("public-x"));
        assert!(!t.shares_publicly("secret-x"));
        assert_ne!(t.share_fingerprint(A), t.share_fingerprint(B));
        assert!(wanted(&t.wants(), A, "acme-1"));
        assert!(!wanted(&t.wants(), B, "acme-1"));
    }

    #[test]
    fn bad_rules_are_errors() {
        let bad = Trust::new(
            &[ReplicateRule {
                from: "not-a-peer".into(),
                packages: vec!["*".into()],
                blobs: BlobMode::Eager,
            }],
            &[],
        );
        assert!(matches!(bad, Err(TrustError::BadPeer(_))));
    }
}
