//! A node's storage: one redb database for metadata and a directory of content-addressed blob
//! files, behind one batching writer.

mod apply;
mod authority;
mod blob_store;
mod catalog;
mod database;
mod durability;
mod entries;
mod error;
mod gc;
mod health;
mod keys;
mod migrate;
mod search;
mod search_index;
mod tables;
mod uploads;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use niso_protocol::record::{ManifestBody, NodeSecret, OriginKey, Record};
use redb::{Database, ReadTransaction, ReadableDatabase};

pub use apply::{Applied, LocalChange};
pub use blob_store::{BlobStore, Pin, hash_file};
pub use catalog::{RecordFilter, VersionRow};
pub use durability::Durability;
pub use entries::{KeyEntry, PeerSync, TagEntry, UploadEntry, VersionEntry};
pub use error::{ChangeError, StoreError, is_no_space};
pub use gc::GcOutcome;
pub use health::{WriteHealth, WritePart};
pub use search::SearchHit;
pub use uploads::OpenUploadError;

use crate::failpoint::Failpoints;
use database::Db;
use error::db;
use writer::Writer;

/// Size of the file a write probe writes: enough to need fresh blocks on a full disk.
const PROBE_BYTES: usize = 64 * 1024;

/// Database file name inside the data dir.
pub const DB_FILE: &str = "niso.redb";
/// Database pages kept in memory unless `[limits] db_cache_bytes` says otherwise: enough for
/// the upper levels of every table's tree at 100k versions, so memory stays flat in catalog
/// size while reads stay in memory where it matters. 16 MiB left a serving node at the
/// 64 MiB target in a peer's catch-up; 12 MiB took 4-5 MiB off with reads as fast.
pub const DEFAULT_CACHE_BYTES: u64 = 12 * 1024 * 1024;

