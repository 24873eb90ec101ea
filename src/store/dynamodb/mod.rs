//! The DynamoDB adapter: one item per batch, keyed by (`tenant`, `id`), and
//! one per committed segment beside it (`segments.rs`).
//!
//! Table and indexes are defined in `template.yaml`, the single source of truth:
//! key `tenant` (HASH) + `id` (RANGE); GSI `tenant-listing-index` on `tenant` +
//! `created_order` (see `listing.rs`); TTL on `purge_at`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::{BoxError, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::{
    BatchRecord, BatchStore, CommitOutcome, CreateOutcome, ListOutcome, RunState, SegmentCommit,
    StoreError, StuckBatch, TransitionOutcome,
};
use crate::domain::batch::BatchErrors;
use crate::domain::execution::{ByteRange, Segments};
use crate::domain::{
    Batch, BatchId, BatchStatus, Fingerprint, OutputExpiresAfter, QuotaExceeded, Quotas, TenantId,
    Transition,
};

mod files;
mod keys;
mod leases;
mod listing;
mod quota;
mod segments;

pub use keys::KEYS_PARTITION;
use listing::{query_until, Take};
use quota::Slot;
pub use quota::{MAX_TRACKED_BATCHES, USAGE_ID};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The listing index of earlier releases (whole items): read only while
/// `LISTING_INDEX` is not ACTIVE yet on an upgraded stack.
pub const CREATED_INDEX: &str = "tenant-created-index";
/// The listing index: batch fields without `errors` (see `listing.rs`).
pub const LISTING_INDEX: &str = "tenant-listing-index";
/// Sparse index of batches in a non-terminal status, for the reconciler: only
/// items carrying `pending_status` appear in it.
pub const PENDING_INDEX: &str = "pending-index";

/// Counts every HTTP request the client sends (retries included), so tests and
/// benchmarks can assert round trips per API call.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(Arc<AtomicU64>);

impl RequestCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct DynamoStore {
    pub(super) client: Client,
    pub(super) table: String,
    requests: RequestCounter,
    quotas: Quotas,
}

/// The attributes a record stores beside the Batch object's own fields.
#[derive(Serialize, Deserialize)]
struct RecordAttributes {
    tenant: TenantId,
    fingerprint: Fingerprint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_expires_after: Option<OutputExpiresAfter>,
    created_order: String,
    purge_at: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sealed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_concurrency: Option<u32>,
}

/// An offset as a key: zero-padded, so it sorts as it counts.
fn segment_key(start: u64) -> String {
    format!("{start:020}")
}

impl DynamoStore {
    /// Builds the client once (at init), with the request counter installed.
    pub fn new(sdk_config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        let requests = RequestCounter::default();
        let config = aws_sdk_dynamodb::config::Builder::from(sdk_config)
            .interceptor(requests.clone())
            .build();
        Self {
            client: Client::from_conf(config),
            table: table.into(),
            requests,
            quotas: Quotas::UNLIMITED,
        }
    }

    /// The same store, enforcing `quotas` (see `quota.rs`). Whenever usage is
    /// kept, batches in flight are capped at [`MAX_TRACKED_BATCHES`]: the
    /// usage item holds their ids.
    pub fn with_quotas(mut self, mut quotas: Quotas) -> Self {
        if !quotas.is_unlimited() {
            quotas.max_batches_in_flight = Some(
                quotas
                    .max_batches_in_flight
                    .map_or(MAX_TRACKED_BATCHES, |max| max.min(MAX_TRACKED_BATCHES)),
            );
        }
        self.quotas = quotas;
        self
    }

