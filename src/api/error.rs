//! The one place where errors become HTTP: the OpenAI error envelope
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::upload::UploadStatus;
use crate::domain::{BatchStatus, QuotaExceeded, ValidationError};
use crate::files::BlobError;
use crate::store::StoreError;
use crate::telemetry::ErrorChain;
use crate::usecase::batches::BatchesError;
use crate::usecase::files::FilesError;
use crate::usecase::ingest::IngestError;

/// A quota frees up only as batches finish, which takes minutes: a client
/// retrying sooner would only be refused again.
pub const QUOTA_RETRY_AFTER_SECS: u64 = 60;

/// OpenAI's error envelope: the body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorObject {
    pub message: String,
    /// `invalid_request_error` for client mistakes, `server_error` for ours.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when there is one.
    #[schema(required = true)]
    pub param: Option<String>,
    /// A machine-readable reason, such as `invalid_value` or `not_found`.
    #[schema(required = true)]
    pub code: Option<String>,
}

impl ErrorResponse {
    pub fn new(message: String, kind: &str, param: Option<String>, code: Option<&str>) -> Self {
        Self {
            error: ErrorObject {
                message,
                kind: kind.to_string(),
                param,
                code: code.map(str::to_string),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("Incorrect API key provided. Send it as 'Authorization: Bearer <key>'.")]
    Unauthorized,
    #[error("Batch '{0}' not found")]
    BatchNotFound(String),
    #[error("Invalid URL ({method} {path})")]
    UnknownRoute { method: String, path: String },
    #[error("Method {method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("Request body too large: the limit is {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("Idempotency key '{key}' was previously used with different parameters. Either use a new idempotency key or ensure all parameters match the original request.")]
    IdempotencyConflict { key: String },
    #[error("Cannot cancel batch '{id}' with status '{status}'")]
    CannotCancel { id: String, status: BatchStatus },
    #[error("No such File object: {0}")]
    FileNotFound(String),
    #[error("No such Upload object: {0}")]
    UploadNotFound(String),
    #[error("Upload '{id}' is {status}: only a pending upload can {action}.")]
    UploadNotPending {
        id: String,
        status: UploadStatus,
        action: &'static str,
    },
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    #[error("The server is handling too many requests right now. Please retry shortly.")]
    Overloaded { retry_after_secs: u64 },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("internal storage error")]
    Store(#[from] StoreError),
    #[error("internal blob storage error")]
    Blob(#[from] BlobError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BatchNotFound(_)
            | Self::FileNotFound(_)
            | Self::UploadNotFound(_)
            | Self::UnknownRoute { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::IdempotencyConflict { .. }
            | Self::CannotCancel { .. }
            | Self::UploadNotPending { .. } => StatusCode::CONFLICT,
            Self::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) | Self::Blob(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            Self::Invalid(e) => Some(e.code),
            Self::Unauthorized => Some("invalid_api_key"),
            Self::BatchNotFound(_) => Some("not_found"),
            Self::UnknownRoute { .. } => Some("unknown_url"),
            Self::MethodNotAllowed { .. } => Some("method_not_allowed"),
            Self::PayloadTooLarge { .. } => Some("request_too_large"),
            Self::IdempotencyConflict { .. } => Some("idempotency_key_reused"),
            Self::CannotCancel { .. } | Self::UploadNotPending { .. } => Some("invalid_status"),
            // OpenAI's answer for an unknown file names the parameter, not a code.
            Self::FileNotFound(_) | Self::UploadNotFound(_) => None,
            Self::Quota(quota) => Some(quota.code()),
            Self::Overloaded { .. } => Some("server_overloaded"),
            Self::Store(_) | Self::Blob(_) | Self::Internal(_) => None,
        }
    }

    /// Seconds a client should wait before retrying, sent as `retry-after`.
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Quota(_) => Some(QUOTA_RETRY_AFTER_SECS),
            Self::Overloaded { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, message) = match &self {
            // The cause is logged here, once, and never sent to the client.
            Self::Store(cause) => {
                tracing::error!(error = %ErrorChain(cause), "request failed");
                (
                    "server_error",
                    "The server had an error while processing your request.".to_string(),
                )
            }
            Self::Blob(cause) => {
                tracing::error!(error = %ErrorChain(cause), "request failed");
                (
                    "server_error",
                    "The server had an error while processing your request.".to_string(),
                )
            }
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "request failed");
                (
                    "server_error",
                    "The server had an error while processing your request.".to_string(),
                )
            }
            // OpenAI's rate-limit errors are typed by what ran out: `requests`.
            Self::Quota(quota) => ("requests", quota.to_string()),
            Self::Overloaded { .. } => ("server_error", self.to_string()),
            other => ("invalid_request_error", other.to_string()),
        };
        let param = match &self {
            Self::Invalid(e) => e.param.clone(),
            Self::FileNotFound(_) | Self::UploadNotFound(_) => Some("id".to_string()),
            _ => None,
        };
        let body = ErrorResponse::new(message, kind, param, self.code());
        let mut response = (status, Json(body)).into_response();
        // The official SDKs retry 409s unless told not to; these can never succeed on retry.
        if status == StatusCode::CONFLICT {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        response
    }
}

impl From<BatchesError> for ApiError {
    fn from(error: BatchesError) -> Self {
        match error {
            BatchesError::NotFound(id) => Self::BatchNotFound(id.to_string()),
            BatchesError::IdempotencyConflict { key } => Self::IdempotencyConflict { key },
            BatchesError::CannotCancel { id, status } => Self::CannotCancel {
                id: id.to_string(),
                status,
            },
            BatchesError::Quota(exceeded) => Self::Quota(exceeded),
            BatchesError::Store(error) => Self::Store(error),
        }
    }
}

impl From<FilesError> for ApiError {
    fn from(error: FilesError) -> Self {
        match error {
            FilesError::Invalid(error) => Self::Invalid(error),
            FilesError::UploadNotFound(id) => Self::UploadNotFound(id),
            FilesError::UploadNotPending { id, status, action } => {
                Self::UploadNotPending { id, status, action }
            }
            FilesError::Blob(error) => Self::Blob(error),
            FilesError::Store(error) => Self::Store(error),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        FilesError::from(error).into()
    }
}
