//! File and upload records in the embedded store.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::EmbeddedStore;
use crate::domain::upload::{UploadId, UploadTransition};
use crate::domain::{FileId, TenantId};
use crate::store::files::{
    FileListOutcome, FileQuery, FileRecord, FileStore, SortOrder, UploadOutcome, UploadRecord,
};
use crate::store::StoreError;

/// `purpose` and `expires_at` repeat fields of the record so listing can
/// filter and page in SQL; `expires_at` is NULL for files that never expire.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS files (
        tenant     TEXT    NOT NULL,
        id         TEXT    NOT NULL,
        created_us INTEGER NOT NULL,
        record     TEXT    NOT NULL,
        purpose    TEXT,
        expires_at INTEGER,
        PRIMARY KEY (tenant, id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS uploads (
        tenant   TEXT    NOT NULL,
        id       TEXT    NOT NULL,
        purge_at INTEGER NOT NULL,
        record   TEXT    NOT NULL,
        PRIMARY KEY (tenant, id)
    ) WITHOUT ROWID;
";

const INDEXES: &str = "
    CREATE INDEX IF NOT EXISTS files_by_created ON files (tenant, created_us, id);
    CREATE INDEX IF NOT EXISTS files_by_purpose ON files (tenant, purpose, created_us, id);
";

/// Creates the tables, bringing a files table of an older version up to date.
pub(super) fn init(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA)?;
    let has_purpose: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('files') WHERE name = 'purpose'")?
        .exists([])?;
    if !has_purpose {
        conn.execute_batch(
            "ALTER TABLE files ADD COLUMN purpose TEXT;
             ALTER TABLE files ADD COLUMN expires_at INTEGER;
             UPDATE files SET purpose = json_extract(record, '$.file.purpose'),
                              expires_at = json_extract(record, '$.file.expires_at');",
        )?;
    }
    conn.execute_batch(INDEXES)?;
    Ok(())
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn file_from_json(text: &str) -> Result<FileRecord, StoreError> {
    serde_json::from_str(text).map_err(corrupt)
}

fn upload_from_json(text: &str) -> Result<UploadRecord, StoreError> {
    serde_json::from_str(text).map_err(corrupt)
}

fn read_live_file(
    conn: &Connection,
    tenant: &str,
    id: &str,
    now_secs: i64,
) -> Result<Option<FileRecord>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT record FROM files WHERE tenant = ?1 AND id = ?2")?
        .query_row(params![tenant, id], |row| row.get(0))
        .optional()?;
    Ok(text
        .map(|t| file_from_json(&t))
        .transpose()?
        .filter(|record| record.is_live(now_secs)))
}

fn read_upload(
    conn: &Connection,
    tenant: &str,
    id: &str,
    now_secs: i64,
) -> Result<Option<UploadRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT record FROM uploads WHERE tenant = ?1 AND id = ?2 AND purge_at > ?3",
    )?
    .query_row(params![tenant, id, now_secs], |row| row.get::<_, String>(0))
    .optional()?
    .map(|text| upload_from_json(&text))
    .transpose()
}

