//! Reading `.niso` archives safely: the checks every archive passes before a node stores it
//! or a client installs it.
//!
//! A `.niso` file is a zstd-compressed tar stream whose first entry is `niso.toml`. The checks
//! run over a stream, so memory stays flat in the archive's size: the decoder's window is
//! capped, decompression stops once the output outgrows the input by a set ratio, and only a
//! model of the tree (names, kinds, symlink targets) is kept, with its size capped.
//!
//! Symlinks are judged against the whole tree once the stream has ended, so the order of the
//! entries cannot matter: each link's target is resolved the way the kernel will resolve it in
//! the unpacked package (every component looked up, links followed, `..` taken from the
//! directory actually reached), and a link whose resolution ever steps above the package root
//! is refused.

use std::{
    collections::HashMap,
    io::{self, BufReader, Read},
};

use crate::package_meta::{MAX_META_LEN, MetaError, PackageMeta};

/// Name of the metadata entry, which must come first.
pub const META_ENTRY: &str = "niso.toml";

/// Longest entry path, and longest symlink target, accepted, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Largest zstd window a `.niso` frame may ask for, as a power of two: 2^23 bytes = 8 MiB.
///
/// The decoder allocates the window a frame declares before it has produced a byte, and
/// zstd's own default allows 128 MiB, so without a cap a few bytes of upload cost that much
/// memory each. 8 MiB is what `zstd -19`, the strongest level short of `--ultra`, uses;
/// `niso pack` writes 2 MiB windows ([`crate::pack::PACK_WINDOW_LOG`]). This is part of the
/// format rather than a setting, so that every node and client accepts the same archives.
pub const MAX_WINDOW_LOG: u32 = 23;

/// Compressed bytes an archive is credited with at least, for the ratio limit: any archive may
/// unpack to `max_unpack_ratio` times this, so small packages are never refused for it.
pub const RATIO_FLOOR_BYTES: u64 = 1024 * 1024;

/// Most symlinks one resolution may go through, nested, as Linux's `MAXSYMLINKS`: deeper
/// chains would fail with `ELOOP` when used, and refusing them bounds the check itself.
pub const MAX_LINK_HOPS: u32 = 40;

/// Bounds an archive must stay within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Most entries, counting the directories that entry paths imply without listing them.
    pub max_entries: u64,
    /// Largest total size of the regular files.
    pub max_unpacked_bytes: u64,
    /// Most bytes the zstd stream may decompress to per compressed byte read, counted while
    /// streaming against at least [`RATIO_FLOOR_BYTES`] of input.
    pub max_unpack_ratio: u64,
}

