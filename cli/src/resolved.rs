//! A registry's answer to `resolve`, trusted only once it parses into the protocol's validated
//! types and names the package that was asked for: the only form the commands use it in.
//!
//! A registry, or anything between it and the client on plain HTTP, can answer anything. Names,
//! versions and architectures end up in file names under the client's store, so a string that
//! has not passed through [`PackageName`], [`Version`] and [`Arch`] never reaches a path.

use niso_protocol::{
    Arch, Digest, PackageMeta, PackageName, Version,
    api::Resolved,
    reference::{LATEST, PackageRef, parse_prefix, prefix_matches},
};

/// What was asked of the registry: a package, a selector, and the architecture to run it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: PackageName,
    pub selector: Selector,
    /// The architecture asked for; builds for `any` fit it too.
    pub arch: Arch,
}

/// The selector of a reference, as far as it constrains the version that may answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// No selector, or `latest`: the highest release, so never a prerelease.
    Latest,
    /// `1.2.3`: exactly that version.
    Exact(Version),
    /// `20` or `20.1`: a release whose major (and minor) numbers match.
    Prefix(Vec<u64>),
    /// A tag: any version, since only the registry knows where its tags point.
    Tag(String),
}

impl Selector {
    fn parse(selector: Option<&str>) -> Self {
        match selector {
            None | Some(LATEST) => Self::Latest,
            Some(s) => {
                if let Ok(v) = Version::parse(s) {
                    return Self::Exact(v);
                }
                match parse_prefix(s) {
                    Some(p) => Self::Prefix(p),
                    None => Self::Tag(s.to_owned()),
                }
            }
        }
    }

    fn admits(&self, version: &Version) -> bool {
        match self {
            Self::Latest => version.pre.is_empty(),
            Self::Exact(v) => v == version,
            Self::Prefix(p) => version.pre.is_empty() && prefix_matches(p, version),
            Self::Tag(_) => true,
        }
    }

    /// How the refusal names what was asked.
    fn describe(&self) -> String {
        match self {
            Self::Latest => "its latest release".to_owned(),
            Self::Exact(v) => format!("version {v}"),
            Self::Prefix(p) => format!(
                "a release {}.*",
                p.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
            ),
            Self::Tag(t) => format!("tag {t}"),
        }
    }
}

impl Request {
    pub fn new(reference: &PackageRef, arch: Arch) -> Self {
        Self {
            name: reference.name.clone(),
            selector: Selector::parse(reference.selector.as_deref()),
            arch,
        }
    }
}

/// A registry's answer after every check: what the client downloads, names files after and
/// installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPackage {
    pub name: PackageName,
    pub version: Version,
    pub arch: Arch,
    pub digest: Digest,
    pub size: u64,
    pub description: String,
}

/// Why the client refused what a registry sent.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the registry answered with {field} {value}, which is not valid; refusing it")]
    Invalid { field: &'static str, value: String },
    #[error("the registry answered for `{got}` but `{asked}` was asked; refusing it")]
    WrongName {
        asked: PackageName,
        got: PackageName,
    },
    #[error("the registry answered {name} {got} but {asked} was asked; refusing it")]
    WrongVersion {
        name: PackageName,
        asked: String,
        got: Version,
    },
    #[error(
        "the registry answered with a build for `{got}` but `{asked}` (or `any`) was asked; refusing it"
    )]
    WrongArch { asked: Arch, got: Arch },
    #[error(
        "the package the registry sent says it is {got}, not the {listed} the registry listed; refusing it"
    )]
    WrongArchive { listed: String, got: String },
}

/// A registry's string as it may appear in a message: quoted, escaped, and cut short, so it
/// can neither steer the terminal nor flood it.
fn shown(value: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = value
        .chars()
        .take(MAX)
        .collect::<String>()
        .escape_debug()
        .collect();
    if value.chars().count() > MAX {
        out.push('…');
    }
    format!("`{out}`")
}

fn invalid(field: &'static str, value: &str) -> Refused {
    Refused::Invalid {
        field,
        value: shown(value),
    }
}

