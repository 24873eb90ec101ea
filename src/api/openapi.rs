//! The OpenAPI 3.1 contract, served at `GET /openapi.json`.
//!
//! Paths and operations come from the `#[utoipa::path]` attribute on each
//! handler, collected by the same `routes!` calls that build the Router (see
//! `super::api_routes`), so a route cannot exist without its operation. Response
//! schemas derive from the types the handlers render. Request bodies are
//! parsed by hand (to name the field at fault in every error), so their shapes
//! are described by the schema-only types below, which tests keep in step with
//! the parsers' field lists.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::domain::create::{MAX_METADATA_KEY_CHARS, MAX_METADATA_PAIRS, MAX_METADATA_VALUE_CHARS};
use crate::domain::file::FilePurpose;
use crate::domain::upload::MAX_PARTS;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lambda-batches",
        description = "An OpenAI-compatible Batch API (batches, files, uploads). Every error is OpenAI's envelope `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "batches", description = "OpenAI's Batch API"),
        (name = "files", description = "OpenAI's Files API"),
        (name = "uploads", description = "OpenAI's Uploads API: files sent in parts"),
        (name = "service", description = "Liveness and this document; no authentication"),
    ),
)]
pub struct ApiDoc;

/// `Authorization: Bearer <key>` on every `/v1` route.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key, sent as `Authorization: Bearer <key>`. Without configured keys the local server is open.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The answers of the layers around every authenticated operation (the key
/// check and the in-flight cap), added here once rather than on each handler.
/// An operation with its own `security` (`security(())`) is outside those layers.
/// Applied to the merged document (`super::openapi`): the operations arrive
/// from the routes after `ApiDoc`'s own modifiers have run.
pub(super) struct GuardedAnswers;

impl Modify for GuardedAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorResponse")))
                .build()
        };
        let unauthorized = ResponseBuilder::new()
            .description("Missing or wrong API key")
            .content("application/json", error())
            .build();
        let overloaded = ResponseBuilder::new()
            .description("Over the cap on requests in flight; retry after `retry-after` seconds")
            .content("application/json", error())
            .header(
                "retry-after",
                HeaderBuilder::new()
                    .schema(Some(u64::schema()))
                    .description(Some("Seconds to wait before retrying"))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                if operation.security.is_none() {
                    let answers = &mut operation.responses.responses;
                    answers.insert("401".into(), unauthorized.clone().into());
                    answers.insert("503".into(), overloaded.clone().into());
                }
            }
        }
    }
}

/// The served document, built once: it depends on the code alone, so it
/// serializes on every run or on none (and then every test of it fails).
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    super::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
});

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApiDocument",
    tag = "service",
    security(()),
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object)),
)]
pub async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// Raw file bytes, as `GET /v1/files/{file_id}/content` answers them.
pub struct BinaryContent;

impl PartialSchema for BinaryContent {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl ToSchema for BinaryContent {}

/// A file part of a multipart form: any bytes. No `type`: on the wire every
/// form part is bytes, so no value could be told apart as the wrong type.
struct FormFile;

impl PartialSchema for FormFile {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl ToSchema for FormFile {}

/// The body of `POST /v1/batches`, as `CreateBatch::from_json` accepts it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateBatchRequest {
    /// The id of a `purpose=batch` file.
    #[schema(min_length = 1, max_length = 256)]
    input_file_id: String,
    endpoint: EndpointName,
    completion_window: CompletionWindow,
    /// At most 16 pairs; keys up to 64 and values up to 512 characters.
    #[schema(schema_with = metadata_schema)]
    metadata: Option<BTreeMap<String, String>>,
    output_expires_after: Option<ExpiresAfterRequest>,
    /// Makes the create idempotent (also accepted as the `Idempotency-Key` header).
    #[schema(min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
    /// An extension: at most this many of the batch's lines in flight per shard.
    #[schema(minimum = 1, maximum = 1024)]
    max_concurrency: Option<u32>,
}

/// The batch endpoints lambda-batches can execute (`Endpoint`).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
enum EndpointName {
    #[serde(rename = "/v1/chat/completions")]
    ChatCompletions,
    #[serde(rename = "/v1/completions")]
    Completions,
    #[serde(rename = "/v1/embeddings")]
    Embeddings,
    #[serde(rename = "/v1/responses")]
    Responses,
    #[serde(rename = "/v1/moderations")]
    Moderations,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
enum CompletionWindow {
    #[serde(rename = "24h")]
    Day,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
enum Anchor {
    #[serde(rename = "created_at")]
    CreatedAt,
}

/// `expires_after` / `output_expires_after`: one hour to 30 days after creation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ExpiresAfterRequest {
    anchor: Anchor,
    #[schema(minimum = 3600, maximum = 2592000)]
    seconds: i64,
}

/// OpenAI's `Metadata`, with the bounds `CreateBatch::from_json` checks.
fn metadata_schema() -> Schema {
    let text = |max: usize| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(max))
    };
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(MAX_METADATA_PAIRS))
        .property_names(Some(text(MAX_METADATA_KEY_CHARS)))
        .additional_properties(Some(text(MAX_METADATA_VALUE_CHARS)))
        .into()
}

