//! Package references (`name`, `name:tag`, `name:1.2.3`, `name:20`) and how they resolve to a
//! version.

use std::{collections::BTreeMap, fmt, str::FromStr};

use semver::Version;

use crate::name::{NameError, PackageName};

/// The automatic tag: the highest non-prerelease version.
pub const LATEST: &str = "latest";

/// `NAME[:SELECTOR]` as users type it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageRef {
    pub name: PackageName,
    /// A tag, an exact version, or a version prefix; `None` means `latest`.
    pub selector: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("`{0}` has an empty tag or version after `:`")]
    EmptySelector(String),
    #[error("`{0}` is not a valid tag or version")]
    BadSelector(String),
}

impl FromStr for PackageRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, selector) = match s.split_once(':') {
            Some((_, "")) => return Err(RefError::EmptySelector(s.to_owned())),
            Some((n, sel)) => (n, Some(sel)),
            None => (s, None),
        };
        let name = PackageName::new(name)?;
        if let Some(sel) = selector {
            let ok = sel.len() <= 128
                && sel
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
            if !ok {
                return Err(RefError::BadSelector(sel.to_owned()));
            }
        }
        Ok(Self {
            name,
            selector: selector.map(str::to_owned),
        })
    }
}

impl fmt::Display for PackageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Some(sel) => write!(f, "{}:{sel}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// How a selector matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Latest(Version),
    Tag { tag: String, version: Version },
    Exact(Version),
    Prefix { prefix: String, version: Version },
}

impl Resolution {
    pub fn version(&self) -> &Version {
        match self {
            Self::Latest(v) | Self::Exact(v) => v,
            Self::Tag { version, .. } | Self::Prefix { version, .. } => version,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{name} has no versions{}", for_arch(.arch))]
    NoVersions { name: String, arch: Option<String> },
    #[error("{name} has no release version yet, only prereleases: {}", join(.versions))]
    NoRelease {
        name: String,
        versions: Vec<Version>,
    },
    #[error(
        "tag `{tag}` of {name} points to {version}, which has no build{}",
        for_arch(.arch)
    )]
    TagTargetMissing {
        name: String,
        tag: String,
        version: Version,
        arch: Option<String>,
    },
    #[error(
        "{name} has no tag, version or version prefix `{selector}`{}; tags: {}; versions: {}",
        for_arch(.arch), join(.tags), join(.versions)
    )]
    NotFound {
        name: String,
        selector: String,
        arch: Option<String>,
        tags: Vec<String>,
        versions: Vec<Version>,
    },
}

fn for_arch(arch: &Option<String>) -> String {
    arch.as_ref()
        .map(|a| format!(" for {a}"))
        .unwrap_or_default()
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The automatic `latest`: the highest version that is not a prerelease.
pub fn latest<'a>(versions: impl IntoIterator<Item = &'a Version>) -> Option<&'a Version> {
    versions.into_iter().filter(|v| v.pre.is_empty()).max()
}

/// Resolves `selector` against explicit `tags` and the `versions` available (already narrowed
/// to the architectures the caller can use; `arch` only words the errors).
pub fn resolve(
    name: &str,
    selector: Option<&str>,
    tags: &BTreeMap<String, Version>,
    versions: &[Version],
    arch: Option<&str>,
) -> Result<Resolution, ResolveError> {
    let arch = arch.map(str::to_owned);
    if versions.is_empty() {
        return Err(ResolveError::NoVersions {
            name: name.to_owned(),
            arch,
        });
    }
    let selector = match selector {
        None | Some(LATEST) => {
            return latest(versions)
                .map(|v| Resolution::Latest(v.clone()))
                .ok_or_else(|| ResolveError::NoRelease {
                    name: name.to_owned(),
                    versions: sorted(versions),
                });
        }
        Some(s) => s,
    };
    // A selector that reads as a version or a prefix is only ever that: tags cannot take
    // such names, and any that predate the rule are never consulted for them.
    if let Ok(exact) = Version::parse(selector) {
        if versions.contains(&exact) {
            return Ok(Resolution::Exact(exact));
        }
    } else if let Some(prefix) = parse_prefix(selector) {
        let best = versions
            .iter()
            .filter(|v| v.pre.is_empty() && prefix_matches(&prefix, v))
            .max();
        if let Some(v) = best {
            return Ok(Resolution::Prefix {
                prefix: selector.to_owned(),
                version: v.clone(),
            });
        }
    } else if let Some(version) = tags.get(selector) {
        if !versions.contains(version) {
            return Err(ResolveError::TagTargetMissing {
                name: name.to_owned(),
                tag: selector.to_owned(),
                version: version.clone(),
                arch,
            });
        }
        return Ok(Resolution::Tag {
            tag: selector.to_owned(),
            version: version.clone(),
        });
    }
    let mut tag_names: Vec<String> = tags.keys().cloned().collect();
    if latest(versions).is_some() {
        tag_names.push(LATEST.to_owned());
        tag_names.sort();
    }
    Err(ResolveError::NotFound {
        name: name.to_owned(),
        selector: selector.to_owned(),
        arch,
        tags: tag_names,
        versions: sorted(versions),
    })
}

