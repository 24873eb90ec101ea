//! Listings: Query pages followed until a listing page is full, and the batch
//! listing over its projected index.
//!
//! A Query page ends at `Limit` items or at 1 MB of items read, whichever
//! comes first, and a FilterExpression drops items only after they count
//! against both: one Query is never sure to fill a page, so every listing
//! follows `LastEvaluatedKey` until it holds what it asked for.
//!
//! `tenant-listing-index` projects every Batch field but `errors` (the
//! execution bookkeeping stays out too), plus `purge_at` and `errors_count`.
//! A batch whose `errors_count` is 0 is complete as the index holds it; the
//! others (and items written before `errors_count` existed) are read whole
//! with one `BatchGetItem` per page. A page of batches without errors stays
//! one Query.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

use super::{dynamo_error, from_item, DynamoStore, Item, CREATED_INDEX, LISTING_INDEX};
use crate::domain::{Batch, BatchId, TenantId};
use crate::store::{ListOutcome, StoreError};

/// What a listing makes of one item it read.
pub(crate) enum Take<T> {
    Keep(T),
    /// Not listed (expired, say); the listing reads on.
    Skip,
    /// Nothing after this item is listed either.
    End,
}

/// Runs `query` from `start`, page after page, until `wanted` items were kept,
/// `take` ends it, or the partition ends.
pub(crate) async fn query_until<T>(
    query: &QueryFluentBuilder,
    start: Option<Item>,
    wanted: usize,
    mut take: impl FnMut(Item) -> Result<Take<T>, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut kept = Vec::with_capacity(wanted.min(1_024));
    let mut start_key = start;
    while kept.len() < wanted {
        let remaining = i32::try_from(wanted - kept.len()).unwrap_or(i32::MAX);
        let output = query
            .clone()
            .limit(remaining)
            .set_exclusive_start_key(start_key.take())
            .send()
            .await
            .map_err(|e| dynamo_error("Query", e))?;
        for item in output.items.unwrap_or_default() {
            match take(item)? {
                Take::Keep(value) => kept.push(value),
                Take::Skip => {}
                Take::End => return Ok(kept),
            }
        }
        match output.last_evaluated_key {
            Some(key) if !key.is_empty() => start_key = Some(key),
            _ => break,
        }
    }
    Ok(kept)
}

/// A batch as a listing index holds it: whole when the index carries its
/// errors or it has none, else only its key is sure to be of use.
struct Listed {
    batch: Batch,
    whole: bool,
}

fn listed(item: Item, now_secs: i64) -> Result<Take<Listed>, StoreError> {
    let purge_at = match item.get("purge_at") {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| StoreError::Corrupt("listed batch without purge_at".into()))?;
    // purge_at is created_at plus a fixed retention, so purged records are the
    // oldest: the live ones are a prefix of a newest-first listing.
    if purge_at <= now_secs {
        return Ok(Take::End);
    }
    let whole = item.contains_key("errors")
        || matches!(item.get("errors_count"), Some(AttributeValue::N(n)) if n == "0");
    let batch: Batch =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Take::Keep(Listed { batch, whole }))
}

/// BatchGetItem takes at most 100 keys.
const BATCH_GET_KEYS: usize = 100;
/// Rounds in a row that may return nothing (throttled) before giving up.
const BATCH_GET_IDLE_ROUNDS: u32 = 5;

