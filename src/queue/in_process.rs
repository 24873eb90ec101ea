//! An in-process queue for `cargo run`: a channel to the local worker.
//!
//! It is lost with the process; the reconciler re-drives whatever was in it,
//! exactly as it does for a lost SQS message in AWS.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{QueueError, WorkItem, WorkQueue};

#[derive(Debug, Clone)]
pub struct InProcessQueue {
    sender: mpsc::UnboundedSender<WorkItem>,
}

impl InProcessQueue {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<WorkItem>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self { sender }, receiver)
    }
}

#[async_trait]
impl WorkQueue for InProcessQueue {
    async fn enqueue(&self, item: &WorkItem) -> Result<(), QueueError> {
        self.sender
            .send(item.clone())
            .map_err(|_| QueueError::Closed)
    }

    /// Dropped: a delayed item is for another process (a watch on this
    /// process's own shards would die with it).
    async fn enqueue_after(&self, _item: &WorkItem, _delay: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}
