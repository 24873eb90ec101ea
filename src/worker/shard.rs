//! Running a shard: its request lines against the upstream, committed
//! segment by segment while the worker holds the shard's lease.
//!
//! Exactly once: a segment's results go to parts under a key unique to the
//! attempt, and only the attempt whose conditional commit wins (the first for
//! that start offset) is referenced by the batch. A line may run upstream twice
//! after a crash; it appears in the files once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use futures_util::FutureExt;
use tokio::time::Instant;

use super::input::Input;
use super::lease::ShardLease;
use super::{Worker, WorkerError};
use crate::domain::batch::Usage;
use crate::domain::execution::{shards, ByteRange, LatencyHistogram, Segment};
use crate::domain::request_line::{parse_request, LineError};
use crate::domain::{
    BatchError, BatchErrors, BatchId, BatchPatch, BatchStatus, TenantId, Transition,
};
use crate::fault::crash_point;
use crate::queue::WorkItem;
use crate::store::{BatchRecord, CommitOutcome, SegmentCommit};
use crate::upstream::{usage_of, Execution, Outcome, OutputLine};

/// Leave this much of an invocation for writing parts and committing.
const FINISH_MARGIN: Duration = Duration::from_secs(10);
/// How often a running segment checks whether its batch was cancelled.
const CANCEL_POLL: Duration = Duration::from_secs(1);

impl Worker {
    /// After validation: one work item per shard (or straight to the files for
    /// an input without requests).
    #[tracing::instrument(skip_all)]
    pub(super) async fn start_execution(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        input_bytes: u64,
        requests: u64,
    ) -> Result<(), WorkerError> {
        crash_point("before_shards_enqueued");
        if requests == 0 {
            return Ok(self.queue.enqueue(&finalize(tenant, id)).await?);
        }
        for shard in shards(input_bytes, self.execution.shard_bytes) {
            self.queue.enqueue(&run_shard(tenant, id, shard)).await?;
            crash_point("after_shard_enqueued");
        }
        Ok(())
    }

