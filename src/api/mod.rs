//! The axum `Router`: one for Lambda (`lambda_http::run`) and the local server.

pub mod auth;
pub mod batches;
pub mod error;
pub mod extract;
pub mod files;
pub mod ingest;
pub mod uploads;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use tower_http::catch_panic::CatchPanicLayer;

pub use auth::Authenticator;
pub use error::ApiError;

use crate::clock::Clock;
use crate::config::DEFAULT_INLINE_CONTENT_MAX_BYTES;
use crate::domain::batch_file::BatchFileLimits;
use crate::files::BlobStore;
use crate::queue::WorkQueue;
use crate::store::files::FileStore;
use crate::store::BatchStore;

/// Everything a handler needs, built once at start-up.
#[derive(Clone)]
pub struct AppState {
    pub batches: Arc<dyn BatchStore>,
    pub files: Arc<dyn FileStore>,
    pub blobs: Arc<dyn BlobStore>,
    /// Where the API announces new work, when nothing else does. In AWS this is
    /// `None`: the table's stream announces every change, so a create is one
    /// write and a crash after it loses nothing.
    pub work: Option<Arc<dyn WorkQueue>>,
    pub clock: Arc<dyn Clock>,
    pub auth: Arc<Authenticator>,
    /// How long a batch record, and with it its idempotency key, is kept.
    pub retention_secs: i64,
    pub file_settings: FileSettings,
}

/// How the file endpoints treat content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSettings {
    /// Content up to this size is answered inline; larger content is a
    /// redirect to a presigned URL when the blob store can make one.
    pub inline_content_max_bytes: u64,
    /// The limits a `purpose=batch` file is checked against (OpenAI's; tests lower them).
    pub batch_file_limits: BatchFileLimits,
}

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            inline_content_max_bytes: DEFAULT_INLINE_CONTENT_MAX_BYTES,
            batch_file_limits: BatchFileLimits::OPENAI,
        }
    }
}

/// A create body is at most ~10 KB (16 metadata pairs of 64 + 512 characters);
/// anything far beyond is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/batches", post(batches::create).get(batches::list))
        .route("/v1/batches/{batch_id}", get(batches::retrieve))
        .route("/v1/batches/{batch_id}/cancel", post(batches::cancel))
        // Uploads stream through their own, larger body limits; every other
        // route keeps the 64 KiB one.
        .route(
            "/v1/files",
            post(files::create)
                .layer(DefaultBodyLimit::max(files::MAX_UPLOAD_BODY_BYTES))
                .get(files::list),
        )
        .route(
            "/v1/files/{file_id}",
            get(files::retrieve).delete(files::delete),
        )
        .route("/v1/files/{file_id}/content", get(files::content))
        .route("/v1/uploads", post(uploads::create))
        .route(
            "/v1/uploads/{upload_id}/parts",
            post(uploads::add_part).layer(DefaultBodyLimit::max(uploads::MAX_PART_BODY_BYTES)),
        )
        .route("/v1/uploads/{upload_id}/complete", post(uploads::complete))
        .route("/v1/uploads/{upload_id}/cancel", post(uploads::cancel))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .merge(api)
        .route("/health", get(health))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(extract::panic_response))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::UnknownRoute {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}
