//! Committed segments on DynamoDB: one item per segment in the batch's
//! partition, so a commit's cost and the batch item's size do not grow with
//! the number of segments before it.
//!
//! A segment item's sort key is `seg#<batch id>#<zero-padded start>`: it sorts
//! as the offsets count, one `Query` prefix reads a batch's segments, and it
//! starts neither with `batch_` nor `file-`, so the table stream's filters and
//! the worker ignore it. It carries no `created_order`, `pending_status` or
//! `file_order`, so no index holds it, and the batch's `purge_at`, so the TTL
//! removes it with the batch.
//!
//! Without transactions (dynalite has none), a commit is two conditional
//! writes, and the batch item decides which segments count:
//! 1. Put the segment item if its start has none: the first attempt at a
//!    start wins it, the others read the winner.
//! 2. Update the batch, adding the winner's counts and usage and moving its
//!    shard's `resume_points` entry from the segment's start to its end, on
//!    condition that the entry stands at the start and the batch takes results.
//!
//! A crash between the two leaves a won segment item that no chain reaches
//! yet; the next attempt at that start loses the put and finishes step 2 with
//! the winner's counts. The seal freezes `resume_points`, so the segments that
//! count are exactly each shard's chain up to its entry: an item put after the
//! seal is never read.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{
    attribute, corrupt, number, number_u64, segment_key, send_guarded, DynamoStore, Guarded, Item,
    MAX_ATTEMPTS,
};
use crate::domain::batch::Usage;
use crate::domain::execution::{chain, Segment, Segments};
use crate::domain::{BatchId, BatchStatus, TenantId};
use crate::store::{CommitOutcome, RunState, SegmentCommit, StoreError};

/// The batch attribute mapping each shard's start to the end of its
/// committed chain: bounded by the number of shards, not of segments.
pub(super) const RESUME_POINTS: &str = "resume_points";

/// Where earlier versions kept a batch's segments, inside its item.
pub(super) const LEGACY_SEGMENTS: &str = "segments";

pub(super) fn segment_prefix(id: &str) -> String {
    format!("seg#{id}#")
}

fn segment_id(id: &str, start: u64) -> String {
    format!("{}{}", segment_prefix(id), segment_key(start))
}

fn segment_item(
    tenant: &TenantId,
    id: &BatchId,
    commit: &SegmentCommit,
) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(&commit.segment).map_err(corrupt)?;
    item.retain(|_, value| !matches!(value, AttributeValue::Null(_)));
    item.extend(DynamoStore::key(
        tenant.as_str(),
        &segment_id(id.as_str(), commit.start),
    ));
    item.insert("purge_at".into(), number(commit.purge_at));
    // With the segment, so an attempt that finishes a crashed winner's
    // commit adds the winner's usage.
    item.insert("usage".into(), attribute(&commit.usage)?);
    Ok(item)
}

