//! Writing `.niso` archives reproducibly: the same inputs always give the same bytes.
//!
//! Reproducibility comes from fixed headers (mtime 0, uid/gid 0, no user names, modes reduced
//! to 0644/0755), entries in strictly increasing path order, and single-threaded zstd at a
//! fixed level and window. The caller walks the file system; this module only formats.
//!
//! The packer keeps the same model of the tree that [`crate::archive::inspect`] builds and
//! refuses what it would refuse, so a bad tree fails here rather than after it is written.

use std::io::{self, Read, Write};

use crate::{
    archive::{ArchiveError, EntryKind, META_ENTRY, Tree, check_entry_path, check_link_target},
    package_meta::PackageMeta,
};

/// zstd level used for every archive. Changing it changes every package's bytes.
pub const ZSTD_LEVEL: i32 = 3;

/// zstd window of every archive, as a power of two: 2 MiB, what level 3 picks by itself for a
/// stream of unknown length, pinned so that a change of level cannot take it past the
/// readers' cap ([`crate::archive::MAX_WINDOW_LOG`]).
pub const PACK_WINDOW_LOG: u32 = 21;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("invalid niso.toml")]
    Meta(#[from] crate::package_meta::MetaError),
    #[error("path `{path}` is not allowed: {problem}")]
    BadPath {
        path: String,
        problem: crate::archive::PathProblem,
    },
    #[error(transparent)]
    Tree(#[from] ArchiveError),
    #[error("entries must be added in sorted order, `{path}` came after `{previous}`")]
    Unsorted { path: String, previous: String },
    #[error("`{0}` is reserved for the package metadata")]
    Reserved(String),
    #[error("file `{path}` changed size while packing (expected {expected} bytes)")]
    SizeChanged { path: String, expected: u64 },
    #[error("could not write the archive")]
    Io(#[from] io::Error),
}

/// Streams entries into a `.niso` archive. `niso.toml` is written first by [`Packer::new`].
pub struct Packer<W: Write> {
    builder: tar::Builder<zstd::Encoder<'static, W>>,
    previous: String,
    meta: PackageMeta,
    tree: Tree,
}

impl<W: Write> Packer<W> {
    /// Starts an archive whose metadata is `meta_toml`, validated first.
    pub fn new(out: W, meta_toml: &[u8]) -> Result<Self, PackError> {
        let meta = PackageMeta::parse(meta_toml)?;
        let mut encoder = zstd::Encoder::new(out, ZSTD_LEVEL)?;
        encoder.window_log(PACK_WINDOW_LOG)?;
        let mut builder = tar::Builder::new(encoder);
        builder.mode(tar::HeaderMode::Deterministic);
        // The packer is handed a local directory, so it sets no bound on the entry count;
        // `niso pack` checks its output against the registries' default limits.
        let mut tree = Tree::new(u64::MAX);
        tree.insert(META_ENTRY, EntryKind::File)?;
        let mut packer = Self {
            builder,
            previous: String::new(),
            meta,
            tree,
        };
        let mut header = packer.header(tar::EntryType::Regular, 0o644);
        header.set_size(meta_toml.len() as u64);
        packer
            .builder
            .append_data(&mut header, META_ENTRY, meta_toml)?;
        Ok(packer)
    }

    pub fn meta(&self) -> &PackageMeta {
        &self.meta
    }

    fn header(&self, kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header
    }

    fn next_path(&mut self, path: &str, kind: EntryKind) -> Result<(), PackError> {
        check_entry_path(path).map_err(|problem| PackError::BadPath {
            path: path.to_owned(),
            problem,
        })?;
        if path == META_ENTRY {
            return Err(PackError::Reserved(path.to_owned()));
        }
        if !self.previous.is_empty() && path <= self.previous.as_str() {
            return Err(PackError::Unsorted {
                path: path.to_owned(),
                previous: self.previous.clone(),
            });
        }
        self.tree.insert(path, kind)?;
        path.clone_into(&mut self.previous);
        Ok(())
    }

    pub fn add_dir(&mut self, path: &str) -> Result<(), PackError> {
        self.next_path(path, EntryKind::Dir)?;
        let mut header = self.header(tar::EntryType::Directory, 0o755);
        self.builder
            .append_data(&mut header, format!("{path}/"), io::empty())?;
        Ok(())
    }

    /// Adds a regular file of exactly `size` bytes read from `data`.
    pub fn add_file(
        &mut self,
        path: &str,
        executable: bool,
        size: u64,
        data: impl Read,
    ) -> Result<(), PackError> {
        self.next_path(path, EntryKind::File)?;
        let mode = if executable { 0o755 } else { 0o644 };
        let mut header = self.header(tar::EntryType::Regular, mode);
        header.set_size(size);
        let mut counted = ExactReader {
            inner: data,
            remaining: size,
        };
        self.builder
            .append_data(&mut header, path, &mut counted)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    PackError::SizeChanged {
                        path: path.to_owned(),
                        expected: size,
                    }
                } else {
                    PackError::Io(e)
                }
            })?;
        Ok(())
    }

    /// Adds a symlink. Where it leads can depend on entries not added yet, so links are
    /// resolved against the whole tree by [`Packer::finish`]; only what the target alone
    /// shows (absolute, empty, too long) is refused here.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), PackError> {
        check_link_target(path, target)?;
        self.next_path(path, EntryKind::Symlink(target.into()))?;
        let mut header = self.header(tar::EntryType::Symlink, 0o777);
        self.builder.append_link(&mut header, path, target)?;
        Ok(())
    }

    /// Checks every symlink against the finished tree, with the rules of
    /// [`crate::archive::inspect`], then ends the tar stream and the zstd frame, returning the
    /// writer. On an error the archive is left unfinished, so it cannot be read as valid.
    pub fn finish(self) -> Result<W, PackError> {
        self.tree.check_links()?;
        let encoder = self.builder.into_inner()?;
        Ok(encoder.finish()?)
    }
}

