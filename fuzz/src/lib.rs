//! What the Router targets share: one single-threaded runtime, a fresh app per
//! input (so a crash replays alone, whatever ran before it), and the property
//! every answer must have.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use lambda_batches::api::{self, AppState, Authenticator, FileSettings};
use lambda_batches::clock::ManualClock;
use lambda_batches::config::AuthConfig;
use lambda_batches::files::local::LocalBlobStore;
use lambda_batches::store::embedded::EmbeddedStore;
use serde_json::Value;
use tower::ServiceExt;

/// 2026-01-01T00:00:00Z, as in the integration tests.
const START_MS: i64 = 1_767_225_600_000;

/// Built once: a runtime per input would dominate the time of an execution.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

/// The real Router on an in-memory embedded store and a blob directory that
/// lives as long as the app.
pub struct App {
    pub router: Router,
    _blobs: tempfile::TempDir,
}

impl App {
    pub fn fresh() -> Self {
        let blob_dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(EmbeddedStore::in_memory().expect("in-memory store"));
        let blobs = Arc::new(LocalBlobStore::open_dir(blob_dir.path()).expect("blob dir"));
        let router = api::router(AppState {
            batches: store.clone(),
            files: store.clone(),
            blobs,
            work: None,
            clock: Arc::new(ManualClock::starting_at_ms(START_MS)),
            auth: Arc::new(Authenticator::new(&AuthConfig::Open, store)),
            retention_secs: 30 * 86_400,
            file_settings: FileSettings::default(),
            max_in_flight_requests: lambda_batches::config::DEFAULT_MAX_IN_FLIGHT_REQUESTS,
        });
        Self {
            router,
            _blobs: blob_dir,
        }
    }

    /// Sends `request` and checks the answer with [`check_answer`].
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let what = format!("{} {}", request.method(), request.uri());
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the Router is infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("an in-memory body").to_bytes();
        let answer = Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        check_answer(&what, &answer);
        answer
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What the API promises for any input: never a 5xx (a panic is caught and
/// answered 500, so it fails here too), and every rejection a 4xx in the
/// OpenAI error envelope.
pub fn check_answer(what: &str, answer: &Answer) {
    let body = String::from_utf8_lossy(&answer.body);
    assert!(
        !answer.status.is_server_error(),
        "{what} answered {}: {body}",
        answer.status
    );
    if answer.status.is_client_error() {
        let json: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
            panic!(
                "{what}: {} with a non-JSON body ({e}): {body}",
                answer.status
            )
        });
        let error = &json["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: no error.message in {body}"
        );
        for field in ["type", "param", "code"] {
            assert!(
                error.get(field).is_some(),
                "{what}: the error envelope lacks {field}: {body}"
            );
        }
        assert!(error["type"].is_string(), "{what}: error.type: {body}");
    }
}

/// Splits `bytes` into a body that arrives `chunk` bytes at a time, as over a
/// socket, so parsers see every split point.
pub fn chunked_body(bytes: Vec<u8>, chunk: usize) -> Body {
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures_util::stream::iter(chunks))
}
