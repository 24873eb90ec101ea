//! Records as DynamoDB items, and DynamoDB's errors as the port's.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use super::Item;
use crate::domain::batch::BatchErrors;
use crate::domain::{Batch, Fingerprint, OutputExpiresAfter, TenantId};
use crate::store::{BatchRecord, StoreError};

/// The attributes a record stores beside the Batch object's own fields.
#[derive(Serialize, Deserialize)]
pub(super) struct RecordAttributes {
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
pub(super) fn segment_key(start: u64) -> String {
    format!("{start:020}")
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

pub(super) fn corrupt(e: serde_dynamo::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(super) fn to_item(record: &BatchRecord) -> Result<Item, StoreError> {
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
pub(super) fn errors_count(errors: Option<&BatchErrors>) -> u64 {
    errors.map_or(0, |errors| errors.data.len() as u64)
}

pub(super) fn from_item(item: Item) -> Result<BatchRecord, StoreError> {
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
pub(super) fn live_record(
    item: Option<Item>,
    now_secs: i64,
) -> Result<Option<BatchRecord>, StoreError> {
    Ok(item
        .map(from_item)
        .transpose()?
        .filter(|record| record.is_live(now_secs)))
}

pub(super) fn attribute<T: Serialize>(value: &T) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(value).map_err(corrupt)
}

pub(super) fn number_u64(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}
