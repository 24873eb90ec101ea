//! Cross-tenant probes on every route: tenant `b` probes what tenant `a`
//! created and must learn nothing. Each answer is the 404 (or unknown-cursor
//! 400) that a never-existing id of the same shape gets, identical but for the
//! id; lists leave `a`'s items out; `b`'s writes change nothing of `a`'s.

mod common;

use std::future::Future;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::files::{batch_lines, Field};
use common::{create_body, with_key, Backend, TestApp, TestResponse};
use lambda_batches::clock::Clock;
use lambda_batches::config::{ReconcilerConfig, UpstreamConfig};
use lambda_batches::domain::idempotency::random_batch_id;
use lambda_batches::domain::upload::UploadId;
use lambda_batches::domain::{FileId, TenantId};
use lambda_batches::queue::in_process::InProcessQueue;
use lambda_batches::queue::WorkItem;
use lambda_batches::upstream::UpstreamClient;
use lambda_batches::worker::Worker;
use serde_json::{json, Value};

suite!(
    [embedded, moto, dynalite],
    [
        given_tenant_a_resources_then_tenant_b_gets_never_existing_answers_on_every_route,
        given_tenant_a_idempotency_key_then_tenant_b_makes_its_own_batch,
        given_tenant_a_input_file_then_a_batch_of_tenant_b_cannot_use_it,
    ]
);

/// What `b` learns about `real` (a's id) must equal what it learns about
/// `never` (an id that never existed): same status, same body but the id.
async fn probe<F, Fut>(what: &str, real: &str, never: &str, call: F) -> TestResponse
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = TestResponse>,
{
    let about_real = call(real.to_string()).await;
    let about_never = call(never.to_string()).await;
    assert!(
        about_real.status == StatusCode::NOT_FOUND || about_real.status == StatusCode::BAD_REQUEST,
        "{what}: {} {}",
        about_real.status,
        about_real.body
    );
    about_real.expect_error(about_real.status);
    assert_eq!(about_real.status, about_never.status, "{what}");
    assert_eq!(
        about_real.body.to_string().replace(real, "<id>"),
        about_never.body.to_string().replace(never, "<id>"),
        "{what}: the answer tells a's resource from a missing one"
    );
    about_real
}

fn ids(list: &TestResponse) -> Vec<String> {
    list.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {}", list.body))
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_string())
        .collect()
}

async fn as_b(app: &TestApp, method: Method, path: String, body: Option<&Value>) -> TestResponse {
    app.call(method, &path, body, &[("authorization", "Bearer key-b")])
        .await
}

async fn given_tenant_a_resources_then_tenant_b_gets_never_existing_answers_on_every_route(
    backend: Backend,
) {
    let app = TestApp::spawn_with_tenants(backend, &["a", "b"]).await;
    let content = batch_lines(2);
    // a's file, batch and pending upload (with one part).
    let file = app
        .upload_file_as(Some("a"), "batch", "input.jsonl", &content)
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    let file = file.id();
    let batch = app.create_as("a", &create_body(&file)).await.id();
    let upload = app
        .post_json(
            Some("a"),
            "/v1/uploads",
            &json!({"filename": "big.jsonl", "purpose": "batch", "bytes": content.len(), "mime_type": "application/jsonl"}),
        )
        .await
        .id();
    let part_path = format!("/v1/uploads/{upload}/parts");
    let part = app
        .post_form(
            Some("a"),
            &part_path,
            &[Field::File {
                name: "data",
                filename: "blob",
                content: &content,
            }],
        )
        .await
        .id();
    let never_batch = random_batch_id().to_string();
    let never_file = FileId::random().to_string();
    let never_upload = UploadId::random().to_string();
    let app = &app;

    // Batches: retrieve, cancel, and a listing cursor.
    probe(
        "retrieve batch",
        &batch,
        &never_batch,
        move |id| async move { as_b(app, Method::GET, format!("/v1/batches/{id}"), None).await },
    )
    .await;
    probe("cancel batch", &batch, &never_batch, move |id| async move {
        as_b(app, Method::POST, format!("/v1/batches/{id}/cancel"), None).await
    })
    .await;
    probe("list batches after", &batch, &never_batch, move |id| async move {
        as_b(app, Method::GET, format!("/v1/batches?after={id}"), None).await
    })
    .await;
    // Files: retrieve, content, delete, and a listing cursor.
    probe("retrieve file", &file, &never_file, move |id| async move {
        as_b(app, Method::GET, format!("/v1/files/{id}"), None).await
    })
    .await;
    probe("file content", &file, &never_file, move |id| async move {
        let raw = app.content(Some("b"), &id).await;
        TestResponse {
            status: raw.status,
            body: raw.json(),
            headers: raw.headers,
        }
    })
    .await;
    probe("delete file", &file, &never_file, move |id| async move {
        as_b(app, Method::DELETE, format!("/v1/files/{id}"), None).await
    })
    .await;
    probe("list files after", &file, &never_file, move |id| async move {
        as_b(app, Method::GET, format!("/v1/files?after={id}"), None).await
    })
    .await;
    // Uploads: add a part, complete, cancel.
    probe("add part", &upload, &never_upload, move |id| async move {
        app.post_form(
            Some("b"),
            &format!("/v1/uploads/{id}/parts"),
            &[Field::File {
                name: "data",
                filename: "blob",
                content: b"{}\n",
            }],
        )
        .await
    })
    .await;
    let parts = json!({ "part_ids": [part] });
    let parts = &parts;
    probe(
        "complete upload",
        &upload,
        &never_upload,
        move |id| async move {
            as_b(
                app,
                Method::POST,
                format!("/v1/uploads/{id}/complete"),
                Some(parts),
            )
            .await
        },
    )
    .await;
    probe("cancel upload", &upload, &never_upload, move |id| async move {
        as_b(app, Method::POST, format!("/v1/uploads/{id}/cancel"), None).await
    })
    .await;

    // Lists: b sees none of a's items, a sees them all.
    assert!(ids(&app.get_as("b", "/v1/batches").await).is_empty());
    assert!(ids(&app.get_as("b", "/v1/files").await).is_empty());
    assert!(ids(&app.get_as("b", "/v1/files?purpose=batch").await).is_empty());
    assert_eq!(
        ids(&app.get_as("a", "/v1/batches").await),
        vec![batch.clone()]
    );
    assert_eq!(ids(&app.get_as("a", "/v1/files").await), vec![file.clone()]);

    // Nothing b did touched a's resources.
    let a_batch = app.get_as("a", &format!("/v1/batches/{batch}")).await;
    assert_eq!(a_batch.body["status"], "validating");
    assert_eq!(
        app.content(Some("a"), &file).await.body.as_ref(),
        &content[..]
    );
    let completed = app
        .post_json(
            Some("a"),
            &format!("/v1/uploads/{upload}/complete"),
            &json!({ "part_ids": [part] }),
        )
        .await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    assert_eq!(completed.body["status"], "completed");
}

