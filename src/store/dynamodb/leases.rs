//! Shard leases in the DynamoDB table: one item per leased shard, beside its
//! batch in the tenant's partition.
//!
//! The item's id is `lease#<batch>#<start>-<end>`, so it never matches the
//! stream's `batch_`/`file-` filters; it carries none of the listing indexes'
//! keys, so it appears in no listing. It does carry `pending_status = "lease"`
//! and `pending_since = until`, which put it in the sparse pending-index: the
//! reconciler finds leases that ran out with the same kind of Query as stuck
//! batches. TTL on `purge_at` removes leases nobody released.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{dynamo_error, number, send_guarded, DynamoStore, Guarded, Item, PENDING_INDEX};
use crate::domain::execution::ByteRange;
use crate::domain::{BatchId, TenantId};
use crate::store::leases::{Acquired, Holder, ShardKey, ShardLeases, LEASE_RETENTION_SECS, QUEUED};
use crate::store::StoreError;

/// The pending-index partition of leases (batches use their status, quotas "quota").
const PENDING_LEASE: &str = "lease";
const PREFIX: &str = "lease#";

fn lease_id(key: &ShardKey) -> String {
    format!(
        "{PREFIX}{}#{:020}-{:020}",
        key.batch, key.shard.start, key.shard.end
    )
}

/// The key back from an index entry's `tenant` and `id`.
fn parse_key(item: &Item) -> Result<ShardKey, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("lease item: bad {what}"));
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.as_str()),
        _ => Err(corrupt(name)),
    };
    let tenant = TenantId::parse(text("tenant")?).map_err(|_| corrupt("tenant"))?;
    let rest = text("id")?
        .strip_prefix(PREFIX)
        .ok_or_else(|| corrupt("id"))?;
    let (batch, range) = rest.rsplit_once('#').ok_or_else(|| corrupt("id"))?;
    let (start, end) = range.split_once('-').ok_or_else(|| corrupt("id"))?;
    Ok(ShardKey {
        tenant,
        batch: BatchId::parse(batch).ok_or_else(|| corrupt("batch id"))?,
        shard: ByteRange {
            start: start.parse().map_err(|_| corrupt("shard start"))?,
            end: end.parse().map_err(|_| corrupt("shard end"))?,
        },
    })
}

fn until_of(item: &Item) -> Option<i64> {
    match item.get("pending_since") {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

impl DynamoStore {
    /// One conditional UpdateItem that sets the lease to `owner` until `until`
    /// where `condition` holds. `Ok(Err(old))` when it did not: the item as
    /// the server returned it (moto), or `None` (dynalite, or no item).
    async fn set_lease(
        &self,
        key: &ShardKey,
        condition: &str,
        owner: &str,
        until: i64,
        values: &[(&str, AttributeValue)],
    ) -> Result<Result<(), Option<Item>>, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key.tenant.as_str(), &lease_id(key))))
            .update_expression(
                "SET lease_owner = :owner, pending_status = :lease, \
                 pending_since = :until, purge_at = :purge_at",
            )
            .condition_expression(condition)
            .expression_attribute_values(":owner", AttributeValue::S(owner.into()))
            .expression_attribute_values(":lease", AttributeValue::S(PENDING_LEASE.into()))
            .expression_attribute_values(":until", number(until))
            .expression_attribute_values(
                ":purge_at",
                number(until.saturating_add(LEASE_RETENTION_SECS)),
            );
        for (name, value) in values {
            request = request.expression_attribute_values(*name, value.clone());
        }
        Ok(match send_guarded(request).await? {
            Guarded::Applied(_) => Ok(()),
            Guarded::Refused(old) => Err(old),
        })
    }

    async fn lease_until(&self, key: &ShardKey) -> Result<Option<i64>, StoreError> {
        Ok(self.lease_item(key).await?.as_ref().and_then(until_of))
    }

    /// A strongly consistent read of the lease item.
    async fn lease_item(&self, key: &ShardKey) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key.tenant.as_str(), &lease_id(key))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", e))?;
        Ok(output.item)
    }
}

