//! Where blocking work runs (file I/O, hashing, archive checks, the database writer's
//! hand-off): on tokio's blocking threads, or in place on a thread that asked for that.
//!
//! The simulator's virtual time asks, for the one thread that runs a whole cluster
//! ([`in_place_on_this_thread`]). Work handed to another thread finishes when the host gets
//! to it: a task awaiting it may find it done at its first poll in one run and not in the next,
//! and the run then interleaves its tasks another way, so one seed gave other timings. Done in
//! place, the work is over when the call returns, every run. That costs the host its second
//! core, not simulated time: the paused clock stands still during blocking work either way.

use std::{
    cell::Cell,
    future::Future,
    io::Write as _,
    panic::AssertUnwindSafe,
    path::Path,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{io::AsyncWriteExt as _, task::JoinHandle};

use crate::store::Durability;

thread_local! {
    static IN_PLACE: Cell<bool> = const { Cell::new(false) };
}

/// From now on, blocking work started on this thread runs right where it is started.
pub fn in_place_on_this_thread() {
    IN_PLACE.set(true);
}

/// Whether blocking work started here runs in place.
pub(crate) fn in_place() -> bool {
    IN_PLACE.get()
}

/// Blocking work that panicked (or whose thread went away) gave no result.
#[derive(Debug, thiserror::Error)]
#[error("blocking work panicked or was abandoned")]
pub struct Abandoned;

/// Starts `f` now: on a blocking thread, or in place. Await the result.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Offloaded<T> {
    if in_place() {
        let done = std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| Abandoned);
        return Offloaded::Done(Some(done));
    }
    Offloaded::Running(tokio::task::spawn_blocking(f))
}

/// The result of [`spawn`], to await.
#[derive(Debug)]
pub enum Offloaded<T> {
    Done(Option<Result<T, Abandoned>>),
    Running(JoinHandle<T>),
}

impl<T> Offloaded<T> {
    /// Whether the work is over (its result may not have been taken yet).
    pub fn is_finished(&self) -> bool {
        match self {
            Offloaded::Done(_) => true,
            Offloaded::Running(h) => h.is_finished(),
        }
    }
}

// Nothing is pinned in place: the result is moved out, the handle is `Unpin`.
impl<T> Unpin for Offloaded<T> {}

impl<T> Future for Offloaded<T> {
    type Output = Result<T, Abandoned>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Offloaded::Done(result) => Poll::Ready(result.take().unwrap_or(Err(Abandoned))),
            Offloaded::Running(handle) => Pin::new(handle).poll(cx).map_err(|_| Abandoned),
        }
    }
}

/// Runs `f` as [`spawn`] does and waits for it; an abandoned run is an I/O error.
pub async fn io<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    spawn(f).await.map_err(std::io::Error::other)?
}

/// Removes the file at `path`, as [`spawn`] runs work.
pub async fn remove_file(path: &Path) -> std::io::Result<()> {
    let path = path.to_owned();
    io(move || std::fs::remove_file(path)).await
}

/// A file appended to through a 1 MiB buffer: tokio's file on its blocking threads, or a
/// standard one written in place (see the module's documentation).
#[derive(Debug)]
pub enum Appender {
    InPlace(std::io::BufWriter<std::fs::File>),
    Offloaded(tokio::io::BufWriter<tokio::fs::File>),
}

impl Appender {
    const BUFFER: usize = 1 << 20;

    /// Opens `path` (which must exist) for appending.
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.append(true);
        if in_place() {
            let file = options.open(path)?;
            return Ok(Self::InPlace(std::io::BufWriter::with_capacity(
                Self::BUFFER,
                file,
            )));
        }
        let file = tokio::fs::OpenOptions::from(options).open(path).await?;
        Ok(Self::Offloaded(tokio::io::BufWriter::with_capacity(
            Self::BUFFER,
            file,
        )))
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::InPlace(w) => w.write_all(bytes),
            Self::Offloaded(w) => w.write_all(bytes).await,
        }
    }

    /// Writes out the buffer and makes the file's data as durable as `durability` asks: on
    /// the disk, or (the simulator's nodes) in the page cache only.
    pub async fn sync(&mut self, durability: Durability) -> std::io::Result<()> {
        let flushed = durability.waits_for_disk();
        match self {
            Self::InPlace(w) => {
                w.flush()?;
                if flushed {
                    w.get_ref().sync_data()?;
                }
            }
            Self::Offloaded(w) => {
                w.flush().await?;
                if flushed {
                    w.get_ref().sync_data().await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn thread_id() -> std::thread::ThreadId {
        std::thread::current().id()
    }

    #[tokio::test]
    async fn work_runs_on_a_blocking_thread_unless_this_thread_asked_for_in_place() {
        let here = thread_id();
        let elsewhere = spawn(thread_id);
        assert!(matches!(elsewhere, Offloaded::Running(_)));
        assert_ne!(elsewhere.await.unwrap(), here);
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async {
                    in_place_on_this_thread();
                    let here = thread_id();
                    let done = spawn(thread_id);
                    assert!(done.is_finished(), "over before it is awaited");
                    assert_eq!(done.await.unwrap(), here);
                    assert!(spawn(|| panic!("a check that panics")).await.is_err());
                });
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_appender_in_place_writes_and_syncs_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::write(&path, b"held ").unwrap();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async {
                    in_place_on_this_thread();
                    let mut file = Appender::open(&path).await.unwrap();
                    assert!(matches!(file, Appender::InPlace(_)));
                    file.write_all(b"more").await.unwrap();
                    file.sync(Durability::Flushed).await.unwrap();
                    // Read while the appender is still open: its drop would flush too.
                    assert_eq!(std::fs::read(&path).unwrap(), b"held more");
                    file.write_all(b", cached").await.unwrap();
                    file.sync(Durability::Cached).await.unwrap();
                    assert_eq!(std::fs::read(&path).unwrap(), b"held more, cached");
                });
        })
        .join()
        .unwrap();
    }
}
