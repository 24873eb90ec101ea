//! Managed API keys: how a key is made, named and recognised.
//!
//! The secret (`lb-…`) exists only in the caller's hands: it is shown once, at
//! creation. Stores keep its SHA-256 hash and a public id (`key_…`) used to
//! list and revoke it.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::TenantId;

/// What every secret starts with, so leaked keys are recognisable (secret scanners, logs).
pub const SECRET_PREFIX: &str = "lb-";
/// Random bytes in a secret: 256 bits, beyond any guessing.
pub const SECRET_RANDOM_BYTES: usize = 32;
const KEY_ID_PREFIX: &str = "key_";
/// The public id's random part: enough that ids never collide, not a secret.
const KEY_ID_RANDOM_BYTES: usize = 12;
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiKeyError {
    #[error(
        "invalid key name {0:?}: use 1 to 64 characters of A-Z, a-z, 0-9, space, '.', '_' or '-'"
    )]
    InvalidName(String),
    #[error("invalid key id {0:?}: expected key_ followed by 24 lowercase hex digits")]
    InvalidId(String),
    #[error("the operating system's random number generator failed: {0}")]
    Randomness(String),
}

/// The plaintext key. Its `Debug` hides it; only [`ApiKeySecret::expose`] shows it,
/// for the one moment it is printed to its owner.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash::of(self.0.as_bytes())
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(<redacted>)")
    }
}

/// The SHA-256 of a presented or stored key: what stores keep and look up by.
///
/// Plain SHA-256 (no salt, no slow hash) is enough: keys are 256 random bits,
/// not passwords, so there is nothing to brute-force from the hash, and a
/// deterministic hash is what makes a lookup by hash possible.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    pub fn of(presented: &[u8]) -> Self {
        Self(Sha256::digest(presented).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// Compares in constant time: how long a comparison takes says nothing
    /// about how many leading bytes matched.
    pub fn matches(&self, other: &ApiKeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyHash(<hidden>)")
    }
}

/// The public id of a key (`key_` + 24 hex digits): safe to print, list and log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiKeyId(String);

