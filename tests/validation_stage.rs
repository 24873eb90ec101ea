//! The validation stage end to end: a batch created through the Router is
//! announced, the worker streams its input file from the blob store, and the
//! batch ends `failed` (with every error) or `in_progress` — on every backend.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use common::{create_body, fresh_bucket, fresh_dynamo_store, Backend, TestApp, TestStores};
use lambda_batches::clock::{Clock, ManualClock};
use lambda_batches::config::{AuthConfig, ReconcilerConfig, UpstreamConfig};
use lambda_batches::domain::{FileObject, FilePurpose, Quotas, TenantId};
use lambda_batches::files::local::LocalBlobStore;
use lambda_batches::files::s3::S3BlobStore;
use lambda_batches::files::BlobStore;
use lambda_batches::queue::in_process::InProcessQueue;
use lambda_batches::queue::{WorkItem, WorkQueue};
use lambda_batches::store::embedded::EmbeddedStore;
use lambda_batches::store::files::FileRecord;
use lambda_batches::store::leases::ShardLeases;
use lambda_batches::upstream::UpstreamClient;
use lambda_batches::worker::Worker;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

suite!(
    [embedded, moto, dynalite],
    [
        given_a_missing_input_file_then_the_batch_fails_with_cannot_find_file,
        given_a_valid_file_then_the_batch_is_in_progress_with_total_and_model,
        given_invalid_lines_then_the_batch_fails_listing_every_error_in_order,
        given_an_upload_with_bad_later_lines_then_it_is_accepted_and_the_batch_fails_naming_each,
        given_a_cancel_during_validation_then_the_batch_ends_cancelled,
        given_a_work_item_delivered_twice_then_the_second_changes_nothing,
        given_a_lost_announcement_then_the_reconciler_validates_the_batch,
        given_thousands_of_errors_then_the_record_keeps_1000_and_counts_the_rest,
        given_lines_beyond_the_tenants_quota_then_the_batch_fails_with_enqueued_line_limit_exceeded,
    ]
);

/// Where the test writes input files: a local directory or a moto bucket.
enum BlobTarget {
    Dir(PathBuf),
    S3(S3BlobStore),
}

struct Stage {
    app: TestApp,
    worker: Worker,
    items: UnboundedReceiver<WorkItem>,
    target: BlobTarget,
    clock: Arc<ManualClock>,
    _dir: Option<tempfile::TempDir>,
}

/// An upstream that is never there: the model check is skipped.
fn unreachable_upstream() -> UpstreamConfig {
    UpstreamConfig {
        base_url: "http://127.0.0.1:9/v1".to_string(),
        api_key: None,
    }
}

async fn stage(backend: Backend) -> Stage {
    stage_with(backend, unreachable_upstream()).await
}

async fn stage_with(backend: Backend, upstream: UpstreamConfig) -> Stage {
    stage_with_quotas(backend, upstream, Quotas::UNLIMITED).await
}

async fn stage_with_quotas(backend: Backend, upstream: UpstreamConfig, quotas: Quotas) -> Stage {
    let dir = tempfile::tempdir().expect("temp dir");
    let (batches, files, leases, blobs, target, requests): (_, _, Arc<dyn ShardLeases>, _, _, _) =
        match backend {
            Backend::Embedded | Backend::Dynalite => {
                let local: Arc<dyn BlobStore> =
                    Arc::new(LocalBlobStore::open_dir(dir.path()).expect("blob dir"));
                let target = BlobTarget::Dir(dir.path().to_path_buf());
                if backend == Backend::Embedded {
                    let store = Arc::new(
                        EmbeddedStore::in_memory()
                            .expect("store")
                            .with_quotas(quotas),
                    );
                    (
                        store.clone() as _,
                        store.clone() as _,
                        store as _,
                        local,
                        target,
                        None,
                    )
                } else {
                    let store = Arc::new(fresh_dynamo_store(backend).await.with_quotas(quotas));
                    let requests = Some(store.requests().clone());
                    (
                        store.clone() as _,
                        store.clone() as _,
                        store as _,
                        local,
                        target,
                        requests,
                    )
                }
            }
            Backend::Moto => {
                let store = Arc::new(fresh_dynamo_store(backend).await.with_quotas(quotas));
                let bucket = fresh_bucket(backend).await;
                let requests = Some(store.requests().clone());
                (
                    store.clone() as _,
                    store.clone() as _,
                    store as _,
                    Arc::new(bucket.clone()) as Arc<dyn BlobStore>,
                    BlobTarget::S3(bucket),
                    requests,
                )
            }
        };
    let (queue, items) = InProcessQueue::new();
    let queue: Arc<dyn WorkQueue> = Arc::new(queue);
    let stores = TestStores {
        batches: Arc::clone(&batches),
        files: Arc::clone(&files),
        blobs: Arc::clone(&blobs),
        dynamodb_requests: requests,
        _blob_dir: None,
        _store_dir: None,
    };
    let app = TestApp::with_stores(stores, AuthConfig::Open, Some(Arc::clone(&queue)));
    let clock = Arc::clone(&app.clock);
    let worker = Worker {
        batches: batches.clone(),
        ledger: batches.clone(),
        pending: batches.clone(),
        quotas: batches,
        files,
        blobs,
        queue,
        leases,
        upstream: UpstreamClient::new(&upstream).expect("client"),
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        reconciler: ReconcilerConfig {
            stuck_after_secs: 60,
            interval_secs: 1,
            shard_lease_secs: 30,
        },
        execution: lambda_batches::config::Config::from_lookup(|_| None)
            .expect("default config")
            .execution,
    };
    Stage {
        app,
        worker,
        items,
        target,
        clock,
        _dir: Some(dir),
    }
}

