//! The formats of the HTTP API's strings (package names, versions, tags, architectures,
//! digests, ids, scopes) as OpenAPI schemas. Each pattern spells the rule its validator in
//! this crate enforces, so tools that read the API document generate values the node takes;
//! the tests hold every pattern to its validator.
//!
//! Patterns are ECMA-262 regular expressions, as JSON Schema wants, and use only `[0-9]`,
//! never `\d` (which is wider than ASCII in some engines).

use std::borrow::Cow;

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type},
    },
};

use crate::{Arch, Digest, PackageName, api_key::MAX_KEY_NAME_CHARS, name::MAX_NAME_LEN};

/// `name::validate`: a lowercase letter or digit, then letters, digits, `.`, `_`, `-`.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";

/// `Arch::new`: a lowercase letter, then lowercase letters, digits and `_`; 32 at most.
pub const ARCH_PATTERN: &str = "^[a-z][a-z0-9_]{0,31}$";

/// `Digest::from_str`: the algorithm, then 64 lowercase hex digits.
pub const DIGEST_PATTERN: &str = "^blake3:[0-9a-f]{64}$";

/// A semver numeric component without leading zeros. The node keeps each in a `u64`, so the
/// pattern stops at 19 digits, which always fit.
const NUMBER: &str = "(?:0|[1-9][0-9]{0,18})";
/// A pre-release identifier: numeric without leading zeros, or alphanumeric with a letter or `-`.
const PRE_RELEASE_ID: &str = "(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)";
/// A build-metadata identifier: any alphanumerics and `-`.
const BUILD_ID: &str = "[0-9a-zA-Z-]+";

/// `semver::Version::parse`: `MAJOR.MINOR.PATCH`, optional `-PRE.RELEASE` and `+BUILD`.
pub fn version_pattern() -> String {
    format!("^{}$", version_body(NUMBER))
}

fn version_body(number: &str) -> String {
    format!(
        "{number}\\.{number}\\.{number}(?:-{PRE_RELEASE_ID}(?:\\.{PRE_RELEASE_ID})*)?(?:\\+{BUILD_ID}(?:\\.{BUILD_ID})*)?"
    )
}

/// A semver numeric component of any size.
const ANY_NUMBER: &str = "(?:0|[1-9][0-9]*)";

/// What `reference::is_version_like` says reads as a version prefix: one or two numbers.
const VERSION_PREFIX: &str = "[0-9]+(?:\\.[0-9]+)?";

/// `name::validate_tag`: the package-name alphabet, but not `latest` and nothing that reads
/// as a version or a version prefix. The look-aheads exclude every number size, so this is
/// never looser than the node.
pub fn tag_pattern() -> String {
    format!(
        "^(?!latest$)(?!{VERSION_PREFIX}$)(?!{}$){}",
        version_body(ANY_NUMBER),
        &NAME_PATTERN[1..]
    )
}

/// `api_key::is_key_id`: `key_` and 12 base62 characters.
pub const KEY_ID_PATTERN: &str = "^key_[0-9A-Za-z]{12}$";

/// `api_key::key_name`: no control character (Unicode `Cc`) and one that is not whitespace
/// either (Rust's `White_Space`, spelled out: `\s` differs between engines).
pub const KEY_NAME_PATTERN: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$";

/// Upload ids are 16 random bytes in lowercase hex.
pub const UPLOAD_ID_PATTERN: &str = "^[0-9a-f]{32}$";

/// `Scope::from_str`: `admin`, or an action and a glob over the package-name alphabet and the
/// glob operators, 128 characters at most. The glob must also compile (a `[` needs its `]`).
pub const SCOPE_PATTERN: &str = "^(?:admin|(?:push|pull|delete):[a-z0-9._*?\\[\\]{},!-]{1,128})$";

fn string(pattern: impl Into<String>, description: &str, example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([example])
}

impl PartialSchema for PackageName {
    fn schema() -> RefOr<Schema> {
        string(
            NAME_PATTERN,
            "A package name: lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 64 characters.",
            "my-api",
        )
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .into()
    }
}

