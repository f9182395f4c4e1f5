//! The single database writer. Every change goes through one thread that groups the jobs
//! waiting in its queue into one redb transaction, so a burst of pushes costs one fsync.
//!
//! Each job runs between an ephemeral savepoint and the next: a job that returns an error is
//! rolled back alone, and the others in the batch still commit. A job's reply is sent only
//! after the commit that makes it durable.

use std::{sync::Arc, thread};

use redb::{Database, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::error::{StoreError, db};
use crate::failpoint::Failpoints;

/// How many queued jobs one transaction takes at most.
const MAX_BATCH: usize = 256;
/// Jobs that may wait for the writer before senders are made to wait.
const QUEUE_DEPTH: usize = 1024;

type Finish = Box<dyn FnOnce(Result<(), Arc<StoreError>>) + Send>;
/// A job runs in the batch's transaction, or gets `None` when there is none to run in.
type Job = Box<dyn FnOnce(Option<&WriteTransaction>) -> (bool, Finish) + Send>;

/// A cloneable handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    /// Starts the writer thread. It stops when every handle is dropped.
    pub fn spawn(database: Arc<Database>, failpoints: Failpoints) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        thread::Builder::new()
            .name("niso-db-writer".into())
            .spawn(move || run(&database, rx, &failpoints))?;
        Ok(Self { tx })
    }

    /// Runs `f` inside a write transaction and returns its result once it is durable.
    pub async fn write<T, E>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |txn| {
            let result = match txn {
                Some(txn) => f(txn),
                None => Err(E::from(StoreError::Unavailable)),
            };
            let failed = result.is_err();
            let finish: Finish = Box::new(move |commit| {
                let out = match (result, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) => Err(E::from(StoreError::Database(Box::new(SharedError(e))))),
                };
                let _ = reply_tx.send(out);
            });
            (failed, finish)
        });
        self.tx
            .send(job)
            .await
            .map_err(|_| E::from(StoreError::WriterGone))?;
        reply_rx
            .await
            .map_err(|_| E::from(StoreError::WriterGone))?
    }
}

/// A commit error shared by every job of the failed batch.
#[derive(Debug)]
struct SharedError(Arc<StoreError>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch commit failed: {}", self.0)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

fn run(database: &Database, mut rx: mpsc::Receiver<Job>, failpoints: &Failpoints) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut batches: u64 = 0;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let size = batch.len();
        batches += 1;
        let (finishes, commit) = run_batch(database, batch.drain(..), || {
            failpoints.hit_blocking("db-commit", batches);
        });
        if let Err(e) = &commit {
            tracing::error!(error = %e, jobs = size, "database commit failed");
        }
        for finish in finishes {
            finish(commit.clone());
        }
    }
}

fn run_batch(
    database: &Database,
    jobs: impl Iterator<Item = Job>,
    before_commit: impl FnOnce(),
) -> (Vec<Finish>, Result<(), Arc<StoreError>>) {
    let mut txn = match database.begin_write() {
        Ok(t) => t,
        Err(e) => {
            let finishes = jobs.map(|job| job(None).1).collect();
            return (finishes, Err(Arc::new(db(e))));
        }
    };
    let mut finishes = Vec::new();
    let mut broken: Option<StoreError> = None;
    for job in jobs {
        if broken.is_some() {
            finishes.push(job(None).1);
            continue;
        }
        match txn.ephemeral_savepoint() {
            Err(e) => {
                broken = Some(db(e));
                finishes.push(job(None).1);
            }
            Ok(savepoint) => {
                let (failed, finish) = job(Some(&txn));
                if failed && let Err(e) = txn.restore_savepoint(&savepoint) {
                    broken = Some(db(e));
                }
                finishes.push(finish);
            }
        }
    }
    let commit = match broken {
        // Dropping the transaction aborts it: nothing of this batch becomes visible.
        Some(e) => Err(Arc::new(e)),
        None => {
            before_commit();
            txn.commit().map_err(|e| Arc::new(db(e)))
        }
    };
    (finishes, commit)
}
