//! Upload sessions: a row per open upload and its partial file under `uploads/`, so an
//! interrupted push resumes where it stopped, even across a node restart.

use std::path::{Path, PathBuf};

use redb::ReadableTable;

use niso_protocol::record::Record;

use super::{
    LocalChange, Store, apply,
    entries::{UploadEntry, decode, encode},
    error::{ChangeError, StoreError, db},
    tables::UPLOADS,
};

/// Why an upload could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenUploadError {
    #[error("this key already has {open} open uploads (limit {limit})")]
    TooMany { open: usize, limit: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.uploads_dir.join(id)
    }

    /// The directory partial uploads are written to, one file per upload id.
    pub fn uploads_dir(&self) -> &Path {
        &self.uploads_dir
    }

    /// Registers an upload and creates its empty file, unless the entry's key already holds
    /// `limit` uploads. Counting and inserting happen in one write transaction, and the
    /// single writer runs those one at a time, so concurrent opens cannot overshoot.
    pub async fn create_upload(
        &self,
        id: String,
        entry: UploadEntry,
        limit: usize,
    ) -> Result<(), OpenUploadError> {
        let path = self.upload_path(&id);
        // The file comes first: a row without its file would read as a vanished upload.
        let created = path.clone();
        crate::offload::io(move || std::fs::File::create(created).map(drop))
            .await
            .map_err(StoreError::from)?;
        let result = self
            .writer
            .write(move |txn| {
                let mut t = txn.open_table(UPLOADS).map_err(db)?;
                let mut open = 0;
                for item in t.iter().map_err(db)? {
                    let (_, v) = item.map_err(db)?;
                    let other: UploadEntry = decode(v.value())?;
                    if other.key_id == entry.key_id {
                        open += 1;
                    }
                }
                if open >= limit {
                    return Err(OpenUploadError::TooMany { open, limit });
                }
                t.insert(id.as_str(), encode(&entry)?.as_slice())
                    .map_err(db)?;
                Ok(())
            })
            .await;
        if result.is_err() {
            // Refused or failed: the row was rolled back, so its file must go too.
            match crate::offload::remove_file(&path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove refused upload file");
                }
                _ => {}
            }
        }
        result
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadEntry>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(UPLOADS).map_err(db)?;
            t.get(id)
                .map_err(db)?
                .map(|v| decode(v.value()))
                .transpose()
        })
    }

    pub fn uploads(&self) -> Result<Vec<(String, UploadEntry)>, StoreError> {
        self.read(|txn| {
            let t = txn.open_table(UPLOADS).map_err(db)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                out.push((k.value().to_owned(), decode(v.value())?));
            }
            Ok(out)
        })
    }

    /// Publishes what an upload carried and forgets the upload, in one transaction, so a push
    /// waits for one durable commit, not two. The upload's file must already be gone (moved
    /// into the blob store). When the change is refused nothing is written: the caller
    /// removes the upload itself.
    pub async fn originate_from_upload(
        &self,
        change: LocalChange,
        id: String,
    ) -> Result<Vec<Record>, ChangeError> {
        let secret = self.secret.clone();
        let at_ms = crate::clock::now_ms();
        let records = self
            .writer
            .write(move |txn| {
                let records = apply::originate(txn, &secret, change, at_ms)?;
                txn.open_table(UPLOADS)
                    .map_err(db)?
                    .remove(id.as_str())
                    .map_err(db)?;
                Ok::<_, ChangeError>(records)
            })
            .await?;
        self.log_changed();
        Ok(records)
    }

    /// Forgets an upload and deletes its file (if it is still there).
    pub async fn remove_upload(&self, id: String) -> Result<(), StoreError> {
        match crate::offload::remove_file(&self.upload_path(&id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.writer
            .write(move |txn| {
                let mut t = txn.open_table(UPLOADS).map_err(db)?;
                t.remove(id.as_str()).map_err(db)?;
                Ok::<_, StoreError>(())
            })
            .await
    }
}
