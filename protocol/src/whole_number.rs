//! Whole numbers in request bodies, however they are spelled. JSON Schema counts `5.0` as an
//! integer, and some encoders (Python's floats, some JavaScript tooling) write counts that
//! way; serde alone refuses them for an integer field.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};

/// A `u64` given as an integer or as a number with no fractional part.
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WholeVisitor).map(Whole)
    }
}

struct WholeVisitor;

/// 2^64: the first float past `u64::MAX` (which itself has no exact float).
const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;

impl Visitor<'_> for WholeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number from 0 to 18446744073709551615")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && (0.0..TWO_TO_64).contains(&v) {
            // Exact: whole, non-negative and below 2^64.
            Ok(v as u64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let Whole(v) = Whole::deserialize(d)?;
    u32::try_from(v).map_err(|_| {
        de::Error::invalid_value(
            de::Unexpected::Unsigned(v),
            &"a whole number up to 4294967295",
        )
    })
}

pub fn option_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Whole>::deserialize(d)?.map(|Whole(v)| v))
}

#[cfg(test)]
mod tests {
    use crate::api::{CreateKey, GcRequest};

    fn gc(json: &str) -> Result<u32, String> {
        serde_json::from_str::<GcRequest>(json)
            .map(|r| r.keep_versions)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_count_as_integers() {
        assert_eq!(gc(r#"{"keep_versions": 3}"#), Ok(3));
        assert_eq!(gc(r#"{"keep_versions": 3.0}"#), Ok(3));
        assert_eq!(gc(r#"{"keep_versions": 4294967295}"#), Ok(u32::MAX));
        for bad in ["3.5", "-1", "-1.0", "4294967296", "1e300", "\"3\"", "null"] {
            let e = gc(&format!(r#"{{"keep_versions": {bad}}}"#));
            assert!(e.is_err(), "{bad} was taken: {e:?}");
        }
        let key = |json: &str| {
            serde_json::from_str::<CreateKey>(json)
                .map(|k| k.expires_at_ms)
                .map_err(|e| e.to_string())
        };
        let body = r#"{"name": "ci", "scopes": ["admin"]"#;
        assert_eq!(key(&format!("{body}}}")), Ok(None));
        assert_eq!(
            key(&format!(r#"{body}, "expires_at_ms": null}}"#)),
            Ok(None)
        );
        assert_eq!(
            key(&format!(r#"{body}, "expires_at_ms": 5.0}}"#)),
            Ok(Some(5))
        );
        assert_eq!(
            key(&format!(
                r#"{body}, "expires_at_ms": 18446744073709551615}}"#
            )),
            Ok(Some(u64::MAX))
        );
        assert!(key(&format!(r#"{body}, "expires_at_ms": 0.5}}"#)).is_err());
    }
}
