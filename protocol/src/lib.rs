//! The niso registry's shared vocabulary: package names, architectures, versions, references,
//! `niso.toml`, the `.niso` archive format, digests, API keys and scopes, signed records, the
//! HTTP API's JSON bodies, and how sizes are shown.
//!
//! Architecture invariant: this crate performs no I/O of its own and knows no runtime. It
//! reads from and writes to the `Read`/`Write` values its callers hand it, and it depends on no
//! other crate of the workspace.

pub mod api;
pub mod api_key;
pub mod api_schema;
pub mod arch;
pub mod archive;
pub mod digest;
pub mod federation;
pub mod hex;
pub mod name;
pub mod pack;
pub mod package_meta;
pub mod record;
pub mod reference;
pub mod scope;
pub mod size;
mod whole_number;

pub use arch::Arch;
pub use digest::Digest;
pub use name::PackageName;
pub use package_meta::PackageMeta;
pub use semver::Version;
