//! The single database writer. Every change goes through one thread that groups the jobs
//! waiting in its queue into one redb transaction, so a burst of pushes costs one fsync.
//!
//! Each job runs in its own transaction committed without an fsync, so a job that returns an
//! error is rolled back alone; one empty durable commit then makes the whole batch durable.
//! A job's reply is sent only after that durable commit, unless the job asked to hear back
//! once its own commit is visible (`write_visible`, for state a crash may take back); a
//! barrier then waits until everything answered before it is durable. On a current-thread
//! runtime the hand-off runs in a blocking task, so a paused clock stands still while the
//! disk works.
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

/// When a write's caller hears back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// After the batch's durable commit.
    Durable,
    /// After the job's own commit, before the batch is durable ([`Writer::write_visible`]).
    Committed,
}

/// What waits in the writer's queue.
enum Queued {
    Write(Job, Answer),
    /// Answered when the writer takes it from the queue ([`Writer::barrier`]).
    Barrier(oneshot::Sender<Result<(), StoreError>>),
}

/// A cloneable handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Queued>,
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
        let (tx, rx) = mpsc::channel::<Queued>(QUEUE_DEPTH);
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
        self.send(Queued::Write(job, Answer::Durable), reply)
            .await
            .map_err(E::from)?
    }

    /// Runs `f` inside a write transaction and returns its result once it is committed and
    /// visible to readers, without waiting for its batch's flush. The write becomes durable
    /// a moment later with the rest of its batch, or is lost with it (a crash, or a failed
    /// flush, which this caller does not hear of): for state that may vanish until a later
    /// [`Self::barrier`] says it is durable.
    pub async fn write_visible<T, E>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (job, reply) = job(f);
        self.send(Queued::Write(job, Answer::Committed), reply)
            .await
            .map_err(E::from)?
    }

    /// Returns once every write answered before this call is durable, including those of
    /// [`Self::write_visible`]. The writer answers it as it takes it from its queue, when
    /// the batches before it have ended; if the last of them failed to flush, so does this.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        let (done, reply) = oneshot::channel();
        self.send(Queued::Barrier(done), reply).await?
    }

    async fn send<R: Send + 'static>(
        &self,
        queued: Queued,
        reply: oneshot::Receiver<R>,
    ) -> Result<R, StoreError> {
        if on_current_thread() {
            // Handed off from a blocking task: on a current-thread runtime the clock may be
            // paused (the simulator's virtual time), and it jumps to the next timer whenever
            // the runtime idles. A blocking task in flight holds it still, so a commit takes
            // no simulated time, instead of as long as the host's disk happens to.
            let tx = self.tx.clone();
            return tokio::task::spawn_blocking(move || {
                tx.blocking_send(queued)
                    .map_err(|_| StoreError::WriterGone)?;
                reply.blocking_recv().map_err(|_| StoreError::WriterGone)
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        }
        self.tx
            .send(queued)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        reply.await.map_err(|_| StoreError::WriterGone)
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

fn run(db: &Db, health: &WriteHealth, mut rx: mpsc::Receiver<Queued>, failpoints: &Failpoints) {
    let mut batch: Vec<(Job, Answer)> = Vec::with_capacity(MAX_BATCH);
    let mut batches: u64 = 0;
    let mut reopen = false;
    // The last batch's flush, for barriers: a write answered before it was durable was
    // lost with it if it failed.
    let mut last: Result<(), Arc<StoreError>> = Ok(());
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(queued) = next.take() {
            match queued {
                Queued::Write(job, answer) => batch.push((job, answer)),
                Queued::Barrier(done) => {
                    let _ = done.send(last.clone().map_err(|e| shared(&e)));
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
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
                for (job, _) in batch.drain(..) {
                    job(None).1(Err(e.clone()));
                }
                continue;
            }
        };
        let (finishes, commit) = run_batch(&database, batch.drain(..), || {
            failpoints.hit_blocking("db-commit", batches);
        });
        drop(database);
        last = commit.clone();
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
    jobs: impl Iterator<Item = (Job, Answer)>,
    before_commit: impl FnOnce(),
) -> (Vec<Finish>, Result<(), Arc<StoreError>>) {
    let mut finishes = Vec::new();
    let mut failure: Option<StoreError> = None;
    let mut committed = 0usize;
    for (job, answer) in jobs {
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
        // fsync; the empty durable commit below makes the whole batch durable at once.
        if let Err(e) = txn.set_durability(Durability::None) {
            failure = Some(db(e));
            finishes.push(job(None).1);
            continue;
        }
        let (failed, finish) = job(Some(&txn));
        if failed {
            finishes.push(finish);
            if let Err(e) = txn.abort() {
                failure = Some(db(e));
            }
            continue;
        }
        match txn.commit() {
            Ok(()) => {
                committed += 1;
                match answer {
                    Answer::Committed => finish(Ok(())),
                    Answer::Durable => finishes.push(finish),
                }
            }
            Err(e) => {
                failure = Some(db(e));
                finishes.push(finish);
            }
        }
    }
    if let Some(e) = failure {
        return (finishes, Err(Arc::new(e)));
    }
    if committed == 0 {
        return (finishes, Ok(()));
    }
    before_commit();
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

    #[test]
    fn a_failing_job_rolls_back_alone_and_the_batch_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::create(dir.path().join("db")).unwrap();
        let (a, ra) = put("a", false);
        let (b, rb) = put("b", true);
        let (c, rc) = put("c", false);
        let mut durable_commits = 0;
        let jobs = [a, b, c].map(|job| (job, Answer::Durable));
        let (finishes, commit) = run_batch(&database, jobs.into_iter(), || durable_commits += 1);
        assert!(commit.is_ok());
        assert_eq!(durable_commits, 1, "one fsync for the whole batch");
        for f in finishes {
            f(commit.clone());
        }
        assert!(ra.blocking_recv().unwrap().is_ok());
        assert!(rb.blocking_recv().unwrap().is_err());
        assert!(rc.blocking_recv().unwrap().is_ok());
        drop(database);
        let database = Database::open(dir.path().join("db")).unwrap();
        let txn = database.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        assert!(t.get("a").unwrap().is_some());
        assert!(
            t.get("b").unwrap().is_none(),
            "the failed job's write was rolled back"
        );
        assert!(t.get("c").unwrap().is_some());
    }

    #[test]
    fn a_visible_write_hears_back_before_its_batch_is_flushed_and_is_flushed_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::create(dir.path().join("db")).unwrap();
        let (a, mut ra) = put("a", false);
        let (v, mut rv) = put("v", false);
        let jobs = [(a, Answer::Durable), (v, Answer::Committed)];
        let (finishes, commit) = run_batch(&database, jobs.into_iter(), || {
            assert!(
                rv.try_recv().expect("answered before the flush").is_ok(),
                "the visible write committed"
            );
            assert!(
                ra.try_recv().is_err(),
                "a durable write waits for the flush"
            );
        });
        commit.unwrap();
        for f in finishes {
            f(Ok(()));
        }
        assert!(ra.blocking_recv().unwrap().is_ok());
        drop(database);
        let database = Database::open(dir.path().join("db")).unwrap();
        let txn = database.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        assert!(t.get("v").unwrap().is_some(), "flushed with its batch");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_barrier_is_answered_once_the_batch_before_it_has_ended() {
        let dir = tempfile::tempdir().unwrap();
        let database = Arc::new(Db::open(dir.path().join("db"), 1 << 20).unwrap());
        let writer = Writer::spawn(
            database.clone(),
            WriteHealth::default(),
            Failpoints::new(&[]),
        )
        .unwrap();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let blocked = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |txn| {
                        started_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                        txn.open_table(T).map_err(db)?.insert("a", 1).map_err(db)?;
                        Ok::<_, StoreError>(())
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        let barrier = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.barrier().await })
        };
        // Queued behind the running batch: the queue has one item in it.
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while writer.tx.capacity() == QUEUE_DEPTH {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the barrier reached the queue");
        assert!(
            !barrier.is_finished(),
            "answered while a batch before it ran"
        );
        release.send(()).unwrap();
        barrier.await.unwrap().unwrap();
        let txn = database.get().unwrap().begin_read().unwrap();
        assert!(
            txn.open_table(T).unwrap().get("a").unwrap().is_some(),
            "the write before the barrier was committed first"
        );
        blocked.await.unwrap().unwrap();
    }

    /// The simulator's virtual clock: a commit, however long the disk takes, must not let a
    /// paused clock jump to the next timer.
    #[tokio::test(start_paused = true)]
    async fn a_write_takes_no_time_on_a_paused_clock() {
        let dir = tempfile::tempdir().unwrap();
        let database = Arc::new(Db::open(dir.path().join("db"), 1 << 20).unwrap());
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
}
