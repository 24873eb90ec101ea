//! The API Lambda's handler: `lambda_http`'s own adapter around the Router,
//! with the adapter's event conversion made safe.
//!
//! `lambda_http` turns an event into a request with `expect`s and `unwrap`s:
//! a body marked `isBase64Encoded` that is not base64 (`aws_lambda_events`'
//! `Body::from_maybe_encoded`), a `host` header that is not a valid host
//! (`build_request_uri`). Each panicked the invocation, which API Gateway answers
//! as a bare 500. API Gateway itself sends neither, so only a hand-made event (a
//! direct invocation) gets here. Found by `fuzz/fuzz_targets/apigw_event.rs`.

use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};

use axum::response::IntoResponse;
use axum::Router;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, LambdaEvent, Service};
use serde::Serialize;
use tower::ServiceExt;

use super::ApiError;
use crate::domain::ValidationError;

/// What the handler returns to the Lambda runtime: the Router's answer as
/// `lambda_http` renders it, or our refusal of an event it cannot read.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer<R> {
    Routed(R),
    Refused(Box<ApiGatewayV2httpResponse>),
}

/// Serves the Router to the Lambda runtime until it stops.
pub async fn run(router: Router) -> Result<(), lambda_http::Error> {
    lambda_http::lambda_runtime::run(lambda_http::service_fn(move |event| {
        answer(router.clone(), event)
    }))
    .await
}

/// Answers one API Gateway event.
pub async fn answer(
    router: Router,
    event: LambdaEvent<LambdaRequest>,
) -> Result<Answer<impl Serialize>, Infallible> {
    let mut adapter = Adapter::from(router);
    adapter.ready().await?;
    // The adapter converts the event synchronously, in `call`; only the
    // conversion can panic there, before the Router has seen anything.
    match catch_unwind(AssertUnwindSafe(|| adapter.call(event))) {
        Ok(routed) => Ok(Answer::Routed(routed.await?)),
        Err(_) => {
            tracing::warn!("refused an API Gateway event that lambda_http cannot convert");
            Ok(Answer::Refused(Box::new(refusal().await)))
        }
    }
}

async fn refusal() -> ApiGatewayV2httpResponse {
    let error = ApiError::Invalid(ValidationError::new(
        "invalid_event",
        None,
        "The event is not a valid HTTP request (its host, path or body encoding).".to_string(),
    ));
    let (parts, body) = error.into_response().into_parts();
    // An in-memory JSON envelope of a few hundred bytes.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(parts.status.as_u16());
    response.headers = parts.headers;
    response.body = Some(lambda_http::Body::Text(
        String::from_utf8_lossy(&bytes).into_owned(),
    ));
    response
}
