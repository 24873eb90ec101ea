//! The file endpoints: upload, retrieve, content, list, delete.

use std::time::Duration;

use axum::body::Body as ResponseBody;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::io::ReaderStream;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorResponse;
use super::extract::QueryParams;
use super::ingest::{multipart_error, text_field, FormData};
use super::openapi::{BinaryContent, CreateFileForm, ListOrder};
use super::{ApiError, AppState, ListObjectType};
use crate::domain::file::FileObjectType;
use crate::domain::new_file::{check_filename, parse_upload_purpose, ExpiresAfter, MAX_FILE_BYTES};
use crate::domain::{FileId, FileObject, FilePurpose, TenantId, ValidationError};
use crate::store::files::{FileListOutcome, FileQuery, SortOrder};
use crate::usecase::files::{FileDetails, NewFile};
use crate::usecase::ingest::Ingest;

/// The body limit of `POST /v1/files`: OpenAI's 512 MB file limit plus room
/// for the form around it. Batch files stop at 200 MB by their own check.
/// (Behind API Gateway and Lambda a request is at most ~6 MB anyway: larger
/// files go through the Uploads API.)
pub const MAX_UPLOAD_BODY_BYTES: usize = MAX_FILE_BYTES as usize + 64 * 1024;
/// A presigned content URL lives this long: enough to start the download.
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(300);
/// Text fields of the upload form (`purpose`, `expires_after[...]`) are tiny.
const MAX_TEXT_FIELD_BYTES: usize = 1024;

/// The text fields of the upload form, as they arrived.
#[derive(Default)]
struct Form {
    purpose: Option<String>,
    anchor: Option<String>,
    seconds: Option<String>,
}

impl Form {
    fn set(&mut self, name: &str, value: String) -> Result<(), ApiError> {
        match name {
            // Checked at once, so a bad purpose stops the file from being stored.
            "purpose" => {
                parse_upload_purpose(&value)?;
                self.purpose = Some(value);
            }
            "expires_after[anchor]" => self.anchor = Some(value),
            _ => self.seconds = Some(value),
        }
        Ok(())
    }
}

#[utoipa::path(
    post,
    path = "/v1/files",
    operation_id = "createFile",
    tag = "files",
    request_body(content = CreateFileForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored file", body = FileObject),
        (status = 400, description = "Invalid form, purpose, expiry or file (a `batch` file that is empty, or whose first line is not a JSON object)", body = ErrorResponse),
        (status = 413, description = "Body over the limit of the route", body = ErrorResponse),
    ),
)]
/// `POST /v1/files`, multipart: `file`, `purpose`, optional `expires_after`.
///
/// The file is streamed into the blob store as it arrives, never held whole.
/// The fields may come in any order: the official SDKs send `purpose` first,
/// and then a batch file that cannot be one (empty, or a first line that is
/// not a JSON object) is refused as soon as that is known; when `file`
/// comes first, the batch-file check runs anyway while it streams and its
/// verdict is applied once `purpose` is known. Either way the object becomes
/// visible (and the record is written) only after every check has passed.
pub async fn create(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    FormData(mut multipart): FormData,
) -> Result<Json<FileObject>, ApiError> {
    let files = state.file_use_cases();
    let mut form = Form::default();
    let mut file: Option<(NewFile, String)> = None;
    // The first client mistake; the rest of the form is then only drained.
    let mut failure: Option<ApiError> = None;

    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                if let Some((new, _)) = file {
                    new.ingest.abort().await;
                }
                return Err(multipart_error(error, MAX_UPLOAD_BODY_BYTES));
            }
        };
        if failure.is_some() {
            continue;
        }
        let name = field.name().unwrap_or_default().to_string();
        let outcome: Result<(), ApiError> = match name.as_str() {
            "purpose" | "expires_after[anchor]" | "expires_after[seconds]" => {
                text_field(field, &name, MAX_TEXT_FIELD_BYTES, MAX_UPLOAD_BODY_BYTES)
                    .await
                    .and_then(|value| form.set(&name, value))
            }
            "file" if file.is_some() => Err(ValidationError::invalid_value(
                "file",
                "Invalid 'file': send exactly one file.".to_string(),
            )
            .into()),
            "file" => {
                let filename = check_filename("file", field.file_name().unwrap_or("file"));
                match filename {
                    Err(e) => Err(e.into()),
                    Ok(filename) => {
                        let purpose = form
                            .purpose
                            .as_deref()
                            .and_then(|p| parse_upload_purpose(p).ok());
                        let mut new = files.begin_file(&tenant, purpose, "file").await?;
                        let streamed = stream_field(field, &mut new.ingest).await;
                        match streamed {
                            Ok(()) => {
                                file = Some((new, filename));
                                Ok(())
                            }
                            Err(error) => {
                                new.ingest.abort().await;
                                Err(error)
                            }
                        }
                    }
                }
            }
            // Fields we do not know are skipped, as OpenAI's form parser does.
            _ => Ok(()),
        };
        match outcome {
            Ok(()) => {}
            // A client mistake: read the rest of the form, then answer.
            Err(error @ ApiError::Invalid(_)) => failure = Some(error),
            // Too large (nothing more can be read) or our own failure: answer now.
            Err(other) => {
                if let Some((new, _)) = file {
                    new.ingest.abort().await;
                }
                return Err(other);
            }
        }
    }

    let checked = match failure {
        Some(error) => Err(error),
        None => form_values(&form, file.is_some()),
    };
    let (purpose, expires_after) = match checked {
        Ok(values) => values,
        Err(error) => {
            if let Some((new, _)) = file {
                new.ingest.abort().await;
            }
            return Err(error);
        }
    };
    let Some((new, filename)) = file else {
        return Err(ValidationError::missing("file").into());
    };
    let details = FileDetails {
        filename,
        purpose,
        expires_after,
    };
    Ok(Json(files.finish_file(tenant, new, details).await?))
}

