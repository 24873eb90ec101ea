//! The `ShardLeases` port: which worker runs a shard right now.
//!
//! Where several workers share the work (Lambda instances, servers on one
//! table), a worker that dies leaves no trace but its lease. A worker holds a
//! lease while it runs a shard and renews it with heartbeats; once a lease
//! runs out, the reconciler takes it over and puts the shard back on the
//! queue, so a dead worker's shard waits about a lease, not the stuck period
//! or the queue's visibility timeout.
//!
//! A lease is never needed for correctness (segment commits are exactly once
//! anyway): it only decides who runs a shard, and how soon a lost one is noticed.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::execution::ByteRange;
use crate::domain::{BatchId, TenantId};

/// The holder of a lease taken over for the queue: the shard's work item is
/// (about to be) on the queue, and whichever worker receives it may take the
/// lease. No worker owner is ever this string (they are UUIDs).
pub const QUEUED: &str = "queued";

/// A lease item outlives its last `until` by this long before TTL removes it:
/// long enough that a lease is never purged while anyone may still claim it.
pub const LEASE_RETENTION_SECS: i64 = 86_400;

/// Names one shard of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardKey {
    pub tenant: TenantId,
    pub batch: BatchId,
    pub shard: ByteRange,
}

/// Who holds a lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// A run's owner id, or [`QUEUED`].
    pub owner: String,
    /// The second the lease runs out.
    pub until: i64,
}

/// What an acquire found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours until `now + lease_secs`.
    Acquired,
    /// Another live worker holds it (until this second): the shard is being run.
    HeldByOther { until: i64 },
}

#[async_trait]
pub trait ShardLeases: Send + Sync {
    /// Takes the lease for `owner` until `now_secs + lease_secs`, in one
    /// conditional write: if it is absent, ran out (`until <= now_secs`), is
    /// `owner`'s already, or was handed to the queue (`QUEUED`).
    async fn acquire(
        &self,
        key: &ShardKey,
        owner: &str,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<Acquired, StoreError>;

    /// The heartbeat: extends the lease to `now_secs + lease_secs` if `owner`
    /// still holds it. Returns whether it did.
    async fn renew(
        &self,
        key: &ShardKey,
        owner: &str,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<bool, StoreError>;

    /// Hands `owner`'s lease to the queue (`QUEUED`) until `now_secs +
    /// lease_secs`, before the shard's work item is enqueued again: the next
    /// worker may take it at once, and if the enqueue never happens the lease
    /// runs out and the reconciler re-enqueues. Returns whether `owner` held it.
    async fn hand_back(
        &self,
        key: &ShardKey,
        owner: &str,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<bool, StoreError>;

    /// Takes over a lease that ran out by `expired_by` for the queue
    /// (`QUEUED`, until `now_secs + lease_secs`). Of two reconcilers racing for
    /// one lease, one wins; a lease renewed meanwhile is left alone. Returns
    /// whether this call took it.
    async fn take_over(
        &self,
        key: &ShardKey,
        expired_by: i64,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<bool, StoreError>;

    /// The lease as it stands, run out or not (`None`: there is none): one
    /// read, so a watch decides with it whether to take the shard over, watch
    /// again or stop.
    async fn holder(&self, key: &ShardKey) -> Result<Option<Holder>, StoreError>;

    /// Deletes the lease if `owner` holds it; anyone else's is left alone.
    async fn release(&self, key: &ShardKey, owner: &str) -> Result<(), StoreError>;

    /// Up to `limit` leases of every tenant that ran out by `expired_by`
    /// (`until <= expired_by`), those that ran out first first.
    async fn expired(&self, expired_by: i64, limit: usize) -> Result<Vec<ShardKey>, StoreError>;
}
