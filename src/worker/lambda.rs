//! The worker Lambda's three triggers, told apart by the shape of the event:
//! - the table's DynamoDB stream: a new batch, or a batch now `cancelling`,
//!   becomes a work item on SQS (so creating a batch needs no second write);
//! - SQS: work items, each handled on its own (partial batch responses);
//! - an EventBridge schedule: the reconciler.

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::sqs::SqsEvent;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Worker, WorkerError};
use crate::domain::{BatchId, BatchStatus, TenantId};
use crate::queue::WorkItem;
use crate::telemetry::ErrorChain;

/// Answers one invocation; the result is the Lambda response.
pub async fn handle_event(worker: &Worker, event: Value) -> Result<Value, WorkerError> {
    handle_event_until(worker, event, None).await
}

/// As [`handle_event`], handing work back to the queue before `deadline` (the
/// end of the invocation).
pub async fn handle_event_until(
    worker: &Worker,
    event: Value,
    deadline: Option<tokio::time::Instant>,
) -> Result<Value, WorkerError> {
    let source = event
        .pointer("/Records/0/eventSource")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match source.as_str() {
        "aws:sqs" => {
            let event = serde_json::from_value(event).map_err(bad_event)?;
            Ok(handle_sqs(worker, event, deadline).await)
        }
        "aws:dynamodb" => {
            Ok(handle_stream(worker, serde_json::from_value(event).map_err(bad_event)?).await)
        }
        _ => {
            // The schedule (or any other poke) runs the reconciler.
            let redriven = worker.reconcile().await?;
            Ok(json!({ "redriven": redriven }))
        }
    }
}

fn bad_event(error: serde_json::Error) -> WorkerError {
    WorkerError::Queue(crate::queue::QueueError::Malformed(error))
}

/// Handles each message on its own; the failed ones go back to the queue (and
/// after `maxReceiveCount` to the dead-letter queue), the rest are done.
async fn handle_sqs(
    worker: &Worker,
    event: SqsEvent,
    deadline: Option<tokio::time::Instant>,
) -> Value {
    let mut failures = Vec::new();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let item: WorkItem = match message.body.as_deref().map(serde_json::from_str) {
            Some(Ok(item)) => item,
            other => {
                // A message that can never parse would fail forever: drop it loudly.
                tracing::error!(message_id = %id, ?other, "discarding malformed work item");
                continue;
            }
        };
        if let Err(error) = worker.handle_until(&item, deadline).await {
            tracing::error!(message_id = %id, ?item, error = %ErrorChain(&error), "work item failed");
            failures.push(json!({ "itemIdentifier": id }));
        }
    }
    json!({ "batchItemFailures": failures })
}

/// The batch fields a stream record needs to become work.
#[derive(Deserialize)]
struct Image {
    tenant: TenantId,
    id: String,
    status: BatchStatus,
}

fn image(item: &serde_dynamo::Item) -> Option<Image> {
    serde_dynamo::from_item(item.clone()).ok()
}

/// The work a table change calls for, if any.
pub fn work_for(record: &EventRecord) -> Option<WorkItem> {
    let new = image(&record.change.new_image)?;
    let batch_id = BatchId::parse(&new.id)?;
    let old_status = image(&record.change.old_image).map(|old| old.status);
    let tenant = new.tenant;
    match (record.event_name.as_str(), new.status) {
        ("INSERT", BatchStatus::Validating) => Some(WorkItem::ValidateBatch { tenant, batch_id }),
        // A create that took over a purged record arrives as a MODIFY.
        ("MODIFY", BatchStatus::Validating) if old_status != Some(BatchStatus::Validating) => {
            Some(WorkItem::ValidateBatch { tenant, batch_id })
        }
        ("MODIFY", BatchStatus::Cancelling) if old_status != Some(BatchStatus::Cancelling) => {
            Some(WorkItem::FinishCancel { tenant, batch_id })
        }
        _ => None,
    }
}

/// The blob of a file record that DynamoDB's TTL (or a delete) removed.
pub fn blob_of_removed_file(record: &EventRecord) -> Option<String> {
    #[derive(Deserialize)]
    struct FileImage {
        id: String,
        blob_key: String,
    }
    if record.event_name != "REMOVE" {
        return None;
    }
    let old: FileImage = serde_dynamo::from_item(record.change.old_image.clone()).ok()?;
    old.id.starts_with("file-").then_some(old.blob_key)
}

/// Turns table changes into work items, and deletes the bytes of removed
/// files. A failure reports its record, so Lambda retries from there
/// (`ReportBatchItemFailures`).
async fn handle_stream(worker: &Worker, event: StreamEvent) -> Value {
    for record in &event.records {
        let sequence = || record.change.sequence_number.clone().unwrap_or_default();
        if let Some(blob_key) = blob_of_removed_file(record) {
            if let Err(error) = worker.delete_expired_blob(&blob_key).await {
                tracing::error!(blob_key, error = %ErrorChain(&error), "could not delete the bytes of a removed file");
                return json!({ "batchItemFailures": [{ "itemIdentifier": sequence() }] });
            }
            continue;
        }
        let Some(item) = work_for(record) else {
            continue;
        };
        if let Err(error) = worker.queue.enqueue(&item).await {
            tracing::error!(?item, error = %ErrorChain(&error), "could not enqueue work from the stream");
            return json!({ "batchItemFailures": [{ "itemIdentifier": sequence() }] });
        }
        tracing::info!(?item, "enqueued work from the table stream");
    }
    json!({ "batchItemFailures": [] })
}
