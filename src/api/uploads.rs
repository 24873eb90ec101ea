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
use super::files::store_file_record;
use super::ingest::{drain, multipart_error, Expected, FormData, Ingest};
use super::openapi::{AddUploadPartForm, CompleteUploadRequest, CreateUploadRequest};
use super::{ApiError, AppState};
use crate::domain::upload::{
    file_expires_at, unknown_part, CompleteUpload, CreateUpload, PartId, Upload, UploadId,
    UploadPart, UploadStatus, UploadTransition,
};
use crate::domain::{FileId, FileObject, TenantId, ValidationError};
use crate::files::{file_key, part_key, upload_prefix};
use crate::store::files::{FileRecord, UploadOutcome, UploadRecord};

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
    let id = UploadId::random();
    let created_at = state.clock.now_secs();
    let record = UploadRecord {
        tenant,
        upload: request.new_upload(&id, created_at),
        mime_type: request.mime_type,
        expires_after: request.expires_after,
        purge_at: created_at + state.retention_secs,
    };
    state.files.create_upload(&record).await?;
    tracing::info!(upload_id = %id, tenant = %record.tenant, bytes = record.upload.bytes, "upload created");
    Ok(Json(record.upload))
}

fn upload_id(path: Result<Path<String>, PathRejection>) -> Result<UploadId, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::UploadNotFound(String::new()))?;
    UploadId::parse(&raw).ok_or(ApiError::UploadNotFound(raw))
}

/// The upload, if it is still open to `action`.
async fn open_upload(
    state: &AppState,
    tenant: &TenantId,
    id: &UploadId,
    action: &'static str,
) -> Result<UploadRecord, ApiError> {
    let now = state.clock.now_secs();
    let record = state
        .files
        .get_upload(tenant, id, now)
        .await?
        .ok_or_else(|| ApiError::UploadNotFound(id.to_string()))?;
    if !record.upload.is_open(now) {
        return Err(not_pending(record.upload.as_of(now), action));
    }
    Ok(record)
}

