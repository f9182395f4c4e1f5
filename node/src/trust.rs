//! Trust and sharing: which records this node takes in (`[[replicate]]`) and what it gives out
//! to whom (`[[share]]`). Private by default: with no rules nothing comes in and nothing,
//! not even a package name, goes out.

use std::collections::BTreeSet;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::{BlobMode, ReplicateRule, ShareRule};

/// Matches "any peer" or one peer id (base58 text, as libp2p prints it).
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// from the beginning, since records it could not see before may now be visible. It goes
    /// on the wire, so it is [`rules_fingerprint`]'s stable encoding, not a std hasher.
    pub fn share_fingerprint(&self, peer: &str) -> u64 {
        rules_fingerprint(
            SHARE_CONTEXT,
            self.share.iter().filter(|r| r.peer.matches(peer)),
        )
    }

    /// A summary of the replicate rules: when it changes, this node must sync from the
    /// beginning, since records it refused before may now be wanted. Stored in each peer's
    /// sync cursor, so it must not drift between builds.
    pub fn replicate_fingerprint(&self) -> u64 {
        rules_fingerprint(REPLICATE_CONTEXT, self.replicate.iter())
    }
}

/// blake3 key-derivation contexts, so a share and a replicate fingerprint of the same rules
/// differ, and a future encoding can take a new context.
const SHARE_CONTEXT: &str = "niso share rules fingerprint v1";
const REPLICATE_CONTEXT: &str = "niso replicate rules fingerprint v1";

/// The first 8 bytes, little-endian, of blake3 in derive-key mode under `context`, over:
/// the rule count, then each rule as its peer (`*` or the peer id text) and its glob count
/// and globs, every count a u64 LE and every string a u64 LE byte length then its bytes.
/// Rules are sorted by (peer, globs) and globs within a rule sorted, both deduplicated,
/// because which records a set of rules lets through depends on neither order nor
/// repetition; a reordered config must not force every peer to sync from the start. The
/// blob mode is left out: it changes how bytes are fetched, not which records are wanted.
fn rules_fingerprint<'a>(context: &str, rules: impl Iterator<Item = &'a Rule>) -> u64 {
    let canonical: BTreeSet<(&str, BTreeSet<&str>)> = rules
        .map(|r| {
            let peer = match &r.peer {
                PeerMatch::Any => "*",
                PeerMatch::One(p) => p.as_str(),
            };
            (peer, r.globs.iter().map(String::as_str).collect())
        })
        .collect();
    let mut h = blake3::Hasher::new_derive_key(context);
    let count = |h: &mut blake3::Hasher, n: usize| {
        h.update(&(n as u64).to_le_bytes());
    };
    let string = |h: &mut blake3::Hasher, s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    count(&mut h, canonical.len());
    for (peer, globs) in &canonical {
        string(&mut h, peer);
        count(&mut h, globs.len());
        for g in globs {
            string(&mut h, g);
        }
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
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

    const GOLDEN_SHARE_A: u64 = 0xec2613e6dd944056;
    const GOLDEN_SHARE_B: u64 = 0xcb161827c3bf2bdf;
    const GOLDEN_REPLICATE: u64 = 0x48e48d927a175c0a;
    const GOLDEN_EMPTY_REPLICATE: u64 = 0xb73182f8759633c8;

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

    fn share(rules: &[(&str, &[&str])]) -> Trust {
        let rules: Vec<ShareRule> = rules
            .iter()
            .map(|(to, packages)| ShareRule {
                to: (*to).into(),
                packages: packages.iter().map(|p| (*p).into()).collect(),
            })
            .collect();
        Trust::new(&[], &rules).unwrap()
    }

    #[test]
    fn fingerprints_are_pinned() {
        // These go on the wire and into sync cursors: a change here makes every peer sync
        // from the start, so it must be deliberate (and take a new context).
        let t = trust();
        assert_eq!(t.share_fingerprint(A), GOLDEN_SHARE_A);
        assert_eq!(t.share_fingerprint(B), GOLDEN_SHARE_B);
        assert_eq!(t.replicate_fingerprint(), GOLDEN_REPLICATE);
        assert_eq!(
            Trust::default().replicate_fingerprint(),
            GOLDEN_EMPTY_REPLICATE
        );
    }

    #[test]
    fn fingerprint_is_the_documented_encoding() {
        fn count(buf: &mut Vec<u8>, n: u64) {
            buf.extend_from_slice(&n.to_le_bytes());
        }
        fn string(buf: &mut Vec<u8>, s: &str) {
            count(buf, s.len() as u64);
            buf.extend_from_slice(s.as_bytes());
        }
        // B sees two rules; `*` sorts before a peer id.
        let mut canonical = Vec::new();
        count(&mut canonical, 2);
        string(&mut canonical, "*");
        count(&mut canonical, 1);
        string(&mut canonical, "public-*");
        string(&mut canonical, B);
        count(&mut canonical, 1);
        string(&mut canonical, "secret-*");
        let hash = blake3::derive_key("niso share rules fingerprint v1", &canonical);
        let want = u64::from_le_bytes(hash[..8].try_into().unwrap());
        assert_eq!(trust().share_fingerprint(B), want);
    }

    #[test]
    fn fingerprint_ignores_rule_and_glob_order_but_not_content() {
        let one = share(&[(A, &["a-*", "b-*"]), ("*", &["pub-*"])]);
        let reordered = share(&[("*", &["pub-*"]), (A, &["b-*", "a-*"])]);
        let repeated = share(&[
            ("*", &["pub-*"]),
            (A, &["b-*", "a-*", "a-*"]),
            ("*", &["pub-*"]),
        ]);
        assert_eq!(one.share_fingerprint(A), reordered.share_fingerprint(A));
        assert_eq!(one.share_fingerprint(A), repeated.share_fingerprint(A));

        let wider = share(&[(A, &["a-*", "b-*", "c-*"]), ("*", &["pub-*"])]);
        assert_ne!(one.share_fingerprint(A), wider.share_fingerprint(A));
        // Moving a glob between rules of different peers changes what each peer sees.
        let moved = share(&[(A, &["a-*"]), ("*", &["pub-*", "b-*"])]);
        assert_ne!(one.share_fingerprint(A), moved.share_fingerprint(A));
        // Rules for other peers do not touch A's fingerprint.
        let plus_b = share(&[(A, &["a-*", "b-*"]), ("*", &["pub-*"]), (B, &["x-*"])]);
        assert_eq!(one.share_fingerprint(A), plus_b.share_fingerprint(A));
        // The length prefixes keep ["ab"] and ["a", "b"] apart.
        assert_ne!(
            share(&[(A, &["ab"])]).share_fingerprint(A),
            share(&[(A, &["a", "b"])]).share_fingerprint(A)
        );
    }

    #[test]
    fn share_and_replicate_fingerprints_of_the_same_rules_differ() {
        let t = Trust::new(
            &[ReplicateRule {
                from: "*".into(),
                packages: vec!["x".into()],
                blobs: BlobMode::Eager,
            }],
            &[ShareRule {
                to: "*".into(),
                packages: vec!["x".into()],
            }],
        )
        .unwrap();
        assert_ne!(t.share_fingerprint(A), t.replicate_fingerprint());
    }
}
