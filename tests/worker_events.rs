//! The sample worker events in `events/`, each fed to the code that handles its
//! trigger in AWS, and the template's stream filter checked against them.
//!
//! - `worker_stream_insert.json`: a new batch arrives on the table stream.
//! - `worker_stream_cancel.json`: a batch goes `validating` → `cancelling`.
//! - `worker_sqs_validate.json`: the work item the insert becomes, on SQS.
//! - `worker_schedule.json`: the EventBridge schedule that pokes the reconciler.

use std::sync::Arc;

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::sqs::SqsEvent;
use lambda_batches::clock::SystemClock;
use lambda_batches::config::Config;
use lambda_batches::domain::TenantId;
use lambda_batches::queue::in_process::InProcessQueue;
use lambda_batches::queue::WorkItem;
use lambda_batches::worker::lambda::{blob_of_removed_file, handle_event, work_for};
use serde_json::{json, Value};

const BATCH_ID: &str = "batch_73f05e2ad4e9789a1deca236903d4b08";

fn batch_id() -> lambda_batches::domain::BatchId {
    lambda_batches::domain::BatchId::parse(BATCH_ID).expect("batch id")
}

fn sample(name: &str) -> String {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn stream_record(name: &str) -> EventRecord {
    let event: StreamEvent = serde_json::from_str(&sample(name))
        .unwrap_or_else(|e| panic!("{name} is not a DynamoDB stream event: {e}"));
    assert_eq!(event.records.len(), 1, "{name}");
    event.records.into_iter().next().expect("one record")
}

fn sqs_body(name: &str) -> String {
    let event: SqsEvent = serde_json::from_str(&sample(name))
        .unwrap_or_else(|e| panic!("{name} is not an SQS event: {e}"));
    let message = event.records.into_iter().next().expect("one message");
    message.body.expect("a body")
}

fn default_tenant() -> TenantId {
    TenantId::default_tenant()
}

#[test]
fn given_the_insert_of_a_validating_batch_when_read_from_the_stream_then_it_asks_for_validation() {
    let record = stream_record("worker_stream_insert.json");
    assert_eq!(record.event_name, "INSERT");

    assert_eq!(
        work_for(&record),
        Some(WorkItem::ValidateBatch {
            tenant: default_tenant(),
            batch_id: batch_id()
        })
    );
}

#[test]
fn given_a_batch_turning_cancelling_when_read_from_the_stream_then_it_asks_to_finish_the_cancel() {
    let record = stream_record("worker_stream_cancel.json");
    assert_eq!(record.event_name, "MODIFY");

    assert_eq!(
        work_for(&record),
        Some(WorkItem::FinishCancel {
            tenant: default_tenant(),
            batch_id: batch_id()
        })
    );
}

#[test]
fn given_the_sqs_sample_then_its_body_is_exactly_what_the_stream_handler_enqueues() {
    let body = sqs_body("worker_sqs_validate.json");
    let item: WorkItem = serde_json::from_str(&body).expect("the body is a WorkItem");
    let expected = WorkItem::ValidateBatch {
        tenant: default_tenant(),
        batch_id: batch_id(),
    };

    assert_eq!(item, expected);
    // Byte for byte what SqsQueue::enqueue sends for the insert above.
    assert_eq!(body, serde_json::to_string(&expected).expect("serializes"));
}

#[test]
fn given_the_schedule_sample_then_it_is_an_eventbridge_scheduled_event_without_records() {
    let event: Value = serde_json::from_str(&sample("worker_schedule.json")).expect("JSON");

    assert_eq!(event["source"], "aws.events");
    assert_eq!(event["detail-type"], "Scheduled Event");
    assert!(event.get("Records").is_none());
}

/// Every sample through `handle_event`, the worker Lambda's handler, on the
/// embedded store with an in-process queue standing in for SQS.
#[tokio::test]
async fn given_each_sample_when_handled_then_it_reaches_the_handler_for_its_trigger() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_string_lossy().into_owned();
    let config = Config::from_lookup(|name| match name {
        "BATCHES_DATA_DIR" => Some(data_dir.clone()),
        _ => None,
    })
    .expect("config");
    let stores = lambda_batches::app::Stores::open(&config)
        .await
        .expect("stores");
    let (queue, mut enqueued) = InProcessQueue::new();
    let worker =
        lambda_batches::app::worker(&config, &stores, Arc::new(queue), Arc::new(SystemClock))
            .expect("worker");
    let handle = |name: &'static str| {
        let event: Value = serde_json::from_str(&sample(name)).expect("JSON");
        let worker = &worker;
        async move {
            handle_event(worker, event)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        }
    };

    // The stream events become work items on the queue; no record failed.
    let answer = handle("worker_stream_insert.json").await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    assert_eq!(
        enqueued.try_recv().ok(),
        Some(WorkItem::ValidateBatch {
            tenant: default_tenant(),
            batch_id: batch_id()
        })
    );
    let answer = handle("worker_stream_cancel.json").await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    assert_eq!(
        enqueued.try_recv().ok(),
        Some(WorkItem::FinishCancel {
            tenant: default_tenant(),
            batch_id: batch_id()
        })
    );

    // The SQS message is handled as a work item. This store has no such batch,
    // so there is nothing to do, and the message is not returned to the queue.
    let answer = handle("worker_sqs_validate.json").await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }));

    // The schedule runs the reconciler, which finds nothing stuck here.
    let answer = handle("worker_schedule.json").await;
    assert_eq!(answer, json!({ "redriven": 0 }));
    assert!(enqueued.try_recv().is_err(), "nothing more was enqueued");
}