async fn given_tenant_a_idempotency_key_then_tenant_b_makes_its_own_batch(backend: Backend) {
    let app = TestApp::spawn_with_tenants(backend, &["a", "b"]).await;
    let a = app
        .create_as("a", &with_key(create_body("file-a"), "shared"))
        .await;
    // Different parameters under the same key: for b this is no conflict.
    let b = app
        .create_as("b", &with_key(create_body("file-b"), "shared"))
        .await;

    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    assert!(b.headers.get("idempotent-replayed").is_none());
    assert_ne!(a.id(), b.id());
    assert_eq!(b.body["input_file_id"], "file-b");
    let b_again = app
        .create_as("b", &with_key(create_body("file-b"), "shared"))
        .await;
    assert_eq!(b_again.id(), b.id());
    assert_eq!(
        app.get_as("a", &format!("/v1/batches/{}", a.id()))
            .await
            .body["input_file_id"],
        "file-a"
    );
}

async fn given_tenant_a_input_file_then_a_batch_of_tenant_b_cannot_use_it(backend: Backend) {
    let app = TestApp::spawn_with_tenants(backend, &["a", "b"]).await;
    let file = app
        .upload_file_as(Some("a"), "batch", "input.jsonl", &batch_lines(2))
        .await
        .id();
    let a_batch = app.create_as("a", &create_body(&file)).await.id();
    let b_batch = app.create_as("b", &create_body(&file)).await.id();

    // Kept open: validation announces the shards of a batch it starts.
    let (queue, _items) = InProcessQueue::new();
    let worker = Worker {
        batches: app.store.clone(),
        ledger: app.store.clone(),
        pending: app.store.clone(),
        quotas: app.store.clone(),
        files: Arc::clone(&app.files),
        blobs: Arc::clone(&app.blobs),
        queue: Arc::new(queue),
        // Validation only: no shard runs, so no lease is taken.
        leases: Arc::new(lambda_batches::store::embedded::EmbeddedStore::in_memory().unwrap()),
        // Never reached: the model check is skipped.
        upstream: UpstreamClient::new(&UpstreamConfig {
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: None,
        })
        .unwrap(),
        clock: Arc::clone(&app.clock) as Arc<dyn Clock>,
        reconciler: ReconcilerConfig {
            stuck_after_secs: 60,
            interval_secs: 1,
            shard_lease_secs: 30,
        },
        execution: lambda_batches::config::Config::from_lookup(|_| None)
            .unwrap()
            .execution,
    };
    for (tenant, batch_id) in [("a", &a_batch), ("b", &b_batch)] {
        let item = WorkItem::ValidateBatch {
            tenant: TenantId::parse(tenant).unwrap(),
            batch_id: lambda_batches::domain::BatchId::parse(batch_id).unwrap(),
        };
        worker.handle(&item).await.unwrap();
    }

    // The file is valid: a's batch runs. For b it does not exist.
    let a = app.get_as("a", &format!("/v1/batches/{a_batch}")).await;
    assert_eq!(a.body["status"], "in_progress", "{}", a.body);
    let b = app.get_as("b", &format!("/v1/batches/{b_batch}")).await;
    assert_eq!(b.body["status"], "failed", "{}", b.body);
    assert_eq!(
        b.body["errors"]["data"][0]["message"],
        format!("Cannot find file {file}.")
    );
}
