//! Request limits: every route's body limit answers 413 in the envelope, and
//! requests over the in-flight cap are shed at once with a 503.

mod common;

use axum::body::{Body, Bytes};
use std::task::Poll;

use axum::http::{Request, StatusCode};
use common::{fresh_stores, Backend, TestApp};
use lambda_batches::api::MAX_BODY_BYTES;
use lambda_batches::config::AuthConfig;
use tower::ServiceExt;

async fn app_with_cap(max_in_flight_requests: usize) -> TestApp {
    TestApp::with_state(
        fresh_stores(Backend::Embedded).await,
        AuthConfig::Open,
        None,
        |state| state.max_in_flight_requests = max_in_flight_requests,
    )
}

#[tokio::test]
async fn given_a_json_body_one_byte_over_the_limit_on_any_json_route_then_413_in_the_envelope() {
    let app = app_with_cap(16).await;
    // Valid JSON, so only its size can be the problem.
    let body = format!(
        "{{\"padding\":\"{}\"}}",
        "x".repeat(MAX_BODY_BYTES + 1 - "{\"padding\":\"\"}".len())
    );
    assert_eq!(body.len(), MAX_BODY_BYTES + 1);
    for path in [
        "/v1/batches",
        "/v1/uploads",
        "/v1/uploads/upload_00000000000000000000000000000000/complete",
    ] {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let response = app.send(request).await;
        let error = response.expect_error(StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error["code"], "request_too_large", "{path}");
        assert_eq!(error["type"], "invalid_request_error", "{path}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&MAX_BODY_BYTES.to_string()),
            "{path}: {error}"
        );
    }
}

#[tokio::test]
async fn given_a_body_exactly_at_the_limit_then_it_is_read() {
    let app = app_with_cap(16).await;
    let body = format!(
        "{{\"padding\":\"{}\"}}",
        "x".repeat(MAX_BODY_BYTES - "{\"padding\":\"\"}".len())
    );
    let request = Request::post("/v1/batches")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    // Read and judged on its content: a 400 for the missing fields, not a 413.
    app.send(request)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
}

/// A create whose body never arrives: it holds an in-flight slot for as long
/// as it lives. The receiver fires once the handler reads the body, that is,
/// once the request is past the limiter and holds its slot.
fn held_create(
    app: &TestApp,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (reading, read_started) = tokio::sync::oneshot::channel();
    let mut reading = Some(reading);
    let body = futures::stream::poll_fn(move |_| {
        if let Some(reading) = reading.take() {
            let _ = reading.send(());
        }
        Poll::<Option<Result<Bytes, std::io::Error>>>::Pending
    });
    let request = Request::post("/v1/batches")
        .header("content-type", "application/json")
        .body(Body::from_stream(body))
        .unwrap();
    let router = app.router.clone();
    let task = tokio::spawn(async move {
        let _ = router.oneshot(request).await;
    });
    (task, read_started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_in_flight_cap_is_taken_then_the_next_request_is_shed_with_503_and_retry_after() {
    let app = app_with_cap(1).await;
    let (held, read_started) = held_create(&app);
    read_started
        .await
        .expect("the held request reached its handler");

    let shed = app.get("/v1/batches").await;
    let error = shed.expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error["code"], "server_overloaded");
    assert_eq!(error["type"], "server_error");
    assert_eq!(shed.headers["retry-after"], "1");
    // Shed, not queued: every route answers at once while the slot is held,
    // and health checks are never shed.
    app.post_as("anyone", "/v1/uploads")
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/health").await.status, StatusCode::OK);

    // Once the held request goes away, its slot is free again.
    held.abort();
    assert!(held.await.unwrap_err().is_cancelled());
    assert_eq!(app.get("/v1/batches").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_requests_below_the_cap_then_none_is_shed() {
    let app = app_with_cap(2).await;
    let (held, read_started) = held_create(&app);
    read_started
        .await
        .expect("the held request reached its handler");
    for _ in 0..10 {
        assert_eq!(app.get("/v1/batches").await.status, StatusCode::OK);
    }
    held.abort();
}
