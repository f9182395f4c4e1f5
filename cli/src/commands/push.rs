//! `niso push FILE`: a resumable upload, then verification and publication by the registry.

use std::{io::SeekFrom, path::Path};

use anyhow::{Context as _, bail};
use niso_protocol::archive::read_meta;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::{
    context::Context,
    progress,
    registry_client::{ClientError, RegistryClient},
    units,
};

/// Attempts at sending the bytes before giving up; each resumes where the last stopped.
const ATTEMPTS: u32 = 5;

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

    let upload = client
        .create_upload(meta.name.as_str())
        .await
        .with_context(|| {
            format!(
                "could not start uploading {} to {}",
                meta.name, client.target.name
            )
        })?;
    let bar = progress::bytes(
        ctx.progress,
        size,
        &format!("{} {}", meta.name, meta.version),
    );
    let mut offset = 0;
    let mut attempt = 0;
    while offset < size {
        attempt += 1;
        match send_from(client, &upload.id, file, offset, size, &bar).await {
            Ok(new_offset) => offset = new_offset,
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                tracing::info!(error = %e, attempt, "upload interrupted, resuming");
                offset = client.upload_status(&upload.id).await?.offset;
                bar.set_position(offset);
            }
            Err(e) => {
                bar.abandon();
                // Best effort: free the node's partial file now rather than at its next GC.
                let _ = client.cancel_upload(&upload.id).await;
                return Err(anyhow::Error::new(e).context(format!(
                    "upload of {} failed after {attempt} attempt(s)",
                    file.display()
                )));
            }
        }
    }
    bar.finish_and_clear();
    let (status, published) = client
        .finish_upload(&upload.id, &digest.to_string())
        .await
        .with_context(|| format!("the registry did not accept {}", file.display()))?;
    if published.digest != digest.to_string() {
        bail!(crate::exit::VerificationFailed(format!(
            "the registry recorded digest {} but the file is {digest}",
            published.digest
        )));
    }
    if ctx.json {
        outln!("{}", serde_json::to_string(&published)?);
    } else if status == reqwest::StatusCode::CREATED {
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

/// Interruptions worth resuming: the connection broke or the node reported a partial body.
fn retryable(e: &SendError) -> bool {
    match e {
        SendError::Client(e) => {
            matches!(e, ClientError::Unreachable { .. })
                || matches!(
                    e.code(),
                    Some("upload_interrupted" | "offset_mismatch" | "upload_busy")
                )
        }
        SendError::Local(_) => false,
    }
}

async fn send_from(
    client: &RegistryClient,
    id: &str,
    file: &Path,
    offset: u64,
    size: u64,
    bar: &indicatif::ProgressBar,
) -> Result<u64, SendError> {
    let mut f = tokio::fs::File::open(file).await?;
    f.seek(SeekFrom::Start(offset)).await?;
    let reader = f.take(size - offset);
    let bar = bar.clone();
    let stream = futures::StreamExt::inspect(
        ReaderStream::with_capacity(reader, 256 * 1024),
        move |chunk| {
            if let Ok(c) = chunk {
                bar.inc(c.len() as u64);
            }
        },
    );
    let status = client
        .append_upload(
            id,
            offset,
            size - offset,
            reqwest::Body::wrap_stream(stream),
        )
        .await?;
    Ok(status.offset)
}