/// The template's stream `FilterCriteria`: what Lambda lets through to the worker.
fn stream_filter_patterns() -> Vec<Value> {
    let template: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml"))
            .expect("template.yaml"),
    )
    .expect("template.yaml is YAML");
    let filters = &template["Resources"]["BatchesWorkerFunction"]["Properties"]["Events"]
        ["TableStream"]["Properties"]["FilterCriteria"]["Filters"];
    filters
        .as_sequence()
        .expect("the TableStream event has filters")
        .iter()
        .map(|filter| {
            serde_json::from_str(filter["Pattern"].as_str().expect("a Pattern string"))
                .expect("the Pattern is JSON")
        })
        .collect()
}

/// Lambda event filtering, for the parts of its syntax the template uses: nested
/// objects, lists of alternatives, exact strings and `{"prefix": ...}`.
fn matches(pattern: &Value, event: &Value) -> bool {
    match pattern {
        Value::Object(fields) => fields
            .iter()
            .all(|(name, inner)| event.get(name).is_some_and(|value| matches(inner, value))),
        Value::Array(alternatives) => alternatives.iter().any(|alternative| {
            match (alternative.get("prefix").and_then(Value::as_str), event) {
                (Some(prefix), Value::String(text)) => text.starts_with(prefix),
                (Some(_), _) => false,
                (None, _) => alternative == event,
            }
        }),
        _ => false,
    }
}

fn passes_filter(record: &Value) -> bool {
    stream_filter_patterns()
        .iter()
        .any(|pattern| matches(pattern, record))
}

#[test]
fn given_the_template_stream_filter_then_batch_changes_and_file_removals_pass_and_nothing_else() {
    for name in ["worker_stream_insert.json", "worker_stream_cancel.json"] {
        let event: Value = serde_json::from_str(&sample(name)).expect("JSON");
        assert!(
            passes_filter(&event["Records"][0]),
            "{name} must reach the worker"
        );
    }

    let insert: Value = serde_json::from_str(&sample("worker_stream_insert.json")).expect("JSON");
    let mut file_record = insert["Records"][0].clone();
    file_record["dynamodb"]["Keys"]["id"]["S"] = json!("file-abc123");
    assert!(
        !passes_filter(&file_record),
        "file records are not batch work"
    );
    let mut ttl_purge = insert["Records"][0].clone();
    ttl_purge["eventName"] = json!("REMOVE");
    assert!(!passes_filter(&ttl_purge), "batch purges need no work");
    let removed: Value =
        serde_json::from_str(&sample("worker_stream_file_removed.json")).expect("JSON");
    assert!(
        passes_filter(&removed["Records"][0]),
        "a removed file's bytes must be deleted"
    );
}

#[test]
fn given_a_removed_file_record_then_its_blob_is_named_and_batch_records_name_none() {
    let removed: StreamEvent =
        serde_json::from_str(&sample("worker_stream_file_removed.json")).expect("event");
    assert_eq!(
        blob_of_removed_file(&removed.records[0]).as_deref(),
        Some("files/default/file-0123456789abcdef0123456789abcdef")
    );
    assert_eq!(work_for(&removed.records[0]), None);
    let insert: StreamEvent =
        serde_json::from_str(&sample("worker_stream_insert.json")).expect("event");
    assert_eq!(blob_of_removed_file(&insert.records[0]), None);
}

#[test]
fn given_the_template_then_the_table_stream_carries_the_old_image_work_for_compares() {
    let template: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml"))
            .expect("template.yaml"),
    )
    .expect("template.yaml is YAML");

    assert_eq!(
        template["Resources"]["BatchesTable"]["Properties"]["StreamSpecification"]
            ["StreamViewType"]
            .as_str(),
        Some("NEW_AND_OLD_IMAGES")
    );
}

#[tokio::test]
async fn given_no_queue_url_when_the_worker_lambda_starts_then_it_refuses_with_the_setting_named() {
    let config =
        Config::from_lookup(|name| (name == "BATCHES_TABLE").then(|| "batches".to_string()))
            .expect("a valid config");

    let error = match lambda_batches::app::lambda_worker(&config).await {
        Ok(_) => panic!("the worker started without a queue"),
        Err(error) => error.to_string(),
    };

    assert!(error.contains("BATCHES_QUEUE_URL is not set"), "{error}");
}

#[test]
fn given_no_queue_url_when_the_worker_binary_starts_then_it_exits_and_says_why() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_batches-worker"))
        .env_clear()
        .env("BATCHES_TABLE", "batches")
        // Where the runtime API would be: the worker must stop before using it.
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .output()
        .expect("the worker binary runs");

    let logs = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{logs}");
    assert!(logs.contains("BATCHES_QUEUE_URL is not set"), "{logs}");
}
