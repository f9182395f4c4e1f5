//! The single database writer. Every change goes through one thread that groups the jobs
//! waiting in its queue into one redb transaction, so a burst of pushes costs one fsync.
//!
//! Each job runs in its own transaction committed without an fsync, so a job that returns an
//! error is rolled back alone; the last job's commit is the durable one that makes the whole
//! batch durable (an empty durable commit does, should the last job fail). A job's reply is
//! sent only after that durable commit. On a current-thread runtime the hand-off runs in a
//! blocking task, so a paused clock stands still while the disk works, or in place on a thread
//! that runs its blocking work there (`offload.rs`).
//!
//! A failed commit (a full disk, usually) fails every job of its batch with the commit's
//! error and nothing of the batch is kept. redb refuses all later transactions after an I/O
//! error, readers included, so the writer reopens the database right after a failed commit
//! (`database.rs`), and again before its next batch if that did not work: reads go on, and
//! once space is back writes work again without a restart. `WriteHealth` says meanwhile that
//! they fail.

use std::{sync::Arc, thread};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::{
    database::Db,
    error::{StoreError, db},
    health::{WriteHealth, WritePart},
};
use crate::{failpoint::Failpoints, runtime_flavor::on_current_thread};

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
    pub fn spawn(
        database: Arc<Db>,
        health: WriteHealth,
        failpoints: Failpoints,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        thread::Builder::new()
            .name("niso-db-writer".into())
            .spawn(move || run(&database, &health, rx, &failpoints))?;
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
        let (job, reply) = job(f);
        if crate::offload::in_place() {
            // This thread waits out the commit itself. Unconstrained: tokio's per-task budget
            // would otherwise answer "not yet" forever inside this loop that never yields.
            let sent = futures::executor::block_on(tokio::task::unconstrained(self.tx.send(job)));
            sent.map_err(|_| E::from(StoreError::WriterGone))?;
            return futures::executor::block_on(tokio::task::unconstrained(reply))
                .map_err(|_| E::from(StoreError::WriterGone))?;
        }
        if on_current_thread() {
            // Handed off from a blocking task: on a current-thread runtime the clock may be
            // paused (the simulator's virtual time), and it jumps to the next timer whenever
            // the runtime idles. A blocking task in flight holds it still, so a commit takes
            // no simulated time, instead of as long as the host's disk happens to.
            let tx = self.tx.clone();
            return tokio::task::spawn_blocking(move || {
                tx.blocking_send(job).map_err(|_| StoreError::WriterGone)?;
                reply.blocking_recv().map_err(|_| StoreError::WriterGone)
            })
            .await
            .map_err(|_| E::from(StoreError::WriterGone))?
            .map_err(E::from)?;
        }
        self.tx
            .send(job)
            .await
            .map_err(|_| E::from(StoreError::WriterGone))?;
        reply.await.map_err(|_| E::from(StoreError::WriterGone))?
    }
}

/// Wraps `f` as a job whose result arrives on the returned channel after the batch commits.
fn job<T, E>(
    f: impl FnOnce(&WriteTransaction) -> Result<T, E> + Send + 'static,
) -> (Job, oneshot::Receiver<Result<T, E>>)
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let (reply_tx, reply_rx) = oneshot::channel::<Result<T, E>>();
    let job: Job = Box::new(move |txn| {
        // `None`: the job never ran, because the batch failed before its turn.
        let result = txn.map(f);
        let failed = !matches!(result, Some(Ok(_)));
        let finish: Finish = Box::new(move |commit| {
            let out = match (result, commit) {
                (Some(Err(e)), _) => Err(e),
                (Some(Ok(v)), Ok(())) => Ok(v),
                (_, Err(e)) => Err(E::from(shared(&e))),
                (None, Ok(())) => Err(E::from(StoreError::Unavailable)),
            };
            let _ = reply_tx.send(out);
        });
        (failed, finish)
    });
    (job, reply_rx)
}

