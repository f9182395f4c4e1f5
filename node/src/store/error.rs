//! Errors of the storage layer. redb's own error types stay inside: callers see these.

use niso_protocol::record::RecordError;

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[source] Source),
    /// The filesystem under the data dir has no room (or the quota is used up). Nothing of
    /// the failed write is kept; it works again once space is freed.
    #[error("the disk is full")]
    NoSpace(#[source] std::io::Error),
    #[error("blob store I/O failed")]
    Io(#[source] std::io::Error),
    #[error("stored value is corrupt")]
    Corrupt(#[source] Source),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("the database could not start a transaction")]
    Unavailable,
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if is_no_space(&e) {
            Self::NoSpace(e)
        } else {
            Self::Io(e)
        }
    }
}

/// Whether `e` says the filesystem (or the user's quota) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// Wraps any redb error without exposing its type; a full disk becomes [`StoreError::NoSpace`].
pub(crate) fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    match e.into() {
        redb::Error::Io(io) if is_no_space(&io) => StoreError::NoSpace(io),
        other => StoreError::Database(Box::new(other)),
    }
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
