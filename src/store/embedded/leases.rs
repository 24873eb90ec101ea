//! Shard leases in the embedded store: one row per leased shard, in a table
//! of their own, so they never appear in any listing.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::EmbeddedStore;
use crate::domain::execution::ByteRange;
use crate::domain::{BatchId, TenantId};
use crate::store::leases::{Acquired, Holder, ShardKey, ShardLeases, LEASE_RETENTION_SECS, QUEUED};
use crate::store::StoreError;

/// `until` is the second the lease runs out; its index serves `expired`.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS shard_leases (
        tenant      TEXT    NOT NULL,
        batch_id    TEXT    NOT NULL,
        shard_start INTEGER NOT NULL,
        shard_end   INTEGER NOT NULL,
        owner       TEXT    NOT NULL,
        until       INTEGER NOT NULL,
        purge_at    INTEGER NOT NULL,
        PRIMARY KEY (tenant, batch_id, shard_start, shard_end)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS shard_leases_until ON shard_leases (until);
";

pub(super) fn init(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// A key as SQLite stores it (offsets as INTEGER).
struct Row {
    tenant: String,
    batch: String,
    start: i64,
    end: i64,
}

fn row(key: &ShardKey) -> Result<Row, StoreError> {
    let offset = |value: u64| {
        i64::try_from(value).map_err(|_| StoreError::Corrupt("shard offset out of range".into()))
    };
    Ok(Row {
        tenant: key.tenant.to_string(),
        batch: key.batch.to_string(),
        start: offset(key.shard.start)?,
        end: offset(key.shard.end)?,
    })
}

const KEY_MATCH: &str = "tenant = ?1 AND batch_id = ?2 AND shard_start = ?3 AND shard_end = ?4";

/// Sets a held lease to `owner` until `until`, where `condition` holds
/// (`?8` in `condition` is `arg`).
fn reassign(
    conn: &Connection,
    key: &Row,
    condition: &str,
    owner: &str,
    until: i64,
    arg: &dyn rusqlite::ToSql,
) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(&format!(
            "UPDATE shard_leases SET owner = ?5, until = ?6, purge_at = ?7
             WHERE {KEY_MATCH} AND ({condition})"
        ))?
        .execute(params![
            key.tenant,
            key.batch,
            key.start,
            key.end,
            owner,
            until,
            until.saturating_add(LEASE_RETENTION_SECS),
            arg
        ])?;
    Ok(changed == 1)
}

#[async_trait]
impl ShardLeases for EmbeddedStore {
    async fn acquire(
        &self,
        key: &ShardKey,
        owner: &str,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<Acquired, StoreError> {
        let (key, owner, until) = (row(key)?, owner.to_string(), now_secs + lease_secs);
        self.with_conn(move |conn| {
            // One upsert decides: a row that ran out, was purged, is ours or
            // waits for the queue is taken; a live other's is left as it is.
            let changed = conn
                .prepare_cached(
                    "INSERT INTO shard_leases
                         (tenant, batch_id, shard_start, shard_end, owner, until, purge_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (tenant, batch_id, shard_start, shard_end) DO UPDATE
                     SET owner = excluded.owner, until = excluded.until,
                         purge_at = excluded.purge_at
                     WHERE shard_leases.until <= ?8 OR shard_leases.purge_at <= ?8
                        OR shard_leases.owner IN (?5, ?9)",
                )?
                .execute(params![
                    key.tenant,
                    key.batch,
                    key.start,
                    key.end,
                    owner,
                    until,
                    until + LEASE_RETENTION_SECS,
                    now_secs,
                    QUEUED
                ])?;
            if changed == 1 {
                return Ok(Acquired::Acquired);
            }
            let until: Option<i64> = conn
                .prepare_cached(&format!("SELECT until FROM shard_leases WHERE {KEY_MATCH}"))?
                .query_row(params![key.tenant, key.batch, key.start, key.end], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(Acquired::HeldByOther {
                until: until.unwrap_or(now_secs),
            })
        })
        .await
    }

    async fn renew(
        &self,
        key: &ShardKey,
        owner: &str,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<bool, StoreError> {
        let (key, owner) = (row(key)?, owner.to_string());
        self.with_conn(move |conn| {
            reassign(
                conn,
                &key,
                "owner = ?8",
                &owner,
                now_secs + lease_secs,
                &owner,
            )
        })
        .await
    }

    async fn hand_back(
        &self,
        key: &ShardKey,
        owner: &str,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<bool, StoreError> {
        let (key, owner) = (row(key)?, owner.to_string());
        self.with_conn(move |conn| {
            reassign(
                conn,
                &key,
                "owner = ?8",
                QUEUED,
                now_secs + lease_secs,
                &owner,
            )
        })
        .await
    }

    async fn take_over(
        &self,
        key: &ShardKey,
        expired_by: i64,
        now_secs: i64,
        lease_secs: i64,
    ) -> Result<bool, StoreError> {
        let key = row(key)?;
        self.with_conn(move |conn| {
            reassign(
                conn,
                &key,
                "until <= ?8",
                QUEUED,
                now_secs.saturating_add(lease_secs),
                &expired_by,
            )
        })
        .await
    }

    async fn holder(&self, key: &ShardKey) -> Result<Option<Holder>, StoreError> {
        let key = row(key)?;
        self.with_reader(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT owner, until FROM shard_leases WHERE {KEY_MATCH}"
                ))?
                .query_row(params![key.tenant, key.batch, key.start, key.end], |r| {
                    Ok(Holder {
                        owner: r.get(0)?,
                        until: r.get(1)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn release(&self, key: &ShardKey, owner: &str) -> Result<(), StoreError> {
        let (key, owner) = (row(key)?, owner.to_string());
        self.with_conn(move |conn| {
            conn.prepare_cached(&format!(
                "DELETE FROM shard_leases WHERE {KEY_MATCH} AND owner = ?5"
            ))?
            .execute(params![key.tenant, key.batch, key.start, key.end, owner])?;
            Ok(())
        })
        .await
    }

    async fn expired(&self, expired_by: i64, limit: usize) -> Result<Vec<ShardKey>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_reader(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT tenant, batch_id, shard_start, shard_end FROM shard_leases
                 WHERE until <= ?1 ORDER BY until LIMIT ?2",
            )?;
            let rows = statement.query_map(params![expired_by, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let corrupt = |what: &str| StoreError::Corrupt(format!("shard lease row: bad {what}"));
            let mut keys = Vec::new();
            for row in rows {
                let (tenant, batch, start, end) = row?;
                keys.push(ShardKey {
                    tenant: TenantId::parse(&tenant).map_err(|_| corrupt("tenant"))?,
                    batch: BatchId::parse(&batch).ok_or_else(|| corrupt("batch_id"))?,
                    shard: ByteRange {
                        start: u64::try_from(start).map_err(|_| corrupt("shard_start"))?,
                        end: u64::try_from(end).map_err(|_| corrupt("shard_end"))?,
                    },
                });
            }
            Ok(keys)
        })
        .await
    }
}
