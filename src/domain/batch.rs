//! The Batch object and its status machine.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::file::FileId;

/// The OpenAI Batch object. Every field is rendered, `null` where unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Batch {
    #[schema(value_type = String)]
    pub id: BatchId,
    pub object: BatchObjectType,
    pub endpoint: String,
    #[schema(required = true)]
    pub errors: Option<BatchErrors>,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: BatchStatus,
    #[schema(required = true, value_type = Option<String>)]
    pub output_file_id: Option<FileId>,
    #[schema(required = true, value_type = Option<String>)]
    pub error_file_id: Option<FileId>,
    pub created_at: i64,
    #[schema(required = true)]
    pub in_progress_at: Option<i64>,
    #[schema(required = true)]
    pub expires_at: Option<i64>,
    #[schema(required = true)]
    pub finalizing_at: Option<i64>,
    #[schema(required = true)]
    pub completed_at: Option<i64>,
    #[schema(required = true)]
    pub failed_at: Option<i64>,
    #[schema(required = true)]
    pub expired_at: Option<i64>,
    #[schema(required = true)]
    pub cancelling_at: Option<i64>,
    #[schema(required = true)]
    pub cancelled_at: Option<i64>,
    pub request_counts: RequestCounts,
    #[schema(required = true)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[schema(required = true)]
    pub model: Option<String>,
    #[schema(required = true)]
    pub usage: Option<Usage>,
}

/// The constant `"batch"`, typed so it cannot drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchObjectType {
    #[default]
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequestCounts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchErrors {
    pub object: String,
    pub data: Vec<BatchError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchError {
    pub code: String,
    pub message: String,
    #[schema(required = true)]
    pub param: Option<String>,
    #[schema(required = true)]
    pub line: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InputTokensDetails {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    pub const ALL: [BatchStatus; 8] = [
        Self::Validating,
        Self::Failed,
        Self::InProgress,
        Self::Finalizing,
        Self::Completed,
        Self::Expired,
        Self::Cancelling,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validating => "validating",
            Self::Failed => "failed",
            Self::InProgress => "in_progress",
            Self::Finalizing => "finalizing",
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The Batch field stamped when a batch enters this status; `validating`
    /// is the initial status, stamped by `created_at` at creation only.
    pub fn timestamp_field(self) -> Option<&'static str> {
        match self {
            Self::Validating => None,
            Self::Failed => Some("failed_at"),
            Self::InProgress => Some("in_progress_at"),
            Self::Finalizing => Some("finalizing_at"),
            Self::Completed => Some("completed_at"),
            Self::Expired => Some("expired_at"),
            Self::Cancelling => Some("cancelling_at"),
            Self::Cancelled => Some("cancelled_at"),
        }
    }
}

impl BatchStatus {
    /// No work follows a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Failed | Self::Completed | Self::Expired | Self::Cancelled
        )
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status change, valid only from the listed statuses.
///
/// Adapters turn `from` into a conditional write, so a transition racing another
/// one can never overwrite it: exactly one of them finds its expected status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: &'static [BatchStatus],
    pub to: BatchStatus,
    /// Unix seconds, written to the field named by `to.timestamp_field()`.
    pub at: i64,
    /// Fields written together with the status, in the same conditional write.
    pub patch: BatchPatch,
}

/// Batch fields that change with a status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchPatch {
    pub errors: Option<BatchErrors>,
    pub request_counts: Option<RequestCounts>,
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub output_file_id: Option<FileId>,
    pub error_file_id: Option<FileId>,
}

impl Transition {
    pub fn new(from: &'static [BatchStatus], to: BatchStatus, at: i64) -> Self {
        Self {
            from,
            to,
            at,
            patch: BatchPatch::default(),
        }
    }

    /// `validating` or `in_progress` → `cancelling`. The worker finishes the job.
    pub fn cancel(at: i64) -> Self {
        Self::new(
            &[BatchStatus::Validating, BatchStatus::InProgress],
            BatchStatus::Cancelling,
            at,
        )
    }

    /// `validating` → `failed`, with the errors found in the input.
    pub fn fail_validation(at: i64, errors: BatchErrors) -> Self {
        Self {
            patch: BatchPatch {
                errors: Some(errors),
                ..BatchPatch::default()
            },
            ..Self::new(&[BatchStatus::Validating], BatchStatus::Failed, at)
        }
    }

