//! Signed records: every change a node originates (a manifest, a tag move, a deletion) as
//! domain-separated canonical bytes signed with the origin's ed25519 key.
//!
//! The canonical bytes are a pure function of the fields, so a record travels as JSON or as
//! bytes and verifies the same way. The layout is documented in `docs/records.md` and pinned by
//! the vectors in `docs/record-vectors.json`.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{Arch, Digest, PackageName, name::validate_tag};

/// Domain separator at the start of every signed message.
pub const DOMAIN: &[u8] = b"niso-record-v1\0";
/// Largest encoded record accepted, in bytes.
pub const MAX_RECORD_LEN: usize = 8 * 1024;

/// An origin's public key: the identity that signs records (and, as a libp2p peer id, the node).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OriginKey(#[serde(with = "crate::hex::array")] pub [u8; 32]);

impl fmt::Display for OriginKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for OriginKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OriginKey({self})")
    }
}

/// Origin keys parsed for signature checks, for one batch of records. Holds at most
/// [`OriginKeys::MAX`]; past that it starts over, so a batch signed by many keys costs no more
/// than checking each alone.
#[derive(Default)]
pub struct OriginKeys {
    keys: std::collections::HashMap<OriginKey, VerifyingKey>,
}

impl OriginKeys {
    pub const MAX: usize = 256;

    fn get(&mut self, origin: OriginKey) -> Result<VerifyingKey, RecordError> {
        if let Some(key) = self.keys.get(&origin) {
            return Ok(*key);
        }
        let key =
            VerifyingKey::from_bytes(&origin.0).map_err(|_| RecordError::BadOrigin(origin))?;
        if self.keys.len() >= Self::MAX {
            self.keys.clear();
        }
        self.keys.insert(origin, key);
        Ok(key)
    }
}

impl fmt::Debug for OriginKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OriginKeys({} keys)", self.keys.len())
    }
}

/// A node's signing secret. Its `Debug` form hides the key.
#[derive(Clone)]
pub struct NodeSecret(SigningKey);

impl NodeSecret {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(bytes))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn origin(&self) -> OriginKey {
        OriginKey(self.0.verifying_key().to_bytes())
    }
}

impl fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeSecret(origin {})", self.origin())
    }
}

/// A published package version: `(name, version, arch)` is bound to `digest` forever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBody {
    pub name: PackageName,
    pub version: semver::Version,
    pub arch: Arch,
    pub digest: Digest,
    pub size: u64,
    pub description: String,
}

/// A tag set to a version, or removed (`version: None`). `tag_seq` only ever grows per tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagBody {
    pub name: PackageName,
    pub tag: String,
    pub version: Option<semver::Version>,
    pub tag_seq: u64,
}

/// A deleted `(name, version, arch)`; it can never be published again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneBody {
    pub name: PackageName,
    pub version: semver::Version,
    pub arch: Arch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RecordBody {
    Manifest(ManifestBody),
    Tag(TagBody),
    Tombstone(TombstoneBody),
}

impl RecordBody {
    pub fn package(&self) -> &PackageName {
        match self {
            Self::Manifest(m) => &m.name,
            Self::Tag(t) => &t.name,
            Self::Tombstone(t) => &t.name,
        }
    }

    fn kind_byte(&self) -> u8 {
        match self {
            Self::Manifest(_) => 1,
            Self::Tag(_) => 2,
            Self::Tombstone(_) => 3,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Manifest(_) => "manifest",
            Self::Tag(_) => "tag",
            Self::Tombstone(_) => "tombstone",
        }
    }
}

/// A signed record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub origin: OriginKey,
    pub seq: u64,
    pub timestamp_ms: u64,
    #[serde(flatten)]
    pub body: RecordBody,
    #[serde(with = "crate::hex::array")]
    pub signature: [u8; 64],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record signature does not verify for origin {0}")]
    BadSignature(OriginKey),
    #[error("record origin {0} is not a valid ed25519 public key")]
    BadOrigin(OriginKey),
    #[error("record is malformed: {0}")]
    Malformed(&'static str),
    #[error("record is larger than {MAX_RECORD_LEN} bytes")]
    TooLarge,
    #[error("record sequence numbers start at 1")]
    ZeroSeq,
    #[error("record field is invalid: {0}")]
    Field(String),
}

impl Record {
    /// Signs `body` as the `seq`-th record of `secret`'s origin.
    pub fn sign(secret: &NodeSecret, seq: u64, timestamp_ms: u64, body: RecordBody) -> Self {
        let origin = secret.origin();
        let message = canonical_bytes(&origin, seq, timestamp_ms, &body);
        let signature = secret.0.sign(&message).to_bytes();
        Self {
            origin,
            seq,
            timestamp_ms,
            body,
            signature,
        }
    }

