//! The last garbage collection this node ran since it started, for the operator's page.

use std::sync::Mutex;

/// What one GC run removed, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GcRun {
    /// Unix milliseconds when it finished.
    pub at_ms: u64,
    pub versions: u64,
    pub blobs: u64,
    pub bytes: u64,
}

/// The most recent [`GcRun`]; dry runs are not recorded (they remove nothing).
#[derive(Debug, Default)]
pub struct LastGc(Mutex<Option<GcRun>>);

impl LastGc {
    pub fn record(&self, run: GcRun) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(run);
    }

    pub fn get(&self) -> Option<GcRun> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