fn sorted(versions: &[Version]) -> Vec<Version> {
    let mut v = versions.to_vec();
    v.sort();
    v.dedup();
    v
}

/// Whether `s` reads as a version (`1.0.0`, `1.0.0-rc1`) or a version prefix (`1`, `20.1`):
/// the selectors a tag name may not take.
pub fn is_version_like(s: &str) -> bool {
    Version::parse(s).is_ok() || parse_prefix(s).is_some()
}

/// `20` or `20.1`: one or two numeric components.
pub fn parse_prefix(s: &str) -> Option<Vec<u64>> {
    let parts: Vec<u64> = s
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (1..=2).contains(&parts.len()).then_some(parts)
}

/// Whether `v`'s major (and minor) numbers are those of `prefix`.
pub fn prefix_matches(prefix: &[u64], v: &Version) -> bool {
    let components = [v.major, v.minor];
    prefix.iter().zip(components).all(|(p, c)| *p == c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn fixture() -> (BTreeMap<String, Version>, Vec<Version>) {
        let tags = BTreeMap::from([
            ("stable".to_owned(), v("1.0.0")),
            ("beta".to_owned(), v("1.1.0-rc1")),
        ]);
        let versions = vec![
            v("1.0.0"),
            v("1.1.0-rc1"),
            v("1.1.0"),
            v("20.1.0"),
            v("20.3.1"),
            v("2.0.0"),
        ];
        (tags, versions)
    }

    #[test]
    fn parses_refs() {
        let r: PackageRef = "nodejs:20".parse().unwrap();
        assert_eq!(r.name.as_str(), "nodejs");
        assert_eq!(r.selector.as_deref(), Some("20"));
        assert_eq!(r.to_string(), "nodejs:20");
        let r: PackageRef = "redis".parse().unwrap();
        assert_eq!(r.selector, None);
        assert!("redis:".parse::<PackageRef>().is_err());
        assert!("Redis".parse::<PackageRef>().is_err());
        assert!("redis:a/b".parse::<PackageRef>().is_err());
    }

    #[test]
    fn resolves_like_the_design_says() {
        let (tags, versions) = fixture();
        let r = |s: Option<&str>| resolve("my-api", s, &tags, &versions, None);
        assert_eq!(r(None).unwrap(), Resolution::Latest(v("20.3.1")));
        assert_eq!(r(Some("latest")).unwrap(), Resolution::Latest(v("20.3.1")));
        assert_eq!(r(Some("stable")).unwrap().version(), &v("1.0.0"));
        assert_eq!(r(Some("beta")).unwrap().version(), &v("1.1.0-rc1"));
        assert_eq!(r(Some("1.1.0")).unwrap(), Resolution::Exact(v("1.1.0")));
        assert_eq!(r(Some("20")).unwrap().version(), &v("20.3.1"));
        assert_eq!(r(Some("20.1")).unwrap().version(), &v("20.1.0"));
        // `2` is a prefix by components, not by characters: it must not match 20.x.
        assert_eq!(r(Some("2")).unwrap().version(), &v("2.0.0"));
        // Prereleases never satisfy a prefix.
        assert_eq!(r(Some("1.1")).unwrap().version(), &v("1.1.0"));
        let err = r(Some("3")).unwrap_err().to_string();
        assert!(err.contains("tags: beta, latest, stable"), "{err}");
        assert!(
            err.contains("versions: 1.0.0, 1.1.0-rc1, 1.1.0, 2.0.0"),
            "{err}"
        );
    }

    #[test]
    fn versions_and_prefixes_never_go_through_tags() {
        // Tags like these are refused now; data from before the rule must still not shadow.
        let tags = BTreeMap::from([
            ("1.0.0".to_owned(), v("2.0.0")),
            ("1".to_owned(), v("2.0.0")),
            ("9.9.9".to_owned(), v("2.0.0")),
        ]);
        let versions = vec![v("1.0.0"), v("1.2.0"), v("2.0.0")];
        let r = |s| resolve("x", Some(s), &tags, &versions, None);
        assert_eq!(r("1.0.0").unwrap(), Resolution::Exact(v("1.0.0")));
        assert_eq!(r("1").unwrap().version(), &v("1.2.0"));
        assert!(matches!(r("9.9.9"), Err(ResolveError::NotFound { .. })));
    }

    #[test]
    fn prerelease_only_has_no_latest() {
        let versions = vec![v("1.0.0-rc1")];
        let err = resolve("x", None, &BTreeMap::new(), &versions, None).unwrap_err();
        assert!(matches!(err, ResolveError::NoRelease { .. }));
        assert!(err.to_string().contains("1.0.0-rc1"));
    }

    #[test]
    fn tag_to_missing_arch_is_explained() {
        let tags = BTreeMap::from([("stable".to_owned(), v("1.0.0"))]);
        let err = resolve("x", Some("stable"), &tags, &[v("2.0.0")], Some("aarch64"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tag `stable` of x points to 1.0.0, which has no build for aarch64"
        );
    }
}