/// Default for [`ArchiveLimits::max_unpack_ratio`].
///
/// Real packages (binaries, text, data) compress 2:1 to 20:1 and rarely past 100:1; beyond
/// 200:1 the content is mostly runs of the same bytes, which is what a bomb is made of. The
/// floor lets any archive unpack to 200 MiB whatever its ratio.
pub const DEFAULT_MAX_UNPACK_RATIO: u64 = 200;

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_unpacked_bytes: 64 * 1024 * 1024 * 1024,
            max_unpack_ratio: DEFAULT_MAX_UNPACK_RATIO,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a valid .niso archive (zstd-compressed tar)")]
    Malformed(#[source] io::Error),
    #[error("zstd window is larger than the {} MiB allowed", 1u64 << (MAX_WINDOW_LOG - 20))]
    WindowTooLarge(#[source] io::Error),
    #[error("archive unpacks to more than {0} times its compressed size")]
    TooCompressed(u64),
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
    #[error("symlink `{path}` has a target longer than {MAX_PATH_LEN} bytes")]
    LongLinkTarget { path: String },
    #[error("symlink `{path}` resolves through more than {MAX_LINK_HOPS} symlinks")]
    TooManyLinkHops { path: String },
    #[error("symlink `{path}` resolves through itself")]
    LinkLoop { path: String },
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
    #[error("niso.toml lists `{0}` under `bin`, but the package holds no such file")]
    MissingBin(String),
    #[error("niso.toml's service command `{0}` is not a file in the package")]
    MissingServiceCommand(String),
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

/// A zstd decoder for `.niso` bytes, refusing frames whose window exceeds [`MAX_WINDOW_LOG`]
/// before it allocates it. Anything that decompresses a `.niso` should read through this.
pub fn decoder<R: Read>(reader: R) -> io::Result<zstd::Decoder<'static, BufReader<R>>> {
    let mut decoder = zstd::Decoder::new(reader)?;
    decoder.window_log_max(MAX_WINDOW_LOG)?;
    Ok(decoder)
}

/// Reads only `niso.toml`, the first entry: enough to name a package without unpacking it.
/// This checks nothing else; [`inspect`] is the full check.
pub fn read_meta(reader: impl Read) -> Result<PackageMeta, ArchiveError> {
    let mut archive = tar::Archive::new(decoder(reader).map_err(read_error)?);
    let mut entries = archive.entries().map_err(read_error)?;
    let mut first = match entries.next() {
        None => return Err(ArchiveError::Empty),
        Some(entry) => entry.map_err(read_error)?,
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
        .map_err(read_error)?;
    Ok(PackageMeta::parse(&bytes)?)
}

/// Reads a whole `.niso` stream and checks every entry. Returns the package metadata.
///
/// The reader is consumed up to the end of the tar stream; callers hashing the same bytes
/// should drain whatever follows.
pub fn inspect(reader: impl Read, limits: &ArchiveLimits) -> Result<Inspection, ArchiveError> {
    let counted = CountingReader {
        inner: reader,
        count: 0,
    };
    let guarded = RatioGuard {
        decoder: decoder(counted).map_err(read_error)?,
        produced: 0,
        max_ratio: limits.max_unpack_ratio,
    };
    let mut archive = tar::Archive::new(guarded);
    let mut entries = archive.entries().map_err(read_error)?;

    let meta = match entries.next() {
        None => return Err(ArchiveError::Empty),
        Some(entry) => read_meta_entry(&mut entry.map_err(read_error)?)?,
    };

    let mut tree = Tree::new(limits.max_entries);
    tree.insert(META_ENTRY, EntryKind::File)?;
    let mut count: u64 = 1;
    let mut unpacked: u64 = 0;

    for entry in entries {
        let entry = entry.map_err(read_error)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries(limits.max_entries));
        }
        let raw_path = entry_path(&entry)?;
        check_entry_path(&raw_path).map_err(|problem| ArchiveError::BadPath {
            path: raw_path.clone(),
            problem,
        })?;
        let path = raw_path.trim_end_matches('/');
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                unpacked = unpacked.saturating_add(entry.size());
                if unpacked > limits.max_unpacked_bytes {
                    return Err(ArchiveError::TooLarge(limits.max_unpacked_bytes));
                }
                EntryKind::File
            }
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8(b.into_owned()))
                    .transpose()
                    .map_err(|_| ArchiveError::NonUtf8Path)?
                    .unwrap_or_default();
                check_link_target(path, &target)?;
                EntryKind::Symlink(target.into_boxed_str())
            }
            tar::EntryType::Link => return Err(ArchiveError::HardLink(path.to_owned())),
            tar::EntryType::Char => return Err(special(path, "character device")),
            tar::EntryType::Block => return Err(special(path, "block device")),
            tar::EntryType::Fifo => return Err(special(path, "fifo")),
            _ => return Err(ArchiveError::Unsupported(path.to_owned())),
        };
        tree.insert(path, kind)?;
        // The tar reader skips unread entry data itself; dropping the entry reads past it.
    }

    tree.check_links()?;
    check_declared_files(&meta, &tree)?;
    Ok(Inspection {
        meta,
        entries: count,
        unpacked_bytes: unpacked,
    })
}

/// Every file `niso.toml` promises (executables, a service command given as a path) is in
/// the package, so a package that could never be activated is refused when it is packed or
/// pushed rather than on every client that installs it.
fn check_declared_files(meta: &PackageMeta, tree: &Tree) -> Result<(), ArchiveError> {
    let present = |path: &str| {
        matches!(
            tree.kind_at(path.trim_end_matches('/')),
            Some(EntryKind::File | EntryKind::Symlink(_))
        )
    };
    if let Some(missing) = meta.bin.iter().find(|p| !present(p)) {
        return Err(ArchiveError::MissingBin(missing.clone()));
    }
    if let Some(service) = &meta.service
        && service.command.contains('/')
        && !present(&service.command)
    {
        return Err(ArchiveError::MissingServiceCommand(service.command.clone()));
    }
    Ok(())
}

fn special(path: &str, kind: &'static str) -> ArchiveError {
    ArchiveError::Special {
        path: path.to_owned(),
        kind,
    }
}

fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, ArchiveError> {
    String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| ArchiveError::NonUtf8Path)
}

