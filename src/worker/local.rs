//! The worker inside the local server: consumes the in-process queue with
//! bounded concurrency and runs the reconciler on an interval. A server that
//! owns its store first resumes every unfinished batch: work lost by a crash
//! starts again at once, not after the reconciler's stuck period.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::Worker;
use crate::queue::WorkItem;
use crate::telemetry::ErrorChain;

/// Batches validated at once by one local process.
const CONCURRENCY: usize = 4;

/// Whether the process is the only one working on its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// An embedded store's data directory: at start, nothing else runs its batches.
    Sole,
    /// A store other processes may work on too (DynamoDB): only stuck work is re-driven.
    Shared,
}

pub fn spawn(
    worker: Arc<Worker>,
    mut items: mpsc::UnboundedReceiver<WorkItem>,
    ownership: Ownership,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if ownership == Ownership::Sole {
            match worker.resume_unfinished().await {
                Ok(0) => {}
                Ok(resumed) => tracing::info!(resumed, "unfinished batches resumed at start"),
                Err(error) => {
                    tracing::error!(error = %ErrorChain(&error), "resuming unfinished batches failed; the reconciler will retry them")
                }
            }
        }
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
