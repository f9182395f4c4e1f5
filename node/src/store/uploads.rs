//! Upload sessions: a row per open upload and its partial file under `uploads/`, so an
//! interrupted push resumes where it stopped, even across a node restart.

use std::path::PathBuf;

use redb::ReadableTable;

use super::{
    Store,
    entries::{UploadEntry, decode, encode},
    error::{StoreError, db},
    tables::UPLOADS,
};

impl Store {
    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.uploads_dir.join(id)
    }

    /// Registers an upload and creates its empty file.
    pub async fn create_upload(&self, id: String, entry: UploadEntry) -> Result<(), StoreError> {
        let path = self.upload_path(&id);
        tokio::fs::File::create(&path).await?;
        self.writer
            .write(move |txn| {
                let mut t = txn.open_table(UPLOADS).map_err(db)?;
                t.insert(id.as_str(), encode(&entry)?.as_slice())
                    .map_err(db)?;
                Ok::<_, StoreError>(())
            })
            .await
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

    /// Forgets an upload and deletes its file (if it is still there).
    pub async fn remove_upload(&self, id: String) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.upload_path(&id)).await {
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
