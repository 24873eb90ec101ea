//! The tables, and bringing a data directory of an older version up to date.

use rusqlite::Connection;

use crate::store::StoreError;

/// `pending_status` and `pending_since` are set while a batch is in a
/// non-terminal status: the reconciler's index, as in DynamoDB.
///
/// Rows live in insertion order (`seq`) and the random `(tenant, id)` key is a
/// separate, small index: a create appends its ~1 KB record to the last pages
/// instead of splitting a random leaf of the key-ordered table, which cut the
/// pages each create dirties, and with them the bytes written, by two thirds.
pub(super) const SCHEMA: &str = "
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

/// Brings a data directory written by an older version up to date.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
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

pub(super) fn has_table(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .exists([name])?)
}

/// Earlier versions kept a batch's segments inside its record, which every
/// commit rewrote whole: they move to the segments table, once.
pub(super) fn move_segments_out_of_records(conn: &Connection) -> Result<(), StoreError> {
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
