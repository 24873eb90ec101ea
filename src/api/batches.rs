//! The batch endpoints: create, retrieve, cancel, list.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorResponse;
use super::extract::{Body, QueryParams};
use super::openapi::CreateBatchRequest;
use super::{ApiError, AppState, ListObjectType};
use crate::domain::{Batch, BatchId, CreateBatch, IdempotencyKey, TenantId, ValidationError};
use crate::store::ListOutcome;
use crate::usecase::batches::Created;

/// Set on a create answered from an earlier request with the same key (Stripe's name).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

#[utoipa::path(
    post,
    path = "/v1/batches",
    operation_id = "createBatch",
    tag = "batches",
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 257, description = "Makes the create idempotent: 1 to 255 characters, a bare token or a quoted string; must equal the body's `idempotency_key` when both are sent"),
    ),
    request_body(content = CreateBatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The new batch, or the stored one for a replayed idempotency key (with `idempotent-replayed: true`)", body = Batch),
        (status = 400, description = "Invalid body or key", body = ErrorResponse),
        (status = 409, description = "The idempotency key was used with different parameters", body = ErrorResponse),
        (status = 413, description = "Body over 64 KiB", body = ErrorResponse),
        (status = 429, description = "A quota of the tenant (batches in flight, enqueued lines) is used up; retry after `retry-after` seconds", body = ErrorResponse, headers(("retry-after" = u64, description = "Seconds to wait before retrying"))),
    ),
)]
/// `POST /v1/batches`: one conditional write decides between create and replay.
pub async fn create(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let request = CreateBatch::from_json(&body)?;
    let key = idempotency_key(&headers, request.idempotency_key.as_deref())?;
    Ok(
        match state
            .batch_use_cases()
            .create(tenant, &request, key)
            .await?
        {
            Created::New(batch) => Json(batch).into_response(),
            Created::Replayed(batch) => {
                let mut response = Json(batch).into_response();
                response
                    .headers_mut()
                    .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
                response
            }
        },
    )
}

/// The key may come in the body (llama-stack, the OpenAI SDK's `extra_body`) or
/// in the `Idempotency-Key` header (IETF, Stripe); both at once must agree.
fn idempotency_key(
    headers: &HeaderMap,
    from_body: Option<&str>,
) -> Result<Option<IdempotencyKey>, ValidationError> {
    let from_body = from_body.map(IdempotencyKey::parse).transpose()?;
    let from_header = headers
        .get("idempotency-key")
        .map(|value| IdempotencyKey::from_header(value.as_bytes()))
        .transpose()?;
    match (from_body, from_header) {
        (Some(body), Some(header)) if body != header => Err(ValidationError::invalid_value(
            "idempotency_key",
            "The 'idempotency_key' body field and the 'Idempotency-Key' header differ. Send one, or the same key in both.".to_string(),
        )),
        (body, header) => Ok(body.or(header)),
    }
}

#[utoipa::path(
    get,
    path = "/v1/batches/{batch_id}",
    operation_id = "retrieveBatch",
    tag = "batches",
    params(("batch_id" = String, Path, description = "The batch id")),
    responses(
        (status = 200, description = "The batch", body = Batch),
        (status = 404, description = "No such batch for this tenant", body = ErrorResponse),
    ),
)]
/// `GET /v1/batches/{batch_id}`
pub async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Batch>, ApiError> {
    let id = batch_id(path)?;
    let now = state.clock.now_secs();
    match state.batches.get(&tenant, &id, now).await? {
        Some(record) => Ok(Json(record.batch)),
        None => Err(ApiError::BatchNotFound(id.to_string())),
    }
}

#[utoipa::path(
    post,
    path = "/v1/batches/{batch_id}/cancel",
    operation_id = "cancelBatch",
    tag = "batches",
    params(("batch_id" = String, Path, description = "The batch id")),
    responses(
        (status = 200, description = "The batch, `cancelling` (or already `cancelling` or `cancelled`)", body = Batch),
        (status = 404, description = "No such batch for this tenant", body = ErrorResponse),
        (status = 409, description = "The batch has finished or is finalizing", body = ErrorResponse),
    ),
)]
/// `POST /v1/batches/{batch_id}/cancel`: `validating` or `in_progress` → `cancelling`.
pub async fn cancel(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Batch>, ApiError> {
    let id = batch_id(path)?;
    Ok(Json(state.batch_use_cases().cancel(&tenant, &id).await?))
}

fn batch_id(path: Result<Path<String>, PathRejection>) -> Result<BatchId, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::BatchNotFound(String::new()))?;
    // An id we could never have issued is unknown without asking the store.
    BatchId::parse(&raw).ok_or(ApiError::BatchNotFound(raw))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The id of the last batch of the previous page.
    #[param(nullable = false, min_length = 1)]
    after: Option<String>,
    /// Parsed by hand, so a bad value is OpenAI's 400 rather than serde's.
    #[param(value_type = Option<u32>, nullable = false, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchList {
    object: ListObjectType,
    data: Vec<Batch>,
    #[schema(required = true)]
    first_id: Option<String>,
    #[schema(required = true)]
    last_id: Option<String>,
    has_more: bool,
}

pub const DEFAULT_LIST_LIMIT: usize = 20;
pub const MAX_LIST_LIMIT: usize = 100;

#[utoipa::path(
    get,
    path = "/v1/batches",
    operation_id = "listBatches",
    tag = "batches",
    params(ListParams),
    responses(
        (status = 200, description = "A page of batches, newest first", body = BatchList),
        (status = 400, description = "Invalid `limit`, or an unknown `after`", body = ErrorResponse),
    ),
)]
/// `GET /v1/batches?after=&limit=`: newest first, one store page per call.
pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<BatchList>, ApiError> {
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIST_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                ValidationError::invalid_value(
                    "limit",
                    format!(
                        "Invalid 'limit': expected an integer from 1 to {MAX_LIST_LIMIT}, but got '{}'.",
                        text.chars().take(32).collect::<String>()
                    ),
                )
            })?,
    };
    let unknown_cursor = |after: &str| {
        ValidationError::invalid_value(
            "after",
            format!(
                "Invalid 'after': no batch '{}' to list after.",
                after.chars().take(100).collect::<String>()
            ),
        )
    };
    let after = match params.after.as_deref() {
        None => None,
        Some(text) => Some(BatchId::parse(text).ok_or_else(|| unknown_cursor(text))?),
    };
    let now = state.clock.now_secs();
    match state
        .batches
        .list(&tenant, after.as_ref(), limit, now)
        .await?
    {
        ListOutcome::UnknownCursor => {
            Err(unknown_cursor(after.as_ref().map_or("", |a| a.as_str())).into())
        }
        ListOutcome::Page { batches, has_more } => Ok(Json(BatchList {
            object: ListObjectType::List,
            first_id: batches.first().map(|b| b.id.to_string()),
            last_id: batches.last().map(|b| b.id.to_string()),
            // A page is never empty while more follow: the SDK would stop paging.
            has_more: has_more && !batches.is_empty(),
            data: batches,
        })),
    }
}
