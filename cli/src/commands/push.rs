//! `niso push FILE`: a resumable upload, then verification and publication by the registry.
//!
//! A broken connection is retried with backoff from the offset the registry reports, waiting
//! out the lease a dead request still holds and a registry that is briefly away (restarting).
//! Every upload is recorded in the client's state dir, so a push that stops for good (Ctrl-C,
//! killed, the registry gone longer than the wait) is resumed by the next push of the same
//! file to the same registry; what nobody resumes expires on the registry once idle. Bytes
//! the registry already holds under the package need no upload at all.

use std::{
    io::SeekFrom,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use niso_protocol::{PackageMeta, api::Published, archive::read_meta};
use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncSeekExt},
    signal::unix::{SignalKind, signal},
};
use tokio_util::io::ReaderStream;

use crate::{
    context::Context,
    exit::{Hinted, Interrupted},
    failpoints::Failpoints,
    pending_upload::PendingUpload,
    progress,
    registry_client::{ClientError, Opened, RegistryClient},
    units,
};

/// Attempts in a row that move no byte forward before the push gives up; an attempt that
/// makes progress starts the count again, so a link that breaks every few megabytes still
/// gets the whole file through.
const FRUITLESS_ATTEMPTS: u32 = 5;
/// How long to wait for the registry to let go of an upload a dead request still holds: it
/// lets go when it notices the connection is gone, or after its body-idle timeout (30 s by
/// default) at the latest.
const BUSY_WAIT: Duration = Duration::from_secs(40);
/// How long cancelling after Ctrl-C may take before the client gives up and exits anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(15);
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a registry that stopped answering mid-push (restarting, say) is waited for.
const OUTAGE_WAIT: Duration = Duration::from_secs(60);
/// The longest pause between attempts once backoff has grown.
const MAX_PAUSE: Duration = Duration::from_secs(5);

pub async fn run(ctx: &Context, client: &RegistryClient, file: &Path) -> anyhow::Result<()> {
    let path = file.to_owned();
    let (meta, digest, size) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let f = std::fs::File::open(&path)
            .with_context(|| format!("could not open {}", path.display()))?;
        let meta = read_meta(std::io::BufReader::new(f))
            .with_context(|| format!("{} is not a .niso package", path.display()))?;
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_mmap_rayon(&path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let size = std::fs::metadata(&path)?.len();
        Ok((meta, niso_protocol::Digest::from(hasher.finalize()), size))
    })
    .await??;
    let digest = digest.to_string();

    // Until here Ctrl-C simply ends the process: nothing exists on the registry yet. From
    // here on it is ours to handle, so an upload about to be opened gets cancelled.
    let mut interrupt = signal(SignalKind::interrupt()).context("could not listen for Ctrl-C")?;
    let (pending, offset, saved) = match resume(ctx, client, &meta, &digest, size).await? {
        Some((pending, offset)) => (pending, offset, true),
        None => {
            let opened = client
                .create_upload(meta.name.as_str(), &digest)
                .await
                .with_context(|| {
                    format!(
                        "could not start uploading {} to {}",
                        meta.name, client.target.name
                    )
                })?;
            match opened {
                Opened::AlreadyPublished(published) => {
                    return report(ctx, &digest, StatusCode::OK, &published);
                }
                Opened::Upload(status) => {
                    let pending = PendingUpload {
                        registry: client.target.url.clone(),
                        package: meta.name.to_string(),
                        digest: digest.clone(),
                        id: status.id,
                    };
                    // Without the record a later push cannot resume; this push itself is fine.
                    let saved = match pending.save(&ctx.state_home) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "could not record the upload for resuming");
                            false
                        }
                    };
                    (pending, status.offset, saved)
                }
            }
        }
    };

    let bar = progress::bytes(
        ctx.progress,
        size,
        &format!("{} {}", meta.name, meta.version),
    );
    bar.set_position(offset);
    let failpoints = Failpoints::new(&ctx.failpoints);
    let upload = Upload {
        client,
        pending: &pending,
        file,
        size,
        bar: &bar,
        failpoints: &failpoints,
        quiet: ctx.json,
    };
    let outcome = tokio::select! {
        outcome = upload.run(offset) => outcome,
        _ = interrupt.recv() => {
            bar.abandon();
            if saved {
                return Err(kept_after_interrupt(&pending, bar.position(), size));
            }
            // Nothing could resume it: free the registry's slot rather than leave it to expire.
            return Err(cancel_after_interrupt(ctx, client, &pending, &mut interrupt).await);
        }
    };
    match outcome {
        Ok((status, published)) => {
            bar.finish_and_clear();
            pending.forget(&ctx.state_home);
            report(ctx, &digest, status, &published)
        }
        Err(failure) => {
            bar.abandon();
            if failure.resumable {
                Err(failure.error)
            } else {
                // Best effort: free the registry's slot now rather than at its idle timeout.
                let _ = client.cancel_upload(&pending.id).await;
                pending.forget(&ctx.state_home);
                Err(failure.error)
            }
        }
    }
}

