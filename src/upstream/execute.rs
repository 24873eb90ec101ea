//! Executing one request line against the upstream: POST it, retry what is
//! transient, and classify what comes back.
//!
//! Per-line work is kept small: the body is serialized once and its bytes are
//! shared by every attempt, the URL is built once, and the happy path touches
//! no retry machinery beyond building backon's schedule.

use std::time::Duration;

use backon::Retryable;
use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::retry::{is_retryable_status, retry_after, RetryPolicy};
use super::UpstreamClient;

/// A non-JSON error body is kept up to this many bytes: enough to diagnose, and
/// an HTML error page from a proxy does not bloat the error file.
const MAX_ERROR_TEXT_BYTES: usize = 4 * 1024;

/// How a request line ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The upstream answered: a 2xx with its JSON body, or a non-2xx that was
    /// final or outlived its retries, with the upstream's error body.
    Response {
        status_code: u16,
        /// The upstream's `x-request-id`, or one made up (`req_…`) without it.
        request_id: String,
        /// Always a JSON object.
        body: Value,
    },
    /// No usable HTTP answer: no connection, a dropped one, a timeout, or a 2xx
    /// whose body is not a JSON object.
    TransportError { code: &'static str, message: String },
}

impl Outcome {
    /// A 2xx answer: the line goes to the output file, anything else to the error file.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Response { status_code, .. } if (200..300).contains(status_code))
    }
}

/// [`Outcome::TransportError`] codes.
pub mod transport_code {
    /// No connection, or it broke before a whole answer came.
    pub const UNREACHABLE: &str = "upstream_unreachable";
    /// No whole answer within the attempt's timeout.
    pub const TIMEOUT: &str = "upstream_timeout";
    /// A 2xx whose body is not a JSON object.
    pub const INVALID_RESPONSE: &str = "invalid_upstream_response";
    /// The request could not even be built (a malformed URL or API key); not retried.
    pub const INVALID_REQUEST: &str = "invalid_upstream_request";
}

/// One line's execution: its outcome and what it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub outcome: Outcome,
    /// Attempts made, `0` only when the deadline had passed before the first.
    pub attempts: u32,
    /// Of the last attempt.
    pub latency: Duration,
    /// From the call to the return, waits included.
    pub total: Duration,
    /// The deadline stopped the retries: the next wait would have ended after
    /// it, or it cut an attempt short. `outcome` is the last attempt's, and the
    /// line should be handed back, not written out.
    pub gave_up_for_deadline: bool,
}

/// What a failed attempt leaves for the retry decision.
struct Failure {
    /// The line's outcome if this attempt is its last.
    outcome: Outcome,
    retryable: bool,
    retry_after: Option<Duration>,
    latency: Duration,
    /// The attempt's timeout was shortened to end at the deadline, and fired.
    cut_by_deadline: bool,
}

