//! The fake OpenAI-compatible upstream (`examples/fake_upstream.rs`), over real
//! HTTP on loopback. Including it here also proves that test crates can run it
//! in-process.

#[path = "../examples/fake_upstream.rs"]
mod fake_upstream;

use std::time::{Duration, Instant};

use fake_upstream::{parse_args, start, FakeConfig, FakeHandle};
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    // A proxy from the environment must not stand between the test and loopback.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build the HTTP client")
}

/// Posts `body` to `path` under the base URL; the status, `x-request-id` and body.
async fn post(fake: &FakeHandle, path: &str, body: &Value) -> (u16, String, Value) {
    let response = client()
        .post(format!("{}{path}", fake.base_url()))
        .json(body)
        .send()
        .await
        .expect("an answer");
    answer(response).await
}

async fn answer(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .expect("every answer has an x-request-id")
        .to_str()
        .expect("an ASCII request id")
        .to_owned();
    let body = response.json().await.expect("a JSON body");
    (status, request_id, body)
}

fn assert_error_envelope(body: &Value, kind: &str, code: Value) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(error["type"], kind, "{body}");
    assert!(error.get("param").is_some(), "{body}");
    assert_eq!(error["code"], code, "{body}");
}

fn chat(content: &str) -> Value {
    json!({"model": "fake-model", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": content},
    ]})
}

#[tokio::test]
async fn given_configured_models_when_listed_then_each_is_an_openai_model() {
    let fake = start(FakeConfig {
        models: vec!["a".into(), "b".into()],
        ..FakeConfig::default()
    })
    .await;

    let response = client()
        .get(format!("{}/models", fake.base_url()))
        .send()
        .await
        .unwrap();
    let (status, _, body) = answer(response).await;

    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"object": "list", "data": [
            {"id": "a", "object": "model", "created": 0, "owned_by": "fake"},
            {"id": "b", "object": "model", "created": 0, "owned_by": "fake"},
        ]})
    );
}

#[tokio::test]
async fn given_a_chat_request_when_completed_then_it_echoes_the_last_user_message() {
    let fake = start(FakeConfig::default()).await;
    let request = chat("line 7");

    let (status, _, body) = post(&fake, "/chat/completions", &request).await;
    let (_, _, again) = post(&fake, "/chat/completions", &request).await;

    assert_eq!(status, 200);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "fake-model");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "echo: line 7");
    assert_eq!(choice["finish_reason"], "stop");
    // "be brief" + "line 7" = 14 bytes, "echo: line 7" = 12 bytes, 4 bytes a token.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7})
    );
    assert_eq!(again, body, "the same request gets the same answer");
}

#[tokio::test]
async fn given_content_parts_and_n_when_completed_then_n_choices_echo_the_text_parts() {
    let fake = start(FakeConfig::default()).await;
    let request = json!({"model": "fake-model", "n": 2, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "first"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]});

    let (status, _, body) = post(&fake, "/chat/completions", &request).await;

    assert_eq!(status, 200);
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(choices[1]["message"]["content"], "echo: a b");
}

