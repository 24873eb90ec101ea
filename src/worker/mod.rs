//! Batch work: the validation stage, cancellation, and the reconciler that
//! re-drives work a crash or a lost message left behind.
//!
//! The same `Worker` runs in-process under `cargo run` (`local`) and in the
//! worker Lambda (`lambda`). Every step ends in a conditional transition, so
//! handling an item twice, or two workers racing, changes nothing.

mod assemble;
mod finalize;
mod input;
pub mod lambda;
mod lease;
pub mod local;
pub mod metrics;
mod shard;
mod validate;

pub use validate::validate_stream;

use std::sync::Arc;

use crate::clock::Clock;
use crate::domain::execution::ByteRange;
use crate::domain::BatchStatus;
use crate::files::{BlobError, BlobStore};
use crate::queue::{QueueError, WorkItem, WorkQueue};
use crate::store::files::FileStore;
use crate::store::leases::{ShardKey, ShardLeases};
use crate::store::{BatchStore, ExecutionLedger, PendingBatches, QuotaLedger, StoreError};
use crate::upstream::{RetryPolicy, UpstreamClient};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("reading the input file failed")]
    Read(#[from] std::io::Error),
}

/// How batches run: shard and segment sizes, concurrency, retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionConfig {
    /// How per-batch metrics are emitted: `BATCHES_METRICS_FORMAT` = `log` or `emf`.
    pub metrics: metrics::MetricsFormat,
    pub shard_bytes: u64,
    pub segment_lines: usize,
    pub concurrency: usize,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcilerConfig {
    /// Work untouched for this long is presumed lost and re-driven.
    pub stuck_after_secs: i64,
    pub interval_secs: u64,
    /// A running shard's lease lasts this long past its last heartbeat (three
    /// heartbeats a lease); once it runs out, the reconciler re-enqueues the shard.
    pub shard_lease_secs: i64,
}

pub struct Worker {
    pub batches: Arc<dyn BatchStore>,
    /// The segments of running batches.
    pub ledger: Arc<dyn ExecutionLedger>,
    /// What the reconciler looks for.
    pub pending: Arc<dyn PendingBatches>,
    pub quotas: Arc<dyn QuotaLedger>,
    pub files: Arc<dyn FileStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn WorkQueue>,
    /// Who runs which shard now (`lease`): with several workers, a dead one's
    /// shard is taken over once its lease runs out.
    pub leases: Arc<dyn ShardLeases>,
    pub upstream: UpstreamClient,
    pub clock: Arc<dyn Clock>,
    pub reconciler: ReconcilerConfig,
    pub execution: ExecutionConfig,
}

/// Reconciliation looks at this many stuck batches per status per run; the
/// next run takes the rest.
const RECONCILE_PAGE: usize = 100;

impl Worker {
    pub async fn handle(&self, item: &WorkItem) -> Result<(), WorkerError> {
        self.handle_until(item, None).await
    }

    /// Handles `item`, stopping work (and handing the rest back to the queue)
    /// before `deadline`: the end of a Lambda invocation.
    pub async fn handle_until(
        &self,
        item: &WorkItem,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), WorkerError> {
        use tracing::Instrument;
        // Every event of the item carries the batch (and shard) it works on.
        let span = tracing::info_span!("work", ?item);
        self.handle_item(item, deadline).instrument(span).await
    }

    async fn handle_item(
        &self,
        item: &WorkItem,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), WorkerError> {
        match item {
            WorkItem::ValidateBatch { tenant, batch_id } => self.validate(tenant, batch_id).await,
            WorkItem::FinishCancel { tenant, batch_id } => {
                self.finish_cancel(tenant, batch_id).await
            }
            WorkItem::RunShard {
                tenant,
                batch_id,
                start,
                end,
            } => {
                let shard = ByteRange {
                    start: *start,
                    end: *end,
                };
                self.run_leased_shard(tenant, batch_id, shard, deadline)
                    .await
            }
            WorkItem::Finalize { tenant, batch_id } => self.finalize(tenant, batch_id).await,
            WorkItem::WatchShard {
                tenant,
                batch_id,
                start,
                end,
                owner,
            } => {
                let key = ShardKey {
                    tenant: tenant.clone(),
                    batch: batch_id.clone(),
                    shard: ByteRange {
                        start: *start,
                        end: *end,
                    },
                };
                self.watch_shard(&key, owner).await
            }
        }
    }