/// Sorts a read failure into the limit that caused it, if one did. The tar reader hands the
/// decoder's and the guard's errors through unchanged, so they are found by type.
fn read_error(error: io::Error) -> ArchiveError {
    let mut window = false;
    let mut source = error
        .get_ref()
        .map(|e| -> &(dyn std::error::Error + 'static) { e });
    while let Some(e) = source {
        if let Some(inflated) = e.downcast_ref::<Inflated>() {
            return ArchiveError::TooCompressed(inflated.0);
        }
        if e.downcast_ref::<zstd::Error>().is_some_and(|z| {
            z.is(
                zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge,
            )
        }) {
            window = true;
            break;
        }
        source = e.source();
    }
    if window {
        ArchiveError::WindowTooLarge(error)
    } else {
        ArchiveError::Malformed(error)
    }
}

/// Counts the compressed bytes the decoder has taken from the caller's reader.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// The decoder's output, failing as soon as it outgrows the input read so far by more than the
/// ratio, so a bomb costs only the work of decompressing up to the limit.
struct RatioGuard<R: Read> {
    decoder: zstd::Decoder<'static, BufReader<CountingReader<R>>>,
    produced: u64,
    max_ratio: u64,
}

/// The guard's refusal, carried through the tar reader inside an `io::Error`.
#[derive(Debug)]
struct Inflated(u64);

impl std::fmt::Display for Inflated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "archive unpacks to more than {} times its compressed size",
            self.0
        )
    }
}

impl std::error::Error for Inflated {}

impl<R: Read> Read for RatioGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(buf)?;
        self.produced += n as u64;
        let consumed = self.decoder.get_ref().get_ref().count;
        let allowed = self
            .max_ratio
            .saturating_mul(consumed.max(RATIO_FLOOR_BYTES));
        if self.produced > allowed {
            return Err(io::Error::other(Inflated(self.max_ratio)));
        }
        Ok(n)
    }
}

/// Checks what can be said of a symlink's target alone: not empty, not absolute, no NUL, and
/// no longer than an entry path.
pub(crate) fn check_link_target(path: &str, target: &str) -> Result<(), ArchiveError> {
    if target.len() > MAX_PATH_LEN {
        return Err(ArchiveError::LongLinkTarget {
            path: path.to_owned(),
        });
    }
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(ArchiveError::EscapingLink {
            path: path.to_owned(),
            target: target.to_owned(),
        });
    }
    Ok(())
}

/// What an entry is, as the tree model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Dir,
    Symlink(Box<str>),
}

const ROOT: usize = 0;

#[derive(Debug)]
struct Node {
    parent: usize,
    kind: EntryKind,
    /// Listed in the archive, rather than only implied by the paths below it.
    explicit: bool,
    children: HashMap<Box<str>, usize>,
}

/// The package as it will stand once unpacked: every entry, the directories its paths imply,
/// and every symlink's target. It refuses, whatever the order of the entries, a path given
/// twice and a path below a file or a symlink, so an unpacker never writes through a link;
/// [`Tree::check_links`] then judges the links against the finished tree.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
    links: Vec<usize>,
    max_nodes: u64,
}

/// Where a resolution stands: a directory of the tree, and how many names below it it has
/// gone that name nothing there (or a file), which are taken lexically from then on.
#[derive(Debug, Clone, Copy)]
struct Position {
    dir: usize,
    missing: usize,
}

enum LinkState {
    Resolving,
    Resolved { at: Position, hops: u32 },
}

impl Tree {
    /// An empty tree holding at most `max_nodes` entries and implied directories.
    pub(crate) fn new(max_nodes: u64) -> Self {
        Self {
            nodes: vec![Node {
                parent: ROOT,
                kind: EntryKind::Dir,
                explicit: true,
                children: HashMap::new(),
            }],
            links: Vec::new(),
            max_nodes,
        }
    }

