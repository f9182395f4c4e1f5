//! Content-addressed blob files: `blobs/ab/abcd…` named by the blake3 digest of their bytes.
//!
//! A blob is written to `tmp/`, fsynced, then renamed into place and its directory fsynced, so
//! a file under `blobs/` always holds exactly the bytes its name promises. Anything left in
//! `tmp/` by a crash is removed at the next start. (Flushes are skipped under
//! [`Durability::Cached`].)

use std::{
    collections::HashMap,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use niso_protocol::Digest;

use super::Durability;

#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
    pins: Arc<Mutex<HashMap<Digest, usize>>>,
    durability: Durability,
}

/// A blob on disk, as GC sees it.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub digest: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

/// Keeps a blob out of GC's reach while a push or mirror commits the record that references it.
#[derive(Debug)]
pub struct Pin {
    digest: Digest,
    pins: Arc<Mutex<HashMap<Digest, usize>>>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pins.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.digest);
            }
        }
    }
}

impl BlobStore {
    pub fn open(data_dir: &Path, durability: Durability) -> io::Result<Self> {
        let root = data_dir.join("blobs");
        let tmp = data_dir.join("tmp");
        fs::create_dir_all(&root)?;
        // Whatever is in tmp/ belonged to a write that never completed.
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(Self {
            root,
            tmp,
            pins: Arc::default(),
            durability,
        })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join(&hex[..2]).join(hex)
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// A fresh path in the temp directory for a blob being written.
    pub fn temp_path(&self, label: &str) -> io::Result<PathBuf> {
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(io::Error::other)?;
        Ok(self
            .tmp
            .join(format!("{label}-{}", niso_protocol::hex::encode(&random))))
    }

    pub fn pin(&self, digest: Digest) -> Pin {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        *pins.entry(digest).or_default() += 1;
        Pin {
            digest,
            pins: self.pins.clone(),
        }
    }

    pub fn is_pinned(&self, digest: &Digest) -> bool {
        self.pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(digest)
    }

    /// Moves a fully written, already verified file into place as `digest`. The caller must
    /// have checked that the file's bytes hash to `digest`.
    pub fn commit(&self, verified_file: &Path, digest: &Digest) -> io::Result<()> {
        let dest = self.path(digest);
        if dest.is_file() {
            // Same digest, same bytes: keep the existing file, but make it young again so a
            // GC sweep that began before the new reference was committed leaves it alone.
            fs::File::options()
                .write(true)
                .open(&dest)?
                .set_modified(SystemTime::now())?;
            fs::remove_file(verified_file)?;
            return Ok(());
        }
        // The file may have been written long ago (an upload that took an hour); GC's grace
        // period counts from now, when the blob takes its name. Set before the flush, so one
        // write of the inode carries both.
        let file = fs::File::options().write(true).open(verified_file)?;
        file.set_modified(SystemTime::now())?;
        self.durability.flush(&file)?;
        drop(file);
        let dir = dest.parent().unwrap_or(&self.root);
        // The shard directory exists but for a store's first blobs under a prefix; trying the
        // rename first spares every other commit two calls.
        match fs::rename(verified_file, &dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
                fs::create_dir_all(dir)?;
                // The new directory's own name must outlive a crash as well as the blob's.
                self.durability.flush_dir(&self.root)?;
                fs::rename(verified_file, &dest)?;
            }
            other => other?,
        }
        self.durability.flush_dir(dir)?;
        Ok(())
    }

    /// Removes a blob unless it is pinned or `still_needed` says a record references it, all
    /// while holding the pin table, so no push or fetch can pin it in between. Every writer
    /// pins a digest before its blob takes its name and unpins only after the record naming
    /// it committed: checked under this lock, either the pin or the record is visible.
    /// Returns whether the blob was removed.
    pub fn remove_unless_needed(
        &self,
        digest: &Digest,
        still_needed: impl FnOnce() -> io::Result<bool>,
    ) -> io::Result<bool> {
        let pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if pins.contains_key(digest) || still_needed()? {
            return Ok(false);
        }
        self.remove(digest)?;
        drop(pins);
        Ok(true)
    }

    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        let _ = fs::remove_file(self.outboard_path(digest));
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn outboard_path(&self, digest: &Digest) -> PathBuf {
        self.path(digest).with_extension("obao")
    }

    /// The bao outboard (the blob's hash tree) for serving verified ranges, computed and kept
    /// beside the blob on first use.
    pub fn outboard(&self, digest: &Digest, block: bao_tree::BlockSize) -> io::Result<PathBuf> {
        let path = self.outboard_path(digest);
        if path.is_file() {
            return Ok(path);
        }
        let data = fs::File::open(self.path(digest))?;
        let size = data.metadata()?.len();
        let tmp = self.temp_path("obao")?;
        {
            let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
            let root = bao_tree::io::sync::outboard_post_order(
                io::BufReader::with_capacity(1 << 20, data),
                bao_tree::BaoTree::new(size, block),
                &mut out,
            )?;
            if root.as_bytes() != digest.as_bytes() {
                let _ = fs::remove_file(&tmp);
                return Err(io::Error::other(format!(
                    "blob {digest} does not match its name"
                )));
            }
            out.flush()?;
            self.durability.flush(out.get_ref())?;
        }
        fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Directory for blobs being fetched from peers; it survives restarts so fetches resume.
    pub fn partial_dir(&self) -> PathBuf {
        self.root.with_file_name("partial")
    }

    /// Every blob file. Files whose names are not digests are skipped.
    pub fn list(&self) -> io::Result<Vec<BlobFile>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                let Some(digest) = file.file_name().to_str().and_then(Digest::from_hex) else {
                    continue;
                };
                let meta = file.metadata()?;
                out.push(BlobFile {
                    digest,
                    size: meta.len(),
                    modified: meta.modified()?,
                });
            }
        }
        Ok(out)
    }

    /// Writes small in-memory content (tests and fixtures) through the same durable path.
    #[cfg(test)]
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<Digest> {
        let digest = Digest::of(bytes);
        let tmp = self.temp_path("put")?;
        fs::File::create(&tmp)?.write_all(bytes)?;
        self.commit(&tmp, &digest)?;
        Ok(digest)
    }
}

/// Hashes a file's bytes with blake3, reading it in large blocks.
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut file = fs::File::open(path)?;
    let size = io::copy(&mut file, &mut HashWriter(&mut hasher))?;
    Ok((hasher.finalize().into(), size))
}

struct HashWriter<'a>(&'a mut blake3::Hasher);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), Durability::Flushed).unwrap();
        let d = store.put_bytes(b"hello").unwrap();
        assert!(store.contains(&d));
        assert_eq!(fs::read(store.path(&d)).unwrap(), b"hello");
        assert_eq!(hash_file(&store.path(&d)).unwrap(), (d, 5));
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].digest, d);
        // Committing the same content twice keeps one file.
        store.put_bytes(b"hello").unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        store.remove(&d).unwrap();
        assert!(!store.contains(&d));
    }

    #[test]
    fn tmp_is_cleared_on_open_and_pins_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), Durability::Flushed).unwrap();
        let stale = store.temp_path("x").unwrap();
        fs::write(&stale, b"partial").unwrap();
        let store = BlobStore::open(dir.path(), Durability::Flushed).unwrap();
        assert!(!stale.exists());
        let d = Digest::of(b"x");
        let a = store.pin(d);
        let b = store.pin(d);
        drop(a);
        assert!(store.is_pinned(&d));
        drop(b);
        assert!(!store.is_pinned(&d));
    }
}
