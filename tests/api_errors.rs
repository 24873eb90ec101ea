//! Every client mistake answers a 4xx in the OpenAI error envelope, never a 5xx.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{create_body, with_key, Backend, TestApp};
use serde_json::{json, Value};

async fn app() -> TestApp {
    TestApp::spawn(Backend::Embedded).await
}

async fn post_raw(
    app: &TestApp,
    body: impl Into<Body>,
    headers: &[(&str, &str)],
) -> common::TestResponse {
    let mut request = Request::builder().method(Method::POST).uri("/v1/batches");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.send(request.body(body.into()).expect("request")).await
}

fn with(field: &str, value: Value) -> Value {
    let mut body = create_body("file-1");
    body[field] = value;
    body
}

fn without(field: &str) -> Value {
    let mut body = create_body("file-1");
    body.as_object_mut().expect("object").remove(field);
    body
}

#[tokio::test]
async fn given_invalid_create_bodies_then_400_naming_the_field() {
    let app = app().await;
    let cases: Vec<(Value, Value, &str)> = vec![
        (
            without("input_file_id"),
            json!("input_file_id"),
            "missing_required_parameter",
        ),
        (
            without("endpoint"),
            json!("endpoint"),
            "missing_required_parameter",
        ),
        (
            without("completion_window"),
            json!("completion_window"),
            "missing_required_parameter",
        ),
        (
            with("input_file_id", json!(123)),
            json!("input_file_id"),
            "invalid_type",
        ),
        (
            with("endpoint", json!("/v1/invalid/endpoint")),
            json!("endpoint"),
            "invalid_value",
        ),
        (
            with("endpoint", json!("")),
            json!("endpoint"),
            "invalid_value",
        ),
        (
            with("endpoint", json!(["/v1/embeddings"])),
            json!("endpoint"),
            "invalid_type",
        ),
        (
            with("completion_window", json!("1h")),
            json!("completion_window"),
            "invalid_value",
        ),
        (
            with("completion_window", json!("48h")),
            json!("completion_window"),
            "invalid_value",
        ),
        (
            with("completion_window", json!("invalid")),
            json!("completion_window"),
            "invalid_value",
        ),
        (
            with("completion_window", json!("")),
            json!("completion_window"),
            "invalid_value",
        ),
        (
            with("completion_window", json!(24)),
            json!("completion_window"),
            "invalid_type",
        ),
        (
            with("metadata", json!("tags")),
            json!("metadata"),
            "invalid_type",
        ),
        (
            with("metadata", json!({"tags": ["tag1", "tag2"]})),
            json!("metadata.tags"),
            "invalid_type",
        ),
        (
            with("metadata", json!({"valid_key": 456})),
            json!("metadata.valid_key"),
            "invalid_type",
        ),
        (
            with(
                "metadata",
                Value::Object((0..17).map(|i| (format!("k{i}"), json!("v"))).collect()),
            ),
            json!("metadata"),
            "object_above_max_properties",
        ),
        (
            with("metadata", json!({"k".repeat(65): "v"})),
            json!("metadata"),
            "string_above_max_length",
        ),
        (
            with("metadata", json!({"k": "v".repeat(513)})),
            json!("metadata.k"),
            "string_above_max_length",
        ),
        (
            with(
                "output_expires_after",
                json!({"anchor": "created_at", "seconds": 60}),
            ),
            json!("output_expires_after.seconds"),
            "invalid_value",
        ),
        (
            with(
                "output_expires_after",
                json!({"anchor": "completed_at", "seconds": 3600}),
            ),
            json!("output_expires_after.anchor"),
            "invalid_value",
        ),
        (
            with("output_expires_after", json!([3600])),
            json!("output_expires_after"),
            "invalid_type",
        ),
        (
            with("idempotency_key", json!("")),
            json!("idempotency_key"),
            "invalid_value",
        ),
        (
            with("idempotency_key", json!("k".repeat(256))),
            json!("idempotency_key"),
            "invalid_value",
        ),
        (
            with("idempotency_key", json!({"k": 1})),
            json!("idempotency_key"),
            "invalid_type",
        ),
        (
            with("idem_tok", json!("k")),
            json!("idem_tok"),
            "unknown_parameter",
        ),
    ];
    for (body, param, code) in cases {
        let response = app.create(&body).await;
        let error = response.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(error["param"], param, "{body}");
        assert_eq!(error["code"], code, "{body}");
        assert_eq!(error["type"], "invalid_request_error");
    }
    let listed = app.get("/v1/batches").await;
    assert_eq!(
        listed.body["data"],
        json!([]),
        "no rejected request created a batch"
    );
}

#[tokio::test]
async fn given_bodies_that_are_not_a_json_object_then_400() {
    let app = app().await;
    for body in [
        &b"{not json"[..],
        b"",
        b"[]",
        b"null",
        b"\"batch\"",
        b"\xff\xfe\xfd",
        b"{\"input_file_id\":",
    ] {
        let response = post_raw(&app, body.to_vec(), &[("content-type", "application/json")]).await;
        let error = response.expect_error(StatusCode::BAD_REQUEST);
        assert!(error["param"].is_null());
    }
}