impl DynamoStore {
    pub(super) async fn list_page(
        &self,
        tenant: &TenantId,
        after: Option<&BatchId>,
        limit: usize,
        now_secs: i64,
    ) -> Result<ListOutcome, StoreError> {
        let start = match after {
            None => None,
            Some(after) => match self.cursor_order(tenant, after, now_secs).await? {
                None => return Ok(ListOutcome::UnknownCursor),
                // A GSI cursor holds the table key and the index key.
                Some(created_order) => {
                    let mut key = Self::key(tenant.as_str(), after.as_str());
                    key.insert("created_order".into(), AttributeValue::S(created_order));
                    Some(key)
                }
            },
        };
        // One item more than asked for tells whether another page exists.
        let wanted = limit.saturating_add(1);
        let mut batches = match self
            .query_listing(LISTING_INDEX, tenant, start.clone(), wanted, now_secs)
            .await
        {
            // The index is still backfilling (a stack that just gained it) or
            // absent: the previous listing index serves meanwhile.
            Err(error) if is_index_not_ready(&error) => {
                self.query_listing(CREATED_INDEX, tenant, start, wanted, now_secs)
                    .await?
            }
            other => other?,
        };
        let has_more = batches.len() > limit;
        batches.truncate(limit);
        let partial: Vec<String> = batches
            .iter()
            .filter(|listed| !listed.whole)
            .map(|listed| listed.batch.id.to_string())
            .collect();
        let mut whole = self.batch_get(tenant, &partial).await?;
        let batches = batches
            .into_iter()
            .map(|listed| match whole.remove(listed.batch.id.as_str()) {
                Some(item) => Ok(from_item(item)?.batch),
                // Gone from the table since the index was read (purged): the
                // index's copy is all there is.
                None => Ok(listed.batch),
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(ListOutcome::Page { batches, has_more })
    }

    async fn query_listing(
        &self,
        index: &str,
        tenant: &TenantId,
        start: Option<Item>,
        wanted: usize,
        now_secs: i64,
    ) -> Result<Vec<Listed>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("tenant = :tenant")
            .expression_attribute_values(":tenant", AttributeValue::S(tenant.to_string()))
            .scan_index_forward(false);
        query_until(&query, start, wanted, |item| listed(item, now_secs)).await
    }

    /// The listing position of the cursor batch, if it is live: only the two
    /// attributes it needs, however large the batch.
    async fn cursor_order(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<String>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
            .projection_expression("created_order, purge_at")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", e))?;
        let Some(item) = output.item.filter(|item| !item.is_empty()) else {
            return Ok(None);
        };
        let live = matches!(item.get("purge_at"),
            Some(AttributeValue::N(n)) if n.parse::<i64>().is_ok_and(|at| at > now_secs));
        Ok(match item.get("created_order") {
            Some(AttributeValue::S(order)) if live => Some(order.clone()),
            // Not a batch (a file or upload id in the cursor), or purged.
            _ => None,
        })
    }

    /// The whole items of batches `ids`, by id: `BatchGetItem` until every key
    /// is processed (a response stops at 16 MB, or early when throttled).
    async fn batch_get(
        &self,
        tenant: &TenantId,
        ids: &[String],
    ) -> Result<HashMap<String, Item>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_GET_KEYS) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|id| Self::key(tenant.as_str(), id))
                .collect();
            let mut idle_rounds = 0;
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .build()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| dynamo_error("BatchGetItem", e))?;
                let items = output
                    .responses
                    .and_then(|mut tables| tables.remove(&self.table))
                    .unwrap_or_default();
                keys = output
                    .unprocessed_keys
                    .and_then(|mut tables| tables.remove(&self.table))
                    .map(|unprocessed| unprocessed.keys)
                    .unwrap_or_default();
                if items.is_empty() && !keys.is_empty() {
                    // Nothing read: throttled. Back off, as AWS advises.
                    idle_rounds += 1;
                    if idle_rounds > BATCH_GET_IDLE_ROUNDS {
                        return Err(StoreError::DynamoDb {
                            operation: "BatchGetItem",
                            source: "no key processed in several attempts (throttled)".into(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(25 << idle_rounds)).await;
                } else {
                    idle_rounds = 0;
                }
                for item in items {
                    if let Some(AttributeValue::S(id)) = item.get("id") {
                        found.insert(id.clone(), item);
                    }
                }
            }
        }
        Ok(found)
    }
}

/// DynamoDB's answer to a Query on an index that is not ACTIVE yet or absent:
/// a ValidationException about the index ("Cannot read from backfilling global
/// secondary index", "The table does not have the specified index"; dynalite
/// says the latter too), or moto's ResourceNotFoundException. Any other
/// ValidationException is a real error, reported as such.
fn is_index_not_ready(error: &StoreError) -> bool {
    let StoreError::DynamoDb { source, .. } = error else {
        return false;
    };
    let Some(error) = source.downcast_ref::<aws_sdk_dynamodb::Error>() else {
        return false;
    };
    match error.code() {
        Some("ResourceNotFoundException") => true,
        Some("ValidationException") => error
            .message()
            .is_some_and(|message| message.to_ascii_lowercase().contains("index")),
        _ => false,
    }
}
