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
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("invalid record")]
    Invalid(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
