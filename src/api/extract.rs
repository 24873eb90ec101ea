//! Extractors whose rejections speak the OpenAI error envelope.

use std::any::Any;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::{ApiError, MAX_BODY_BYTES};
use crate::domain::ValidationError;

/// The raw request body, within the size limit.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(Body)
            .map_err(|rejection: BytesRejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge {
                        limit: MAX_BODY_BYTES,
                    }
                } else {
                    ApiError::Invalid(ValidationError::new(
                        "invalid_body",
                        None,
                        format!("Could not read the request body: {}", rejection.body_text()),
                    ))
                }
            })
    }
}

/// Query parameters; a malformed query string is a 400, not axum's plain-text one.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::Invalid(ValidationError::new(
                    "invalid_query",
                    None,
                    format!("Invalid query string: {}", rejection.body_text()),
                ))
            })
    }
}

/// A panic is a bug, never the client's fault: answer 500 in the envelope and log it.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    let body = super::error::ErrorResponse::new(
        "The server had an error while processing your request.".to_string(),
        "server_error",
        None,
        None,
    );
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}
