//! One span per request, named by a fresh request id that every log line of
//! the request carries and the answer returns as `x-request-id`, as OpenAI's
//! API does: a user who quotes it lets an operator find the request's logs.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

/// Made here, never taken from the request: a client-chosen id could collide
/// with another request's or forge log lines.
pub fn new_request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

pub async fn with_request_span(request: Request, next: Next) -> Response {
    let request_id = new_request_id();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