    /// DynamoDB requests sent so far by this store.
    pub fn requests(&self) -> &RequestCounter {
        &self.requests
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn key(tenant: &str, id: &str) -> Item {
        HashMap::from([
            ("tenant".to_string(), AttributeValue::S(tenant.to_string())),
            ("id".to_string(), AttributeValue::S(id.to_string())),
        ])
    }

    /// Sends a conditional UpdateItem. When the condition fails, the record as
    /// it stands comes back: from the failure itself (DynamoDB, moto), or from
    /// one strongly consistent read where the server does not return it (dynalite).
    async fn conditional_update(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
        now_secs: i64,
    ) -> Result<Conditional, StoreError> {
        let old = match send_guarded(request.return_values(ReturnValue::AllNew)).await? {
            Guarded::Applied(item) => return Ok(Conditional::Applied(item)),
            Guarded::Refused(old) => old,
        };
        let current = match old {
            Some(item) => live_record(Some(item), now_secs)?,
            None => {
                self.get_item(tenant.as_str(), id.as_str(), now_secs)
                    .await?
            }
        };
        Ok(Conditional::Failed(current.map(Box::new)))
    }

    /// Writes `record` unless a live one with its id exists: one conditional
    /// `PutItem` decides create versus replay.
    async fn put_new(
        &self,
        record: &BatchRecord,
        now_secs: i64,
    ) -> Result<CreateOutcome, StoreError> {
        let item = to_item(record)?;
        for _ in 0..MAX_ATTEMPTS {
            // One conditional put decides create versus replay atomically. A purged
            // record (past its TTL but not yet deleted) may be taken over.
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(id) OR purge_at <= :now")
                .expression_attribute_values(":now", number(now_secs))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let returned = match result {
                Ok(_) => return Ok(CreateOutcome::Created),
                Err(SdkError::ServiceError(failure)) => match failure.into_err() {
                    PutItemError::ConditionalCheckFailedException(e) => e.item,
                    other => {
                        return Err(StoreError::DynamoDb {
                            operation: "PutItem",
                            source: Box::new(aws_sdk_dynamodb::Error::from(other)),
                        })
                    }
                },
                Err(other) => return Err(dynamo_error("PutItem", other)),
            };
            // DynamoDB and moto return the winner with the failure; dynalite does
            // not, so read it once, strongly consistent.
            let existing = match returned {
                Some(item) => Some(from_item(item)?),
                None => {
                    self.get_item(record.tenant.as_str(), &record.batch.id, now_secs)
                        .await?
                }
            };
            if let Some(existing) = existing {
                return Ok(CreateOutcome::Existing(Box::new(existing)));
            }
            // The blocking record vanished (purged) in between: try the put again.
        }
        Err(StoreError::Corrupt(format!(
            "batch {} kept changing during create",
            record.batch.id
        )))
    }

    async fn get_item(
        &self,
        tenant: &str,
        id: &str,
        now_secs: i64,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", e))?;
        live_record(output.item, now_secs)
    }
}

impl DynamoStore {
    /// Writes an item whose key must be new: a record that is never replaced,
    /// whose ids are random (a clash is a bug, reported as an error).
    pub(crate) async fn put_if_absent(&self, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await
            .map_err(|e| dynamo_error("PutItem", e))?;
        Ok(())
    }
}

/// How a conditional `UpdateItem` ended.
pub(crate) enum Guarded {
    /// Written; the attributes its `ReturnValues` asked for.
    Applied(Item),
    /// The condition failed; the item as it stood where the server returns it
    /// (DynamoDB and moto do, dynalite does not: `None`).
    Refused(Option<Item>),
}

/// Sends a conditional `UpdateItem`, asking for the old item on a failed
/// condition, and tells a refusal from an error.
pub(crate) async fn send_guarded(
    request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
) -> Result<Guarded, StoreError> {
    let result = request
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    match result {
        Ok(output) => Ok(Guarded::Applied(output.attributes.unwrap_or_default())),
        Err(SdkError::ServiceError(failure)) => match failure.into_err() {
            UpdateItemError::ConditionalCheckFailedException(e) => {
                Ok(Guarded::Refused(e.item.filter(|item| !item.is_empty())))
            }
            other => Err(StoreError::DynamoDb {
                operation: "UpdateItem",
                source: Box::new(aws_sdk_dynamodb::Error::from(other)),
            }),
        },
        Err(other) => Err(dynamo_error("UpdateItem", other)),
    }
}

pub(crate) fn dynamo_error<E>(
    operation: &'static str,
    error: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> StoreError
where
    aws_sdk_dynamodb::Error: From<SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
{
    StoreError::DynamoDb {
        operation,
        source: Box::new(aws_sdk_dynamodb::Error::from(error)),
    }
}

fn corrupt(e: serde_dynamo::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn to_item(record: &BatchRecord) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(&record.batch).map_err(corrupt)?;
    // Unset Batch fields are left out rather than stored as NULL: smaller items,
    // and absent reads back as `None` all the same.
    item.retain(|_, value| !matches!(value, AttributeValue::Null(_)));
    let attributes = RecordAttributes {
        tenant: record.tenant.clone(),
        fingerprint: record.fingerprint.clone(),
        output_expires_after: record.output_expires_after.clone(),
        created_order: record.created_order(),
        purge_at: record.purge_at,
        sealed: record.sealed,
        max_concurrency: record.max_concurrency,
    };
    let extra: Item = serde_dynamo::to_item(&attributes).map_err(corrupt)?;
    item.extend(extra);
    item.insert(
        "errors_count".into(),
        number_u64(errors_count(record.batch.errors.as_ref())),
    );
    if !record.batch.status.is_terminal() {
        item.insert(
            "pending_status".into(),
            AttributeValue::S(record.batch.status.as_str().into()),
        );
        item.insert("pending_since".into(), number(record.batch.created_at));
    }
    Ok(item)
}

/// `errors_count` says, in the listing index that leaves `errors` out,
/// whether a batch must be read whole (`listing.rs`).
fn errors_count(errors: Option<&BatchErrors>) -> u64 {
    errors.map_or(0, |errors| errors.data.len() as u64)
}

fn from_item(item: Item) -> Result<BatchRecord, StoreError> {
    let attributes: RecordAttributes = serde_dynamo::from_item(item.clone()).map_err(corrupt)?;
    let batch: Batch = serde_dynamo::from_item(item).map_err(corrupt)?;
    let created_us = attributes
        .created_order
        .split_once('#')
        .and_then(|(ms, _)| ms.parse().ok())
        .ok_or_else(|| {
            StoreError::Corrupt(format!("bad created_order {:?}", attributes.created_order))
        })?;
    Ok(BatchRecord {
        tenant: attributes.tenant,
        batch,
        fingerprint: attributes.fingerprint,
        output_expires_after: attributes.output_expires_after,
        created_us,
        purge_at: attributes.purge_at,
        sealed: attributes.sealed,
        max_concurrency: attributes.max_concurrency,
    })
}

/// DynamoDB's TTL deletes late (typically within two days), so a record past
/// `purge_at` is treated as absent by every read.
fn live_record(item: Option<Item>, now_secs: i64) -> Result<Option<BatchRecord>, StoreError> {
    Ok(item
        .map(from_item)
        .transpose()?
        .filter(|record| record.is_live(now_secs)))
}

fn attribute<T: Serialize>(value: &T) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(value).map_err(corrupt)
}

fn number_u64(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// What a conditional update found: the item as written, or the live record
/// as it stands after the condition failed (`None`: absent or purged).
enum Conditional {
    Applied(Item),
    Failed(Option<Box<BatchRecord>>),
}

/// The conditional-write fallbacks re-read at most this often before giving up;
/// each retry means another writer changed the item in between.
const MAX_ATTEMPTS: usize = 3;

#[async_trait]
impl BatchStore for DynamoStore {
    async fn create(
        &self,
        record: &BatchRecord,
        now_secs: i64,
    ) -> Result<CreateOutcome, StoreError> {
        if self.quotas.is_unlimited() {
            return self.put_new(record, now_secs).await;
        }
        // The slot first, then the batch: a crash in between leaves a slot
        // without a batch, which a retry of the create (same id) takes over
        // and the reconciler's repair gives back; never a batch over quota.
        let id = &record.batch.id;
        match self.take_slot(&record.tenant, id, now_secs).await? {
            Slot::Refused(usage) => {
                // A retry of an existing batch is answered as ever, quota or not.
                if let Some(existing) = self.get_item(record.tenant.as_str(), id, now_secs).await? {
                    return Ok(CreateOutcome::Existing(Box::new(existing)));
                }
                Ok(CreateOutcome::QuotaExceeded(
                    self.refusal(&record.tenant, usage).await?,
                ))
            }
            Slot::Taken { already } => {
                let outcome = self.put_new(record, now_secs).await?;
                // A replay of a batch that already ended must not keep the slot
                // this call just took for it.
                if let CreateOutcome::Existing(existing) = &outcome {
                    if !already && existing.batch.status.is_terminal() {
                        self.release(&record.tenant, id, 0).await?;
                    }
                }
                Ok(outcome)
            }
        }
    }

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

    async fn get(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<BatchRecord>, StoreError> {
        self.get_item(tenant.as_str(), id.as_str(), now_secs).await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<&BatchId>,
        limit: usize,
        now_secs: i64,
    ) -> Result<ListOutcome, StoreError> {
        self.list_page(tenant, after, limit, now_secs).await
    }

    async fn transition(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        transition: Transition,
        now_secs: i64,
    ) -> Result<TransitionOutcome, StoreError> {
        let mut names = HashMap::from([("#status".to_string(), "status".to_string())]);
        let mut values = HashMap::from([
            (
                ":to".to_string(),
                AttributeValue::S(transition.to.as_str().into()),
            ),
            (":now".to_string(), number(now_secs)),
            (":at".to_string(), number(transition.at)),
        ]);
        let mut set = vec!["#status = :to"];
        if let Some(field) = transition.to.timestamp_field() {
            names.insert("#stamp".into(), field.into());
            set.push("#stamp = :at");
        }
        let patch = &transition.patch;
        if let Some(errors) = &patch.errors {
            values.insert(":errors".into(), attribute(errors)?);
            values.insert(
                ":errors_count".into(),
                number_u64(errors_count(Some(errors))),
            );
            set.push("errors = :errors, errors_count = :errors_count");
        }
        if let Some(counts) = &patch.request_counts {
            values.insert(":counts".into(), attribute(counts)?);
            set.push("request_counts = :counts");
        }
        if let Some(model) = &patch.model {
            values.insert(":model".into(), AttributeValue::S(model.clone()));
            set.push("model = :model");
        }
        if let Some(usage) = &patch.usage {
            values.insert(":usage".into(), attribute(usage)?);
            names.insert("#usage".into(), "usage".into());
            set.push("#usage = :usage");
        }
        if let Some(file) = &patch.output_file_id {
            values.insert(":output_file".into(), AttributeValue::S(file.clone()));
            set.push("output_file_id = :output_file");
        }
        if let Some(file) = &patch.error_file_id {
            values.insert(":error_file".into(), AttributeValue::S(file.clone()));
            set.push("error_file_id = :error_file");
        }
        if transition.to == BatchStatus::InProgress {
            // Segment commits set `resume_points.<shard>`: the map must exist first.
            values.insert(":no_points".into(), AttributeValue::M(HashMap::new()));
            names.insert("#points".into(), segments::RESUME_POINTS.into());
            set.push("#points = if_not_exists(#points, :no_points)");
        }
        // Keep the pending index in step with the status: in it while work
        // remains, out of it once the batch is terminal.
        let update = if transition.to.is_terminal() {
            format!(
                "SET {} REMOVE pending_status, pending_since",
                set.join(", ")
            )
        } else {
            set.push("pending_status = :to");
            set.push("pending_since = :at");
            format!("SET {}", set.join(", "))
        };
        let mut allowed = Vec::with_capacity(transition.from.len());
        for (i, status) in transition.from.iter().enumerate() {
            let placeholder = format!(":from{i}");
            values.insert(
                placeholder.clone(),
                AttributeValue::S(status.as_str().into()),
            );
            allowed.push(placeholder);
        }
        // The expected current status is the guard: a transition racing another
        // one cannot overwrite it.
        let condition = format!(
            "attribute_exists(id) AND purge_at > :now AND #status IN ({})",
            allowed.join(", ")
        );

        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
            .update_expression(update.as_str())
            .condition_expression(&condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values));
        for _ in 0..MAX_ATTEMPTS {
            match self
                .conditional_update(tenant, id, request.clone(), now_secs)
                .await?
            {
                Conditional::Applied(item) => {
                    let batch = from_item(item)?.batch;
                    // Only the transition that made the batch terminal gets here:
                    // it gives back the slot and lines (a crash before this is
                    // the reconciler's repair to mend).
                    if transition.to.is_terminal() && !self.quotas.is_unlimited() {
                        self.release(tenant, id.as_str(), batch.request_counts.total)
                            .await?;
                    }
                    return Ok(TransitionOutcome::Applied(Box::new(batch)));
                }
                Conditional::Failed(None) => return Ok(TransitionOutcome::NotFound),
                // Without the old item (dynalite) the re-read may show a status that
                // changed after the failed write; only a refusal it explains counts.
                Conditional::Failed(Some(record))
                    if !transition.from.contains(&record.batch.status) =>
                {
                    return Ok(TransitionOutcome::Refused(Box::new(record.batch)))
                }
                Conditional::Failed(Some(_)) => continue,
            }
        }
        Err(StoreError::Corrupt(format!(
            "batch {id} kept changing during a transition"
        )))
    }

    async fn commit_segment(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        commit: &SegmentCommit,
        now_secs: i64,
    ) -> Result<CommitOutcome, StoreError> {
        self.commit(tenant, id, commit, now_secs).await
    }

    async fn segments(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Segments, StoreError> {
        self.read_segments(tenant, id, now_secs).await
    }

    async fn resume_point(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        shard: ByteRange,
        now_secs: i64,
    ) -> Result<Option<u64>, StoreError> {
        self.read_resume_point(tenant, id, shard, now_secs).await
    }

    async fn run_state(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<RunState>, StoreError> {
        self.read_run_state(tenant, id, now_secs).await
    }

    async fn seal(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
            .update_expression("SET #sealed = :sealed")
            .condition_expression("attribute_exists(id) AND purge_at > :now")
            .expression_attribute_names("#sealed", "sealed")
            .expression_attribute_values(":sealed", AttributeValue::Bool(true))
            .expression_attribute_values(":now", number(now_secs))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(from_item(output.attributes.unwrap_or_default())?)),
            Err(SdkError::ServiceError(failure))
                if failure.err().is_conditional_check_failed_exception() =>
            {
                Ok(None)
            }
            Err(other) => Err(dynamo_error("UpdateItem", other)),
        }
    }

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
