//! Creating and cancelling batches: the decisions of the Batches API.

use crate::clock::Clock;
use crate::domain::idempotency::random_batch_id;
use crate::domain::{
    Batch, BatchId, BatchStatus, CreateBatch, Fingerprint, IdempotencyKey, QuotaExceeded, TenantId,
    Transition,
};
use crate::queue::{WorkItem, WorkQueue};
use crate::store::{BatchRecord, BatchStore, CreateOutcome, StoreError, TransitionOutcome};
use crate::telemetry::ErrorChain;

/// What the batch use cases work with.
pub struct Batches<'a> {
    pub store: &'a dyn BatchStore,
    /// Where new work is announced, when nothing else does (in AWS the table's
    /// stream announces every change: `None`).
    pub work: Option<&'a dyn WorkQueue>,
    pub clock: &'a dyn Clock,
    /// How long a batch record, and with it its idempotency key, is kept.
    pub retention_secs: i64,
}

/// How a create ended.
#[derive(Debug)]
pub enum Created {
    New(Batch),
    /// The batch an earlier request with the same key and parameters created.
    Replayed(Batch),
}

#[derive(Debug, thiserror::Error)]
pub enum BatchesError {
    #[error("no batch {0}")]
    NotFound(BatchId),
    #[error("idempotency key {key} was used with different parameters")]
    IdempotencyConflict { key: String },
    #[error("batch {id} is {status} and cannot be cancelled")]
    CannotCancel { id: BatchId, status: BatchStatus },
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Batches<'_> {
    /// One conditional write decides between a new batch and a replay: the id
    /// derives from the tenant and the key, so concurrent retries meet there.
    #[tracing::instrument(skip_all, fields(%tenant))]
    pub async fn create(
        &self,
        tenant: TenantId,
        request: &CreateBatch,
        key: Option<IdempotencyKey>,
    ) -> Result<Created, BatchesError> {
        let id = match &key {
            Some(key) => key.batch_id(&tenant),
            None => random_batch_id(),
        };
        let now_us = self.clock.now_micros();
        let created_at = now_us.div_euclid(1_000_000);
        let record = BatchRecord {
            batch: request.new_batch(&id, created_at),
            fingerprint: Fingerprint::of(request),
            output_expires_after: request.output_expires_after.clone(),
            created_us: now_us,
            purge_at: created_at + self.retention_secs,
            sealed: false,
            max_concurrency: request.max_concurrency,
            tenant,
        };
        match self.store.create(&record, created_at).await? {
            CreateOutcome::Created => {
                tracing::info!(batch_id = %id, "batch created");
                crate::fault::crash_point("after_batch_stored");
                self.announce(WorkItem::ValidateBatch {
                    tenant: record.tenant,
                    batch_id: id,
                })
                .await;
                Ok(Created::New(record.batch))
            }
            CreateOutcome::Existing(existing) => match key {
                Some(_) if existing.fingerprint == record.fingerprint => {
                    Ok(Created::Replayed(existing.batch))
                }
                Some(key) => Err(BatchesError::IdempotencyConflict {
                    key: key.to_string(),
                }),
                // A random 128-bit id collided: not the client's doing.
                None => Err(StoreError::Corrupt(format!("random batch id {id} collided")).into()),
            },
            CreateOutcome::QuotaExceeded(exceeded) => {
                tracing::info!(code = exceeded.code(), "batch refused: quota");
                Err(exceeded.into())
            }
        }
    }

    /// `validating` or `in_progress` → `cancelling`; the worker then brings
    /// the batch to `cancelled` with its partial results.
    #[tracing::instrument(skip_all, fields(%tenant, batch_id = %id))]
    pub async fn cancel(&self, tenant: &TenantId, id: &BatchId) -> Result<Batch, BatchesError> {
        let now = self.clock.now_secs();
        match self
            .store
            .transition(tenant, id, Transition::cancel(now), now)
            .await?
        {
            TransitionOutcome::Applied(batch) => {
                tracing::info!("batch cancelling");
                crate::fault::crash_point("after_cancelling_stored");
                self.announce(WorkItem::FinishCancel {
                    tenant: tenant.clone(),
                    batch_id: id.clone(),
                })
                .await;
                Ok(*batch)
            }
            // Cancelling twice is not an error: the first cancel already won.
            TransitionOutcome::Refused(batch)
                if matches!(
                    batch.status,
                    BatchStatus::Cancelling | BatchStatus::Cancelled
                ) =>
            {
                Ok(*batch)
            }
            TransitionOutcome::Refused(batch) => Err(BatchesError::CannotCancel {
                id: id.clone(),
                status: batch.status,
            }),
            TransitionOutcome::NotFound => Err(BatchesError::NotFound(id.clone())),
        }
    }

    /// Tells the in-process worker about new work. Best effort by design: the
    /// record is already stored, and the reconciler re-drives anything this misses.
    async fn announce(&self, item: WorkItem) {
        if let Some(queue) = self.work {
            if let Err(error) = queue.enqueue(&item).await {
                tracing::warn!(error = %ErrorChain(&error), ?item, "could not announce work; the reconciler will pick it up");
            }
        }
    }
}