impl Stage {
    /// Stores `content` as a batch input file of the default tenant.
    async fn upload(&self, content: &[u8]) -> String {
        let tenant = TenantId::default_tenant();
        let id = lambda_batches::domain::FileId::random();
        let key = format!("files/{tenant}/{id}");
        match &self.target {
            BlobTarget::Dir(dir) => {
                let path = dir.join(&key);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(path, content).expect("write blob");
            }
            BlobTarget::S3(bucket) => {
                bucket
                    .client()
                    .put_object()
                    .bucket(bucket.bucket())
                    .key(&key)
                    .body(content.to_vec().into())
                    .send()
                    .await
                    .expect("PutObject");
            }
        }
        let now = self.clock.now_secs();
        let record = FileRecord {
            tenant,
            file: FileObject {
                id: id.clone(),
                object: Default::default(),
                bytes: content.len() as u64,
                created_at: now,
                expires_at: Some(now + 30 * 86_400),
                filename: "input.jsonl".into(),
                purpose: FilePurpose::Batch,
                status: Default::default(),
                status_details: None,
            },
            blob_key: key,
            created_us: self.clock.now_micros(),
        };
        self.app
            .files
            .create_file(&record)
            .await
            .expect("file record");
        id.to_string()
    }

    /// Runs every announced validation and cancellation (and what they announce
    /// in turn); execution work is left alone: tests/execution.rs covers it.
    async fn drain(&mut self) -> usize {
        let mut handled = 0;
        while let Ok(item) = self.items.try_recv() {
            if matches!(item, WorkItem::RunShard { .. } | WorkItem::Finalize { .. }) {
                continue;
            }
            self.worker.handle(&item).await.expect("work item");
            handled += 1;
        }
        handled
    }

    async fn batch(&self, id: &str) -> Value {
        let response = self.app.retrieve(id).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        response.body
    }
}

