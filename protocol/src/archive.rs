//! Reading `.niso` archives safely: the checks every archive passes before a node stores it
//! or a client installs it.
//!
//! A `.niso` file is a zstd-compressed tar stream whose first entry is `niso.toml`. The checks
//! run over a stream, so memory stays flat in the archive's size; only the paths of entries are
//! kept, and their number is capped.

use std::{
    collections::HashMap,
    io::{self, Read},
};

use crate::package_meta::{MAX_META_LEN, MetaError, PackageMeta};

/// Name of the metadata entry, which must come first.
pub const META_ENTRY: &str = "niso.toml";

/// Longest entry path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Bounds an archive must stay within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveLimits {
    pub max_entries: u64,
    pub max_unpacked_bytes: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_unpacked_bytes: 64 * 1024 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a valid .niso archive (zstd-compressed tar)")]
    Malformed(#[source] io::Error),
    #[error("archive is empty; its first entry must be niso.toml")]
    Empty,
    #[error("first entry is `{0}`; it must be niso.toml")]
    MetaNotFirst(String),
    #[error("invalid niso.toml")]
    Meta(#[from] MetaError),
    #[error("entry path is not UTF-8")]
    NonUtf8Path,
    #[error("entry `{path}` is not allowed: {problem}")]
    BadPath { path: String, problem: PathProblem },
    #[error("symlink `{path}` points outside the package (to `{target}`)")]
    EscapingLink { path: String, target: String },
    #[error("symlink `{path}` resolves through another symlink before `..`")]
    LinkThroughLink { path: String },
    #[error("entry `{0}` is a hard link; hard links are not allowed")]
    HardLink(String),
    #[error("entry `{path}` is a {kind}; device files, fifos and sockets are not allowed")]
    Special { path: String, kind: &'static str },
    #[error("entry `{0}` has an unsupported type")]
    Unsupported(String),
    #[error("entry `{0}` appears twice")]
    Duplicate(String),
    #[error("entry `{path}` would be written through `{parent}`, which is not a directory")]
    ThroughNonDir { path: String, parent: String },
    #[error("archive has more than {0} entries")]
    TooManyEntries(u64),
    #[error("archive unpacks to more than {0} bytes")]
    TooLarge(u64),
}

/// Why an entry path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("path is empty")]
    Empty,
    #[error("path is absolute")]
    Absolute,
    #[error("path contains `..`")]
    ParentDir,
    #[error("path contains an empty or `.` component")]
    NotNormal,
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path contains a NUL or backslash")]
    BadChar,
}

/// Checks that `path` is a normalised relative path that stays inside the package root.
/// A single trailing `/` (as tar writes for directories) is allowed.
pub fn check_entry_path(path: &str) -> Result<(), PathProblem> {
    if path.len() > MAX_PATH_LEN {
        return Err(PathProblem::TooLong);
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Err(PathProblem::Empty);
    }
    if trimmed.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    if trimmed.contains(['\0', '\\']) {
        return Err(PathProblem::BadChar);
    }
    for component in trimmed.split('/') {
        match component {
            ".." => return Err(PathProblem::ParentDir),
            "" | "." => return Err(PathProblem::NotNormal),
            _ => {}
        }
    }
    Ok(())
}

/// What a successful inspection learned about an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub meta: PackageMeta,
    pub entries: u64,
    pub unpacked_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

/// Reads only `niso.toml`, the first entry: enough to name a package without unpacking it.
/// This checks nothing else; [`inspect`] is the full check.
pub fn read_meta(reader: impl Read) -> Result<PackageMeta, ArchiveError> {
    let decoder = zstd::Decoder::new(reader).map_err(ArchiveError::Malformed)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(ArchiveError::Malformed)?;
    let mut first = match entries.next() {
        None => return Err(ArchiveError::Empty),
        Some(entry) => entry.map_err(ArchiveError::Malformed)?,
    };
    read_meta_entry(&mut first)
}

fn read_meta_entry<R: Read>(first: &mut tar::Entry<'_, R>) -> Result<PackageMeta, ArchiveError> {
    let path = entry_path(first)?;
    if path != META_ENTRY || first.header().entry_type() != tar::EntryType::Regular {
        return Err(ArchiveError::MetaNotFirst(path));
    }
    if first.size() > MAX_META_LEN {
        return Err(MetaError::TooLarge.into());
    }
    let mut bytes = Vec::new();
    first
        .take(MAX_META_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(ArchiveError::Malformed)?;
    Ok(PackageMeta::parse(&bytes)?)
}

/// Reads a whole `.niso` stream and checks every entry. Returns the package metadata.
///
/// The reader is consumed up to the end of the tar stream; callers hashing the same bytes
/// should drain whatever follows.
pub fn inspect(reader: impl Read, limits: &ArchiveLimits) -> Result<Inspection, ArchiveError> {
    let decoder = zstd::Decoder::new(reader).map_err(ArchiveError::Malformed)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(ArchiveError::Malformed)?;

    let meta = match entries.next() {
        None => return Err(ArchiveError::Empty),
        Some(entry) => read_meta_entry(&mut entry.map_err(ArchiveError::Malformed)?)?,
    };

    let mut kinds: HashMap<String, Kind> = HashMap::new();
    kinds.insert(META_ENTRY.to_owned(), Kind::File);
    let mut links: Vec<(String, String)> = Vec::new();
    let mut count: u64 = 1;
    let mut unpacked: u64 = 0;

    for entry in entries {
        let entry = entry.map_err(ArchiveError::Malformed)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries(limits.max_entries));
        }
        let raw_path = entry_path(&entry)?;
        check_entry_path(&raw_path).map_err(|problem| ArchiveError::BadPath {
            path: raw_path.clone(),
            problem,
        })?;
        let path = raw_path.trim_end_matches('/').to_owned();
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                unpacked = unpacked.saturating_add(entry.size());
                if unpacked > limits.max_unpacked_bytes {
                    return Err(ArchiveError::TooLarge(limits.max_unpacked_bytes));
                }
                Kind::File
            }
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8(b.into_owned()))
                    .transpose()
                    .map_err(|_| ArchiveError::NonUtf8Path)?
                    .unwrap_or_default();
                links.push((path.clone(), target));
                Kind::Symlink
            }
            tar::EntryType::Link => return Err(ArchiveError::HardLink(path)),
            tar::EntryType::Char => return Err(special(path, "character device")),
            tar::EntryType::Block => return Err(special(path, "block device")),
            tar::EntryType::Fifo => return Err(special(path, "fifo")),
            _ => return Err(ArchiveError::Unsupported(path)),
        };
        if kinds.insert(path.clone(), kind).is_some() {
            return Err(ArchiveError::Duplicate(path));
        }
        // The tar reader skips unread entry data itself; dropping the entry reads past it.
    }

    check_tree(&kinds)?;
    for (path, target) in &links {
        check_link(path, target, &kinds)?;
    }
    Ok(Inspection {
        meta,
        entries: count,
        unpacked_bytes: unpacked,
    })
}

