//! `niso pull NAME[:REF]`: resolve, download (resuming a partial file), verify the digest, and
//! keep the package in the local store.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use niso_protocol::{Arch, PackageName, reference::PackageRef};
use tokio::io::AsyncWriteExt;

use crate::{
    context::Context,
    exit::{Hinted, TransferStopped, VerificationFailed},
    local_store::{claimed_meta, digest_of, package_path},
    progress,
    registry_client::{ClientError, RegistryClient},
    resolved::{Request, ResolvedPackage},
    units,
};

/// Resolves a reference for this machine (its own architecture, or `any`) and accepts the
/// answer only if it is for the package, version and architecture asked.
pub async fn resolve(
    client: &RegistryClient,
    reference: &str,
    arch: Option<&str>,
) -> anyhow::Result<ResolvedPackage> {
    let r: PackageRef = reference.parse()?;
    let arch = match arch {
        Some(a) => crate::arch_arg::parse(a)?,
        None => Arch::host(),
    };
    let answer = match client
        .resolve(r.name.as_str(), r.selector.as_deref(), Some(arch.as_str()))
        .await
    {
        Ok(answer) => answer,
        Err(e @ ClientError::Api { status: 404, .. }) => {
            let suggestions = close_names(client, r.name.as_str()).await;
            let err = if suggestions.is_empty() {
                anyhow::Error::new(e)
            } else {
                anyhow::Error::new(Hinted {
                    hint: format!("similar packages: {}", suggestions.join(", ")),
                    source: e,
                })
            };
            return Err(err.context(format!("cannot pull {reference}")));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot pull {reference}"))),
    };
    ResolvedPackage::from_answer(answer, &Request::new(&r, arch))
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot pull {reference}")))
}

/// Names close to `name` among the packages the key can see, best first.
async fn close_names(client: &RegistryClient, name: &str) -> Vec<String> {
    let Ok(list) = client.list_packages(None).await else {
        return Vec::new();
    };
    if list.packages.iter().any(|p| p.name == name) {
        // The package exists; the reference is what failed, and the message lists options.
        return Vec::new();
    }
    let mut scored: Vec<(f64, String)> = list
        .packages
        .into_iter()
        // Names go into a hint: only what is a package name at all.
        .filter(|p| PackageName::new(p.name.as_str()).is_ok())
        .map(|p| (strsim::jaro_winkler(name, &p.name), p.name))
        .filter(|(score, n)| *score > 0.8 || n.contains(name) || name.contains(n.as_str()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(5).map(|(_, n)| n).collect()
}

pub async fn run(
    ctx: &Context,
    client: &RegistryClient,
    reference: &str,
    arch: Option<&str>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let resolved = resolve(client, reference, arch).await?;
    let path = fetch(ctx, client, &resolved).await?;
    finish(ctx, &resolved, &path, output, None).await
}

/// Round-trip time of `GET /healthz`, or `None` if the registry does not answer in time.
async fn latency(client: &RegistryClient) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    let probe = client.send(client.request(reqwest::Method::GET, "/healthz"));
    match tokio::time::timeout(std::time::Duration::from_secs(3), probe).await {
        Ok(Ok(_)) => Some(start.elapsed()),
        _ => None,
    }
}

/// Pulls from the nearest of `targets` that has the package, trying the others in order of
/// latency when one fails.
pub async fn run_nearest(
    ctx: &Context,
    targets: Vec<crate::client_config::Target>,
    reference: &str,
    arch: Option<&str>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let clients: Vec<RegistryClient> = targets.into_iter().map(RegistryClient::new).collect();
    let probes = futures::future::join_all(clients.iter().map(latency)).await;
    let mut ranked: Vec<(std::time::Duration, RegistryClient)> = clients
        .into_iter()
        .zip(probes)
        .filter_map(|(c, l)| l.map(|l| (l, c)))
        .collect();
    ranked.sort_by_key(|(l, _)| *l);
    if ranked.is_empty() {
        bail!("none of the candidate registries answered");
    }
    let mut last_error = None;
    for (rtt, client) in &ranked {
        let attempt = async {
            let resolved = resolve(client, reference, arch).await?;
            let path = fetch(ctx, client, &resolved).await?;
            Ok::<_, anyhow::Error>((resolved, path))
        }
        .await;
        match attempt {
            Ok((resolved, path)) => {
                let from = format!("{} ({} ms)", client.target.name, rtt.as_millis());
                return finish(ctx, &resolved, &path, output, Some(from)).await;
            }
            Err(e) => {
                tracing::info!(registry = %client.target.name, error = %e, "pull failed, trying the next registry");
                last_error = Some(e.context(format!("from {}", client.target.name)));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no registry had {reference}")))
}

async fn finish(
    ctx: &Context,
    resolved: &ResolvedPackage,
    path: &Path,
    output: Option<PathBuf>,
    from: Option<String>,
) -> anyhow::Result<()> {
    if let Some(out) = &output {
        let dest = if out.is_dir() {
            out.join(path.file_name().unwrap_or_default())
        } else {
            out.clone()
        };
        tokio::fs::copy(&path, &dest)
            .await
            .with_context(|| format!("could not copy the package to {}", dest.display()))?;
    }
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({
                "name": resolved.name, "version": resolved.version.to_string(),
                "arch": resolved.arch, "digest": resolved.digest, "size": resolved.size,
                "description": resolved.description, "path": path, "from": from,
            })
        );
    } else {
        let from = from.map(|f| format!(" from {f}")).unwrap_or_default();
        outln!(
            "  Pulled {} {} ({}){from} — {}",
            resolved.name,
            resolved.version,
            resolved.arch,
            units::size(resolved.size)
        );
        outln!("  Saved to {}", path.display());
    }
    Ok(())
}

/// Makes sure the local store holds the verified package and returns its path: the bytes
/// hash to the resolved digest and their `niso.toml` names the resolved build, or nothing is
/// kept under the package's name.
pub async fn fetch(
    ctx: &Context,
    client: &RegistryClient,
    resolved: &ResolvedPackage,
) -> anyhow::Result<PathBuf> {
    let digest = resolved.digest;
    let dir = ctx.packages_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("could not create {}", dir.display()))?;
    let path = package_path(&dir, &resolved.name, &resolved.version, &resolved.arch);
    let existing = path.clone();
    if tokio::task::spawn_blocking(move || digest_of(&existing)).await?? == Some(digest) {
        check_claim(&path, resolved).await?;
        return Ok(path);
    }
    let part = path.with_extension("niso.part");
    download(ctx, client, resolved, &part).await?;
    let check = part.clone();
    let got = tokio::task::spawn_blocking(move || digest_of(&check)).await??;
    if got != Some(digest) {
        let _ = tokio::fs::remove_file(&part).await;
        bail!(VerificationFailed(format!(
            "downloaded {} {} hashes to {} but the registry lists {digest}; nothing was kept, pull again",
            resolved.name,
            resolved.version,
            got.map(|d| d.to_string()).unwrap_or_default()
        )));
    }
    if let Err(e) = check_claim(&part, resolved).await {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e);
    }
    tokio::fs::rename(&part, &path).await?;
    Ok(path)
}

/// The archive at `path` must say it is the package `resolved` names.
async fn check_claim(path: &Path, resolved: &ResolvedPackage) -> anyhow::Result<()> {
    let file = path.to_owned();
    let meta = match tokio::task::spawn_blocking(move || claimed_meta(&file)).await? {
        Ok(meta) => meta,
        Err(e) => bail!(VerificationFailed(format!(
            "the package the registry sent for {resolved} is not a valid .niso archive ({e:#}); nothing was kept"
        ))),
    };
    resolved.check_meta(&meta)?;
    Ok(())
}

/// Attempts in a row that bring no new byte before a download gives up; an attempt that
/// brings some starts the count again.
const FRUITLESS_ATTEMPTS: u32 = 3;
/// The pause before reconnecting after a broken or silent connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// Why one connection's worth of download stopped.
enum Stopped {
    /// The connection broke or went silent at `reached` bytes: reconnecting may help.
    Broken { reached: u64, why: String },
    /// Anything else: the registry said no, the bytes are wrong, the disk failed.
    Fatal(anyhow::Error),
}

impl From<std::io::Error> for Stopped {
    fn from(e: std::io::Error) -> Self {
        Self::Fatal(anyhow::Error::new(e).context("could not write the download"))
    }
}

/// Streams the blob into `part`, continuing a partial download when one is there, and
/// reconnecting from the last byte kept when a connection breaks or goes silent.
async fn download(
    ctx: &Context,
    client: &RegistryClient,
    resolved: &ResolvedPackage,
    part: &Path,
) -> anyhow::Result<()> {
    let bar = progress::bytes(
        ctx.progress,
        resolved.size,
        &format!("{} {}", resolved.name, resolved.version),
    );
    let mut fruitless = 0;
    loop {
        let have = match tokio::fs::metadata(part).await {
            Ok(m) if m.len() < resolved.size => m.len(),
            _ => 0,
        };
        bar.set_position(have);
        let why = match download_from(ctx, client, resolved, part, have, &bar).await {
            Ok(()) => {
                bar.finish_and_clear();
                return Ok(());
            }
            Err(Stopped::Fatal(e)) => {
                bar.abandon();
                return Err(e);
            }
            Err(Stopped::Broken { reached, why }) => {
                fruitless = if reached > have { 0 } else { fruitless + 1 };
                why
            }
        };
        let at = tokio::fs::metadata(part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        tracing::info!(registry = %client.target.name, at, why, "download interrupted");
        if fruitless >= FRUITLESS_ATTEMPTS {
            bar.abandon();
            bail!(TransferStopped {
                message: format!(
                    "the download of {} {} stopped at {} of {}: {why}",
                    resolved.name,
                    resolved.version,
                    units::size(at),
                    units::size(resolved.size)
                ),
                hint:
                    "the bytes received are kept: run the same command again to resume from there"
                        .to_owned(),
            });
        }
        notice(
            ctx,
            &bar,
            &format!(
                "  {why}; reconnecting to {} to resume at {} of {}",
                client.target.name,
                units::size(at),
                units::size(resolved.size)
            ),
        );
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// One connection's worth of download from byte `have` on. Every wait is bounded by the
/// stall timeout, and a silence of a quarter of it is reported, so a stuck transfer is
/// visible long before it is given up.
async fn download_from(
    ctx: &Context,
    client: &RegistryClient,
    resolved: &ResolvedPackage,
    part: &Path,
    have: u64,
    bar: &indicatif::ProgressBar,
) -> Result<(), Stopped> {
    let stall = ctx.stall_timeout;
    let registry = &client.target.name;
    let silent_for = |d: Duration| format!("no data from {registry} for {} s", d.as_secs());
    let response = match tokio::time::timeout(
        stall,
        client.download(resolved.name.as_str(), &resolved.digest.to_string(), have),
    )
    .await
    {
        Err(_) => {
            return Err(Stopped::Broken {
                reached: have,
                why: silent_for(stall),
            });
        }
        Ok(Err(e)) if e.is_away() => {
            return Err(Stopped::Broken {
                reached: have,
                why: e.to_string(),
            });
        }
        Ok(Err(e)) => {
            return Err(Stopped::Fatal(anyhow::Error::new(e).context(format!(
                "could not download {} {}",
                resolved.name, resolved.version
            ))));
        }
        Ok(Ok(response)) => response,
    };
    let resumed = response.status() == reqwest::StatusCode::PARTIAL_CONTENT;
    let mut file = if resumed {
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(part)
            .await?
    } else {
        tokio::fs::File::create(part).await?
    };
    let mut received = if resumed { have } else { 0 };
    bar.set_position(received);
    let mut file_buf = tokio::io::BufWriter::with_capacity(1 << 20, &mut file);
    let mut stream = response.bytes_stream();
    let tick = (stall / 4).max(Duration::from_secs(1)).min(stall);
    let mut silent = Duration::ZERO;
    // Whatever ends the stream, the bytes received so far reach the disk for the next attempt.
    let ended = loop {
        match tokio::time::timeout(tick, stream.next()).await {
            Err(_) => {
                silent += tick;
                if silent >= stall {
                    break Err(Stopped::Broken {
                        reached: received,
                        why: silent_for(silent),
                    });
                }
                if silent == tick {
                    notice(
                        ctx,
                        bar,
                        &format!(
                            "  {} (at {} of {}); waiting up to {} s before reconnecting",
                            silent_for(silent),
                            units::size(received),
                            units::size(resolved.size),
                            stall.as_secs()
                        ),
                    );
                }
            }
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => {
                break Err(Stopped::Broken {
                    reached: received,
                    why: format!("the connection to {registry} broke ({e})"),
                });
            }
            Ok(Some(Ok(chunk))) => {
                silent = Duration::ZERO;
                received += chunk.len() as u64;
                if received > resolved.size {
                    break Err(Stopped::Fatal(anyhow::Error::new(VerificationFailed(
                        "the registry sent more bytes than the package's size".into(),
                    ))));
                }
                if let Err(e) = file_buf.write_all(&chunk).await {
                    break Err(e.into());
                }
                bar.inc(chunk.len() as u64);
            }
        }
    };
    file_buf.flush().await?;
    file.sync_all().await?;
    ended?;
    if received != resolved.size {
        return Err(Stopped::Broken {
            reached: received,
            why: format!(
                "{registry} ended the download at {} of {} bytes",
                received, resolved.size
            ),
        });
    }
    Ok(())
}

/// A line on stderr about a transfer's trouble, above the progress bar; none under `--json`.
fn notice(ctx: &Context, bar: &indicatif::ProgressBar, line: &str) {
    if !ctx.json {
        bar.suspend(|| eprintln!("{line}"));
    }
}
