//! Per-tenant quotas in DynamoDB: one usage item per tenant, key (`tenant`,
//! `id` = `quota`), beside the tenant's batches and files.
//!
//! - `in_flight`: string set of the ids of the tenant's batches holding a slot;
//! - `enqueued`: string set of `<batch id>=<lines>` reservations, and
//!   `enqueued_lines`: their sum;
//! - `pending_status` = `quota` and `pending_since` = the last slot taken, which
//!   puts the item in the sparse `pending-index` for the reconciler's repair.
//!
//! Sets make every step one idempotent conditional `UpdateItem`: `ADD` of an id
//! already present and `DELETE` of one absent change nothing. The item carries
//! no `created_order`, `file_order` or batch `status`, so it never appears in a
//! listing, and the stream handler ignores it (its id is not a batch id).

use std::collections::HashSet;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::listing::{query_until, Take};
use super::{dynamo_error, send_guarded, DynamoStore, Guarded, Item, PENDING_INDEX};
use crate::domain::{BatchId, QuotaExceeded, TenantId};
use crate::store::{QuotaLedger, StoreError};
use async_trait::async_trait;

/// The most batches in flight one tenant's usage item tracks, whatever the
/// quotas say. Each costs about 82 bytes across `in_flight` and `enqueued`
/// (a 38-byte id in each, plus the lines), so this many keep the item near
/// 330 KB, under DynamoDB's 400 KB item limit. Bounding the sets rather than
/// keeping per-batch slot items and counters: that needs TransactWriteItems to
/// stay atomic and idempotent, which dynalite (one of the two test servers)
/// does not implement.
pub const MAX_TRACKED_BATCHES: u32 = 4_000;

/// The usage item's sort key: no batch, file or upload id looks like it.
pub const USAGE_ID: &str = "quota";
/// The usage item's partition in `pending-index`.
const PENDING_QUOTA: &str = "quota";

/// What taking a slot found.
pub(super) enum Slot {
    /// Held now; `already` when this batch held it before (a retried create).
    Taken { already: bool },
    /// The tenant is at a quota; the usage item as it was, when the server
    /// returned it (DynamoDB and moto do, dynalite does not).
    Refused(Option<Item>),
}

fn string_set(item: &Item, name: &str) -> HashSet<String> {
    match item.get(name) {
        Some(AttributeValue::Ss(values)) => values.iter().cloned().collect(),
        _ => HashSet::new(),
    }
}

fn reservation(id: &str, lines: u64) -> String {
    format!("{id}={lines}")
}

/// The lines a batch reserved, from the `enqueued` set.
fn reserved_lines(item: &Item, id: &str) -> Option<u64> {
    string_set(item, "enqueued").iter().find_map(|entry| {
        let (batch, lines) = entry.rsplit_once('=')?;
        (batch == id).then(|| lines.parse().ok()).flatten()
    })
}

fn is_condition_failure(error: &SdkError<UpdateItemError, impl std::fmt::Debug>) -> bool {
    matches!(error, SdkError::ServiceError(failure) if failure.err().is_conditional_check_failed_exception())
}

impl DynamoStore {
    fn usage_key(tenant: &TenantId) -> Item {
        Self::key(tenant.as_str(), USAGE_ID)
    }