#[async_trait]
impl ShardLeases for DynamoStore {
    async fn acquire(
        &self,
        key: &ShardKey,
        owner: &str,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<Acquired, StoreError> {
        // Absent, run out, purged (TTL deletes late), ours, or handed to the queue.
        let condition = "attribute_not_exists(id) OR pending_since <= :now OR purge_at <= :now \
                         OR lease_owner IN (:owner, :queued)";
        let values = [
            (":now", number(now_secs)),
            (":queued", AttributeValue::S(QUEUED.into())),
        ];
        for _ in 0..super::MAX_ATTEMPTS {
            let refused = match self
                .set_lease(key, condition, owner, now_secs + lease_secs, &values)
                .await?
            {
                Ok(()) => return Ok(Acquired::Acquired),
                Err(old) => old,
            };
            // dynalite returns no old item: read it. Gone or run out
            // meanwhile: try again.
            let until = match refused.as_ref().and_then(until_of) {
                Some(until) => Some(until),
                None => self.lease_until(key).await?,
            };
            if let Some(until) = until.filter(|until| *until > now_secs) {
                return Ok(Acquired::HeldByOther { until });
            }
        }
        Ok(Acquired::HeldByOther { until: now_secs })
    }

    async fn renew(
        &self,
        key: &ShardKey,
        owner: &str,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<bool, StoreError> {
        let values = [(":holder", AttributeValue::S(owner.into()))];
        Ok(self
            .set_lease(
                key,
                "lease_owner = :holder",
                owner,
                now_secs + lease_secs,
                &values,
            )
            .await?
            .is_ok())
    }

    async fn hand_back(
        &self,
        key: &ShardKey,
        owner: &str,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<bool, StoreError> {
        let values = [(":holder", AttributeValue::S(owner.into()))];
        Ok(self
            .set_lease(
                key,
                "lease_owner = :holder",
                QUEUED,
                now_secs + lease_secs,
                &values,
            )
            .await?
            .is_ok())
    }

    async fn take_over(
        &self,
        key: &ShardKey,
        expired_by: i64,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<bool, StoreError> {
        let values = [(":expired_by", number(expired_by))];
        Ok(self
            .set_lease(
                key,
                "attribute_exists(id) AND pending_since <= :expired_by",
                QUEUED,
                now_secs.saturating_add(lease_secs),
                &values,
            )
            .await?
            .is_ok())
    }

    async fn holder(&self, key: &ShardKey) -> Result<Option<Holder>, StoreError> {
        let Some(item) = self.lease_item(key).await? else {
            return Ok(None);
        };
        match (item.get("lease_owner"), until_of(&item)) {
            (Some(AttributeValue::S(owner)), Some(until)) => Ok(Some(Holder {
                owner: owner.clone(),
                until,
            })),
            _ => Err(StoreError::Corrupt(format!(
                "lease item {} lacks its owner or end",
                lease_id(key)
            ))),
        }
    }

    async fn release(&self, key: &ShardKey, owner: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key.tenant.as_str(), &lease_id(key))))
            .condition_expression("lease_owner = :owner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(failure))
                if failure.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(other) => Err(dynamo_error("DeleteItem", other)),
        }
    }

    async fn expired(&self, expired_by: i64, limit: usize) -> Result<Vec<ShardKey>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(PENDING_INDEX)
            .key_condition_expression("pending_status = :lease AND pending_since <= :expired_by")
            .expression_attribute_values(":lease", AttributeValue::S(PENDING_LEASE.into()))
            .expression_attribute_values(":expired_by", number(expired_by))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| dynamo_error("Query", e))?;
        output
            .items
            .unwrap_or_default()
            .iter()
            .map(parse_key)
            .collect()
    }
}
