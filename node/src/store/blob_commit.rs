//! Group commit of blob files: verified files waiting to take their names are flushed,
//! renamed and flushed again together, so a group costs two filesystem flushes, not two per
//! blob.
//!
//! The contract, the same as one blob at a time: a file takes its name only after its bytes
//! are durable, and a caller hears `Ok` only after the name is durable too. On Linux a group
//! of two or more files flushes the blob store's filesystem with `syncfs` (one journal
//! commit) before the renames, and a group touching two or more directories flushes it again
//! after them; otherwise each file's data and each directory is flushed on its own. A file
//! whose bytes were flushed already ([`Written::Flushed`], an upload) needs only the second
//! flush. A flush that fails fails every blob that waited on it.
//!
//! Who flushes: the first caller to find no group in progress starts one on a blocking
//! thread; callers arriving meanwhile queue up and form the next group, which the same
//! thread takes when the flush ends. A burst of fetches finishing at once thus shares its
//! flushes, while a lone push waits for nobody.

use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use niso_protocol::Digest;
use tokio::sync::oneshot;

use super::blob_store::BlobStore;

/// Whether a file's bytes were flushed before it comes to be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Flushed already (an upload, whose every append ends with a flush): only its name is
    /// left to make durable.
    Flushed,
    /// Maybe still in the page cache (a fetched or mirrored blob).
    Buffered,
}

/// The most blobs one group takes; the rest form the next.
const MAX_GROUP: usize = 256;

/// Blobs waiting for the next group, and whether a thread is flushing one.
#[derive(Debug, Default)]
pub(super) struct Groups {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    waiting: Vec<Waiting>,
    flushing: bool,
}

#[derive(Debug)]
struct Waiting {
    file: PathBuf,
    digest: Digest,
    written: Written,
    done: oneshot::Sender<io::Result<()>>,
}

impl Groups {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The thread flushing groups. Should it end without emptying the queue (a panic, or a
/// runtime that shut down before the task ran), the blobs still waiting are failed (their
/// senders dropped) and the next caller starts a fresh one.
struct Flusher {
    store: BlobStore,
    emptied: bool,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        if !self.emptied {
            let mut state = self.store.groups().lock();
            state.waiting.clear();
            state.flushing = false;
        }
    }
}

impl Flusher {
    /// Commits groups until none waits; returns how many it committed.
    fn run(mut self) -> usize {
        let groups = self.store.groups();
        let mut committed = 0;
        loop {
            let group: Vec<Waiting> = {
                let mut state = groups.lock();
                if state.waiting.is_empty() {
                    // Under the lock a caller checks `flushing` with: nobody is left behind.
                    state.flushing = false;
                    self.emptied = true;
                    return committed;
                }
                let take = state.waiting.len().min(MAX_GROUP);
                state.waiting.drain(..take).collect()
            };
            let files: Vec<(&Path, Digest, Written)> = group
                .iter()
                .map(|w| (w.file.as_path(), w.digest, w.written))
                .collect();
            let results = self.store.commit_all(&files);
            drop(files);
            for (w, result) in group.into_iter().zip(results) {
                let _ = w.done.send(result);
            }
            committed += 1;
        }
    }
}

impl BlobStore {
    /// Moves a fully written, already verified file into place as `digest`, in a group with
    /// whatever other blobs are waiting, and returns once its name is durable. The caller
    /// must have checked that the file's bytes hash to `digest`.
    pub async fn commit_grouped(
        &self,
        file: PathBuf,
        digest: Digest,
        written: Written,
    ) -> io::Result<()> {
        let (done, lead) = self.enqueue(file, digest, written);
        if lead {
            let flusher = Flusher {
                store: self.clone(),
                emptied: false,
            };
            // The caller waits on its own reply below, not on this task.
            drop(tokio::task::spawn_blocking(move || flusher.run()));
        }
        done.await
            .unwrap_or_else(|_| Err(io::Error::other("the blob flush stopped before it ended")))
    }

