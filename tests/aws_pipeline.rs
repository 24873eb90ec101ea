//! The AWS path end to end on moto, with nothing announced by the API: a batch
//! written through the Router reaches the worker only through the table's
//! DynamoDB stream, then SQS, then the validation stage reading S3 — the same
//! records, messages and objects the Lambdas exchange in AWS.

mod common;

use std::sync::Arc;

use aws_lambda_events::dynamodb::EventRecord;
use axum::http::StatusCode;
use common::{create_body, fresh_bucket, sdk_config, Backend, TestApp, TestStores};
use lambda_batches::clock::Clock;
use lambda_batches::config::{AuthConfig, ReconcilerConfig, UpstreamConfig};
use lambda_batches::files::BlobStore;
use lambda_batches::queue::sqs::SqsQueue;
use lambda_batches::store::dynamodb::DynamoStore;
use lambda_batches::upstream::UpstreamClient;
use lambda_batches::worker::lambda::handle_event;
use lambda_batches::worker::Worker;
use serde_json::{json, Value};

/// Every record the table's stream holds, in the Lambda event's shape.
async fn stream_records(config: &aws_config::SdkConfig, table: &str) -> Vec<EventRecord> {
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let streams = aws_sdk_dynamodbstreams::Client::new(config);
    let stream_arn = dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("DescribeTable")
        .table
        .and_then(|t| t.latest_stream_arn)
        .expect("the table has a stream (template.yaml's StreamSpecification)");
    let shards = streams
        .describe_stream()
        .stream_arn(&stream_arn)
        .send()
        .await
        .expect("DescribeStream")
        .stream_description
        .and_then(|d| d.shards)
        .unwrap_or_default();
    let mut records = Vec::new();
    for shard in shards {
        let iterator = streams
            .get_shard_iterator()
            .stream_arn(&stream_arn)
            .shard_id(shard.shard_id.unwrap_or_default())
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("GetShardIterator")
            .shard_iterator;
        let output = streams
            .get_records()
            .set_shard_iterator(iterator)
            .send()
            .await
            .expect("GetRecords");
        for record in output.records.unwrap_or_default() {
            let change = record.dynamodb.unwrap_or_else(|| panic!("a change"));
            let mut event = EventRecord::default();
            event.event_name = record
                .event_name
                .map(|n| n.as_str().to_string())
                .unwrap_or_default();
            event.event_source = Some("aws:dynamodb".into());
            event.change.new_image = change.new_image.unwrap_or_default().into();
            event.change.old_image = change.old_image.unwrap_or_default().into();
            event.change.keys = change.keys.unwrap_or_default().into();
            event.change.sequence_number = change.sequence_number;
            records.push(event);
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_batch_created_in_aws_mode_then_stream_sqs_and_worker_validate_it() {
    let config = sdk_config(Backend::Moto).await;
    let table = format!("batches-{}", uuid::Uuid::new_v4().simple());
    common::create_table_from_template(&aws_sdk_dynamodb::Client::new(&config), &table).await;
    let store = Arc::new(DynamoStore::new(&config, &table));
    let bucket = Arc::new(fresh_bucket(Backend::Moto).await);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("work-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a queue URL");
    let stores = TestStores {
        batches: store.clone(),
        files: store.clone(),
        blobs: bucket.clone() as Arc<dyn BlobStore>,
        dynamodb_requests: None,
        _blob_dir: None,
        _store_dir: None,
    };
    // As the API Lambda: no work queue, the table's stream announces.
    let app = TestApp::with_stores(stores, AuthConfig::Open, None);
    let worker = Worker {
        batches: store.clone(),
        ledger: store.clone(),
        pending: store.clone(),
        quotas: store.clone(),
        files: store.clone(),
        blobs: bucket,
        queue: Arc::new(SqsQueue::new(&config, &queue_url)),
        leases: store,
        upstream: UpstreamClient::new(&UpstreamConfig {
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: None,
        })
        .expect("client"),
        clock: Arc::clone(&app.clock) as Arc<dyn Clock>,
        reconciler: ReconcilerConfig {
            stuck_after_secs: 300,
            interval_secs: 60,
            shard_lease_secs: 30,
        },
        execution: lambda_batches::config::Config::from_lookup(|_| None)
            .expect("default config")
            .execution,
    };
    let line = json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}});
    let file = app
        .upload_file("batch", "input.jsonl", format!("{line}\n").as_bytes())
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    let batch = app
        .create(&create_body(file.body["id"].as_str().expect("file id")))
        .await;
    assert_eq!(batch.status, StatusCode::OK);

    // The stream handler: the new batch becomes one SQS message.
    let records: Vec<Value> = stream_records(&config, &table)
        .await
        .into_iter()
        .map(|r| serde_json::to_value(r).expect("record JSON"))
        .collect();
    let answer = handle_event(&worker, json!({ "Records": records }))
        .await
        .expect("stream");
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    let messages = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("ReceiveMessage")
        .messages
        .unwrap_or_default();
    assert_eq!(
        messages.len(),
        1,
        "one work item for one new batch: {messages:?}"
    );

    // The SQS trigger: the worker validates the batch from S3.
    let event = json!({ "Records": messages.iter().map(|m| json!({
        "eventSource": "aws:sqs", "messageId": m.message_id, "body": m.body,
        "receiptHandle": m.receipt_handle, "attributes": {}, "messageAttributes": {},
    })).collect::<Vec<_>>() });
    let answer = handle_event(&worker, event).await.expect("sqs");
    assert_eq!(answer, json!({ "batchItemFailures": [] }));

    let validated = app.retrieve(&batch.id()).await;
    assert_eq!(
        validated.body["status"], "in_progress",
        "{}",
        validated.body
    );
    assert_eq!(validated.body["request_counts"]["total"], 1);
}
