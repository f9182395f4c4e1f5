//! A node's storage: one redb database for metadata and a directory of content-addressed blob
//! files, behind one batching writer.

mod apply;
mod blob_store;
mod catalog;
mod entries;
mod error;
mod gc;
mod keys;
mod search;
mod tables;
mod uploads;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use niso_protocol::record::{NodeSecret, OriginKey, Record};
use redb::{Database, ReadTransaction, ReadableDatabase};

pub use apply::{Applied, LocalChange};
pub use blob_store::{BlobStore, Pin, hash_file};
pub use catalog::{RecordFilter, VersionRow};
pub use entries::{KeyEntry, TagEntry, UploadEntry, VersionEntry};
pub use error::{ChangeError, StoreError};
pub use gc::GcOutcome;
pub use search::SearchHit;

use crate::failpoint::Failpoints;
use error::db;
use writer::Writer;

/// Database file name inside the data dir.
pub const DB_FILE: &str = "niso.redb";

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: Writer,
    blobs: BlobStore,
    secret: NodeSecret,
    uploads_dir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("origin", &self.secret.origin())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `data_dir`.
    pub fn open(
        data_dir: &Path,
        secret: NodeSecret,
        failpoints: Failpoints,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let uploads_dir = data_dir.join("uploads");
        std::fs::create_dir_all(&uploads_dir)?;
        let db = Database::create(data_dir.join(DB_FILE)).map_err(db)?;
        create_tables(&db)?;
        let db = Arc::new(db);
        let writer = Writer::spawn(db.clone(), failpoints)?;
        Ok(Self {
            db,
            writer,
            blobs: BlobStore::open(data_dir)?,
            secret,
            uploads_dir,
        })
    }

    pub fn origin(&self) -> OriginKey {
        self.secret.origin()
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        f(&txn)
    }

    /// Signs and applies a change made on this node. Returns the new records.
    pub async fn originate(&self, change: LocalChange) -> Result<Vec<Record>, ChangeError> {
        let secret = self.secret.clone();
        self.writer
            .write(move |txn| apply::originate(txn, &secret, change))
            .await
    }

    /// Verifies and applies records from elsewhere in one transaction, in order. A record the
    /// log refuses (conflict, rollback, bad signature) is reported and skipped; a storage
    /// failure undoes the whole batch.
    pub async fn apply_all(
        &self,
        records: Vec<Record>,
    ) -> Result<Vec<Result<Applied, ChangeError>>, StoreError> {
        self.writer
            .write(move |txn| {
                let mut out = Vec::with_capacity(records.len());
                for record in &records {
                    let outcome = match record.verify() {
                        Err(e) => Err(ChangeError::from(e)),
                        Ok(()) => apply::apply(txn, record),
                    };
                    match outcome {
                        Err(ChangeError::Store(e)) => return Err(e),
                        other => out.push(other),
                    }
                }
                Ok::<_, StoreError>(out)
            })
            .await
    }

    /// Verifies and applies a record that came from elsewhere.
    pub async fn apply(&self, record: Record) -> Result<Applied, ChangeError> {
        record.verify()?;
        self.writer
            .write(move |txn| apply::apply(txn, &record))
            .await
    }
}

fn create_tables(database: &Database) -> Result<(), StoreError> {
    use tables::*;
    let txn = database.begin_write().map_err(db)?;
    txn.open_table(RECORDS).map_err(db)?;
    txn.open_table(LOG).map_err(db)?;
    txn.open_table(ORIGINS).map_err(db)?;
    txn.open_table(VERSIONS).map_err(db)?;
    txn.open_table(TAGS).map_err(db)?;
    txn.open_table(TOMBSTONES).map_err(db)?;
    txn.open_table(PACKAGES).map_err(db)?;
    txn.open_table(KEYS).map_err(db)?;
    txn.open_table(KEY_HASHES).map_err(db)?;
    txn.open_table(UPLOADS).map_err(db)?;
    txn.commit().map_err(db)?;
    Ok(())
}