    /// Queues a blob; `true` when the caller must start a [`Flusher`].
    fn enqueue(
        &self,
        file: PathBuf,
        digest: Digest,
        written: Written,
    ) -> (oneshot::Receiver<io::Result<()>>, bool) {
        let (done, reply) = oneshot::channel();
        let mut state = self.groups().lock();
        state.waiting.push(Waiting {
            file,
            digest,
            written,
            done,
        });
        let lead = !state.flushing;
        state.flushing = true;
        (reply, lead)
    }

    /// Commits `files` as one group; one result per file, in order.
    pub(super) fn commit_all(&self, files: &[(&Path, Digest, Written)]) -> Vec<io::Result<()>> {
        let mut results: Vec<Option<io::Result<()>>> = Vec::with_capacity(files.len());
        let mut placing = Vec::new();
        for (index, (file, digest, written)) in files.iter().enumerate() {
            let dest = self.path(digest);
            results.push(match prepare(file, &dest) {
                Ok(Prepared::Present) => Some(Ok(())),
                Ok(Prepared::New) => {
                    placing.push((index, *file, *written, dest));
                    None
                }
                Err(e) => Some(Err(e)),
            });
        }
        let fail_all =
            |results: &mut Vec<Option<io::Result<()>>>, indices: &[usize], e: &io::Error| {
                for &i in indices {
                    results[i] = Some(Err(io::Error::new(e.kind(), e.to_string())));
                }
            };

        let indices: Vec<usize> = placing.iter().map(|(i, ..)| *i).collect();
        let data: Vec<&Path> = placing
            .iter()
            .filter(|(_, _, written, _)| *written == Written::Buffered)
            .map(|(_, file, ..)| *file)
            .collect();
        if let Err(e) = self.flush_files(&data) {
            fail_all(&mut results, &indices, &e);
            placing.clear();
        }
        let mut renamed = Vec::new();
        let mut dirs = BTreeSet::new();
        for (index, file, _, dest) in placing {
            let dir = dest.parent().unwrap_or(self.root()).to_path_buf();
            match fs::create_dir_all(&dir).and_then(|()| fs::rename(file, &dest)) {
                Ok(()) => {
                    renamed.push(index);
                    dirs.insert(dir);
                }
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        match self.flush_dirs(&dirs) {
            Ok(()) => {
                for i in renamed {
                    results[i] = Some(Ok(()));
                }
            }
            Err(e) => fail_all(&mut results, &renamed, &e),
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(io::Error::other("blob left uncommitted"))))
            .collect()
    }

    /// Makes the bytes of `files` durable.
    fn flush_files(&self, files: &[&Path]) -> io::Result<()> {
        if files.len() > 1
            && let Some(flushed) = flush_filesystem(self.root())
        {
            return flushed;
        }
        // The data, not the timestamps: `prepare` just touched them, and GC's grace period
        // needs them only until the record commits, which a crash undoes anyway.
        files
            .iter()
            .try_for_each(|file| fs::File::open(file)?.sync_data())
    }

    /// Makes the entries of `dirs` durable.
    fn flush_dirs(&self, dirs: &BTreeSet<PathBuf>) -> io::Result<()> {
        if dirs.len() > 1
            && let Some(flushed) = flush_filesystem(self.root())
        {
            return flushed;
        }
        dirs.iter()
            .try_for_each(|dir| fs::File::open(dir)?.sync_all())
    }
}

enum Prepared {
    /// The blob is stored already; the file was removed.
    Present,
    /// The file waits to take its name.
    New,
}

fn prepare(file: &Path, dest: &Path) -> io::Result<Prepared> {
    if dest.is_file() {
        // Same digest, same bytes: keep the existing file, but make it young again so a GC
        // sweep that began before the new reference was committed leaves it alone.
        fs::File::options()
            .write(true)
            .open(dest)?
            .set_modified(SystemTime::now())?;
        fs::remove_file(file)?;
        return Ok(Prepared::Present);
    }
    // The file may have been written long ago (an upload that took an hour); GC's grace
    // period counts from now, when the blob takes its name.
    fs::File::options()
        .write(true)
        .open(file)?
        .set_modified(SystemTime::now())?;
    Ok(Prepared::New)
}

/// Flushes the whole filesystem of the blob store: one journal commit however many files
/// of the group are dirty. Every file that takes its name in a group lives there, since a
/// rename into the blob store cannot cross filesystems. `None` where there is no `syncfs`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn flush_filesystem(root: &Path) -> Option<io::Result<()>> {
    Some(
        fs::File::open(root)
            .and_then(|handle| nix::unistd::syncfs(&handle).map_err(io::Error::from)),
    )
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn flush_filesystem(_root: &Path) -> Option<io::Result<()>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(store: &BlobStore, bytes: &[u8]) -> (PathBuf, Digest) {
        let path = store.temp_path("test").unwrap();
        fs::write(&path, bytes).unwrap();
        (path, Digest::of(bytes))
    }

