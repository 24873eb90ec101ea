//! Work items as SQS messages (JSON bodies).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;

use super::{QueueError, WorkItem, WorkQueue};

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

impl SqsQueue {
    /// Builds the client once, at init.
    pub fn new(sdk_config: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self {
            client: Client::new(sdk_config),
            queue_url: queue_url.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    async fn enqueue(&self, item: &WorkItem) -> Result<(), QueueError> {
        self.send(item, None).await
    }

    async fn enqueue_after(&self, item: &WorkItem, delay: Duration) -> Result<(), QueueError> {
        self.send(item, Some(delay)).await
    }
}

impl SqsQueue {
    async fn send(&self, item: &WorkItem, delay: Option<Duration>) -> Result<(), QueueError> {
        // SQS delays a message by at most 900 s.
        let delay_seconds = delay.map(|d| i32::try_from(d.as_secs().min(900)).unwrap_or(900));
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(serde_json::to_string(item)?)
            .set_delay_seconds(delay_seconds)
            .send()
            .await
            .map_err(|e| QueueError::Sqs {
                operation: "SendMessage",
                source: Box::new(aws_sdk_sqs::Error::from(e)),
            })?;
        Ok(())
    }
}
