//! `niso pack DIR`: a reproducible `.niso` from a directory with `niso.toml` at its root.

use std::{
    fs,
    io::BufWriter,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use niso_protocol::{
    archive::{ArchiveLimits, META_ENTRY, inspect},
    pack::Packer,
};

use crate::{context::Context, progress, units};

enum Item {
    Dir,
    File { executable: bool, size: u64 },
    Symlink(String),
}

pub fn run(ctx: &Context, dir: &Path, output: Option<PathBuf>) -> anyhow::Result<()> {
    let meta_path = dir.join(META_ENTRY);
    let meta_bytes = fs::read(&meta_path).with_context(|| {
        format!(
            "could not read {}; a package directory needs niso.toml at its root",
            meta_path.display()
        )
    })?;
    let items = walk(dir)?;
    let meta = niso_protocol::PackageMeta::parse(&meta_bytes)
        .with_context(|| format!("{} is not valid", meta_path.display()))?;
    if let Some(canonical) = niso_protocol::Arch::canonical_name(meta.arch.as_str()) {
        bail!(
            "{} is not valid: architecture `{}` is spelled `{canonical}` in niso (names follow Rust's, e.g. x86_64, aarch64); use `{canonical}`",
            meta_path.display(),
            meta.arch
        );
    }
    check_bins(&meta, &items, &meta_path)?;
    let output = output.unwrap_or_else(|| PathBuf::from(meta.file_name()));
    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile_in(&out_dir, &output)?;
    let content: u64 = items
        .iter()
        .map(|(_, item)| match item {
            Item::File { size, .. } => *size,
            Item::Dir | Item::Symlink(_) => 0,
        })
        .sum();
    let bar = progress::bytes(
        ctx.progress,
        content,
        &format!("packing {} {}", meta.name, meta.version),
    );
    let result = write_archive(dir, &meta_bytes, &items, &tmp, &bar);
    bar.finish_and_clear();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Check what we wrote the way a registry will, before anyone sees it.
    let file = fs::File::open(&tmp)?;
    if let Err(e) = inspect(std::io::BufReader::new(file), &ArchiveLimits::default()) {
        let _ = fs::remove_file(&tmp);
        return Err(e).context("the packed archive failed its own check");
    }
    fs::rename(&tmp, &output).with_context(|| format!("could not write {}", output.display()))?;
    let size = fs::metadata(&output)?.len();
    let digest =
        crate::local_store::digest_of(&output)?.unwrap_or_else(|| niso_protocol::Digest::of(b""));
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({
                "name": meta.name, "version": meta.version.to_string(), "arch": meta.arch,
                "file": output, "size": size, "digest": digest.to_string(),
            })
        );
    } else {
        outln!(
            "  Packed {} {} ({}) — {} → {}",
            meta.name,
            meta.version,
            meta.arch,
            units::size(size),
            output.display()
        );
        outln!("  {digest}");
    }
    Ok(())
}

/// Every `bin` entry must be a file (or link) of the package, executable: otherwise every
/// client would fail at activation.
fn check_bins(
    meta: &niso_protocol::PackageMeta,
    items: &[(String, Item)],
    meta_path: &Path,
) -> anyhow::Result<()> {
    for bin in &meta.bin {
        match items
            .iter()
            .find(|(path, _)| path == bin)
            .map(|(_, item)| item)
        {
            Some(
                Item::File {
                    executable: true, ..
                }
                | Item::Symlink(_),
            ) => {}
            Some(Item::File { .. }) => bail!(
                "{} lists `{bin}` under `bin`, but it is not executable (chmod +x {bin})",
                meta_path.display()
            ),
            Some(Item::Dir) => bail!(
                "{} lists `{bin}` under `bin`, but it is a directory",
                meta_path.display()
            ),
            None => bail!(
                "{} lists `{bin}` under `bin`, but the directory has no such file",
                meta_path.display()
            ),
        }
    }
    Ok(())
}

fn tempfile_in(dir: &Path, output: &Path) -> anyhow::Result<PathBuf> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package.niso".into());
    Ok(dir.join(format!(".{name}.partial")))
}

fn write_archive(
    dir: &Path,
    meta: &[u8],
    items: &[(String, Item)],
    out: &Path,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let file =
        fs::File::create(out).with_context(|| format!("could not create {}", out.display()))?;
    let mut packer = Packer::new(BufWriter::with_capacity(1 << 20, file), meta)?;
    for (path, item) in items {
        match item {
            Item::Dir => packer.add_dir(path)?,
            Item::Symlink(target) => packer.add_symlink(path, target)?,
            Item::File { executable, size } => {
                let f = fs::File::open(dir.join(path))
                    .with_context(|| format!("could not read {path}"))?;
                packer
                    .add_file(path, *executable, *size, bar.wrap_read(f))
                    .with_context(|| format!("could not pack {path}"))?;
            }
        }
    }
    let writer = packer.finish()?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// Every path under `root` except `niso.toml`, sorted as whole strings, as the packer needs.
fn walk(root: &Path) -> anyhow::Result<Vec<(String, Item)>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let entries =
            fs::read_dir(&abs).with_context(|| format!("could not list {}", abs.display()))?;
        for entry in entries {
            let entry = entry?;
            let rel_path = rel.join(entry.file_name());
            let Some(path) = rel_path.to_str().map(str::to_owned) else {
                bail!("{} is not valid UTF-8; rename it", rel_path.display());
            };
            if path == META_ENTRY {
                continue;
            }
            let meta = entry.metadata()?;
            let kind = meta.file_type();
            let item = if kind.is_symlink() {
                let target = fs::read_link(entry.path())?;
                let Some(target) = target.to_str() else {
                    bail!("symlink {path} has a non-UTF-8 target");
                };
                Item::Symlink(target.to_owned())
            } else if kind.is_dir() {
                stack.push(rel_path);
                Item::Dir
            } else if kind.is_file() {
                Item::File {
                    executable: meta.permissions().mode() & 0o111 != 0,
                    size: meta.len(),
                }
            } else {
                bail!(
                    "{path} is not a regular file, directory or symlink; packages cannot hold it"
                );
            };
            out.push((path, item));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `niso pack --self`: this very binary as `niso-registry-VERSION-ARCH.niso`, whose service
/// runs `niso registry serve` (configured by `$XDG_CONFIG_HOME/niso/registry.toml`).
pub fn pack_self(ctx: &Context, output: Option<PathBuf>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("could not find the running niso binary")?;
    let staging = tempfile::tempdir().context("could not create a staging directory")?;
    let bin = staging.path().join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy(&exe, bin.join("niso"))
        .with_context(|| format!("could not copy {}", exe.display()))?;
    fs::set_permissions(bin.join("niso"), fs::Permissions::from_mode(0o755))?;
    let meta = format!(
        r#"name = "niso-registry"
version = "{version}"
arch = "{arch}"
description = "niso registry node"
bin = ["bin/niso"]

[service]
command = "bin/niso"
args = ["registry", "serve"]
restart = "on-failure"
"#,
        version = env!("CARGO_PKG_VERSION"),
        arch = niso_protocol::Arch::host(),
    );
    fs::write(staging.path().join(META_ENTRY), meta)?;
    run(ctx, staging.path(), output)
}