    #[test]
    fn blobs_that_wait_together_are_committed_as_one_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let stored = store.put_bytes(b"stored before").unwrap();
        let mut replies = Vec::new();
        let mut expected = Vec::new();
        for i in 0..10u8 {
            let (file, digest) = temp_file(&store, &[i; 40]);
            let (reply, lead) = store.enqueue(file.clone(), digest, Written::Buffered);
            assert_eq!(lead, i == 0, "only the first caller starts a flusher");
            replies.push(reply);
            expected.push((file, digest, Some(vec![i; 40])));
        }
        // The same bytes again, and a file that is gone.
        let (again, _) = temp_file(&store, b"stored before");
        replies.push(store.enqueue(again.clone(), stored, Written::Flushed).0);
        expected.push((again, stored, Some(b"stored before".to_vec())));
        let gone = store.temp_path("gone").unwrap();
        let phantom = Digest::of(b"never written");
        replies.push(store.enqueue(gone.clone(), phantom, Written::Buffered).0);
        expected.push((gone, phantom, None));

        let flusher = Flusher {
            store: store.clone(),
            emptied: false,
        };
        assert_eq!(flusher.run(), 1, "one group for everything that waited");
        for (mut reply, (file, digest, bytes)) in replies.into_iter().zip(expected) {
            let result = reply.try_recv().expect("every blob got its answer");
            match bytes {
                Some(bytes) => {
                    result.unwrap();
                    assert_eq!(fs::read(store.path(&digest)).unwrap(), bytes);
                    assert!(!file.exists(), "the temp file took its name or was removed");
                }
                None => {
                    assert!(result.is_err(), "a missing file is no blob");
                    assert!(!store.contains(&digest));
                }
            }
        }
        assert!(!store.groups().lock().flushing);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_all_take_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        let mut digests = Vec::new();
        for i in 0..64u16 {
            let (file, digest) = temp_file(&store, &i.to_le_bytes().repeat(30));
            digests.push(digest);
            let store = store.clone();
            let written = if i % 2 == 0 {
                Written::Flushed
            } else {
                Written::Buffered
            };
            tasks.spawn(async move { store.commit_grouped(file, digest, written).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        for (i, digest) in (0..64u16).zip(digests) {
            assert_eq!(
                fs::read(store.path(&digest)).unwrap(),
                i.to_le_bytes().repeat(30)
            );
        }
        let state = store.groups().lock();
        assert!(state.waiting.is_empty() && !state.flushing);
    }

    #[tokio::test]
    async fn a_flusher_that_never_ran_fails_its_waiters_and_the_next_commit_starts_anew() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (file, digest) = temp_file(&store, b"first");
        let (reply, lead) = store.enqueue(file, digest, Written::Buffered);
        assert!(lead);
        drop(Flusher {
            store: store.clone(),
            emptied: false,
        });
        let heard = tokio::time::timeout(std::time::Duration::from_secs(10), reply)
            .await
            .expect("the waiter hears that no flush comes");
        assert!(heard.is_err());
        let (file, digest) = temp_file(&store, b"second");
        store
            .commit_grouped(file, digest, Written::Buffered)
            .await
            .unwrap();
        assert!(store.contains(&digest));
    }
}
