//! The worker inside the local server: consumes the in-process queue with
//! bounded concurrency and runs the reconciler on an interval (and at start,
//! which is what recovers work lost by a crash).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::Worker;
use crate::api::error::ErrorChain;
use crate::queue::WorkItem;

/// Batches validated at once by one local process.
const CONCURRENCY: usize = 4;

pub fn spawn(worker: Arc<Worker>, mut items: mpsc::UnboundedReceiver<WorkItem>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        let mut reconcile =
            tokio::time::interval(Duration::from_secs(worker.reconciler.interval_secs));
        loop {
            tokio::select! {
                item = items.recv() => {
                    let Some(item) = item else { break };
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
                    let worker = Arc::clone(&worker);
                    tokio::spawn(async move {
                        if let Err(error) = worker.handle(&item).await {
                            tracing::error!(?item, error = %ErrorChain(&error), "work item failed; the reconciler will retry it");
                        }
                        drop(permit);
                    });
                }
                _ = reconcile.tick() => {
                    if let Err(error) = worker.reconcile().await {
                        tracing::error!(error = %ErrorChain(&error), "reconciler run failed");
                    }
                }
            }
        }
    })
}
