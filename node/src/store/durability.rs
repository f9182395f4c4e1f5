//! How far a finished write has gone: onto the disk (what a registry runs with), or only into
//! the operating system's page cache (the simulator's nodes).

use std::{fs::File, io, ops::Bound, path::Path};

use redb::{BackendError, StorageBackend, backends::FileBackend};

/// Where the store's commits (database and blob files) are when they count as done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Flushed to the disk: a commit outlives a power cut.
    #[default]
    Flushed,
    /// Written to the page cache and not flushed: a commit outlives the process, not the
    /// machine. For nodes that share one process which outlives them all, as the simulator's
    /// do: a simulated crash cannot lose what a flush would have saved, and 255 replicas each
    /// flushing a 64 MiB blob had the host wait on its disk for a tenth of a run.
    Cached,
}

impl Durability {
    /// Whether a write counts as done only once it is on the disk: whether to flush. Files
    /// written elsewhere (std or tokio, data only or with metadata) ask this.
    pub fn waits_for_disk(self) -> bool {
        match self {
            Durability::Flushed => true,
            Durability::Cached => false,
        }
    }

    /// Flushes `file`'s data and metadata, unless commits stop at the page cache.
    pub fn flush(self, file: &File) -> io::Result<()> {
        if self.waits_for_disk() {
            file.sync_all()?;
        }
        Ok(())
    }

    /// Flushes directory `dir` (the names in it), unless commits stop at the page cache.
    pub fn flush_dir(self, dir: &Path) -> io::Result<()> {
        if self.waits_for_disk() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// redb's file backend with flushes left out, for [`Durability::Cached`]. Every write still
/// reaches the file; only the wait for the disk is skipped.
#[derive(Debug)]
pub(super) struct UnflushedFile(FileBackend);

impl UnflushedFile {
    pub(super) fn new(file: File) -> Result<Self, redb::DatabaseError> {
        FileBackend::new(file).map(Self)
    }
}

impl StorageBackend for UnflushedFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.0.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, TableDefinition};

    use super::*;
    use crate::store::database::Db;

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    #[test]
    fn cached_commits_reach_the_file_and_flushes_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let open = |durability| Db::open(path.clone(), 1 << 20, durability);
        {
            let db = open(Durability::Cached).unwrap();
            let database = db.get().unwrap();
            let txn = database.begin_write().unwrap();
            txn.open_table(T).unwrap().insert("k", 7).unwrap();
            txn.commit().unwrap();
        }
        // Opened again as a registry opens it: the commit is in the file.
        let db = open(Durability::Flushed).unwrap();
        let read = db.get().unwrap().begin_read().unwrap();
        let value = read
            .open_table(T)
            .unwrap()
            .get("k")
            .unwrap()
            .map(|v| v.value());
        assert_eq!(value, Some(7));

        // Nothing is even opened to be flushed.
        let gone = dir.path().join("no such directory");
        assert!(Durability::Flushed.flush_dir(&gone).is_err());
        Durability::Cached.flush_dir(&gone).unwrap();
    }
}