    /// Adds the entry at `path`, a path [`check_entry_path`] accepted, without its trailing
    /// `/`.
    pub(crate) fn insert(&mut self, path: &str, kind: EntryKind) -> Result<(), ArchiveError> {
        let components: Vec<&str> = path.split('/').collect();
        let last = components.len() - 1;
        let mut current = ROOT;
        let mut kind = Some(kind);
        for (i, name) in components.iter().enumerate() {
            let existing = self.nodes[current].children.get(*name).copied();
            match existing {
                Some(id) if i < last => {
                    if self.nodes[id].kind != EntryKind::Dir {
                        return Err(ArchiveError::ThroughNonDir {
                            path: path.to_owned(),
                            parent: components[..=i].join("/"),
                        });
                    }
                    current = id;
                }
                Some(id) => {
                    let node = &mut self.nodes[id];
                    if node.explicit {
                        return Err(ArchiveError::Duplicate(path.to_owned()));
                    }
                    // An implied directory: something below it came earlier.
                    if kind != Some(EntryKind::Dir) {
                        let below = node.children.keys().next().map_or("", |k| &**k);
                        return Err(ArchiveError::ThroughNonDir {
                            path: format!("{path}/{below}"),
                            parent: path.to_owned(),
                        });
                    }
                    node.explicit = true;
                }
                None => {
                    if self.nodes.len() as u64 > self.max_nodes {
                        return Err(ArchiveError::TooManyEntries(self.max_nodes));
                    }
                    let id = self.nodes.len();
                    let node_kind = if i < last {
                        EntryKind::Dir
                    } else {
                        kind.take().unwrap_or(EntryKind::Dir)
                    };
                    if matches!(node_kind, EntryKind::Symlink(_)) {
                        self.links.push(id);
                    }
                    self.nodes.push(Node {
                        parent: current,
                        kind: node_kind,
                        explicit: i == last,
                        children: HashMap::new(),
                    });
                    self.nodes[current].children.insert((*name).into(), id);
                    current = id;
                }
            }
        }
        Ok(())
    }

    /// What the entry at `path` is, without following links; `None` when there is none.
    pub(crate) fn kind_at(&self, path: &str) -> Option<&EntryKind> {
        let mut current = ROOT;
        for name in path.split('/') {
            current = *self.nodes[current].children.get(name)?;
        }
        Some(&self.nodes[current].kind)
    }

    /// Resolves every symlink in the finished tree; each must stay inside the package root at
    /// every step, and go through at most [`MAX_LINK_HOPS`] links.
    ///
    /// Each link is resolved once and its result reused, so the work is linear in the total
    /// length of the targets however the links refer to each other.
    pub(crate) fn check_links(&self) -> Result<(), ArchiveError> {
        let mut states = HashMap::new();
        for &link in &self.links {
            self.resolve_link(link, 0, &mut states)?;
        }
        Ok(())
    }

    /// Where `link` leads, and the longest chain of links its resolution went through.
    /// `depth` is the number of links being resolved around this one.
    fn resolve_link(
        &self,
        link: usize,
        depth: u32,
        states: &mut HashMap<usize, LinkState>,
    ) -> Result<(Position, u32), ArchiveError> {
        match states.get(&link) {
            Some(LinkState::Resolved { at, hops }) => return Ok((*at, *hops)),
            Some(LinkState::Resolving) => {
                return Err(ArchiveError::LinkLoop {
                    path: self.path_of(link),
                });
            }
            None => {}
        }
        let too_deep = || ArchiveError::TooManyLinkHops {
            path: self.path_of(link),
        };
        // A chain this deep is refused whichever link it is entered from, so stopping here
        // changes no verdict, and bounds the recursion.
        if depth >= MAX_LINK_HOPS {
            return Err(too_deep());
        }
        let EntryKind::Symlink(target) = &self.nodes[link].kind else {
            return Err(too_deep());
        };
        states.insert(link, LinkState::Resolving);
        let (at, inner) = self.walk(link, target, depth, states)?;
        let hops = inner + 1;
        if hops > MAX_LINK_HOPS {
            return Err(too_deep());
        }
        states.insert(link, LinkState::Resolved { at, hops });
        Ok((at, hops))
    }

    /// Follows `target` from the directory holding `link`, as the kernel would.
    fn walk(
        &self,
        link: usize,
        target: &str,
        depth: u32,
        states: &mut HashMap<usize, LinkState>,
    ) -> Result<(Position, u32), ArchiveError> {
        let mut at = Position {
            dir: self.nodes[link].parent,
            missing: 0,
        };
        let mut hops = 0;
        for component in target.split('/') {
            match component {
                "" | "." => {}
                ".." if at.missing > 0 => at.missing -= 1,
                ".." if at.dir == ROOT => {
                    return Err(ArchiveError::EscapingLink {
                        path: self.path_of(link),
                        target: target.to_owned(),
                    });
                }
                // The physical parent of where the walk stands, not the lexical one: after a
                // link to a directory, `..` leaves that directory.
                ".." => at.dir = self.nodes[at.dir].parent,
                _ if at.missing > 0 => at.missing += 1,
                name => match self.nodes[at.dir].children.get(name) {
                    Some(&id) => match self.nodes[id].kind {
                        EntryKind::Dir => at.dir = id,
                        // Nothing can be reached through a file; what follows is taken
                        // lexically, which is at least as strict.
                        EntryKind::File => at.missing = 1,
                        EntryKind::Symlink(_) => {
                            let (reached, inner) = self.resolve_link(id, depth + 1, states)?;
                            at = reached;
                            hops = hops.max(inner);
                        }
                    },
                    // A name the package does not hold: if one is created there later, by
                    // the package itself say, it is a directory at that place, whose `..` is
                    // exactly the lexical one.
                    None => at.missing = 1,
                },
            }
        }
        Ok((at, hops))
    }