async fn stream_field(
    mut field: axum::extract::multipart::Field<'_>,
    ingest: &mut Ingest,
) -> Result<(), ApiError> {
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| multipart_error(e, MAX_UPLOAD_BODY_BYTES))?
    {
        ingest.push(chunk).await?;
    }
    Ok(())
}

/// The purpose and expiry the form asked for; `file` must have come too.
fn form_values(
    form: &Form,
    has_file: bool,
) -> Result<(FilePurpose, Option<ExpiresAfter>), ApiError> {
    let purpose = form
        .purpose
        .as_deref()
        .ok_or_else(|| ValidationError::missing("purpose"))
        .and_then(parse_upload_purpose)?;
    if !has_file {
        return Err(ValidationError::missing("file").into());
    }
    let expires_after = match (&form.anchor, &form.seconds) {
        (None, None) => None,
        (anchor, seconds) => Some(ExpiresAfter::parse(
            anchor.as_deref(),
            seconds.clone().map(Value::String).as_ref(),
        )?),
    };
    Ok((purpose, expires_after))
}

fn file_id(path: Result<Path<String>, PathRejection>) -> Result<FileId, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::FileNotFound(String::new()))?;
    // An id we could never have issued is unknown without asking the store.
    FileId::parse(&raw).ok_or(ApiError::FileNotFound(raw))
}

#[utoipa::path(
    get,
    path = "/v1/files/{file_id}",
    operation_id = "retrieveFile",
    tag = "files",
    params(("file_id" = String, Path, description = "The file id")),
    responses(
        (status = 200, description = "The file", body = FileObject),
        (status = 404, description = "No such file for this tenant", body = ErrorResponse),
    ),
)]
/// `GET /v1/files/{file_id}`
pub async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<FileObject>, ApiError> {
    let id = file_id(path)?;
    match state
        .files
        .get_file(&tenant, &id, state.clock.now_secs())
        .await?
    {
        Some(record) => Ok(Json(record.file)),
        None => Err(ApiError::FileNotFound(id.to_string())),
    }
}

