//! The embedded store for `cargo run`: SQLite in one file, same semantics as DynamoDB.
//!
//! One connection behind a mutex makes every operation atomic; each runs on the
//! blocking pool so the async runtime never waits on disk.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    BatchRecord, BatchStore, CreateOutcome, ListOutcome, RunState, StoreError, TransitionOutcome,
};
use crate::domain::{BatchId, BatchStatus, Quotas, TenantId, Transition};

mod files;
mod keys;
mod leases;
mod ledger;
mod pending;
mod quota;
mod schema;
mod writer;

use quota::{quota_room, release};
use schema::{has_table, migrate, move_segments_out_of_records, SCHEMA};
use writer::{
    in_savepoint, retry_soon, spawn_checkpointer, spawn_writer, Delivery, Job, WAL_KEEP_BYTES,
    WAL_LIMIT_FRAMES,
};

#[derive(Clone)]
pub struct EmbeddedStore {
    /// Every write goes to one thread that owns the writer connection.
    writer: std::sync::mpsc::Sender<Job>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<AtomicUsize>,
    quotas: Quotas,
}

/// Reader connections of a file-backed store.
const READERS: usize = 4;

impl EmbeddedStore {
    /// Opens (or creates) the database file `batches.sqlite3` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_wal_limit(dir, WAL_LIMIT_FRAMES)
    }

    fn open_with_wal_limit(dir: &Path, wal_limit_frames: i64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Corrupt(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("batches.sqlite3");
        let mut store = Self::init(Connection::open(&path)?, Some((&path, wal_limit_frames)))?;
        // In WAL mode readers never wait for the writer: reads get connections
        // of their own, and the one writer connection does only writes.
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_handler(Some(retry_soon))?;
            reader.pragma_update(None, "mmap_size", 268_435_456)?;
            readers.push(Mutex::new(reader));
        }
        store.readers = Arc::new(readers);
        Ok(store)
    }

    /// The same store, enforcing `quotas` from now on.
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// A throwaway store, for tests: one connection does everything.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, None)
    }

    /// `file` is the database's path, `None` in memory (which has no WAL).
    fn init(conn: Connection, file: Option<(&Path, i64)>) -> Result<Self, StoreError> {
        // WAL with NORMAL sync survives a process crash; only an OS crash can
        // lose the last transactions, an accepted trade for a laptop server.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_handler(Some(retry_soon))?;
        // The database file is read through the mapping below, so the page
        // cache mostly serves pages whose newest copy is in the WAL. Not more
        // than 16 MiB: after every commit that split a page,
        // SQLite walks its whole cache (`pcache1TruncateUnsafe`), which at
        // 64 MiB took a quarter of the writer's time.
        conn.pragma_update(None, "cache_size", -16_384)?;
        conn.pragma_update(None, "mmap_size", 268_435_456)?;
        migrate(&conn)?;
        let had_segments_table = has_table(&conn, "segments")?;
        conn.execute_batch(SCHEMA)?;
        if !had_segments_table {
            move_segments_out_of_records(&conn)?;
        }
        files::init(&conn)?;
        keys::init(&conn)?;
        leases::init(&conn)?;
        let checkpointer = match file {
            Some((path, wal_limit_frames)) => {
                let checkpoints = Connection::open(path)?;
                checkpoints.busy_handler(Some(retry_soon))?;
                let checkpointer = spawn_checkpointer(checkpoints, wal_limit_frames);
                if checkpointer.is_some() {
                    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                    conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
                }
                checkpointer
            }
            None => None,
        };
        Ok(Self {
            writer: spawn_writer(conn, checkpointer),
            readers: Arc::new(Vec::new()),
            next_reader: Arc::new(AtomicUsize::new(0)),
            quotas: Quotas::UNLIMITED,
        })
    }

    /// Runs a read on a reader connection (the writer's, in memory).
    pub(super) async fn with_reader<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.readers.is_empty() {
            return self.with_conn(move |conn| work(conn)).await;
        }
        let readers = Arc::clone(&self.readers);
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            // The first free reader, starting from a rotating one.
            for offset in 0..readers.len() {
                if let Ok(guard) = readers[(first + offset) % readers.len()].try_lock() {
                    return work(&guard);
                }
            }
            let guard = readers[first % readers.len()]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&guard)
        })
        .await?
    }

    /// Runs `work` on the writer connection, inside the writer thread's group
    /// transaction; the result arrives once that transaction has committed.
    pub(super) async fn with_conn<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |conn: Option<&mut Connection>| -> Delivery {
            let outcome = conn.map(|conn| in_savepoint(conn, work));
            Box::new(move |committed: Result<(), String>| {
                let result = match (outcome, committed) {
                    (Some(Err(error)), _) => Err(error),
                    (Some(Ok(value)), Ok(())) => Ok(value),
                    (_, Err(error)) => Err(StoreError::Write(format!("commit failed: {error}"))),
                    (None, Ok(())) => {
                        Err(StoreError::Write("the transaction did not begin".into()))
                    }
                };
                let _ = reply.send(result);
            })
        });
        self.writer
            .send(job)
            .map_err(|_| StoreError::WriterStopped)?;
        result.await.map_err(|_| StoreError::WriterStopped)?
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Embedded(Box::new(error))
    }
}

