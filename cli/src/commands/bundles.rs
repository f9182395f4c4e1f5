//! `niso registry export | import`: bundle files for air-gapped sites.

use std::path::Path;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use niso_protocol::api::BundleHeader;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::{context::Context, progress, registry_client::RegistryClient, units};

pub async fn export(
    ctx: &Context,
    client: &RegistryClient,
    to: &Path,
    packages: &[String],
    since: u64,
) -> anyhow::Result<()> {
    // Before asking the node for anything: a bundle that cannot be written is not worth
    // streaming, and the error should name the directory the user gave, not a temp file.
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "cannot write {}: directory {} does not exist",
            to.display(),
            dir.display()
        );
    }
    let response = client.export(since, packages).await?;
    let part = to.with_extension("partial");
    let mut file = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("could not create {}", part.display()))?,
    );
    let bar = progress::bytes(ctx.progress, 0, "export");
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the export was interrupted")?;
        file.write_all(&chunk).await?;
        bar.inc(chunk.len() as u64);
    }
    file.flush().await?;
    file.get_ref().sync_all().await?;
    bar.finish_and_clear();
    // The node streams; a failure on its side shows up as a truncated tar. Check it whole.
    let check = part.clone();
    let header = tokio::task::spawn_blocking(move || read_header(&check)).await?;
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e.context("the registry sent an incomplete bundle; nothing was written"));
        }
    };
    tokio::fs::rename(&part, to).await?;
    let size = tokio::fs::metadata(to).await?.len();
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&header)?);
    } else {
        outln!(
            "  Exported {} records and {} blobs ({}) to {}",
            header.records,
            header.blobs,
            units::size(size),
            to.display()
        );
        outln!("  Next incremental export: --since {}", header.mark);
    }
    Ok(())
}

/// Reads every tar header of a bundle and returns its `niso-bundle.json`.
fn read_header(path: &Path) -> anyhow::Result<BundleHeader> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let mut header = None;
    let mut last = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.path_bytes().as_ref() == b"niso-bundle.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            header = Some(serde_json::from_str(&text)?);
        }
        last = entry.path_bytes().into_owned();
    }
    // A truncated tar ends without its end-of-archive blocks (`entries` errors above), or,
    // cut at an entry boundary, without the trailer the node always writes last.
    let meta = std::fs::metadata(path)?;
    if last != b"niso-bundle-end.json" || meta.len() % 512 != 0 {
        bail!("the bundle is truncated");
    }
    header.context("the bundle has no niso-bundle.json")
}

pub async fn import(ctx: &Context, client: &RegistryClient, file: &Path) -> anyhow::Result<()> {
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("could not open {}", file.display()))?;
    let size = f.metadata().await?.len();
    let bar = progress::bytes(ctx.progress, size, "import");
    let bar2 = bar.clone();
    let stream = ReaderStream::with_capacity(f, 256 * 1024).inspect(move |c| {
        if let Ok(c) = c {
            bar2.inc(c.len() as u64);
        }
    });
    let report = client
        .import(reqwest::Body::wrap_stream(stream), size)
        .await
        .with_context(|| format!("{} was not imported", file.display()))?;
    bar.finish_and_clear();
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    outln!(
        "  Imported from {}: {} version{}, {} tag update{}, {} deletion{}; {} blob{} ({})",
        report.source,
        report.versions,
        units::plural(report.versions),
        report.tags,
        units::plural(report.tags),
        report.deletions,
        units::plural(report.deletions),
        report.blobs,
        units::plural(report.blobs),
        units::size(report.bytes)
    );
    outln!(
        "  {} already present, {} not accepted by any [[replicate]] rule",
        report.duplicates,
        report.untrusted
    );
    for r in &report.refused {
        outln!("  Refused: {r}");
    }
    Ok(())
}