/// The upload an earlier push of this file to this registry left open, and where it stands.
async fn resume(
    ctx: &Context,
    client: &RegistryClient,
    meta: &PackageMeta,
    digest: &str,
    size: u64,
) -> anyhow::Result<Option<(PendingUpload, u64)>> {
    let Some(pending) = PendingUpload::load(
        &ctx.state_home,
        &client.target.url,
        meta.name.as_str(),
        digest,
    ) else {
        return Ok(None);
    };
    let deadline = Instant::now() + BUSY_WAIT;
    let status = loop {
        match client.upload_status(&pending.id).await {
            Err(e) if e.code() == Some("upload_busy") && Instant::now() < deadline => {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => break other,
        }
    };
    match status {
        Ok(status) if status.offset <= size => {
            if !ctx.json {
                eprintln!(
                    "  Resuming the upload of {} {} left by an earlier push at {} of {}",
                    meta.name,
                    meta.version,
                    units::size(status.offset),
                    units::size(size)
                );
            }
            tracing::info!(upload = %pending.id, offset = status.offset, size, "resuming upload");
            Ok(Some((pending, status.offset)))
        }
        Ok(status) => {
            // More bytes than this file has: not an upload of this file after all.
            tracing::warn!(upload = %pending.id, offset = status.offset, size, "recorded upload is larger than the file; starting again");
            let _ = client.cancel_upload(&pending.id).await;
            pending.forget(&ctx.state_home);
            Ok(None)
        }
        // Finished, cancelled, expired, or opened by another key: start afresh.
        Err(e) if e.status() == Some(404) => {
            pending.forget(&ctx.state_home);
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "could not check the upload an earlier push left on {}",
            client.target.name
        ))),
    }
}

/// After Ctrl-C, with the upload recorded: keep it for the next push of the file, and say how
/// to get rid of it instead.
fn kept_after_interrupt(pending: &PendingUpload, sent: u64, size: u64) -> anyhow::Error {
    Interrupted(format!(
        "interrupted after {} of {}; the registry keeps what it received: push the same file again to resume, or discard it with `niso registry uploads --cancel {}`",
        units::size(sent),
        units::size(size),
        pending.id
    ))
    .into()
}

/// After Ctrl-C when the upload could not be recorded (so no later push can resume it):
/// cancel it so nothing is left on the registry, then report.
async fn cancel_after_interrupt(
    ctx: &Context,
    client: &RegistryClient,
    pending: &PendingUpload,
    interrupt: &mut tokio::signal::unix::Signal,
) -> anyhow::Error {
    // The aborted PATCH closed its connection; the registry frees the upload once it notices.
    let cancel = async {
        let deadline = Instant::now() + CANCEL_WAIT;
        loop {
            match client.cancel_upload(&pending.id).await {
                Err(e) if e.code() == Some("upload_busy") && Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => break other,
            }
        }
    };
    let cancelled = tokio::select! {
        result = tokio::time::timeout(CANCEL_WAIT, cancel) => result.ok(),
        // A second Ctrl-C: stop trying and leave the upload to be resumed or to expire.
        _ = interrupt.recv() => None,
    };
    match cancelled {
        Some(Ok(())) => {
            pending.forget(&ctx.state_home);
            Interrupted("interrupted; the upload was cancelled and nothing is left on the registry".to_owned()).into()
        }
        Some(Err(e)) if e.status() == Some(404) => {
            pending.forget(&ctx.state_home);
            Interrupted("interrupted; the upload had already ended on the registry".to_owned())
                .into()
        }
        Some(Err(e)) => anyhow::Error::new(e).context(Interrupted(
            "interrupted, but the upload could not be cancelled; pushing the same file again resumes it, or it expires once idle".to_owned(),
        )),
        None => Interrupted(
            "interrupted before the upload was cancelled; pushing the same file again resumes it, or it expires once idle".to_owned(),
        )
        .into(),
    }
}