impl ResolvedPackage {
    /// Parses `answer` and checks it against `asked`; nothing of it is used otherwise.
    pub fn from_answer(answer: Resolved, asked: &Request) -> Result<Self, Refused> {
        let name =
            PackageName::new(answer.name.as_str()).map_err(|_| invalid("name", &answer.name))?;
        let version =
            Version::parse(&answer.version).map_err(|_| invalid("version", &answer.version))?;
        // niso versions never carry build metadata (`niso.toml` refuses it), so such an
        // answer can match no archive.
        if !version.build.is_empty() {
            return Err(invalid("version", &answer.version));
        }
        let arch = Arch::new(answer.arch.as_str()).map_err(|_| invalid("arch", &answer.arch))?;
        let digest: Digest = answer
            .digest
            .parse()
            .map_err(|_| invalid("digest", &answer.digest))?;
        if name != asked.name {
            return Err(Refused::WrongName {
                asked: asked.name.clone(),
                got: name,
            });
        }
        if !asked.selector.admits(&version) {
            return Err(Refused::WrongVersion {
                name,
                asked: asked.selector.describe(),
                got: version,
            });
        }
        if arch != asked.arch && !arch.is_any() {
            return Err(Refused::WrongArch {
                asked: asked.arch.clone(),
                got: arch,
            });
        }
        Ok(Self {
            name,
            version,
            arch,
            digest,
            size: answer.size,
            description: answer.description,
        })
    }

    /// The `niso.toml` of the bytes downloaded must name this very build: the digest only
    /// proves the bytes are the ones the registry listed, not that they are this package.
    pub fn check_meta(&self, meta: &PackageMeta) -> Result<(), Refused> {
        if meta.name == self.name && meta.version == self.version && meta.arch == self.arch {
            return Ok(());
        }
        Err(Refused::WrongArchive {
            listed: self.to_string(),
            got: format!("{} {} ({})", meta.name, meta.version, meta.arch),
        })
    }
}

