//! `POST /v1/batches`: the create body, the idempotency key from the header and
//! the body, and the fingerprint, in the domain and through the Router.
//!
//! Input: `[header line]\n[body]`; an input without `\n` is a body sent
//! without an `Idempotency-Key` header.
//!
//! Properties: a parsed request keeps every documented bound and survives a
//! round trip through JSON with the same fingerprint; header keys round-trip
//! through the quoted (RFC 8941) form; the Router never answers 5xx, rejects
//! what the domain rejects, replays a keyed create and refuses the same key
//! with other parameters.

#![no_main]

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use lambda_batches::domain::create::{
    MAX_CONCURRENCY, MAX_INPUT_FILE_ID_CHARS, MAX_METADATA_KEY_CHARS, MAX_METADATA_PAIRS,
    MAX_METADATA_VALUE_CHARS, OUTPUT_EXPIRY_SECONDS,
};
use lambda_batches::domain::idempotency::MAX_KEY_CHARS;
use lambda_batches::domain::{CreateBatch, Fingerprint, IdempotencyKey, TenantId};
use lambda_batches_fuzz::{runtime, App};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(newline) => (Some(&data[..newline]), &data[newline + 1..]),
        None => (None, data),
    };

    let parsed = CreateBatch::from_json(body);
    match &parsed {
        Ok(request) => check_request(request),
        Err(error) => assert!(!error.message.is_empty() && !error.code.is_empty()),
    }
    let header_key = header.map(IdempotencyKey::from_header);
    if let Some(Ok(key)) = &header_key {
        check_key(key);
    }
    if let Ok(Some(body_key)) = parsed.as_ref().map(|r| r.idempotency_key.as_deref()) {
        if let Ok(key) = IdempotencyKey::parse(body_key) {
            check_key(&key);
        }
    }

    // The Router only sees headers that HTTP can carry.
    let header = match header.map(HeaderValue::from_bytes) {
        Some(Err(_)) => return,
        Some(Ok(value)) => Some(value),
        None => None,
    };
    runtime().block_on(async {
        let app = App::fresh();
        let send = |body: Vec<u8>| {
            let mut request = Request::builder()
                .method(Method::POST)
                .uri("/v1/batches")
                .header("content-type", "application/json");
            if let Some(value) = &header {
                request = request.header("idempotency-key", value.clone());
            }
            app.send(request.body(Body::from(body)).expect("a request"))
        };
        let first = send(body.to_vec()).await;
        let Ok(request) = parsed else {
            assert_eq!(
                first.status,
                StatusCode::BAD_REQUEST,
                "the domain refused it"
            );
            return;
        };
        // The handler's rule: either key may be absent, both must agree.
        let body_key = request
            .idempotency_key
            .as_deref()
            .map(IdempotencyKey::parse)
            .transpose();
        let key_is_valid = match (body_key, header_key.transpose()) {
            (Ok(Some(body)), Ok(Some(header))) => body == header,
            (Ok(_), Ok(_)) => true,
            _ => false,
        };
        if !key_is_valid {
            assert_eq!(first.status, StatusCode::BAD_REQUEST);
            return;
        }
        assert_eq!(first.status, StatusCode::OK, "a valid create");
        let created = first.json();
        let keyed = header.is_some() || request.idempotency_key.is_some();

        let again = send(body.to_vec()).await;
        assert_eq!(again.status, StatusCode::OK);
        if keyed {
            assert_eq!(
                again
                    .headers
                    .get("idempotent-replayed")
                    .map(|v| v.as_bytes()),
                Some(&b"true"[..])
            );
            assert_eq!(again.json(), created, "a replay answers the stored batch");
            // The same key with other parameters is a conflict, never a second batch.
            let mut other = serde_json::from_slice::<Value>(body).expect("parsed before");
            other["input_file_id"] = json!(other_file_id(&request.input_file_id));
            let conflict = send(serde_json::to_vec(&other).expect("JSON")).await;
            assert_eq!(conflict.status, StatusCode::CONFLICT);
        } else {
            assert_ne!(again.json()["id"], created["id"], "no key, a new batch");
        }
    });
});

fn check_request(request: &CreateBatch) {
    let chars = request.input_file_id.chars().count();
    assert!((1..=MAX_INPUT_FILE_ID_CHARS).contains(&chars));
    assert_eq!(request.completion_window, "24h");
    if let Some(metadata) = &request.metadata {
        assert!(metadata.len() <= MAX_METADATA_PAIRS);
        for (key, value) in metadata {
            assert!(key.chars().count() <= MAX_METADATA_KEY_CHARS);
            assert!(value.chars().count() <= MAX_METADATA_VALUE_CHARS);
        }
    }
    if let Some(expiry) = &request.output_expires_after {
        assert_eq!(expiry.anchor, "created_at");
        assert!(OUTPUT_EXPIRY_SECONDS.contains(&expiry.seconds));
    }
    if let Some(n) = request.max_concurrency {
        assert!(MAX_CONCURRENCY.contains(&i64::from(n)));
    }

    let fingerprint = Fingerprint::of(request);
    assert_eq!(fingerprint.as_str().len(), 64);
    assert!(fingerprint.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
    // What was parsed, written back as JSON, parses to the same request.
    let mut reencoded = json!({
        "input_file_id": request.input_file_id,
        "endpoint": request.endpoint.as_str(),
        "completion_window": request.completion_window,
    });
    if let Some(metadata) = &request.metadata {
        reencoded["metadata"] = json!(metadata);
    }
    if let Some(expiry) = &request.output_expires_after {
        reencoded["output_expires_after"] = json!(expiry);
    }
    if let Some(key) = &request.idempotency_key {
        reencoded["idempotency_key"] = json!(key);
    }
    if let Some(n) = request.max_concurrency {
        reencoded["max_concurrency"] = json!(n);
    }
    let again = CreateBatch::from_json(&serde_json::to_vec(&reencoded).expect("JSON"))
        .expect("a re-encoded valid request is valid");
    assert_eq!(&again, request);
    assert_eq!(Fingerprint::of(&again), fingerprint);

    let mut other = request.clone();
    other.input_file_id = other_file_id(&request.input_file_id);
    assert_ne!(Fingerprint::of(&other), fingerprint);
}

fn check_key(key: &IdempotencyKey) {
    let chars = key.as_str().chars().count();
    assert!((1..=MAX_KEY_CHARS).contains(&chars));
    // Any key of visible ASCII has a quoted header form naming the same key.
    if key.as_str().chars().all(|c| matches!(c, ' '..='~')) {
        let quoted = format!(
            "\"{}\"",
            key.as_str().replace('\\', "\\\\").replace('"', "\\\"")
        );
        assert_eq!(
            IdempotencyKey::from_header(quoted.as_bytes()).as_ref(),
            Ok(key)
        );
    }
    let a = TenantId::default_tenant();
    let b = TenantId::parse("fuzz-other").expect("a tenant name");
    assert_eq!(key.batch_id(&a), key.batch_id(&a));
    assert_ne!(
        key.batch_id(&a),
        key.batch_id(&b),
        "the tenant scopes the key"
    );
}

/// A valid file id that differs from `id`.
fn other_file_id(id: &str) -> String {
    if id == "file-other" {
        "file-another".to_string()
    } else {
        "file-other".to_string()
    }
}
