//! Shard leases around a shard's run (`store::leases`): a worker takes the
//! shard's lease before running it, renews it with heartbeats while it runs,
//! and releases it when the run ends.
//!
//! A dead worker's shard is taken over two ways. Each run leaves a watch on
//! the queue, delivered half a lease later to whichever worker takes it: a
//! lease that ran out is taken over there and then, and a watch whose run
//! still holds its lease leaves the next one. So on SQS a shard is taken over
//! within about a lease and a half of its worker's last heartbeat, whatever
//! the reconciler's schedule; a queue inside one process holds no watches (they
//! would die with it), and there the reconciler re-enqueues shards whose lease
//! ran out at each of its runs.

use std::time::Duration;

use tokio::time::Instant;

use super::shard::{run_shard, AbortOnDrop};
use super::{Worker, WorkerError};
use crate::domain::execution::ByteRange;
use crate::domain::{BatchId, TenantId};
use crate::queue::WorkItem;
use crate::store::leases::{Acquired, ShardKey};
use crate::telemetry::ErrorChain;

/// The lease a running shard holds: the shard and this run's own owner id.
pub(super) struct ShardLease {
    key: ShardKey,
    owner: String,
}

impl Worker {
    /// Runs a shard under its lease. A shard whose lease another live worker
    /// holds is being run: the message is dropped.
    #[tracing::instrument(skip_all)]
    pub(super) async fn run_leased_shard(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        shard: ByteRange,
        deadline: Option<Instant>,
    ) -> Result<(), WorkerError> {
        let lease = ShardLease {
            key: ShardKey {
                tenant: tenant.clone(),
                batch: id.clone(),
                shard,
            },
            // One owner per run, so two deliveries of one shard in one process
            // do not both hold it.
            owner: uuid::Uuid::new_v4().to_string(),
        };
        let lease_secs = self.reconciler.shard_lease_secs;
        let now = self.clock.now_secs();
        if let Acquired::HeldByOther { until } = self
            .leases
            .acquire(&lease.key, &lease.owner, now, lease_secs)
            .await?
        {
            tracing::info!(
                until,
                "shard leased by another worker: this delivery is dropped"
            );
            return Ok(());
        }
        self.leave_watch(&lease.key, &lease.owner).await;
        let heartbeat = self.heartbeat(&lease);
        let result = self.run_shard(tenant, id, shard, deadline, &lease).await;
        drop(heartbeat);
        // On an error the lease is kept: it runs out and the reconciler
        // re-enqueues the shard, sooner than the queue would redeliver it.
        if result.is_ok() {
            self.leases.release(&lease.key, &lease.owner).await?;
        }
        result
    }

    /// Puts the rest of a shard back on the queue: the lease goes to the queue
    /// first, so the next worker may take it at once (and if the enqueue is
    /// lost, the lease runs out and the reconciler re-enqueues).
    pub(super) async fn hand_back_shard(&self, lease: &ShardLease) -> Result<(), WorkerError> {
        self.leases
            .hand_back(
                &lease.key,
                &lease.owner,
                self.clock.now_secs(),
                self.reconciler.shard_lease_secs,
            )
            .await?;
        Ok(self.queue.enqueue(&run_shard_item(&lease.key)).await?)
    }

    /// Takes the shard over if its lease ran out; while `owner`'s run still
    /// holds it, leaves the next watch. Any other holder's run has a watch of
    /// its own, and a lease handed to the queue has its shard's item there.
    #[tracing::instrument(skip_all, fields(start = key.shard.start))]
    pub(super) async fn watch_shard(&self, key: &ShardKey, owner: &str) -> Result<(), WorkerError> {
        let now = self.clock.now_secs();
        match self.leases.holder(key).await? {
            // Of two watches (or a watch and a reconciler) one takes it over.
            Some(holder) if holder.until <= now => {
                let lease_secs = self.reconciler.shard_lease_secs;
                if self.leases.take_over(key, now, now, lease_secs).await? {
                    tracing::info!(batch_id = %key.batch, tenant = %key.tenant, "a watch takes over a shard whose lease ran out");
                    self.queue.enqueue(&run_shard_item(key)).await?;
                }
            }
            Some(holder) if holder.owner == owner => self.leave_watch(key, owner).await,
            // Released (the run ended) or another run's, which has a watch of its own.
            _ => {}
        }
        Ok(())
    }

    /// Best effort: without its watch a dead run's shard still comes back
    /// through the reconciler.
    async fn leave_watch(&self, key: &ShardKey, owner: &str) {
        let watch = WorkItem::WatchShard {
            tenant: key.tenant.clone(),
            batch_id: key.batch.clone(),
            start: key.shard.start,
            end: key.shard.end,
            owner: owner.to_string(),
        };
        let delay = Duration::from_secs(watch_secs(self.reconciler.shard_lease_secs));
        if let Err(error) = self.queue.enqueue_after(&watch, delay).await {
            tracing::warn!(error = %ErrorChain(&error), "could not leave a watch on the shard's lease");
        }
    }

    /// Stops when the returned guard drops, however the run ends (a dropped
    /// future included): a worker that stops running a shard stops renewing.
    fn heartbeat(&self, lease: &ShardLease) -> AbortOnDrop {
        let (leases, clock) = (self.leases.clone(), self.clock.clone());
        let (key, owner) = (lease.key.clone(), lease.owner.clone());
        let lease_secs = self.reconciler.shard_lease_secs;
        let every = Duration::from_secs(heartbeat_secs(lease_secs));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                ticks.tick().await;
                match leases
                    .renew(&key, &owner, clock.now_secs(), lease_secs)
                    .await
                {
                    Ok(true) => {}
                    // Taken over after a stall: the segment commits stay exactly
                    // once, so the run goes on; the other worker's run is a duplicate.
                    Ok(false) => tracing::warn!("shard lease lost to another worker"),
                    Err(error) => {
                        tracing::warn!(error = %ErrorChain(&error), "shard lease heartbeat failed")
                    }
                }
            }
        });
        AbortOnDrop(task.abort_handle())
    }

    /// Takes over leases that ran out by `expired_by` and re-enqueues their
    /// shards (when `enqueue`). Returns how many it took over.
    pub(super) async fn take_over_leases(
        &self,
        expired_by: i64,
        limit: usize,
        enqueue: bool,
    ) -> Result<usize, WorkerError> {
        let now = self.clock.now_secs();
        let mut taken = 0;
        for key in self.leases.expired(expired_by, limit).await? {
            // Claim first: of two reconcilers one re-enqueues, and a lease
            // renewed meanwhile stays with its worker.
            if !self
                .leases
                .take_over(&key, expired_by, now, self.reconciler.shard_lease_secs)
                .await?
            {
                continue;
            }
            if enqueue {
                tracing::info!(batch_id = %key.batch, tenant = %key.tenant, start = key.shard.start, "reconciler re-drives a shard whose lease ran out");
                self.queue.enqueue(&run_shard_item(&key)).await?;
            }
            taken += 1;
        }
        Ok(taken)
    }
}

/// A watch looks every half lease: a dead run's lease is found run out at
/// most half a lease after it ran out.
fn watch_secs(lease_secs: i64) -> u64 {
    u64::try_from(lease_secs / 2).unwrap_or(0).max(1)
}

/// Heartbeats come three to a lease: two may be lost before it runs out.
fn heartbeat_secs(lease_secs: i64) -> u64 {
    u64::try_from(lease_secs / 3).unwrap_or(0).max(1)
}

fn run_shard_item(key: &ShardKey) -> WorkItem {
    run_shard(&key.tenant, &key.batch, key.shard)
}
