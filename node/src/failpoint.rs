//! Named crash points for tests: a node told to stop at one logs that it got there and then
//! hangs, so a test can SIGKILL it at exactly that instant.

use std::{collections::HashSet, sync::Arc};

#[derive(Clone, Debug, Default)]
pub struct Failpoints(Arc<HashSet<String>>);

impl Failpoints {
    pub fn new(names: &[String]) -> Self {
        Self(Arc::new(names.iter().cloned().collect()))
    }

    /// In blocking code: hangs forever if `name` is armed.
    pub fn hit_blocking(&self, name: &str) {
        if self.0.contains(name) {
            tracing::warn!(failpoint = name, "failpoint reached, hanging until killed");
            loop {
                std::thread::park();
            }
        }
    }

    /// In async code: never resolves if `name` is armed.
    pub async fn hit(&self, name: &str) {
        if self.0.contains(name) {
            tracing::warn!(failpoint = name, "failpoint reached, hanging until killed");
            std::future::pending::<()>().await;
        }
    }
}