    /// Takes a slot for batch `id`: one conditional `UpdateItem`. The condition
    /// admits a batch already holding one, so a retried create (same id, from
    /// the same idempotency key) goes through even at the limit.
    pub(super) async fn take_slot(
        &self,
        tenant: &TenantId,
        id: &str,
        now_secs: i64,
    ) -> Result<Slot, StoreError> {
        let mut conditions = Vec::new();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::usage_key(tenant)))
            .update_expression(
                "ADD in_flight :ids SET pending_status = :quota, pending_since = :now",
            )
            .expression_attribute_values(":ids", AttributeValue::Ss(vec![id.to_string()]))
            .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
            .expression_attribute_values(":quota", AttributeValue::S(PENDING_QUOTA.into()))
            .expression_attribute_values(":now", AttributeValue::N(now_secs.to_string()));
        if let Some(max) = self.quotas.max_batches_in_flight {
            conditions.push(
                "(attribute_not_exists(in_flight) OR size(in_flight) < :max_batches OR contains(in_flight, :id))",
            );
            request = request
                .expression_attribute_values(":max_batches", AttributeValue::N(max.to_string()));
        }
        if let Some(max) = self.quotas.max_enqueued_lines {
            conditions.push(
                "(attribute_not_exists(enqueued_lines) OR enqueued_lines < :max_lines OR contains(in_flight, :id))",
            );
            request = request
                .expression_attribute_values(":max_lines", AttributeValue::N(max.to_string()));
        }
        let request = request
            .condition_expression(conditions.join(" AND "))
            .return_values(ReturnValue::UpdatedOld);
        Ok(match send_guarded(request).await? {
            Guarded::Applied(old) => Slot::Taken {
                already: string_set(&old, "in_flight").contains(id),
            },
            Guarded::Refused(old) => Slot::Refused(old),
        })
    }

    /// Which quota refused a slot, from the usage item as it was (read once
    /// where the server did not return it).
    pub(super) async fn refusal(
        &self,
        tenant: &TenantId,
        returned: Option<Item>,
    ) -> Result<QuotaExceeded, StoreError> {
        let usage = match returned {
            Some(item) => item,
            None => self.usage(tenant).await?,
        };
        Ok(
            match (
                self.quotas.max_batches_in_flight,
                self.quotas.max_enqueued_lines,
            ) {
                (Some(limit), _) if string_set(&usage, "in_flight").len() >= limit as usize => {
                    QuotaExceeded::BatchesInFlight { limit }
                }
                (_, Some(limit)) => QuotaExceeded::EnqueuedLines { limit },
                (Some(limit), None) => QuotaExceeded::BatchesInFlight { limit },
                (None, None) => QuotaExceeded::BatchesInFlight { limit: 0 },
            },
        )
    }

    async fn usage(&self, tenant: &TenantId) -> Result<Item, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::usage_key(tenant)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", e))?;
        Ok(output.item.unwrap_or_default())
    }

    /// Reserves `lines` for batch `id`: one conditional `UpdateItem` that adds
    /// the reservation and its lines unless this batch holds one already or
    /// they would pass the limit.
    pub(super) async fn reserve(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        lines: u64,
        limit: u64,
    ) -> Result<Result<(), QuotaExceeded>, StoreError> {
        let exceeded = QuotaExceeded::EnqueuedLines { limit };
        let Some(room) = limit.checked_sub(lines) else {
            return Ok(Err(exceeded));
        };
        let entry = reservation(id.as_str(), lines);
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::usage_key(tenant)))
            .update_expression("ADD enqueued :entries, enqueued_lines :lines")
            .condition_expression(
                "NOT contains(enqueued, :entry) AND (attribute_not_exists(enqueued_lines) OR enqueued_lines <= :room)",
            )
            .expression_attribute_values(":entries", AttributeValue::Ss(vec![entry.clone()]))
            .expression_attribute_values(":entry", AttributeValue::S(entry))
            .expression_attribute_values(":lines", AttributeValue::N(lines.to_string()))
            .expression_attribute_values(":room", AttributeValue::N(room.to_string()));
        let returned = match send_guarded(request).await? {
            Guarded::Applied(_) => return Ok(Ok(())),
            Guarded::Refused(old) => old,
        };
        let usage = match returned {
            Some(item) => item,
            None => self.usage(tenant).await?,
        };
        // Reserved by an earlier attempt at this batch: nothing more to do.
        if reserved_lines(&usage, id.as_str()).is_some() {
            return Ok(Ok(()));
        }
        Ok(Err(exceeded))
    }

    /// Gives back batch `id`'s slot and `lines`. With lines, one `UpdateItem`
    /// guarded by the reservation, so a repeated release subtracts nothing;
    /// without (or when that finds no reservation), one that only drops the
    /// slot, guarded so it never creates a usage item.
    pub(super) async fn release(
        &self,
        tenant: &TenantId,
        id: &str,
        lines: u64,
    ) -> Result<(), StoreError> {
        let ids = AttributeValue::Ss(vec![id.to_string()]);
        if lines > 0 && self.quotas.max_enqueued_lines.is_some() {
            let entry = reservation(id, lines);
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::usage_key(tenant)))
                .update_expression(
                    "DELETE in_flight :ids, enqueued :entries ADD enqueued_lines :minus",
                )
                .condition_expression("contains(enqueued, :entry)")
                .expression_attribute_values(":ids", ids.clone())
                .expression_attribute_values(":entries", AttributeValue::Ss(vec![entry.clone()]))
                .expression_attribute_values(":entry", AttributeValue::S(entry))
                .expression_attribute_values(":minus", AttributeValue::N(format!("-{lines}")))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(error) if is_condition_failure(&error) => {}
                Err(other) => return Err(dynamo_error("UpdateItem", other)),
            }
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::usage_key(tenant)))
            .update_expression("DELETE in_flight :ids")
            .condition_expression("contains(in_flight, :id)")
            .expression_attribute_values(":ids", ids)
            .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Ok(()),
            Err(other) => Err(dynamo_error("UpdateItem", other)),
        }
    }

    /// The reconciler's repair: usage items whose last slot was taken before
    /// `idle_before_secs` (so no create can be between its two writes) are
    /// checked batch by batch; a slot or reservation of a batch that is
    /// terminal, purged or was never written is given back.
    pub(super) async fn repair(
        &self,
        idle_before_secs: i64,
        now_secs: i64,
    ) -> Result<usize, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(PENDING_INDEX)
            .key_condition_expression("pending_status = :quota AND pending_since < :before")
            .expression_attribute_values(":quota", AttributeValue::S(PENDING_QUOTA.into()))
            .expression_attribute_values(
                ":before",
                AttributeValue::N(idle_before_secs.to_string()),
            );
        let usage_items = query_until(&query, None, 100, |item| Ok(Take::Keep(item))).await?;
        let mut freed = 0;
        for key in usage_items {
            let Some(AttributeValue::S(tenant)) = key.get("tenant") else {
                continue;
            };
            let tenant = TenantId::parse(tenant).map_err(StoreError::Corrupt)?;
            let usage = self.usage(&tenant).await?;
            let mut ids = string_set(&usage, "in_flight");
            ids.extend(
                string_set(&usage, "enqueued")
                    .iter()
                    .filter_map(|entry| entry.rsplit_once('=').map(|(id, _)| id.to_string())),
            );
            let mut held = 0;
            for id in ids {
                let running = self
                    .get_item(tenant.as_str(), &id, now_secs)
                    .await?
                    .is_some_and(|record| !record.batch.status.is_terminal());
                if running {
                    held += 1;
                    continue;
                }
                let lines = reserved_lines(&usage, &id).unwrap_or(0);
                self.release(&tenant, &id, lines).await?;
                tracing::info!(batch_id = %id, %tenant, lines, "quota repair freed a leaked slot");
                freed += 1;
            }
            // Checked: out of the index while empty, else not again for a while.
            let update = if held == 0 {
                "REMOVE pending_status, pending_since"
            } else {
                "SET pending_since = :now"
            };
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::usage_key(&tenant)))
                .update_expression(update)
                // Unless a create took a slot meanwhile.
                .condition_expression("pending_since < :before")
                .set_expression_attribute_values(Some(
                    [
                        (
                            ":before".to_string(),
                            AttributeValue::N(idle_before_secs.to_string()),
                        ),
                        (":now".to_string(), AttributeValue::N(now_secs.to_string())),
                    ]
                    .into_iter()
                    .filter(|(name, _)| held > 0 || name == ":before")
                    .collect(),
                ))
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(error) if is_condition_failure(&error) => {}
                Err(other) => return Err(dynamo_error("UpdateItem", other)),
            }
        }
        Ok(freed)
    }
}

#[async_trait]
impl QuotaLedger for DynamoStore {
    async fn reserve_lines(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        lines: u64,
        _now_secs: i64,
    ) -> Result<Result<(), QuotaExceeded>, StoreError> {
        match self.quotas.max_enqueued_lines {
            None => Ok(Ok(())),
            Some(limit) => self.reserve(tenant, id, lines, limit).await,
        }
    }

    async fn release_quota(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        lines: u64,
    ) -> Result<(), StoreError> {
        if self.quotas.is_unlimited() {
            return Ok(());
        }
        self.release(tenant, id.as_str(), lines).await
    }

    async fn repair_quotas(
        &self,
        idle_before_secs: i64,
        now_secs: i64,
    ) -> Result<usize, StoreError> {
        if self.quotas.is_unlimited() {
            return Ok(0);
        }
        self.repair(idle_before_secs, now_secs).await
    }
}
