//! Reading `multipart/form-data` bodies: the extractor, its errors, and small
//! text fields. The bytes of a file field go to `usecase::ingest`.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{FromRequest, Multipart, Request};
use futures_util::Stream;

use super::ApiError;
use crate::domain::ValidationError;

/// A `multipart/form-data` body, read as a stream within the route's body limit.
///
/// It is axum's `Multipart` with one fix underneath: multer 3.1 fails a valid
/// form with "incomplete multipart stream" when, while it looks for the first
/// boundary, one read delivers the rest of the body *and* its end (rwf2/multer
/// PR #70, a spurious failure under load, and every time for a small body that
/// arrives a moment after the headers). Reporting the end of the body one poll
/// after its last bytes means multer never sees both at once.
pub struct FormData(pub Multipart);

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let request = request.map(|body| Body::from_stream(LateEnd::new(body.into_data_stream())));
        Multipart::from_request(request, state)
            .await
            .map(FormData)
            .map_err(multipart_rejection)
    }
}

/// A stream whose end is reported one poll after its inner stream ended.
struct LateEnd<S> {
    inner: S,
    inner_done: bool,
    done: bool,
}

impl<S> LateEnd<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            inner_done: false,
            done: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for LateEnd<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.inner_done {
            self.done = true;
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(None) => {
                self.inner_done = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }
}

/// A request that is not `multipart/form-data` (or lacks its boundary).
pub fn multipart_rejection(rejection: MultipartRejection) -> ApiError {
    ApiError::Invalid(ValidationError::new(
        "invalid_body",
        None,
        format!(
            "Expected a multipart/form-data body: {}",
            rejection.body_text()
        ),
    ))
}

/// A form that broke off, was malformed, or outgrew the route's body limit.
pub fn multipart_error(error: MultipartError, limit: usize) -> ApiError {
    if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::Invalid(ValidationError::new(
            "invalid_body",
            None,
            format!("Could not read the multipart body: {}", error.body_text()),
        ))
    }
}

/// Reads a small text field of a form.
pub async fn text_field(
    mut field: Field<'_>,
    name: &str,
    limit: usize,
    body_limit: usize,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| multipart_error(e, body_limit))?
    {
        if bytes.len() + chunk.len() > limit {
            return Err(ValidationError::invalid_value(
                name,
                format!("Invalid '{name}': longer than {limit} bytes."),
            )
            .into());
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| {
        ValidationError::invalid_value(name, format!("Invalid '{name}': not UTF-8 text.")).into()
    })
}

/// Reads (and discards) the rest of a form, so the client has sent its whole
/// request before it reads our answer: answering early can make HTTP/1.1
/// clients see a reset connection instead of the error.
pub async fn drain(multipart: &mut Multipart) {
    while let Ok(Some(field)) = multipart.next_field().await {
        drop(field);
    }
}
