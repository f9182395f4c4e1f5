//! Named crash points for tests: a node told to stop at one logs that it got there and then
//! hangs, so a test can SIGKILL it at exactly that instant.
//!
//! A spec is `NAME` (stop the first time) or `NAME:N` (stop once a counter reaches N, e.g. the
//! bytes of an upload or the number of database commits).

use std::{collections::HashMap, sync::Arc};

#[derive(Clone, Debug, Default)]
pub struct Failpoints(Arc<HashMap<String, u64>>);

impl Failpoints {
    pub fn new(specs: &[String]) -> Self {
        let map = specs
            .iter()
            .map(|spec| match spec.split_once(':') {
                Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(0)),
                None => (spec.clone(), 0),
            })
            .collect();
        Self(Arc::new(map))
    }

    fn armed(&self, name: &str, progress: u64) -> bool {
        self.0.get(name).is_some_and(|&at| progress >= at)
    }

    /// In blocking code: hangs forever if `name` is armed at `progress`.
    pub fn hit_blocking(&self, name: &str, progress: u64) {
        if self.armed(name, progress) {
            tracing::warn!(
                failpoint = name,
                progress,
                "failpoint reached, hanging until killed"
            );
            loop {
                std::thread::park();
            }
        }
    }

    /// In async code: never resolves if `name` is armed at `progress`.
    pub async fn hit(&self, name: &str, progress: u64) {
        if self.armed(name, progress) {
            tracing::warn!(
                failpoint = name,
                progress,
                "failpoint reached, hanging until killed"
            );
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let f = Failpoints::new(&["a".into(), "b:10".into()]);
        assert!(f.armed("a", 0));
        assert!(!f.armed("b", 9));
        assert!(f.armed("b", 10));
        assert!(!f.armed("c", 100));
    }
}