fn chat_line(custom_id: &str, model: &str) -> String {
    json!({
        "custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    })
    .to_string()
}

async fn given_lines_beyond_the_tenants_quota_then_the_batch_fails_with_enqueued_line_limit_exceeded(
    backend: Backend,
) {
    let quotas = Quotas {
        max_enqueued_lines: Some(3),
        ..Quotas::UNLIMITED
    };
    let mut stage = stage_with_quotas(backend, unreachable_upstream(), quotas).await;
    let two = format!("{}\n{}\n", chat_line("a", "m"), chat_line("b", "m"));
    let file = stage.upload(two.as_bytes()).await;
    let first = stage.app.create(&create_body(&file)).await.id();
    stage.drain().await;
    assert_eq!(stage.batch(&first).await["status"], "in_progress");

    // 2 + 2 lines would pass the limit of 3: the second batch fails, as
    // OpenAI fails a batch over its enqueued token limit.
    let second = stage.app.create(&create_body(&file)).await.id();
    stage.drain().await;
    let batch = stage.batch(&second).await;
    assert_eq!(batch["status"], "failed", "{batch}");
    let error = &batch["errors"]["data"][0];
    assert_eq!(error["code"], "enqueued_line_limit_exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("limit of 3 lines"),
        "{error}"
    );

    // A batch that fits alongside still runs.
    let one = stage
        .upload(format!("{}\n", chat_line("c", "m")).as_bytes())
        .await;
    let third = stage.app.create(&create_body(&one)).await.id();
    stage.drain().await;
    assert_eq!(stage.batch(&third).await["status"], "in_progress");
}

async fn given_a_missing_input_file_then_the_batch_fails_with_cannot_find_file(backend: Backend) {
    let mut stage = stage(backend).await;
    let id = stage
        .app
        .create(&create_body("file-doesnotexist"))
        .await
        .id();

    assert_eq!(stage.drain().await, 1);

    let batch = stage.batch(&id).await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(batch["failed_at"], common::START_MS / 1000);
    assert_eq!(batch["errors"]["object"], "list");
    assert_eq!(
        batch["errors"]["data"],
        json!([{"code": "invalid_request", "message": "Cannot find file file-doesnotexist.", "param": "input_file_id", "line": null}])
    );
}

async fn given_a_valid_file_then_the_batch_is_in_progress_with_total_and_model(backend: Backend) {
    let mut stage = stage(backend).await;
    let content = format!(
        "\u{FEFF}{}\r\n\r\n{}",
        chat_line("a", "model-1"),
        chat_line("b", "model-2")
    );
    let file = stage.upload(content.as_bytes()).await;
    let id = stage.app.create(&create_body(&file)).await.id();
    stage.clock.advance_ms(3_000);

    stage.drain().await;

    let batch = stage.batch(&id).await;
    assert_eq!(batch["status"], "in_progress", "{batch}");
    assert_eq!(batch["in_progress_at"], common::START_MS / 1000 + 3);
    assert_eq!(
        batch["request_counts"],
        json!({"total": 2, "completed": 0, "failed": 0})
    );
    assert_eq!(batch["model"], "model-1");
    assert!(batch["errors"].is_null());
}

async fn given_invalid_lines_then_the_batch_fails_listing_every_error_in_order(backend: Backend) {
    let mut stage = stage(backend).await;
    let streaming = json!({"custom_id": "s", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [], "stream": true}});
    let content = [
        chat_line("a", "m"),
        "{invalid json here".to_string(),
        json!({"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": []}}).to_string(),
        streaming.to_string(),
        chat_line("a", "m"),
    ]
    .join("\n");
    let file = stage.upload(content.as_bytes()).await;
    let id = stage.app.create(&create_body(&file)).await.id();

    stage.drain().await;

    let batch = stage.batch(&id).await;
    assert_eq!(batch["status"], "failed");
    let errors: Vec<(String, i64)> = batch["errors"]["data"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap_or_default().to_string(),
                e["line"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            ("invalid_json_line".to_string(), 2),
            ("missing_required_parameter".to_string(), 3),
            ("streaming_unsupported".to_string(), 4),
            ("invalid_request".to_string(), 5),
        ]
    );
}

