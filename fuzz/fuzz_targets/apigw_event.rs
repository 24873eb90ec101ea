//! The Lambda request path: an API Gateway (HTTP API v2) event, as the API
//! Lambda receives it, parsed by `lambda_http` and answered by the Router.
//!
//! Input: the event's JSON text.
//!
//! Properties: parsing never panics, and whatever request it yields, the
//! Router never answers 5xx and answers every rejection in the OpenAI envelope.

#![no_main]

use lambda_batches_fuzz::{runtime, App};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // An event lambda_http cannot read never reaches our code: the runtime
    // answers it.
    let Ok(request) = lambda_http::request::from_str(text) else {
        return;
    };
    let (parts, body) = request.into_parts();
    let request = axum::http::Request::from_parts(parts, axum::body::Body::new(body));
    runtime().block_on(async {
        App::fresh().send(request).await;
    });
});
