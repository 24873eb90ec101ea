//! Managed API keys in the batches table: one item per key, all in the
//! partition [`KEYS_PARTITION`], sorted by the hex SHA-256 of the secret.
//!
//! `#` is outside `TenantId`'s charset, so no tenant's partition can ever be
//! this one, and no batch, file or upload request can reach a key item. Key
//! items carry none of the index attributes (`created_order`, `file_order`,
//! `pending_status`, …), so they appear in no index, and their ids are hex, so
//! the table stream's filters (`batch_`, `file-`) never hand them to the worker.
//! One partition for every key looks hot, but the API caches lookups, and
//! DynamoDB splits a busy partition by sort key.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};

use super::listing::{query_until, Take};
use super::{dynamo_error, send_guarded, DynamoStore, Guarded, Item};
use crate::domain::api_key::{ApiKeyHash, ApiKeyId, ApiKeyName, ApiKeyRecord};
use crate::domain::TenantId;
use crate::store::keys::{KeyStore, RevokeOutcome};
use crate::store::StoreError;

pub const KEYS_PARTITION: &str = "#api-keys";

/// A key item. `tenant` is the table's partition key, so the key's owner is
/// stored as `key_tenant`; `id` (the sort key) is the hash.
#[derive(Serialize, Deserialize)]
struct KeyItem {
    tenant: String,
    id: ApiKeyHash,
    key_id: ApiKeyId,
    key_tenant: TenantId,
    name: ApiKeyName,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<i64>,
}

fn corrupt(e: serde_dynamo::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn to_item(record: &ApiKeyRecord) -> Result<Item, StoreError> {
    serde_dynamo::to_item(KeyItem {
        tenant: KEYS_PARTITION.to_string(),
        id: record.hash,
        key_id: record.key_id.clone(),
        key_tenant: record.tenant.clone(),
        name: record.name.clone(),
        created_at: record.created_at,
        revoked_at: record.revoked_at,
    })
    .map_err(corrupt)
}

fn from_item(item: Item) -> Result<ApiKeyRecord, StoreError> {
    let item: KeyItem = serde_dynamo::from_item(item).map_err(corrupt)?;
    Ok(ApiKeyRecord {
        key_id: item.key_id,
        tenant: item.key_tenant,
        name: item.name,
        hash: item.id,
        created_at: item.created_at,
        revoked_at: item.revoked_at,
    })
}

impl DynamoStore {
    /// Every key item matching `filter` (a FilterExpression over `values`):
    /// one Query of the keys partition, page after page.
    async fn query_keys(
        &self,
        filter: Option<&str>,
        mut values: Item,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        values.insert(
            ":partition".into(),
            AttributeValue::S(KEYS_PARTITION.into()),
        );
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("tenant = :partition")
            .set_filter_expression(filter.map(str::to_string))
            .set_expression_attribute_values(Some(values))
            .consistent_read(true);
        let mut keys = query_until(&query, None, usize::MAX, |item| {
            from_item(item).map(Take::Keep)
        })
        .await?;
        keys.sort_by(|a, b| {
            (a.created_at, &a.key_id.as_str()).cmp(&(b.created_at, &b.key_id.as_str()))
        });
        Ok(keys)
    }

    async fn get_key(&self, hash: &ApiKeyHash) -> Result<Option<ApiKeyRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(DynamoStore::key(KEYS_PARTITION, &hash.to_hex())))
            // Strongly consistent: a key used the moment it is created must be
            // found, or the miss would be cached as "no such key".
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", e))?;
        output.item.map(from_item).transpose()
    }
}

#[async_trait]
impl KeyStore for DynamoStore {
    async fn create_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.put_if_absent(to_item(record)?).await
    }

    async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        match tenant {
            None => self.query_keys(None, Item::new()).await,
            Some(tenant) => {
                let values =
                    HashMap::from([(":tenant".to_string(), AttributeValue::S(tenant.to_string()))]);
                self.query_keys(Some("key_tenant = :tenant"), values).await
            }
        }
    }

    async fn revoke_key(
        &self,
        key_id: &ApiKeyId,
        now_secs: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        // Keys are found by hash; the public id needs a Query of the keys
        // partition. Revocation is rare and the partition small.
        let values =
            HashMap::from([(":key_id".to_string(), AttributeValue::S(key_id.to_string()))]);
        let Some(found) = self
            .query_keys(Some("key_id = :key_id"), values)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(RevokeOutcome::NotFound);
        };
        if !found.is_active() {
            return Ok(RevokeOutcome::AlreadyRevoked(found));
        }
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(DynamoStore::key(KEYS_PARTITION, &found.hash.to_hex())))
            .update_expression("SET revoked_at = :now")
            // Revoked once: a second revocation keeps the first time.
            .condition_expression("attribute_exists(id) AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":now", AttributeValue::N(now_secs.to_string()))
            .return_values(ReturnValue::AllNew);
        match send_guarded(request).await? {
            Guarded::Applied(item) => Ok(RevokeOutcome::Revoked(from_item(item)?)),
            // Revoked by someone else since the Query (key items are never
            // deleted); read once where the server did not return the item.
            Guarded::Refused(Some(item)) => Ok(RevokeOutcome::AlreadyRevoked(from_item(item)?)),
            Guarded::Refused(None) => match self.get_key(&found.hash).await? {
                Some(record) => Ok(RevokeOutcome::AlreadyRevoked(record)),
                None => Ok(RevokeOutcome::NotFound),
            },
        }
    }

    async fn find_key(&self, hash: &ApiKeyHash) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.get_key(hash).await
    }
}