impl ApiKeyId {
    pub fn parse(text: &str) -> Result<Self, ApiKeyError> {
        let random = text
            .strip_prefix(KEY_ID_PREFIX)
            .filter(|r| r.len() == KEY_ID_RANDOM_BYTES * 2)
            .filter(|r| r.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        match random {
            Some(_) => Ok(Self(text.to_string())),
            None => Err(ApiKeyError::InvalidId(text.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ApiKeyId {
    type Error = ApiKeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ApiKeyId> for String {
    fn from(value: ApiKeyId) -> Self {
        value.0
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human label for a key ("ci", "alice laptop"): printable, short, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiKeyName(String);

impl ApiKeyName {
    pub fn parse(text: &str) -> Result<Self, ApiKeyError> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-');
        let count = text.chars().count();
        if (1..=MAX_NAME_CHARS).contains(&count)
            && text.chars().all(valid_char)
            && text.trim() == text
        {
            Ok(Self(text.to_string()))
        } else {
            Err(ApiKeyError::InvalidName(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ApiKeyName {
    type Error = ApiKeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ApiKeyName> for String {
    fn from(value: ApiKeyName) -> Self {
        value.0
    }
}

/// A key as stored: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_id: ApiKeyId,
    pub tenant: TenantId,
    pub name: ApiKeyName,
    pub hash: ApiKeyHash,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; set once, never cleared.
    pub revoked_at: Option<i64>,
}

impl ApiKeyRecord {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

// Hex in records and storage: readable, and the same text in every adapter.
impl Serialize for ApiKeyHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ApiKeyHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// A freshly made key: its secret, to show once, and the record to store.
#[derive(Debug)]
pub struct NewApiKey {
    pub secret: ApiKeySecret,
    pub record: ApiKeyRecord,
}

/// Makes a key for `tenant` from the operating system's randomness.
pub fn generate(
    tenant: TenantId,
    name: ApiKeyName,
    now_secs: i64,
) -> Result<NewApiKey, ApiKeyError> {
    let mut secret_bytes = [0u8; SECRET_RANDOM_BYTES];
    let mut id_bytes = [0u8; KEY_ID_RANDOM_BYTES];
    getrandom::fill(&mut secret_bytes).map_err(|e| ApiKeyError::Randomness(e.to_string()))?;
    getrandom::fill(&mut id_bytes).map_err(|e| ApiKeyError::Randomness(e.to_string()))?;
    Ok(from_random(
        tenant,
        name,
        now_secs,
        &secret_bytes,
        &id_bytes,
    ))
}

/// The deterministic part of [`generate`], given its random bytes.
fn from_random(
    tenant: TenantId,
    name: ApiKeyName,
    now_secs: i64,
    secret_bytes: &[u8; SECRET_RANDOM_BYTES],
    id_bytes: &[u8; KEY_ID_RANDOM_BYTES],
) -> NewApiKey {
    // URL-safe base64: no characters that need quoting in headers, shells or URLs.
    let secret = ApiKeySecret(format!(
        "{SECRET_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(secret_bytes)
    ));
    let record = ApiKeyRecord {
        key_id: ApiKeyId(format!("{KEY_ID_PREFIX}{}", hex::encode(id_bytes))),
        tenant,
        name,
        hash: secret.hash(),
        created_at: now_secs,
        revoked_at: None,
    };
    NewApiKey { secret, record }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn name() -> ApiKeyName {
        ApiKeyName::parse("ci").unwrap()
    }

    #[test]
    fn a_generated_key_is_prefixed_url_safe_and_carries_256_random_bits() {
        let key = generate(tenant(), name(), 7).unwrap();
        let text = key.secret.expose();
        let encoded = text.strip_prefix("lb-").expect("lb- prefix");
        let decoded = URL_SAFE_NO_PAD.decode(encoded).expect("URL-safe base64");
        assert_eq!(decoded.len(), 32);
        assert!(encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(key.record.hash, ApiKeyHash::of(text.as_bytes()));
        assert!(ApiKeyId::parse(key.record.key_id.as_str()).is_ok());
        assert_eq!(key.record.created_at, 7);
        assert!(key.record.is_active());
    }

    #[test]
    fn two_generated_keys_differ_in_secret_and_id() {
        let a = generate(tenant(), name(), 0).unwrap();
        let b = generate(tenant(), name(), 0).unwrap();
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.record.key_id, b.record.key_id);
    }

    #[test]
    fn the_secret_never_appears_in_debug_output() {
        let key = generate(tenant(), name(), 0).unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains(key.secret.expose()));
        assert!(!debug.contains(&key.record.hash.to_hex()));
    }

    #[test]
    fn hashes_round_trip_through_hex_and_compare_by_value() {
        let key = from_random(tenant(), name(), 0, &[1; 32], &[2; 12]);
        let hash = key.record.hash;
        assert_eq!(ApiKeyHash::from_hex(&hash.to_hex()), Some(hash));
        assert!(hash.matches(&ApiKeyHash::of(key.secret.expose().as_bytes())));
        assert!(!hash.matches(&ApiKeyHash::of(b"lb-other")));
        assert_eq!(key.record.key_id.as_str(), "key_020202020202020202020202");
        assert_eq!(ApiKeyHash::from_hex("zz"), None);
    }

    #[test]
    fn names_are_short_printable_labels() {
        for good in ["ci", "alice laptop", "prod-1.v2_x", &"n".repeat(64)] {
            assert!(ApiKeyName::parse(good).is_ok(), "{good:?}");
        }
        for bad in ["", " ci", "ci ", "a\nb", "é", "a/b", &"n".repeat(65)] {
            assert!(ApiKeyName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_ids_are_checked_before_use() {
        for bad in [
            "",
            "key_",
            "key_XYZ",
            "lb-abc",
            "key_0202020202020202020202020",
        ] {
            assert!(ApiKeyId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
