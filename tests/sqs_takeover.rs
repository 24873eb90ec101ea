//! The AWS path's takeover of a dead worker's shard, on moto: workers share a
//! DynamoDB table and an SQS queue, as the worker Lambda's invocations do. One
//! dies mid-shard (its run is dropped: no more heartbeats, its lease stays);
//! the watch its run left on the queue, delivered half a lease later, takes
//! the shard over. No reconciler runs here at all.

#[path = "../examples/fake_upstream.rs"]
mod fake_upstream;

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{create_body, fresh_bucket, sdk_config, Backend, TestApp, TestStores};
use fake_upstream::FakeConfig;
use lambda_batches::clock::Clock;
use lambda_batches::config::{AuthConfig, ReconcilerConfig, UpstreamConfig};
use lambda_batches::files::BlobStore;
use lambda_batches::queue::sqs::SqsQueue;
use lambda_batches::queue::WorkItem;
use lambda_batches::store::dynamodb::DynamoStore;
use lambda_batches::upstream::UpstreamClient;
use lambda_batches::worker::Worker;
use serde_json::{json, Value};

const LINES: usize = 24;
/// Short, so the test waits seconds: the watch comes every half lease.
const LEASE_SECS: i64 = 4;
/// A hang guard, never a speed claim.
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_worker_dying_mid_shard_on_sqs_then_its_watch_hands_the_shard_to_another_worker() {
    let upstream = fake_upstream::start(FakeConfig {
        // Each segment (two lines) takes about this long: the death lands mid-run.
        latency: Duration::from_millis(300),
        ..FakeConfig::default()
    })
    .await;
    let config = sdk_config(Backend::Moto).await;
    let table = format!("batches-{}", uuid::Uuid::new_v4().simple());
    common::create_table_from_template(&aws_sdk_dynamodb::Client::new(&config), &table).await;
    let store = Arc::new(DynamoStore::new(&config, &table));
    let bucket: Arc<dyn BlobStore> = Arc::new(fresh_bucket(Backend::Moto).await);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("work-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a queue url");
    let stores = TestStores {
        batches: store.clone(),
        files: store.clone(),
        blobs: Arc::clone(&bucket),
        dynamodb_requests: None,
        _blob_dir: None,
        _store_dir: None,
    };
    // As the API Lambda: the API announces nothing.
    let app = TestApp::with_stores(stores, AuthConfig::Open, None);
    // Leases run out in real time: the test's clock moves with the wall's.
    let clock = Arc::clone(&app.clock);
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            clock.advance_ms(100);
        }
    });
    let worker = || {
        let mut execution = lambda_batches::config::Config::from_lookup(|_| None)
            .expect("default config")
            .execution;
        execution.segment_lines = 2;
        Worker {
            batches: store.clone(),
            ledger: store.clone(),
            pending: store.clone(),
            quotas: store.clone(),
            files: store.clone(),
            blobs: Arc::clone(&bucket),
            queue: Arc::new(SqsQueue::new(&config, &queue_url)),
            leases: store.clone(),
            upstream: UpstreamClient::new(&UpstreamConfig {
                base_url: upstream.base_url(),
                api_key: None,
            })
            .expect("client"),
            clock: Arc::clone(&app.clock) as Arc<dyn Clock>,
            reconciler: ReconcilerConfig {
                stuck_after_secs: 3600,
                interval_secs: 3600,
                shard_lease_secs: LEASE_SECS,
            },
            execution,
        }
    };
    let (dying, survivor) = (Arc::new(worker()), worker());

    let id = create_batch(&app).await;
    let tenant = lambda_batches::domain::TenantId::default_tenant();
    let batch_id = lambda_batches::domain::BatchId::parse(&id).expect("id");
    survivor
        .handle(&WorkItem::ValidateBatch { tenant, batch_id })
        .await
        .expect("validation");
    let shard = receive(&sqs, &queue_url)
        .await
        .into_iter()
        .find(|(item, _)| matches!(item, WorkItem::RunShard { .. }))
        .expect("the shard on the queue");
    delete(&sqs, &queue_url, &shard.1).await;

    // The dying worker runs the shard until a segment is committed, then dies.
    let run = tokio::spawn({
        let (dying, item) = (Arc::clone(&dying), shard.0.clone());
        async move { dying.handle(&item).await }
    });
    let started = Instant::now();
    loop {
        let counts = &app.retrieve(&id).await.body["request_counts"];
        if counts["completed"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.abort();
    let died_at = Instant::now();
    let at_death = app.retrieve(&id).await.body;
    assert_eq!(at_death["status"], "in_progress", "{at_death}");

    // The survivor takes whatever the queue delivers, as Lambda would.
    let batch = loop {
        for (item, receipt) in receive(&sqs, &queue_url).await {
            survivor.handle(&item).await.expect("work item");
            delete(&sqs, &queue_url, &receipt).await;
        }
        let batch = app.retrieve(&id).await.body;
        if batch["status"] == "completed" {
            break batch;
        }
        assert!(died_at.elapsed() < PATIENCE, "not taken over: {batch}");
    };
    ticker.abort();
    // For BENCHMARKS.md, not asserted: speed is no test's business.
    eprintln!(
        "takeover on SQS (lease {LEASE_SECS} s): the batch completed {:?} after the death",
        died_at.elapsed()
    );

    assert_eq!(
        batch["request_counts"],
        json!({"total": LINES, "completed": LINES, "failed": 0})
    );
    let output = app
        .content(None, batch["output_file_id"].as_str().expect("output"))
        .await;
    let mut ids: Vec<String> = String::from_utf8(output.body.to_vec())
        .expect("UTF-8")
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).expect("a JSON line");
            line["custom_id"].as_str().expect("custom_id").to_owned()
        })
        .collect();
    ids.sort();
    let expected: Vec<String> = (0..LINES).map(|i| format!("req-{i:02}")).collect();
    assert_eq!(ids, expected, "every line once");
}

async fn create_batch(app: &TestApp) -> String {
    let content: String = (0..LINES)
        .map(|i| {
            json!({"custom_id": format!("req-{i:02}"), "method": "POST",
                   "url": "/v1/chat/completions",
                   "body": {"model": "fake-model",
                            "messages": [{"role": "user", "content": format!("hello {i}")}]}})
            .to_string()
                + "\n"
        })
        .collect();
    let file = app
        .upload_file("batch", "input.jsonl", content.as_bytes())
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    let created = app
        .create(&create_body(file.body["id"].as_str().expect("file id")))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    created.id()
}

/// Up to ten messages, each with its receipt handle; waits up to a second.
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<(WorkItem, String)> {
    let answer = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("ReceiveMessage");
    answer
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let item = serde_json::from_str(m.body.as_deref().expect("a body")).expect("an item");
            (item, m.receipt_handle.expect("a receipt handle"))
        })
        .collect()
}

async fn delete(sqs: &aws_sdk_sqs::Client, url: &str, receipt: &str) {
    sqs.delete_message()
        .queue_url(url)
        .receipt_handle(receipt)
        .send()
        .await
        .expect("DeleteMessage");
}
