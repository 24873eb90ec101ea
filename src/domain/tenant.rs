//! Tenants: the scope of every batch and every idempotency key.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A tenant name: 1..=128 characters of `[A-Za-z0-9._-]`.
///
/// The charset keeps tenant names safe inside storage keys and log lines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

/// The single tenant of a deployment without authentication.
pub const DEFAULT_TENANT: &str = "default";

impl TenantId {
    pub fn parse(name: &str) -> Result<Self, String> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > 128 || !name.chars().all(valid_char) {
            return Err(format!(
                "invalid tenant name {name:?}: use 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
            ));
        }
        Ok(Self(name.to_string()))
    }

    pub fn default_tenant() -> Self {
        Self(DEFAULT_TENANT.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_restricted_to_a_key_safe_charset() {
        assert!(TenantId::parse("team-a_1.prod").is_ok());
        for bad in ["", "a#b", "a b", "é", &"x".repeat(129)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