    /// Re-enqueues shards whose lease ran out (a worker died while running
    /// them), and batches whose status has not moved for `stuck_after_secs`:
    /// the start of work lost between a create and its announcement, a crashed
    /// worker, or an expired message. Returns how many it re-drove.
    #[tracing::instrument(skip_all)]
    pub async fn reconcile(&self) -> Result<usize, WorkerError> {
        let now = self.clock.now_secs();
        let shards = self.take_over_leases(now, RECONCILE_PAGE, true).await?;
        let before = now - self.reconciler.stuck_after_secs;
        let redriven = shards + self.redrive_pending(before, now, RECONCILE_PAGE).await?;
        let freed = self.quotas.repair_quotas(before, now).await?;
        if freed > 0 {
            tracing::info!(freed, "reconciler gave back leaked quota");
        }
        self.sweep_expired_files(now).await?;
        Ok(redriven)
    }

    /// Re-drives every unfinished batch at once: for a process that owns its
    /// store (the local server on its data directory), whose start means that
    /// nobody runs any of them. Returns how many it re-drove.
    #[tracing::instrument(skip_all)]
    pub async fn resume_unfinished(&self) -> Result<usize, WorkerError> {
        let now = self.clock.now_secs();
        // Every lease is a dead process's: hand them all to the queue, so the
        // shards re-driven below are taken at once, not after their leases.
        self.take_over_leases(i64::MAX, usize::MAX, false).await?;
        // Up to and including this second: the process before this one may
        // have claimed a batch in it. One pass over them all, since a claim
        // leaves a batch pending, just since `now`.
        self.redrive_pending(now + 1, now, usize::MAX).await
    }

    /// Claims and re-drives batches of every non-terminal status that entered
    /// it before `before`, up to `limit` of each.
    async fn redrive_pending(
        &self,
        before: i64,
        now: i64,
        limit: usize,
    ) -> Result<usize, WorkerError> {
        let mut redriven = 0;
        for status in [
            BatchStatus::Validating,
            BatchStatus::InProgress,
            BatchStatus::Finalizing,
            BatchStatus::Cancelling,
        ] {
            for stuck in self.pending.stuck(status, before, limit).await? {
                // Claim the re-drive first: the next run leaves the batch alone for
                // another stuck period, and of two racing reconcilers one wins.
                if !self
                    .pending
                    .touch_pending(&stuck.tenant, &stuck.id, status, now)
                    .await?
                {
                    continue;
                }
                tracing::info!(batch_id = %stuck.id, tenant = %stuck.tenant, %status, "reconciler re-drives stuck batch");
                crate::fault::crash_point("reconcile_after_claim");
                let (tenant, batch_id) = (stuck.tenant.clone(), stuck.id.clone());
                match status {
                    BatchStatus::InProgress => {
                        self.redrive_execution(&stuck.tenant, &stuck.id).await?
                    }
                    BatchStatus::Finalizing => {
                        self.queue
                            .enqueue(&WorkItem::Finalize { tenant, batch_id })
                            .await?
                    }
                    BatchStatus::Cancelling => {
                        self.queue
                            .enqueue(&WorkItem::FinishCancel { tenant, batch_id })
                            .await?
                    }
                    _ => {
                        self.queue
                            .enqueue(&WorkItem::ValidateBatch { tenant, batch_id })
                            .await?
                    }
                }
                redriven += 1;
            }
        }
        Ok(redriven)
    }

    /// Deletes the bytes of files whose records the store has just expired
    /// (the embedded store; DynamoDB's TTL and the table stream do this in AWS).
    async fn sweep_expired_files(&self, now: i64) -> Result<(), WorkerError> {
        for record in self.files.sweep_expired_files(now, RECONCILE_PAGE).await? {
            self.blobs.delete(&record.blob_key).await?;
            tracing::info!(file_id = %record.file.id, tenant = %record.tenant, "expired file deleted");
        }
        Ok(())
    }

    /// Deletes the bytes of a file whose record DynamoDB's TTL removed.
    pub async fn delete_expired_blob(&self, blob_key: &str) -> Result<(), WorkerError> {
        self.blobs.delete(blob_key).await?;
        tracing::info!(blob_key, "bytes of an expired file deleted");
        Ok(())
    }
}
