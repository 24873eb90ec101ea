//! OpenAI's Uploads: a file sent in parts, for files too large for one
//! request. What any new file must satisfy is in `new_file`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::file::{FileObject, FilePurpose};
use super::new_file::{
    check_filename, excerpt, max_file_bytes, parse_upload_purpose, unknown_parameter, ExpiresAfter,
};
use super::validation::{JsonKind, ValidationError};

/// An Upload "expires after an hour after you create it".
pub const UPLOAD_EXPIRY_SECONDS: i64 = 3600;
/// The most parts one completion may name: far above what 512 MB needs (800
/// parts of 640 KiB), and low enough that a completion naming this many of the
/// longest part ids still fits the API's 64 KiB body limit, so it is answered
/// on its merits rather than with a 413.
pub const MAX_PARTS: usize = 800;
/// The longest part id `PartId::parse` accepts: `part_` and 64 characters.
pub const MAX_PART_ID_CHARS: usize = 69;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UploadStatus {
    Pending,
    Completed,
    Cancelled,
    Expired,
}

impl UploadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }
}

impl fmt::Display for UploadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub enum UploadObjectType {
    #[default]
    #[serde(rename = "upload")]
    Upload,
}

/// The OpenAI Upload object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Upload {
    #[schema(value_type = String)]
    pub id: UploadId,
    pub object: UploadObjectType,
    pub bytes: u64,
    pub created_at: i64,
    pub expires_at: i64,
    pub filename: String,
    pub purpose: FilePurpose,
    pub status: UploadStatus,
    #[schema(required = true)]
    pub file: Option<FileObject>,
}

impl Upload {
    /// A pending upload past its hour is `expired`; nothing needs to write that.
    pub fn as_of(mut self, now_secs: i64) -> Self {
        if self.status == UploadStatus::Pending && now_secs >= self.expires_at {
            self.status = UploadStatus::Expired;
        }
        self
    }

    /// Parts may be added, and the upload completed or cancelled, only while pending.
    pub fn is_open(&self, now_secs: i64) -> bool {
        self.status == UploadStatus::Pending && now_secs < self.expires_at
    }
}

/// A status change of an upload: allowed only from `pending`, before it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadTransition {
    Complete(Box<FileObject>),
    Cancel,
}

impl UploadTransition {
    pub fn to(&self) -> UploadStatus {
        match self {
            Self::Complete(_) => UploadStatus::Completed,
            Self::Cancel => UploadStatus::Cancelled,
        }
    }

    /// Applies the change if `upload` is still open; `false` leaves it untouched.
    pub fn apply(&self, upload: &mut Upload, now_secs: i64) -> bool {
        if !upload.is_open(now_secs) {
            return false;
        }
        upload.status = self.to();
        if let Self::Complete(file) = self {
            upload.file = Some((**file).clone());
        }
        true
    }
}

/// An upload id: `upload_` + 32 hex digits when we issue it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(String);

impl TryFrom<String> for UploadId {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("not an upload id: {value:?}"))
    }
}

impl From<UploadId> for String {
    fn from(id: UploadId) -> Self {
        id.0
    }
}

/// A part id: `part_` + 32 hex digits when we issue it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartId(String);

