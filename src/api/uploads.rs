//! The Uploads API: a file sent in parts, for files larger than one request
//! may carry (API Gateway and Lambda cap a request at ~6 MB).
//!
//! Each part is stored as an object of its own (`uploads/{tenant}/{upload}/{part}`):
//! S3's own multipart upload wants at least 5 MiB for every part but the last,
//! more than a part through Lambda can hold. Completing streams the named parts,
//! in the order named, into one new object (an S3 multipart upload of 8 MiB
//! parts), checking it as it goes, exactly like `POST /v1/files`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::error::ErrorResponse;
use super::extract::Body;
use super::ingest::{drain, multipart_error, FormData};
use super::openapi::{AddUploadPartForm, CompleteUploadRequest, CreateUploadRequest};
use super::{ApiError, AppState};
use crate::domain::upload::{CompleteUpload, CreateUpload, Upload, UploadId, UploadPart};
use crate::domain::{TenantId, ValidationError};
use crate::usecase::uploads::NewPart;

/// OpenAI's limit for one part: "Each Part can be at most 64 MB". Behind API
/// Gateway and Lambda a part is at most ~4.5 MB (6 MB with base64).
pub const MAX_PART_BYTES: usize = 64 * 1024 * 1024;
/// The part route's body limit: a part plus room for the form around it.
pub const MAX_PART_BODY_BYTES: usize = MAX_PART_BYTES + 64 * 1024;

#[utoipa::path(
    post,
    path = "/v1/uploads",
    operation_id = "createUpload",
    tag = "uploads",
    request_body(content = CreateUploadRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The new upload, `pending` for an hour", body = Upload),
        (status = 400, description = "Invalid body", body = ErrorResponse),
        (status = 413, description = "Body over 64 KiB", body = ErrorResponse),
    ),
)]
/// `POST /v1/uploads`
pub async fn create(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    Body(body): Body,
) -> Result<Json<Upload>, ApiError> {
    let request = CreateUpload::from_json(&body)?;
    Ok(Json(
        state
            .file_use_cases()
            .create_upload(tenant, request)
            .await?,
    ))
}

fn upload_id(path: Result<Path<String>, PathRejection>) -> Result<UploadId, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::UploadNotFound(String::new()))?;
    UploadId::parse(&raw).ok_or(ApiError::UploadNotFound(raw))
}

#[utoipa::path(
    post,
    path = "/v1/uploads/{upload_id}/parts",
    operation_id = "addUploadPart",
    tag = "uploads",
    params(("upload_id" = String, Path, description = "The upload id")),
    request_body(content = AddUploadPartForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored part", body = UploadPart),
        (status = 400, description = "Invalid form", body = ErrorResponse),
        (status = 404, description = "No such upload for this tenant", body = ErrorResponse),
        (status = 409, description = "The upload is no longer pending", body = ErrorResponse),
        (status = 413, description = "A part over 64 MB", body = ErrorResponse),
    ),
)]
/// `POST /v1/uploads/{upload_id}/parts`, multipart with one `data` field.
pub async fn add_part(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    path: Result<Path<String>, PathRejection>,
    FormData(mut multipart): FormData,
) -> Result<Json<UploadPart>, ApiError> {
    let id = upload_id(path)?;
    let files = state.file_use_cases();
    if let Err(error) = files.open_upload(&tenant, &id, "take parts").await {
        drain(&mut multipart).await;
        return Err(error.into());
    }
    let mut stored: Option<NewPart> = None;
    let mut failure: Option<ApiError> = None;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                if let Some(part) = stored {
                    part.ingest.abort().await;
                }
                return Err(multipart_error(error, MAX_PART_BODY_BYTES));
            }
        };
        if failure.is_some() || field.name() != Some("data") {
            continue;
        }
        if stored.is_some() {
            failure = Some(
                ValidationError::invalid_value(
                    "data",
                    "Invalid 'data': send exactly one data field.".to_string(),
                )
                .into(),
            );
            continue;
        }
        let mut part = files.begin_part(&tenant, &id).await?;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if let Err(error) = part.ingest.push(chunk).await {
                        part.ingest.abort().await;
                        return Err(error.into());
                    }
                    if part.ingest.bytes() > MAX_PART_BYTES as u64 {
                        part.ingest.abort().await;
                        return Err(ApiError::PayloadTooLarge {
                            limit: MAX_PART_BYTES,
                        });
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    part.ingest.abort().await;
                    return Err(multipart_error(error, MAX_PART_BODY_BYTES));
                }
            }
        }
        stored = Some(part);
    }
    let part = match (failure, stored) {
        (Some(error), stored) => {
            if let Some(part) = stored {
                part.ingest.abort().await;
            }
            return Err(error);
        }
        (None, None) => return Err(ValidationError::missing("data").into()),
        (None, Some(part)) => part,
    };
    Ok(Json(files.finish_part(part).await?))
}

#[utoipa::path(
    post,
    path = "/v1/uploads/{upload_id}/complete",
    operation_id = "completeUpload",
    tag = "uploads",
    params(("upload_id" = String, Path, description = "The upload id")),
    request_body(content = CompleteUploadRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The completed upload, with its file", body = Upload),
        (status = 400, description = "Invalid body, unknown parts, or a file that fails its checks", body = ErrorResponse),
        (status = 404, description = "No such upload for this tenant", body = ErrorResponse),
        (status = 409, description = "The upload is no longer pending", body = ErrorResponse),
        (status = 413, description = "Body over 64 KiB", body = ErrorResponse),
    ),
)]
/// `POST /v1/uploads/{upload_id}/complete` {part_ids, md5?}
pub async fn complete(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    path: Result<Path<String>, PathRejection>,
    Body(body): Body,
) -> Result<Json<Upload>, ApiError> {
    let id = upload_id(path)?;
    let request = CompleteUpload::from_json(&body)?;
    let upload = state
        .file_use_cases()
        .complete_upload(&tenant, &id, &request)
        .await?;
    Ok(Json(upload))
}

#[utoipa::path(
    post,
    path = "/v1/uploads/{upload_id}/cancel",
    operation_id = "cancelUpload",
    tag = "uploads",
    params(("upload_id" = String, Path, description = "The upload id")),
    responses(
        (status = 200, description = "The upload, `cancelled`", body = Upload),
        (status = 404, description = "No such upload for this tenant", body = ErrorResponse),
        (status = 409, description = "The upload is completed or expired", body = ErrorResponse),
    ),
)]
/// `POST /v1/uploads/{upload_id}/cancel`: a cancelled upload stays cancelled
/// (cancelling twice answers the same); completed or expired ones cannot be.
pub async fn cancel(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Upload>, ApiError> {
    let id = upload_id(path)?;
    Ok(Json(
        state.file_use_cases().cancel_upload(&tenant, &id).await?,
    ))
}
