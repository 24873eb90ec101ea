//! The embedded store for `cargo run`: SQLite in one file, same semantics as DynamoDB.
//!
//! One connection behind a mutex makes every operation atomic; each runs on the
//! blocking pool so the async runtime never waits on disk.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    BatchRecord, BatchStore, CommitOutcome, CreateOutcome, ListOutcome, RunState, SegmentCommit,
    StoreError, StuckBatch, TransitionOutcome,
};
use crate::domain::execution::{resume_point, ByteRange, Segment, Segments};
use crate::domain::{BatchId, BatchStatus, QuotaExceeded, Quotas, TenantId, Transition};

mod files;
mod keys;
mod leases;

#[derive(Clone)]
pub struct EmbeddedStore {
    /// Every write goes to one thread that owns the writer connection.
    writer: std::sync::mpsc::Sender<Job>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<AtomicUsize>,
    quotas: Quotas,
}

/// A unit of work for the writer thread. It receives the connection (or
/// `None` when the group transaction could not begin) and returns how to
/// report its result once the group's commit is known.
type Job = Box<dyn FnOnce(Option<&mut Connection>) -> Delivery + Send>;
type Delivery = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Writes queued while a group commits join the next group, up to this many.
const MAX_GROUP: usize = 256;

/// The writer thread: group commit. All jobs waiting when it wakes run in one
/// transaction, and each learns its result only after that commit, so nothing
/// is reported written that is not. One thread, no lock: the SQLite writer is
/// single anyway, and a mutex fought over by many blocking threads costs more
/// in context switches than the writes themselves.
fn spawn_writer(
    mut conn: Connection,
    checkpointer: Option<SyncSender<()>>,
) -> std::sync::mpsc::Sender<Job> {
    let (sender, jobs) = std::sync::mpsc::channel::<Job>();
    let run = move || {
        let mut since_checkpoint = 0;
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let began = conn.execute_batch("BEGIN IMMEDIATE");
            let deliveries: Vec<Delivery> = match began {
                Ok(()) => group.into_iter().map(|job| job(Some(&mut conn))).collect(),
                Err(_) => group.into_iter().map(|job| job(None)).collect(),
            };
            let committed = began
                .and_then(|()| conn.execute_batch("COMMIT"))
                .map_err(|e| e.to_string());
            if committed.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            since_checkpoint += deliveries.len();
            for deliver in deliveries {
                deliver(committed.clone());
            }
            if let Some(checkpointer) = &checkpointer {
                // A full channel means a checkpoint is already due: nothing lost.
                if since_checkpoint >= CHECKPOINT_EVERY_WRITES && checkpointer.try_send(()).is_ok()
                {
                    since_checkpoint = 0;
                }
            }
        }
    };
    // Spawning a thread fails only when the OS is out of threads; the sender
    // then reports every write as a stopped writer instead of panicking here.
    let _ = std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(run);
    sender
}

/// The writer asks for a checkpoint after this many writes: each dirties about
/// two pages, so this is about SQLite's default of one per 1,000 WAL pages.
const CHECKPOINT_EVERY_WRITES: usize = 500;

/// The WAL's backstop bound: 4 GiB of 4 KiB pages. A writer starts the WAL
/// over only when it begins with every frame copied back, which a write load
/// without pauses never allows: PASSIVE checkpoints keep up, yet the WAL grows
/// with every create until the load pauses. Past this size the checkpointer
/// runs a RESTART: it waits for the writer and the readers, and the next write
/// starts over at the top of the file. The bound is large because that restart
/// is expensive on a busy disk (rewriting the start of the WAL waits for its
/// writeback); BENCHMARKS.md has the smaller bounds measured and rejected.
const WAL_LIMIT_FRAMES: i64 = 1_048_576;

/// After the WAL starts over, its file is cut back to this size.
const WAL_KEEP_BYTES: i64 = 67_108_864;

/// Every connection's busy handler: retry every 100 µs for up to 5 s.
/// SQLite's own busy timeout sleeps 1, 2, 5, 10 … 100 ms between tries, so a
/// writer waiting out a sub-millisecond checkpoint stalled for milliseconds.
fn retry_soon(attempt: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_micros(100));
    attempt < 50_000
}

/// Checkpoints on a thread and connection of their own: with SQLite's
/// automatic checkpoints the writer itself copied the WAL back and synced the
/// database file every 1,000 pages, and every write queued behind that stall.
/// A PASSIVE checkpoint never blocks the writer. `None` if no thread could be
/// started; the caller then keeps the automatic checkpoints.
fn spawn_checkpointer(conn: Connection, wal_limit_frames: i64) -> Option<SyncSender<()>> {
    let (sender, due) = std::sync::mpsc::sync_channel::<()>(1);
    let checkpoint = |conn: &Connection, mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })
    };
    let run = move || {
        while due.recv().is_ok() {
            match checkpoint(&conn, "PASSIVE") {
                Ok((log, _)) if log > wal_limit_frames => {
                    if let Err(error) = checkpoint(&conn, "RESTART") {
                        tracing::warn!(%error, "embedded store: checkpoint failed");
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "embedded store: checkpoint failed"),
            }
        }
    };
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(run)
        .ok()
        .map(|_| sender)
}

/// Reader connections of a file-backed store.
const READERS: usize = 4;

