//! Every answer carries a fresh `x-request-id`, and every log line of the
//! request carries the same id, so a user who quotes it lets an operator find
//! the request's logs.

mod common;

use std::collections::HashSet;

use axum::http::StatusCode;
use common::binary::{wait_until, BinaryEnv};
use common::{Backend, TestApp};
use serde_json::json;

fn request_id_of(headers: &axum::http::HeaderMap) -> String {
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no x-request-id in {headers:?}"))
        .to_string();
    let hex = id.strip_prefix("req_").unwrap_or_default();
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "not req_ and 32 hex digits: {id}"
    );
    id
}

#[tokio::test]
async fn given_any_answer_then_it_carries_its_own_request_id() {
    let app = TestApp::spawn_with_tenants(Backend::Embedded, &["acme"]).await;

    let answers = [
        app.get("/health").await,
        app.get_as("acme", "/v1/batches").await,
        app.get_as("acme", "/v1/batches/batch_missing").await,
        app.get("/v1/batches").await,
        app.get("/no/such/route").await,
    ];

    let statuses: Vec<StatusCode> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND
        ]
    );
    let ids: HashSet<String> = answers.iter().map(|a| request_id_of(&a.headers)).collect();
    assert_eq!(ids.len(), answers.len(), "one id per request: {ids:?}");
}

#[tokio::test]
async fn given_a_create_then_its_log_lines_carry_the_request_id_it_answered() {
    let mut env = BinaryEnv::fresh(Backend::Embedded).await;
    env.set("RUST_LOG", "info");
    let server = env.serve().await;

    let answer = reqwest::Client::new()
        .post(format!("{}/v1/batches", server.base))
        .json(
            &json!({"input_file_id": "file-missing", "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(answer.status(), 200);
    let request_id = request_id_of(answer.headers());

    wait_until("the create is logged", || async {
        String::from_utf8_lossy(&server.output()).contains("batch created")
    })
    .await;
    let logs = String::from_utf8_lossy(&server.output()).to_string();
    let created = logs
        .lines()
        .find(|l| l.contains("batch created"))
        .unwrap_or_default();
    assert!(created.contains(&request_id), "{created}");
}
