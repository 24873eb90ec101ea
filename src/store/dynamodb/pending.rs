//! What the reconciler looks for: `pending-index`, sparse over batches in a
//! non-terminal status.

use super::codec::{dynamo_error, number};
use super::listing::{query_until, Take};
use super::DynamoStore;
use super::PENDING_INDEX;
use crate::domain::{BatchId, BatchStatus, TenantId};
use crate::store::{PendingBatches, StoreError, StuckBatch};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;

#[async_trait]
impl PendingBatches for DynamoStore {
    async fn touch_pending(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        status: BatchStatus,
        now_secs: i64,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
            .update_expression("SET pending_since = :now")
            .condition_expression("pending_status = :status")
            .expression_attribute_values(":now", number(now_secs))
            .expression_attribute_values(":status", AttributeValue::S(status.as_str().into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(failure))
                if failure.err().is_conditional_check_failed_exception() =>
            {
                Ok(false)
            }
            Err(other) => Err(dynamo_error("UpdateItem", other)),
        }
    }

    async fn stuck(
        &self,
        status: BatchStatus,
        before_secs: i64,
        limit: usize,
    ) -> Result<Vec<StuckBatch>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(PENDING_INDEX)
            .key_condition_expression("pending_status = :status AND pending_since < :before")
            .expression_attribute_values(":status", AttributeValue::S(status.as_str().into()))
            .expression_attribute_values(":before", number(before_secs));
        query_until(&query, None, limit, |item| {
            let text = |name: &str| match item.get(name) {
                Some(AttributeValue::S(s)) => Ok(s.clone()),
                _ => Err(StoreError::Corrupt(format!(
                    "pending-index item without {name}"
                ))),
            };
            let tenant = TenantId::parse(&text("tenant")?).map_err(StoreError::Corrupt)?;
            let id = BatchId::parse(&text("id")?)
                .ok_or_else(|| StoreError::Corrupt("pending-index item with a bad id".into()))?;
            Ok(Take::Keep(StuckBatch { tenant, id }))
        })
        .await
    }
}