fn part_ids_schema() -> Schema {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^part_[A-Za-z0-9_-]{1,64}$")),
        )
        .max_items(Some(MAX_PARTS))
        .unique_items(true)
        .into()
}

/// The order of `GET /v1/files` (`SortOrder`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ListOrder {
    Asc,
    Desc,
}

/// The purposes a client may upload with: every `FilePurpose` but
/// `batch_output`, listed from the domain so the two cannot drift apart.
struct UploadPurpose;

impl PartialSchema for UploadPurpose {
    fn schema() -> RefOr<Schema> {
        let uploadable = FilePurpose::ALL
            .into_iter()
            .filter(|purpose| purpose.is_uploadable())
            .map(FilePurpose::as_str);
        ObjectBuilder::new()
            .description(Some(
                "The purposes a client may upload with (every `FilePurpose` but `batch_output`).",
            ))
            .schema_type(Type::String)
            .enum_values(Some(uploadable))
            .into()
    }
}

impl ToSchema for UploadPurpose {}

/// The form of `POST /v1/files`. Unknown fields are ignored.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct CreateFileForm {
    /// The file; with `purpose=batch`, UTF-8 JSONL of at most 50,000 requests and 200 MB.
    #[schema(value_type = FormFile)]
    file: Vec<u8>,
    #[schema(value_type = UploadPurpose)]
    purpose: String,
    #[serde(rename = "expires_after[anchor]")]
    #[schema(nullable = false)]
    expires_after_anchor: Option<Anchor>,
    #[serde(rename = "expires_after[seconds]")]
    #[schema(nullable = false, minimum = 3600, maximum = 2592000)]
    expires_after_seconds: Option<i64>,
}

/// The body of `POST /v1/uploads`, as `CreateUpload::from_json` accepts it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateUploadRequest {
    /// Without control characters.
    #[schema(min_length = 1, max_length = 512)]
    filename: String,
    #[schema(value_type = UploadPurpose)]
    purpose: String,
    /// The total size of the file: at most 512 MB (200 MB for `batch`).
    #[schema(minimum = 0, maximum = 536870912)]
    bytes: u64,
    #[schema(min_length = 1, max_length = 255)]
    mime_type: String,
    expires_after: Option<ExpiresAfterRequest>,
}

/// The form of `POST /v1/uploads/{upload_id}/parts`. Unknown fields are ignored.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct AddUploadPartForm {
    /// Up to 64 MB of the file.
    #[schema(value_type = FormFile)]
    data: Vec<u8>,
}

/// The body of `POST /v1/uploads/{upload_id}/complete`, as `CompleteUpload::from_json` accepts it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CompleteUploadRequest {
    /// The parts, in the order they make up the file; each named once.
    #[schema(schema_with = part_ids_schema)]
    part_ids: Vec<String>,
    /// The MD5 of the whole file as 32 hexadecimal digits, checked when given.
    #[schema(pattern = "^([0-9A-Fa-f]{32})?$")]
    md5: Option<String>,
}