#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
    writer: Writer,
    health: WriteHealth,
    blobs: BlobStore,
    secret: NodeSecret,
    uploads_dir: PathBuf,
    /// The last log position; watchers learn of every change to the log.
    log_head: Arc<tokio::sync::watch::Sender<u64>>,
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
        Self::open_with_cache(
            data_dir,
            secret,
            failpoints,
            DEFAULT_CACHE_BYTES,
            Durability::Flushed,
        )
    }

    /// [`Store::open`] with at most `cache_bytes` of database pages cached in memory, its
    /// commits as durable as `durability` says.
    pub fn open_with_cache(
        data_dir: &Path,
        secret: NodeSecret,
        failpoints: Failpoints,
        cache_bytes: u64,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let uploads_dir = data_dir.join("uploads");
        std::fs::create_dir_all(&uploads_dir)?;
        let cache = usize::try_from(cache_bytes).unwrap_or(usize::MAX);
        let db = Arc::new(Db::open(data_dir.join(DB_FILE), cache, durability)?);
        create_tables(&*db.get()?)?;
        let health = WriteHealth::default();
        let writer = Writer::spawn(db.clone(), health.clone(), failpoints)?;
        let head = last_log_position(&*db.get()?)?;
        Ok(Self {
            db,
            writer,
            health,
            blobs: BlobStore::open(data_dir, durability)?,
            secret,
            uploads_dir,
            log_head: Arc::new(tokio::sync::watch::channel(head).0),
        })
    }

    pub fn origin(&self) -> OriginKey {
        self.secret.origin()
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Whether writes are failing now, and why.
    pub fn write_health(&self) -> &WriteHealth {
        &self.health
    }

    /// After a write failure: writes a small file where blobs go, and sends an empty durable
    /// commit through the writer (which reopens the database first). Each that works clears
    /// its part of the failure.
    pub async fn probe_writes(&self) -> Result<(), StoreError> {
        let path = self.blobs.temp_path("probe")?;
        let written = crate::offload::spawn(move || {
            let result = std::fs::File::create(&path).and_then(|mut file| {
                std::io::Write::write_all(&mut file, &[0u8; PROBE_BYTES])?;
                file.sync_all()
            });
            let _ = std::fs::remove_file(&path);
            result
        })
        .await
        .map_err(|_| StoreError::Unavailable)?;
        match written {
            Ok(()) => self.health.succeeded(WritePart::Files),
            Err(e) => {
                let e = StoreError::from(e);
                self.health.failed(WritePart::Files, &e);
                return Err(e);
            }
        }
        self.writer.write(|_| Ok::<_, StoreError>(())).await
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.get()?.begin_read().map_err(db)?;
        f(&txn)
    }

    /// A receiver that sees the log position move whenever records are added.
    pub fn watch_log(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log_head.subscribe()
    }

    pub fn log_position(&self) -> u64 {
        *self.log_head.borrow()
    }

    fn log_changed(&self) {
        if let Ok(head) = self.db.get().and_then(|d| last_log_position(&d)) {
            self.log_head.send_if_modified(|h| {
                let moved = *h != head;
                *h = head;
                moved
            });
        }
    }

    /// Signs and applies a change made on this node. Returns the new records.
    pub async fn originate(&self, change: LocalChange) -> Result<Vec<Record>, ChangeError> {
        let secret = self.secret.clone();
        let at_ms = crate::clock::now_ms();
        let records = self
            .writer
            .write(move |txn| apply::originate(txn, &secret, change, at_ms))
            .await?;
        self.log_changed();
        Ok(records)
    }

    /// How far this node has pulled from `peer`.
    pub fn peer_sync(&self, peer: &str) -> Result<PeerSync, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(tables::PEER_SYNC).map_err(db)?;
            t.get(peer)
                .map_err(db)?
                .map(|v| entries::decode(v.value()))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    pub async fn set_peer_sync(&self, peer: String, sync: PeerSync) -> Result<(), StoreError> {
        self.writer
            .write(move |txn| {
                let mut t = txn.open_table(tables::PEER_SYNC).map_err(db)?;
                t.insert(peer.as_str(), entries::encode(&sync)?.as_slice())
                    .map_err(db)?;
                Ok::<_, StoreError>(())
            })
            .await
    }

    /// Applies records from elsewhere, already verified by the intake, in one transaction, in
    /// order. A record the rules refuse is reported and skipped; a storage failure undoes the
    /// whole batch.
    pub async fn apply_batch(
        &self,
        records: Vec<Record>,
    ) -> Result<Vec<Result<Applied, ChangeError>>, StoreError> {
        self.writer
            .write(move |txn| {
                apply::LogTables::with(txn, |tables| {
                    let mut out = Vec::with_capacity(records.len());
                    for record in &records {
                        match tables.apply(record) {
                            Err(ChangeError::Store(e)) => return Err(e),
                            other => out.push(other),
                        }
                    }
                    Ok::<_, StoreError>(out)
                })
            })
            .await
            .inspect(|_| self.log_changed())
    }

    /// Verifies and applies one record from elsewhere (tests and tools; nodes take records in
    /// through `intake::admit`).
    pub async fn apply(&self, record: Record) -> Result<Applied, ChangeError> {
        record.verify()?;
        let mut results = self.apply_batch(vec![record]).await?;
        results
            .pop()
            .unwrap_or(Err(ChangeError::Refused("nothing was applied".into())))
    }

    /// What the rules would say about each of `records` now, without fetching or writing
    /// anything: lets the intake refuse before it fetches a blob. `apply` decides for good.
    /// One read transaction for all of them (a page of a catch-up asks for hundreds).
    pub fn precheck_all(
        &self,
        records: &[&Record],
    ) -> Result<Vec<Result<(), ChangeError>>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.get()?.begin_read().map_err(db)?;
        let log = txn.open_table(tables::RECORDS).map_err(db)?;
        read_view(&txn, |view| {
            Ok::<_, StoreError>(
                records
                    .iter()
                    .map(
                        |record| match apply::check_log(&log, record, &record.to_bytes())? {
                            Some(_) => Ok(()),
                            None => view.check(record),
                        },
                    )
                    .collect(),
            )
        })
    }

    /// Whether this node may publish `m` under its own key now: `Ok(true)` for a new version,
    /// `Ok(false)` when these exact bytes are already published under it. Asked before a
    /// pushed blob is stored; the write checks again.
    pub fn check_publish(&self, m: &ManifestBody) -> Result<bool, ChangeError> {
        let txn = self.db.get()?.begin_read().map_err(db)?;
        let origin = self.origin();
        read_view(&txn, |view| {
            // Pushing bytes that are already here is a no-op success, whoever published them.
            if view.holds_bytes(m)? {
                return Ok(false);
            }
            view.check_manifest(&origin, m)
                .map(|effect| effect != authority::ManifestEffect::Known)
        })
    }

    /// Whether the log holds exactly each of `records`, in one read transaction.
    pub fn holds_exact_all<'r>(
        &self,
        records: impl IntoIterator<Item = &'r Record>,
    ) -> Result<Vec<bool>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(tables::RECORDS).map_err(db)?;
            records
                .into_iter()
                .map(|record| {
                    let key = tables::record_key(&record.origin, record.seq);
                    Ok(t.get(key.as_slice())
                        .map_err(db)?
                        .is_some_and(|v| v.value() == record.to_bytes().as_slice()))
                })
                .collect()
        })
    }
}

