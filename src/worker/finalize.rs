//! Ending a batch: sealing its ledger once every line is done (or it was
//! cancelled or expired), assembling its files and the terminal transition.

use super::input::Input;
use super::shard::is_expired;
use super::{Worker, WorkerError};
use crate::domain::execution::Segment;
use crate::domain::{BatchId, BatchStatus, TenantId, Transition};
use crate::fault::crash_point;
use crate::store::{BatchRecord, TransitionOutcome};

impl Worker {
    /// `in_progress` → `finalizing` → `completed`, with the output and error files.
    #[tracing::instrument(skip_all)]
    pub(super) async fn finalize(
        &self,
        tenant: &TenantId,
        id: &BatchId,
    ) -> Result<(), WorkerError> {
        let now = self.clock.now_secs();
        let Some(record) = self.batches.get(tenant, id, now).await? else {
            return Ok(());
        };
        match record.batch.status {
            BatchStatus::InProgress => {
                let counts = record.batch.request_counts;
                if counts.completed + counts.failed < counts.total {
                    if is_expired(&record, now) {
                        return self.expire(tenant, id).await;
                    }
                    return Ok(()); // not every line is done yet
                }
                let begin =
                    Transition::new(&[BatchStatus::InProgress], BatchStatus::Finalizing, now);
                if !matches!(
                    self.batches.transition(tenant, id, begin, now).await?,
                    TransitionOutcome::Applied(_)
                ) {
                    return Ok(());
                }
            }
            BatchStatus::Finalizing => {} // a finalization that crashed: do it again
            // Ended already; a crash may have left its parts behind.
            status if status.is_terminal() => {
                self.delete_parts(tenant, id).await;
                return Ok(());
            }
            _ => return Ok(()),
        }
        crash_point("after_finalizing");
        let Some(sealed) = self.ledger.seal(tenant, id, now).await? else {
            return Ok(());
        };
        crash_point("after_seal");
        self.end_batch(
            &sealed,
            BatchStatus::Finalizing,
            BatchStatus::Completed,
            None,
        )
        .await
    }

    /// The last step of every ending: assemble the files from the sealed
    /// record, make the final transition, emit the metrics, delete the parts.
    async fn end_batch(
        &self,
        sealed: &BatchRecord,
        from: BatchStatus,
        to: BatchStatus,
        expired: Option<&Input>,
    ) -> Result<(), WorkerError> {
        let (tenant, id) = (&sealed.tenant, &sealed.batch.id);
        // Read after the seal: these are final.
        let segments = self
            .ledger
            .segments(tenant, id, self.clock.now_secs())
            .await?;
        let Some(patch) = self.assemble(sealed, &segments, expired).await? else {
            return Ok(());
        };
        crash_point(match to {
            BatchStatus::Cancelled => "finish_cancel_before_cancelled",
            _ => "before_completed",
        });
        let from: &'static [BatchStatus] = match from {
            BatchStatus::Finalizing => &[BatchStatus::Finalizing],
            BatchStatus::Cancelling => &[BatchStatus::Cancelling],
            _ => &[BatchStatus::InProgress],
        };
        let now = self.clock.now_secs();
        let done = Transition {
            patch,
            ..Transition::new(from, to, now)
        };
        let outcome = self.batches.transition(tenant, id, done, now).await?;
        tracing::info!(batch_id = %id, %tenant, status = %to, outcome = outcome.label(), "batch ended");
        if matches!(outcome, TransitionOutcome::Applied(_)) {
            super::metrics::batch_finished(
                sealed,
                &segments,
                to,
                self.execution.metrics,
                self.clock.now_micros() / 1000,
            );
        }
        crash_point("before_parts_deleted");
        self.delete_parts(tenant, id).await;
        Ok(())
    }

    /// The parts of a segment that will never be referenced.
    pub(super) async fn delete_blobs(&self, segment: &Segment) {
        for part in [&segment.output_part, &segment.error_part]
            .into_iter()
            .flatten()
        {
            if let Err(error) = self.blobs.delete(part).await {
                tracing::warn!(part, error = %crate::telemetry::ErrorChain(&error), "could not delete an unused part");
            }
        }
    }

    /// The parts are in the files now. Best effort: the bucket's lifecycle
    /// rule removes anything left behind.
    async fn delete_parts(&self, tenant: &TenantId, id: &BatchId) {
        let prefix = format!("batches/{tenant}/{id}/parts/");
        if let Err(error) = self.blobs.delete_prefix(&prefix).await {
            tracing::warn!(batch_id = %id, error = %crate::telemetry::ErrorChain(&error), "could not delete result parts");
        }
    }

    /// `cancelling` → `cancelled`, with the results committed before the seal.
    #[tracing::instrument(skip_all)]
    pub(super) async fn finish_cancel(
        &self,
        tenant: &TenantId,
        id: &BatchId,
    ) -> Result<(), WorkerError> {
        let now = self.clock.now_secs();
        let Some(record) = self.batches.get(tenant, id, now).await? else {
            return Ok(());
        };
        if record.batch.status != BatchStatus::Cancelling {
            return Ok(());
        }
        // No commit lands after the seal: what it holds is the partial result.
        let Some(sealed) = self.ledger.seal(tenant, id, now).await? else {
            return Ok(());
        };
        crash_point("finish_cancel_after_seal");
        self.end_batch(
            &sealed,
            BatchStatus::Cancelling,
            BatchStatus::Cancelled,
            None,
        )
        .await
    }

    /// Past `expires_at`: the batch ends `expired`, its finished lines in the
    /// output and error files, every unfinished one a `batch_expired` error line.
    #[tracing::instrument(skip_all)]
    async fn expire(&self, tenant: &TenantId, id: &BatchId) -> Result<(), WorkerError> {
        let now = self.clock.now_secs();
        let Some(record) = self.batches.get(tenant, id, now).await? else {
            return Ok(());
        };
        if record.batch.status != BatchStatus::InProgress || !is_expired(&record, now) {
            return Ok(());
        }
        let Some(input) = self.input_of(&record, now).await? else {
            return self.fail_input_deleted(tenant, id).await;
        };
        let Some(sealed) = self.ledger.seal(tenant, id, now).await? else {
            return Ok(());
        };
        self.end_batch(
            &sealed,
            BatchStatus::InProgress,
            BatchStatus::Expired,
            Some(&input),
        )
        .await
    }
}
