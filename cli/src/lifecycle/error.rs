//! Why a lifecycle step refused to run: each says what is wrong and, where there is one, the
//! command that puts it right. Failures of the disk or of an archive's checks are not here;
//! they keep their own types, which decide the exit code.

use std::path::PathBuf;

use niso_protocol::{Arch, Digest, PackageName, Version};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(
        "{name} {version} is already installed from other bytes ({arch} {digest}); remove it first with `niso remove {name}:{version}`"
    )]
    OtherBytes {
        name: PackageName,
        version: Version,
        arch: Arch,
        digest: Digest,
    },
    #[error("{name} {version} is not installed")]
    VersionNotInstalled { name: PackageName, version: Version },
    #[error("{name} {version} declares executable {} but does not contain it", .path.display())]
    MissingExecutable {
        name: PackageName,
        version: Version,
        path: PathBuf,
    },
    #[error("{} already belongs to another package ({})", .link.display(), .owner.display())]
    LinkTaken { link: PathBuf, owner: PathBuf },
    #[error("{name} is not active")]
    NotActive { name: PackageName },
    /// `service run` on a package with no active version.
    #[error("{name} is not active; activate it with `niso activate {name}`")]
    NothingToRun { name: PackageName },
    #[error("{name} {version} declares no [service]")]
    NoService { name: PackageName, version: Version },
    #[error("{name} is not installed here (see `niso list`)")]
    NothingToRollBack { name: PackageName },
    #[error(
        "{name} has no previous version to roll back to: only {} was ever active here",
        .active.as_ref().map_or_else(|| "nothing".to_owned(), Version::to_string)
    )]
    NoPrevious {
        name: PackageName,
        active: Option<Version>,
    },
    #[error("{name} {version} is no longer installed")]
    PreviousGone { name: PackageName, version: Version },
    #[error("{name} is not installed")]
    NotInstalled { name: PackageName },
    #[error(
        "{name} {selector} is not installed; installed: {}",
        .installed.iter().map(Version::to_string).collect::<Vec<_>>().join(", ")
    )]
    NoSuchVersion {
        name: PackageName,
        selector: String,
        installed: Vec<Version>,
    },
    #[error(
        "{name} {version} is active; deactivate it first (`niso deactivate {name}`) or pass --force"
    )]
    Active { name: PackageName, version: Version },
}