impl UpstreamClient {
    /// Executes one request line: `url` is the line's (`/v1/chat/completions`)
    /// and `body` its JSON body.
    ///
    /// 408, 429, 5xx and transport failures are retried under `policy`; other
    /// answers are final. Nothing waits past `deadline`: neither a wait between
    /// attempts nor an attempt itself, whose timeout is shortened to end there.
    /// When the deadline stops the retries, [`Execution::gave_up_for_deadline`]
    /// says so.
    ///
    /// Neither the body nor the API key is ever logged or put in an outcome.
    pub async fn execute(
        &self,
        url: &str,
        body: &Value,
        policy: &RetryPolicy,
        deadline: Option<Instant>,
    ) -> Execution {
        let started = Instant::now();
        if deadline.is_some_and(|deadline| deadline <= started) {
            return Execution {
                outcome: Outcome::TransportError {
                    code: transport_code::TIMEOUT,
                    message: "the deadline passed before the request was sent".to_owned(),
                },
                attempts: 0,
                latency: Duration::ZERO,
                total: Duration::ZERO,
                gave_up_for_deadline: true,
            };
        }
        let target = self.line_url(url);
        let bytes =
            Bytes::from(serde_json::to_vec(body).expect("a serde_json::Value always serializes"));

        let mut attempts = 0u32;
        let mut gave_up_for_deadline = false;
        let result = (|| {
            attempts += 1;
            self.attempt(&target, bytes.clone(), policy.attempt_timeout, deadline)
        })
        .retry(policy.backoff())
        .when(|failure: &Failure| failure.retryable)
        .adjust(|failure, backoff| {
            if failure.cut_by_deadline {
                gave_up_for_deadline = true;
                return None;
            }
            // `None` from backon: the last attempt is spent.
            let wait = policy.wait(failure.retry_after, backoff?);
            if deadline.is_some_and(|deadline| Instant::now() + wait >= deadline) {
                gave_up_for_deadline = true;
                return None;
            }
            Some(wait)
        })
        .notify(|failure, wait| match &failure.outcome {
            Outcome::Response { status_code, .. } => {
                tracing::debug!(status_code, ?wait, "upstream answer retried");
            }
            Outcome::TransportError { code, .. } => {
                tracing::debug!(code, ?wait, "upstream transport failure retried");
            }
        })
        .await;

        let (outcome, latency) = match result {
            Ok(success) => success,
            Err(failure) => (failure.outcome, failure.latency),
        };
        Execution {
            outcome,
            attempts,
            latency,
            total: started.elapsed(),
            gave_up_for_deadline,
        }
    }

    /// The line's URL on the upstream: the base URL already ends in `/v1`.
    fn line_url(&self, url: &str) -> String {
        let path = match url.strip_prefix("/v1") {
            Some(rest) if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') => rest,
            _ => url,
        };
        format!("{}{path}", self.base_url)
    }

