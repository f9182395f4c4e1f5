//! Whether the node's writes are failing, and why. Two parts fail apart: the database (set
//! and cleared by the writer's commits) and the files under the data dir (set by a request
//! that hit a full disk, cleared by a probe write). `/healthz` reads it.

use std::sync::{Arc, Mutex};

use super::error::StoreError;

/// Which kind of write failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePart {
    Database,
    Files,
}

/// A cheap, cloneable view of the write path's state.
#[derive(Clone, Debug, Default)]
pub struct WriteHealth(Arc<Mutex<Failures>>);

#[derive(Debug, Default)]
struct Failures {
    database: Option<&'static str>,
    files: Option<&'static str>,
}

impl WriteHealth {
    /// Why writes are failing now, or `None` while they work.
    pub fn failing(&self) -> Option<String> {
        let state = self.lock();
        match (state.database, state.files) {
            (None, None) => None,
            (Some(db), Some(files)) if db != files => Some(format!("{db}; {files}")),
            (Some(reason), _) | (None, Some(reason)) => Some(reason.to_owned()),
        }
    }

    /// Records a failed write, when the error is about the storage rather than the request.
    pub fn failed(&self, part: WritePart, error: &StoreError) {
        let reason = match error {
            StoreError::NoSpace(_) => "the disk is full",
            StoreError::Database(_) | StoreError::Io(_) | StoreError::Unavailable => {
                "the database could not write"
            }
            StoreError::Corrupt(_) | StoreError::WriterGone => return,
        };
        let mut state = self.lock();
        let slot = state.slot(part);
        if slot.is_none() {
            tracing::warn!(?part, reason, "writes are failing");
        }
        *slot = Some(reason);
    }

    /// Records a write of `part` that reached the disk.
    pub fn succeeded(&self, part: WritePart) {
        if self.lock().slot(part).take().is_some() {
            tracing::info!(?part, "writes work again");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Failures {
    fn slot(&mut self, part: WritePart) -> &mut Option<&'static str> {
        match part {
            WritePart::Database => &mut self.database,
            WritePart::Files => &mut self.files,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> StoreError {
        StoreError::NoSpace(std::io::Error::from(std::io::ErrorKind::StorageFull))
    }

    #[test]
    fn each_part_clears_only_itself() {
        let health = WriteHealth::default();
        assert_eq!(health.failing(), None);
        health.failed(WritePart::Files, &full());
        health.failed(WritePart::Database, &full());
        health.succeeded(WritePart::Database);
        assert_eq!(health.failing().as_deref(), Some("the disk is full"));
        health.succeeded(WritePart::Files);
        assert_eq!(health.failing(), None);
        health.failed(WritePart::Database, &StoreError::WriterGone);
        assert_eq!(health.failing(), None, "not a storage failure");
    }
}