/// Reads exactly `remaining` bytes, failing if the source is shorter, and stops there even if
/// it is longer: a file that changes while it is packed cannot corrupt the archive.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &[u8] = b"name = \"demo\"\nversion = \"0.1.0\"\narch = \"any\"\n";

    fn build() -> Vec<u8> {
        let mut p = Packer::new(Vec::new(), META).unwrap();
        p.add_dir("a").unwrap();
        p.add_file("a/x", false, 3, &b"xyz"[..]).unwrap();
        p.add_file("b", true, 0, io::empty()).unwrap();
        p.finish().unwrap()
    }

    #[test]
    fn same_input_same_bytes() {
        assert_eq!(build(), build());
    }

    #[test]
    fn enforces_order_and_paths() {
        let mut p = Packer::new(Vec::new(), META).unwrap();
        p.add_file("b", false, 0, io::empty()).unwrap();
        assert!(matches!(
            p.add_file("a", false, 0, io::empty()),
            Err(PackError::Unsorted { .. })
        ));
        assert!(matches!(
            p.add_file("c/../../x", false, 0, io::empty()),
            Err(PackError::BadPath { .. })
        ));
        assert!(matches!(
            p.add_symlink("d", "/etc"),
            Err(PackError::Tree(ArchiveError::EscapingLink { .. }))
        ));
        assert!(matches!(
            p.add_file("e", false, 10, &b"short"[..]),
            Err(PackError::SizeChanged { .. })
        ));
        p.add_file("f", false, 0, io::empty()).unwrap();
        assert!(matches!(
            p.add_file("f/x", false, 0, io::empty()),
            Err(PackError::Tree(ArchiveError::ThroughNonDir { .. }))
        ));
    }

    #[test]
    fn refuses_what_inspect_refuses_at_finish() {
        // The chain of issue 9, in the order `niso pack` adds it.
        let mut links = vec![("d".to_owned(), ".".to_owned())];
        links.push(("up1".to_owned(), "d/d/..".to_owned()));
        for n in 2..=12 {
            links.push((format!("up{n}"), format!("d/up{}/..", n - 1)));
        }
        links.push(("etc-passwd".to_owned(), "up12/etc/passwd".to_owned()));
        links.sort();
        let mut p = Packer::new(Vec::new(), META).unwrap();
        for (path, target) in &links {
            p.add_symlink(path, target).unwrap();
        }
        match p.finish() {
            Err(PackError::Tree(ArchiveError::EscapingLink { path, .. })) => {
                assert_eq!(path, "up1");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }

        // `x/..` is the root only if `x` is a directory: here it is `a/b`, so `..` twice
        // lands back at the root and the link stays inside.
        let mut p = Packer::new(Vec::new(), META).unwrap();
        p.add_dir("a").unwrap();
        p.add_dir("a/b").unwrap();
        p.add_symlink("l", "x/../../a").unwrap();
        p.add_symlink("x", "a/b").unwrap();
        let bytes = p.finish().unwrap();
        crate::archive::inspect(&bytes[..], &crate::archive::ArchiveLimits::default()).unwrap();
    }

    #[test]
    fn pinned_window_keeps_the_bytes_of_level_3() {
        // Pinning the window must not change any package's bytes.
        for size in [0usize, 1000, 300_000, 3 << 20] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let mut plain = zstd::Encoder::new(Vec::new(), ZSTD_LEVEL).unwrap();
            let mut pinned = zstd::Encoder::new(Vec::new(), ZSTD_LEVEL).unwrap();
            pinned.window_log(PACK_WINDOW_LOG).unwrap();
            for chunk in data.chunks(512) {
                plain.write_all(chunk).unwrap();
                pinned.write_all(chunk).unwrap();
            }
            assert_eq!(plain.finish().unwrap(), pinned.finish().unwrap(), "{size}");
        }
    }
}