fn plausible(value: &str, prefix: &str) -> bool {
    value.strip_prefix(prefix).is_some_and(|suffix| {
        !suffix.is_empty()
            && suffix.len() <= 64
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

impl UploadId {
    pub fn parse(value: &str) -> Option<Self> {
        plausible(value, "upload_").then(|| Self(value.to_string()))
    }

    pub fn random() -> Self {
        Self(format!("upload_{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartId {
    /// Also the last segment of the part's storage key: the charset keeps it safe there.
    pub fn parse(value: &str) -> Option<Self> {
        plausible(value, "part_").then(|| Self(value.to_string()))
    }

    pub fn random() -> Self {
        Self(format!("part_{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for PartId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub enum UploadPartObjectType {
    #[default]
    #[serde(rename = "upload.part")]
    UploadPart,
}

/// The OpenAI UploadPart object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UploadPart {
    pub id: String,
    pub object: UploadPartObjectType,
    pub created_at: i64,
    pub upload_id: String,
}

impl UploadPart {
    pub fn new(id: &PartId, upload_id: &UploadId, created_at: i64) -> Self {
        Self {
            id: id.to_string(),
            object: UploadPartObjectType::UploadPart,
            created_at,
            upload_id: upload_id.to_string(),
        }
    }
}

/// A validated `POST /v1/uploads` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateUpload {
    pub filename: String,
    pub purpose: FilePurpose,
    pub bytes: u64,
    pub mime_type: String,
    pub expires_after: Option<ExpiresAfter>,
}

/// Every field the create body may have (also the properties of its OpenAPI schema).
pub const CREATE_FIELDS: [&str; 5] = ["filename", "purpose", "bytes", "mime_type", "expires_after"];

impl CreateUpload {
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        let mut fields = json_object(body)?;
        if let Some(unknown) = fields.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
            return Err(unknown_parameter(unknown));
        }
        let filename = check_filename("filename", &required_string(&mut fields, "filename")?)?;
        let purpose = parse_upload_purpose(&required_string(&mut fields, "purpose")?)?;
        let mime_type = required_string(&mut fields, "mime_type")?;
        if mime_type.is_empty() || mime_type.len() > 255 {
            return Err(ValidationError::invalid_value(
                "mime_type",
                "Invalid 'mime_type': expected 1 to 255 characters.".to_string(),
            ));
        }
        let limit = max_file_bytes(purpose);
        let bytes = match fields.remove("bytes") {
            None => return Err(ValidationError::missing("bytes")),
            Some(Value::Number(n)) => n.as_u64().filter(|b| *b <= limit).ok_or_else(|| {
                ValidationError::invalid_value(
                    "bytes",
                    format!(
                        "Invalid 'bytes': expected an integer from 0 to {limit} for purpose '{purpose}', but got {n}."
                    ),
                )
            })?,
            Some(other) => {
                return Err(ValidationError::invalid_type(
                    "bytes",
                    "an integer",
                    JsonKind::of(&other),
                ))
            }
        };
        let expires_after = match fields.remove("expires_after") {
            None | Some(Value::Null) => None,
            Some(value) => Some(ExpiresAfter::from_json(&value)?),
        };
        Ok(Self {
            filename,
            purpose,
            bytes,
            mime_type,
            expires_after,
        })
    }

    pub fn new_upload(&self, id: &UploadId, created_at: i64) -> Upload {
        Upload {
            id: id.clone(),
            object: UploadObjectType::Upload,
            bytes: self.bytes,
            created_at,
            expires_at: created_at + UPLOAD_EXPIRY_SECONDS,
            filename: self.filename.clone(),
            purpose: self.purpose,
            status: UploadStatus::Pending,
            file: None,
        }
    }
}

/// A validated `POST /v1/uploads/{upload_id}/complete` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteUpload {
    pub part_ids: Vec<PartId>,
    /// Lower-case hex, as compared with the digest of the assembled file.
    pub md5: Option<String>,
}

impl CompleteUpload {
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        let mut fields = json_object(body)?;
        if let Some(unknown) = fields.keys().find(|k| *k != "part_ids" && *k != "md5") {
            return Err(unknown_parameter(unknown));
        }
        let part_ids = match fields.remove("part_ids") {
            None => return Err(ValidationError::missing("part_ids")),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(ValidationError::invalid_type(
                    "part_ids",
                    "an array",
                    JsonKind::of(&other),
                ))
            }
        };
        if part_ids.len() > MAX_PARTS {
            return Err(ValidationError::invalid_value(
                "part_ids",
                format!("Invalid 'part_ids': at most {MAX_PARTS} parts may be named."),
            ));
        }
        let mut ids: Vec<PartId> = Vec::with_capacity(part_ids.len());
        for (index, item) in part_ids.into_iter().enumerate() {
            let param = format!("part_ids[{index}]");
            let Value::String(text) = item else {
                return Err(ValidationError::invalid_type(
                    &param,
                    "a string",
                    JsonKind::of(&item),
                ));
            };
            let id = PartId::parse(&text).ok_or_else(|| unknown_part(&param, &text))?;
            if ids.contains(&id) {
                return Err(ValidationError::invalid_value(
                    &param,
                    format!("Invalid '{param}': part '{id}' is named twice."),
                ));
            }
            ids.push(id);
        }
        let md5 = match fields.remove("md5") {
            None | Some(Value::Null) => None,
            // The SDK sends an empty md5 for "none given" in some versions.
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(s.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(ValidationError::invalid_value(
                    "md5",
                    "Invalid 'md5': expected the MD5 digest of the file as 32 hexadecimal digits."
                        .to_string(),
                ))
            }
        };
        Ok(Self { part_ids: ids, md5 })
    }
}

pub fn unknown_part(param: &str, id: &str) -> ValidationError {
    ValidationError::invalid_value(
        param,
        format!(
            "Invalid '{param}': no part '{}' was added to this upload.",
            excerpt(id)
        ),
    )
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, ValidationError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ValidationError::new(
            "invalid_json",
            None,
            format!("The request body is not valid JSON ({e})."),
        )
    })?;
    match value {
        Value::Object(fields) => Ok(fields),
        other => Err(ValidationError::new(
            "invalid_type",
            None,
            format!(
                "The request body must be a JSON object, but got {} instead.",
                JsonKind::of(&other)
            ),
        )),
    }
}

