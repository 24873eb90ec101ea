//! The pure domain: batch model, status machine, create-request validation and
//! the idempotency fingerprint. No I/O, no HTTP, no AWS types.

pub mod api_key;
pub mod batch;
pub mod batch_file;
pub mod create;
pub mod execution;
pub mod file;
pub mod idempotency;
pub mod jsonl;
pub mod new_file;
pub mod quota;
pub mod request_line;
pub mod tenant;
pub mod upload;
pub mod validation;

pub use batch::{
    Batch, BatchError, BatchErrors, BatchId, BatchPatch, BatchStatus, RequestCounts, Transition,
};
pub use create::{CreateBatch, Endpoint, OutputExpiresAfter};
pub use file::{FileId, FileObject, FilePurpose};
pub use idempotency::{Fingerprint, IdempotencyKey};
pub use quota::{QuotaExceeded, Quotas};
pub use tenant::TenantId;
pub use validation::ValidationError;
