//! The sample API Gateway (HTTP API v2) events in `events/`, fed through the real
//! Lambda request path: `lambda_http` parses each one, the Router answers it.

mod common;

use axum::http::StatusCode;
use common::{Backend, TestApp};
use lambda_batches::domain::{IdempotencyKey, TenantId};

fn event(name: &str) -> lambda_http::Request {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&json)
        .unwrap_or_else(|e| panic!("{path} is not an API Gateway event: {e}"))
}

async fn send(app: &TestApp, name: &str) -> common::TestResponse {
    let (parts, body) = event(name).into_parts();
    app.send(axum::http::Request::from_parts(
        parts,
        axum::body::Body::new(body),
    ))
    .await
}

#[tokio::test]
async fn given_the_sample_events_when_replayed_in_order_then_each_gets_its_documented_answer() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let expected_id = IdempotencyKey::parse("demo-key-1")
        .expect("key")
        .batch_id(&TenantId::default_tenant())
        .to_string();

    let created = send(&app, "create_batch.json").await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(
        created.id(),
        expected_id,
        "events/retrieve_batch.json and cancel_batch.json use this id"
    );
    assert_eq!(created.body["metadata"]["project"], "demo");

    let again = send(&app, "create_batch_again.json").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, created.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    let retrieved = send(&app, "retrieve_batch.json").await;
    assert_eq!(retrieved.body, created.body);

    let listed = send(&app, "list_batches.json").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["data"][0]["id"], expected_id.as_str());
    assert_eq!(listed.body["has_more"], false);

    let cancelled = send(&app, "cancel_batch.json").await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelling");
}