impl std::fmt::Display for ResolvedPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.name, self.version, self.arch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";

    fn answer(name: &str, version: &str, arch: &str, digest: &str) -> Resolved {
        Resolved {
            name: name.to_owned(),
            version: version.to_owned(),
            arch: arch.to_owned(),
            digest: digest.to_owned(),
            size: 42,
            description: "an api".to_owned(),
            matched: "exact".to_owned(),
        }
    }

    fn asked(reference: &str, arch: &str) -> Request {
        Request::new(&reference.parse().unwrap(), Arch::new(arch).unwrap())
    }

    fn check(reference: &str, a: Resolved) -> Result<ResolvedPackage, Refused> {
        ResolvedPackage::from_answer(a, &asked(reference, "x86_64"))
    }

    #[test]
    fn accepts_a_fitting_answer() {
        let got = check("my-api:1.0.0", answer("my-api", "1.0.0", "x86_64", DIGEST)).unwrap();
        assert_eq!(got.name.as_str(), "my-api");
        assert_eq!(got.version, Version::new(1, 0, 0));
        assert_eq!(got.arch.as_str(), "x86_64");
        assert_eq!(got.digest.to_string(), DIGEST);
        assert_eq!(got.size, 42);
        assert_eq!(got.to_string(), "my-api 1.0.0 (x86_64)");
        // `any` fits every machine; tags and prefixes leave the version to the registry.
        assert!(
            check(
                "my-api:stable",
                answer("my-api", "3.1.0-rc1", "any", DIGEST)
            )
            .is_ok()
        );
        assert!(check("my-api:20", answer("my-api", "20.3.1", "any", DIGEST)).is_ok());
        assert!(check("my-api:20.3", answer("my-api", "20.3.1", "any", DIGEST)).is_ok());
        assert!(check("my-api", answer("my-api", "2.0.0", "any", DIGEST)).is_ok());
    }

    #[test]
    fn refuses_path_pieces() {
        let cases = [
            answer("../x", "1.0.0", "x86_64", DIGEST),
            answer("a/b", "1.0.0", "x86_64", DIGEST),
            answer("/etc", "1.0.0", "x86_64", DIGEST),
            answer("my-api", "../../x", "x86_64", DIGEST),
            answer("my-api", "1.0.0/../../x", "x86_64", DIGEST),
            answer("my-api", "/tmp/x", "x86_64", DIGEST),
            answer("my-api", "1.0.0", "../x", DIGEST),
            answer("my-api", "1.0.0", "x86_64/../..", DIGEST),
            answer("my-api", "1.0.0", "/x", DIGEST),
        ];
        for a in cases {
            let shown = format!("{} {} {}", a.name, a.version, a.arch);
            let err = check("my-api", a).unwrap_err();
            assert!(matches!(err, Refused::Invalid { .. }), "{shown}: {err}");
            assert!(err.to_string().contains("refusing it"), "{err}");
        }
    }

    #[test]
    fn refuses_a_bad_digest() {
        for bad in [
            "",
            "blake3:../../x",
            "sha256:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
            "blake3:6437B3AC38465133FFB63B75273A8DB548C558465D79DB03FD359C6CD5BD9D85",
        ] {
            let err = check("my-api", answer("my-api", "1.0.0", "x86_64", bad)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "the registry answered with digest {}, which is not valid; refusing it",
                    shown(bad)
                )
            );
        }
    }

    #[test]
    fn refuses_another_package() {
        let err = check("my-api", answer("evil", "1.0.0", "x86_64", DIGEST)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the registry answered for `evil` but `my-api` was asked; refusing it"
        );
    }

    #[test]
    fn refuses_another_version() {
        let err = check("my-api:1.0.0", answer("my-api", "1.0.1", "x86_64", DIGEST)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the registry answered my-api 1.0.1 but version 1.0.0 was asked; refusing it"
        );
        let err = check("my-api:20", answer("my-api", "21.0.0", "any", DIGEST)).unwrap_err();
        assert!(matches!(err, Refused::WrongVersion { .. }), "{err}");
        assert!(err.to_string().contains("a release 20.*"), "{err}");
        let err = check("my-api:20.1", answer("my-api", "20.2.0", "any", DIGEST)).unwrap_err();
        assert!(matches!(err, Refused::WrongVersion { .. }), "{err}");
        // `latest` is the highest release, never a prerelease.
        let err = check("my-api", answer("my-api", "2.0.0-rc1", "any", DIGEST)).unwrap_err();
        assert!(matches!(err, Refused::WrongVersion { .. }), "{err}");
        // Build metadata never names a niso version.
        let err = check("my-api", answer("my-api", "1.0.0+x", "any", DIGEST)).unwrap_err();
        assert!(matches!(err, Refused::Invalid { .. }), "{err}");
    }

    #[test]
    fn refuses_another_arch() {
        let err = check("my-api", answer("my-api", "1.0.0", "aarch64", DIGEST)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the registry answered with a build for `aarch64` but `x86_64` (or `any`) was asked; refusing it"
        );
        let only_any = asked("my-api", "any");
        let err =
            ResolvedPackage::from_answer(answer("my-api", "1.0.0", "x86_64", DIGEST), &only_any)
                .unwrap_err();
        assert!(matches!(err, Refused::WrongArch { .. }), "{err}");
    }

    #[test]
    fn shows_hostile_strings_escaped_and_short() {
        let err = check("my-api", answer("\u{1b}[2J../x\n", "1.0.0", "any", DIGEST)).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\u{1b}') && !text.contains('\n'), "{text:?}");
        assert!(text.contains(r"\u{1b}[2J../x\n"), "{text}");
        let long = "a/".repeat(500);
        let text = check("my-api", answer(&long, "1.0.0", "any", DIGEST))
            .unwrap_err()
            .to_string();
        assert!(text.len() < 300 && text.contains('…'), "{text}");
    }

    #[test]
    fn checks_the_archive_names_the_same_build() {
        let resolved = check("my-api", answer("my-api", "1.0.0", "any", DIGEST)).unwrap();
        let meta = |toml: &str| PackageMeta::parse(toml.as_bytes()).unwrap();
        assert!(
            resolved
                .check_meta(&meta("name='my-api'\nversion='1.0.0'\narch='any'\n"))
                .is_ok()
        );
        for other in [
            "name='evil'\nversion='1.0.0'\narch='any'\n",
            "name='my-api'\nversion='1.0.1'\narch='any'\n",
            "name='my-api'\nversion='1.0.0'\narch='x86_64'\n",
        ] {
            let err = resolved.check_meta(&meta(other)).unwrap_err();
            assert!(matches!(err, Refused::WrongArchive { .. }), "{other}");
        }
        let err = resolved
            .check_meta(&meta("name='evil'\nversion='1.0.0'\narch='any'\n"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the package the registry sent says it is evil 1.0.0 (any), not the my-api 1.0.0 (any) the registry listed; refusing it"
        );
    }
}
