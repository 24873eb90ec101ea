//! Executing request lines against an OpenAI-compatible upstream: the fake
//! upstream (`examples/fake_upstream.rs`) and a few hand-made servers, over real
//! HTTP on loopback.
//!
//! No test bounds wall-clock time from above: a loaded CI machine is slow, and
//! "it waited at least the retry-after" is the property that matters.

#[path = "../examples/fake_upstream.rs"]
mod fake_upstream;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use fake_upstream::{start, FakeConfig, FakeHandle, Fault, SplitMix64};
use lambda_batches::config::UpstreamConfig;
use lambda_batches::domain::batch::{InputTokensDetails, OutputTokensDetails, Usage};
use lambda_batches::upstream::{
    output_line, transport_code, usage_of, Execution, Outcome, OutputLine, RetryPolicy,
    UpstreamClient,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;

const CHAT: &str = "/v1/chat/completions";

fn client_for(base_url: String, api_key: Option<&str>) -> UpstreamClient {
    UpstreamClient::new(&UpstreamConfig {
        base_url,
        api_key: api_key.map(str::to_owned),
    })
    .expect("build the upstream client")
}

fn client(fake: &FakeHandle) -> UpstreamClient {
    client_for(fake.base_url(), None)
}

/// Retries within milliseconds, so that only a `retry-after` can make a test wait.
fn fast(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

fn chat(content: &str) -> Value {
    json!({"model": "fake-model", "messages": [{"role": "user", "content": content}]})
}

/// How many times the fake saw exactly this body on `path`.
fn attempts_seen(fake: &FakeHandle, path: &str, body: &Value) -> u32 {
    fake.stats()
        .attempts_of(path, &serde_json::to_vec(body).unwrap())
}

/// A seed whose first draws are `faults`, in order: the fake draws once per
/// request, so with it the n-th request meets the n-th fault.
fn seed_for(config: &FakeConfig, faults: &[Fault]) -> u64 {
    (0..100_000)
        .find(|&seed| {
            let mut rng = SplitMix64::new(seed);
            faults
                .iter()
                .all(|fault| Fault::draw(&mut rng, config) == *fault)
        })
        .expect("some seed draws these faults")
}

async fn fake_with_faults(config: FakeConfig, faults: &[Fault]) -> FakeHandle {
    let seed = seed_for(&config, faults);
    start(FakeConfig { seed, ..config }).await
}

fn status_of(execution: &Execution) -> u16 {
    match &execution.outcome {
        Outcome::Response { status_code, .. } => *status_code,
        other => panic!("expected an HTTP answer, got {other:?}"),
    }
}

fn body_of(execution: &Execution) -> &Value {
    match &execution.outcome {
        Outcome::Response { body, .. } => body,
        other => panic!("expected an HTTP answer, got {other:?}"),
    }
}

/// Serves `app` on a fresh loopback port; the base URL ends in `/v1`.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

// ---------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn given_a_healthy_upstream_when_a_line_runs_then_it_succeeds_once_with_the_upstream_request_id(
) {
    let fake = start(FakeConfig::default()).await;
    let body = chat("hello");

    let execution = client(&fake).execute(CHAT, &body, &fast(6), None).await;

    let Outcome::Response {
        status_code,
        request_id,
        body: answer,
    } = &execution.outcome
    else {
        panic!("expected an answer: {execution:?}");
    };
    assert_eq!(*status_code, 200);
    assert!(request_id.starts_with("req_fake_"), "{request_id}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: hello");
    assert!(execution.outcome.is_success());
    assert_eq!(execution.attempts, 1);
    assert!(!execution.gave_up_for_deadline);
    assert!(execution.total >= execution.latency);
    assert_eq!(attempts_seen(&fake, CHAT, &body), 1);
}

#[tokio::test]
async fn given_each_endpoint_when_a_line_runs_then_its_v1_url_maps_onto_the_base_url() {
    let fake = start(FakeConfig::default()).await;
    let upstream = client(&fake);

    let embedding = upstream
        .execute(
            "/v1/embeddings",
            &json!({"model": "fake-embed", "input": "cat"}),
            &fast(1),
            None,
        )
        .await;
    let response = upstream
        .execute(
            "/v1/responses",
            &json!({"model": "fake-model", "input": "hi"}),
            &fast(1),
            None,
        )
        .await;

    assert_eq!(body_of(&embedding)["object"], "list");
    assert_eq!(body_of(&response)["object"], "response");
    let stats = fake.stats();
    assert_eq!(stats.endpoint("/v1/embeddings"), 1);
    assert_eq!(stats.endpoint("/v1/responses"), 1);
}

#[tokio::test]
async fn given_a_400_when_a_line_runs_then_it_is_not_retried_and_keeps_the_upstream_error() {
    let fake = start(FakeConfig::default()).await;
    let mut body = chat("doomed");
    body["fail_with"] = json!(400);

    let execution = client(&fake).execute(CHAT, &body, &fast(6), None).await;

    assert_eq!(status_of(&execution), 400);
    let error = &body_of(&execution)["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "fail_with");
    assert!(!execution.outcome.is_success());
    assert_eq!(execution.attempts, 1);
    assert_eq!(attempts_seen(&fake, CHAT, &body), 1);
}

#[tokio::test]
async fn given_an_unknown_model_when_a_line_runs_then_the_404_is_final() {
    let fake = start(FakeConfig::default()).await;
    let body = json!({"model": "gpt-nope", "messages": []});

    let execution = client(&fake).execute(CHAT, &body, &fast(6), None).await;

    assert_eq!(status_of(&execution), 404);
    assert_eq!(body_of(&execution)["error"]["code"], "model_not_found");
    assert_eq!(execution.attempts, 1);
    assert_eq!(attempts_seen(&fake, CHAT, &body), 1);
}

// ---------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------

#[tokio::test]
async fn given_a_429_with_retry_after_when_a_line_runs_then_it_waits_that_long_and_succeeds() {
    let retry_after = Duration::from_millis(300);
    let fake = fake_with_faults(
        FakeConfig {
            rate_429: 0.5,
            retry_after,
            ..FakeConfig::default()
        },
        &[Fault::RateLimited, Fault::None],
    )
    .await;
    let started = Instant::now();

    let execution = client(&fake)
        .execute(CHAT, &chat("limited"), &fast(6), None)
        .await;

    assert_eq!(status_of(&execution), 200);
    assert_eq!(execution.attempts, 2);
    assert!(
        started.elapsed() >= retry_after && execution.total >= retry_after,
        "a 1 ms backoff, so only the retry-after can explain the wait: {execution:?}"
    );
    assert_eq!(fake.stats().status(429), 1);
}

#[tokio::test]
async fn given_500s_when_a_line_runs_then_it_is_retried_until_it_succeeds() {
    let fake = start(FakeConfig {
        fail_first: 2,
        ..FakeConfig::default()
    })
    .await;
    let body = chat("flaky");

    let execution = client(&fake).execute(CHAT, &body, &fast(6), None).await;

    assert_eq!(status_of(&execution), 200);
    assert_eq!(execution.attempts, 3);
    assert_eq!(attempts_seen(&fake, CHAT, &body), 3);
    assert_eq!(fake.stats().status(500), 2);
}

#[tokio::test]
async fn given_a_503_when_a_line_runs_then_it_is_retried_until_it_succeeds() {
    let fake = fake_with_faults(
        FakeConfig {
            rate_500: 0.5,
            ..FakeConfig::default()
        },
        &[Fault::ServerError(503), Fault::None],
    )
    .await;

    let execution = client(&fake)
        .execute(CHAT, &chat("overloaded"), &fast(6), None)
        .await;

    assert_eq!(status_of(&execution), 200);
    assert_eq!(execution.attempts, 2);
    assert_eq!(fake.stats().status(503), 1);
}

#[tokio::test]
async fn given_dropped_connections_when_a_line_runs_then_it_is_retried_until_it_succeeds() {
    let fake = fake_with_faults(
        FakeConfig {
            rate_drop: 0.5,
            ..FakeConfig::default()
        },
        &[Fault::Drop, Fault::Drop, Fault::None],
    )
    .await;

    let execution = client(&fake)
        .execute(CHAT, &chat("dropped"), &fast(6), None)
        .await;

    assert_eq!(status_of(&execution), 200);
    assert_eq!(execution.attempts, 3);
    let stats = fake.stats();
    assert_eq!(stats.dropped, 2);
    assert_eq!(
        stats.requests, 3,
        "every attempt is ours: the HTTP client adds none"
    );
}

#[tokio::test]
async fn given_an_upstream_that_always_fails_when_a_line_runs_then_the_last_answer_stands_after_max_attempts(
) {
    let fake = start(FakeConfig::default()).await;
    let mut unavailable = chat("never");
    unavailable["fail_with"] = json!(503);
    let mut dropped = chat("never either");
    dropped["fail_with"] = json!("drop");
    let upstream = client(&fake);

    let answered = upstream.execute(CHAT, &unavailable, &fast(4), None).await;
    let unanswered = upstream.execute(CHAT, &dropped, &fast(4), None).await;

    assert_eq!(status_of(&answered), 503);
    assert_eq!(body_of(&answered)["error"]["type"], "server_error");
    assert_eq!(answered.attempts, 4);
    assert!(!answered.gave_up_for_deadline);
    assert_eq!(attempts_seen(&fake, CHAT, &unavailable), 4);
    let Outcome::TransportError { code, message } = &unanswered.outcome else {
        panic!("expected a transport error: {unanswered:?}");
    };
    assert_eq!(*code, transport_code::UNREACHABLE);
    assert!(
        message.starts_with("the connection to the upstream failed"),
        "{message}"
    );
    assert_eq!(unanswered.attempts, 4);
    assert_eq!(attempts_seen(&fake, CHAT, &dropped), 4);
}

#[tokio::test]
async fn given_a_408_when_a_line_runs_then_it_is_retried() {
    let fake = start(FakeConfig::default()).await;
    let mut body = chat("slow client");
    body["fail_with"] = json!(408);

    let execution = client(&fake).execute(CHAT, &body, &fast(3), None).await;

    assert_eq!(status_of(&execution), 408);
    assert_eq!(execution.attempts, 3);
}

// ---------------------------------------------------------------------------
// The deadline
// ---------------------------------------------------------------------------

#[tokio::test]
async fn given_a_retry_after_beyond_the_deadline_when_a_line_runs_then_it_stops_and_says_so() {
    let fake = start(FakeConfig {
        rate_429: 1.0,
        retry_after: Duration::from_secs(30),
        ..FakeConfig::default()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(2);

    let execution = client(&fake)
        .execute(CHAT, &chat("late"), &fast(6), Some(deadline))
        .await;

    assert!(execution.gave_up_for_deadline);
    assert_eq!(execution.attempts, 1);
    assert_eq!(status_of(&execution), 429);
}

#[tokio::test]
async fn given_an_answer_slower_than_the_time_left_when_a_line_runs_then_the_deadline_cuts_it_short(
) {
    let fake = start(FakeConfig {
        latency: Duration::from_secs(30),
        ..FakeConfig::default()
    })
    .await;
    let deadline = Instant::now() + Duration::from_millis(200);

    let execution = client(&fake)
        .execute(CHAT, &chat("slow"), &fast(6), Some(deadline))
        .await;

    assert!(execution.gave_up_for_deadline);
    assert_eq!(execution.attempts, 1);
    let Outcome::TransportError { code, message } = &execution.outcome else {
        panic!("expected a timeout: {execution:?}");
    };
    assert!(message.contains("did not answer"), "{message}");
    assert_eq!(*code, transport_code::TIMEOUT);
}

#[tokio::test]
async fn given_a_passed_deadline_when_a_line_runs_then_nothing_is_sent() {
    let fake = start(FakeConfig::default()).await;

    let execution = client(&fake)
        .execute(CHAT, &chat("too late"), &fast(6), Some(Instant::now()))
        .await;

    assert!(execution.gave_up_for_deadline);
    assert_eq!(execution.attempts, 0);
    assert_eq!(fake.stats().requests, 0);
}

#[tokio::test]
async fn given_a_far_deadline_when_a_line_fails_over_and_over_then_max_attempts_ends_it() {
    let fake = start(FakeConfig::default()).await;
    let mut body = chat("still failing");
    body["fail_with"] = json!(500);

    let execution = client(&fake)
        .execute(
            CHAT,
            &body,
            &fast(3),
            Some(Instant::now() + Duration::from_secs(3600)),
        )
        .await;

    assert_eq!(status_of(&execution), 500);
    assert_eq!(execution.attempts, 3);
    assert!(!execution.gave_up_for_deadline);
}

// ---------------------------------------------------------------------------
// Transport failures and odd answers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn given_no_server_when_a_line_runs_then_it_is_unreachable_and_the_message_leaks_nothing() {
    // A port that was just free, and has nobody listening on it now.
    let addr: SocketAddr = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        listener.local_addr().unwrap()
    };
    let upstream = client_for(format!("http://{addr}/v1"), Some("sk-very-secret"));
    let body = chat("my private prompt");

    let execution = upstream.execute(CHAT, &body, &fast(3), None).await;

    let Outcome::TransportError { code, message } = &execution.outcome else {
        panic!("expected a transport error: {execution:?}");
    };
    assert_eq!(*code, transport_code::UNREACHABLE);
    assert!(
        message.starts_with("could not connect to the upstream"),
        "{message}"
    );
    assert_eq!(execution.attempts, 3);
    let shown = format!("{execution:?}");
    for secret in ["sk-very-secret", "my private prompt", &addr.to_string()] {
        assert!(!shown.contains(secret), "{secret} in {message}");
    }
}

#[tokio::test]
async fn given_a_server_when_a_line_runs_then_it_gets_the_json_body_and_the_bearer_key() {
    let base_url = serve(Router::new().route(
        "/v1/chat/completions",
        post(|headers: HeaderMap, body: String| async move {
            let echo = json!({
                "authorization": headers["authorization"].to_str().unwrap(),
                "content_type": headers["content-type"].to_str().unwrap(),
                "body": serde_json::from_str::<Value>(&body).unwrap(),
            });
            axum::Json(echo)
        }),
    ))
    .await;
    let body = chat("hi");

    let execution = client_for(base_url, Some("sk-test"))
        .execute(CHAT, &body, &fast(1), None)
        .await;

    let Outcome::Response {
        request_id,
        body: echo,
        ..
    } = &execution.outcome
    else {
        panic!("expected an answer: {execution:?}");
    };
    assert_eq!(echo["authorization"], "Bearer sk-test");
    assert_eq!(echo["content_type"], "application/json");
    assert_eq!(echo["body"], body);
    assert!(
        request_id.starts_with("req_") && request_id.len() > 4,
        "made up without x-request-id: {request_id}"
    );
}

#[tokio::test]
async fn given_a_2xx_that_is_not_json_when_a_line_runs_then_it_is_an_invalid_upstream_response() {
    let base_url =
        serve(Router::new().route("/v1/chat/completions", post(|| async { "surely not json" })))
            .await;

    let execution = client_for(base_url, None)
        .execute(CHAT, &chat("x"), &fast(2), None)
        .await;

    let Outcome::TransportError { code, .. } = &execution.outcome else {
        panic!("expected a transport error: {execution:?}");
    };
    assert_eq!(*code, transport_code::INVALID_RESPONSE);
    assert_eq!(
        execution.attempts, 2,
        "a garbled answer may come whole next time"
    );
}

#[tokio::test]
async fn given_a_non_json_error_page_when_a_line_runs_then_its_text_is_wrapped_as_an_openai_error()
{
    let page = format!("<html>{}</html>", "x".repeat(10_000));
    let base_url = serve(Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let page = page.clone();
            async move { (StatusCode::BAD_GATEWAY, page) }
        }),
    ))
    .await;

    let execution = client_for(base_url, None)
        .execute(CHAT, &chat("x"), &fast(2), None)
        .await;

    assert_eq!(status_of(&execution), 502);
    assert_eq!(execution.attempts, 2);
    let error = &body_of(&execution)["error"];
    assert_eq!(error["type"], "upstream_error");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("<html>xxx"), "{message}");
    assert_eq!(message.len(), 4096, "truncated to 4 KB");
}

