//! The Lambda request path: an API Gateway (HTTP API v2) event, as the API
//! Lambda receives it, through its real handler (`api::lambda::answer`:
//! `lambda_http`'s adapter and the Router).
//!
//! Input: the event's JSON text.
//!
//! Properties: nothing panics, and whatever the event, the answer is never a
//! 5xx and every rejection is a 4xx in the OpenAI envelope.

#![no_main]

use axum::http::Method;
use bytes::Bytes;
use lambda_batches::api::lambda::answer;
use lambda_batches_fuzz::{check_answer, runtime, Answer, App};
use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    tolerate_conversion_panics();
    // What the Lambda runtime cannot deserialize never reaches our code: the
    // runtime reports it as an invocation error.
    let Ok(payload) = serde_json::from_slice::<LambdaRequest>(data) else {
        return;
    };
    // A HEAD answer has no body (axum drops it), so only its status can be checked.
    let head = matches!(&payload, LambdaRequest::ApiGatewayV2(r) if r.request_context.http.method == Method::HEAD);
    let event = LambdaEvent::new(payload, Context::default());
    let response = runtime().block_on(async {
        let app = App::fresh();
        let answer = answer(app.router.clone(), event).await.expect("infallible");
        serde_json::to_value(answer).expect("a Lambda response")
    });

    let status = response["statusCode"].as_u64().expect("a status code");
    let body = match (&response["body"], response["isBase64Encoded"].as_bool()) {
        (Value::String(text), Some(true)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64 as marked")
        }
        (Value::String(text), _) => text.clone().into_bytes(),
        _ => Vec::new(),
    };
    if head {
        assert!(status < 500, "HEAD answered {status}");
        return;
    }
    check_answer(
        "the event",
        &Answer {
            status: u16::try_from(status)
                .ok()
                .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                .expect("a valid status"),
            headers: Default::default(),
            body: Bytes::from(body),
        },
    );
});

/// libFuzzer's panic hook aborts on every panic, even a caught one. The handler
/// catches the panics of `lambda_http`'s event conversion and answers 400 (which
/// the target checks); any other panic still aborts, and so does one that
/// escapes the handler (libfuzzer-sys aborts on an unwinding target).
fn tolerate_conversion_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map_or("", |l| l.file());
            if !(file.contains("/lambda_http-") || file.contains("/aws_lambda_events-")) {
                fuzzer_hook(info);
            }
        }));
    });
}