/// The database file of a store that was just dropped, opened directly (tests that fake a data
/// dir from an older layout). The dropped store's writer thread lets go of the file once it
/// has drained.
#[cfg(test)]
pub(crate) fn raw_database(dir: &Path) -> Database {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Database::create(dir.join(DB_FILE)) {
            Ok(db) => return db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::yield_now();
            }
            Err(e) => panic!("reopening the database: {e}"),
        }
    }
}

/// Runs `f` over the tables the authority rules read, in a read transaction.
fn read_view<T, E: From<StoreError>>(
    txn: &ReadTransaction,
    f: impl FnOnce(
        &authority::View<'_, redb::ReadOnlyTable<&'static str, &'static [u8]>>,
    ) -> Result<T, E>,
) -> Result<T, E> {
    let open = |t| txn.open_table(t).map_err(db);
    let (owners, versions, tombstones, retired, tags) = (
        open(tables::OWNERS)?,
        open(tables::VERSIONS)?,
        open(tables::TOMBSTONES)?,
        open(tables::RETIRED)?,
        open(tables::TAGS)?,
    );
    f(&authority::View {
        owners: &owners,
        versions: &versions,
        tombstones: &tombstones,
        retired: &retired,
        tags: &tags,
    })
}

fn last_log_position(database: &Database) -> Result<u64, StoreError> {
    use redb::ReadableTable;
    let txn = database.begin_read().map_err(db)?;
    let log = txn.open_table(tables::LOG).map_err(db)?;
    Ok(log.last().map_err(db)?.map(|(k, _)| k.value()).unwrap_or(0))
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
    txn.open_table(PEER_SYNC).map_err(db)?;
    txn.open_table(RETIRED).map_err(db)?;
    index_blob_versions(&txn)?;
    migrate::claim_owners(&txn)?;
    migrate::index_package_log(&txn)?;
    search_index::create(&txn)?;
    txn.commit().map_err(db)?;
    Ok(())
}

/// Creates the digest → versions index, filling it from [`tables::VERSIONS`] when a data dir
/// from before the index is opened (in the same transaction: all or nothing).
fn index_blob_versions(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    use redb::{MultimapTableHandle, ReadableTable};
    let exists = txn
        .list_multimap_tables()
        .map_err(db)?
        .any(|t| t.name() == tables::BLOB_VERSIONS.name());
    let mut index = txn.open_multimap_table(tables::BLOB_VERSIONS).map_err(db)?;
    if exists {
        return Ok(());
    }
    let versions = txn.open_table(tables::VERSIONS).map_err(db)?;
    for item in versions.iter().map_err(db)? {
        let (k, v) = item.map_err(db)?;
        let entry: entries::VersionEntry = entries::decode(v.value())?;
        index.insert(&entry.digest[..], k.value()).map_err(db)?;
    }
    Ok(())
}
