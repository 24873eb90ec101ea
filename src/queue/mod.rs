//! The work-queue port: what the worker is asked to do, on SQS or in-process.

pub mod in_process;
pub mod sqs;

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
}
