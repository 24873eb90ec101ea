//! File records in the same table as batches: key (`tenant`, `id` = `file-…`).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use super::{dynamo_error, DynamoStore, Item};
use crate::domain::{FileId, FileObject, TenantId};
use crate::store::files::{FileRecord, FileStore};
use crate::store::StoreError;

/// The attributes a file record stores beside the File object's own fields.
#[derive(Serialize, Deserialize)]
struct FileAttributes {
    tenant: TenantId,
    blob_key: String,
    created_us: i64,
    /// DynamoDB TTL: set only for files that expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    purge_at: Option<i64>,
}

fn to_item(record: &FileRecord) -> Result<Item, StoreError> {
    let corrupt = |e: serde_dynamo::Error| StoreError::Corrupt(e.to_string());
    let mut item: Item = serde_dynamo::to_item(&record.file).map_err(corrupt)?;
    item.retain(|_, value| !matches!(value, AttributeValue::Null(_)));
    let attributes = FileAttributes {
        tenant: record.tenant.clone(),
        blob_key: record.blob_key.clone(),
        created_us: record.created_us,
        purge_at: record.file.expires_at,
    };
    item.extend(serde_dynamo::to_item::<_, Item>(&attributes).map_err(corrupt)?);
    Ok(item)
}

fn from_item(item: Item) -> Result<FileRecord, StoreError> {
    let corrupt = |e: serde_dynamo::Error| StoreError::Corrupt(e.to_string());
    let attributes: FileAttributes = serde_dynamo::from_item(item.clone()).map_err(corrupt)?;
    let file: FileObject = serde_dynamo::from_item(item).map_err(corrupt)?;
    Ok(FileRecord {
        tenant: attributes.tenant,
        file,
        blob_key: attributes.blob_key,
        created_us: attributes.created_us,
    })
}

#[async_trait]
impl FileStore for DynamoStore {
    async fn create_file(&self, record: &FileRecord) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(record)?))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await
            .map_err(|e| dynamo_error("PutItem", e))?;
        Ok(())
    }

    async fn get_file(
        &self,
        tenant: &TenantId,
        id: &FileId,
        now_secs: i64,
    ) -> Result<Option<FileRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", e))?;
        Ok(output
            .item
            .map(from_item)
            .transpose()?
            .filter(|record| record.is_live(now_secs)))
    }
}