#[tokio::test]
async fn given_prompts_when_completed_then_each_prompt_gets_a_choice() {
    let fake = start(FakeConfig::default()).await;

    let (status, _, single) = post(
        &fake,
        "/completions",
        &json!({"model": "fake-model", "prompt": "hello"}),
    )
    .await;
    let (_, _, several) = post(
        &fake,
        "/completions",
        &json!({"model": "fake-model", "prompt": ["one", "two"]}),
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(single["object"], "text_completion");
    assert_eq!(single["model"], "fake-model");
    assert!(single["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(single["choices"][0]["text"], "echo: hello");
    assert_eq!(single["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        single["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})
    );
    let texts: Vec<&str> = several["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|choice| choice["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["echo: one", "echo: two"]);
}

#[tokio::test]
async fn given_inputs_when_embedded_then_each_gets_a_deterministic_unit_vector() {
    let fake = start(FakeConfig::default()).await;

    let (status, _, body) = post(
        &fake,
        "/embeddings",
        &json!({"model": "fake-embed", "input": ["cat", "dog"]}),
    )
    .await;
    let (_, _, sized) = post(
        &fake,
        "/embeddings",
        &json!({"model": "fake-embed", "input": "cat", "dimensions": 3}),
    )
    .await;
    let (_, _, encoded) = post(
        &fake,
        "/embeddings",
        &json!({"model": "fake-embed", "input": "cat", "encoding_format": "base64"}),
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "fake-embed");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 2, "total_tokens": 2})
    );
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    let cat: Vec<f64> = serde_json::from_value(data[0]["embedding"].clone()).unwrap();
    assert_eq!(cat.len(), fake_upstream::DEFAULT_EMBEDDING_DIMENSIONS);
    let norm: f64 = cat.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "a unit vector, not {norm}");
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(sized["data"][0]["embedding"].as_array().unwrap().len(), 3);
    // base64 of the little-endian f32s: 8 floats, 32 bytes, 44 characters.
    let base64 = encoded["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(base64.len(), 44);
    assert!(base64.ends_with('='));
}

#[tokio::test]
async fn given_a_responses_request_when_answered_then_output_text_echoes_the_input() {
    let fake = start(FakeConfig::default()).await;

    let (status, _, body) = post(
        &fake,
        "/responses",
        &json!({"model": "fake-model", "instructions": "be brief", "input": "line 3"}),
    )
    .await;
    let (_, _, from_items) = post(
        &fake,
        "/responses",
        &json!({"model": "fake-model", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "item"}]},
        ]}),
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], "fake-model");
    assert!(body["id"].as_str().unwrap().starts_with("resp_"));
    let message = &body["output"][0];
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"][0]["type"], "output_text");
    assert_eq!(message["content"][0]["text"], "echo: line 3");
    let usage = &body["usage"];
    assert_eq!(usage["input_tokens"], 4);
    assert_eq!(usage["output_tokens"], 3);
    assert_eq!(usage["total_tokens"], 7);
    assert_eq!(from_items["output"][0]["content"][0]["text"], "echo: item");
}

#[tokio::test]
async fn given_inputs_when_moderated_then_only_the_marked_one_is_flagged() {
    let fake = start(FakeConfig::default()).await;

    let (status, _, body) = post(
        &fake,
        "/moderations",
        &json!({"input": ["fine", "please flag-me"]}),
    )
    .await;

    assert_eq!(status, 200);
    assert!(body["id"].as_str().unwrap().starts_with("modr-"));
    assert_eq!(
        body["model"], "fake-model",
        "the first model stands in for the default"
    );
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["flagged"], false);
    assert_eq!(results[0]["categories"]["violence"], false);
    assert_eq!(results[1]["flagged"], true);
    assert_eq!(results[1]["categories"]["violence"], true);
    assert!(results[1]["category_scores"]["violence"].as_f64().unwrap() > 0.5);
}