fn to_json(record: &BatchRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json(text: &str) -> Result<BatchRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Offsets are below 2^63 (file sizes), so they fit SQLite's integers.
fn to_sql(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

fn from_sql(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative offset {value}")))
}

/// The status and seal of a live batch, without reading the rest of its record.
fn read_run_state(
    conn: &Connection,
    tenant: &str,
    id: &str,
    now_secs: i64,
) -> Result<Option<RunState>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT json_extract(record, '$.batch.status'), json_extract(record, '$.sealed')
             FROM batches WHERE tenant = ?1 AND id = ?2 AND purge_at > ?3",
        )?
        .query_row(params![tenant, id, now_secs], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<bool>>(1)?))
        })
        .optional()?;
    row.map(|(status, sealed)| {
        Ok(RunState {
            status: BatchStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("bad status {status:?}")))?,
            sealed: sealed.unwrap_or(false),
        })
    })
    .transpose()
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
        let (tenant, id) = (record.tenant.to_string(), record.batch.id.to_string());
        let (created_order, purge_at) = (record.created_order(), record.purge_at);
        let pending_status =
            (!record.batch.status.is_terminal()).then(|| record.batch.status.as_str());
        let created_at = record.batch.created_at;
        let quotas = self.quotas;
        self.with_conn(move |conn| {
            if !quotas.is_unlimited() {
                // Inside the writer's transaction: the check and the writes below
                // cannot be separated, so racing creates never exceed the quota.
                if let Some(existing) = read_live(conn, &tenant, &id, now_secs)? {
                    return Ok(CreateOutcome::Existing(Box::new(existing)));
                }
                if let Some(exceeded) = quota_room(conn, &tenant, quotas)? {
                    return Ok(CreateOutcome::QuotaExceeded(exceeded));
                }
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO quota_usage (tenant, batch_id) VALUES (?1, ?2)",
                )?
                .execute(params![tenant, id])?;
            }
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
        self.with_reader(move |conn| read_live(conn, &tenant, &id, now_secs))
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
        self.with_reader(move |conn| {
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
            let tx = conn.savepoint()?;
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
            if transition.to.is_terminal() {
                release(&tx, &tenant, &id)?;
            }
            tx.commit()?;
            Ok(TransitionOutcome::Applied(Box::new(record.batch)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::writer::CHECKPOINT_EVERY_WRITES;
    use super::*;
    use crate::domain::create::CreateBatch;
    use crate::domain::execution::{ByteRange, Segment};
    use crate::domain::idempotency::{random_batch_id, Fingerprint};
    use crate::store::{CommitOutcome, ExecutionLedger, PendingBatches, SegmentCommit};

    async fn rows_of(store: &EmbeddedStore, table: &'static str) -> Vec<String> {
        store
            .with_reader(move |conn| {
                let mut statement =
                    conn.prepare(&format!("SELECT name FROM {table} ORDER BY name"))?;
                let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .expect("read")
    }

    /// Many jobs at once, so most share a group transaction with the failing one.
    async fn writes_beside(
        store: &EmbeddedStore,
        failing: impl FnOnce(&mut Connection) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        store
            .with_conn(|conn| {
                conn.execute_batch("CREATE TABLE IF NOT EXISTS probe (name TEXT PRIMARY KEY)")?;
                Ok(())
            })
            .await
            .expect("table");
        let good = (0..20).map(|i| {
            store.with_conn(move |conn| {
                conn.execute(
                    "INSERT INTO probe (name) VALUES (?1)",
                    [format!("good-{i:02}")],
                )?;
                Ok(())
            })
        });
        let bad = store.with_conn(failing);
        let (good, bad) = tokio::join!(futures_util::future::join_all(good), bad);
        for result in good {
            result.expect("the other jobs of the group commit");
        }
        bad
    }

    #[tokio::test]
    async fn a_job_that_fails_after_writing_leaves_nothing_and_its_group_commits() {
        let dir = tempfile::tempdir().expect("dir");
        let store = EmbeddedStore::open(dir.path()).expect("store");

        let failed = writes_beside(&store, |conn| {
            conn.execute("INSERT INTO probe (name) VALUES ('half-done')", [])?;
            Err(StoreError::Corrupt("fails after its first write".into()))
        })
        .await;

        assert!(matches!(failed, Err(StoreError::Corrupt(_))), "{failed:?}");
        let rows = rows_of(&store, "probe").await;
        assert!(!rows.contains(&"half-done".to_string()), "{rows:?}");
        assert_eq!(rows.len(), 20, "{rows:?}");
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("dir");
        let store = EmbeddedStore::open(dir.path()).expect("store");

        let failed = writes_beside(&store, |conn| {
            conn.execute("INSERT INTO probe (name) VALUES ('half-done')", [])?;
            panic!("a bug in one write");
        })
        .await;

        assert!(matches!(failed, Err(StoreError::Write(_))), "{failed:?}");
        store
            .with_conn(|conn| {
                conn.execute("INSERT INTO probe (name) VALUES ('after')", [])?;
                Ok(())
            })
            .await
            .expect("the writer still takes writes");
        let rows = rows_of(&store, "probe").await;
        assert!(!rows.contains(&"half-done".to_string()), "{rows:?}");
        assert!(rows.contains(&"after".to_string()), "{rows:?}");
    }

    fn record(tenant: &TenantId, created_us: i64) -> BatchRecord {
        let request = CreateBatch::from_json(
            br#"{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}"#,
        )
        .unwrap();
        let created_at = created_us / 1_000_000;
        BatchRecord {
            batch: request.new_batch(&random_batch_id(), created_at),
            fingerprint: Fingerprint::of(&request),
            output_expires_after: None,
            created_us,
            purge_at: created_at + 86_400,
            sealed: false,
            max_concurrency: None,
            tenant: tenant.clone(),
        }
    }

    /// A data directory written when batches were a key-ordered table: its
    /// rows move into the insertion-ordered one and stay readable and listable.
    #[tokio::test]
    async fn a_key_ordered_batches_table_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = TenantId::parse("t").unwrap();
        let (older, newer) = (record(&tenant, 1_000_000), record(&tenant, 2_000_000));
        {
            let conn = Connection::open(dir.path().join("batches.sqlite3")).unwrap();
            conn.execute_batch(
                "CREATE TABLE batches (
                     tenant TEXT NOT NULL, id TEXT NOT NULL, created_order TEXT NOT NULL,
                     purge_at INTEGER NOT NULL, record TEXT NOT NULL,
                     pending_status TEXT, pending_since INTEGER,
                     PRIMARY KEY (tenant, id)
                 ) WITHOUT ROWID;",
            )
            .unwrap();
            for record in [&newer, &older] {
                conn.execute(
                    "INSERT INTO batches VALUES (?1, ?2, ?3, ?4, ?5, 'validating', 1)",
                    params![
                        record.tenant.as_str(),
                        record.batch.id.as_str(),
                        record.created_order(),
                        record.purge_at,
                        to_json(record).unwrap()
                    ],
                )
                .unwrap();
            }
        }

        let store = EmbeddedStore::open(dir.path()).unwrap();

        let id = older.batch.id.clone();
        assert_eq!(
            store.get(&tenant, &id, 0).await.unwrap(),
            Some(older.clone())
        );
        let ListOutcome::Page { batches, has_more } =
            store.list(&tenant, None, 10, 0).await.unwrap()
        else {
            panic!("a page")
        };
        assert_eq!(batches, vec![newer.batch, older.batch]);
        assert!(!has_more);
        let stuck = store.stuck(BatchStatus::Validating, 2, 10).await.unwrap();
        assert_eq!(stuck.len(), 2);
        // A second start finds nothing to migrate.
        drop(store);
        EmbeddedStore::open(dir.path()).unwrap();
    }

    /// A data directory written when segments lived inside the batch's
    /// record: they move to the segments table, the record loses them, and
    /// the running batch goes on from where it was.
    #[tokio::test]
    async fn segments_inside_records_move_to_their_own_table() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = TenantId::parse("t").unwrap();
        let mut running = record(&tenant, 1_000_000);
        running.batch.status = BatchStatus::InProgress;
        running.batch.request_counts.total = 3;
        running.batch.request_counts.completed = 2;
        let id = running.batch.id.clone();
        {
            // The schema before the segments table, and a record as it was.
            let conn = Connection::open(dir.path().join("batches.sqlite3")).unwrap();
            conn.execute_batch(SCHEMA.split("-- Committed segments").next().unwrap())
                .unwrap();
            let mut json: serde_json::Value = serde_json::to_value(&running).unwrap();
            json["segments"] = serde_json::json!({
                "0": {"end": 10, "output_part": "p0", "error_part": null, "completed": 1, "failed": 0},
                "10": {"end": 25, "output_part": "p1", "error_part": null, "completed": 1, "failed": 0}
            });
            conn.execute(
                "INSERT INTO batches (tenant, id, created_order, purge_at, record) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tenant.as_str(), running.batch.id.as_str(), running.created_order(), running.purge_at, json.to_string()],
            )
            .unwrap();
        }

        let store = EmbeddedStore::open(dir.path()).unwrap();

        let segments = store.segments(&tenant, &id, 0).await.unwrap();
        assert_eq!(segments.keys().copied().collect::<Vec<_>>(), vec![0, 10]);
        assert_eq!(segments[&10].end, 25);
        assert_eq!(segments[&10].output_part.as_deref(), Some("p1"));
        let shard = ByteRange { start: 0, end: 100 };
        assert_eq!(
            store.resume_point(&tenant, &id, shard, 0).await.unwrap(),
            Some(25)
        );
        let stored: String = store
            .with_reader({
                let id = id.to_string();
                move |conn| {
                    Ok(
                        conn.query_row("SELECT record FROM batches WHERE id = ?1", [id], |r| {
                            r.get(0)
                        })?,
                    )
                }
            })
            .await
            .unwrap();
        assert!(!stored.contains("segments"), "{stored}");
        assert_eq!(store.get(&tenant, &id, 0).await.unwrap(), Some(running));
        // A second start finds nothing to move.
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.segments(&tenant, &id, 0).await.unwrap().len(), 2);
    }

    /// A create that takes over a purged batch's id starts without its segments.
    #[tokio::test]
    async fn a_batch_taking_over_a_purged_id_has_no_segments() {
        let store = EmbeddedStore::in_memory().unwrap();
        let tenant = TenantId::parse("t").unwrap();
        let mut old = record(&tenant, 1_000_000);
        old.batch.status = BatchStatus::InProgress;
        let id = old.batch.id.clone();
        assert_eq!(store.create(&old, 0).await.unwrap(), CreateOutcome::Created);
        let commit = SegmentCommit {
            shard_start: 0,
            start: 0,
            segment: Segment {
                end: 10,
                ..Segment::default()
            },
            usage: Default::default(),
            purge_at: old.purge_at,
        };
        assert_eq!(
            store
                .commit_segment(&tenant, &id, &commit, 0)
                .await
                .unwrap(),
            CommitOutcome::Committed
        );

        let mut new = old.clone();
        new.created_us = 5_000_000;
        new.purge_at = old.purge_at + 1_000;
        let later = old.purge_at;
        assert_eq!(
            store.create(&new, later).await.unwrap(),
            CreateOutcome::Created
        );

        assert!(store
            .segments(&tenant, &id, later)
            .await
            .unwrap()
            .is_empty());
    }

    /// Under writes that never pause, the WAL cannot start over on its own;
    /// the checkpointer must restart it at its bound instead of letting it grow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_load_without_pauses_keeps_the_wal_within_its_bound() {
        const LIMIT_FRAMES: i64 = 1_024;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open_with_wal_limit(dir.path(), LIMIT_FRAMES).unwrap());
        let tenant = TenantId::parse("t").unwrap();
        let wal = dir.path().join("batches.sqlite3-wal");
        // 64 writers keep the writer thread busy: about 60 MB of WAL frames,
        // fifteen times the bound.
        let mut writers = Vec::new();
        for writer in 0..64 {
            let (store, tenant, wal) = (Arc::clone(&store), tenant.clone(), wal.clone());
            writers.push(tokio::spawn(async move {
                let mut largest = 0;
                for n in 0..80 {
                    let created = store.create(&record(&tenant, writer * 1_000 + n), 0).await;
                    assert_eq!(created.unwrap(), CreateOutcome::Created);
                    largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                }
                largest
            }));
        }
        let mut largest = 0;
        for writer in writers {
            largest = largest.max(writer.await.unwrap());
        }
        // Between two checkpoints (every 500 writes) the WAL may pass the
        // bound by what those writes add; without the bound it reaches ~60 MB.
        let allowed = (LIMIT_FRAMES * 4096 + 24 * 1024 * 1024) as u64;
        assert!(
            largest <= allowed,
            "the WAL grew to {largest} bytes, over its bound of {allowed}"
        );
    }

    /// The writer no longer checkpoints: the checkpointer thread must copy the
    /// WAL back into the database file, or the file would never grow.
    #[tokio::test]
    async fn sustained_writes_are_checkpointed_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let tenant = TenantId::parse("t").unwrap();
        let database = dir.path().join("batches.sqlite3");
        let initial = std::fs::metadata(&database).unwrap().len();
        for n in 0..(4 * CHECKPOINT_EVERY_WRITES as i64) {
            let created = store.create(&record(&tenant, n), 0).await.unwrap();
            assert_eq!(created, CreateOutcome::Created);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // ~1 KB records: the file must hold at least a quarter of them.
        while std::fs::metadata(&database).unwrap().len() < initial + 500 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file never grew past {} bytes",
                std::fs::metadata(&database).unwrap().len()
            );
            tokio::task::yield_now().await;
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
