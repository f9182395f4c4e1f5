//! Package names: the validated identifier every other type hangs off.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Longest package name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A package name: lowercase `[a-z0-9][a-z0-9._-]*`, at most 64 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackageName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("package name is empty")]
    Empty,
    #[error("package name `{0}` is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    #[error("package name `{name}` must start with a lowercase letter or digit")]
    BadStart { name: String },
    #[error(
        "package name `{name}` contains `{ch}`; use lowercase letters, digits, `.`, `_` and `-`"
    )]
    BadChar { name: String, ch: char },
}

impl PackageName {
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        validate(&name)?;
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form two names share when they may not coexist: runs of `-`, `_` and `.` count
    /// as one `-` (PyPI's rule), so `my-api`, `my_api`, `my.api` and `my--api` are one name
    /// for uniqueness while each keeps its own spelling everywhere else.
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        let mut in_run = false;
        for ch in self.0.chars() {
            if matches!(ch, '-' | '_' | '.') {
                if !in_run {
                    out.push('-');
                }
                in_run = true;
            } else {
                out.push(ch);
                in_run = false;
            }
        }
        out
    }
}

fn validate(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let first = chars.next().ok_or(NameError::Empty)?;
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.to_owned()));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(NameError::BadStart {
            name: name.to_owned(),
        });
    }
    for ch in chars {
        if !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')) {
            return Err(NameError::BadChar {
                name: name.to_owned(),
                ch,
            });
        }
    }
    Ok(())
}

impl FromStr for PackageName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for PackageName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<PackageName> for String {
    fn from(n: PackageName) -> Self {
        n.0
    }
}

impl AsRef<str> for PackageName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a tag name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag name {0}")]
    Alphabet(String),
    #[error(
        "tag `{0}` reads as a version or version prefix, which it would shadow; pick a name such as `stable` or `v{0}`"
    )]
    LooksLikeVersion(String),
    #[error(
        "`latest` is maintained automatically (the highest release version); pick another tag name"
    )]
    Latest,
}

/// Checks a tag name: the package-name alphabet (safe in URLs and file names), not `latest`,
/// and nothing that reads as a version (`1.0.0`, `1.0.0-rc1`) or a version prefix (`1`,
/// `20.1`), so `NAME:X` never means two things.
pub fn validate_tag(tag: &str) -> Result<(), TagError> {
    validate(tag).map_err(|e| {
        TagError::Alphabet(
            e.to_string()
                .strip_prefix("package name ")
                .unwrap_or_default()
                .to_owned(),
        )
    })?;
    if tag == crate::reference::LATEST {
        return Err(TagError::Latest);
    }
    if crate::reference::is_version_like(tag) {
        return Err(TagError::LooksLikeVersion(tag.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_registry_style_names() {
        for ok in ["redis", "my-api", "nodejs", "a", "0ad", "lib.foo_bar-2"] {
            assert_eq!(PackageName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(PackageName::new(""), Err(NameError::Empty));
        assert!(matches!(
            PackageName::new("My-Api"),
            Err(NameError::BadStart { .. })
        ));
        assert!(matches!(
            PackageName::new("-x"),
            Err(NameError::BadStart { .. })
        ));
        assert!(matches!(
            PackageName::new("a/b"),
            Err(NameError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            PackageName::new("a:b"),
            Err(NameError::BadChar { ch: ':', .. })
        ));
        assert!(matches!(
            PackageName::new("a".repeat(65)),
            Err(NameError::TooLong(_))
        ));
        assert!(PackageName::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn canonical_folds_separator_runs() {
        let c = |s: &str| PackageName::new(s).unwrap().canonical();
        assert_eq!(c("my-api"), "my-api");
        assert_eq!(c("my_api"), c("my-api"));
        assert_eq!(c("my.api"), c("my-api"));
        assert_eq!(c("my--api"), c("my-api"));
        assert_eq!(c("my._-api"), c("my-api"));
        assert_ne!(c("myapi"), c("my-api"));
        assert_eq!(c("a-"), "a-");
    }

    #[test]
    fn tags_cannot_read_as_versions() {
        for ok in ["stable", "beta", "v1", "v1.0.0", "release-2", "lts"] {
            assert_eq!(validate_tag(ok), Ok(()), "{ok}");
        }
        for bad in ["1", "20", "1.0", "01", "1.0.0", "1.0.1-evil", "2.0.0-rc.1"] {
            assert!(
                matches!(validate_tag(bad), Err(TagError::LooksLikeVersion(_))),
                "{bad}"
            );
        }
        assert_eq!(validate_tag("latest"), Err(TagError::Latest));
        assert!(matches!(validate_tag("A"), Err(TagError::Alphabet(_))));
        let msg = validate_tag("1.0.0").unwrap_err().to_string();
        assert!(msg.contains("shadow"), "{msg}");
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let msg = PackageName::new("A").unwrap_err().to_string();
        assert!(msg.starts_with("package name"));
        assert!(!msg.ends_with('.'));
    }
}