/// The batch's error for one of its jobs: a full disk stays recognisable as such.
fn shared(e: &Arc<StoreError>) -> StoreError {
    match e.as_ref() {
        StoreError::NoSpace(_) => {
            StoreError::NoSpace(std::io::Error::from(std::io::ErrorKind::StorageFull))
        }
        _ => StoreError::Database(Box::new(SharedError(e.clone()))),
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

fn run(db: &Db, health: &WriteHealth, mut rx: mpsc::Receiver<Job>, failpoints: &Failpoints) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut batches: u64 = 0;
    let mut reopen = false;
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
        let database = if reopen {
            db.reopen().and_then(|()| db.get())
        } else {
            db.get()
        };
        let database = match database {
            Ok(database) => {
                reopen = false;
                database
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = size, "database unavailable, batch refused");
                health.failed(WritePart::Database, &e);
                let e = Arc::new(e);
                for job in batch.drain(..) {
                    job(None).1(Err(e.clone()));
                }
                continue;
            }
        };
        let (finishes, commit) = run_batch(&database, batch.drain(..), || {
            failpoints.hit_blocking("db-commit", batches);
        });
        drop(database);
        match &commit {
            Ok(()) => health.succeeded(WritePart::Database),
            Err(e) => {
                health.failed(WritePart::Database, e);
                // Now, not before the next batch: until then every reader would get the
                // latched error too. If it cannot reopen yet, the next batch tries again.
                reopen = db.reopen().is_err();
            }
        }
        if let Err(e) = &commit {
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(e.as_ref());
            while let Some(cause) = source {
                chain.push_str(": ");
                chain.push_str(&cause.to_string());
                source = cause.source();
            }
            tracing::error!(error = %chain, jobs = size, "database commit failed");
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
    let mut finishes = Vec::new();
    let mut failure: Option<StoreError> = None;
    let mut committed = 0usize;
    let mut before_commit = Some(before_commit);
    let mut jobs = jobs.peekable();
    while let Some(job) = jobs.next() {
        if failure.is_some() {
            finishes.push(job(None).1);
            continue;
        }
        let mut txn = match database.begin_write() {
            Ok(t) => t,
            Err(e) => {
                failure = Some(db(e));
                finishes.push(job(None).1);
                continue;
            }
        };
        // Each job commits on its own (so a failed one rolls back alone) but without an
        // fsync, except the last: its commit makes the whole batch durable at once, which
        // spares an empty transaction per batch (most batches of a catch-up are one job).
        let last = jobs.peek().is_none();
        let durability = if last {
            Durability::Immediate
        } else {
            Durability::None
        };
        if let Err(e) = txn.set_durability(durability) {
            failure = Some(db(e));
            finishes.push(job(None).1);
            continue;
        }
        let (failed, finish) = job(Some(&txn));
        finishes.push(finish);
        if failed {
            if let Err(e) = txn.abort() {
                failure = Some(db(e));
            }
            continue;
        }
        if last && let Some(hook) = before_commit.take() {
            hook();
        }
        match txn.commit() {
            Ok(()) if last => return (finishes, Ok(())),
            Ok(()) => committed += 1,
            Err(e) => failure = Some(db(e)),
        }
    }
    if let Some(e) = failure {
        return (finishes, Err(Arc::new(e)));
    }
    // The last job failed (or none ran): the earlier ones still need their durable commit.
    if committed == 0 {
        return (finishes, Ok(()));
    }
    if let Some(hook) = before_commit.take() {
        hook();
    }
    let durable = database.begin_write().map_err(db).and_then(|mut txn| {
        txn.set_durability(Durability::Immediate).map_err(db)?;
        txn.commit().map_err(db)
    });
    (finishes, durable.map_err(Arc::new))
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, TableDefinition};

    use super::*;
    use crate::store::Durability;

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    fn put(key: &'static str, fail: bool) -> (Job, oneshot::Receiver<Result<(), StoreError>>) {
        job(move |txn| {
            txn.open_table(T).map_err(db)?.insert(key, 1).map_err(db)?;
            if fail {
                Err(StoreError::Unavailable)
            } else {
                Ok(())
            }
        })
    }

    /// Runs one job per key as a batch (`true`: that job fails); returns how many durable
    /// commits the batch made and, per job, whether its caller was told it succeeded.
    fn batch(database: &Database, jobs: &[(&'static str, bool)]) -> (usize, Vec<bool>) {
        let (jobs, replies): (Vec<_>, Vec<_>) =
            jobs.iter().map(|&(key, fail)| put(key, fail)).unzip();
        let mut durable_commits = 0;
        let (finishes, commit) = run_batch(database, jobs.into_iter(), || durable_commits += 1);
        assert!(commit.is_ok());
        for f in finishes {
            f(commit.clone());
        }
        let ok = replies
            .into_iter()
            .map(|r| r.blocking_recv().unwrap().is_ok())
            .collect();
        (durable_commits, ok)
    }

    /// Which of `keys` the database at `path` holds, opened afresh.
    fn held(path: &std::path::Path, keys: &[&str]) -> Vec<bool> {
        let database = Database::open(path).unwrap();
        let txn = database.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        keys.iter().map(|k| t.get(*k).unwrap().is_some()).collect()
    }

    #[test]
    fn a_failing_job_rolls_back_alone_and_the_batch_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let database = Database::create(&path).unwrap();
        let (durable_commits, ok) = batch(&database, &[("a", false), ("b", true), ("c", false)]);
        assert_eq!(durable_commits, 1, "one fsync for the whole batch");
        assert_eq!(ok, [true, false, true]);
        drop(database);
        // `b`'s write was rolled back.
        assert_eq!(held(&path, &["a", "b", "c"]), [true, false, true]);
    }

    #[test]
    fn a_batch_whose_last_job_fails_is_still_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let database = Database::create(&path).unwrap();
        let (durable_commits, ok) = batch(&database, &[("a", false), ("b", true)]);
        assert_eq!(durable_commits, 1);
        assert_eq!(ok, [true, false]);
        // Nothing committed, nothing to make durable.
        let (durable_commits, ok) = batch(&database, &[("c", true)]);
        assert_eq!(durable_commits, 0);
        assert_eq!(ok, [false]);
        drop(database);
        assert_eq!(held(&path, &["a", "b", "c"]), [true, false, false]);
    }

    /// The simulator's virtual clock: a commit, however long the disk takes, must not let a
    /// paused clock jump to the next timer.
    #[tokio::test(start_paused = true)]
    async fn a_write_takes_no_time_on_a_paused_clock() {
        let dir = tempfile::tempdir().unwrap();
        let database =
            Arc::new(Db::open(dir.path().join("db"), 1 << 20, Durability::Flushed).unwrap());
        let writer = Writer::spawn(database, WriteHealth::default(), Failpoints::new(&[])).unwrap();
        // A pending timer for an idle runtime to jump to.
        let timer = tokio::spawn(tokio::time::sleep(std::time::Duration::from_secs(5)));
        let start = tokio::time::Instant::now();
        writer
            .write(|txn| {
                std::thread::sleep(std::time::Duration::from_millis(100));
                txn.open_table(T)
                    .map_err(db)?
                    .insert("slow", 1)
                    .map_err(db)?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        assert_eq!(start.elapsed(), std::time::Duration::ZERO);
        timer.abort();
    }

    /// On a thread that works in place (the simulator's), a write is over, committed, when its
    /// first poll returns: no other thread decides when the caller goes on.
    #[test]
    fn in_place_a_write_is_done_at_its_first_poll() {
        use futures::FutureExt as _;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let database = Arc::new(Db::open(path.clone(), 1 << 20, Durability::Flushed).unwrap());
        let writer = Writer::spawn(database, WriteHealth::default(), Failpoints::new(&[])).unwrap();
        let put = |key: &'static str| {
            let writer = writer.clone();
            async move {
                writer
                    .write(move |txn| {
                        txn.open_table(T).map_err(db)?.insert(key, 1).map_err(db)?;
                        Ok::<_, StoreError>(())
                    })
                    .await
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _inside = runtime.enter();
        assert!(
            put("handed off").now_or_never().is_none(),
            "elsewhere the hand-off is waited for"
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                let _inside = runtime.enter();
                crate::offload::in_place_on_this_thread();
                let done = put("in place").now_or_never();
                assert!(matches!(done, Some(Ok(()))), "{done:?}");
            });
        });
    }
}
