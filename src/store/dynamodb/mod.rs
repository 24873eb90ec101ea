//! The DynamoDB adapter: one item per batch, keyed by (`tenant`, `id`), and
//! one per committed segment beside it (`segments.rs`).
//!
//! Table and indexes are defined in `template.yaml`, the single source of truth:
//! key `tenant` (HASH) + `id` (RANGE); GSI `tenant-listing-index` on `tenant` +
//! `created_order` (see `listing.rs`); TTL on `purge_at`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use super::{BatchRecord, BatchStore, CreateOutcome, ListOutcome, StoreError, TransitionOutcome};
use crate::domain::{BatchId, BatchStatus, Quotas, TenantId, Transition};

mod codec;
mod files;
mod keys;
mod leases;
mod ledger;
mod listing;
mod pending;
mod quota;
mod requests;
mod segments;

pub use keys::KEYS_PARTITION;
use quota::Slot;
pub use quota::{MAX_TRACKED_BATCHES, USAGE_ID};
pub use requests::RequestCounter;

use codec::{
    attribute, corrupt, dynamo_error, errors_count, from_item, live_record, number, number_u64,
    segment_key, to_item,
};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The listing index of earlier releases (whole items): read only while
/// `LISTING_INDEX` is not ACTIVE yet on an upgraded stack.
pub const CREATED_INDEX: &str = "tenant-created-index";
/// The listing index: batch fields without `errors` (see `listing.rs`).
pub const LISTING_INDEX: &str = "tenant-listing-index";
/// Sparse index of batches in a non-terminal status, for the reconciler: only
/// items carrying `pending_status` appear in it.
pub const PENDING_INDEX: &str = "pending-index";

#[derive(Clone, Debug)]
pub struct DynamoStore {
    pub(super) client: Client,
    pub(super) table: String,
    requests: RequestCounter,
    quotas: Quotas,
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
            // One conditional put decides create versus replay atomically.
            let existing = match self.put_unless_live(&item, now_secs).await? {
                Ok(()) => return Ok(CreateOutcome::Created),
                Err(holder) => live_record(holder, now_secs)?,
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

    /// Puts `item` unless a live item (its `purge_at` still ahead) holds its
    /// key; one past its TTL but not yet deleted is replaced. `Err` with the
    /// item that held the key: as DynamoDB and moto return it with the failed
    /// condition, else (dynalite) as read once, strongly consistent; `None`
    /// when it vanished in between.
    pub(super) async fn put_unless_live(
        &self,
        item: &Item,
        now_secs: i64,
    ) -> Result<Result<(), Option<Item>>, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(id) OR purge_at <= :now")
            .expression_attribute_values(":now", number(now_secs))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let returned = match result {
            Ok(_) => return Ok(Ok(())),
            Err(SdkError::ServiceError(failure)) => match failure.into_err() {
                PutItemError::ConditionalCheckFailedException(e) => {
                    e.item.filter(|item| !item.is_empty())
                }
                other => {
                    return Err(StoreError::DynamoDb {
                        operation: "PutItem",
                        source: Box::new(aws_sdk_dynamodb::Error::from(other)),
                    })
                }
            },
            Err(other) => return Err(dynamo_error("PutItem", other)),
        };
        if returned.is_some() {
            return Ok(Err(returned));
        }
        let key = ["tenant", "id"]
            .into_iter()
            .filter_map(|name| Some((name.to_string(), item.get(name)?.clone())))
            .collect();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", e))?;
        Ok(Err(output.item))
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
        let id = record.batch.id.as_str();
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
            values.insert(":output_file".into(), AttributeValue::S(file.to_string()));
            set.push("output_file_id = :output_file");
        }
        if let Some(file) = &patch.error_file_id {
            values.insert(":error_file".into(), AttributeValue::S(file.to_string()));
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
}