fn required_string(fields: &mut Map<String, Value>, name: &str) -> Result<String, ValidationError> {
    match fields.remove(name) {
        None => Err(ValidationError::missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ValidationError::invalid_type(
            name,
            "a string",
            JsonKind::of(&other),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::new_file::file_expires_at;
    use serde_json::json;

    fn create(body: Value) -> Result<CreateUpload, ValidationError> {
        CreateUpload::from_json(body.to_string().as_bytes())
    }

    fn valid() -> Value {
        json!({"filename": "in.jsonl", "purpose": "batch", "bytes": 10, "mime_type": "application/jsonl"})
    }

    #[test]
    fn a_valid_create_parses_and_the_upload_expires_after_an_hour() {
        let mut body = valid();
        body["expires_after"] = json!({"anchor": "created_at", "seconds": 7200});
        let request = create(body).unwrap();
        assert_eq!(request.expires_after, Some(ExpiresAfter { seconds: 7200 }));
        let upload = request.new_upload(&UploadId::random(), 100);
        assert_eq!(upload.expires_at, 3700);
        assert_eq!(upload.status, UploadStatus::Pending);
        assert_eq!(upload.clone().as_of(3699).status, UploadStatus::Pending);
        assert_eq!(upload.as_of(3700).status, UploadStatus::Expired);
    }

    #[test]
    fn every_bad_create_names_its_field() {
        for (field, value, param) in [
            ("purpose", json!("batch_output"), "purpose"),
            ("purpose", json!("nope"), "purpose"),
            ("bytes", json!(-1), "bytes"),
            ("bytes", json!(300 * 1024 * 1024), "bytes"),
            ("bytes", json!("10"), "bytes"),
            ("filename", json!(""), "filename"),
            ("filename", json!(7), "filename"),
            ("mime_type", json!(""), "mime_type"),
            (
                "expires_after",
                json!({"anchor": "now", "seconds": 3600}),
                "expires_after.anchor",
            ),
            (
                "expires_after",
                json!({"anchor": "created_at", "seconds": 60}),
                "expires_after.seconds",
            ),
            ("extra", json!(1), "extra"),
        ] {
            let mut body = valid();
            body[field] = value;
            let error = create(body).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(param), "{error:?}");
        }
        for field in ["filename", "purpose", "bytes", "mime_type"] {
            let mut body = valid();
            body.as_object_mut().unwrap().remove(field);
            assert_eq!(create(body).unwrap_err().param.as_deref(), Some(field));
        }
    }

    #[test]
    fn batch_files_expire_after_30_days_by_default_and_others_never() {
        assert_eq!(
            file_expires_at(FilePurpose::Batch, None, 10),
            Some(10 + 30 * 86_400)
        );
        assert_eq!(file_expires_at(FilePurpose::UserData, None, 10), None);
        assert_eq!(
            file_expires_at(
                FilePurpose::UserData,
                Some(ExpiresAfter { seconds: 3600 }),
                10
            ),
            Some(3610)
        );
    }

    #[test]
    fn complete_bodies_are_checked() {
        let ok = CompleteUpload::from_json(
            json!({"part_ids": ["part_a", "part_b"], "md5": "D41D8CD98F00B204E9800998ECF8427E"})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.part_ids.len(), 2);
        assert_eq!(ok.md5.as_deref(), Some("d41d8cd98f00b204e9800998ecf8427e"));
        for (body, param) in [
            (json!({}), Some("part_ids")),
            (json!({"part_ids": "part_a"}), Some("part_ids")),
            (json!({"part_ids": [1]}), Some("part_ids[0]")),
            (json!({"part_ids": ["file-1"]}), Some("part_ids[0]")),
            (
                json!({"part_ids": ["part_a", "part_a"]}),
                Some("part_ids[1]"),
            ),
            (json!({"part_ids": [], "md5": "xyz"}), Some("md5")),
            (json!([]), None),
        ] {
            let error = CompleteUpload::from_json(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(error.param.as_deref(), param, "{body}");
        }
    }

    #[test]
    fn transitions_leave_only_from_an_open_upload() {
        let upload = create(valid()).unwrap().new_upload(&UploadId::random(), 0);
        let mut cancelled = upload.clone();
        assert!(UploadTransition::Cancel.apply(&mut cancelled, 10));
        assert_eq!(cancelled.status, UploadStatus::Cancelled);
        assert!(!UploadTransition::Cancel.apply(&mut cancelled, 10));
        let mut expired = upload;
        assert!(!UploadTransition::Cancel.apply(&mut expired, UPLOAD_EXPIRY_SECONDS));
        assert_eq!(expired.status, UploadStatus::Pending);
    }
}