#[tokio::test]
async fn given_many_lines_at_once_when_spawned_then_they_share_one_client_and_all_succeed() {
    let fake = start(FakeConfig {
        latency: Duration::from_millis(50),
        ..FakeConfig::default()
    })
    .await;
    let upstream = client(&fake);

    let lines: Vec<_> = (0..32)
        .map(|line| {
            let upstream = upstream.clone();
            // Spawning proves the execution future is Send, as a worker needs.
            tokio::spawn(async move {
                upstream
                    .execute(CHAT, &chat(&format!("line {line}")), &fast(6), None)
                    .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for line in lines {
        statuses.push(status_of(&line.await.unwrap()));
    }

    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    let stats = fake.stats();
    assert_eq!(stats.requests, 32);
    assert!(stats.max_in_flight > 1, "the lines overlapped");
}

// ---------------------------------------------------------------------------
// Output lines
// ---------------------------------------------------------------------------

#[test]
fn given_a_success_when_rendered_then_it_is_an_output_line_with_a_null_error() {
    let outcome = Outcome::Response {
        status_code: 200,
        request_id: "req_abc".to_owned(),
        body: json!({"object": "chat.completion"}),
    };

    let (success, line) = output_line("batch_req_1", "request-1", &outcome);

    assert!(success);
    assert_eq!(
        line,
        json!({
            "id": "batch_req_1",
            "custom_id": "request-1",
            "response": {"status_code": 200, "request_id": "req_abc", "body": {"object": "chat.completion"}},
            "error": null,
        })
    );
}

#[test]
fn given_an_upstream_error_when_rendered_then_it_is_an_error_line_with_the_upstream_body() {
    let body = json!({"error": {"message": "no", "type": "invalid_request_error", "param": null, "code": null}});
    let outcome = Outcome::Response {
        status_code: 400,
        request_id: "req_def".to_owned(),
        body: body.clone(),
    };

    let (success, line) = output_line("batch_req_2", "request-2", &outcome);

    assert!(!success);
    assert_eq!(
        line,
        json!({
            "id": "batch_req_2",
            "custom_id": "request-2",
            "response": {"status_code": 400, "request_id": "req_def", "body": body},
            "error": null,
        })
    );
}

#[test]
fn given_a_transport_failure_when_rendered_then_it_is_an_error_line_with_a_null_response() {
    let outcome = Outcome::TransportError {
        code: transport_code::UNREACHABLE,
        message: "could not connect to the upstream".to_owned(),
    };

    let (success, line) = output_line("batch_req_3", "request-3", &outcome);

    assert!(!success);
    assert_eq!(
        line,
        json!({
            "id": "batch_req_3",
            "custom_id": "request-3",
            "response": null,
            "error": {"code": "upstream_unreachable", "message": "could not connect to the upstream"},
        })
    );
}

#[test]
fn given_an_output_line_when_written_directly_then_it_keeps_openai_field_order() {
    let outcome = Outcome::Response {
        status_code: 200,
        request_id: "req_abc".to_owned(),
        body: json!({}),
    };

    let text = serde_json::to_string(&OutputLine::new("batch_req_1", "c", &outcome)).unwrap();

    assert_eq!(
        text,
        r#"{"id":"batch_req_1","custom_id":"c","response":{"status_code":200,"request_id":"req_abc","body":{}},"error":null}"#
    );
}

// ---------------------------------------------------------------------------
// Usage
// ---------------------------------------------------------------------------

fn usage(input: u64, cached: u64, output: u64, reasoning: u64, total: u64) -> Usage {
    Usage {
        input_tokens: input,
        input_tokens_details: InputTokensDetails {
            cached_tokens: cached,
        },
        output_tokens: output,
        output_tokens_details: OutputTokensDetails {
            reasoning_tokens: reasoning,
        },
        total_tokens: total,
    }
}

#[test]
fn given_a_chat_completion_when_its_usage_is_read_then_prompt_and_completion_map_to_input_and_output(
) {
    let body = json!({"object": "chat.completion", "usage": {
        "prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 20},
    }});

    assert_eq!(usage_of(&body), Some(usage(12, 4, 30, 20, 42)));
}

#[test]
fn given_a_response_when_its_usage_is_read_then_input_and_output_map_directly() {
    let body = json!({"object": "response", "usage": {
        "input_tokens": 9, "output_tokens": 5, "total_tokens": 14,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens_details": {"reasoning_tokens": 1},
    }});

    assert_eq!(usage_of(&body), Some(usage(9, 2, 5, 1, 14)));
}

#[test]
fn given_an_embedding_when_its_usage_is_read_then_there_is_input_only() {
    let body = json!({"object": "list", "usage": {"prompt_tokens": 7, "total_tokens": 7}});

    assert_eq!(usage_of(&body), Some(usage(7, 0, 0, 0, 7)));
}

#[test]
fn given_missing_or_partial_usage_when_read_then_absent_counts_are_zero_or_none() {
    let null_details = json!({"usage": {
        "prompt_tokens": 3, "completion_tokens": 4,
        "prompt_tokens_details": null, "completion_tokens_details": null,
    }});

    assert_eq!(usage_of(&null_details), Some(usage(3, 0, 4, 0, 7)));
    assert_eq!(usage_of(&json!({"results": []})), None);
    assert_eq!(usage_of(&json!({"usage": {}})), None);
    assert_eq!(usage_of(&json!({"usage": null})), None);
}

#[tokio::test]
async fn given_fake_answers_when_their_usage_is_added_up_then_the_batch_total_is_the_sum() {
    let fake = start(FakeConfig::default()).await;
    let upstream = client(&fake);
    let chat = upstream
        .execute(CHAT, &chat("count me"), &fast(1), None)
        .await;
    let embedding = upstream
        .execute(
            "/v1/embeddings",
            &json!({"model": "fake-embed", "input": "cat"}),
            &fast(1),
            None,
        )
        .await;
    let chat = usage_of(body_of(&chat)).expect("chat usage");
    let embedding = usage_of(body_of(&embedding)).expect("embedding usage");

    let mut total = Usage::default();
    total.add(&chat);
    total.add(&embedding);

    assert_eq!(
        total.input_tokens,
        chat.input_tokens + embedding.input_tokens
    );
    assert_eq!(total.output_tokens, chat.output_tokens);
    assert_eq!(
        total.total_tokens,
        chat.total_tokens + embedding.total_tokens
    );
    assert!(total.total_tokens > 0);
}

#[tokio::test]
async fn given_an_upstream_redirect_when_a_line_runs_then_it_is_not_followed() {
    // Where a followed redirect would land: it counts every request it gets.
    let landed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&landed);
    let elsewhere = serve(Router::new().fallback(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { "{}" }
    }))
    .await;
    let target = format!("{elsewhere}/internal");
    let upstream = serve(Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let target = target.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", target)]) }
        }),
    ))
    .await;

    let execution = client_for(upstream, Some("sk-upstream"))
        .execute(CHAT, &chat("hi"), &fast(1), None)
        .await;

    assert!(!execution.outcome.is_success(), "{execution:?}");
    assert_eq!(landed.load(std::sync::atomic::Ordering::SeqCst), 0);
}
