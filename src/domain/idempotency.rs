//! Idempotency keys, the batch ids derived from them, and request fingerprints.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::batch::BatchId;
use super::create::CreateBatch;
use super::tenant::TenantId;
use super::validation::ValidationError;

/// Stripe's bound, which the IETF draft's examples follow.
pub const MAX_KEY_CHARS: usize = 255;

/// A client-chosen idempotency key: 1..=255 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let chars = value.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return Err(ValidationError::invalid_value(
                "idempotency_key",
                format!(
                    "Invalid 'idempotency_key': expected 1 to {MAX_KEY_CHARS} characters, but got {chars}."
                ),
            ));
        }
        Ok(Self(value.to_string()))
    }

    /// Reads the `Idempotency-Key` header.
    ///
    /// The IETF draft makes the value an RFC 8941 sf-string (`"abc"`), while Stripe
    /// and most clients send the bare token (`abc`); both name the same key.
    pub fn from_header(raw: &[u8]) -> Result<Self, ValidationError> {
        let invalid = || {
            ValidationError::invalid_value(
                "Idempotency-Key",
                "Invalid 'Idempotency-Key' header: expected a token or a quoted string of visible ASCII characters.".to_string(),
            )
        };
        let text = std::str::from_utf8(raw).map_err(|_| invalid())?.trim();
        let value = match text.strip_prefix('"') {
            Some(quoted) => unquote_sf_string(quoted).ok_or_else(invalid)?,
            None => text.to_string(),
        };
        Self::parse(&value).map_err(|e| ValidationError {
            param: Some("Idempotency-Key".to_string()),
            ..e
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The batch id for this key: a retry lands on the same DynamoDB item, which
    /// is what lets one conditional put decide between create and replay.
    ///
    /// The tenant is part of the hash, so equal keys of two tenants never meet.
    pub fn batch_id(&self, tenant: &TenantId) -> BatchId {
        let mut hasher = Sha256::new();
        hasher.update(b"lambda-batches/batch-id/v1\0");
        for part in [tenant.as_str(), self.as_str()] {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") hash apart.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let digest = hex::encode(hasher.finalize());
        BatchId::from_trusted(format!("batch_{}", &digest[..32]))
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 8941 §3.3.3: the rest of a string after its opening quote.
fn unquote_sf_string(rest: &str) -> Option<String> {
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\') => out.push(escaped),
                _ => return None,
            },
            '"' => return chars.next().is_none().then_some(out),
            ' '..='~' => out.push(c),
            _ => return None,
        }
    }
    None
}

/// A fresh random id, for creates without a key.
pub fn random_batch_id() -> BatchId {
    BatchId::from_trusted(format!("batch_{}", uuid::Uuid::new_v4().simple()))
}

/// SHA-256 over the canonical form of the parameters that define a batch.
///
/// Stored with the batch; a retry with the same key must match it. Metadata keys
/// are sorted, and an absent metadata stays distinct from `{}`, as in the
/// reference provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(request: &CreateBatch) -> Self {
        #[derive(Serialize)]
        struct Canonical<'a> {
            version: u8,
            input_file_id: &'a str,
            endpoint: &'a str,
            completion_window: &'a str,
            metadata: Option<&'a BTreeMap<String, String>>,
            output_expires_after: Option<(&'a str, i64)>,
            // Left out when absent, so fingerprints of batches without it stay as they were.
            #[serde(skip_serializing_if = "Option::is_none")]
            max_concurrency: Option<u32>,
        }
        let canonical = Canonical {
            version: 1,
            input_file_id: &request.input_file_id,
            endpoint: request.endpoint.as_str(),
            completion_window: &request.completion_window,
            metadata: request.metadata.as_ref(),
            output_expires_after: request
                .output_expires_after
                .as_ref()
                .map(|o| (o.anchor.as_str(), o.seconds)),
            max_concurrency: request.max_concurrency,
        };
        // Serializing a struct of strings, numbers and a BTreeMap cannot fail.
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        Self(hex::encode(Sha256::digest(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::create::{Endpoint, OutputExpiresAfter};

    fn request(metadata: Option<&[(&str, &str)]>) -> CreateBatch {
        CreateBatch {
            input_file_id: "file-1".into(),
            endpoint: Endpoint::ChatCompletions,
            completion_window: "24h".into(),
            metadata: metadata.map(|pairs| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            output_expires_after: None,
            idempotency_key: None,
            max_concurrency: None,
        }
    }

    #[test]
    fn fingerprint_ignores_metadata_order_but_not_null_versus_empty() {
        let a = Fingerprint::of(&request(Some(&[("a", "1"), ("b", "2")])));
        let b = Fingerprint::of(&request(Some(&[("b", "2"), ("a", "1")])));
        assert_eq!(a, b);
        assert_ne!(
            Fingerprint::of(&request(None)),
            Fingerprint::of(&request(Some(&[])))
        );
    }

    #[test]
    fn fingerprint_covers_every_defining_parameter() {
        let base = request(None);
        let variants = [
            CreateBatch {
                input_file_id: "file-2".into(),
                ..base.clone()
            },
            CreateBatch {
                endpoint: Endpoint::Embeddings,
                ..base.clone()
            },
            CreateBatch {
                output_expires_after: Some(OutputExpiresAfter {
                    anchor: "created_at".into(),
                    seconds: 3600,
                }),
                ..base.clone()
            },
            request(Some(&[("a", "1")])),
            CreateBatch {
                max_concurrency: Some(4),
                ..base.clone()
            },
        ];
        for variant in variants {
            assert_ne!(Fingerprint::of(&base), Fingerprint::of(&variant));
        }
    }

    #[test]
    fn batch_ids_are_deterministic_per_tenant_and_key() {
        let key = IdempotencyKey::parse("same-token").unwrap();
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        assert_eq!(key.batch_id(&a), key.batch_id(&a));
        assert_ne!(key.batch_id(&a), key.batch_id(&b));
        assert!(BatchId::parse(key.batch_id(&a).as_str()).is_some());
        assert_eq!(key.batch_id(&a).as_str().len(), "batch_".len() + 32);
        assert_ne!(random_batch_id(), random_batch_id());
    }

    #[test]
    fn keys_are_one_to_255_characters() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"é".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn header_accepts_tokens_and_structured_field_strings() {
        let parse = |raw: &str| IdempotencyKey::from_header(raw.as_bytes()).map(|k| k.0);
        assert_eq!(parse("abc-123").unwrap(), "abc-123");
        assert_eq!(parse("\"abc-123\"").unwrap(), "abc-123");
        assert_eq!(parse(r#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
        for bad in ["\"unterminated", "\"bad\\escape\"", "\"trailing\"x", "\"\""] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.param.as_deref(), Some("Idempotency-Key"), "{bad}");
        }
    }
}
