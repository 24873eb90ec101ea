//! The embedded store for `cargo run`: SQLite in one file, same semantics as DynamoDB.
//!
//! One connection behind a mutex makes every operation atomic; each runs on the
//! blocking pool so the async runtime never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    BatchRecord, BatchStore, CommitOutcome, CreateOutcome, ListOutcome, SegmentCommit, StoreError,
    StuckBatch, TransitionOutcome,
};
use crate::domain::{BatchId, BatchStatus, TenantId, Transition};

mod files;

#[derive(Clone)]
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
}

/// `pending_status` and `pending_since` are set while a batch is in a
/// non-terminal status: the reconciler's index, as in DynamoDB.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS batches (
        tenant         TEXT    NOT NULL,
        id             TEXT    NOT NULL,
        created_order  TEXT    NOT NULL,
        purge_at       INTEGER NOT NULL,
        record         TEXT    NOT NULL,
        pending_status TEXT,
        pending_since  INTEGER,
        PRIMARY KEY (tenant, id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS batches_by_created ON batches (tenant, created_order);
    CREATE INDEX IF NOT EXISTS batches_pending ON batches (pending_status, pending_since)
        WHERE pending_status IS NOT NULL;
";

impl EmbeddedStore {
    /// Opens (or creates) the database file `batches.sqlite3` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Corrupt(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        Self::init(Connection::open(dir.join("batches.sqlite3"))?)
    }

    /// A throwaway store, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        // WAL with NORMAL sync survives a process crash; only an OS crash can
        // lose the last transactions, an accepted trade for a laptop server.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        migrate(&conn)?;
        conn.execute_batch(SCHEMA)?;
        files::init(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(super) async fn with_conn<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written
            // (statements are atomic), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut guard)
        })
        .await?
    }
}

/// Brings a data directory written by an older version up to date.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has_batches: bool = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'batches'")?
        .exists([])?;
    let has_pending: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('batches') WHERE name = 'pending_status'")?
        .exists([])?;
    if has_batches && !has_pending {
        conn.execute_batch(
            "ALTER TABLE batches ADD COLUMN pending_status TEXT;
             ALTER TABLE batches ADD COLUMN pending_since INTEGER;
             UPDATE batches SET pending_status = json_extract(record, '$.batch.status'),
                                pending_since = json_extract(record, '$.batch.created_at')
             WHERE json_extract(record, '$.batch.status')
                   IN ('validating', 'in_progress', 'finalizing', 'cancelling');",
        )?;
    }
    Ok(())
}

fn to_json(record: &BatchRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json(text: &str) -> Result<BatchRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn read_live(
    conn: &Connection,
    tenant: &str,
    id: &str,
    now_secs: i64,
) -> Result<Option<BatchRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT record FROM batches WHERE tenant = ?1 AND id = ?2 AND purge_at > ?3",
    )?
    .query_row(params![tenant, id, now_secs], |row| row.get::<_, String>(0))
    .optional()?
    .map(|text| from_json(&text))
    .transpose()
}

