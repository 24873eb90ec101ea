//! Per-tenant quotas: one `quota_usage` row per batch in flight.

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{read_live, EmbeddedStore};
use crate::domain::{BatchId, BatchStatus, QuotaExceeded, Quotas, TenantId};
use crate::store::{QuotaLedger, StoreError};

#[async_trait]
impl QuotaLedger for EmbeddedStore {
    async fn reserve_lines(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        lines: u64,
        now_secs: i64,
    ) -> Result<Result<(), QuotaExceeded>, StoreError> {
        let Some(limit) = self.quotas.max_enqueued_lines else {
            return Ok(Ok(()));
        };
        let quotas = self.quotas;
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_conn(move |conn| {
            // Only a batch still validating takes lines: one cancelled meanwhile
            // would hold them with nothing left to give them back.
            match read_live(conn, &tenant, &id, now_secs)? {
                Some(record) if record.batch.status == BatchStatus::Validating => {}
                _ => return Ok(Ok(())),
            }
            let (held, others): (i64, i64) = conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(CASE WHEN batch_id = ?2 THEN lines END), 0),
                            COALESCE(SUM(CASE WHEN batch_id = ?2 THEN 0 ELSE lines END), 0)
                     FROM quota_usage WHERE tenant = ?1",
                )?
                .query_row(params![tenant, id], |row| Ok((row.get(0)?, row.get(1)?)))?;
            if held > 0 {
                return Ok(Ok(()));
            }
            if !quotas.lines_fit(u64::try_from(others).unwrap_or(0), lines) {
                return Ok(Err(QuotaExceeded::EnqueuedLines { limit }));
            }
            conn.prepare_cached(
                "INSERT INTO quota_usage (tenant, batch_id, lines) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, batch_id) DO UPDATE SET lines = excluded.lines",
            )?
            .execute(params![
                tenant,
                id,
                i64::try_from(lines).unwrap_or(i64::MAX)
            ])?;
            Ok(Ok(()))
        })
        .await
    }

    async fn release_quota(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        _lines: u64,
    ) -> Result<(), StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_conn(move |conn| release(conn, &tenant, &id))
            .await
    }

    async fn repair_quotas(
        &self,
        _idle_before_secs: i64,
        now_secs: i64,
    ) -> Result<usize, StoreError> {
        // Every change of usage shares a transaction with its batch, so only a
        // batch purged or finished while quotas were off can have left a row.
        self.with_conn(move |conn| {
            let freed = conn
                .prepare_cached(
                    "DELETE FROM quota_usage WHERE NOT EXISTS (
                         SELECT 1 FROM batches b
                         WHERE b.tenant = quota_usage.tenant AND b.id = quota_usage.batch_id
                           AND b.pending_status IS NOT NULL AND b.purge_at > ?1)",
                )?
                .execute(params![now_secs])?;
            Ok(freed)
        })
        .await
    }
}

/// Which quota, if any, leaves no room for another batch of `tenant`.
pub(super) fn quota_room(
    conn: &Connection,
    tenant: &str,
    quotas: Quotas,
) -> Result<Option<QuotaExceeded>, StoreError> {
    let (batches, lines): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(lines), 0) FROM quota_usage WHERE tenant = ?1",
        )?
        .query_row(params![tenant], |row| Ok((row.get(0)?, row.get(1)?)))?;
    if let Some(limit) = quotas.max_batches_in_flight {
        if batches >= i64::from(limit) {
            return Ok(Some(QuotaExceeded::BatchesInFlight { limit }));
        }
    }
    if let Some(limit) = quotas.max_enqueued_lines {
        if u64::try_from(lines).unwrap_or(0) >= limit {
            return Ok(Some(QuotaExceeded::EnqueuedLines { limit }));
        }
    }
    Ok(None)
}

/// Gives back a batch's slot and lines; nothing happens when none are held.
pub(super) fn release(conn: &Connection, tenant: &str, id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM quota_usage WHERE tenant = ?1 AND batch_id = ?2")?
        .execute(params![tenant, id])?;
    Ok(())
}
