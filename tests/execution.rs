//! Execution end to end against the fake upstream: validation starts the
//! shards, segments commit, and finalization writes OpenAI's output and error
//! files — on the embedded store, moto (DynamoDB and S3) and dynalite.

#[path = "../examples/fake_upstream.rs"]
mod fake_upstream;

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{
    create_body, fresh_bucket, fresh_dynamo_store, with_key, Backend, TestApp, TestStores,
    RETENTION_SECS,
};
use fake_upstream::{FakeConfig, FakeHandle};
use lambda_batches::clock::Clock;
use lambda_batches::config::{
    AuthConfig, Config, ExecutionConfig, ReconcilerConfig, UpstreamConfig,
};
use lambda_batches::domain::{FileId, TenantId};
use lambda_batches::files::local::LocalBlobStore;
use lambda_batches::files::BlobStore;
use lambda_batches::queue::in_process::InProcessQueue;
use lambda_batches::queue::{WorkItem, WorkQueue};
use lambda_batches::store::embedded::EmbeddedStore;
use lambda_batches::store::leases::{ShardKey, ShardLeases};
use lambda_batches::upstream::{RetryPolicy, UpstreamClient};
use lambda_batches::worker::Worker;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

suite!(
    [embedded, moto, dynalite],
    [
        given_a_chat_batch_then_it_completes_with_output_and_error_files_in_input_order,
        given_every_line_failing_then_the_batch_completes_without_an_output_file,
        given_many_shards_delivered_twice_then_every_custom_id_appears_once,
        given_a_cancel_mid_run_then_the_batch_is_cancelled_with_partial_results,
        given_the_window_passing_mid_run_then_the_batch_expires_with_batch_expired_lines,
        given_a_key_reused_after_its_retention_then_the_new_batch_has_its_own_files_and_request_ids,
        given_lines_with_duplicate_keys_then_they_run_with_the_last_value_of_each,
        given_a_shard_whose_worker_died_then_reconcile_re_enqueues_it_once_its_lease_runs_out_and_not_before,
        given_a_shard_whose_worker_died_then_its_watch_re_enqueues_it_once_its_lease_runs_out,
    ]
);

/// The shard lease the workers of these tests run with.
const LEASE_SECS: i64 = 30;

struct Run {
    app: TestApp,
    worker: Worker,
    items: UnboundedReceiver<WorkItem>,
    upstream: FakeHandle,
    _dir: tempfile::TempDir,
}