    /// `validating` → `in_progress`, ready for execution; usage starts at zero
    /// so every committed segment can add to it.
    pub fn start(at: i64, total: u64, model: Option<String>) -> Self {
        Self {
            patch: BatchPatch {
                request_counts: Some(RequestCounts {
                    total,
                    ..RequestCounts::default()
                }),
                model,
                usage: Some(Usage::default()),
                ..BatchPatch::default()
            },
            ..Self::new(&[BatchStatus::Validating], BatchStatus::InProgress, at)
        }
    }

    /// `cancelling` → `cancelled`, once nothing runs for the batch any more.
    pub fn finish_cancel(at: i64) -> Self {
        Self::new(&[BatchStatus::Cancelling], BatchStatus::Cancelled, at)
    }

    /// Applies the transition to an in-memory batch, if its status allows it.
    pub fn apply(&self, batch: &mut Batch) -> bool {
        if !self.from.contains(&batch.status) {
            return false;
        }
        batch.status = self.to;
        let stamp = Some(self.at);
        match self.to {
            BatchStatus::Validating => {}
            BatchStatus::Failed => batch.failed_at = stamp,
            BatchStatus::InProgress => batch.in_progress_at = stamp,
            BatchStatus::Finalizing => batch.finalizing_at = stamp,
            BatchStatus::Completed => batch.completed_at = stamp,
            BatchStatus::Expired => batch.expired_at = stamp,
            BatchStatus::Cancelling => batch.cancelling_at = stamp,
            BatchStatus::Cancelled => batch.cancelled_at = stamp,
        }
        if let Some(errors) = &self.patch.errors {
            batch.errors = Some(errors.clone());
        }
        if let Some(counts) = self.patch.request_counts {
            batch.request_counts = counts;
        }
        if let Some(model) = &self.patch.model {
            batch.model = Some(model.clone());
        }
        if let Some(usage) = self.patch.usage {
            batch.usage = Some(usage);
        }
        if let Some(id) = &self.patch.output_file_id {
            batch.output_file_id = Some(id.clone());
        }
        if let Some(id) = &self.patch.error_file_id {
            batch.error_file_id = Some(id.clone());
        }
        true
    }
}

/// The batch window: OpenAI's `expires_at` is `created_at` + 24 h.
pub const COMPLETION_WINDOW_SECS: i64 = 24 * 60 * 60;

/// A batch id as it appears in paths and cursors.
///
/// Ids we issue are `batch_` + 32 hex digits. Anything outside a looser shape is
/// unknown by construction, so it is answered 404 without a storage round trip
/// (and cannot reach DynamoDB's 1 KB key limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BatchId(String);

impl BatchId {
    pub fn parse(value: &str) -> Option<Self> {
        let suffix = value.strip_prefix("batch_")?;
        let plausible = !suffix.is_empty()
            && suffix.len() <= 64
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        plausible.then(|| Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_trusted(value: String) -> Self {
        Self(value)
    }
}

impl TryFrom<String> for BatchId {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("not a batch id: {value:?}"))
    }
}

impl From<BatchId> for String {
    fn from(id: BatchId) -> Self {
        id.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(status: BatchStatus) -> Batch {
        Batch {
            id: BatchId::parse("batch_1").unwrap(),
            object: BatchObjectType::Batch,
            endpoint: "/v1/chat/completions".into(),
            errors: None,
            input_file_id: "file-1".into(),
            completion_window: "24h".into(),
            status,
            output_file_id: None,
            error_file_id: None,
            created_at: 1,
            in_progress_at: None,
            expires_at: Some(1 + COMPLETION_WINDOW_SECS),
            finalizing_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            cancelling_at: None,
            cancelled_at: None,
            request_counts: RequestCounts::default(),
            metadata: None,
            model: None,
            usage: None,
        }
    }

    #[test]
    fn cancel_is_allowed_only_from_validating_and_in_progress() {
        for status in BatchStatus::ALL {
            let mut b = batch(status);
            let applied = Transition::cancel(42).apply(&mut b);
            let allowed = matches!(status, BatchStatus::Validating | BatchStatus::InProgress);
            assert_eq!(applied, allowed, "{status}");
            if allowed {
                assert_eq!(b.status, BatchStatus::Cancelling);
                assert_eq!(b.cancelling_at, Some(42));
            } else {
                assert_eq!(b, batch(status), "a refused transition changes nothing");
            }
        }
    }

    #[test]
    fn status_names_round_trip() {
        for status in BatchStatus::ALL {
            assert_eq!(BatchStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
    }

    #[test]
    fn batch_ids_outside_the_plausible_shape_are_rejected() {
        assert!(BatchId::parse("batch_0123abcdef").is_some());
        for bad in [
            "",
            "batch_",
            "file-1",
            "batch_a/b",
            &format!("batch_{}", "a".repeat(65)),
        ] {
            assert!(BatchId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