impl ToSchema for PackageName {}

impl PartialSchema for Arch {
    fn schema() -> RefOr<Schema> {
        string(
            ARCH_PATTERN,
            "An architecture as Rust spells it (`x86_64`, `aarch64`, …) or `any` for portable packages.",
            "x86_64",
        )
        .into()
    }
}

impl ToSchema for Arch {}

impl PartialSchema for Digest {
    fn schema() -> RefOr<Schema> {
        string(
            DIGEST_PATTERN,
            "The blake3 hash of a package's bytes: `blake3:` and 64 lowercase hex digits.",
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        )
        .into()
    }
}

impl ToSchema for Digest {}

/// An exact semver version, as a string (the schema of [`crate::Version`] on the wire).
#[derive(Debug)]
pub enum VersionString {}

impl PartialSchema for VersionString {
    fn schema() -> RefOr<Schema> {
        string(
            version_pattern(),
            "An exact semver version: `MAJOR.MINOR.PATCH`, an optional `-PRE.RELEASE` and `+BUILD`, numbers without leading zeros.",
            "1.2.0",
        )
        .into()
    }
}

impl ToSchema for VersionString {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Version")
    }
}

/// A tag that may be set or removed (not the automatic `latest`).
#[derive(Debug)]
pub enum TagName {}

impl PartialSchema for TagName {
    fn schema() -> RefOr<Schema> {
        string(
            tag_pattern(),
            "A tag: the package-name alphabet, not `latest` (the node maintains it) and nothing that reads as a version (`1.0.0`) or a version prefix (`20`, `1.2`).",
            "stable",
        )
        .into()
    }
}

impl ToSchema for TagName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Tag")
    }
}

/// The non-secret id of an API key.
#[derive(Debug)]
pub enum KeyId {}

impl PartialSchema for KeyId {
    fn schema() -> RefOr<Schema> {
        string(
            KEY_ID_PATTERN,
            "An API key's id: `key_` and 12 base62 characters. Not a secret.",
            "key_4fT9xQ2mLp0Z",
        )
        .into()
    }
}

impl ToSchema for KeyId {}

/// A key's name, as given when it is made.
#[derive(Debug)]
pub enum KeyName {}

impl PartialSchema for KeyName {
    fn schema() -> RefOr<Schema> {
        string(
            KEY_NAME_PATTERN,
            "A key's name: 1 to 64 characters, not all spaces, no control characters. Surrounding spaces are dropped.",
            "ci-deploy",
        )
        .min_length(Some(1))
        .max_length(Some(MAX_KEY_NAME_CHARS))
        .into()
    }
}

impl ToSchema for KeyName {}

/// The id of an open upload.
#[derive(Debug)]
pub enum UploadId {}

impl PartialSchema for UploadId {
    fn schema() -> RefOr<Schema> {
        string(
            UPLOAD_ID_PATTERN,
            "An upload's id: 32 lowercase hex digits.",
            "8d0c6a1f2b3e4d5c6b7a8f9e0d1c2b3a",
        )
        .into()
    }
}

impl ToSchema for UploadId {}

/// One scope of an API key.
#[derive(Debug)]
pub enum ScopeString {}

impl PartialSchema for ScopeString {
    fn schema() -> RefOr<Schema> {
        string(
            SCOPE_PATTERN,
            "`admin`, or `push:GLOB`, `pull:GLOB` or `delete:GLOB` where GLOB matches package names (`*`, `?`, `[a-z]`, `{a,b}`) and must compile.",
            "pull:*",
        )
        .into()
    }
}

impl ToSchema for ScopeString {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Scope")
    }
}

/// A body of raw bytes: a package, a bundle.
#[derive(Debug)]
pub enum Bytes {}

impl PartialSchema for Bytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("Raw bytes."))
            .into()
    }
}

impl ToSchema for Bytes {}