fn not_pending(upload: Upload, action: &'static str) -> ApiError {
    ApiError::UploadNotPending {
        id: upload.id,
        status: upload.status,
        action,
    }
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
    if let Err(error) = open_upload(&state, &tenant, &id, "take parts").await {
        drain(&mut multipart).await;
        return Err(error);
    }
    let part = PartId::random();
    let key = part_key(&tenant, &id, &part);
    let mut stored: Option<Ingest> = None;
    let mut failure: Option<ApiError> = None;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                if let Some(ingest) = stored {
                    ingest.abort().await;
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
        // A part is only bytes: the checks run on the whole file, at completion.
        let mut ingest = Ingest::start(
            state.blobs.as_ref(),
            &key,
            None,
            state.file_settings.batch_file_limits,
            Expected::default(),
            "data",
        )
        .await?
        .without_format_check();
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if let Err(error) = ingest.push(chunk).await {
                        ingest.abort().await;
                        return Err(error);
                    }
                    if ingest.bytes() > MAX_PART_BYTES as u64 {
                        ingest.abort().await;
                        return Err(ApiError::PayloadTooLarge {
                            limit: MAX_PART_BYTES,
                        });
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    ingest.abort().await;
                    return Err(multipart_error(error, MAX_PART_BODY_BYTES));
                }
            }
        }
        stored = Some(ingest);
    }
    let ingest = match (failure, stored) {
        (Some(error), stored) => {
            if let Some(ingest) = stored {
                ingest.abort().await;
            }
            return Err(error);
        }
        (None, None) => return Err(ValidationError::missing("data").into()),
        (None, Some(ingest)) => ingest,
    };
    let bytes = ingest.finish().await?;
    tracing::info!(upload_id = %id, part_id = %part, %tenant, bytes, "upload part stored");
    Ok(Json(UploadPart::new(&part, &id, state.clock.now_secs())))
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
    let record = open_upload(&state, &tenant, &id, "be completed").await?;
    let upload = &record.upload;
    let file_id = FileId::random();
    let blob_key = file_key(&tenant, &file_id);

    let mut ingest = Ingest::start(
        state.blobs.as_ref(),
        &blob_key,
        Some(upload.purpose),
        state.file_settings.batch_file_limits,
        Expected {
            bytes: Some(upload.bytes),
            md5: request.md5.clone(),
        },
        "part_ids",
    )
    .await?;
    for (index, part) in request.part_ids.iter().enumerate() {
        let reader = match state.blobs.open(&part_key(&tenant, &id, part)).await {
            Ok(Some(reader)) => reader,
            Ok(None) => {
                ingest.abort().await;
                let param = format!("part_ids[{index}]");
                return Err(unknown_part(&param, part.as_str()).into());
            }
            Err(error) => {
                ingest.abort().await;
                return Err(error.into());
            }
        };
        if let Err(error) = ingest.copy_from(reader).await {
            ingest.abort().await;
            return Err(error);
        }
    }
    let bytes = ingest.finish().await?;

    let created_us = state.clock.now_micros();
    let created_at = created_us.div_euclid(1_000_000);
    let file = FileObject {
        id: file_id.to_string(),
        object: Default::default(),
        bytes,
        created_at,
        expires_at: file_expires_at(upload.purpose, record.expires_after, created_at),
        filename: upload.filename.clone(),
        purpose: upload.purpose,
        status: "processed".to_string(),
        status_details: None,
    };
    let file_record = FileRecord {
        tenant: tenant.clone(),
        file: file.clone(),
        blob_key,
        created_us,
    };
    store_file_record(&state, &file_record).await?;

    // The file exists first, then the upload points at it: a complete racing
    // a cancel (or another complete) loses here, and takes its file back.
    let now = state.clock.now_secs();
    let transition = UploadTransition::Complete(Box::new(file));
    let outcome = state
        .files
        .transition_upload(&tenant, &id, &transition, now)
        .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            discard_file(&state, &file_record).await;
            return Err(error.into());
        }
    };
    match outcome {
        UploadOutcome::Applied(upload) => {
            tracing::info!(upload_id = %id, file_id = %file_id, %tenant, bytes, "upload completed");
            remove_parts(&state, &tenant, &id).await;
            Ok(Json(upload.as_of(now)))
        }
        UploadOutcome::Refused(upload) => {
            discard_file(&state, &file_record).await;
            Err(not_pending(upload.as_of(now), "be completed"))
        }
        UploadOutcome::NotFound => {
            discard_file(&state, &file_record).await;
            Err(ApiError::UploadNotFound(id.to_string()))
        }
    }
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
    let now = state.clock.now_secs();
    match state
        .files
        .transition_upload(&tenant, &id, &UploadTransition::Cancel, now)
        .await?
    {
        UploadOutcome::Applied(upload) => {
            tracing::info!(upload_id = %id, %tenant, "upload cancelled");
            remove_parts(&state, &tenant, &id).await;
            Ok(Json(upload.as_of(now)))
        }
        UploadOutcome::Refused(upload) if upload.status == UploadStatus::Cancelled => {
            Ok(Json(upload.as_of(now)))
        }
        UploadOutcome::Refused(upload) => Err(not_pending(upload.as_of(now), "be cancelled")),
        UploadOutcome::NotFound => Err(ApiError::UploadNotFound(id.to_string())),
    }
}

/// Parts are not needed once the upload is done with; a failure to remove
/// them leaves only unreachable objects (and a lifecycle rule can sweep them).
async fn remove_parts(state: &AppState, tenant: &TenantId, id: &UploadId) {
    let prefix = upload_prefix(tenant, id);
    if let Err(error) = state.blobs.delete_prefix(&prefix).await {
        tracing::warn!(%prefix, error = %crate::telemetry::ErrorChain(&error), "could not remove upload parts");
    }
}

async fn discard_file(state: &AppState, record: &FileRecord) {
    let now = state.clock.now_secs();
    let id = FileId::parse(&record.file.id);
    if let Some(id) = id {
        if let Err(error) = state.files.delete_file(&record.tenant, &id, now).await {
            tracing::warn!(file_id = %record.file.id, error = %crate::telemetry::ErrorChain(&error), "could not remove the record of a discarded file");
        }
    }
    if let Err(error) = state.blobs.delete(&record.blob_key).await {
        tracing::warn!(key = %record.blob_key, error = %crate::telemetry::ErrorChain(&error), "could not remove the bytes of a discarded file");
    }
}