#[utoipa::path(
    get,
    path = "/v1/files/{file_id}/content",
    operation_id = "downloadFile",
    tag = "files",
    params(("file_id" = String, Path, description = "The file id")),
    responses(
        (status = 200, description = "The file's bytes", body = BinaryContent, content_type = "application/octet-stream"),
        (status = 307, description = "Above the inline limit, in S3: a presigned URL valid for 5 minutes", headers(("location" = String, description = "The presigned URL"))),
        (status = 404, description = "No such file for this tenant", body = ErrorResponse),
    ),
)]
/// `GET /v1/files/{file_id}/content`: the bytes, streamed; or, above the
/// inline limit and when the blob store can presign, a redirect to S3 (a
/// Lambda response is at most 6 MB).
pub async fn content(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = file_id(path)?;
    let Some(record) = state
        .files
        .get_file(&tenant, &id, state.clock.now_secs())
        .await?
    else {
        return Err(ApiError::FileNotFound(id.to_string()));
    };
    if record.file.bytes > state.file_settings.inline_content_max_bytes {
        if let Some(url) = state
            .blobs
            .download_url(&record.blob_key, DOWNLOAD_URL_TTL)
            .await?
        {
            let location =
                HeaderValue::from_str(&url).map_err(|e| crate::files::BlobError::S3 {
                    operation: "GetObject (presign)",
                    source: Box::new(e),
                })?;
            return Ok((
                StatusCode::TEMPORARY_REDIRECT,
                [
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
            )
                .into_response());
        }
    }
    // A record whose bytes are gone (a delete in between) is no file at all.
    let Some(reader) = state.blobs.open(&record.blob_key).await? else {
        return Err(ApiError::FileNotFound(id.to_string()));
    };
    let body = ResponseBody::from_stream(ReaderStream::with_capacity(reader, 64 * 1024));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(record.file.bytes)),
        ],
        body,
    )
        .into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/files/{file_id}",
    operation_id = "deleteFile",
    tag = "files",
    params(("file_id" = String, Path, description = "The file id")),
    responses(
        (status = 200, description = "The file and its bytes are deleted", body = Deleted),
        (status = 404, description = "No such file for this tenant", body = ErrorResponse),
    ),
)]
/// `DELETE /v1/files/{file_id}`: the record, then the bytes.
pub async fn delete(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let id = file_id(path)?;
    let Some(record) = state
        .files
        .delete_file(&tenant, &id, state.clock.now_secs())
        .await?
    else {
        return Err(ApiError::FileNotFound(id.to_string()));
    };
    // The record is gone, so the file is gone for every reader: a failure to
    // delete the bytes leaves only an unreachable object, not a client error.
    if let Err(error) = state.blobs.delete(&record.blob_key).await {
        tracing::warn!(key = %record.blob_key, error = %crate::telemetry::ErrorChain(&error), "could not delete the bytes of a deleted file");
    }
    tracing::info!(file_id = %id, %tenant, "file deleted");
    Ok(Json(Deleted {
        id: id.to_string(),
        object: FileObjectType::File,
        deleted: true,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    id: String,
    object: FileObjectType,
    deleted: bool,
}

/// Each is parsed by hand, so a bad value is OpenAI's 400 rather than serde's.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only files of this purpose.
    #[param(value_type = Option<FilePurpose>, inline, nullable = false)]
    purpose: Option<String>,
    #[param(value_type = Option<u32>, nullable = false, minimum = 1, maximum = 10000)]
    limit: Option<String>,
    /// By creation time; `desc` by default.
    #[param(value_type = Option<ListOrder>, inline, nullable = false)]
    order: Option<String>,
    /// The id of the last file of the previous page.
    #[param(nullable = false, min_length = 1)]
    after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    object: ListObjectType,
    data: Vec<FileObject>,
    #[schema(required = true)]
    first_id: Option<String>,
    #[schema(required = true)]
    last_id: Option<String>,
    has_more: bool,
}

/// OpenAI's: `limit` 1 to 10,000, default 10,000.
pub const DEFAULT_LIST_LIMIT: usize = 10_000;
pub const MAX_LIST_LIMIT: usize = 10_000;

#[utoipa::path(
    get,
    path = "/v1/files",
    operation_id = "listFiles",
    tag = "files",
    params(ListParams),
    responses(
        (status = 200, description = "A page of files", body = FileList),
        (status = 400, description = "Invalid `purpose`, `limit` or `order`, or an unknown `after`", body = ErrorResponse),
    ),
)]
/// `GET /v1/files?purpose=&limit=&order=&after=`
pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<TenantId>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<FileList>, ApiError> {
    let echo = |text: &str| text.chars().take(100).collect::<String>();
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
                        echo(text)
                    ),
                )
            })?,
    };
    let order = match params.order.as_deref() {
        None | Some("desc") => SortOrder::Desc,
        Some("asc") => SortOrder::Asc,
        Some(other) => {
            return Err(ValidationError::invalid_value(
                "order",
                format!(
                    "Invalid 'order': '{}'. Supported values are: 'asc', 'desc'.",
                    echo(other)
                ),
            )
            .into())
        }
    };
    let purpose = match params.purpose.as_deref() {
        None => None,
        Some(text) => Some(FilePurpose::parse(text).ok_or_else(|| {
            ValidationError::invalid_value(
                "purpose",
                format!("Invalid 'purpose': '{}'.", echo(text)),
            )
        })?),
    };
    let unknown_cursor = |after: &str| {
        ValidationError::invalid_value(
            "after",
            format!("Invalid 'after': no file '{}' to list after.", echo(after)),
        )
    };
    let after = match params.after.as_deref() {
        None => None,
        Some(text) => Some(FileId::parse(text).ok_or_else(|| unknown_cursor(text))?),
    };
    let query = FileQuery {
        purpose,
        after,
        limit,
        order,
    };
    match state
        .files
        .list_files(&tenant, &query, state.clock.now_secs())
        .await?
    {
        FileListOutcome::UnknownCursor => {
            Err(unknown_cursor(query.after.as_ref().map_or("", |a| a.as_str())).into())
        }
        FileListOutcome::Page { files, has_more } => Ok(Json(FileList {
            object: ListObjectType::List,
            first_id: files.first().map(|f| f.id.to_string()),
            last_id: files.last().map(|f| f.id.to_string()),
            // A page is never empty while more follow: the SDK would stop paging.
            has_more: has_more && !files.is_empty(),
            data: files,
        })),
    }
}
