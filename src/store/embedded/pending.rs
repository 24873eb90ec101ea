//! What the reconciler looks for: batches waiting too long in a non-terminal status.

use async_trait::async_trait;
use rusqlite::params;

use super::EmbeddedStore;
use crate::domain::{BatchId, BatchStatus, TenantId};
use crate::store::{PendingBatches, StoreError, StuckBatch};

#[async_trait]
impl PendingBatches for EmbeddedStore {
    async fn touch_pending(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        status: BatchStatus,
        now_secs: i64,
    ) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_conn(move |conn| {
            let touched = conn
                .prepare_cached(
                    "UPDATE batches SET pending_since = ?4
                     WHERE tenant = ?1 AND id = ?2 AND pending_status = ?3",
                )?
                .execute(params![tenant, id, status.as_str(), now_secs])?;
            Ok(touched == 1)
        })
        .await
    }

    async fn stuck(
        &self,
        status: BatchStatus,
        before_secs: i64,
        limit: usize,
    ) -> Result<Vec<StuckBatch>, StoreError> {
        self.with_reader(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT tenant, id FROM batches
                 WHERE pending_status = ?1 AND pending_since < ?2
                 ORDER BY pending_since LIMIT ?3",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = statement
                .query_map(params![status.as_str(), before_secs, limit], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?;
            let mut stuck = Vec::new();
            for row in rows {
                let (tenant, id) = row?;
                stuck.push(StuckBatch {
                    tenant: TenantId::parse(&tenant).map_err(StoreError::Corrupt)?,
                    id: BatchId::parse(&id)
                        .ok_or_else(|| StoreError::Corrupt(format!("bad batch id {id}")))?,
                });
            }
            Ok(stuck)
        })
        .await
    }
}
