//! Property tests over the request parsers: no input, however hostile, makes
//! them panic, and no input reaching the Router earns a 5xx.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Backend, TestApp};
use lambda_batches::domain::jsonl::check_line;
use lambda_batches::domain::request_line::parse_request;
use lambda_batches::domain::{CreateBatch, Endpoint, IdempotencyKey};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::hash_map(".{0,70}", inner, 0..20)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Create bodies near the valid shape: every known field, each either valid,
/// absent, or any JSON at all.
fn near_valid_body() -> impl Strategy<Value = Value> {
    let field = |valid: Value| {
        prop_oneof![
            3 => Just(Some(valid)),
            1 => Just(None),
            2 => any_json().prop_map(Some),
        ]
    };
    (
        field(json!("file-1")),
        field(json!("/v1/chat/completions")),
        field(json!("24h")),
        field(json!({"k": "v"})),
        field(json!({"anchor": "created_at", "seconds": 3600})),
        field(json!("key")),
    )
        .prop_map(|(file, endpoint, window, metadata, expiry, key)| {
            let names = [
                "input_file_id",
                "endpoint",
                "completion_window",
                "metadata",
                "output_expires_after",
                "idempotency_key",
            ];
            let values = [file, endpoint, window, metadata, expiry, key];
            Value::Object(
                names
                    .iter()
                    .zip(values)
                    .filter_map(|(name, value)| value.map(|v| (name.to_string(), v)))
                    .collect(),
            )
        })
}

/// A request line near the valid shape, written by hand so that keys may
/// repeat: each member a known field (or another), valid or any JSON.
fn near_valid_line() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        Just(("custom_id", json!("a"))),
        Just(("custom_id", json!("b"))),
        Just(("method", json!("POST"))),
        Just(("url", json!("/v1/chat/completions"))),
        Just(("body", json!({"model": "m", "messages": []}))),
        prop_oneof![
            Just("custom_id"),
            Just("method"),
            Just("url"),
            Just("body"),
            Just("extra")
        ]
        .prop_flat_map(|name| any_json().prop_map(move |value| (name, value))),
    ];
    prop::collection::vec(member, 0..10).prop_map(|members| {
        let members: Vec<String> = members
            .iter()
            .map(|(name, value)| format!("{}: {value}", json!(name)))
            .collect();
        format!("{{{}}}", members.join(", "))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Validation and execution read a line alike, repeated keys included: a
    /// line that validates is a request execution reads, with the same id.
    #[test]
    fn a_line_that_validates_is_read_alike_by_execution(line in near_valid_line()) {
        let verdict = check_line(1, line.as_bytes(), Endpoint::ChatCompletions, None);
        match parse_request(line.as_bytes()) {
            Ok(request) => {
                if verdict.errors.is_empty() {
                    prop_assert_eq!(Some(request.custom_id), verdict.custom_id);
                }
            }
            Err(e) => prop_assert!(!verdict.errors.is_empty(), "{}: {}", line, e),
        }
    }

    #[test]
    fn create_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = CreateBatch::from_json(&bytes);
    }

    #[test]
    fn create_parser_accepts_or_names_a_reason(body in near_valid_body()) {
        match CreateBatch::from_json(body.to_string().as_bytes()) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.completion_window, "24h");
                prop_assert!(!parsed.input_file_id.is_empty());
            }
            Err(error) => {
                prop_assert!(!error.message.is_empty());
                prop_assert!(error.param.is_some(), "an object body's error names a field: {}", error.message);
            }
        }
    }

    #[test]
    fn idempotency_header_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(key) = IdempotencyKey::from_header(&bytes) {
            let chars = key.as_str().chars().count();
            prop_assert!((1..=255).contains(&chars));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn hostile_creates_never_earn_a_5xx(body in near_valid_body(), header in prop::option::of(prop::collection::vec(32u8..127, 0..300))) {
        let rt = runtime();
        let app = rt.block_on(TestApp::spawn(Backend::Embedded));
        let mut request = Request::builder().method(Method::POST).uri("/v1/batches");
        if let Some(header) = header {
            request = request.header("idempotency-key", header);
        }
        let response = rt.block_on(app.send(request.body(Body::from(body.to_string())).expect("request")));
        prop_assert!(matches!(response.status, StatusCode::OK | StatusCode::BAD_REQUEST), "{} for {}", response.status, body);
        if response.status != StatusCode::OK {
            response.expect_error(response.status);
        }
    }

    #[test]
    fn hostile_paths_and_queries_never_earn_a_5xx(segment in "[ -~]{0,80}", query in "[ -~]{0,80}") {
        let rt = runtime();
        let app = rt.block_on(TestApp::spawn(Backend::Embedded));
        let encode = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        for (method, uri) in [
            (Method::GET, format!("/v1/batches/{}", encode(&segment))),
            (Method::POST, format!("/v1/batches/{}/cancel", encode(&segment))),
            (Method::GET, format!("/v1/batches?{}", query.replace([' ', '#'], "+"))),
        ] {
            let request = Request::builder().method(method).uri(&uri).body(Body::empty());
            let Ok(request) = request else { continue };
            let response = rt.block_on(app.send(request));
            prop_assert!(response.status.is_success() || response.status.is_client_error(), "{} for {}", response.status, uri);
        }
    }
}
