//! CPU architectures a package is built for, including the portable `any`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A package architecture: `x86_64`, `aarch64`, … or `any` for portable packages.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Arch(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("architecture `{0}` is not valid; use e.g. `x86_64`, `aarch64` or `any`")]
pub struct ArchError(pub String);

impl Arch {
    pub const ANY: &'static str = "any";

    pub fn new(arch: impl Into<String>) -> Result<Self, ArchError> {
        let arch = arch.into();
        let ok = !arch.is_empty()
            && arch.len() <= 32
            && arch.starts_with(|c: char| c.is_ascii_lowercase())
            && arch
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(Self(arch))
        } else {
            Err(ArchError(arch))
        }
    }

    /// The architecture this program was compiled for, spelled as packages spell it.
    pub fn host() -> Self {
        Self(std::env::consts::ARCH.to_owned())
    }

    pub fn any() -> Self {
        Self(Self::ANY.to_owned())
    }

    /// The name packages use for `alias`, when `alias` is another system's spelling of a
    /// known architecture (Debian's `amd64`, Apple's `arm64`, …). Packages spell
    /// architectures as Rust's `std::env::consts::ARCH` does, so a client finds them.
    pub fn canonical_name(alias: &str) -> Option<&'static str> {
        Some(match alias {
            "amd64" | "x64" | "x86-64" | "intel64" => "x86_64",
            "arm64" | "armv8" | "armv8l" => "aarch64",
            "i386" | "i486" | "i586" | "i686" | "386" => "x86",
            "armhf" | "armel" | "armv7" | "armv7l" | "armv6l" => "arm",
            "ppc64" | "ppc64le" | "ppc64el" => "powerpc64",
            "riscv64gc" => "riscv64",
            _ => return None,
        })
    }

    pub fn is_any(&self) -> bool {
        self.0 == Self::ANY
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Arch {
    type Err = ArchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Arch {
    type Error = ArchError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> Self {
        a.0
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(Arch::new("x86_64").is_ok());
        assert!(Arch::new("aarch64").is_ok());
        assert!(Arch::new("any").unwrap().is_any());
        assert!(Arch::new("X86").is_err());
        assert!(Arch::new("").is_err());
        assert!(Arch::new("x86-64").is_err());
        assert!(Arch::new("../x").is_err());
        assert!(!Arch::host().as_str().is_empty());
    }

    #[test]
    fn other_systems_spellings_name_the_canonical_arch() {
        assert_eq!(Arch::canonical_name("amd64"), Some("x86_64"));
        assert_eq!(Arch::canonical_name("arm64"), Some("aarch64"));
        assert_eq!(Arch::canonical_name("x86_64"), None);
        assert_eq!(Arch::canonical_name("any"), None);
        for alias in ["amd64", "arm64", "i686", "armhf", "ppc64le", "riscv64gc"] {
            let canonical = Arch::canonical_name(alias).unwrap();
            assert!(Arch::new(canonical).is_ok(), "{canonical}");
            assert_eq!(Arch::canonical_name(canonical), None, "{canonical}");
        }
    }
}