#[async_trait]
impl FileStore for EmbeddedStore {
    async fn create_file(&self, record: &FileRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(corrupt)?;
        let (tenant, id, created_us) = (
            record.tenant.to_string(),
            record.file.id.to_string(),
            record.created_us,
        );
        let (purpose, expires_at) = (record.file.purpose.as_str(), record.file.expires_at);
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "INSERT INTO files (tenant, id, created_us, record, purpose, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![tenant, id, created_us, json, purpose, expires_at])?;
            Ok(())
        })
        .await
    }

    async fn get_file(
        &self,
        tenant: &TenantId,
        id: &FileId,
        now_secs: i64,
    ) -> Result<Option<FileRecord>, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_reader(move |conn| read_live_file(conn, &tenant, &id, now_secs))
            .await
    }

    async fn list_files(
        &self,
        tenant: &TenantId,
        query: &FileQuery,
        now_secs: i64,
    ) -> Result<FileListOutcome, StoreError> {
        let tenant = tenant.to_string();
        let after = query.after.as_ref().map(|a| a.to_string());
        let purpose = query.purpose.map(|p| p.as_str());
        let (limit, order) = (query.limit, query.order);
        self.with_reader(move |conn| {
            let cursor = match after {
                None => None,
                Some(after) => match read_live_file(conn, &tenant, &after, now_secs)? {
                    Some(record) => Some((record.created_us, record.file.id.to_string())),
                    None => return Ok(FileListOutcome::UnknownCursor),
                },
            };
            let (cursor_us, cursor_id) = cursor.unzip();
            // One row more than asked for tells whether another page exists.
            let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
            let sql = match order {
                SortOrder::Desc => {
                    "SELECT record FROM files
                     WHERE tenant = ?1 AND (?2 IS NULL OR purpose = ?2)
                       AND (expires_at IS NULL OR expires_at > ?3)
                       AND (?4 IS NULL OR (created_us, id) < (?4, ?5))
                     ORDER BY created_us DESC, id DESC LIMIT ?6"
                }
                SortOrder::Asc => {
                    "SELECT record FROM files
                     WHERE tenant = ?1 AND (?2 IS NULL OR purpose = ?2)
                       AND (expires_at IS NULL OR expires_at > ?3)
                       AND (?4 IS NULL OR (created_us, id) > (?4, ?5))
                     ORDER BY created_us ASC, id ASC LIMIT ?6"
                }
            };
            let mut statement = conn.prepare_cached(sql)?;
            let rows = statement.query_map(
                params![tenant, purpose, now_secs, cursor_us, cursor_id, fetch],
                |row| row.get::<_, String>(0),
            )?;
            let mut files = Vec::new();
            for row in rows {
                files.push(file_from_json(&row?)?.file);
            }
            let has_more = files.len() > limit;
            files.truncate(limit);
            Ok(FileListOutcome::Page { files, has_more })
        })
        .await
    }

    async fn delete_file(
        &self,
        tenant: &TenantId,
        id: &FileId,
        now_secs: i64,
    ) -> Result<Option<FileRecord>, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_conn(move |conn| {
            // Only a live file: an expired one is left to the sweep, which deletes
            // its bytes with it.
            let text: Option<String> = conn
                .prepare_cached(
                    "DELETE FROM files
                     WHERE tenant = ?1 AND id = ?2 AND (expires_at IS NULL OR expires_at > ?3)
                     RETURNING record",
                )?
                .query_row(params![tenant, id, now_secs], |row| row.get(0))
                .optional()?;
            Ok(text
                .map(|t| file_from_json(&t))
                .transpose()?
                .filter(|record| record.is_live(now_secs)))
        })
        .await
    }

    async fn sweep_expired_files(
        &self,
        now_secs: i64,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let mut statement = conn.prepare_cached(
                "DELETE FROM files WHERE (tenant, id) IN (
                     SELECT tenant, id FROM files
                     WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2)
                 RETURNING record",
            )?;
            let rows =
                statement.query_map(params![now_secs, limit], |row| row.get::<_, String>(0))?;
            let mut swept = Vec::new();
            for row in rows {
                swept.push(file_from_json(&row?)?);
            }
            Ok(swept)
        })
        .await
    }

    async fn create_upload(&self, record: &UploadRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(corrupt)?;
        let (tenant, id, purge_at) = (
            record.tenant.to_string(),
            record.upload.id.to_string(),
            record.purge_at,
        );
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "INSERT INTO uploads (tenant, id, purge_at, record) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![tenant, id, purge_at, json])?;
            Ok(())
        })
        .await
    }

    async fn get_upload(
        &self,
        tenant: &TenantId,
        id: &UploadId,
        now_secs: i64,
    ) -> Result<Option<UploadRecord>, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with_reader(move |conn| read_upload(conn, &tenant, &id, now_secs))
            .await
    }

    async fn transition_upload(
        &self,
        tenant: &TenantId,
        id: &UploadId,
        transition: &UploadTransition,
        now_secs: i64,
    ) -> Result<UploadOutcome, StoreError> {
        let (tenant, id, transition) = (tenant.to_string(), id.to_string(), transition.clone());
        self.with_conn(move |conn| {
            // Read and write in one transaction under the connection lock: the
            // check of the status and the write cannot be separated.
            let tx = conn.savepoint()?;
            let Some(mut record) = read_upload(&tx, &tenant, &id, now_secs)? else {
                return Ok(UploadOutcome::NotFound);
            };
            if !transition.apply(&mut record.upload, now_secs) {
                return Ok(UploadOutcome::Refused(Box::new(record.upload)));
            }
            let json = serde_json::to_string(&record).map_err(corrupt)?;
            tx.prepare_cached("UPDATE uploads SET record = ?3 WHERE tenant = ?1 AND id = ?2")?
                .execute(params![tenant, id, json])?;
            tx.commit()?;
            Ok(UploadOutcome::Applied(Box::new(record.upload)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory written before files were listable: its files table
    /// gains the listing columns, filled from the stored records.
    #[test]
    fn an_older_files_table_is_migrated_in_place() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE files (
                 tenant TEXT NOT NULL, id TEXT NOT NULL, created_us INTEGER NOT NULL,
                 record TEXT NOT NULL, PRIMARY KEY (tenant, id)
             ) WITHOUT ROWID;
             INSERT INTO files VALUES ('t', 'file-1', 5,
                 '{\"file\": {\"purpose\": \"batch\", \"expires_at\": 99}}');",
        )
        .unwrap();

        init(&conn).unwrap();
        init(&conn).unwrap(); // and again, as every start does

        let (purpose, expires_at): (String, i64) = conn
            .query_row("SELECT purpose, expires_at FROM files", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((purpose.as_str(), expires_at), ("batch", 99));
    }
}