    /// The path of a node, for messages.
    fn path_of(&self, mut id: usize) -> String {
        let mut names = Vec::new();
        while id != ROOT {
            let parent = self.nodes[id].parent;
            if let Some((name, _)) = self.nodes[parent].children.iter().find(|(_, c)| **c == id) {
                names.push(&**name);
            }
            id = parent;
        }
        names.reverse();
        names.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{PACK_WINDOW_LOG, Packer};
    use rand::{RngExt as _, SeedableRng, seq::SliceRandom};
    use std::io::Write;

    const META: &[u8] = b"name = \"demo\"\nversion = \"1.0.0\"\narch = \"any\"\n";

    /// Builds a tar stream with raw tar headers, bypassing the packer's own checks, the way a
    /// hostile client would.
    fn raw_tar(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(META.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, META_ENTRY, META).unwrap();
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn raw_archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        zstd::encode_all(&raw_tar(build)[..], 3).unwrap()
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

    /// An archive of `entries`, in that order: a target makes a symlink, a trailing `/` a
    /// directory, anything else an empty file.
    fn tree_archive(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        raw_archive(|b| {
            for (path, link) in entries {
                let kind = match (link, path.ends_with('/')) {
                    (Some(_), _) => tar::EntryType::Symlink,
                    (None, true) => tar::EntryType::Directory,
                    (None, false) => tar::EntryType::Regular,
                };
                raw_entry(b, path, kind, *link);
            }
        })
    }

    fn check(bytes: &[u8]) -> Result<Inspection, ArchiveError> {
        inspect(bytes, &ArchiveLimits::default())
    }

    /// The window a zstd frame header declares (RFC 8878, section 3.1.1.1).
    fn frame_window(frame: &[u8]) -> u64 {
        assert_eq!(frame[..4], [0x28, 0xb5, 0x2f, 0xfd], "not a zstd frame");
        let descriptor = frame[4];
        if descriptor & 0x20 == 0 {
            let window = frame[5];
            let base = 1u64 << (10 + u32::from(window >> 3));
            base + base / 8 * u64::from(window & 7)
        } else {
            // Single segment: the window is the content size.
            let dict_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
            let at = 5 + dict_len;
            match descriptor >> 6 {
                0 => u64::from(frame[at]),
                1 => u64::from(u16::from_le_bytes([frame[at], frame[at + 1]])) + 256,
                2 => u64::from(u32::from_le_bytes(frame[at..at + 4].try_into().unwrap())),
                _ => u64::from_le_bytes(frame[at..at + 8].try_into().unwrap()),
            }
        }
    }

    /// The chain from issue 9: each `upN` climbs one level more, and `etc-passwd` lands on
    /// `/etc/passwd` once unpacked fewer than 12 levels deep.
    fn chain() -> Vec<(String, String)> {
        let mut links = vec![
            ("d".to_owned(), ".".to_owned()),
            ("up1".to_owned(), "d/d/..".to_owned()),
        ];
        for n in 2..=12 {
            links.push((format!("up{n}"), format!("d/up{}/..", n - 1)));
        }
        links.push(("etc-passwd".to_owned(), "up12/etc/passwd".to_owned()));
        links
    }

    fn chain_archive(links: &[(String, String)]) -> Vec<u8> {
        raw_archive(|b| {
            for (path, target) in links {
                raw_entry(b, path, tar::EntryType::Symlink, Some(target));
            }
        })
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
            ("empty", Symlink, Some(""), "outside"),
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
    fn the_symlink_chain_is_refused_in_any_order() {
        let links = chain();
        let mut orders = vec![links.clone()];
        let mut reversed = links.clone();
        reversed.reverse();
        orders.push(reversed);
        // The order `niso pack` writes: sorted by path.
        let mut sorted = links.clone();
        sorted.sort();
        orders.push(sorted);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..20 {
            let mut shuffled = links.clone();
            shuffled.shuffle(&mut rng);
            orders.push(shuffled);
        }
        for order in orders {
            let names: Vec<&str> = order.iter().map(|(p, _)| p.as_str()).collect();
            match check(&chain_archive(&order)) {
                // `up1` is where the climb first leaves the root: `d/d` is the root itself.
                Err(ArchiveError::EscapingLink { path, target }) => {
                    assert_eq!(
                        (path.as_str(), target.as_str()),
                        ("up1", "d/d/.."),
                        "{names:?}"
                    );
                }
                other => panic!("{names:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn parent_of_a_linked_directory_is_its_real_parent() {
        // `deep` is `a/b`, so `deep/..` is `a`, not the root as it reads.
        let base = [
            ("a/", None),
            ("a/b/", None),
            ("a/b/f", None),
            ("deep", Some("a/b")),
        ];
        let with = |extra: (&'static str, Option<&'static str>)| {
            let mut entries = base.to_vec();
            entries.push(extra);
            tree_archive(&entries)
        };
        check(&with(("inside", Some("deep/../../a/b/f")))).unwrap();
        assert!(matches!(
            check(&with(("escape", Some("deep/../../..")))),
            Err(ArchiveError::EscapingLink { path, .. }) if path == "escape"
        ));
        // The old lexical check missed this one: `d` is `.`, so `d/..` is above the root.
        assert!(matches!(
            check(&tree_archive(&[("d", Some(".")), ("s", Some("d/.."))])),
            Err(ArchiveError::EscapingLink { path, .. }) if path == "s"
        ));
    }

    #[test]
    fn legit_relative_links_pass() {
        let entries = [
            ("bin/", None),
            ("bin/tool", Some("../lib/tool")),
            ("current", Some("v1")),
            ("dangling", Some("not/there/../file")),
            ("lib/", None),
            ("lib/tool", None),
            ("lib/up", Some("../bin/../lib/./tool")),
            ("self", Some(".")),
            ("share", Some("current/share")),
            ("v1/", None),
            ("v1/share/", None),
            ("v1/share/doc", None),
            ("via", Some("self/current/share/../../lib/tool")),
        ];
        for order in [entries.to_vec(), entries.iter().rev().copied().collect()] {
            let insp = check(&tree_archive(&order)).unwrap();
            assert_eq!(insp.entries, 1 + entries.len() as u64);
        }
    }

    #[test]
    fn rejects_writing_through_links_and_files() {
        // A link to a directory, then a file written through it, in both orders.
        let through = [("real/", None), ("lib", Some("real")), ("lib/evil", None)];
        let mut reversed = through.to_vec();
        reversed.reverse();
        for order in [through.to_vec(), reversed] {
            match check(&tree_archive(&order)) {
                Err(ArchiveError::ThroughNonDir { path, parent }) => {
                    assert_eq!((path.as_str(), parent.as_str()), ("lib/evil", "lib"));
                }
                other => panic!("{order:?}: {other:?}"),
            }
        }
        for entries in [
            vec![("link", Some(".")), ("link/x", None)],
            vec![("link/x/y", None), ("link", Some("."))],
            vec![("file", None), ("file/x", None)],
            vec![("dir/x", None), ("dir", None)],
        ] {
            assert!(
                matches!(
                    check(&tree_archive(&entries)),
                    Err(ArchiveError::ThroughNonDir { .. })
                ),
                "{entries:?}"
            );
        }
        // A directory may be listed after what it holds, once.
        check(&tree_archive(&[("dir/x", None), ("dir/", None)])).unwrap();
        assert!(matches!(
            check(&tree_archive(&[("dir/", None), ("dir", None)])),
            Err(ArchiveError::Duplicate(p)) if p == "dir"
        ));
    }

    #[test]
    fn loops_long_chains_and_long_targets_are_refused() {
        assert!(matches!(
            check(&tree_archive(&[("a", Some("b")), ("b", Some("c/../a"))])),
            Err(ArchiveError::LinkLoop { .. })
        ));
        let chain_of = |n: usize| {
            let names: Vec<String> = (0..=n).map(|i| format!("l{i:02}")).collect();
            let mut entries: Vec<(&str, Option<&str>)> = vec![(names[n].as_str(), None)];
            for i in 0..n {
                entries.push((names[i].as_str(), Some(names[i + 1].as_str())));
            }
            tree_archive(&entries)
        };
        check(&chain_of(MAX_LINK_HOPS as usize)).unwrap();
        assert!(matches!(
            check(&chain_of(MAX_LINK_HOPS as usize + 1)),
            Err(ArchiveError::TooManyLinkHops { .. })
        ));

        let long = "a/".repeat(MAX_PATH_LEN / 2 + 1);
        let bytes = raw_archive(|b| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            b.append_link(&mut header, "long", &long).unwrap();
        });
        assert!(matches!(
            check(&bytes),
            Err(ArchiveError::LongLinkTarget { path }) if path == "long"
        ));
    }

    #[test]
    fn links_through_links_cost_linear_work() {
        // Expanded naively, `aN` names `a0` 2^N times; resolved once each, it is 40 steps.
        let names: Vec<String> = (0..40).map(|i| format!("a{i:02}")).collect();
        let targets: Vec<String> = (1..40)
            .map(|i| format!("{p}/../{p}", p = names[i - 1]))
            .collect();
        let mut entries: Vec<(&str, Option<&str>)> = vec![("a00/", None)];
        for i in 1..40 {
            entries.push((names[i].as_str(), Some(targets[i - 1].as_str())));
        }
        let started = std::time::Instant::now();
        check(&tree_archive(&entries)).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn implied_directories_count_as_entries() {
        let bytes = tree_archive(&[("a/b/c/d/e/f", None)]);
        let few = ArchiveLimits {
            max_entries: 5,
            ..ArchiveLimits::default()
        };
        assert!(matches!(
            inspect(&bytes[..], &few),
            Err(ArchiveError::TooManyEntries(5))
        ));
        assert_eq!(check(&bytes).unwrap().entries, 2);
    }

    /// `tar` compressed with an explicit window, streamed so the size is not known up front
    /// and the frame declares the whole window.
    fn with_window(tar: &[u8], window_log: u32) -> Vec<u8> {
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(window_log).unwrap();
        for chunk in tar.chunks(512) {
            encoder.write_all(chunk).unwrap();
        }
        encoder.finish().unwrap()
    }

    #[test]
    fn frames_with_a_window_over_the_cap_are_refused() {
        let tar = raw_tar(|b| raw_entry(b, "f", tar::EntryType::Regular, None));
        let over = with_window(&tar, MAX_WINDOW_LOG + 1);
        assert!(frame_window(&over) > 1 << MAX_WINDOW_LOG);
        let err = check(&over).unwrap_err();
        assert!(matches!(err, ArchiveError::WindowTooLarge(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "zstd window is larger than the 8 MiB allowed"
        );
        assert!(matches!(
            read_meta(&over[..]),
            Err(ArchiveError::WindowTooLarge(_))
        ));
        let huge = with_window(&tar, 27);
        assert!(matches!(check(&huge), Err(ArchiveError::WindowTooLarge(_))));

        let at_cap = with_window(&tar, MAX_WINDOW_LOG);
        assert_eq!(frame_window(&at_cap), 1 << MAX_WINDOW_LOG);
        check(&at_cap).unwrap();
    }

    #[test]
    fn packed_frames_fit_the_window_cap() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
        let data: Vec<u8> = (0..3 << 20).map(|_| rng.random::<u8>()).collect();
        let mut packer = Packer::new(Vec::new(), META).unwrap();
        packer
            .add_file("data", false, data.len() as u64, &data[..])
            .unwrap();
        let bytes = packer.finish().unwrap();
        assert_eq!(frame_window(&bytes), 1 << PACK_WINDOW_LOG);
        const { assert!(PACK_WINDOW_LOG <= MAX_WINDOW_LOG) };
        // Incompressible bytes unpack to about what they weigh, far inside a tight ratio.
        let tight = ArchiveLimits {
            max_unpack_ratio: 2,
            ..ArchiveLimits::default()
        };
        assert_eq!(inspect(&bytes[..], &tight).unwrap().unpacked_bytes, 3 << 20);
    }

    /// A reader serving `head` and then `frame` over and over, counting what it served.
    struct Repeating<'a> {
        head: &'a [u8],
        frame: &'a [u8],
        frames_left: u64,
        at: usize,
        served: u64,
    }

    impl Read for Repeating<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = if !self.head.is_empty() {
                let n = self.head.len().min(buf.len());
                buf[..n].copy_from_slice(&self.head[..n]);
                self.head = &self.head[n..];
                n
            } else if self.frames_left == 0 {
                0
            } else {
                let n = (self.frame.len() - self.at).min(buf.len());
                buf[..n].copy_from_slice(&self.frame[self.at..self.at + n]);
                self.at += n;
                if self.at == self.frame.len() {
                    self.at = 0;
                    self.frames_left -= 1;
                }
                n
            };
            self.served += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn a_bomb_is_stopped_by_the_ratio_long_before_its_end() {
        // A 32 GiB file of zeros (under the 64 GiB size limit), as one frame holding the
        // headers followed by 32768 frames of 1 MiB of zeros each.
        const FILE: u64 = 32 << 30;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(FILE);
        header.set_mode(0o644);
        header.set_path("zeros").unwrap();
        header.set_cksum();
        let mut tar = raw_tar(|_| {});
        tar.truncate(tar.len() - 1024); // the end-of-archive blocks
        tar.extend_from_slice(header.as_bytes());
        let head = zstd::encode_all(&tar[..], 3).unwrap();
        let frame = zstd::encode_all(io::repeat(0).take(1 << 20), 3).unwrap();
        let frames = FILE >> 20;
        let total = head.len() as u64 + frames * frame.len() as u64;
        let mut source = Repeating {
            head: &head,
            frame: &frame,
            frames_left: frames,
            at: 0,
            served: 0,
        };
        let err = inspect(&mut source, &ArchiveLimits::default()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::TooCompressed(DEFAULT_MAX_UNPACK_RATIO)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "archive unpacks to more than 200 times its compressed size"
        );
        // About 200 MiB decompressed (the floor times the ratio), not 32 GiB.
        assert!(
            source.served < total / 20,
            "read {} of {total} bytes",
            source.served
        );
    }

    #[test]
    fn a_bomb_in_one_frame_is_refused_at_the_ratio() {
        let mut packer = Packer::new(Vec::new(), META).unwrap();
        packer
            .add_file("zeros", false, 64 << 20, io::repeat(0).take(64 << 20))
            .unwrap();
        let bytes = packer.finish().unwrap();
        assert!(bytes.len() < 1 << 20);
        // Under the floor, the default ratio allows 200 MiB: this one passes.
        check(&bytes).unwrap();
        let tight = ArchiveLimits {
            max_unpack_ratio: 20,
            ..ArchiveLimits::default()
        };
        assert!(matches!(
            inspect(&bytes[..], &tight),
            Err(ArchiveError::TooCompressed(20))
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
        assert!(matches!(
            check(&bytes[..bytes.len() / 2]),
            Err(ArchiveError::Malformed(_))
        ));
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
        assert_eq!(check(&bytes).unwrap().entries, 11);
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

    #[test]
    fn files_niso_toml_promises_must_be_in_the_package() {
        let with = |meta: &str, add: &dyn Fn(&mut Packer<Vec<u8>>)| {
            let mut packer = Packer::new(Vec::new(), meta.as_bytes()).unwrap();
            add(&mut packer);
            check(&packer.finish().unwrap())
        };
        let bin = "name = \"demo\"\nversion = \"1.0.0\"\narch = \"any\"\nbin = [\"bin/demo\"]\n";
        assert!(matches!(
            with(bin, &|_| {}),
            Err(ArchiveError::MissingBin(p)) if p == "bin/demo"
        ));
        assert!(matches!(
            with(bin, &|p| p.add_dir("bin/demo").unwrap()),
            Err(ArchiveError::MissingBin(_))
        ));
        with(bin, &|p| {
            p.add_file("bin/demo", true, 2, &b"hi"[..]).unwrap()
        })
        .unwrap();
        with(bin, &|p| {
            p.add_symlink("bin/demo", "real").unwrap();
            p.add_file("bin/real", true, 2, &b"hi"[..]).unwrap();
        })
        .unwrap();

        let service = "name = \"demo\"\nversion = \"1.0.0\"\narch = \"any\"\n[service]\ncommand = \"bin/serve\"\n";
        assert!(matches!(
            with(service, &|_| {}),
            Err(ArchiveError::MissingServiceCommand(c)) if c == "bin/serve"
        ));
        let on_path = "name = \"demo\"\nversion = \"1.0.0\"\narch = \"any\"\n[service]\ncommand = \"python3\"\n";
        with(on_path, &|_| {}).unwrap();
    }
}