    /// One POST. `Ok` is a 2xx with a JSON object; everything else is a
    /// [`Failure`], retryable or not.
    async fn attempt(
        &self,
        url: &str,
        body: Bytes,
        attempt_timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<(Outcome, Duration), Failure> {
        let started = Instant::now();
        let left = deadline.map(|deadline| deadline.saturating_duration_since(started));
        let (timeout, shortened) = match left {
            Some(left) if left < attempt_timeout => (left, true),
            _ => (attempt_timeout, false),
        };
        let transport = |error: reqwest::Error| {
            let latency = started.elapsed();
            let cut_by_deadline = shortened && error.is_timeout();
            Failure {
                outcome: transport_outcome(&error, timeout),
                retryable: !error.is_builder(),
                retry_after: None,
                latency,
                cut_by_deadline,
            }
        };

        let response = self
            .authorize(self.http.post(url))
            .header(CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let request_id = request_id(response.headers());
        let asked_wait = if status.is_success() {
            None
        } else {
            retry_after(response.headers())
        };
        let bytes = response.bytes().await.map_err(transport)?;
        let latency = started.elapsed();

        if status.is_success() {
            return match serde_json::from_slice::<Value>(&bytes) {
                Ok(body @ Value::Object(_)) => Ok((
                    Outcome::Response {
                        status_code: status.as_u16(),
                        request_id,
                        body,
                    },
                    latency,
                )),
                // A cut-off or garbled body may come whole next time.
                _ => Err(Failure {
                    outcome: Outcome::TransportError {
                        code: transport_code::INVALID_RESPONSE,
                        message: format!(
                            "the upstream answered {} with a body that is not a JSON object",
                            status.as_u16()
                        ),
                    },
                    retryable: true,
                    retry_after: None,
                    latency,
                    cut_by_deadline: false,
                }),
            };
        }
        Err(Failure {
            outcome: Outcome::Response {
                status_code: status.as_u16(),
                request_id,
                body: error_body(status, &bytes),
            },
            retryable: is_retryable_status(status),
            retry_after: asked_wait,
            latency,
            cut_by_deadline: false,
        })
    }
}

fn request_id(headers: &HeaderMap) -> String {
    match headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
    {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("req_{}", uuid::Uuid::new_v4().simple()),
    }
}

/// The upstream's error body when it is a JSON object, as OpenAI-compatible
/// servers send; anything else (a proxy's HTML page, plain text, nothing) is
/// wrapped in OpenAI's error envelope, so the error file's `body` is always one.
fn error_body(status: StatusCode, bytes: &[u8]) -> Value {
    if let Ok(body @ Value::Object(_)) = serde_json::from_slice::<Value>(bytes) {
        return body;
    }
    let text = String::from_utf8_lossy(truncate(bytes, MAX_ERROR_TEXT_BYTES));
    let text = text.trim();
    let message = if text.is_empty() {
        format!("the upstream answered {status} with no body")
    } else {
        text.to_owned()
    };
    json!({"error": {
        "message": message,
        "type": "upstream_error",
        "param": null,
        "code": null,
    }})
}

/// At most `max` bytes, not splitting a UTF-8 character (a torn one at the
/// end would only become U+FFFD).
fn truncate(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    // Back off over continuation bytes (0b10xx_xxxx) to a character start.
    while end > 0 && bytes[end] & 0b1100_0000 == 0b1000_0000 {
        end -= 1;
    }
    &bytes[..end]
}

/// A transport failure in words that hold no URL, body or key: reqwest's own
/// message names the URL, so only the innermost cause is kept (e.g.
/// "Connection refused (os error 111)").
fn transport_outcome(error: &reqwest::Error, timeout: Duration) -> Outcome {
    if error.is_timeout() {
        return Outcome::TransportError {
            code: transport_code::TIMEOUT,
            message: format!(
                "the upstream did not answer within {:.3} s",
                timeout.as_secs_f64()
            ),
        };
    }
    let (code, what) = if error.is_builder() {
        (
            transport_code::INVALID_REQUEST,
            "the upstream request could not be built",
        )
    } else if error.is_connect() {
        (
            transport_code::UNREACHABLE,
            "could not connect to the upstream",
        )
    } else {
        (
            transport_code::UNREACHABLE,
            "the connection to the upstream failed",
        )
    };
    // Without an inner cause, reqwest's message is all there is, and it holds the URL.
    let message = match std::error::Error::source(error) {
        Some(mut cause) => {
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            format!("{what}: {cause}")
        }
        None => what.to_owned(),
    };
    Outcome::TransportError { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        let text = "é".repeat(3000); // 6000 bytes
        let cut = truncate(text.as_bytes(), MAX_ERROR_TEXT_BYTES);
        assert_eq!(cut.len(), MAX_ERROR_TEXT_BYTES);
        assert!(std::str::from_utf8(cut).is_ok());
        let odd = format!("a{text}");
        let cut = truncate(odd.as_bytes(), MAX_ERROR_TEXT_BYTES);
        assert_eq!(cut.len(), MAX_ERROR_TEXT_BYTES - 1);
        assert!(std::str::from_utf8(cut).is_ok());
    }

    #[test]
    fn a_non_json_error_body_is_wrapped_in_the_openai_envelope() {
        let html = error_body(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        let empty = error_body(StatusCode::BAD_GATEWAY, b"");
        let array = error_body(StatusCode::BAD_REQUEST, b"[1]");
        let object = error_body(StatusCode::BAD_REQUEST, br#"{"error":{"message":"x"}}"#);

        assert_eq!(html["error"]["message"], "<html>bad gateway</html>");
        assert_eq!(html["error"]["type"], "upstream_error");
        assert_eq!(
            empty["error"]["message"],
            "the upstream answered 502 Bad Gateway with no body"
        );
        assert_eq!(array["error"]["message"], "[1]");
        assert_eq!(object, json!({"error": {"message": "x"}}));
    }
}