    pub(super) async fn run_shard(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        shard: ByteRange,
        deadline: Option<Instant>,
        lease: &ShardLease,
    ) -> Result<(), WorkerError> {
        let now = self.clock.now_secs();
        let Some(mut record) = self.batches.get(tenant, id, now).await? else {
            return Ok(());
        };
        if !record.accepts_results() || record.batch.status != BatchStatus::InProgress {
            return Ok(());
        }
        let Some(input) = self.input_of(&record, now).await? else {
            return self.fail_input_deleted(tenant, id).await;
        };
        // Lines stop at the batch's expiry as at the invocation's end.
        let expiry = record
            .batch
            .expires_at
            .map(|at| Instant::now() + Duration::from_secs(u64::try_from(at - now).unwrap_or(0)));
        let deadline = match (deadline, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // One watcher for the whole shard: a cancel stops the lines in flight
        // and every segment after them.
        let stop = Arc::new(AtomicBool::new(false));
        let _watcher = self.watch_for_cancel(&record, Arc::clone(&stop));
        let mut resume = self.ledger.resume_point(tenant, id, shard, now).await?;
        let mut committed_any = false;
        while let Some(at) = resume {
            if is_expired(&record, self.clock.now_secs()) {
                return Ok(self.queue.enqueue(&finalize(tenant, id)).await?);
            }
            if out_of_time(deadline, FINISH_MARGIN) {
                // Hand the rest back: a fresh invocation resumes at `at`.
                return self.hand_back_shard(lease).await;
            }
            if stop.load(Ordering::Relaxed) {
                // Cancelled (or moved on) meanwhile: start no further segment.
                return Ok(());
            }
            let Some(commit) = self
                .run_segment(&record, &input, at, shard, deadline, &stop)
                .await?
            else {
                // Nothing started: cancelled, or out of time.
                if out_of_time(deadline, FINISH_MARGIN) {
                    return self.hand_back_shard(lease).await;
                }
                return Ok(());
            };
            crash_point("before_segment_commit");
            let now = self.clock.now_secs();
            match self.ledger.commit_segment(tenant, id, &commit, now).await? {
                CommitOutcome::Committed => {
                    committed_any = true;
                    let end = commit.segment.end;
                    resume = (end < shard.end).then_some(end);
                }
                CommitOutcome::AlreadyCommitted => {
                    // Another attempt won this segment: our parts are nobody's.
                    self.delete_blobs(&commit.segment).await;
                    committed_any = true;
                    resume = self.ledger.resume_point(tenant, id, shard, now).await?;
                }
                CommitOutcome::Closed | CommitOutcome::NotFound => {
                    self.delete_blobs(&commit.segment).await;
                    return Ok(());
                }
            }
            crash_point("after_segment_commit");
        }
        if committed_any {
            match self.batches.get(tenant, id, self.clock.now_secs()).await? {
                Some(current) => record = current,
                None => return Ok(()),
            }
        }
        let counts = record.batch.request_counts;
        if counts.completed + counts.failed >= counts.total {
            crash_point("before_finalize_enqueued");
            self.queue.enqueue(&finalize(tenant, id)).await?;
        }
        Ok(())
    }

    /// Reads up to `segment_lines` lines from `start`, runs them, and writes
    /// the results of the longest finished prefix to parts.
    async fn run_segment(
        &self,
        record: &BatchRecord,
        input: &Input,
        start: u64,
        shard: ByteRange,
        deadline: Option<Instant>,
        stop: &Arc<AtomicBool>,
    ) -> Result<Option<SegmentCommit>, WorkerError> {
        let (lines, skipped_to) = self.read_lines(input, start, shard.end).await?;
        if lines.is_empty() {
            // The shard lies inside one long line owned by the shard before it.
            return Ok((skipped_to > start).then(|| SegmentCommit {
                shard_start: shard.start,
                start,
                segment: Segment {
                    end: skipped_to,
                    ..Segment::default()
                },
                usage: Usage::default(),
                purge_at: record.purge_at,
            }));
        }
        crash_point("before_segment_upstream_calls");
        let line_deadline = deadline.map(|d| d - FINISH_MARGIN / 2);
        let concurrency = record
            .max_concurrency
            .map_or(self.execution.concurrency, |own| {
                self.execution.concurrency.min(own as usize)
            });
        // Boxed, so the futures are plainly Send to the runtime's spawner.
        let runs: Vec<futures_util::future::BoxFuture<'_, Option<(String, Execution)>>> = lines
            .iter()
            .map(|line| {
                let stop = Arc::clone(stop);
                async move {
                    if stop.load(Ordering::Relaxed) || out_of_time(deadline, FINISH_MARGIN) {
                        return None;
                    }
                    // Read as validation read it, so a validated line always
                    // runs; one that cannot be read is still a line's result.
                    let request = match parse_request(line.request.as_deref()?) {
                        Ok(request) => request,
                        Err(error) => return Some((String::new(), unreadable(error))),
                    };
                    let body = serde_json::Value::Object(request.body);
                    let execution = self
                        .upstream
                        .execute(
                            // The batch's endpoint, one of a fixed set, not
                            // the line's own `url`: nothing in a file picks
                            // where a request goes (validation already
                            // refused lines whose `url` differs).
                            &record.batch.endpoint,
                            &body,
                            &self.execution.retry,
                            line_deadline,
                        )
                        .await;
                    Some((request.custom_id, execution))
                }
                .boxed()
            })
            .collect();
        let results: Vec<Option<(String, Execution)>> =
            stream::iter(runs).buffered(concurrency).collect().await;
        crash_point("after_segment_upstream_calls");

        let mut output = Vec::new();
        let mut errors = Vec::new();
        let (mut completed, mut failed, mut usage, mut end) = (0, 0, Usage::default(), start);
        let (mut retries, mut latency) = (0, LatencyHistogram::default());
        for (line, result) in lines.iter().zip(results) {
            if line.request.is_none() {
                end = line.next;
                continue;
            }
            let Some((custom_id, execution)) = result.filter(|(_, e)| !e.gave_up_for_deadline)
            else {
                // Not run, or cut by the deadline: the segment ends before it.
                break;
            };
            retries += u64::from(execution.attempts.saturating_sub(1));
            latency.record(u64::try_from(execution.latency.as_millis()).unwrap_or(u64::MAX));
            let id = record.instance().request_id(line.offset);
            let out = OutputLine::new(id.as_str(), &custom_id, &execution.outcome);
            let target = if out.is_success() {
                completed += 1;
                if let Outcome::Response { body, .. } = &execution.outcome {
                    if let Some(line_usage) = usage_of(body) {
                        usage.add(&line_usage);
                    }
                }
                &mut output
            } else {
                failed += 1;
                &mut errors
            };
            serde_json::to_writer(&mut *target, &out).map_err(std::io::Error::other)?;
            target.push(b'\n');
            end = line.next;
        }
        if end == start {
            return Ok(None);
        }
        // A key of its own per attempt: a losing attempt never overwrites the winner.
        let attempt = uuid::Uuid::new_v4().simple();
        let base = format!(
            "batches/{}/{}/parts/{start:020}-{attempt}",
            record.tenant, record.batch.id
        );
        let output_part = self
            .write_part(format!("{base}.output.jsonl"), output)
            .await?;
        crash_point("after_output_part_written");
        let error_part = self
            .write_part(format!("{base}.error.jsonl"), errors)
            .await?;
        Ok(Some(SegmentCommit {
            shard_start: shard.start,
            start,
            purge_at: record.purge_at,
            segment: Segment {
                end,
                output_part,
                error_part,
                completed,
                failed,
                retries,
                latency,
            },
            usage,
        }))
    }

    async fn write_part(&self, key: String, bytes: Vec<u8>) -> Result<Option<String>, WorkerError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let mut writer = self.blobs.create(&key).await?;
        writer.write(Bytes::from(bytes)).await?;
        writer.finish().await?;
        Ok(Some(key))
    }

