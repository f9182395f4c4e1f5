//! API key format: `niso_k1_` + 40 random base62 characters + a 6-character checksum, its
//! non-secret id `key_…`, and the hash a node stores instead of the key.

use std::fmt;

/// Prefix of every API key; the `k1` is the format version.
pub const KEY_PREFIX: &str = "niso_k1_";
/// Prefix of every key id.
pub const ID_PREFIX: &str = "key_";

const SECRET_LEN: usize = 40;
const CHECKSUM_LEN: usize = 6;
const ID_LEN: usize = 12;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HASH_CONTEXT: &str = "niso-registry 2026-11 api key hash v1";

/// A full API key. Its `Debug` form hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// The stored form of a key: a keyed hash, so the data dir never holds a usable key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("API key does not start with `{KEY_PREFIX}`")]
    Prefix,
    #[error("API key has the wrong length")]
    Length,
    #[error("API key contains characters outside base62")]
    Alphabet,
    #[error("API key checksum does not match; it was probably mistyped or truncated")]
    Checksum,
}

impl ApiKey {
    /// Makes a new key from a source of random bytes (the caller's CSPRNG).
    pub fn generate(fill: &mut dyn FnMut(&mut [u8])) -> Self {
        let secret = random_base62(SECRET_LEN, fill);
        let body = format!("{KEY_PREFIX}{secret}");
        let checksum = checksum(&body);
        Self(format!("{body}{checksum}"))
    }

    /// Checks the shape and checksum of a key someone typed or sent.
    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        let rest = s.strip_prefix(KEY_PREFIX).ok_or(KeyFormatError::Prefix)?;
        if rest.len() != SECRET_LEN + CHECKSUM_LEN {
            return Err(KeyFormatError::Length);
        }
        if !rest.bytes().all(|b| BASE62.contains(&b)) {
            return Err(KeyFormatError::Alphabet);
        }
        let (body, sum) = s.split_at(s.len() - CHECKSUM_LEN);
        if checksum(body) != sum {
            return Err(KeyFormatError::Checksum);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        let mut hasher = blake3::Hasher::new_derive_key(HASH_CONTEXT);
        hasher.update(self.0.as_bytes());
        KeyHash(*hasher.finalize().as_bytes())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({KEY_PREFIX}…)")
    }
}

/// A fresh, random, non-secret key id: `key_` + 12 base62 characters.
pub fn generate_key_id(fill: &mut dyn FnMut(&mut [u8])) -> String {
    format!("{ID_PREFIX}{}", random_base62(ID_LEN, fill))
}

/// Most characters in a key's name, surrounding spaces included.
pub const MAX_KEY_NAME_CHARS: usize = 64;

/// Why a key name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "key names are 1 to {MAX_KEY_NAME_CHARS} characters, not all spaces, without control characters"
)]
pub struct KeyNameError;

/// Checks a key's name and returns it without surrounding whitespace.
pub fn key_name(name: &str) -> Result<&str, KeyNameError> {
    let trimmed = name.trim();
    if trimmed.is_empty()
        || name.chars().count() > MAX_KEY_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(KeyNameError);
    }
    Ok(trimmed)
}

/// Whether `s` has the shape of a key id (used to validate path parameters).
pub fn is_key_id(s: &str) -> bool {
    s.strip_prefix(ID_PREFIX)
        .is_some_and(|rest| rest.len() == ID_LEN && rest.bytes().all(|b| BASE62.contains(&b)))
}

/// Uniform base62 characters by rejection sampling, so no character is more likely.
fn random_base62(len: usize, fill: &mut dyn FnMut(&mut [u8])) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        fill(&mut buf);
        for &b in &buf {
            // 248 = 4 × 62: bytes at or above it would bias the first characters.
            if b < 248 && out.len() < len {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    out
}

fn checksum(body: &str) -> String {
    let digest = blake3::hash(body.as_bytes());
    let b = digest.as_bytes();
    let mut n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut chars = [b'0'; CHECKSUM_LEN];
    for c in chars.iter_mut().rev() {
        *c = BASE62[(n % 62) as usize];
        n /= 62;
    }
    chars.iter().map(|&c| char::from(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rng_fill(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        move |buf: &mut [u8]| rng.fill_bytes(buf)
    }

    #[test]
    fn generated_keys_parse_and_hash_stably() {
        let mut fill = rng_fill(7);
        let key = ApiKey::generate(&mut fill);
        assert!(key.expose().starts_with("niso_k1_"));
        assert_eq!(key.expose().len(), KEY_PREFIX.len() + 46);
        let parsed = ApiKey::parse(key.expose()).unwrap();
        assert_eq!(parsed.hash(), key.hash());
        assert!(!format!("{key:?}").contains(&key.expose()[8..]));
        let id = generate_key_id(&mut fill);
        assert!(is_key_id(&id), "{id}");
    }

    #[test]
    fn typos_are_caught_by_the_checksum() {
        let key = ApiKey::generate(&mut rng_fill(1));
        let s = key.expose();
        let mut typo = s.to_owned().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(ApiKey::parse(&typo), Err(KeyFormatError::Checksum));
        assert_eq!(
            ApiKey::parse(&s[..s.len() - 1]),
            Err(KeyFormatError::Length)
        );
        assert_eq!(ApiKey::parse("ghp_abc"), Err(KeyFormatError::Prefix));
    }
}
