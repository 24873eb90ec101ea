//! The execution ledger: one row per committed segment beside its batch.

use async_trait::async_trait;
use rusqlite::params;

use super::{from_sql, read_live, read_run_state, to_json, to_sql, EmbeddedStore};
use crate::domain::execution::{resume_point, ByteRange, Segment, Segments};
use crate::domain::{BatchId, TenantId};
use crate::store::{
    BatchRecord, CommitOutcome, ExecutionLedger, RunState, SegmentCommit, StoreError,
};

#[async_trait]
impl ExecutionLedger for EmbeddedStore {
    async fn commit_segment(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        commit: &SegmentCommit,
        now_secs: i64,
    ) -> Result<CommitOutcome, StoreError> {
        let (tenant, id, commit) = (tenant.to_string(), id.to_string(), commit.clone());
        let segment_json = serde_json::to_string(&commit.segment)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with_conn(move |conn| {
            let tx = conn.savepoint()?;
            let Some(mut record) = read_live(&tx, &tenant, &id, now_secs)? else {
                return Ok(CommitOutcome::NotFound);
            };
            let start = to_sql(commit.start);
            let exists = tx
                .prepare_cached(
                    "SELECT 1 FROM segments WHERE tenant = ?1 AND batch_id = ?2 AND start = ?3",
                )?
                .exists(params![tenant, id, start])?;
            if exists {
                return Ok(CommitOutcome::AlreadyCommitted);
            }
            if !record.accepts_results() {
                return Ok(CommitOutcome::Closed);
            }
            let counts = &mut record.batch.request_counts;
            counts.completed += commit.segment.completed;
            counts.failed += commit.segment.failed;
            record
                .batch
                .usage
                .get_or_insert_with(Default::default)
                .add(&commit.usage);
            tx.prepare_cached(
                "INSERT INTO segments (tenant, batch_id, start, segment_end, segment)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                tenant,
                id,
                start,
                to_sql(commit.segment.end),
                segment_json
            ])?;
            // Progress restarts the reconciler's stuck clock.
            tx.prepare_cached(
                "UPDATE batches SET record = ?3, pending_since = ?4 WHERE tenant = ?1 AND id = ?2",
            )?
            .execute(params![tenant, id, to_json(&record)?, now_secs])?;
            tx.commit()?;
            Ok(CommitOutcome::Committed)
        })
        .await
    }

    async fn segments(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Segments, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_reader(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT s.start, s.segment FROM segments s
                 JOIN batches b ON b.tenant = s.tenant AND b.id = s.batch_id
                 WHERE s.tenant = ?1 AND s.batch_id = ?2 AND b.purge_at > ?3
                 ORDER BY s.start",
            )?;
            let rows = statement.query_map(params![tenant, id, now_secs], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut segments = Segments::new();
            for row in rows {
                let (start, json) = row?;
                let segment: Segment =
                    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                segments.insert(from_sql(start)?, segment);
            }
            Ok(segments)
        })
        .await
    }

    async fn resume_point(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        shard: ByteRange,
        now_secs: i64,
    ) -> Result<Option<u64>, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_reader(move |conn| {
            if read_run_state(conn, &tenant, &id, now_secs)?.is_none() {
                return Ok(None);
            }
            let mut statement = conn.prepare_cached(
                "SELECT start, segment_end FROM segments
                 WHERE tenant = ?1 AND batch_id = ?2 AND start >= ?3 AND start < ?4
                 ORDER BY start",
            )?;
            let rows = statement.query_map(
                params![tenant, id, to_sql(shard.start), to_sql(shard.end)],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
            )?;
            let mut ends = Vec::new();
            for row in rows {
                let (start, end) = row?;
                ends.push((from_sql(start)?, from_sql(end)?));
            }
            Ok(resume_point(ends, shard))
        })
        .await
    }

    async fn run_state(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<RunState>, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_reader(move |conn| read_run_state(conn, &tenant, &id, now_secs))
            .await
    }

    async fn seal(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_conn(move |conn| {
            let tx = conn.savepoint()?;
            let Some(mut record) = read_live(&tx, &tenant, &id, now_secs)? else {
                return Ok(None);
            };
            if !record.sealed {
                record.sealed = true;
                tx.prepare_cached("UPDATE batches SET record = ?3 WHERE tenant = ?1 AND id = ?2")?
                    .execute(params![tenant, id, to_json(&record)?])?;
                tx.commit()?;
            }
            Ok(Some(record))
        })
        .await
    }
}
