//! The `KeyStore` port: managed API keys, stored by hash.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::api_key::{ApiKeyHash, ApiKeyId, ApiKeyRecord};
use crate::domain::TenantId;

/// What a revocation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked(ApiKeyRecord),
    /// Revoked before; the first revocation time stands.
    AlreadyRevoked(ApiKeyRecord),
    NotFound,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key. Its hash and id are fresh randomness, so a clash is a
    /// store error, never an overwrite.
    async fn create_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError>;

    /// Every key (of `tenant`, when given), revoked ones included, oldest first.
    async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Marks a key revoked, once.
    async fn revoke_key(
        &self,
        key_id: &ApiKeyId,
        now_secs: i64,
    ) -> Result<RevokeOutcome, StoreError>;

    /// The key with this hash, revoked or not: the authentication path, one
    /// read by primary key.
    async fn find_key(&self, hash: &ApiKeyHash) -> Result<Option<ApiKeyRecord>, StoreError>;
}