/// OpenAI's behaviour: the upload takes a file whose first line is a JSON
/// object, and the batch reports every later bad line with its number.
async fn given_an_upload_with_bad_later_lines_then_it_is_accepted_and_the_batch_fails_naming_each(
    backend: Backend,
) {
    let mut stage = stage(backend).await;
    let mut content = [
        chat_line("a", "m"),
        chat_line("b", "m"),
        "{broken".to_string(),
    ]
    .join("\n")
    .into_bytes();
    content.extend_from_slice(b"\n{\"custom_id\": \"\xff\"}\n[1, 2]\n");
    content.extend(vec![
        b'x';
        lambda_batches::domain::jsonl::MAX_LINE_BYTES + 1
    ]);
    content.extend(format!("\n{}\n", chat_line("c", "m")).into_bytes());
    let file = stage
        .app
        .upload_file("batch", "later.jsonl", &content)
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    let id = stage.app.create(&create_body(&file.id())).await.id();

    stage.drain().await;

    let batch = stage.batch(&id).await;
    assert_eq!(batch["status"], "failed", "{batch}");
    let errors: Vec<(&str, i64, &str)> = batch["errors"]["data"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap_or_default(),
                e["line"].as_i64().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let too_long = format!(
        "This line is longer than the limit of {} bytes",
        lambda_batches::domain::jsonl::MAX_LINE_BYTES
    );
    assert_eq!(
        errors,
        vec![
            (
                "invalid_json_line",
                3,
                "This line is not parseable as valid JSON."
            ),
            (
                "invalid_json_line",
                4,
                "This line is not parseable as valid JSON: it is not valid UTF-8."
            ),
            (
                "invalid_request",
                5,
                "Each line must be a JSON dictionary object"
            ),
            ("invalid_request", 6, too_long.as_str()),
        ]
    );
}

async fn given_a_cancel_during_validation_then_the_batch_ends_cancelled(backend: Backend) {
    let mut stage = stage(backend).await;
    let file = stage.upload(chat_line("a", "m").as_bytes()).await;
    let id = stage.app.create(&create_body(&file)).await.id();
    stage.clock.advance_ms(1_000);
    assert_eq!(stage.app.cancel(&id).await.body["status"], "cancelling");

    stage.drain().await;

    let batch = stage.batch(&id).await;
    assert_eq!(batch["status"], "cancelled", "{batch}");
    assert_eq!(batch["cancelled_at"], common::START_MS / 1000 + 1);
    assert!(
        batch["in_progress_at"].is_null(),
        "validation did not also start it"
    );
}

async fn given_a_work_item_delivered_twice_then_the_second_changes_nothing(backend: Backend) {
    let mut stage = stage(backend).await;
    let file = stage.upload(chat_line("a", "m").as_bytes()).await;
    let id = stage.app.create(&create_body(&file)).await.id();
    let item = stage.items.try_recv().expect("announced");
    stage.worker.handle(&item).await.expect("first");
    let after_first = stage.batch(&id).await;
    stage.clock.advance_ms(5_000);

    stage.worker.handle(&item).await.expect("second");

    assert_eq!(stage.batch(&id).await, after_first);
}

async fn given_a_lost_announcement_then_the_reconciler_validates_the_batch(backend: Backend) {
    let mut stage = stage(backend).await;
    let file = stage.upload(chat_line("a", "m").as_bytes()).await;
    let id = stage.app.create(&create_body(&file)).await.id();
    // The process "dies" before the announcement is handled: the item is lost.
    let _lost = stage.items.try_recv().expect("announced");

    assert_eq!(
        stage.worker.reconcile().await.expect("reconcile"),
        0,
        "not stuck yet"
    );
    stage.clock.advance_ms(61_000);
    assert_eq!(stage.worker.reconcile().await.expect("reconcile"), 1);
    stage.drain().await;

    assert_eq!(stage.batch(&id).await["status"], "in_progress");
    assert_eq!(
        stage.worker.reconcile().await.expect("reconcile"),
        0,
        "done batches are not re-driven"
    );
}

async fn given_thousands_of_errors_then_the_record_keeps_1000_and_counts_the_rest(
    backend: Backend,
) {
    let mut stage = stage(backend).await;
    let long_model = "m".repeat(300);
    let line = |i: usize| {
        json!({"custom_id": i.to_string(), "method": "GET", "url": "/v1/embeddings",
            "body": {"model": long_model, "stream": true}})
        .to_string()
    };
    let content = (0..3_000).map(line).collect::<Vec<_>>().join("\n");
    let file = stage.upload(content.as_bytes()).await;
    let id = stage.app.create(&create_body(&file)).await.id();

    stage.drain().await;

    let batch = stage.batch(&id).await;
    assert_eq!(batch["status"], "failed");
    let errors = batch["errors"]["data"].as_array().expect("errors");
    assert!(errors.len() <= 1_001, "{}", errors.len());
    let last = errors.last().expect("an error");
    assert_eq!(last["code"], "too_many_errors");
    assert!(
        serde_json::to_vec(&batch).expect("json").len() < 350 * 1024,
        "fits a DynamoDB item"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_expired_file_in_the_embedded_store_then_the_reconciler_deletes_record_and_bytes()
{
    let stage = stage(Backend::Embedded).await;
    let file = stage.upload(b"{}\n").await;
    let BlobTarget::Dir(dir) = &stage.target else {
        unreachable!("embedded uses a directory")
    };
    let blob = dir.join(format!("files/default/{file}"));
    assert!(blob.exists());

    stage.worker.reconcile().await.expect("reconcile");
    assert!(blob.exists(), "a live file is kept");
    stage.clock.advance_ms(30 * 86_400 * 1000);
    stage.worker.reconcile().await.expect("reconcile");

    assert!(!blob.exists(), "the bytes of the expired file are gone");
    assert_eq!(
        stage.app.get(&format!("/v1/files/{file}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_upstream_model_list_then_unknown_models_fail_validation() {
    let models = axum::Router::new().route(
        "/v1/models",
        axum::routing::get(|| async {
            axum::Json(json!({"object": "list", "data": [{"id": "known"}]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, models).await });
    let upstream = UpstreamConfig {
        base_url: format!("http://{address}/v1"),
        api_key: None,
    };
    let mut stage = stage_with(Backend::Embedded, upstream).await;
    let content = [
        chat_line("a", "known"),
        chat_line("b", "nonexistent-model-xyz"),
    ]
    .join("\n");
    let file = stage.upload(content.as_bytes()).await;
    let id = stage.app.create(&create_body(&file)).await.id();

    stage.drain().await;

    let batch = stage.batch(&id).await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(
        batch["errors"]["data"],
        json!([{"code": "model_not_found", "line": 2, "param": "body.model",
                "message": "Model 'nonexistent-model-xyz' does not exist or is not supported"}])
    );
}
