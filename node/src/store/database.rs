//! The database handle shared by every reader and the writer, and how it is reopened after
//! a failed write.
//!
//! redb latches its first I/O error: from then on every transaction fails until the
//! `Database` is dropped and opened again, which also rolls back to the last durable commit.
//! So after a failed commit (a full disk, usually) the writer reopens the file before its next
//! batch. Readers take the current `Database` per transaction; while it is being swapped they
//! get [`StoreError::Unavailable`] for a moment instead of a latched error forever.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use redb::{Database, backends::FileBackend};

use super::{
    durability::{Durability, UnflushedFile},
    error::{StoreError, db},
};

/// How long a reopen waits for readers still holding the old handle.
const DRAIN: Duration = Duration::from_secs(2);
const DRAIN_POLL: Duration = Duration::from_millis(5);

pub(crate) struct Db {
    path: PathBuf,
    /// Bytes of pages redb may cache (its default, 1 GiB, made memory grow with the catalog).
    cache_bytes: usize,
    durability: Durability,
    current: RwLock<Option<Arc<Database>>>,
}

impl Db {
    pub(crate) fn open(
        path: PathBuf,
        cache_bytes: usize,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        let database = create(&path, cache_bytes, durability)?;
        Ok(Self {
            path,
            cache_bytes,
            durability,
            current: RwLock::new(Some(Arc::new(database))),
        })
    }

    /// The database to run one transaction on.
    pub(crate) fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StoreError::Unavailable)
    }

    /// Drops the current handle once no reader holds it and opens the file again. Blocking:
    /// only the writer thread calls it. On failure the old handle stays, to be retried.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let Some(mut old) = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return self.open_again();
        };
        let deadline = Instant::now() + DRAIN;
        // The file lock is held until the last `Arc` goes, so wait out readers in flight.
        loop {
            match Arc::try_unwrap(old) {
                Ok(database) => {
                    drop(database);
                    break;
                }
                Err(still_shared) if Instant::now() < deadline => {
                    old = still_shared;
                    std::thread::sleep(DRAIN_POLL);
                }
                Err(still_shared) => {
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(still_shared);
                    return Err(StoreError::Unavailable);
                }
            }
        }
        self.open_again()
    }

    fn open_again(&self) -> Result<(), StoreError> {
        let database = create(&self.path, self.cache_bytes, self.durability)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(database));
        tracing::info!(path = %self.path.display(), "database reopened");
        Ok(())
    }
}

fn create(
    path: &std::path::Path,
    cache_bytes: usize,
    durability: Durability,
) -> Result<Database, StoreError> {
    // Opened as redb's own `Builder::create` opens it, so both backends see the same file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| db(redb::Error::Io(e)))?;
    let mut builder = Database::builder();
    builder.set_cache_size(cache_bytes);
    match durability {
        Durability::Flushed => builder.create_with_backend(FileBackend::new(file).map_err(db)?),
        Durability::Cached => builder.create_with_backend(UnflushedFile::new(file).map_err(db)?),
    }
    .map_err(db)
}
