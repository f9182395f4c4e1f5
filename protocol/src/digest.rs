//! Content digests: blake3 hashes spelled `blake3:<64 hex>` on the wire and in file names.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A blake3 digest of a blob's bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("digest `{0}` is not valid; expected `blake3:` followed by 64 lowercase hex digits")]
pub struct DigestError(pub String);

impl Digest {
    pub const PREFIX: &'static str = "blake3:";

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits without the algorithm prefix, as used for blob file names.
    pub fn hex(&self) -> String {
        crate::hex::encode(&self.0)
    }

    /// Parses the bare 64-hex-digit form used in blob file names (lowercase only, so each
    /// digest has exactly one spelling).
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        crate::hex::decode(hex).map(Self)
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix(Self::PREFIX)
            .and_then(Self::from_hex)
            .ok_or_else(|| DigestError(s.to_owned()))
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_blake3() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(Digest::from_hex(&d.hex()), Some(d));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "blake3:",
            "sha256:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
            "blake3:6437B3AC38465133FFB63B75273A8DB548C558465D79DB03FD359C6CD5BD9D85",
            "blake3:6437b3ac",
            "blake3:../../../../etc/passwd0000000000000000000000000000000000000000",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }
}
