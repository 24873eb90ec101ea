//! The work-queue port: what the worker is asked to do, on SQS or in-process.

pub mod in_process;
pub mod sqs;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{BatchId, TenantId};

/// One unit of batch work. Handling any item twice is harmless: every step it
/// takes is a conditional write guarded by the status it expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkItem {
    /// Check the input file of a `validating` batch.
    ValidateBatch { tenant: TenantId, batch_id: BatchId },
    /// Bring a `cancelling` batch to `cancelled`, with its partial results.
    FinishCancel { tenant: TenantId, batch_id: BatchId },
    /// Run the request lines of one shard (bytes `start..end` of the input)
    /// that no committed segment covers yet.
    RunShard {
        tenant: TenantId,
        batch_id: BatchId,
        start: u64,
        end: u64,
    },
    /// Assemble the output and error files of a batch whose every line is done.
    Finalize { tenant: TenantId, batch_id: BatchId },
    /// Check on the run of a shard that `owner` leased (`worker::lease`):
    /// take the shard over if its lease ran out, watch again while `owner`
    /// still holds it.
    WatchShard {
        tenant: TenantId,
        batch_id: BatchId,
        start: u64,
        end: u64,
        owner: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("SQS {operation} failed")]
    Sqs {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the in-process worker has stopped")]
    Closed,
    #[error("work item is not valid JSON: {0}")]
    Malformed(#[from] serde_json::Error),
}

#[async_trait]
pub trait WorkQueue: Send + Sync {
    async fn enqueue(&self, item: &WorkItem) -> Result<(), QueueError>;

    /// Delivers `item` once `delay` has passed (at most 15 minutes), to
    /// whichever process takes it then. A queue that lives inside one process
    /// holds none: whatever it would deliver later dies with the process it
    /// would be for, so it takes the item and drops it.
    async fn enqueue_after(&self, item: &WorkItem, delay: Duration) -> Result<(), QueueError>;
}