    /// The exact bytes the signature covers.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_bytes(&self.origin, self.seq, self.timestamp_ms, &self.body)
    }

    /// Canonical bytes followed by the 64-byte signature: the binary wire and storage form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.canonical_bytes();
        out.extend_from_slice(&self.signature);
        out
    }

    /// A stable identifier: blake3 of the wire bytes.
    pub fn id(&self) -> Digest {
        Digest::of(&self.to_bytes())
    }

    /// Checks every field and the signature. A record that passes is exactly what its origin
    /// signed; whether to *accept* it is a trust decision made elsewhere.
    pub fn verify(&self) -> Result<(), RecordError> {
        self.verify_with(&mut OriginKeys::default())
    }

    /// [`Record::verify`], taking the origin's key from `keys` (parsed once per origin, which
    /// is a curve point decompression: a batch of records has few origins).
    pub fn verify_with(&self, keys: &mut OriginKeys) -> Result<(), RecordError> {
        if self.seq == 0 {
            return Err(RecordError::ZeroSeq);
        }
        check_body(&self.body)?;
        let message = self.canonical_bytes();
        if message.len() + 64 > MAX_RECORD_LEN {
            return Err(RecordError::TooLarge);
        }
        let key = keys.get(self.origin)?;
        let signature = Signature::from_bytes(&self.signature);
        key.verify_strict(&message, &signature)
            .map_err(|_| RecordError::BadSignature(self.origin))
    }

    /// Parses the binary form and verifies it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        let record = Self::parse_unverified(bytes)?;
        record.verify()?;
        Ok(record)
    }

    /// Parses the binary form without checking the signature. Only for tools that inspect
    /// records (and for deliberately broken test nodes): never accept a record parsed this way.
    pub fn parse_unverified(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLarge);
        }
        let mut r = Cursor { bytes, pos: 0 };
        if r.take(DOMAIN.len())? != DOMAIN {
            return Err(RecordError::Malformed("wrong domain separator"));
        }
        let kind = r.u8()?;
        let origin = OriginKey(r.array()?);
        let seq = r.u64()?;
        let timestamp_ms = r.u64()?;
        let body = match kind {
            1 => RecordBody::Manifest(ManifestBody {
                name: r.name()?,
                version: r.version()?,
                arch: r.arch()?,
                digest: Digest::from_bytes(r.array()?),
                size: r.u64()?,
                description: r.string()?,
            }),
            2 => {
                let name = r.name()?;
                let tag = r.string()?;
                let present = r.u8()?;
                let version = match present {
                    0 => {
                        if !r.string()?.is_empty() {
                            return Err(RecordError::Malformed("removed tag carries a version"));
                        }
                        None
                    }
                    1 => Some(r.version()?),
                    _ => return Err(RecordError::Malformed("bad tag presence flag")),
                };
                RecordBody::Tag(TagBody {
                    name,
                    tag,
                    version,
                    tag_seq: r.u64()?,
                })
            }
            3 => RecordBody::Tombstone(TombstoneBody {
                name: r.name()?,
                version: r.version()?,
                arch: r.arch()?,
            }),
            _ => return Err(RecordError::Malformed("unknown record kind")),
        };
        let signature: [u8; 64] = r.array()?;
        if r.pos != bytes.len() {
            return Err(RecordError::Malformed("trailing bytes"));
        }
        Ok(Self {
            origin,
            seq,
            timestamp_ms,
            body,
            signature,
        })
    }
}

fn check_body(body: &RecordBody) -> Result<(), RecordError> {
    match body {
        RecordBody::Manifest(m) => {
            check_version(&m.version)?;
            if m.description.chars().count() > crate::package_meta::MAX_DESCRIPTION_LEN {
                return Err(RecordError::Field("description too long".into()));
            }
        }
        RecordBody::Tag(t) => {
            validate_tag(&t.tag).map_err(|e| RecordError::Field(e.to_string()))?;
            if let Some(v) = &t.version {
                check_version(v)?;
            }
            if t.tag_seq == 0 {
                return Err(RecordError::Field("tag sequence numbers start at 1".into()));
            }
            if t.tag_seq == u64::MAX {
                // The next move could not be numbered: refuse rather than let a tag freeze.
                return Err(RecordError::Field(
                    "tag sequence number is exhausted".into(),
                ));
            }
        }
        RecordBody::Tombstone(t) => check_version(&t.version)?,
    }
    Ok(())
}

