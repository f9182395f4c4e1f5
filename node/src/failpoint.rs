//! Named crash points for tests: a node told to stop at one logs that it got there and then
//! hangs, so a test can SIGKILL it at exactly that instant.
//!
//! A spec is `NAME` (stop the first time) or `NAME:N` (stop once a counter reaches N, e.g. the
//! bytes of an upload or the number of database commits). In-process tests can instead wait
//! until a number of tasks have stopped at one ([`Failpoints::reached`]).

use std::{collections::HashMap, sync::Arc};

use tokio::sync::watch;

#[derive(Clone, Debug, Default)]
pub struct Failpoints(Arc<HashMap<String, Armed>>);

#[derive(Debug)]
struct Armed {
    at: u64,
    /// Tasks stopped here so far.
    reached: watch::Sender<u64>,
}

impl Failpoints {
    pub fn new(specs: &[String]) -> Self {
        let map = specs
            .iter()
            .map(|spec| {
                let (name, at) = match spec.split_once(':') {
                    Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(0)),
                    None => (spec.clone(), 0),
                };
                let reached = watch::channel(0).0;
                (name, Armed { at, reached })
            })
            .collect();
        Self(Arc::new(map))
    }

    /// Whether a task at `name`, that far along, stops there; counted if it does.
    fn stops(&self, name: &str, progress: u64) -> bool {
        let Some(armed) = self.0.get(name).filter(|a| progress >= a.at) else {
            return false;
        };
        armed.reached.send_modify(|n| *n += 1);
        true
    }

    /// How many tasks have stopped at `name`, as it grows; `None` unless `name` is armed.
    pub fn reached(&self, name: &str) -> Option<watch::Receiver<u64>> {
        self.0.get(name).map(|a| a.reached.subscribe())
    }

    /// In blocking code: hangs forever if `name` is armed at `progress`.
    pub fn hit_blocking(&self, name: &str, progress: u64) {
        if self.stops(name, progress) {
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
        if self.stops(name, progress) {
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
        assert!(f.stops("a", 0));
        assert!(!f.stops("b", 9));
        assert!(f.stops("b", 10));
        assert!(!f.stops("c", 100));
        assert_eq!(*f.reached("b").unwrap().borrow(), 1, "stops are counted");
        assert!(f.reached("c").is_none());
    }
}
