//! The execution ledger on DynamoDB: reading a batch's run state, resume
//! points and segment items (`segments.rs` writes them).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::codec::from_item;
use super::segments::{
    legacy_segments, live_segment, purge_at, resume_point, resume_points, run_state_of,
    segment_prefix, LEGACY_SEGMENTS, RESUME_POINTS,
};
use super::{dynamo_error, number, DynamoStore, Item};
use crate::domain::execution::{chain, ByteRange, Segments};
use crate::domain::{BatchId, TenantId};
use crate::store::{
    BatchRecord, CommitOutcome, ExecutionLedger, RunState, SegmentCommit, StoreError,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;

impl DynamoStore {
    /// A strongly consistent read of some attributes of an item, `None` when
    /// absent or past its `purge_at`. `purge_at` is always read.
    pub(super) async fn read_attributes(
        &self,
        tenant: &str,
        id: &str,
        attributes: &[&str],
        now_secs: i64,
    ) -> Result<Option<Item>, StoreError> {
        let mut names = HashMap::from([("#purge_at".to_string(), "purge_at".to_string())]);
        let mut projection = vec!["#purge_at".to_string()];
        for (i, name) in attributes.iter().enumerate() {
            names.insert(format!("#a{i}"), (*name).to_string());
            projection.push(format!("#a{i}"));
        }
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant, id)))
            .consistent_read(true)
            .projection_expression(projection.join(", "))
            .set_expression_attribute_names(Some(names))
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", e))?;
        Ok(output
            .item
            .filter(|item| purge_at(item).is_some_and(|at| at > now_secs)))
    }

    pub(super) async fn read_run_state(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<RunState>, StoreError> {
        self.read_attributes(
            tenant.as_str(),
            id.as_str(),
            &["status", "sealed"],
            now_secs,
        )
        .await?
        .map(|item| run_state_of(&item))
        .transpose()
    }

    pub(super) async fn read_resume_point(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        shard: ByteRange,
        now_secs: i64,
    ) -> Result<Option<u64>, StoreError> {
        let Some(item) = self
            .read_attributes(
                tenant.as_str(),
                id.as_str(),
                &[RESUME_POINTS, LEGACY_SEGMENTS],
                now_secs,
            )
            .await?
        else {
            return Ok(None);
        };
        let at = resume_point(&item, shard.start)?;
        Ok((at < shard.end).then_some(at))
    }

    /// Every committed segment: each shard's chain up to its resume point,
    /// from one paged `Query` of the batch's segment items.
    pub(super) async fn read_segments(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Segments, StoreError> {
        let Some(batch) = self
            .read_attributes(
                tenant.as_str(),
                id.as_str(),
                &[RESUME_POINTS, LEGACY_SEGMENTS],
                now_secs,
            )
            .await?
        else {
            return Ok(Segments::new());
        };
        let mut written = Segments::new();
        let mut start_key = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("tenant = :tenant AND begins_with(id, :prefix)")
                .expression_attribute_values(":tenant", AttributeValue::S(tenant.to_string()))
                .expression_attribute_values(
                    ":prefix",
                    AttributeValue::S(segment_prefix(id.as_str())),
                )
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| dynamo_error("Query", e))?;
            for item in output.items.unwrap_or_default() {
                if let Some((start, segment)) = live_segment(item, now_secs)? {
                    written.insert(start, segment);
                }
            }
            start_key = output.last_evaluated_key.filter(|key| !key.is_empty());
            if start_key.is_none() {
                break;
            }
        }
        // A batch started before segments had items of their own: its
        // item's segments all count, and chains may continue from them.
        let mut committed = legacy_segments(&batch)?;
        written.extend(committed.clone());
        for (shard_start, end) in resume_points(&batch)? {
            for (start, segment) in chain(&written, shard_start, end) {
                committed.insert(start, segment.clone());
            }
        }
        Ok(committed)
    }
}

#[async_trait]
impl ExecutionLedger for DynamoStore {
    async fn commit_segment(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        commit: &SegmentCommit,
        now_secs: i64,
    ) -> Result<CommitOutcome, StoreError> {
        self.commit(tenant, id, commit, now_secs).await
    }

    async fn segments(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Segments, StoreError> {
        self.read_segments(tenant, id, now_secs).await
    }

    async fn resume_point(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        shard: ByteRange,
        now_secs: i64,
    ) -> Result<Option<u64>, StoreError> {
        self.read_resume_point(tenant, id, shard, now_secs).await
    }

    async fn run_state(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<RunState>, StoreError> {
        self.read_run_state(tenant, id, now_secs).await
    }

    async fn seal(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
            .update_expression("SET #sealed = :sealed")
            .condition_expression("attribute_exists(id) AND purge_at > :now")
            .expression_attribute_names("#sealed", "sealed")
            .expression_attribute_values(":sealed", AttributeValue::Bool(true))
            .expression_attribute_values(":now", number(now_secs))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(from_item(output.attributes.unwrap_or_default())?)),
            Err(SdkError::ServiceError(failure))
                if failure.err().is_conditional_check_failed_exception() =>
            {
                Ok(None)
            }
            Err(other) => Err(dynamo_error("UpdateItem", other)),
        }
    }
}
