//! The axum `Router`: one for Lambda (`lambda::run`) and the local server.

pub mod auth;
pub mod batches;
pub mod error;
pub mod extract;
pub mod files;
pub mod ingest;
pub mod lambda;
pub mod openapi;
pub mod request_id;
pub mod uploads;

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::{middleware, BoxError, Json, Router};
use serde::Serialize;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use auth::Authenticator;
pub use error::ApiError;

use crate::clock::Clock;
use crate::config::DEFAULT_INLINE_CONTENT_MAX_BYTES;
use crate::domain::batch_file::BatchFileLimits;
use crate::files::BlobStore;
use crate::queue::WorkQueue;
use crate::store::files::FileStore;
use crate::store::BatchStore;
use crate::usecase::batches::Batches;
use crate::usecase::files::Files;

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
    /// API requests handled at once; the excess is shed with a 503, not queued.
    pub max_in_flight_requests: usize,
}

impl AppState {
    pub fn file_use_cases(&self) -> Files<'_> {
        Files {
            files: self.files.as_ref(),
            blobs: self.blobs.as_ref(),
            clock: self.clock.as_ref(),
            retention_secs: self.retention_secs,
            batch_file_limits: self.file_settings.batch_file_limits,
        }
    }

    pub fn batch_use_cases(&self) -> Batches<'_> {
        Batches {
            store: self.batches.as_ref(),
            work: self.work.as_deref(),
            clock: self.clock.as_ref(),
            retention_secs: self.retention_secs,
        }
    }
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

/// The body limit of every JSON route (`POST /v1/batches`, `POST /v1/uploads`,
/// `POST /v1/uploads/{id}/complete`). A create body is at most ~10 KB (16
/// metadata pairs of 64 + 512 characters) and a `complete` with 1,000 part ids
/// ~40 KB: anything far beyond is a mistake or an attack. Routes without a
/// body (GET, DELETE, the cancels) never read one.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a shed client should wait before trying again.
pub const OVERLOADED_RETRY_AFTER_SECS: u64 = 1;

/// Every `/v1` route, each declared once with its OpenAPI operation (the
/// `#[utoipa::path]` on its handler): the Router and `/openapi.json` are both
/// made from this list. Authentication is layered on by `router`.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(batches::create, batches::list))
        .routes(routes!(batches::retrieve))
        .routes(routes!(batches::cancel))
        // Uploads stream through their own, larger body limits; every other
        // route keeps the 64 KiB one.
        .routes(routes!(files::create).layer(DefaultBodyLimit::max(files::MAX_UPLOAD_BODY_BYTES)))
        .routes(routes!(files::list))
        .routes(routes!(files::retrieve, files::delete))
        .routes(routes!(files::content))
        .routes(routes!(uploads::create))
        .routes(
            routes!(uploads::add_part).layer(DefaultBodyLimit::max(uploads::MAX_PART_BODY_BYTES)),
        )
        .routes(routes!(uploads::complete))
        .routes(routes!(uploads::cancel))
}

/// Routes without authentication: liveness, and the contract itself.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(openapi::serve))
}

/// The OpenAPI 3.1 document of every route `router` serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api_routes())
        .merge(public_routes())
        .into_openapi();
    openapi::GuardedAnswers.modify(&mut document);
    document
}

/// The routes and their body limits (docs/limits.md): JSON routes take
/// `MAX_BODY_BYTES` from the default layer; the two that stream bytes have
/// their own. Every `/v1` route shares one cap on requests in flight, and a
/// request over it is answered 503 at once rather than queued: queueing would
/// only turn overload into timeouts.
pub fn router(state: AppState) -> Router {
    let shed_excess = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(shed_response))
        .layer(LoadShedLayer::new())
        // Global: `route_layer` layers each route on its own, and the cap is
        // for all of them together.
        .layer(GlobalConcurrencyLimitLayer::new(
            state.max_in_flight_requests.max(1),
        ));
    let api = api_routes()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // Outside authentication: a shed request costs nothing more.
        .route_layer(shed_excess);
    let (routes, _document) = OpenApiRouter::new()
        .merge(api)
        .merge(public_routes())
        .split_for_parts();
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(extract::panic_response))
        // Outermost: even a shed, refused or panicked request has its id.
        .layer(middleware::from_fn(request_id::with_request_span))
        .with_state(state)
}

/// The load shedder's answer; it is the only error that layer stack makes.
async fn shed_response(error: BoxError) -> ApiError {
    if error.is::<Overloaded>() {
        ApiError::Overloaded {
            retry_after_secs: OVERLOADED_RETRY_AFTER_SECS,
        }
    } else {
        ApiError::Internal(error.to_string())
    }
}

/// The constant `"list"` of a list page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListObjectType {
    List,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    status: HealthStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// `GET /health`: liveness, without authentication.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    security(()),
    responses((status = 200, description = "The server is up", body = Health)),
)]
async fn health() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
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
