//! Early flushes of a fetch's verified bytes, so the flush that makes the blob durable has
//! little left to write.

use std::path::Path;

/// Flushes a fetch's verified bytes to disk in the background as they arrive. In a fan-out
/// every replica finishes at about the same moment, and their final flushes together wrote
/// the whole blob once per replica while nothing else could happen (0.5-0.7 s of a 128 MiB
/// fan-out to 7 replicas on one disk).
#[derive(Default)]
pub(super) struct Writeback {
    unflushed: u64,
    running: Option<crate::offload::Offloaded<()>>,
}

impl Writeback {
    /// Bytes written and not flushed that start a flush.
    const EVERY: u64 = 16 * 1024 * 1024;

    /// Counts a verified range of 1 KiB chunks of `data`; starts a flush once `EVERY` bytes
    /// are unflushed and none is running. Returns whether it started one.
    pub(super) fn verified(&mut self, data: &Path, chunks: (u64, u64)) -> bool {
        // An early flush pays off by overlapping the fetch; done in place (`offload.rs`) it
        // would only stop the thread until the disk is done.
        if crate::offload::in_place() {
            return false;
        }
        self.unflushed += chunks.1.saturating_sub(chunks.0) * 1024;
        if self.unflushed < Self::EVERY || self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            return false;
        }
        self.unflushed = 0;
        let data = data.to_owned();
        self.running = Some(crate::offload::spawn(move || {
            // Only an early start: the final flush still makes the blob durable. A flush that
            // outlives its fetch finds the file renamed, or flushes a new fetch's: harmless.
            if let Err(e) = std::fs::File::open(&data).and_then(|f| f.sync_data()) {
                tracing::debug!(
                    path = %data.display(),
                    error = %e,
                    "could not flush a partial blob early"
                );
            }
        }));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verified_bytes_are_flushed_every_16_mib_one_flush_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("blob");
        std::fs::write(&data, b"partial").unwrap();
        let mut w = Writeback::default();
        let mib = |n: u64| (0, n * 1024);
        assert!(!w.verified(&data, mib(15)));
        assert!(w.verified(&data, mib(1)), "16 MiB unflushed");
        // Waited for through the handle, which stays in place, finished.
        let running = w.running.as_mut().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), running)
            .await
            .expect("the flush ends")
            .expect("the flush does not panic");
        assert!(!w.verified(&data, mib(8)), "the count started again");
        assert!(
            w.verified(&data, mib(8)),
            "a finished flush holds nothing back"
        );
        // A flush still running holds the next back; the bytes wait for the one after.
        let pending = tokio::spawn(std::future::pending());
        let abort = pending.abort_handle();
        w.running = Some(crate::offload::Offloaded::Running(pending));
        assert!(!w.verified(&data, mib(32)));
        abort.abort();
        w.running = None;
        assert!(w.verified(&data, mib(0)), "the held-back bytes go next");
    }

    #[test]
    fn a_thread_that_works_in_place_starts_no_early_flush() {
        std::thread::spawn(|| {
            crate::offload::in_place_on_this_thread();
            let mut w = Writeback::default();
            let data = std::path::Path::new("never-opened");
            assert!(!w.verified(data, (0, 64 * 1024)), "64 MiB, and no flush");
            assert!(w.running.is_none());
        })
        .join()
        .unwrap();
    }
}
