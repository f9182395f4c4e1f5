//! "Last used" times of API keys, kept in memory and written in batches: authenticating a
//! request never waits for a database write.

use std::{collections::HashMap, sync::Mutex};

#[derive(Debug, Default)]
pub struct LastUsed(Mutex<HashMap<String, u64>>);

impl LastUsed {
    pub fn touch(&self, key_id: &str, now_ms: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key_id.to_owned(), now_ms);
    }

    /// A use not yet written to the database.
    pub fn pending(&self, key_id: &str) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key_id)
            .copied()
    }

    /// Everything not yet written, emptying the buffer.
    pub fn take(&self) -> Vec<(String, u64)> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.drain().collect()
    }
}
