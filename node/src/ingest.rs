//! Turning a file of uploaded or fetched bytes into a stored package: hash and inspect it in
//! one pass, move it into the blob store, then commit the record that makes it visible.

use std::{
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
    sync::{Condvar, Mutex, OnceLock},
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
///
/// Blocks while two checks per core are running (see [`Gate`]): call it on a blocking thread.
pub fn verify_file(path: &Path, limits: &ArchiveLimits) -> Result<Verified, VerifyError> {
    let _pass = gate().enter();
    let file = std::fs::File::open(path)?;
    // A small package needs no large buffer; a large one reads in big steps.
    let buffer = file.metadata()?.len().clamp(8 << 10, 256 << 10);
    let mut tee = HashingReader {
        inner: BufReader::with_capacity(usize::try_from(buffer).unwrap_or(256 << 10), file),
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
    crate::offload::spawn(move || blobs.commit(&file, &digest))
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e)))??;
    Ok(pin)
}

/// Bounds the archive checks running at once in this process to two per core. A check is
/// mostly CPU (some file reads) and holds a zstd window (2 MiB for what `niso pack` writes)
/// plus read buffers, so more at once buys no speed, only a higher peak of memory, which the
/// allocator then keeps: eight concurrent pushes held about 20 MiB in checks alone.
struct Gate {
    state: Mutex<GateState>,
    freed: Condvar,
    max: usize,
}

#[derive(Default)]
struct GateState {
    running: usize,
    waiting: usize,
}

/// A running check's place in the [`Gate`]; leaving frees it for the next.
struct Pass<'a>(&'a Gate);

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| Gate::new(2 * std::thread::available_parallelism().map_or(2, |n| n.get())))
}

impl Gate {
    fn new(max: usize) -> Self {
        Self {
            state: Mutex::default(),
            freed: Condvar::new(),
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a place.
    fn enter(&self) -> Pass<'_> {
        let mut state = self.lock();
        state.waiting += 1;
        while state.running >= self.max {
            state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.waiting -= 1;
        state.running += 1;
        Pass(self)
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::{Duration, Instant},
    };

    use super::*;

    #[test]
    fn a_check_waits_while_the_gate_is_full_and_runs_once_a_place_is_free() {
        let gate = Arc::new(Gate::new(2));
        let (a, b) = (gate.enter(), gate.enter());
        let ran = Arc::new(AtomicBool::new(false));
        let third = std::thread::spawn({
            let (gate, ran) = (gate.clone(), ran.clone());
            move || {
                let _pass = gate.enter();
                ran.store(true, Ordering::SeqCst);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while gate.lock().waiting == 0 {
            assert!(Instant::now() < deadline, "the third check never asked");
            std::thread::yield_now();
        }
        assert!(!ran.load(Ordering::SeqCst), "two running: the third waits");
        assert_eq!(gate.lock().running, 2);
        drop(a);
        third.join().unwrap();
        assert!(ran.load(Ordering::SeqCst), "a place freed: the third ran");
        drop(b);
        assert_eq!(gate.lock().running, 0, "every pass gave its place back");
    }
}
