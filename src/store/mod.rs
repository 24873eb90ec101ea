//! The ports of the store that holds batches, and their adapters.
//!
//! One port per concern: `BatchStore` (one atomic create, one read, one page
//! of a listing, one conditional status change), `ExecutionLedger` (segments
//! of running batches), `PendingBatches` (what the reconciler looks for) and
//! `QuotaLedger` (per-tenant quotas). Each adapter implements every port with
//! the fewest round trips its backend allows, and the conformance suites
//! (`tests/batch_conformance.rs`) run against all of them.

pub mod dynamodb;
pub mod embedded;
pub mod files;
pub mod keys;
pub mod leases;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::batch::Usage;
use crate::domain::execution::{BatchInstance, ByteRange, Segment, Segments};
use crate::domain::{
    Batch, BatchId, BatchStatus, Fingerprint, OutputExpiresAfter, QuotaExceeded, TenantId,
    Transition,
};

/// A batch as stored: the OpenAI object plus what only the service needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub tenant: TenantId,
    pub batch: Batch,
    pub fingerprint: Fingerprint,
    pub output_expires_after: Option<OutputExpiresAfter>,
    /// Creation time in microseconds: orders the listing more finely than `created_at`.
    pub created_us: i64,
    /// Unix seconds after which the record (and its idempotency key) is gone.
    /// DynamoDB's TTL deletes late, so every read checks it too.
    pub purge_at: i64,
    /// Set once results are being assembled: no segment commits after it.
    #[serde(default)]
    pub sealed: bool,
    /// The batch's own cap on lines in flight per shard (`max_concurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// One segment's results, committed together with the counts and usage it
/// adds to the batch. Each segment is a record of its own beside the batch,
/// so a commit costs the same however many came before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCommit {
    /// Where the segment's shard starts: its chain of segments begins there.
    pub shard_start: u64,
    pub start: u64,
    pub segment: Segment,
    pub usage: Usage,
    /// The batch's `purge_at`: the segment's record goes with the batch's.
    pub purge_at: i64,
}

/// What a segment commit found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written: the batch references this attempt's results.
    Committed,
    /// Another attempt committed this start first: nothing of this one is used.
    AlreadyCommitted,
    /// The batch takes no more results (sealed, or no longer running).
    Closed,
    NotFound,
}

/// The part of a batch a running segment polls: whether to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunState {
    pub status: BatchStatus,
    pub sealed: bool,
}

impl RunState {
    /// Whether a commit may still land: running (or cancelling, whose partial
    /// results are kept) and not yet sealed.
    pub fn accepts_results(&self) -> bool {
        !self.sealed
            && matches!(
                self.status,
                BatchStatus::InProgress | BatchStatus::Cancelling
            )
    }
}

impl BatchRecord {
    fn run_state(&self) -> RunState {
        RunState {
            status: self.batch.status,
            sealed: self.sealed,
        }
    }

    /// Whether a commit may still land (see [`RunState::accepts_results`]).
    pub fn accepts_results(&self) -> bool {
        self.run_state().accepts_results()
    }
}

impl BatchRecord {
    /// The listing sort key: newest first by creation, ties broken by id, so a
    /// cursor always names one exact position.
    pub fn created_order(&self) -> String {
        created_order(self.created_us, self.batch.id.as_str())
    }

    pub fn is_live(&self, now_secs: i64) -> bool {
        self.purge_at > now_secs
    }

    /// This batch as created, which the ids derived from it name.
    pub fn instance(&self) -> BatchInstance<'_> {
        BatchInstance {
            batch_id: self.batch.id.as_str(),
            created_us: self.created_us,
        }
    }
}

pub(crate) fn created_order(created_us: i64, id: &str) -> String {
    format!("{created_us:016}#{id}")
}

/// What a conditional create found.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// The record was written.
    Created,
    /// A live record with this id already existed and was left unchanged.
    Existing(Box<BatchRecord>),
    /// No record with this id exists, and the tenant has no room for another
    /// batch in flight: nothing was written.
    QuotaExceeded(QuotaExceeded),
}

/// One page of a tenant's batches, newest first.
#[derive(Debug, Clone, PartialEq)]
pub enum ListOutcome {
    Page {
        batches: Vec<Batch>,
        has_more: bool,
    },
    /// The `after` cursor names no live batch of this tenant.
    UnknownCursor,
}

/// What a conditional status change found.
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionOutcome {
    Applied(Box<Batch>),
    /// The batch exists but its status was not one the transition leaves from.
    Refused(Box<Batch>),
    NotFound,
}

impl TransitionOutcome {
    /// What happened, for logs: the batch itself holds user metadata, which
    /// stays out of them.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied(_) => "applied",
            Self::Refused(_) => "refused",
            Self::NotFound => "not_found",
        }
    }
}

