//! File records in the embedded store.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::EmbeddedStore;
use crate::domain::{FileId, TenantId};
use crate::store::files::{FileRecord, FileStore};
use crate::store::StoreError;

pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS files (
        tenant     TEXT    NOT NULL,
        id         TEXT    NOT NULL,
        created_us INTEGER NOT NULL,
        record     TEXT    NOT NULL,
        PRIMARY KEY (tenant, id)
    ) WITHOUT ROWID;
";

#[async_trait]
impl FileStore for EmbeddedStore {
    async fn create_file(&self, record: &FileRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (tenant, id, created_us) = (
            record.tenant.to_string(),
            record.file.id.clone(),
            record.created_us,
        );
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "INSERT INTO files (tenant, id, created_us, record) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![tenant, id, created_us, json])?;
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
        self.with_conn(move |conn| {
            let text: Option<String> = conn
                .prepare_cached("SELECT record FROM files WHERE tenant = ?1 AND id = ?2")?
                .query_row(params![tenant, id], |row| row.get(0))
                .optional()?;
            Ok(text
                .map(|t| {
                    serde_json::from_str::<FileRecord>(&t)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .transpose()?
                .filter(|record| record.is_live(now_secs)))
        })
        .await
    }
}
