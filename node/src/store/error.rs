//! Errors of the storage layer. redb's own error types stay inside: callers see these.

use niso_protocol::record::RecordError;

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[source] Source),
    #[error("blob store I/O failed")]
    Io(#[from] std::io::Error),
    #[error("stored value is corrupt")]
    Corrupt(#[source] Source),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("the database could not start a transaction")]
    Unavailable,
}

/// Wraps any redb error without exposing its type.
pub(crate) fn db<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Database(Box::new(e))
}

pub(crate) fn corrupt<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Corrupt(Box::new(e))
}

/// Why a change (local or replicated) was refused. These are expected outcomes, not failures
/// of the node.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// A tag, or a tombstone without a live version, for a package this node has never seen
    /// published.
    #[error("{name} is not a package on this node")]
    UnknownPackage { name: String },
    #[error("{name} {version} ({arch}) is already published with different contents ({existing})")]
    Conflict {
        name: String,
        version: String,
        arch: String,
        existing: String,
    },
    #[error(
        "{name} {version} ({arch}) was deleted; published versions are never reused, publish a new version"
    )]
    Deleted {
        name: String,
        version: String,
        arch: String,
    },
    #[error(
        "tag `{tag}` of {name} is already at sequence {current}; refusing older sequence {offered}"
    )]
    TagRollback {
        name: String,
        tag: String,
        current: u64,
        offered: u64,
    },
    #[error("origin {origin} reused sequence number {seq} for a different record")]
    Equivocation { origin: String, seq: u64 },
    /// A record from an origin other than the one that holds the package name (or published
    /// the version) tried to change it.
    #[error(
        "{name} belongs to origin {owner}; origin {offered} may not {action} it (publish, tag and delete on the node that owns the package)"
    )]
    NotOwner {
        name: String,
        action: &'static str,
        owner: String,
        offered: String,
    },
    /// A second spelling of a name that differs only in runs of `-`, `_`, `.`.
    #[error(
        "package name {name} is taken: {existing} already exists, and names that differ only in `-`, `_` and `.` are the same name"
    )]
    NameTaken { name: String, existing: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("invalid record")]
    Invalid(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChangeError {
    /// Whether a peer or bundle that sent this record was attempting something a well-behaved
    /// origin never does (worth a security log line), as opposed to a record that merely
    /// arrived early or late.
    pub fn is_hostile(&self) -> bool {
        matches!(
            self,
            Self::Conflict { .. }
                | Self::TagRollback { .. }
                | Self::Equivocation { .. }
                | Self::NotOwner { .. }
                | Self::NameTaken { .. }
                | Self::Invalid(_)
        )
    }

    /// The same refusal without what a caller who may not pull the package must not learn
    /// (the digest already published under a version).
    pub fn redacted(self) -> Self {
        match self {
            Self::Conflict {
                name,
                version,
                arch,
                ..
            } => Self::Conflict {
                name,
                version,
                arch,
                existing: "not shown: this key may not pull the package".to_owned(),
            },
            other => other,
        }
    }
}