/// `pending_status` and `pending_since` are set while a batch is in a
/// non-terminal status: the reconciler's index, as in DynamoDB.
///
/// Rows live in insertion order (`seq`) and the random `(tenant, id)` key is a
/// separate, small index: a create appends its ~1 KB record to the last pages
/// instead of splitting a random leaf of the key-ordered table, which cut the
/// pages each create dirties, and with them the bytes written, by two thirds.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS batches (
        seq            INTEGER PRIMARY KEY,
        tenant         TEXT    NOT NULL,
        id             TEXT    NOT NULL,
        created_order  TEXT    NOT NULL,
        purge_at       INTEGER NOT NULL,
        record         TEXT    NOT NULL,
        pending_status TEXT,
        pending_since  INTEGER
    );
    CREATE UNIQUE INDEX IF NOT EXISTS batches_by_key ON batches (tenant, id);
    CREATE INDEX IF NOT EXISTS batches_by_created ON batches (tenant, created_order);
    CREATE INDEX IF NOT EXISTS batches_pending ON batches (pending_status, pending_since)
        WHERE pending_status IS NOT NULL;
    -- Quota usage: one row per batch in flight holding a slot, with the
    -- request lines reserved for it. Written in the same transactions as the
    -- batch's create and terminal transition, so nothing can leak.
    CREATE TABLE IF NOT EXISTS quota_usage (
        tenant   TEXT    NOT NULL,
        batch_id TEXT    NOT NULL,
        lines    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, batch_id)
    ) WITHOUT ROWID;
    -- Committed segments (`domain::execution`), one row each beside their
    -- batch: a commit inserts a row and rewrites the batch's small record,
    -- whatever the number of segments before it.
    CREATE TABLE IF NOT EXISTS segments (
        tenant      TEXT    NOT NULL,
        batch_id    TEXT    NOT NULL,
        start       INTEGER NOT NULL,
        segment_end INTEGER NOT NULL,
        segment     TEXT    NOT NULL,
        PRIMARY KEY (tenant, batch_id, start)
    ) WITHOUT ROWID;
    -- A create that takes over a purged batch's id (the only write that
    -- changes `created_order`) starts without the old batch's segments.
    CREATE TRIGGER IF NOT EXISTS segments_go_with_their_batch
    AFTER UPDATE OF created_order ON batches
    WHEN NEW.created_order IS NOT OLD.created_order
    BEGIN
        DELETE FROM segments WHERE tenant = OLD.tenant AND batch_id = OLD.id;
    END;
";

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

/// Runs one job of a group inside a savepoint of its own, so its writes are
/// all or nothing: an error or a panic rolls back that job only, and the
/// group's other jobs commit (a panic must not end the writer thread either).
fn in_savepoint<T, F>(conn: &mut Connection, work: F) -> Result<T, StoreError>
where
    F: FnOnce(&mut Connection) -> Result<T, StoreError>,
{
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut *conn)))
        .unwrap_or_else(|_| Err(StoreError::Write("the write panicked".into())));
    if outcome.is_err() {
        conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    outcome
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Embedded(Box::new(error))
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
    let has_seq: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('batches') WHERE name = 'seq'")?
        .exists([])?;
    if has_batches && !has_seq {
        // The key-ordered (WITHOUT ROWID) table of earlier versions: copy it
        // into the insertion-ordered one; SCHEMA then makes its indexes.
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE batches_by_seq (
                 seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, id TEXT NOT NULL,
                 created_order TEXT NOT NULL, purge_at INTEGER NOT NULL, record TEXT NOT NULL,
                 pending_status TEXT, pending_since INTEGER);
             INSERT INTO batches_by_seq
                 (tenant, id, created_order, purge_at, record, pending_status, pending_since)
             SELECT tenant, id, created_order, purge_at, record, pending_status, pending_since
             FROM batches ORDER BY created_order;
             DROP TABLE batches;
             ALTER TABLE batches_by_seq RENAME TO batches;
             COMMIT;",
        )?;
    }
    Ok(())
}

fn has_table(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .exists([name])?)
}

/// Earlier versions kept a batch's segments inside its record, which every
/// commit rewrote whole: they move to the segments table, once.
fn move_segments_out_of_records(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         INSERT OR IGNORE INTO segments (tenant, batch_id, start, segment_end, segment)
         SELECT b.tenant, b.id, CAST(s.key AS INTEGER), json_extract(s.value, '$.end'), s.value
         FROM batches b, json_each(b.record, '$.segments') s;
         UPDATE batches SET record = json_remove(record, '$.segments')
         WHERE json_type(record, '$.segments') IS NOT NULL;
         COMMIT;",
    )?;
    Ok(())
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
        let (tenant, id) = (record.tenant.to_string(), record.batch.id.clone());
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
fn quota_room(
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
fn release(conn: &Connection, tenant: &str, id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM quota_usage WHERE tenant = ?1 AND batch_id = ?2")?
        .execute(params![tenant, id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::create::CreateBatch;
    use crate::domain::idempotency::{random_batch_id, Fingerprint};

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
                        record.batch.id,
                        record.created_order(),
                        record.purge_at,
                        to_json(record).unwrap()
                    ],
                )
                .unwrap();
            }
        }

        let store = EmbeddedStore::open(dir.path()).unwrap();

        let id = BatchId::parse(&older.batch.id).unwrap();
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
        let id = BatchId::parse(&running.batch.id).unwrap();
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
                params![tenant.as_str(), running.batch.id, running.created_order(), running.purge_at, json.to_string()],
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
        let id = BatchId::parse(&old.batch.id).unwrap();
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