#[tokio::test]
async fn given_bad_requests_when_sent_then_openai_error_envelopes_come_back() {
    let fake = start(FakeConfig::default()).await;

    let (unknown, _, unknown_body) = post(
        &fake,
        "/chat/completions",
        &json!({"model": "gpt-nope", "messages": []}),
    )
    .await;
    let malformed = client()
        .post(format!("{}/chat/completions", fake.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (malformed, _, malformed_body) = answer(malformed).await;
    let (no_model, _, no_model_body) = post(&fake, "/embeddings", &json!({"input": "x"})).await;
    let (no_messages, _, no_messages_body) =
        post(&fake, "/chat/completions", &json!({"model": "fake-model"})).await;
    let (no_route, _, no_route_body) = post(&fake, "/engines", &json!({})).await;

    assert_eq!(unknown, 404);
    assert_error_envelope(
        &unknown_body,
        "invalid_request_error",
        json!("model_not_found"),
    );
    assert!(unknown_body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gpt-nope"));
    assert_eq!(malformed, 400);
    assert_error_envelope(&malformed_body, "invalid_request_error", Value::Null);
    assert_eq!(no_model, 400);
    assert_eq!(no_model_body["error"]["param"], "model");
    assert_eq!(no_messages, 400);
    assert_eq!(no_messages_body["error"]["param"], "messages");
    assert_eq!(no_route, 404);
    assert_error_envelope(&no_route_body, "invalid_request_error", Value::Null);
}

#[tokio::test]
async fn given_fail_with_when_sent_then_the_fake_fails_as_asked() {
    let fake = start(FakeConfig::default()).await;
    let failing = |directive: Value| {
        let mut request = chat("doomed");
        request["fail_with"] = directive;
        request
    };

    let (bad, _, bad_body) = post(&fake, "/chat/completions", &failing(json!(400))).await;
    let (unavailable, _, unavailable_body) =
        post(&fake, "/chat/completions", &failing(json!(503))).await;
    let limited = client()
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&failing(json!("429")))
        .send()
        .await
        .unwrap();
    let retry_after = limited.headers().get("retry-after").cloned();
    let (limited, _, _) = answer(limited).await;
    let (nonsense, _, nonsense_body) =
        post(&fake, "/chat/completions", &failing(json!("teapot"))).await;
    let dropped = client()
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&failing(json!("drop")))
        .send()
        .await;

    assert_eq!(bad, 400);
    assert_error_envelope(&bad_body, "invalid_request_error", json!("fail_with"));
    assert_eq!(unavailable, 503);
    assert_error_envelope(&unavailable_body, "server_error", Value::Null);
    assert_eq!(limited, 429);
    assert_eq!(retry_after.unwrap(), "0");
    assert_eq!(nonsense, 400);
    assert_eq!(nonsense_body["error"]["param"], "fail_with");
    let dropped = dropped.expect_err("a dropped connection is no answer");
    assert!(!dropped.is_status() && !dropped.is_timeout(), "{dropped:?}");
    let stats = fake.stats();
    assert_eq!(stats.dropped, 1);
    assert_eq!(stats.requests, 5);
    assert_eq!(
        stats.by_status.values().sum::<u64>(),
        4,
        "no status for the drop"
    );
}

#[tokio::test]
async fn given_fail_first_when_a_request_is_retried_then_it_succeeds_on_attempt_n_plus_one() {
    let fake = start(FakeConfig {
        fail_first: 2,
        ..FakeConfig::default()
    })
    .await;
    let request = chat("retry me");

    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _, body) = post(&fake, "/chat/completions", &request).await;
        if status == 500 {
            assert_error_envelope(&body, "server_error", Value::Null);
        }
        statuses.push(status);
    }
    let (other, _, _) = post(&fake, "/chat/completions", &chat("another line")).await;

    assert_eq!(statuses, [500, 500, 200, 200]);
    assert_eq!(other, 500, "each distinct body has its own first attempts");
    let stats = fake.stats();
    let sent = serde_json::to_vec(&request).unwrap();
    assert_eq!(stats.attempts_of("/v1/chat/completions", &sent), 4);
    assert_eq!(stats.attempts.len(), 2);
}

