//! Managed API keys in the embedded store: one row per key, keyed by its hash.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::EmbeddedStore;
use crate::domain::api_key::{ApiKeyHash, ApiKeyId, ApiKeyName, ApiKeyRecord};
use crate::domain::TenantId;
use crate::store::keys::{KeyStore, RevokeOutcome};
use crate::store::StoreError;

/// `hash` is the hex SHA-256 of the secret; the secret itself is never stored.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS api_keys (
        hash       TEXT    NOT NULL PRIMARY KEY,
        key_id     TEXT    NOT NULL UNIQUE,
        tenant     TEXT    NOT NULL,
        name       TEXT    NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    ) WITHOUT ROWID;
";

const COLUMNS: &str = "key_id, tenant, name, hash, created_at, revoked_at";

pub(super) fn init(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<ApiKeyRecord, StoreError>> {
    let (key_id, tenant, name, hash): (String, String, String, String) =
        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
    let (created_at, revoked_at): (i64, Option<i64>) = (row.get(4)?, row.get(5)?);
    let corrupt = |what: &str| StoreError::Corrupt(format!("api key row: bad {what}"));
    Ok((|| {
        Ok(ApiKeyRecord {
            key_id: ApiKeyId::parse(&key_id).map_err(|_| corrupt("key_id"))?,
            tenant: TenantId::parse(&tenant).map_err(|_| corrupt("tenant"))?,
            name: ApiKeyName::parse(&name).map_err(|_| corrupt("name"))?,
            hash: ApiKeyHash::from_hex(&hash).ok_or_else(|| corrupt("hash"))?,
            created_at,
            revoked_at,
        })
    })())
}

fn read_by_id(conn: &Connection, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE key_id = ?1"))?
        .query_row(params![key_id], from_row)
        .optional()?
        .transpose()
}

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn create_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "INSERT INTO api_keys (key_id, tenant, name, hash, created_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                record.key_id.as_str(),
                record.tenant.as_str(),
                record.name.as_str(),
                record.hash.to_hex(),
                record.created_at,
                record.revoked_at
            ])?;
            Ok(())
        })
        .await
    }

    async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let tenant = tenant.map(|t| t.to_string());
        self.with_reader(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM api_keys WHERE ?1 IS NULL OR tenant = ?1
                 ORDER BY created_at, key_id"
            ))?;
            let rows = statement.query_map(params![tenant], from_row)?;
            let mut keys = Vec::new();
            for row in rows {
                keys.push(row??);
            }
            Ok(keys)
        })
        .await
    }

    async fn revoke_key(
        &self,
        key_id: &ApiKeyId,
        now_secs: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        let key_id = key_id.to_string();
        self.with_conn(move |conn| {
            let revoked = conn
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![key_id, now_secs])?;
            Ok(match (read_by_id(conn, &key_id)?, revoked) {
                (None, _) => RevokeOutcome::NotFound,
                (Some(record), 1) => RevokeOutcome::Revoked(record),
                (Some(record), _) => RevokeOutcome::AlreadyRevoked(record),
            })
        })
        .await
    }

    async fn find_key(&self, hash: &ApiKeyHash) -> Result<Option<ApiKeyRecord>, StoreError> {
        let hash = hash.to_hex();
        self.with_reader(move |conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE hash = ?1"))?
                .query_row(params![hash], from_row)
                .optional()?
                .transpose()
        })
        .await
    }
}
