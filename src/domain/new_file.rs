//! The parameters of a new file, whichever way its bytes come (`POST
//! /v1/files` or a completed Upload): purpose, name, size limit and expiry.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::file::FilePurpose;
use super::validation::{JsonKind, ValidationError};

/// `expires_after`: OpenAI's `FileExpirationAfter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiresAfter {
    /// Always `created_at`, the only anchor OpenAI defines.
    pub seconds: i64,
}

/// From OpenAI's `FileExpirationAfter` schema: one hour to 30 days.
pub const EXPIRY_SECONDS: std::ops::RangeInclusive<i64> = 3600..=2_592_000;
/// "By default, files with `purpose=batch` expire after 30 days and all other
/// files are persisted until they are manually deleted."
pub const BATCH_FILE_DEFAULT_EXPIRY_SECONDS: i64 = 30 * 86_400;
/// OpenAI's limit for one file ("individual files can be up to 512 MB").
pub const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// Long enough for any real file name, short enough for keys and log lines.
pub const MAX_FILENAME_CHARS: usize = 512;

impl ExpiresAfter {
    /// From the anchor and seconds as they arrive, each possibly absent.
    pub fn parse(anchor: Option<&str>, seconds: Option<&Value>) -> Result<Self, ValidationError> {
        const ANCHOR: &str = "expires_after.anchor";
        const SECONDS: &str = "expires_after.seconds";
        let anchor = anchor.ok_or_else(|| ValidationError::missing(ANCHOR))?;
        if anchor != "created_at" {
            return Err(ValidationError::invalid_value(
                ANCHOR,
                format!(
                    "Invalid '{ANCHOR}': '{}'. Supported values are: created_at.",
                    excerpt(anchor)
                ),
            ));
        }
        let seconds = match seconds {
            None => return Err(ValidationError::missing(SECONDS)),
            Some(Value::Number(n)) => n.as_i64(),
            // Multipart forms carry every value as text.
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            Some(other) => {
                return Err(ValidationError::invalid_type(
                    SECONDS,
                    "an integer",
                    JsonKind::of(other),
                ))
            }
        };
        match seconds {
            Some(seconds) if EXPIRY_SECONDS.contains(&seconds) => Ok(Self { seconds }),
            _ => Err(ValidationError::invalid_value(
                SECONDS,
                format!(
                    "Invalid '{SECONDS}': expected an integer from {} to {} (1 hour to 30 days).",
                    EXPIRY_SECONDS.start(),
                    EXPIRY_SECONDS.end()
                ),
            )),
        }
    }

    /// From the JSON body of `POST /v1/uploads`.
    pub fn from_json(value: &Value) -> Result<Self, ValidationError> {
        let Value::Object(fields) = value else {
            return Err(ValidationError::invalid_type(
                "expires_after",
                "an object",
                JsonKind::of(value),
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| *k != "anchor" && *k != "seconds") {
            return Err(unknown_parameter(&format!("expires_after.{unknown}")));
        }
        let anchor = match fields.get("anchor") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                return Err(ValidationError::invalid_type(
                    "expires_after.anchor",
                    "a string",
                    JsonKind::of(other),
                ))
            }
        };
        Self::parse(anchor, fields.get("seconds"))
    }
}

/// When a new file expires: as asked, else after 30 days for batch files, else never.
pub fn file_expires_at(
    purpose: FilePurpose,
    expires_after: Option<ExpiresAfter>,
    created_at: i64,
) -> Option<i64> {
    match (expires_after, purpose) {
        (Some(after), _) => Some(created_at + after.seconds),
        (None, FilePurpose::Batch) => Some(created_at + BATCH_FILE_DEFAULT_EXPIRY_SECONDS),
        (None, _) => None,
    }
}

/// A purpose a client may upload with (`batch_output` is ours alone).
pub fn parse_upload_purpose(value: &str) -> Result<FilePurpose, ValidationError> {
    FilePurpose::parse(value)
        .filter(|p| p.is_uploadable())
        .ok_or_else(|| {
            let allowed = FilePurpose::ALL
                .into_iter()
                .filter(|p| p.is_uploadable())
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", ");
            ValidationError::invalid_value(
                "purpose",
                format!(
                    "Invalid 'purpose': '{}'. Supported values are: {allowed}.",
                    excerpt(value)
                ),
            )
        })
}

/// A file name as a client gives it: kept as given, within bounds.
pub fn check_filename(param: &str, name: &str) -> Result<String, ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::invalid_value(
            param,
            format!("Invalid '{param}': the file name must not be empty."),
        ));
    }
    if name.chars().count() > MAX_FILENAME_CHARS || name.chars().any(char::is_control) {
        return Err(ValidationError::invalid_value(
            param,
            format!(
                "Invalid '{param}': a file name is at most {MAX_FILENAME_CHARS} characters, without control characters."
            ),
        ));
    }
    Ok(name.to_string())
}

/// The largest file a purpose allows.
pub fn max_file_bytes(purpose: FilePurpose) -> u64 {
    match purpose {
        FilePurpose::Batch => super::jsonl::MAX_FILE_BYTES,
        _ => MAX_FILE_BYTES,
    }
}

pub(super) fn unknown_parameter(name: &str) -> ValidationError {
    let name = excerpt(name);
    ValidationError::new(
        "unknown_parameter",
        name.clone(),
        format!("Unrecognized request argument supplied: {name}"),
    )
}

/// Echoes at most 100 characters of a bad value back to the client.
pub(super) fn excerpt(value: &str) -> String {
    const CHARS: usize = 100;
    if value.chars().count() <= CHARS {
        value.to_string()
    } else {
        format!("{}…", value.chars().take(CHARS).collect::<String>())
    }
}
