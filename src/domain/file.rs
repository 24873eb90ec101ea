//! The OpenAI File object.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The OpenAI File object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileObject {
    #[schema(value_type = String)]
    pub id: FileId,
    pub object: FileObjectType,
    pub bytes: u64,
    pub created_at: i64,
    #[schema(required = true)]
    pub expires_at: Option<i64>,
    pub filename: String,
    pub purpose: FilePurpose,
    /// Deprecated by OpenAI but still required by its schema.
    pub status: FileStatus,
    #[schema(required = true)]
    pub status_details: Option<String>,
}

/// A file's status: ours are stored whole and checked before they are
/// recorded, so always `processed` (OpenAI's `uploaded` and `error` never occur).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    #[default]
    Processed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileObjectType {
    #[default]
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum FilePurpose {
    #[serde(rename = "batch")]
    Batch,
    /// Output and error files of batches; never uploaded by clients.
    #[serde(rename = "batch_output")]
    BatchOutput,
    #[serde(rename = "user_data")]
    UserData,
    #[serde(rename = "assistants")]
    Assistants,
    #[serde(rename = "fine-tune")]
    FineTune,
    #[serde(rename = "vision")]
    Vision,
    #[serde(rename = "evals")]
    Evals,
}

impl FilePurpose {
    pub const ALL: [FilePurpose; 7] = [
        Self::Batch,
        Self::BatchOutput,
        Self::UserData,
        Self::Assistants,
        Self::FineTune,
        Self::Vision,
        Self::Evals,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::BatchOutput => "batch_output",
            Self::UserData => "user_data",
            Self::Assistants => "assistants",
            Self::FineTune => "fine-tune",
            Self::Vision => "vision",
            Self::Evals => "evals",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == value)
    }

    /// Purposes a client may upload with.
    pub fn is_uploadable(self) -> bool {
        self != Self::BatchOutput
    }
}

impl fmt::Display for FilePurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file id as it appears in paths, cursors and `input_file_id`.
///
/// Ids we issue are `file-` + 32 hex digits; anything outside a looser shape is
/// unknown without a storage round trip.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileId(String);

impl FileId {
    pub fn parse(value: &str) -> Option<Self> {
        let suffix = value.strip_prefix("file-")?;
        let plausible = !suffix.is_empty()
            && suffix.len() <= 64
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        plausible.then(|| Self(value.to_string()))
    }

    pub fn random() -> Self {
        Self(format!("file-{}", uuid::Uuid::new_v4().simple()))
    }

    /// An id derived from hex digits (`domain::execution`), in the shape we issue.
    pub(crate) fn from_derived(hex_digits: &str) -> Self {
        Self(format!("file-{hex_digits}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FileId {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("not a file id: {value:?}"))
    }
}

impl From<FileId> for String {
    fn from(id: FileId) -> Self {
        id.0
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_round_trip_and_batch_output_is_not_uploadable() {
        for purpose in FilePurpose::ALL {
            assert_eq!(FilePurpose::parse(purpose.as_str()), Some(purpose));
            let json = serde_json::to_string(&purpose).unwrap();
            assert_eq!(json, format!("\"{}\"", purpose.as_str()));
        }
        assert!(!FilePurpose::BatchOutput.is_uploadable());
        assert!(FilePurpose::FineTune.is_uploadable());
    }

    #[test]
    fn file_ids_outside_the_plausible_shape_are_rejected() {
        assert!(FileId::parse(FileId::random().as_str()).is_some());
        for bad in [
            "",
            "file-",
            "batch_1",
            "file-a/b",
            &format!("file-{}", "a".repeat(65)),
        ] {
            assert!(FileId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
