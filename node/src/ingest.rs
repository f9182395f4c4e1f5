//! Turning a file of uploaded or fetched bytes into a stored package: hash and inspect it in
//! one pass, move it into the blob store, then commit the record that makes it visible.

use std::{
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use niso_protocol::{
    Digest, PackageMeta,
    archive::{ArchiveError, ArchiveLimits, inspect},
};

use crate::store::{Pin, Store, StoreError};

/// A package file whose digest and contents have been checked.
#[derive(Debug, Clone)]
pub struct Verified {
    pub digest: Digest,
    pub size: u64,
    pub meta: PackageMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("could not read the package file")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// Hashes every byte of `path` and checks it as an archive, reading the file once.
pub fn verify_file(path: &Path, limits: &ArchiveLimits) -> Result<Verified, VerifyError> {
    let file = std::fs::File::open(path)?;
    let mut tee = HashingReader {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
        count: 0,
    };
    let inspection = inspect(&mut tee, limits)?;
    // Bytes after the end of the tar stream still belong to the blob and its digest.
    io::copy(&mut tee, &mut io::sink())?;
    Ok(Verified {
        digest: tee.hasher.finalize().into(),
        size: tee.count,
        meta: inspection.meta,
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Moves a verified file into the blob store and pins it until the caller has committed the
/// record that references it.
pub async fn store_blob(store: &Store, file: PathBuf, digest: Digest) -> Result<Pin, StoreError> {
    let pin = store.blobs().pin(digest);
    let blobs = store.blobs().clone();
    tokio::task::spawn_blocking(move || blobs.commit(&file, &digest))
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e)))??;
    Ok(pin)
}