fn special(path: String, kind: &'static str) -> ArchiveError {
    ArchiveError::Special { path, kind }
}

fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, ArchiveError> {
    String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| ArchiveError::NonUtf8Path)
}

/// Every entry's ancestors must be directories (or absent): nothing is written through a file
/// or a symlink.
fn check_tree(kinds: &HashMap<String, Kind>) -> Result<(), ArchiveError> {
    for path in kinds.keys() {
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            let parent = &path[..end + pos];
            if matches!(kinds.get(parent), Some(Kind::File | Kind::Symlink)) {
                return Err(ArchiveError::ThroughNonDir {
                    path: path.clone(),
                    parent: parent.to_owned(),
                });
            }
            end += pos + 1;
        }
    }
    Ok(())
}

/// A symlink's target, resolved lexically from the link's directory, must stay inside the
/// package. A `..` that follows a component which is itself a symlink is refused, because its
/// real meaning depends on where that other link points.
fn check_link(path: &str, target: &str, kinds: &HashMap<String, Kind>) -> Result<(), ArchiveError> {
    let escaping = || ArchiveError::EscapingLink {
        path: path.to_owned(),
        target: target.to_owned(),
    };
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(escaping());
    }
    let mut stack: Vec<&str> = path.split('/').collect();
    stack.pop();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                let joined = stack.join("/");
                if !joined.is_empty() && kinds.get(&joined) == Some(&Kind::Symlink) {
                    return Err(ArchiveError::LinkThroughLink {
                        path: path.to_owned(),
                    });
                }
                if stack.pop().is_none() {
                    return Err(escaping());
                }
            }
            normal => stack.push(normal),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::Packer;

    const META: &[u8] = b"name = \"demo\"\nversion = \"1.0.0\"\narch = \"any\"\n";

    /// Builds an archive with raw tar headers, bypassing the packer's own checks, the way a
    /// hostile client would.
    fn raw_archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(META.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, META_ENTRY, META).unwrap();
        build(&mut builder);
        let tar = builder.into_inner().unwrap();
        zstd::encode_all(&tar[..], 3).unwrap()
    }

    fn raw_entry(
        builder: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: tar::EntryType,
        link: Option<&str>,
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(0);
        header.set_mode(0o644);
        // Write the name bytes directly so that `..` and absolute paths survive.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            let ln = &mut header.as_old_mut().linkname;
            ln[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, &[][..]).unwrap();
    }

    fn check(bytes: &[u8]) -> Result<Inspection, ArchiveError> {
        inspect(bytes, &ArchiveLimits::default())
    }

    #[test]
    fn packed_archive_passes() {
        let mut packer = Packer::new(Vec::new(), META).unwrap();
        packer.add_dir("bin").unwrap();
        packer.add_symlink("bin/alias", "demo").unwrap();
        packer.add_file("bin/demo", true, 5, &b"hello"[..]).unwrap();
        packer.add_symlink("top", "bin/../bin/demo").unwrap();
        let bytes = packer.finish().unwrap();
        let insp = check(&bytes).unwrap();
        assert_eq!(insp.meta.name.as_str(), "demo");
        assert_eq!(insp.entries, 5);
        assert_eq!(insp.unpacked_bytes, 5);
    }

    #[test]
    fn rejects_hostile_entries() {
        use tar::EntryType::*;
        let cases: Vec<(&str, tar::EntryType, Option<&str>, &str)> = vec![
            ("../evil", Regular, None, "`..`"),
            ("a/../../evil", Regular, None, "`..`"),
            ("/etc/passwd", Regular, None, "absolute"),
            ("dev", Char, None, "character device"),
            ("blk", Block, None, "block device"),
            ("fifo", Fifo, None, "fifo"),
            ("hard", Link, Some("niso.toml"), "hard link"),
            ("up", Symlink, Some("../outside"), "outside"),
            ("abs", Symlink, Some("/etc"), "outside"),
            ("deep/up", Symlink, Some("../../x"), "outside"),
            ("niso.toml", Regular, None, "twice"),
        ];
        for (path, kind, link, want) in cases {
            let bytes = raw_archive(|b| raw_entry(b, path, kind, link));
            let err = check(&bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{path}: got `{err}`, want `{want}`");
        }
    }

    #[test]
    fn rejects_writing_through_links_and_files() {
        let bytes = raw_archive(|b| {
            raw_entry(b, "link", tar::EntryType::Symlink, Some("."));
            raw_entry(b, "link/x", tar::EntryType::Regular, None);
        });
        assert!(matches!(
            check(&bytes),
            Err(ArchiveError::ThroughNonDir { .. })
        ));

        // `d -> .` then `s -> d/..` escapes in reality while looking harmless lexically.
        let bytes = raw_archive(|b| {
            raw_entry(b, "d", tar::EntryType::Symlink, Some("."));
            raw_entry(b, "s", tar::EntryType::Symlink, Some("d/.."));
        });
        assert!(matches!(
            check(&bytes),
            Err(ArchiveError::LinkThroughLink { .. })
        ));
    }

    #[test]
    fn requires_meta_first() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        builder.append_data(&mut header, "a", &b"x"[..]).unwrap();
        let bytes = zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap();
        assert!(matches!(check(&bytes), Err(ArchiveError::MetaNotFirst(p)) if p == "a"));
        let empty = zstd::encode_all(&[0u8; 1024][..], 3).unwrap();
        assert!(matches!(check(&empty), Err(ArchiveError::Empty)));
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(matches!(
            check(b"definitely not zstd"),
            Err(ArchiveError::Malformed(_))
        ));
        let mut packer = Packer::new(Vec::new(), META).unwrap();
        packer
            .add_file("big", false, 100_000, &vec![7u8; 100_000][..])
            .unwrap();
        let bytes = packer.finish().unwrap();
        assert!(check(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn enforces_limits() {
        let mut packer = Packer::new(Vec::new(), META).unwrap();
        for i in 0..10 {
            packer
                .add_file(&format!("f{i:02}"), false, 1000, &[0u8; 1000][..])
                .unwrap();
        }
        let bytes = packer.finish().unwrap();
        let few = ArchiveLimits {
            max_entries: 5,
            ..ArchiveLimits::default()
        };
        assert!(matches!(
            inspect(&bytes[..], &few),
            Err(ArchiveError::TooManyEntries(5))
        ));
        // A small archive that unpacks to more than the limit: a bomb.
        let small = ArchiveLimits {
            max_unpacked_bytes: 5_000,
            ..ArchiveLimits::default()
        };
        assert!(matches!(
            inspect(&bytes[..], &small),
            Err(ArchiveError::TooLarge(5_000))
        ));
    }

    #[test]
    fn entry_paths() {
        assert_eq!(check_entry_path("a/b/c"), Ok(()));
        assert_eq!(check_entry_path("dir/"), Ok(()));
        assert_eq!(check_entry_path("a//b"), Err(PathProblem::NotNormal));
        assert_eq!(check_entry_path("./a"), Err(PathProblem::NotNormal));
        assert_eq!(check_entry_path("a\\..\\b"), Err(PathProblem::BadChar));
        assert_eq!(check_entry_path(""), Err(PathProblem::Empty));
    }
}