pub(super) fn purge_at(item: &Item) -> Option<i64> {
    match item.get("purge_at") {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// A segment item's start and segment, unless it belongs to a purged batch.
pub(super) fn live_segment(
    item: Item,
    now_secs: i64,
) -> Result<Option<(u64, Segment)>, StoreError> {
    if purge_at(&item).is_none_or(|at| at <= now_secs) {
        return Ok(None);
    }
    let start = match item.get("id") {
        Some(AttributeValue::S(id)) => id.rsplit('#').next().and_then(|s| s.parse().ok()),
        _ => None,
    }
    .ok_or_else(|| StoreError::Corrupt("segment item with a bad id".into()))?;
    let segment: Segment = serde_dynamo::from_item(item).map_err(corrupt)?;
    Ok(Some((start, segment)))
}

/// Each shard's chain end, from a batch item's `resume_points`.
pub(super) fn resume_points(item: &Item) -> Result<Vec<(u64, u64)>, StoreError> {
    let Some(AttributeValue::M(map)) = item.get(RESUME_POINTS) else {
        return Ok(Vec::new());
    };
    map.iter()
        .map(|(key, value)| {
            let end = match value {
                AttributeValue::N(n) => n.parse().ok(),
                _ => None,
            };
            match (key.parse(), end) {
                (Ok(start), Some(end)) => Ok((start, end)),
                _ => Err(StoreError::Corrupt(format!("bad resume point {key:?}"))),
            }
        })
        .collect()
}

/// Where `shard_start`'s chain ends: its `resume_points` entry or, for a
/// batch started before segments had items of their own, the end of its
/// chain among the segments its item holds.
pub(super) fn resume_point(item: &Item, shard_start: u64) -> Result<u64, StoreError> {
    if let Some((_, end)) = resume_points(item)?
        .into_iter()
        .find(|(start, _)| *start == shard_start)
    {
        return Ok(end);
    }
    let legacy = legacy_segments(item)?;
    Ok(chain(&legacy, shard_start, u64::MAX)
        .last()
        .map_or(shard_start, |(_, segment)| segment.end))
}

fn has_resume_point(item: &Item, shard_start: u64) -> bool {
    matches!(item.get(RESUME_POINTS), Some(AttributeValue::M(map)) if map.contains_key(&segment_key(shard_start)))
}

/// The segments an item written by an earlier version holds itself, keyed by
/// zero-padded start: committed under that version's rules, so all count.
pub(super) fn legacy_segments(item: &Item) -> Result<Segments, StoreError> {
    let Some(value) = item.get(LEGACY_SEGMENTS) else {
        return Ok(Segments::new());
    };
    let by_key: std::collections::BTreeMap<String, Segment> =
        serde_dynamo::from_attribute_value(value.clone()).map_err(corrupt)?;
    by_key
        .into_iter()
        .map(|(key, segment)| {
            key.parse()
                .map(|start| (start, segment))
                .map_err(|_| StoreError::Corrupt(format!("bad segment key {key:?}")))
        })
        .collect()
}

pub(super) fn text(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    }
}

pub(super) fn run_state_of(item: &Item) -> Result<RunState, StoreError> {
    let status = text(item, "status")
        .and_then(|s| BatchStatus::parse(&s))
        .ok_or_else(|| StoreError::Corrupt("batch item without a status".into()))?;
    let sealed = matches!(item.get("sealed"), Some(AttributeValue::Bool(true)));
    Ok(RunState { status, sealed })
}

impl DynamoStore {
    /// Step 1: the segment item, unless its start has a live one already.
    /// Returns the winner's segment and usage, and whether it is this commit's.
    async fn put_segment(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        commit: &SegmentCommit,
        now_secs: i64,
    ) -> Result<(Segment, Usage, bool), StoreError> {
        let item = segment_item(tenant, id, commit)?;
        for _ in 0..MAX_ATTEMPTS {
            // A purged batch's segment (its id taken over by a new batch) may be replaced.
            let winner = match self.put_unless_live(&item, now_secs).await? {
                Ok(()) => return Ok((commit.segment.clone(), commit.usage, true)),
                Err(winner) => winner,
            };
            if let Some(winner) = winner {
                let usage = match winner.get("usage") {
                    Some(value) => {
                        serde_dynamo::from_attribute_value(value.clone()).map_err(corrupt)?
                    }
                    None => Usage::default(),
                };
                if let Some((_, segment)) = live_segment(winner, now_secs)? {
                    // The SDK retries a put whose answer was lost: the item
                    // it then finds may be this commit's own (its part keys
                    // are unique to the attempt), and its parts must stay.
                    let ours = segment == commit.segment;
                    return Ok((segment, usage, ours));
                }
            }
            // The winner was purged in between: put again.
        }
        Err(StoreError::Corrupt(format!(
            "segment {} of batch {id} kept changing",
            commit.start
        )))
    }

    pub(super) async fn commit(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        commit: &SegmentCommit,
        now_secs: i64,
    ) -> Result<CommitOutcome, StoreError> {
        let (winner, usage, ours) = self.put_segment(tenant, id, commit, now_secs).await?;
        let landed = if ours {
            CommitOutcome::Committed
        } else {
            CommitOutcome::AlreadyCommitted
        };
        // Step 2 with the winner's segment and usage: for a loser it finishes
        // a winner's commit that a crash cut short, or finds it done.
        let mut values = HashMap::from([
            (":end".to_string(), number_u64(winner.end)),
            (":completed".to_string(), number_u64(winner.completed)),
            (":failed".to_string(), number_u64(winner.failed)),
            (":input".to_string(), number_u64(usage.input_tokens)),
            (":output".to_string(), number_u64(usage.output_tokens)),
            (":total".to_string(), number_u64(usage.total_tokens)),
            (
                ":cached".to_string(),
                number_u64(usage.input_tokens_details.cached_tokens),
            ),
            (
                ":reasoning".to_string(),
                number_u64(usage.output_tokens_details.reasoning_tokens),
            ),
            (":now".to_string(), number(now_secs)),
            (
                ":in_progress".to_string(),
                AttributeValue::S(BatchStatus::InProgress.as_str().into()),
            ),
            (
                ":cancelling".to_string(),
                AttributeValue::S(BatchStatus::Cancelling.as_str().into()),
            ),
        ]);
        // USAGE is a DynamoDB reserved word: every name is aliased.
        let names = HashMap::from([
            ("#status".to_string(), "status".to_string()),
            ("#points".to_string(), RESUME_POINTS.to_string()),
            ("#shard".to_string(), segment_key(commit.shard_start)),
            ("#usage".to_string(), "usage".to_string()),
            ("#counts".to_string(), "request_counts".to_string()),
            ("#sealed".to_string(), "sealed".to_string()),
        ]);
        // The chain must stand at this start: then this start's winner is
        // counted exactly once. Progress restarts the reconciler's stuck clock.
        let at_start = if commit.start == commit.shard_start {
            "attribute_not_exists(#points.#shard)"
        } else {
            "#points.#shard = :start"
        };
        if commit.start != commit.shard_start {
            // Only then: DynamoDB refuses a value the expressions do not use.
            values.insert(":start".to_string(), number_u64(commit.start));
        }
        let update = "SET #points.#shard = :end, pending_since = :now, \
            #counts.completed = #counts.completed + :completed, \
            #counts.failed = #counts.failed + :failed, \
            #usage.input_tokens = #usage.input_tokens + :input, \
            #usage.output_tokens = #usage.output_tokens + :output, \
            #usage.total_tokens = #usage.total_tokens + :total, \
            #usage.input_tokens_details.cached_tokens = #usage.input_tokens_details.cached_tokens + :cached, \
            #usage.output_tokens_details.reasoning_tokens = #usage.output_tokens_details.reasoning_tokens + :reasoning";
        let condition = format!(
            "attribute_exists(id) AND purge_at > :now \
             AND #status IN (:in_progress, :cancelling) AND attribute_not_exists(#sealed) \
             AND attribute_exists(#points) AND {at_start}"
        );
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values));
        for _ in 0..MAX_ATTEMPTS {
            let refused = match send_guarded(request.clone()).await? {
                Guarded::Applied(_) => return Ok(landed),
                Guarded::Refused(Some(item)) => Some(item),
                Guarded::Refused(None) => None,
            };
            let batch = match refused {
                Some(item) if purge_at(&item).is_some_and(|at| at > now_secs) => Some(item),
                Some(_) => None,
                None => {
                    self.read_attributes(
                        tenant.as_str(),
                        id.as_str(),
                        &["status", "sealed", RESUME_POINTS, LEGACY_SEGMENTS],
                        now_secs,
                    )
                    .await?
                }
            };
            let Some(batch) = batch else {
                return Ok(CommitOutcome::NotFound);
            };
            // The chain went past this start: the winner counts (finished by
            // another attempt that lost the put).
            if resume_point(&batch, commit.shard_start)? > commit.start {
                // Unless an earlier version's segment holds this start.
                if legacy_segments(&batch)?.contains_key(&commit.start) {
                    return Ok(CommitOutcome::AlreadyCommitted);
                }
                return Ok(landed);
            }
            if !run_state_of(&batch)?.accepts_results() {
                return Ok(CommitOutcome::Closed);
            }
            if !has_resume_point(&batch, commit.shard_start) {
                // A batch started before segments had items of their own.
                self.add_resume_point(tenant, id, &batch, commit.shard_start)
                    .await?;
            }
            // Otherwise the re-read (dynalite) shows a state that changed
            // after the failed write: try again.
        }
        Err(StoreError::Corrupt(format!(
            "batch {id} kept changing during a commit"
        )))
    }

    /// Gives a batch started before segments had items of their own its
    /// `resume_points` map, and `shard_start` its entry: the end of the
    /// shard's chain among the segments its item holds.
    async fn add_resume_point(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        batch: &Item,
        shard_start: u64,
    ) -> Result<(), StoreError> {
        if !batch.contains_key(RESUME_POINTS) {
            let request = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
                .update_expression("SET #points = :none")
                .condition_expression("attribute_exists(id) AND attribute_not_exists(#points)")
                .expression_attribute_names("#points", RESUME_POINTS)
                .expression_attribute_values(":none", AttributeValue::M(HashMap::new()));
            send_guarded(request).await?;
        }
        // The batch has no entry for the shard yet: this is its old chain's end.
        let end = resume_point(batch, shard_start)?;
        if end == shard_start {
            // A chain that has not begun needs no entry: a commit at the
            // shard's start requires there is none.
            return Ok(());
        }
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
            .update_expression("SET #points.#shard = :end")
            .condition_expression(
                "attribute_exists(#points) AND attribute_not_exists(#points.#shard)",
            )
            .expression_attribute_names("#points", RESUME_POINTS)
            .expression_attribute_names("#shard", segment_key(shard_start))
            .expression_attribute_values(":end", number_u64(end));
        send_guarded(request).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_ids_sort_as_offsets_and_stay_out_of_the_stream_filters() {
        let (a, b) = (segment_id("batch_x", 9), segment_id("batch_x", 10));
        assert!(a < b);
        assert!(a.starts_with(&segment_prefix("batch_x")));
        assert!(!a.starts_with("batch_") && !a.starts_with("file-"));
    }
}