#[tokio::test]
async fn given_an_invalid_endpoint_then_the_message_lists_the_supported_values() {
    let app = app().await;
    let response = app
        .create(&with("endpoint", json!("/v1/invalid/endpoint")))
        .await;
    let message = response.expect_error(StatusCode::BAD_REQUEST)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("/v1/invalid/endpoint"), "{message}");
    for supported in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/moderations",
    ] {
        assert!(message.contains(supported), "{message}");
    }
}

#[tokio::test]
async fn given_a_body_over_the_limit_then_413() {
    let app = app().await;
    let huge = format!("{{\"input_file_id\":\"{}\"}}", "x".repeat(100 * 1024));
    let response = post_raw(&app, huge, &[("content-type", "application/json")]).await;
    response.expect_error(StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn given_conflicting_or_malformed_idempotency_keys_then_400() {
    let app = app().await;
    let differ = app
        .call(
            Method::POST,
            "/v1/batches",
            Some(&with_key(create_body("f"), "body-key")),
            &[("idempotency-key", "header-key")],
        )
        .await;
    assert_eq!(
        differ.expect_error(StatusCode::BAD_REQUEST)["param"],
        "idempotency_key"
    );
    for header in ["\"unterminated", "\"\"", &"k".repeat(256)] {
        let response = app
            .call(
                Method::POST,
                "/v1/batches",
                Some(&create_body("f")),
                &[("idempotency-key", header)],
            )
            .await;
        assert_eq!(
            response.expect_error(StatusCode::BAD_REQUEST)["param"],
            "Idempotency-Key",
            "{header}"
        );
    }
}

#[tokio::test]
async fn given_unknown_batches_then_404_with_the_reference_message() {
    let app = app().await;
    for id in [
        "batch_00000000000000000000000000000000",
        "nonexistent_batch",
        "batch_%2F..%2F",
        "batch_%FF",
    ] {
        let retrieve = app.retrieve(id).await;
        let message = retrieve.expect_error(StatusCode::NOT_FOUND)["message"].clone();
        assert!(
            message.as_str().unwrap_or_default().contains("not found"),
            "{message}"
        );
        app.cancel(id).await.expect_error(StatusCode::NOT_FOUND);
    }
    let missing = app.retrieve("batch_abc").await;
    assert_eq!(
        missing.expect_error(StatusCode::NOT_FOUND)["message"],
        "Batch 'batch_abc' not found"
    );
    let long = format!("batch_{}", "a".repeat(5000));
    app.retrieve(&long)
        .await
        .expect_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn given_unknown_routes_and_wrong_methods_then_404_and_405_in_the_envelope() {
    let app = app().await;
    app.get("/v1/nope")
        .await
        .expect_error(StatusCode::NOT_FOUND);
    app.get("/").await.expect_error(StatusCode::NOT_FOUND);
    app.call(Method::DELETE, "/v1/batches", None, &[])
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED);
    app.call(Method::PUT, "/v1/batches/batch_1", None, &[])
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED);
    app.get("/v1/batches/batch_1/cancel")
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn given_bad_list_parameters_then_400_naming_them() {
    let app = app().await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),
        ("limit=99999999999999999999999", "limit"),
        ("after=batch_unknown", "after"),
    ] {
        let response = app.get(&format!("/v1/batches?{query}")).await;
        assert_eq!(
            response.expect_error(StatusCode::BAD_REQUEST)["param"],
            param,
            "{query}"
        );
    }
    app.get("/v1/batches?limit=%FF")
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    for ok in ["limit=1", "limit=100", "unknown=ignored"] {
        assert_eq!(
            app.get(&format!("/v1/batches?{ok}")).await.status,
            StatusCode::OK,
            "{ok}"
        );
    }
}

#[tokio::test]
async fn given_keys_are_configured_then_missing_or_wrong_keys_get_401_on_every_route() {
    let app = TestApp::spawn_with_tenants(Backend::Embedded, &["tenant-a"]).await;
    let routes = [
        (Method::POST, "/v1/batches"),
        (Method::GET, "/v1/batches"),
        (Method::GET, "/v1/batches/batch_1"),
        (Method::POST, "/v1/batches/batch_1/cancel"),
    ];
    for (method, path) in routes {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("key-tenant-a"),
            Some("Basic a2V5"),
        ] {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
            let response = app
                .call(method.clone(), path, Some(&create_body("f")), &headers)
                .await;
            let error = response.expect_error(StatusCode::UNAUTHORIZED);
            assert_eq!(error["code"], "invalid_api_key", "{method} {path} {auth:?}");
        }
    }
    let ok = app.create_as("tenant-a", &create_body("f")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        app.get("/health").await.status,
        StatusCode::OK,
        "health needs no key"
    );
}