fn execution(shard_bytes: u64, segment_lines: usize) -> ExecutionConfig {
    ExecutionConfig {
        metrics: Default::default(),
        shard_bytes,
        segment_lines,
        concurrency: 8,
        retry: RetryPolicy {
            max_attempts: 20,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_retry_after: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
    }
}

/// One backend's stores, as the worker takes them.
type Ports = (
    Arc<dyn common::BatchPorts>,
    Arc<dyn lambda_batches::store::files::FileStore>,
    Arc<dyn ShardLeases>,
    Arc<dyn BlobStore>,
);

async fn run(backend: Backend, fake: FakeConfig, execution: ExecutionConfig) -> Run {
    run_on(backend, false, fake, execution).await
}

/// `local`: the embedded store in a data directory, as `cargo run` keeps it;
/// on moto, blobs in a local directory instead of S3.
async fn run_on(
    backend: Backend,
    local: bool,
    fake: FakeConfig,
    execution: ExecutionConfig,
) -> Run {
    let on_disk = local;
    let upstream = fake_upstream::start(fake).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let local_blobs: Arc<dyn BlobStore> =
        Arc::new(LocalBlobStore::open_dir(dir.path()).expect("blobs"));
    let (batches, files, leases, blobs): Ports = match backend {
        Backend::Embedded => {
            let store = Arc::new(if on_disk {
                EmbeddedStore::open(&dir.path().join("data")).expect("store")
            } else {
                EmbeddedStore::in_memory().expect("store")
            });
            (store.clone(), store.clone(), store, local_blobs)
        }
        Backend::Dynalite => {
            let store = Arc::new(fresh_dynamo_store(backend).await);
            (store.clone(), store.clone(), store, local_blobs)
        }
        Backend::Moto => {
            let store = Arc::new(fresh_dynamo_store(backend).await);
            let blobs: Arc<dyn BlobStore> = if local {
                local_blobs
            } else {
                Arc::new(fresh_bucket(backend).await)
            };
            (store.clone(), store.clone(), store, blobs)
        }
    };
    let (queue, items) = InProcessQueue::new();
    let queue: Arc<dyn WorkQueue> = Arc::new(queue);
    let stores = TestStores {
        batches: Arc::clone(&batches),
        files: Arc::clone(&files),
        blobs: Arc::clone(&blobs),
        dynamodb_requests: None,
        _blob_dir: None,
        _store_dir: None,
    };
    let app = TestApp::with_stores(stores, AuthConfig::Open, Some(Arc::clone(&queue)));
    let worker = Worker {
        batches: batches.clone(),
        ledger: batches.clone(),
        pending: batches.clone(),
        quotas: batches,
        files,
        blobs,
        queue,
        leases,
        upstream: UpstreamClient::new(&UpstreamConfig {
            base_url: upstream.base_url(),
            api_key: None,
        })
        .expect("client"),
        clock: Arc::clone(&app.clock) as Arc<dyn Clock>,
        reconciler: ReconcilerConfig {
            stuck_after_secs: 60,
            interval_secs: 1,
            shard_lease_secs: LEASE_SECS,
        },
        execution,
    };
    Run {
        app,
        worker,
        items,
        upstream,
        _dir: dir,
    }
}

fn chat_line(custom_id: &str, extra: Value) -> String {
    let mut body = json!({"model": "fake-model", "messages": [{"role": "user", "content": format!("hello {custom_id}")}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})
        .to_string()
}

impl Run {
    async fn create(&self, lines: &[String]) -> String {
        self.create_with(lines, |body| body).await
    }

    async fn create_with(&self, lines: &[String], body: impl FnOnce(Value) -> Value) -> String {
        let content = lines.join("\n") + "\n";
        let file = self
            .app
            .upload_file("batch", "input.jsonl", content.as_bytes())
            .await;
        assert_eq!(file.status, StatusCode::OK, "{}", file.body);
        let created = self
            .app
            .create(&body(create_body(
                file.body["id"].as_str().expect("file id"),
            )))
            .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.body);
        created.id()
    }

    /// Handles work items until none is left; `times` handles each twice
    /// (concurrently) when 2, as a duplicate SQS delivery would.
    async fn drain(&mut self, times: usize) {
        while let Ok(item) = self.items.try_recv() {
            let runs = (0..times).map(|_| self.worker.handle(&item));
            for result in futures::future::join_all(runs).await {
                result.expect("work item");
            }
        }
    }

    async fn batch(&self, id: &str) -> Value {
        self.app.retrieve(id).await.body
    }

    /// The lines of a file, parsed.
    async fn lines(&self, file_id: &Value) -> Vec<Value> {
        let id = file_id
            .as_str()
            .unwrap_or_else(|| panic!("no file id: {file_id}"));
        let meta = self.app.get(&format!("/v1/files/{id}")).await;
        assert_eq!(meta.body["purpose"], "batch_output", "{}", meta.body);
        let content = self.app.content(None, id).await;
        assert_eq!(content.status, StatusCode::OK);
        String::from_utf8(content.body.to_vec())
            .expect("UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

fn custom_ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn given_a_chat_batch_then_it_completes_with_output_and_error_files_in_input_order(
    backend: Backend,
) {
    let mut run = run(backend, FakeConfig::default(), execution(1 << 20, 4)).await;
    let lines: Vec<String> = (0..10)
        .map(|i| {
            if i == 6 {
                chat_line("bad", json!({"fail_with": 400}))
            } else {
                chat_line(&format!("r{i}"), json!({}))
            }
        })
        .collect();
    let id = run.create(&lines).await;

    run.drain(1).await;

    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(
        batch["request_counts"],
        json!({"total": 10, "completed": 9, "failed": 1})
    );
    for stamp in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(batch[stamp].is_i64(), "{stamp}: {batch}");
    }
    assert!(
        batch["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0,
        "{batch}"
    );
    let output = run.lines(&batch["output_file_id"]).await;
    let expected: Vec<String> = (0..10)
        .filter(|i| *i != 6)
        .map(|i| format!("r{i}"))
        .collect();
    assert_eq!(custom_ids(&output), expected, "input order");
    let first = &output[0];
    assert!(first["id"]
        .as_str()
        .unwrap_or_default()
        .starts_with("batch_req_"));
    assert_eq!(first["response"]["status_code"], 200);
    assert!(
        first["response"]["body"].is_object(),
        "body is a JSON object, not a string"
    );
    assert_eq!(
        first["response"]["body"]["choices"][0]["message"]["content"],
        "echo: hello r0"
    );
    assert!(first["error"].is_null());
    let errors = run.lines(&batch["error_file_id"]).await;
    assert_eq!(custom_ids(&errors), vec!["bad"]);
    assert_eq!(errors[0]["response"]["status_code"], 400);
    assert!(errors[0]["response"]["body"]["error"].is_object());
    assert_eq!(run.upstream.stats().status(400), 1, "a 400 is not retried");
    let live = run
        .app
        .store
        .get(
            &lambda_batches::domain::TenantId::default_tenant(),
            &lambda_batches::domain::BatchId::parse(&id).expect("id"),
            0,
        )
        .await
        .expect("get")
        .expect("record");
    let segments = run
        .app
        .store
        .segments(
            &lambda_batches::domain::TenantId::default_tenant(),
            &lambda_batches::domain::BatchId::parse(&id).expect("id"),
            0,
        )
        .await
        .expect("segments");
    let emf = lambda_batches::worker::metrics::emf_line(
        &live,
        &segments,
        lambda_batches::domain::BatchStatus::Completed,
        1,
    );
    assert_eq!(
        (emf["Lines"].as_u64(), emf["Failures"].as_u64()),
        (Some(10), Some(1))
    );
    assert_eq!(
        emf["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "lambda-batches"
    );
    assert_eq!(emf["Endpoint"], "/v1/chat/completions");
    let leftovers = run.app.blobs.list("batches/").await.expect("list");
    assert!(
        leftovers.is_empty(),
        "result parts are deleted: {leftovers:?}"
    );
}

async fn given_every_line_failing_then_the_batch_completes_without_an_output_file(
    backend: Backend,
) {
    let mut run = run(backend, FakeConfig::default(), execution(1 << 20, 64)).await;
    let lines: Vec<String> = (0..3)
        .map(|i| chat_line(&format!("f{i}"), json!({"fail_with": 422})))
        .collect();
    let id = run.create(&lines).await;

    run.drain(1).await;

    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert!(batch["output_file_id"].is_null());
    assert_eq!(
        batch["request_counts"],
        json!({"total": 3, "completed": 0, "failed": 3})
    );
    assert_eq!(
        custom_ids(&run.lines(&batch["error_file_id"]).await),
        vec!["f0", "f1", "f2"]
    );
}

async fn given_many_shards_delivered_twice_then_every_custom_id_appears_once(backend: Backend) {
    // Tiny shards and segments: lines straddle shard boundaries everywhere.
    let fake = FakeConfig {
        rate_429: 0.1,
        rate_500: 0.1,
        rate_drop: 0.1,
        seed: 7,
        ..FakeConfig::default()
    };
    let mut run = run(backend, fake, execution(300, 2)).await;
    let lines: Vec<String> = (0..25)
        .map(|i| chat_line(&format!("id-{i:02}"), json!({})))
        .collect();
    let id = run.create(&lines).await;

    run.drain(2).await;

    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(
        batch["request_counts"],
        json!({"total": 25, "completed": 25, "failed": 0})
    );
    let output = run.lines(&batch["output_file_id"]).await;
    let expected: Vec<String> = (0..25).map(|i| format!("id-{i:02}")).collect();
    assert_eq!(
        custom_ids(&output),
        expected,
        "each line once, in input order"
    );
    assert!(batch["error_file_id"].is_null());
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for line in &output {
        *per_id
            .entry(line["id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert!(per_id.values().all(|n| *n == 1), "request ids are unique");
}

/// Validation and execution read a line the same way: a repeated key keeps its
/// last value on both sides, so a line that passed validation runs.
async fn given_lines_with_duplicate_keys_then_they_run_with_the_last_value_of_each(
    backend: Backend,
) {
    let mut run = run(backend, FakeConfig::default(), execution(1 << 20, 4)).await;
    let body = |content: &str| json!({"model": "fake-model", "messages": [{"role": "user", "content": content}]});
    let lines = vec![
        chat_line("r0", json!({})),
        format!(
            r#"{{"custom_id": "first", "method": "POST", "url": "/v1/chat/completions", "body": {}, "custom_id": "dup-id"}}"#,
            body("hello dup-id")
        ),
        format!(
            r#"{{"custom_id": "dup-body", "method": "POST", "url": "/v1/chat/completions", "body": {}, "body": {}}}"#,
            body("the first body"),
            body("the last body")
        ),
        chat_line("r3", json!({})),
    ];
    let id = run.create(&lines).await;

    run.drain(1).await;

    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(
        batch["request_counts"],
        json!({"total": 4, "completed": 4, "failed": 0})
    );
    let output = run.lines(&batch["output_file_id"]).await;
    assert_eq!(custom_ids(&output), vec!["r0", "dup-id", "dup-body", "r3"]);
    assert_eq!(
        output[2]["response"]["body"]["choices"][0]["message"]["content"],
        "echo: the last body"
    );
}

async fn given_a_cancel_mid_run_then_the_batch_is_cancelled_with_partial_results(backend: Backend) {
    let mut run = run(backend, FakeConfig::default(), execution(400, 100)).await;
    let lines: Vec<String> = (0..12)
        .map(|i| chat_line(&format!("c{i:02}"), json!({})))
        .collect();
    let id = run.create(&lines).await;
    // Validation, then exactly one shard runs before the cancel.
    let validate = run.items.try_recv().expect("validation announced");
    run.worker.handle(&validate).await.expect("validate");
    let first_shard = run.items.try_recv().expect("a shard");
    run.worker.handle(&first_shard).await.expect("shard");

    let cancelled = run.app.cancel(&id).await;
    assert_eq!(cancelled.body["status"], "cancelling");
    run.drain(1).await;

    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "cancelled", "{batch}");
    let done = batch["request_counts"]["completed"].as_u64().unwrap_or(0);
    assert!(done > 0 && done < 12, "partial: {batch}");
    let output = run.lines(&batch["output_file_id"]).await;
    assert_eq!(
        output.len() as u64,
        done,
        "the file holds exactly what the counts say"
    );
    let ids = custom_ids(&output);
    assert_eq!(
        ids,
        (0..done).map(|i| format!("c{i:02}")).collect::<Vec<_>>(),
        "a prefix, once each"
    );
}

async fn given_the_window_passing_mid_run_then_the_batch_expires_with_batch_expired_lines(
    backend: Backend,
) {
    let mut run = run(backend, FakeConfig::default(), execution(400, 100)).await;
    let lines: Vec<String> = (0..12)
        .map(|i| chat_line(&format!("e{i:02}"), json!({})))
        .collect();
    let id = run.create(&lines).await;
    let validate = run.items.try_recv().expect("validation announced");
    run.worker.handle(&validate).await.expect("validate");
    let first_shard = run.items.try_recv().expect("a shard");
    run.worker.handle(&first_shard).await.expect("shard");

    // The 24 h window passes with the other shards still queued.
    run.app.clock.advance_ms(24 * 3600 * 1000);
    run.drain(1).await;

    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "expired", "{batch}");
    assert!(batch["expired_at"].is_i64());
    let done = batch["request_counts"]["completed"].as_u64().unwrap_or(0);
    assert!(done > 0 && done < 12, "{batch}");
    assert_eq!(batch["request_counts"]["failed"].as_u64(), Some(12 - done));
    let output = run.lines(&batch["output_file_id"]).await;
    let errors = run.lines(&batch["error_file_id"]).await;
    let mut all = custom_ids(&output);
    all.extend(custom_ids(&errors));
    assert_eq!(
        all,
        (0..12).map(|i| format!("e{i:02}")).collect::<Vec<_>>(),
        "every line once"
    );
    assert!(errors
        .iter()
        .all(|l| l["error"]["code"] == "batch_expired" && l["response"].is_null()));
}

async fn given_a_key_reused_after_its_retention_then_the_new_batch_has_its_own_files_and_request_ids(
    backend: Backend,
) {
    let mut run = run(backend, FakeConfig::default(), execution(1 << 20, 4)).await;
    let first_lines = vec![
        chat_line("first", json!({})),
        chat_line("first-bad", json!({"fail_with": 400})),
    ];
    let first_id = run
        .create_with(&first_lines, |b| with_key(b, "nightly"))
        .await;
    run.drain(1).await;
    let first = run.batch(&first_id).await;
    assert_eq!(first["status"], "completed", "{first}");

    // The record, and with it the key, is gone after its retention: the key
    // makes a new batch, under the same id (the id is derived from the key).
    run.app.clock.advance_ms((RETENTION_SECS + 1) * 1000);
    let second_lines = vec![
        chat_line("second", json!({})),
        chat_line("second-bad", json!({"fail_with": 400})),
    ];
    let second_id = run
        .create_with(&second_lines, |b| with_key(b, "nightly"))
        .await;
    assert_eq!(second_id, first_id, "same key, same batch id");
    run.drain(1).await;
    let second = run.batch(&second_id).await;
    assert_eq!(second["status"], "completed", "{second}");

    for kind in ["output_file_id", "error_file_id"] {
        assert_ne!(second[kind], first[kind], "{kind} is the new batch's own");
    }
    let output = run.lines(&second["output_file_id"]).await;
    assert_eq!(custom_ids(&output), vec!["second"]);
    let errors = run.lines(&second["error_file_id"]).await;
    assert_eq!(custom_ids(&errors), vec!["second-bad"]);
    // Same offsets in both inputs, yet the request ids differ.
    let old_output = run.lines(&first["output_file_id"]).await;
    assert_ne!(output[0]["id"], old_output[0]["id"]);
}

/// Validation refuses a line execution cannot read; should one reach a shard
/// anyway (here, the stored bytes change after validation), it fails as a line
/// in the error file and the shard goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_line_execution_cannot_read_then_it_fails_as_a_line_and_the_shard_goes_on() {
    let mut run = run(
        Backend::Embedded,
        FakeConfig::default(),
        execution(1 << 20, 4),
    )
    .await;
    let lines: Vec<String> = (0..3)
        .map(|i| chat_line(&format!("r{i}"), json!({})))
        .collect();
    let id = run.create(&lines).await;
    let validate = run.items.try_recv().expect("the validation item");
    run.worker.handle(&validate).await.expect("validation");
    assert_eq!(run.batch(&id).await["status"], "in_progress");

    // The same length, so every offset stays where validation saw it.
    let broken = format!("{{{}", " ".repeat(lines[1].len() - 1));
    let content = [lines[0].clone(), broken, lines[2].clone()].join("\n") + "\n";
    let batch = run.batch(&id).await;
    let file_id = FileId::parse(batch["input_file_id"].as_str().expect("file id")).expect("id");
    let key = lambda_batches::files::file_key(&TenantId::default_tenant(), &file_id);
    let mut writer = run.app.blobs.create(&key).await.expect("writer");
    writer.write(content.into()).await.expect("write");
    writer.finish().await.expect("finish");

    run.drain(1).await;

    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(
        batch["request_counts"],
        json!({"total": 3, "completed": 2, "failed": 1})
    );
    assert_eq!(
        custom_ids(&run.lines(&batch["output_file_id"]).await),
        vec!["r0", "r2"]
    );
    let errors = run.lines(&batch["error_file_id"]).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0]["error"]["code"], "invalid_json_line",
        "{}",
        errors[0]
    );
    assert!(errors[0]["response"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_each_endpoint_then_its_batch_completes_with_object_bodies() {
    let cases = [
        (
            "/v1/completions",
            json!({"model": "fake-model", "prompt": "hi"}),
            "text_completion",
        ),
        (
            "/v1/embeddings",
            json!({"model": "fake-embed", "input": "hi"}),
            "list",
        ),
        (
            "/v1/responses",
            json!({"model": "fake-model", "input": "hi"}),
            "response",
        ),
    ];
    for (endpoint, body, object) in cases {
        let mut run = run(
            Backend::Embedded,
            FakeConfig::default(),
            execution(1 << 20, 16),
        )
        .await;
        let line =
            json!({"custom_id": "x", "method": "POST", "url": endpoint, "body": body}).to_string();
        let file = run
            .app
            .upload_file("batch", "in.jsonl", format!("{line}\n").as_bytes())
            .await;
        let mut create = create_body(file.body["id"].as_str().expect("file"));
        create["endpoint"] = json!(endpoint);
        let id = run.app.create(&create).await.id();

        run.drain(1).await;

        let batch = run.batch(&id).await;
        assert_eq!(batch["status"], "completed", "{endpoint}: {batch}");
        let output = run.lines(&batch["output_file_id"]).await;
        assert_eq!(
            output[0]["response"]["body"]["object"], object,
            "{endpoint}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_50000_lines_then_many_shards_complete_them_each_once_in_order() {
    let mut config = execution(256 * 1024, 500);
    config.concurrency = 64;
    let mut run = run(Backend::Embedded, FakeConfig::default(), config).await;
    let lines: Vec<String> = (0..50_000)
        .map(|i| chat_line(&format!("n{i:05}"), json!({})))
        .collect();
    let id = run.create(&lines).await;

    // Shards run as the local worker would, several at a time.
    let mut shards = 0;
    while let Ok(item) = run.items.try_recv() {
        let mut wave = vec![item];
        while let Ok(more) = run.items.try_recv() {
            wave.push(more);
        }
        shards += wave
            .iter()
            .filter(|i| matches!(i, WorkItem::RunShard { .. }))
            .count();
        for result in futures::future::join_all(wave.iter().map(|i| run.worker.handle(i))).await {
            result.expect("work item");
        }
    }

    assert!(shards >= 20, "ran in {shards} shards");
    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(
        batch["request_counts"],
        json!({"total": 50_000, "completed": 50_000, "failed": 0})
    );
    let output = run.lines(&batch["output_file_id"]).await;
    let expected: Vec<String> = (0..50_000).map(|i| format!("n{i:05}")).collect();
    assert!(
        custom_ids(&output) == expected,
        "every line once, in input order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_batch_with_its_own_max_concurrency_then_no_more_lines_are_in_flight() {
    let fake = FakeConfig {
        latency: Duration::from_millis(20),
        ..FakeConfig::default()
    };
    let mut run = run(Backend::Embedded, fake, execution(1 << 20, 64)).await;
    let lines: Vec<String> = (0..20)
        .map(|i| chat_line(&format!("m{i}"), json!({})))
        .collect();
    let file = run
        .app
        .upload_file("batch", "in.jsonl", (lines.join("\n") + "\n").as_bytes())
        .await;
    let mut create = create_body(file.body["id"].as_str().expect("file"));
    create["max_concurrency"] = json!(2);
    let id = run.app.create(&create).await.id();

    run.drain(1).await;

    assert_eq!(run.batch(&id).await["status"], "completed");
    let peak = run.upstream.stats().max_in_flight;
    assert!(
        (1..=2).contains(&peak),
        "at most 2 lines in flight, saw {peak}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_invocation_near_its_deadline_then_the_shard_is_handed_back_untouched() {
    let mut run = run(
        Backend::Embedded,
        FakeConfig::default(),
        execution(1 << 20, 64),
    )
    .await;
    let lines: Vec<String> = (0..5)
        .map(|i| chat_line(&format!("d{i}"), json!({})))
        .collect();
    let id = run.create(&lines).await;
    let validate = run.items.try_recv().expect("validation announced");
    run.worker.handle(&validate).await.expect("validate");
    let shard = run.items.try_recv().expect("a shard");
    let before = run.upstream.stats().requests; // the validation's model list

    // Five seconds left: less than the margin kept for writing and committing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    run.worker
        .handle_until(&shard, Some(deadline))
        .await
        .expect("shard");

    assert_eq!(run.upstream.stats().requests, before, "no line was started");
    let handed_back = run
        .items
        .try_recv()
        .expect("the shard went back to the queue");
    assert_eq!(handed_back, shard);
    assert_eq!(run.batch(&id).await["request_counts"]["completed"], 0);
    run.worker
        .handle(&handed_back)
        .await
        .expect("a later invocation");
    run.drain(1).await;
    assert_eq!(
        run.batch(&id).await["status"],
        "completed",
        "a later invocation finishes it"
    );
}

#[tokio::test]
async fn defaults_are_documented_values() {
    let config = Config::from_lookup(|_| None).expect("config");
    assert_eq!(config.execution.shard_bytes, 4 * 1024 * 1024);
    assert_eq!(config.execution.segment_lines, 256);
    assert_eq!(config.execution.concurrency, 32);
}

/// One line per segment on the embedded store as `cargo run` keeps it: every
/// line is a commit, and each must cost the same however many came before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_one_line_segments_then_a_3000_line_batch_on_disk_completes() {
    let mut run = run_on(
        Backend::Embedded,
        true,
        FakeConfig::default(),
        execution(1 << 20, 1),
    )
    .await;
    let lines: Vec<String> = (0..3_000)
        .map(|i| chat_line(&format!("s{i:04}"), json!({})))
        .collect();
    let id = run.create(&lines).await;

    let started = std::time::Instant::now();
    run.drain(1).await;
    eprintln!("3000 lines at segment_lines=1: {:?}", started.elapsed());

    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    let output = run.lines(&batch["output_file_id"]).await;
    assert_eq!(output.len(), 3_000);
    // One committed segment per line, chained end to start over the file.
    let segments = run
        .app
        .store
        .segments(
            &lambda_batches::domain::TenantId::default_tenant(),
            &lambda_batches::domain::BatchId::parse(&id).expect("id"),
            0,
        )
        .await
        .expect("segments");
    assert_eq!(segments.len(), 3_000);
    let mut at = 0;
    for (start, segment) in &segments {
        assert_eq!(*start, at);
        assert_eq!(segment.completed + segment.failed, 1);
        at = segment.end;
    }
    let record = run
        .app
        .store
        .get(
            &lambda_batches::domain::TenantId::default_tenant(),
            &lambda_batches::domain::BatchId::parse(&id).expect("id"),
            0,
        )
        .await
        .expect("get")
        .expect("record");
    let stored = serde_json::to_string(&record).expect("JSON").len();
    assert!(
        stored < 4_096,
        "the batch's record holds no segments: {stored} bytes"
    );
}

/// One line per segment on DynamoDB: 50,000 commits, each its own segment
/// item, must complete a batch whose item would otherwise pass 400 KB.
/// (Blobs are local: this is about the table.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "20 to 50 minutes on moto (BENCHMARKS.md): run with --ignored"]
async fn given_one_line_segments_then_a_50000_line_batch_completes_on_moto() {
    const LINES: usize = 50_000;
    let mut config = execution(128 * 1024, 1);
    config.concurrency = 1;
    let mut run = run_on(Backend::Moto, true, FakeConfig::default(), config).await;
    let lines: Vec<String> = (0..LINES)
        .map(|i| chat_line(&format!("n{i:05}"), json!({})))
        .collect();
    let id = run.create(&lines).await;

    let started = std::time::Instant::now();
    while let Ok(item) = run.items.try_recv() {
        let mut wave = vec![item];
        while let Ok(more) = run.items.try_recv() {
            wave.push(more);
        }
        for result in futures::future::join_all(wave.iter().map(|i| run.worker.handle(i))).await {
            result.expect("work item");
        }
    }
    eprintln!(
        "{LINES} lines at segment_lines=1 on moto: {:?}",
        started.elapsed()
    );

    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(
        batch["request_counts"],
        json!({"total": LINES, "completed": LINES, "failed": 0})
    );
    let output = run.lines(&batch["output_file_id"]).await;
    let expected: Vec<String> = (0..LINES).map(|i| format!("n{i:05}")).collect();
    assert!(
        custom_ids(&output) == expected,
        "every line once, in input order"
    );
}

async fn given_a_shard_whose_worker_died_then_reconcile_re_enqueues_it_once_its_lease_runs_out_and_not_before(
    backend: Backend,
) {
    let mut run = run(backend, FakeConfig::default(), execution(1 << 20, 4)).await;
    let (id, shard_item, key) = one_shard_validated(&mut run, "r").await;

    // A worker took the shard and died: its lease stays, its heartbeats stop.
    let taken_at = run.app.clock.now_secs();
    run.worker
        .leases
        .acquire(&key, "worker-that-died", taken_at, LEASE_SECS)
        .await
        .expect("lease");
    // Meanwhile the shard looks taken: a second delivery is dropped.
    run.worker.handle(&shard_item).await.expect("dropped");
    assert_eq!(run.batch(&id).await["request_counts"]["completed"], 0);

    run.app.clock.advance_ms((LEASE_SECS - 1) * 1000);
    assert_eq!(run.worker.reconcile().await.expect("reconcile"), 0);
    assert!(
        run.items.try_recv().is_err(),
        "re-enqueued before the lease ran out"
    );

    run.app.clock.advance_ms(1000);
    assert_eq!(run.worker.reconcile().await.expect("reconcile"), 1);
    assert_eq!(run.items.try_recv().ok(), Some(shard_item.clone()));
    assert_eq!(
        run.worker.reconcile().await.expect("reconcile"),
        0,
        "taken over once"
    );
    assert!(run.items.try_recv().is_err());

    run.worker.handle(&shard_item).await.expect("the shard");
    run.drain(1).await;

    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    let output = run.lines(&batch["output_file_id"]).await;
    let expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    assert_eq!(custom_ids(&output), expected);
    assert!(
        run.worker
            .leases
            .expired(i64::MAX, 10)
            .await
            .expect("leases")
            .is_empty(),
        "the finished run released its lease"
    );
}

/// The watch a run leaves on the queue (delivered half a lease later, on SQS)
/// takes a dead worker's shard over without waiting for the reconciler; while
/// the run holds its lease, the watch leaves it alone.
async fn given_a_shard_whose_worker_died_then_its_watch_re_enqueues_it_once_its_lease_runs_out(
    backend: Backend,
) {
    let mut run = run(backend, FakeConfig::default(), execution(1 << 20, 4)).await;
    let (id, shard_item, key) = one_shard_validated(&mut run, "w").await;
    let WorkItem::RunShard {
        tenant,
        batch_id,
        start,
        end,
    } = &shard_item
    else {
        panic!("not a shard: {shard_item:?}")
    };
    let watch = WorkItem::WatchShard {
        tenant: tenant.clone(),
        batch_id: batch_id.clone(),
        start: *start,
        end: *end,
        owner: "worker-that-died".into(),
    };
    let taken_at = run.app.clock.now_secs();
    run.worker
        .leases
        .acquire(&key, "worker-that-died", taken_at, LEASE_SECS)
        .await
        .expect("lease");

    run.app.clock.advance_ms((LEASE_SECS - 1) * 1000);
    run.worker.handle(&watch).await.expect("watch");
    assert!(run.items.try_recv().is_err(), "taken over while held");
    let now = run.app.clock.now_secs();
    let holder = run.worker.leases.holder(&key).await.expect("holder");
    assert!(
        holder.is_some_and(|h| h.owner == "worker-that-died" && h.until > now),
        "still the dead worker's"
    );

    run.app.clock.advance_ms(1000);
    run.worker.handle(&watch).await.expect("watch");
    assert_eq!(run.items.try_recv().ok(), Some(shard_item.clone()));
    run.worker.handle(&watch).await.expect("a second delivery");
    assert!(run.items.try_recv().is_err(), "taken over once");

    run.worker.handle(&shard_item).await.expect("the shard");
    run.drain(1).await;
    let batch = run.batch(&id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    let output = run.lines(&batch["output_file_id"]).await;
    let expected: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    assert_eq!(custom_ids(&output), expected);
}

/// A ten-line, one-shard batch (custom ids `{prefix}0`..) past validation,
/// with the stuck period at an hour so only leases bring a shard back: its
/// id, its shard's work item (taken off the queue) and that shard's key.
async fn one_shard_validated(run: &mut Run, prefix: &str) -> (String, WorkItem, ShardKey) {
    run.worker.reconciler.stuck_after_secs = 3600;
    let lines: Vec<String> = (0..10)
        .map(|i| chat_line(&format!("{prefix}{i}"), json!({})))
        .collect();
    let id = run.create(&lines).await;
    let validate = run.items.try_recv().expect("the validation item");
    run.worker.handle(&validate).await.expect("validation");
    let shard_item = run.items.try_recv().expect("the one shard");
    assert!(run.items.try_recv().is_err(), "one shard only");
    let WorkItem::RunShard {
        tenant,
        batch_id,
        start,
        end,
    } = &shard_item
    else {
        panic!("not a shard: {shard_item:?}")
    };
    let key = ShardKey {
        tenant: tenant.clone(),
        batch: batch_id.clone(),
        shard: lambda_batches::domain::execution::ByteRange {
            start: *start,
            end: *end,
        },
    };
    (id, shard_item, key)
}