    /// Polls the batch's status (only that) until it stops taking results,
    /// then sets `stop`. The poll ends when the returned guard is dropped.
    fn watch_for_cancel(&self, record: &BatchRecord, stop: Arc<AtomicBool>) -> AbortOnDrop {
        let (ledger, clock) = (Arc::clone(&self.ledger), Arc::clone(&self.clock));
        let (tenant, id) = (record.tenant.clone(), record.batch.id.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(CANCEL_POLL).await;
                match ledger.run_state(&tenant, &id, clock.now_secs()).await {
                    Ok(Some(state))
                        if state.accepts_results() && state.status == BatchStatus::InProgress => {}
                    Ok(_) => {
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(_) => {} // a missed poll only delays the stop
                }
            }
        });
        AbortOnDrop(task.abort_handle())
    }

    /// A running batch whose input vanished cannot finish: `failed`.
    pub(super) async fn fail_input_deleted(
        &self,
        tenant: &TenantId,
        id: &BatchId,
    ) -> Result<(), WorkerError> {
        let now = self.clock.now_secs();
        let errors = BatchErrors {
            object: "list".into(),
            data: vec![BatchError {
                code: "invalid_request".into(),
                message: "The input file was deleted while the batch ran.".into(),
                param: Some("input_file_id".into()),
                line: None,
            }],
        };
        let fail = Transition {
            patch: BatchPatch {
                errors: Some(errors),
                ..BatchPatch::default()
            },
            ..Transition::new(&[BatchStatus::InProgress], BatchStatus::Failed, now)
        };
        self.batches.transition(tenant, id, fail, now).await?;
        Ok(())
    }

    /// A stuck running batch: every shard that still has lines goes back on the queue.
    #[tracing::instrument(skip_all)]
    pub(super) async fn redrive_execution(
        &self,
        tenant: &TenantId,
        id: &BatchId,
    ) -> Result<(), WorkerError> {
        let now = self.clock.now_secs();
        let Some(record) = self.batches.get(tenant, id, now).await? else {
            return Ok(());
        };
        let Some(input) = self.input_of(&record, now).await? else {
            return self.fail_input_deleted(tenant, id).await;
        };
        let counts = record.batch.request_counts;
        if counts.completed + counts.failed >= counts.total || is_expired(&record, now) {
            return Ok(self.queue.enqueue(&finalize(tenant, id)).await?);
        }
        for shard in shards(input.bytes, self.execution.shard_bytes) {
            if self
                .ledger
                .resume_point(tenant, id, shard, now)
                .await?
                .is_some()
            {
                self.queue.enqueue(&run_shard(tenant, id, shard)).await?;
                crash_point("redrive_after_shard_enqueued");
            }
        }
        Ok(())
    }
}

/// The result of a line that cannot be read as a request. Validation refuses
/// such a line, so this is only a guard: the line fails in the error file
/// rather than stopping its shard.
fn unreadable(error: LineError) -> Execution {
    Execution {
        outcome: Outcome::TransportError {
            code: error.code(),
            message: error.to_string(),
        },
        attempts: 0,
        latency: Duration::ZERO,
        total: Duration::ZERO,
        gave_up_for_deadline: false,
    }
}

/// Ends a background task when its owner is done, on every return path.
pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn is_expired(record: &BatchRecord, now: i64) -> bool {
    record.batch.expires_at.is_some_and(|at| now >= at)
}

fn out_of_time(deadline: Option<Instant>, margin: Duration) -> bool {
    deadline.is_some_and(|d| Instant::now() + margin >= d)
}

pub(super) fn run_shard(tenant: &TenantId, id: &BatchId, shard: ByteRange) -> WorkItem {
    WorkItem::RunShard {
        tenant: tenant.clone(),
        batch_id: id.clone(),
        start: shard.start,
        end: shard.end,
    }
}

pub(super) fn finalize(tenant: &TenantId, id: &BatchId) -> WorkItem {
    WorkItem::Finalize {
        tenant: tenant.clone(),
        batch_id: id.clone(),
    }
}
