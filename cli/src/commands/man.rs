//! `niso man`: man pages from the same grammar as `--help` (`cli.rs`), so they cannot drift
//! from it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory;

use crate::{cli::Cli, context::Context};

/// The grammar as the pages show it: `niso help` is clap's, not a command of niso's, and its
/// page would only repeat `--help`.
fn grammar() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// A command's page. Every page names niso's version: clap gives only the top command one.
fn page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(format!("niso {}", env!("CARGO_PKG_VERSION")))
}

/// `niso man`: niso(1), in roff, to stdout.
pub fn print() -> anyhow::Result<()> {
    let mut page = Vec::new();
    self::page(grammar())
        .render(&mut page)
        .context("could not render the man page")?;
    crate::output::write_bytes(&page);
    Ok(())
}

/// `niso man --dir DIR`: niso.1 and a page for every command, nested ones included
/// (niso-registry-serve.1).
pub fn write_dir(ctx: &Context, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let mut written = Vec::new();
    write_pages(grammar(), dir, &mut written)?;
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({"dir": dir, "pages": written.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy()).collect::<Vec<_>>()})
        );
    } else {
        outln!("  Wrote {} man pages to {}", written.len(), dir.display());
    }
    Ok(())
}

fn write_pages(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let subcommands: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let man = page(cmd);
    let path = dir.join(man.get_filename());
    man.generate_to(dir)
        .with_context(|| format!("could not write {}", path.display()))?;
    written.push(path);
    for sub in subcommands {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