fn check_version(v: &semver::Version) -> Result<(), RecordError> {
    if v.build.is_empty() {
        Ok(())
    } else {
        Err(RecordError::Field(format!(
            "version {v} carries build metadata, which niso refuses"
        )))
    }
}

fn canonical_bytes(origin: &OriginKey, seq: u64, timestamp_ms: u64, body: &RecordBody) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(DOMAIN);
    out.push(body.kind_byte());
    out.extend_from_slice(&origin.0);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    let put_str = |out: &mut Vec<u8>, s: &str| {
        // Lengths are bounded by MAX_RECORD_LEN checks on every path that accepts records.
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    match body {
        RecordBody::Manifest(m) => {
            put_str(&mut out, m.name.as_str());
            put_str(&mut out, &m.version.to_string());
            put_str(&mut out, m.arch.as_str());
            out.extend_from_slice(m.digest.as_bytes());
            out.extend_from_slice(&m.size.to_be_bytes());
            put_str(&mut out, &m.description);
        }
        RecordBody::Tag(t) => {
            put_str(&mut out, t.name.as_str());
            put_str(&mut out, &t.tag);
            match &t.version {
                Some(v) => {
                    out.push(1);
                    put_str(&mut out, &v.to_string());
                }
                None => {
                    out.push(0);
                    put_str(&mut out, "");
                }
            }
            out.extend_from_slice(&t.tag_seq.to_be_bytes());
        }
        RecordBody::Tombstone(t) => {
            put_str(&mut out, t.name.as_str());
            put_str(&mut out, &t.version.to_string());
            put_str(&mut out, t.arch.as_str());
        }
    }
    out
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(RecordError::Malformed("truncated"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        let s = self.take(len)?;
        String::from_utf8(s.to_vec()).map_err(|_| RecordError::Malformed("string is not UTF-8"))
    }

    fn name(&mut self) -> Result<PackageName, RecordError> {
        PackageName::new(self.string()?).map_err(|e| RecordError::Field(e.to_string()))
    }

    fn arch(&mut self) -> Result<Arch, RecordError> {
        Arch::new(self.string()?).map_err(|e| RecordError::Field(e.to_string()))
    }

    fn version(&mut self) -> Result<semver::Version, RecordError> {
        let s = self.string()?;
        let v = semver::Version::parse(&s).map_err(|e| RecordError::Field(e.to_string()))?;
        // Only the canonical spelling round-trips to the same signed bytes.
        if v.to_string() != s {
            return Err(RecordError::Malformed("version is not in canonical form"));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> NodeSecret {
        NodeSecret::from_bytes(&[b; 32])
    }

    fn manifest() -> RecordBody {
        RecordBody::Manifest(ManifestBody {
            name: PackageName::new("my-api").unwrap(),
            version: semver::Version::parse("1.0.0").unwrap(),
            arch: Arch::new("x86_64").unwrap(),
            digest: Digest::of(b"package bytes"),
            size: 13,
            description: "My API".into(),
        })
    }

    fn tag(version: Option<&str>) -> RecordBody {
        RecordBody::Tag(TagBody {
            name: PackageName::new("my-api").unwrap(),
            tag: "stable".into(),
            version: version.map(|v| semver::Version::parse(v).unwrap()),
            tag_seq: 3,
        })
    }

    #[test]
    fn sign_verify_round_trip_every_kind() {
        let tomb = RecordBody::Tombstone(TombstoneBody {
            name: PackageName::new("my-api").unwrap(),
            version: semver::Version::parse("1.0.0").unwrap(),
            arch: Arch::new("x86_64").unwrap(),
        });
        for body in [manifest(), tag(Some("1.0.0")), tag(None), tomb] {
            let rec = Record::sign(&secret(1), 1, 1_700_000_000_000, body);
            rec.verify().unwrap();
            let back = Record::from_bytes(&rec.to_bytes()).unwrap();
            assert_eq!(back, rec);
            let json = serde_json::to_string(&rec).unwrap();
            let from_json: Record = serde_json::from_str(&json).unwrap();
            assert_eq!(from_json, rec);
            from_json.verify().unwrap();
        }
    }

    /// Keys parsed once serve the whole batch, and a remembered key never vouches for a
    /// record it did not sign: each record is checked against its own origin.
    #[test]
    fn a_batch_checks_each_record_against_its_own_origin() {
        let mut keys = OriginKeys::default();
        let one = Record::sign(&secret(1), 1, 10, manifest());
        let two = Record::sign(&secret(2), 1, 10, manifest());
        one.verify_with(&mut keys).unwrap();
        two.verify_with(&mut keys).unwrap();
        let mut forged = two.clone();
        forged.origin = one.origin;
        assert_eq!(
            forged.verify_with(&mut keys),
            Err(RecordError::BadSignature(one.origin))
        );
        let mut off_curve = one.clone();
        off_curve.origin = OriginKey([0xff; 32]);
        assert!(matches!(
            off_curve.verify_with(&mut keys),
            Err(RecordError::BadOrigin(_) | RecordError::BadSignature(_))
        ));
        for i in 0..=OriginKeys::MAX as u8 {
            Record::sign(&secret(i), 1, 10, tag(None))
                .verify_with(&mut keys)
                .unwrap();
        }
        assert!(
            keys.keys.len() <= OriginKeys::MAX,
            "the cache stays bounded"
        );
        one.verify_with(&mut keys).unwrap();
    }

    #[test]
    fn tampering_is_detected() {
        let rec = Record::sign(&secret(1), 5, 10, manifest());
        let mut other = rec.clone();
        other.seq = 6;
        assert_eq!(other.verify(), Err(RecordError::BadSignature(rec.origin)));
        let mut other = rec.clone();
        other.origin = secret(2).origin();
        assert!(matches!(other.verify(), Err(RecordError::BadSignature(_))));
        let mut bytes = rec.to_bytes();
        let last = bytes.len() - 70;
        bytes[last] ^= 1;
        assert!(Record::from_bytes(&bytes).is_err());
        let mut long = rec.to_bytes();
        long.push(0);
        assert!(Record::from_bytes(&long).is_err());
        assert!(Record::from_bytes(&rec.to_bytes()[..50]).is_err());
    }

    #[test]
    fn kinds_are_domain_separated() {
        // The same bytes can never verify as a different kind: the kind byte is signed.
        let rec = Record::sign(&secret(1), 1, 1, tag(Some("1.0.0")));
        let mut bytes = rec.to_bytes();
        bytes[DOMAIN.len()] = 3;
        assert!(Record::from_bytes(&bytes).is_err());
    }

    #[test]
    fn latest_cannot_be_signed_as_a_tag() {
        let body = RecordBody::Tag(TagBody {
            name: PackageName::new("a").unwrap(),
            tag: "latest".into(),
            version: None,
            tag_seq: 1,
        });
        let rec = Record::sign(&secret(1), 1, 1, body);
        assert!(matches!(rec.verify(), Err(RecordError::Field(_))));
    }

    fn vector_records() -> (NodeSecret, Vec<Record>) {
        let secret = NodeSecret::from_bytes(&core::array::from_fn(|i| i as u8));
        let tomb = RecordBody::Tombstone(TombstoneBody {
            name: PackageName::new("my-api").unwrap(),
            version: semver::Version::parse("1.0.0").unwrap(),
            arch: Arch::new("x86_64").unwrap(),
        });
        let bodies = [manifest(), tag(Some("1.0.0")), tag(None), tomb];
        let records = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                Record::sign(&secret, i as u64 + 1, 1_767_225_600_000 + i as u64, body)
            })
            .collect();
        (secret, records)
    }

    /// The checked-in vectors pin the byte layout and the signatures. After an intended format
    /// change, regenerate them with `NISO_BLESS=1 cargo test -p niso-protocol golden_vectors`.
    #[test]
    fn golden_vectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/record-vectors.json");
        let (secret, records) = vector_records();
        let expected: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "secret": crate::hex::encode(&secret.to_bytes()),
                    "record": r,
                    "canonical_hex": crate::hex::encode(&r.canonical_bytes()),
                    "id": r.id().to_string(),
                })
            })
            .collect();
        if std::env::var_os("NISO_BLESS").is_some() {
            let text = serde_json::to_string_pretty(&expected).unwrap() + "\n";
            std::fs::write(path, text).unwrap();
        }
        let on_disk: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(on_disk, expected, "record encoding drifted from {path}");
        for v in &on_disk {
            let rec: Record = serde_json::from_value(v["record"].clone()).unwrap();
            rec.verify().unwrap();
            let hex = v["canonical_hex"].as_str().unwrap();
            let mut wire = Vec::new();
            for i in (0..hex.len()).step_by(2) {
                wire.push(u8::from_str_radix(&hex[i..i + 2], 16).unwrap());
            }
            wire.extend_from_slice(&rec.signature);
            assert_eq!(Record::from_bytes(&wire).unwrap(), rec);
        }
    }
}