#[tokio::test]
async fn given_rates_and_a_seed_when_1000_requests_are_sent_in_order_then_the_counts_are_exact() {
    let config = FakeConfig {
        rate_429: 0.1,
        rate_500: 0.1,
        rate_drop: 0.1,
        seed: 1,
        retry_after: Duration::from_millis(1500),
        ..FakeConfig::default()
    };
    let fake = start(config).await;
    let http = client();
    let url = format!("{}/chat/completions", fake.base_url());

    let mut transport_errors = 0;
    for line in 0..1000 {
        let response = http
            .post(&url)
            .json(&chat(&format!("line {line}")))
            .send()
            .await;
        match response {
            Ok(response) => {
                if response.status() == 429 {
                    assert_eq!(response.headers()["retry-after"], "2");
                    assert_eq!(response.headers()["retry-after-ms"], "1500");
                }
                let _ = response.bytes().await;
            }
            Err(_) => transport_errors += 1,
        }
    }

    let stats = fake.stats();
    // Exact, because one seeded draw per request, in arrival order, decides its
    // fate; and each close to the configured 10%.
    assert_eq!(stats.requests, 1000);
    assert_eq!(stats.status(429), 112);
    assert_eq!((stats.status(500), stats.status(503)), (57, 47));
    assert_eq!(stats.dropped, 105);
    assert_eq!(stats.status(200), 679);
    assert_eq!(transport_errors, stats.dropped);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn given_latency_when_requests_are_answered_then_none_comes_sooner() {
    let latency = Duration::from_millis(120);
    let fake = start(FakeConfig {
        latency,
        latency_jitter: Duration::from_millis(30),
        ..FakeConfig::default()
    })
    .await;

    let started = Instant::now();
    let (status, _, _) = post(&fake, "/chat/completions", &chat("slow")).await;
    let elapsed = started.elapsed();

    assert_eq!(status, 200);
    assert!(elapsed >= latency, "answered after {elapsed:?}");
}

#[tokio::test]
async fn given_concurrent_and_mixed_requests_when_served_then_the_stats_add_up() {
    let fake = start(FakeConfig {
        latency: Duration::from_millis(500),
        ..FakeConfig::default()
    })
    .await;

    let concurrent = (0..8).map(|line| {
        let fake = &fake;
        async move { post(fake, "/chat/completions", &chat(&format!("line {line}"))).await }
    });
    let answers = futures::future::join_all(concurrent).await;
    let (_, _, _) = post(
        &fake,
        "/embeddings",
        &json!({"model": "fake-embed", "input": "x"}),
    )
    .await;
    let (_, first_id, _) = post(&fake, "/chat/completions", &json!({"model": "nope"})).await;
    let (_, second_id, _) = post(&fake, "/chat/completions", &json!({"model": "nope"})).await;

    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    assert_ne!(first_id, second_id, "each answer has its own request id");
    let stats = fake.stats();
    assert_eq!(stats.requests, 11);
    assert_eq!(stats.endpoint("/v1/chat/completions"), 10);
    assert_eq!(stats.endpoint("/v1/embeddings"), 1);
    assert_eq!(stats.status(200), 9);
    assert_eq!(stats.status(404), 2);
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.max_in_flight, 8, "the 8 slow requests overlapped");
    assert_eq!(stats.in_flight, 0);
    assert_eq!(
        stats.attempts.len(),
        10,
        "8 lines, 1 embedding, 1 repeated bad request"
    );
}

#[tokio::test]
async fn given_a_running_fake_when_shut_down_then_it_refuses_connections() {
    let fake = start(FakeConfig::default()).await;
    let base_url = fake.base_url();

    fake.shutdown().await;

    let refused = client().get(format!("{base_url}/models")).send().await;
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn given_cli_flags_when_parsed_then_they_fill_the_config() {
    let cli = parse_args(&[
        "--port",
        "0",
        "--latency-ms",
        "5",
        "--rate-429=0.1",
        "--rate-500",
        "0.2",
        "--rate-drop",
        "0.05",
        "--seed",
        "7",
        "--fail-first",
        "3",
        "--retry-after-ms",
        "250",
        "--models",
        "a,b",
    ])
    .unwrap()
    .expect("not a request for help");

    assert_eq!(cli.port, 0);
    assert_eq!(cli.config.latency, Duration::from_millis(5));
    assert_eq!(cli.config.rate_429, 0.1);
    assert_eq!(cli.config.rate_500, 0.2);
    assert_eq!(cli.config.rate_drop, 0.05);
    assert_eq!(cli.config.seed, 7);
    assert_eq!(cli.config.fail_first, 3);
    assert_eq!(cli.config.retry_after, Duration::from_millis(250));
    assert_eq!(cli.config.models, ["a", "b"]);
    assert!(parse_args(&["--help"]).unwrap().is_none());
    assert!(parse_args(&["--rate-429", "0.6", "--rate-500", "0.6"]).is_err());
    assert!(parse_args(&["--seed"]).is_err());
    assert!(parse_args(&["--colour", "red"]).is_err());
}
