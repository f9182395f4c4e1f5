//! Writing `.niso` archives reproducibly: the same inputs always give the same bytes.
//!
//! Reproducibility comes from fixed headers (mtime 0, uid/gid 0, no user names, modes reduced
//! to 0644/0755), entries in strictly increasing path order, and single-threaded zstd at a
//! fixed level. The caller walks the file system; this module only formats.

use std::io::{self, Read, Write};

use crate::{
    archive::{META_ENTRY, check_entry_path},
    package_meta::PackageMeta,
};

/// zstd level used for every archive. Changing it changes every package's bytes.
pub const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("invalid niso.toml")]
    Meta(#[from] crate::package_meta::MetaError),
    #[error("path `{path}` is not allowed: {problem}")]
    BadPath {
        path: String,
        problem: crate::archive::PathProblem,
    },
    #[error("symlink `{path}` points outside the package (to `{target}`)")]
    EscapingLink { path: String, target: String },
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
}

impl<W: Write> Packer<W> {
    /// Starts an archive whose metadata is `meta_toml`, validated first.
    pub fn new(out: W, meta_toml: &[u8]) -> Result<Self, PackError> {
        let meta = PackageMeta::parse(meta_toml)?;
        let encoder = zstd::Encoder::new(out, ZSTD_LEVEL)?;
        let mut builder = tar::Builder::new(encoder);
        builder.mode(tar::HeaderMode::Deterministic);
        let mut packer = Self {
            builder,
            previous: String::new(),
            meta,
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

    fn next_path(&mut self, path: &str) -> Result<(), PackError> {
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
        path.clone_into(&mut self.previous);
        Ok(())
    }

    pub fn add_dir(&mut self, path: &str) -> Result<(), PackError> {
        self.next_path(path)?;
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
        self.next_path(path)?;
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

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), PackError> {
        self.next_path(path)?;
        let escapes = || PackError::EscapingLink {
            path: path.to_owned(),
            target: target.to_owned(),
        };
        if target.is_empty() || target.starts_with('/') {
            return Err(escapes());
        }
        let mut depth: i64 = path.matches('/').count() as i64;
        for component in target.split('/') {
            match component {
                "" | "." => {}
                ".." => depth -= 1,
                _ => depth += 1,
            }
            if depth < 0 {
                return Err(escapes());
            }
        }
        let mut header = self.header(tar::EntryType::Symlink, 0o777);
        self.builder.append_link(&mut header, path, target)?;
        Ok(())
    }

    /// Ends the tar stream and the zstd frame, returning the writer.
    pub fn finish(self) -> Result<W, PackError> {
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
            p.add_symlink("d", "../x"),
            Err(PackError::EscapingLink { .. })
        ));
        assert!(matches!(
            p.add_file("e", false, 10, &b"short"[..]),
            Err(PackError::SizeChanged { .. })
        ));
    }
}
