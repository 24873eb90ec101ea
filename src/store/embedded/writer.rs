//! The writer thread (group commit, a savepoint per job) and the checkpointer.

use std::sync::mpsc::SyncSender;

use rusqlite::Connection;

use crate::store::StoreError;

/// A unit of work for the writer thread. It receives the connection (or
/// `None` when the group transaction could not begin) and returns how to
/// report its result once the group's commit is known.
pub(super) type Job = Box<dyn FnOnce(Option<&mut Connection>) -> Delivery + Send>;
pub(super) type Delivery = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Writes queued while a group commits join the next group, up to this many.
const MAX_GROUP: usize = 256;

/// The writer thread: group commit. All jobs waiting when it wakes run in one
/// transaction, and each learns its result only after that commit, so nothing
/// is reported written that is not. One thread, no lock: the SQLite writer is
/// single anyway, and a mutex fought over by many blocking threads costs more
/// in context switches than the writes themselves.
pub(super) fn spawn_writer(
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
pub(super) const CHECKPOINT_EVERY_WRITES: usize = 500;

/// The WAL's backstop bound: 4 GiB of 4 KiB pages. A writer starts the WAL
/// over only when it begins with every frame copied back, which a write load
/// without pauses never allows: PASSIVE checkpoints keep up, yet the WAL grows
/// with every create until the load pauses. Past this size the checkpointer
/// runs a RESTART: it waits for the writer and the readers, and the next write
/// starts over at the top of the file. The bound is large because that restart
/// is expensive on a busy disk (rewriting the start of the WAL waits for its
/// writeback); BENCHMARKS.md has the smaller bounds measured and rejected.
pub(super) const WAL_LIMIT_FRAMES: i64 = 1_048_576;

/// After the WAL starts over, its file is cut back to this size.
pub(super) const WAL_KEEP_BYTES: i64 = 67_108_864;

/// Every connection's busy handler: retry every 100 µs for up to 5 s.
/// SQLite's own busy timeout sleeps 1, 2, 5, 10 … 100 ms between tries, so a
/// writer waiting out a sub-millisecond checkpoint stalled for milliseconds.
pub(super) fn retry_soon(attempt: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_micros(100));
    attempt < 50_000
}

/// Checkpoints on a thread and connection of their own: with SQLite's
/// automatic checkpoints the writer itself copied the WAL back and synced the
/// database file every 1,000 pages, and every write queued behind that stall.
/// A PASSIVE checkpoint never blocks the writer. `None` if no thread could be
/// started; the caller then keeps the automatic checkpoints.
pub(super) fn spawn_checkpointer(
    conn: Connection,
    wal_limit_frames: i64,
) -> Option<SyncSender<()>> {
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

/// Runs one job of a group inside a savepoint of its own, so its writes are
/// all or nothing: an error or a panic rolls back that job only, and the
/// group's other jobs commit (a panic must not end the writer thread either).
pub(super) fn in_savepoint<T, F>(conn: &mut Connection, work: F) -> Result<T, StoreError>
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