#[cfg(test)]
mod tests {
    //! Each pattern against its validator, on strings drawn from the alphabet where the
    //! rules differ. Rust's `regex` has no look-ahead, so the tag pattern is checked
    //! through the parts it is built from.

    use rand::{RngExt as _, SeedableRng};
    use regex::Regex;

    use super::*;
    use crate::{
        api_key::{is_key_id, key_name},
        name::validate_tag,
        scope::Scope,
    };

    fn strings(alphabet: &[&str], max_parts: usize, count: usize, seed: u64) -> Vec<String> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let parts = rng.random_range(0..=max_parts);
                (0..parts)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            })
            .collect()
    }

    fn agree(pattern: &str, samples: &[String], valid: impl Fn(&str) -> bool) -> usize {
        let re = Regex::new(pattern).unwrap();
        let mut accepted = 0;
        for s in samples {
            assert_eq!(
                re.is_match(s),
                valid(s),
                "pattern {pattern} and the validator disagree on {s:?}"
            );
            accepted += usize::from(valid(s));
        }
        accepted
    }

    /// Samples on both sides of the rule, so a test cannot pass by accepting nothing.
    fn both_sides(accepted: usize, total: usize) {
        assert!(
            accepted > total / 20 && accepted < total - total / 20,
            "{accepted} of {total} accepted"
        );
    }

    #[test]
    fn names() {
        let mut samples = strings(
            &["a", "z", "0", "9", ".", "_", "-", "A", "/", "é", ":"],
            6,
            4000,
            1,
        );
        samples.extend(["a".repeat(64), "a".repeat(65), "0".repeat(64)]);
        let accepted = agree(NAME_PATTERN, &samples, |s| PackageName::new(s).is_ok());
        both_sides(accepted, samples.len());
    }

    #[test]
    fn architectures() {
        let mut samples = strings(&["a", "x", "0", "6", "_", "-", "A", "."], 5, 4000, 2);
        samples.extend([
            "a".repeat(32),
            "a".repeat(33),
            "x86_64".into(),
            "any".into(),
        ]);
        let accepted = agree(ARCH_PATTERN, &samples, |s| Arch::new(s).is_ok());
        both_sides(accepted, samples.len());
    }

    #[test]
    fn digests() {
        let hex = "0123456789abcdef";
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut samples = Vec::new();
        for _ in 0..2000 {
            let len = [63, 64, 64, 64, 65][rng.random_range(0..5)];
            let mut body: String = (0..len)
                .map(|_| char::from(hex.as_bytes()[rng.random_range(0..16)]))
                .collect();
            if rng.random_range(0..4) == 0 {
                body = body.replacen('a', "A", 1);
            }
            let prefix = ["blake3:", "blake3:", "sha256:", ""][rng.random_range(0..4)];
            samples.push(format!("{prefix}{body}"));
        }
        let accepted = agree(DIGEST_PATTERN, &samples, |s| s.parse::<Digest>().is_ok());
        both_sides(accepted, samples.len());
    }

    /// Version-shaped strings, each part drawn from valid and invalid spellings.
    fn version_samples(seed: u64) -> Vec<String> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut pick = |options: &[&str]| options[rng.random_range(0..options.len())].to_owned();
        let numbers = ["0", "1", "20", "0", "1", "01", "", "9999999999999999999"];
        let ids = ["rc", "0", "1", "rc", "0a", "a-b", "01", "", "A", "_"];
        let mut samples = Vec::new();
        for _ in 0..20_000 {
            let components = ["2", "3", "3", "3", "3", "4"];
            let n: usize = pick(&components).parse().unwrap_or(3);
            let mut s = (0..n).map(|_| pick(&numbers)).collect::<Vec<_>>().join(".");
            for (sep, count) in [("-", pick(&["0", "1", "2"])), ("+", pick(&["0", "1", "2"]))] {
                let count: usize = count.parse().unwrap_or(0);
                if count > 0 {
                    s.push_str(sep);
                    s.push_str(&(0..count).map(|_| pick(&ids)).collect::<Vec<_>>().join("."));
                }
            }
            samples.push(s);
        }
        samples
    }

    #[test]
    fn versions() {
        let samples = version_samples(4);
        let accepted = agree(&version_pattern(), &samples, |s| {
            semver::Version::parse(s).is_ok()
        });
        both_sides(accepted, samples.len());
    }

    #[test]
    fn versions_beyond_u64_are_outside_the_pattern() {
        let re = Regex::new(&version_pattern()).unwrap();
        assert!(!re.is_match("18446744073709551616.0.0"));
        assert!(semver::Version::parse("18446744073709551616.0.0").is_err());
    }

    #[test]
    fn tags() {
        // `tag_pattern` is `^(?!latest$)(?!PREFIX$)(?!VERSION$)ALPHABET`: check those parts.
        let unbounded_version = format!("^{}$", version_body(ANY_NUMBER));
        let alphabet = Regex::new(NAME_PATTERN).unwrap();
        let prefix = Regex::new(&format!("^{VERSION_PREFIX}$")).unwrap();
        let version = Regex::new(&unbounded_version).unwrap();
        let matches = |s: &str| {
            s != "latest" && !prefix.is_match(s) && !version.is_match(s) && alphabet.is_match(s)
        };
        let mut samples = version_samples(5);
        samples.extend(strings(
            &["s", "v", "1", "0", ".", "-", "_", "latest", "A"],
            5,
            4000,
            6,
        ));
        let mut accepted = 0;
        for s in &samples {
            assert_eq!(matches(s), validate_tag(s).is_ok(), "{s:?}");
            accepted += usize::from(matches(s));
        }
        both_sides(accepted, samples.len());
    }

    #[test]
    fn key_ids() {
        let mut samples = strings(&["key_", "a", "Z", "0", "_", "-"], 14, 4000, 7);
        samples.push("key_4fT9xQ2mLp0Z".into());
        samples.push("key_4fT9xQ2mLp0".into());
        let accepted = agree(KEY_ID_PATTERN, &samples, is_key_id);
        assert!(accepted >= 1);
        assert!(
            Regex::new(KEY_ID_PATTERN)
                .unwrap()
                .is_match("key_4fT9xQ2mLp0Z")
        );
    }

    #[test]
    fn key_names() {
        let mut samples = strings(
            &[
                "a", "Z", " ", "\t", "\u{a0}", "\u{3000}", "\u{feff}", "\u{85}", "\u{7f}", "é", "-",
            ],
            5,
            20_000,
            9,
        );
        samples.extend([
            "a".repeat(64),
            "a".repeat(65),
            format!(" {}", "a".repeat(63)),
            format!(" {}", "a".repeat(64)),
        ]);
        let re = Regex::new(KEY_NAME_PATTERN).unwrap();
        let mut accepted = 0;
        for s in &samples {
            // The pattern says the characters; `maxLength` counts them, as JSON Schema does.
            let schema = re.is_match(s) && s.chars().count() <= MAX_KEY_NAME_CHARS;
            assert_eq!(schema, key_name(s).is_ok(), "{s:?}");
            accepted += usize::from(schema);
        }
        both_sides(accepted, samples.len());
    }

    #[test]
    fn scopes_outside_the_pattern_are_refused() {
        // The glob must also compile, which no regular expression says: the pattern may
        // only be looser than the parser, never stricter.
        let re = Regex::new(SCOPE_PATTERN).unwrap();
        let samples = strings(
            &[
                "admin", "push:", "pull:", "delete:", "a", "*", "?", "[", "]", "{", "}", ",", "!",
                "A", "/", " ",
            ],
            6,
            20_000,
            8,
        );
        let mut parsed = 0;
        for s in &samples {
            let ok = s.parse::<Scope>().is_ok();
            if ok {
                parsed += 1;
                assert!(re.is_match(s), "{s:?} parses but the pattern refuses it");
            }
        }
        assert!(parsed > 100, "{parsed} scopes parsed");
        assert!("push:{a,b}".parse::<Scope>().is_ok() && re.is_match("push:{a,b}"));
    }
}