/// Why a push stopped, and whether its upload is worth keeping for the next push.
struct Failure {
    error: anyhow::Error,
    resumable: bool,
}

/// Sending one file's bytes into an open upload and finishing it.
struct Upload<'a> {
    client: &'a RegistryClient,
    pending: &'a PendingUpload,
    file: &'a Path,
    size: u64,
    bar: &'a indicatif::ProgressBar,
    failpoints: &'a Failpoints,
    /// `--json`: no notices on stderr.
    quiet: bool,
}

impl Upload<'_> {
    async fn run(&self, mut offset: u64) -> Result<(StatusCode, Published), Failure> {
        let id = &self.pending.id;
        let mut attempt = 0;
        let mut fruitless = 0;
        loop {
            while offset < self.size {
                attempt += 1;
                let e = match self.send_from(offset).await {
                    Ok(new_offset) => {
                        offset = new_offset;
                        continue;
                    }
                    Err(e) if retryable(&e) => e,
                    Err(e) => return Err(self.failed(e, attempt)),
                };
                tracing::info!(error = %e, attempt, offset, "upload interrupted, resuming");
                let before = offset;
                offset = match self.current_offset().await {
                    Ok(now) => now,
                    // The registry never answered again: the error that started it says most.
                    Err(ClientError::Unreachable { .. }) => return Err(self.failed(e, attempt)),
                    Err(status) => return Err(self.failed(status.into(), attempt)),
                };
                self.bar.set_position(offset);
                if offset > before {
                    fruitless = 0;
                    continue;
                }
                fruitless += 1;
                if fruitless >= FRUITLESS_ATTEMPTS {
                    return Err(self.failed(e, attempt));
                }
                tokio::time::sleep(backoff(fruitless)).await;
            }
            match self.client.finish_upload(id, &self.pending.digest).await {
                Ok(done) => return Ok(done),
                // The registry went away while verifying: once it is back, the upload is
                // either still there (finish again) or was published just before it went.
                Err(e) if e.is_away() && fruitless < FRUITLESS_ATTEMPTS => {
                    fruitless += 1;
                    match self.current_offset().await {
                        Ok(now) => offset = now,
                        Err(gone) if gone.status() == Some(404) => {
                            return self.published_meanwhile(e).await;
                        }
                        Err(_) => return Err(self.not_accepted(e)),
                    }
                }
                Err(e) => return Err(self.not_accepted(e)),
            }
        }
    }

    /// Where the upload stands on the registry, waiting out the lease a broken request still
    /// holds (`upload_busy`) and a registry that is briefly away, each for a bounded time.
    async fn current_offset(&self) -> Result<u64, ClientError> {
        let busy_until = Instant::now() + BUSY_WAIT;
        let mut outage: Option<Instant> = None;
        let mut pause = RETRY_PAUSE;
        loop {
            match self.client.upload_status(&self.pending.id).await {
                Ok(status) => {
                    if outage.is_some() {
                        self.notice(&format!(
                            "  {} answers again; resuming at {} of {}",
                            self.client.target.name,
                            units::size(status.offset),
                            units::size(self.size)
                        ));
                    }
                    return Ok(status.offset);
                }
                Err(e) if e.code() == Some("upload_busy") && Instant::now() < busy_until => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) if e.is_away() => {
                    let since = *outage.get_or_insert_with(|| {
                        self.notice(&format!(
                            "  {} is not answering ({e}); retrying for up to {} s, and pushing the same file again later resumes",
                            self.client.target.name,
                            OUTAGE_WAIT.as_secs()
                        ));
                        Instant::now()
                    });
                    if since.elapsed() >= OUTAGE_WAIT {
                        return Err(e);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a finish whose answer was lost, the upload is gone: the registry published it
    /// just before it went away, or dropped it.
    async fn published_meanwhile(
        &self,
        lost: ClientError,
    ) -> Result<(StatusCode, Published), Failure> {
        match self
            .client
            .create_upload(&self.pending.package, &self.pending.digest)
            .await
        {
            Ok(Opened::AlreadyPublished(published)) => Ok((StatusCode::CREATED, published)),
            Ok(Opened::Upload(fresh)) => {
                let _ = self.client.cancel_upload(&fresh.id).await;
                Err(self.not_accepted(lost))
            }
            Err(_) => Err(self.not_accepted(lost)),
        }
    }

    fn not_accepted(&self, e: ClientError) -> Failure {
        Failure {
            // A registry that never answered, or failed inside, still holds the bytes.
            resumable: e.is_away() || e.status().is_some_and(|s| s >= 500),
            error: anyhow::Error::new(e).context(format!(
                "the registry did not accept {}",
                self.file.display()
            )),
        }
    }

    fn notice(&self, line: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("{line}"));
        }
    }

    fn failed(&self, e: SendError, attempt: u32) -> Failure {
        let context = format!(
            "upload of {} failed after {attempt} attempt(s)",
            self.file.display()
        );
        match e {
            SendError::Client(source) if retryable_client(&source) => Failure {
                error: anyhow::Error::new(Hinted {
                    hint: "the registry keeps what it received: run the same `niso push` again to resume".to_owned(),
                    source,
                })
                .context(context),
                resumable: true,
            },
            e => Failure {
                error: anyhow::Error::new(e).context(context),
                resumable: false,
            },
        }
    }

    async fn send_from(&self, offset: u64) -> Result<u64, SendError> {
        let size = self.size;
        let mut f = tokio::fs::File::open(self.file).await?;
        f.seek(SeekFrom::Start(offset)).await?;
        let reader = f.take(size - offset);
        let bar = self.bar.clone();
        let failpoints = self.failpoints.clone();
        let mut sent = offset;
        let stream = ReaderStream::with_capacity(reader, 256 * 1024).then(move |chunk| {
            if let Ok(c) = &chunk {
                sent += c.len() as u64;
            }
            let (bar, failpoints, reached) = (bar.clone(), failpoints.clone(), sent);
            async move {
                if reached >= size / 2 {
                    failpoints.kill_if_armed("push-killed-midway");
                    if failpoints.armed("push-stalled-midway") {
                        std::future::pending::<()>().await;
                    }
                }
                if let Ok(c) = &chunk {
                    bar.inc(c.len() as u64);
                }
                chunk
            }
        });
        let status = self
            .client
            .append_upload(
                &self.pending.id,
                offset,
                size - offset,
                reqwest::Body::wrap_stream(stream),
            )
            .await?;
        Ok(status.offset)
    }
}

fn report(
    ctx: &Context,
    digest: &str,
    status: StatusCode,
    published: &Published,
) -> anyhow::Result<()> {
    if published.digest != digest {
        bail!(crate::exit::VerificationFailed(format!(
            "the registry recorded digest {} but the file is {digest}",
            published.digest
        )));
    }
    if ctx.json {
        outln!("{}", serde_json::to_string(&published)?);
    } else if status == StatusCode::CREATED {
        outln!(
            "  Uploaded {} {} ({}) — {}",
            published.name,
            published.version,
            published.arch,
            units::size(published.size)
        );
    } else {
        outln!(
            "  Already published {} {} ({}) with identical contents — {}",
            published.name,
            published.version,
            published.arch,
            units::size(published.size)
        );
    }
    Ok(())
}

/// Why one attempt at sending bytes stopped.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("could not read the package file")]
    Local(#[from] std::io::Error),
}

/// The pause before the next attempt after `fruitless` attempts in a row moved nothing.
fn backoff(fruitless: u32) -> Duration {
    (RETRY_PAUSE * 2u32.saturating_pow(fruitless)).min(MAX_PAUSE)
}

/// Interruptions worth resuming: the connection broke or the node reported a partial body.
fn retryable(e: &SendError) -> bool {
    match e {
        SendError::Client(e) => retryable_client(e),
        SendError::Local(_) => false,
    }
}

fn retryable_client(e: &ClientError) -> bool {
    e.is_away()
        || matches!(
            e.code(),
            Some("upload_interrupted" | "upload_stalled" | "offset_mismatch" | "upload_busy")
        )
}