/// A batch the reconciler found waiting too long in a non-terminal status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckBatch {
    pub tenant: TenantId,
    pub id: BatchId,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {operation} failed")]
    DynamoDb {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The embedded store's database failed; the port names no adapter type,
    /// the adapter converts its own errors (`store::embedded`).
    #[error("embedded store failed")]
    Embedded(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("embedded store worker stopped")]
    WorkerStopped(#[from] tokio::task::JoinError),
    #[error("embedded store write failed: {0}")]
    Write(String),
    #[error("embedded store writer thread stopped")]
    WriterStopped,
    /// One failure reported to every request that waited on the same lookup.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
}

#[async_trait]
pub trait BatchStore: Send + Sync {
    /// Writes `record` unless a live record with its tenant and id exists, in
    /// one atomic step: no read-then-write, so concurrent retries cannot both win.
    async fn create(
        &self,
        record: &BatchRecord,
        now_secs: i64,
    ) -> Result<CreateOutcome, StoreError>;

    /// A strongly consistent read of one live batch.
    async fn get(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<BatchRecord>, StoreError>;

    /// Up to `limit` live batches older than `after`, newest first.
    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<&BatchId>,
        limit: usize,
        now_secs: i64,
    ) -> Result<ListOutcome, StoreError>;

    /// Applies `transition` if, and only if, the stored status is one of `transition.from`.
    async fn transition(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        transition: Transition,
        now_secs: i64,
    ) -> Result<TransitionOutcome, StoreError>;
}

/// The execution ledger: which parts of a running batch are done. Each
/// committed segment is a record of its own beside the batch.
#[async_trait]
pub trait ExecutionLedger: Send + Sync {
    /// Commits one segment's results, unless its start is already committed or
    /// the batch takes no more results. Its cost does not depend on how many
    /// segments the batch already has.
    async fn commit_segment(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        commit: &SegmentCommit,
        now_secs: i64,
    ) -> Result<CommitOutcome, StoreError>;

    /// The committed segments of a live batch, by start offset.
    async fn segments(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Segments, StoreError>;

    /// Where work on `shard` resumes: the first offset its chain of committed
    /// segments does not cover, or `None` when the shard is done (or the batch
    /// is gone).
    async fn resume_point(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        shard: ByteRange,
        now_secs: i64,
    ) -> Result<Option<u64>, StoreError>;

    /// Only the status and seal of a live batch: what the cancel poll needs.
    async fn run_state(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<RunState>, StoreError>;

    /// Stops the batch taking results and returns it as sealed: the committed
    /// segments are final from then on.
    async fn seal(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<BatchRecord>, StoreError>;
}

/// What the reconciler reads to find work that may have been lost.
#[async_trait]
pub trait PendingBatches: Send + Sync {
    /// Restarts the stuck clock of a batch still in `status`, so one re-drive is
    /// not followed by another at every reconciler run while it is handled.
    /// Returns whether the batch was still in `status`.
    async fn touch_pending(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        status: BatchStatus,
        now_secs: i64,
    ) -> Result<bool, StoreError>;

    /// Up to `limit` batches of every tenant that entered the non-terminal
    /// `status` before `before_secs`, oldest first: work that may have been lost.
    async fn stuck(
        &self,
        status: BatchStatus,
        before_secs: i64,
        limit: usize,
    ) -> Result<Vec<StuckBatch>, StoreError>;
}

/// Per-tenant quotas (`domain::quota`), kept by the store that holds the
/// batches. With the store's quotas unlimited these cost nothing.
/// `BatchStore::create` takes a batch slot in the same step as it writes (or
/// refuses with `CreateOutcome::QuotaExceeded`); a transition to a terminal
/// status gives the slot and the batch's lines back.
#[async_trait]
pub trait QuotaLedger: Send + Sync {
    /// Reserves the `lines` request lines of a validated batch, unless they do
    /// not fit in its tenant's enqueued-line quota. Idempotent: reserving again
    /// for the same batch reserves nothing more.
    async fn reserve_lines(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        lines: u64,
        now_secs: i64,
    ) -> Result<Result<(), QuotaExceeded>, StoreError>;

    /// Gives back the batch's slot and its `lines`; a repeated release is a no-op.
    async fn release_quota(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        lines: u64,
    ) -> Result<(), StoreError>;

    /// Gives back what a crash between two steps left held: slots and lines
    /// of batches that are terminal or were never written, in tenants that
    /// have taken no slot since `idle_before_secs`. Returns how many it freed.
    async fn repair_quotas(
        &self,
        idle_before_secs: i64,
        now_secs: i64,
    ) -> Result<usize, StoreError>;
}