#[async_trait]
impl BatchStore for EmbeddedStore {
    async fn create(
        &self,
        record: &BatchRecord,
        now_secs: i64,
    ) -> Result<CreateOutcome, StoreError> {
        let json = to_json(record)?;
        let (tenant, id) = (record.tenant.to_string(), record.batch.id.clone());
        let (created_order, purge_at) = (record.created_order(), record.purge_at);
        let pending_status =
            (!record.batch.status.is_terminal()).then(|| record.batch.status.as_str());
        let created_at = record.batch.created_at;
        self.with_conn(move |conn| {
            // Insert, or take over a purged record: the same condition as the
            // DynamoDB adapter's `attribute_not_exists(id) OR purge_at <= :now`.
            let written = conn
                .prepare_cached(
                    "INSERT INTO batches
                         (tenant, id, created_order, purge_at, record, pending_status, pending_since)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?7, ?8)
                     ON CONFLICT (tenant, id) DO UPDATE SET
                         created_order = excluded.created_order,
                         purge_at = excluded.purge_at,
                         record = excluded.record,
                         pending_status = excluded.pending_status,
                         pending_since = excluded.pending_since
                     WHERE batches.purge_at <= ?6",
                )?
                .execute(params![
                    tenant,
                    id,
                    created_order,
                    purge_at,
                    json,
                    now_secs,
                    pending_status,
                    created_at
                ])?;
            if written == 1 {
                return Ok(CreateOutcome::Created);
            }
            let existing = read_live(conn, &tenant, &id, now_secs)?.ok_or_else(|| {
                StoreError::Corrupt(format!("batch {id} neither written nor found"))
            })?;
            Ok(CreateOutcome::Existing(Box::new(existing)))
        })
        .await
    }

    async fn get(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        now_secs: i64,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_conn(move |conn| read_live(conn, &tenant, &id, now_secs))
            .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<&BatchId>,
        limit: usize,
        now_secs: i64,
    ) -> Result<ListOutcome, StoreError> {
        let (tenant, after) = (tenant.to_string(), after.map(|a| a.to_string()));
        self.with_conn(move |conn| {
            let upper_bound = match after {
                None => None,
                Some(after) => match read_live(conn, &tenant, &after, now_secs)? {
                    Some(record) => Some(record.created_order()),
                    None => return Ok(ListOutcome::UnknownCursor),
                },
            };
            // One row more than asked for tells whether another page exists.
            let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
            let mut statement = conn.prepare_cached(
                "SELECT record FROM batches
                 WHERE tenant = ?1 AND (?2 IS NULL OR created_order < ?2) AND purge_at > ?3
                 ORDER BY created_order DESC LIMIT ?4",
            )?;
            let rows = statement
                .query_map(params![tenant, upper_bound, now_secs, fetch], |row| {
                    row.get::<_, String>(0)
                })?;
            let mut batches = Vec::with_capacity(limit + 1);
            for row in rows {
                batches.push(from_json(&row?)?.batch);
            }
            let has_more = batches.len() > limit;
            batches.truncate(limit);
            Ok(ListOutcome::Page { batches, has_more })
        })
        .await
    }

    async fn transition(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        transition: Transition,
        now_secs: i64,
    ) -> Result<TransitionOutcome, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_conn(move |conn| {
            // Read and write under one lock, inside one transaction: the check of
            // the expected status and the write cannot be separated.
            let tx = conn.transaction()?;
            let Some(mut record) = read_live(&tx, &tenant, &id, now_secs)? else {
                return Ok(TransitionOutcome::NotFound);
            };
            if !transition.apply(&mut record.batch) {
                return Ok(TransitionOutcome::Refused(Box::new(record.batch)));
            }
            let pending = (!transition.to.is_terminal()).then(|| transition.to.as_str());
            tx.prepare_cached(
                "UPDATE batches SET record = ?3, pending_status = ?4, pending_since = ?5
                 WHERE tenant = ?1 AND id = ?2",
            )?
            .execute(params![
                tenant,
                id,
                to_json(&record)?,
                pending,
                pending.map(|_| transition.at)
            ])?;
            tx.commit()?;
            Ok(TransitionOutcome::Applied(Box::new(record.batch)))
        })
        .await
    }

    async fn commit_segment(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        commit: &SegmentCommit,
        now_secs: i64,
    ) -> Result<CommitOutcome, StoreError> {
        let (tenant, id, commit) = (tenant.to_string(), id.to_string(), commit.clone());
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let Some(mut record) = read_live(&tx, &tenant, &id, now_secs)? else {
                return Ok(CommitOutcome::NotFound);
            };
            if record.segments.contains_key(&commit.start) {
                return Ok(CommitOutcome::AlreadyCommitted(Box::new(record)));
            }
            if !record.accepts_results() {
                return Ok(CommitOutcome::Closed(Box::new(record)));
            }
            let counts = &mut record.batch.request_counts;
            counts.completed += commit.segment.completed;
            counts.failed += commit.segment.failed;
            record
                .batch
                .usage
                .get_or_insert_with(Default::default)
                .add(&commit.usage);
            record.segments.insert(commit.start, commit.segment);
            // Progress restarts the reconciler's stuck clock.
            tx.prepare_cached(
                "UPDATE batches SET record = ?3, pending_since = ?4 WHERE tenant = ?1 AND id = ?2",
            )?
            .execute(params![tenant, id, to_json(&record)?, now_secs])?;
            tx.commit()?;
            Ok(CommitOutcome::Committed(Box::new(record)))
        })
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
            let tx = conn.transaction()?;
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
        self.with_conn(move |conn| {
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
