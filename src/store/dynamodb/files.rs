//! File and upload records in the same table as batches: key (`tenant`, `id`),
//! ids `file-…` and `upload_…`.
//!
//! Only file items carry `file_order` and `tenant_purpose`, the keys of the
//! sparse indexes that list files (`tenant-files-index`, `purpose-files-index`):
//! batches and uploads never appear in a file listing, and files never in the
//! batch listing (which reads `created_order`, an attribute files do not have).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};

use super::listing::{query_until, Take};
use super::{dynamo_error, send_guarded, DynamoStore, Guarded, Item};
use crate::domain::new_file::ExpiresAfter;
use crate::domain::upload::{Upload, UploadId, UploadTransition};
use crate::domain::{FileId, FileObject, TenantId};
use crate::store::files::{
    FileListOutcome, FileQuery, FileRecord, FileStore, SortOrder, UploadOutcome, UploadRecord,
};
use crate::store::StoreError;

/// A tenant's files by creation (`tenant`, `file_order`).
pub const FILES_INDEX: &str = "tenant-files-index";
/// A tenant's files of one purpose by creation (`tenant_purpose`, `file_order`).
pub const PURPOSE_FILES_INDEX: &str = "purpose-files-index";

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

fn corrupt(e: serde_dynamo::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn tenant_purpose(tenant: &str, purpose: &str) -> String {
    format!("{tenant}#{purpose}")
}

fn to_item(record: &FileRecord) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(&record.file).map_err(corrupt)?;
    item.retain(|_, value| !matches!(value, AttributeValue::Null(_)));
    let attributes = FileAttributes {
        tenant: record.tenant.clone(),
        blob_key: record.blob_key.clone(),
        created_us: record.created_us,
        purge_at: record.file.expires_at,
    };
    item.extend(serde_dynamo::to_item::<_, Item>(&attributes).map_err(corrupt)?);
    item.insert("file_order".into(), AttributeValue::S(record.file_order()));
    item.insert(
        "tenant_purpose".into(),
        AttributeValue::S(tenant_purpose(
            record.tenant.as_str(),
            record.file.purpose.as_str(),
        )),
    );
    Ok(item)
}

fn from_item(item: Item) -> Result<FileRecord, StoreError> {
    let attributes: FileAttributes = serde_dynamo::from_item(item.clone()).map_err(corrupt)?;
    let file: FileObject = serde_dynamo::from_item(item).map_err(corrupt)?;
    Ok(FileRecord {
        tenant: attributes.tenant,
        file,
        blob_key: attributes.blob_key,
        created_us: attributes.created_us,
    })
}

/// The attributes an upload record stores beside the Upload object's own fields.
#[derive(Serialize, Deserialize)]
struct UploadAttributes {
    tenant: TenantId,
    mime_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_after: Option<ExpiresAfter>,
    purge_at: i64,
}

fn upload_to_item(record: &UploadRecord) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(&record.upload).map_err(corrupt)?;
    item.retain(|_, value| !matches!(value, AttributeValue::Null(_)));
    let attributes = UploadAttributes {
        tenant: record.tenant.clone(),
        mime_type: record.mime_type.clone(),
        expires_after: record.expires_after,
        purge_at: record.purge_at,
    };
    item.extend(serde_dynamo::to_item::<_, Item>(&attributes).map_err(corrupt)?);
    Ok(item)
}

fn upload_from_item(item: Item) -> Result<UploadRecord, StoreError> {
    let attributes: UploadAttributes = serde_dynamo::from_item(item.clone()).map_err(corrupt)?;
    let upload: Upload = serde_dynamo::from_item(item).map_err(corrupt)?;
    Ok(UploadRecord {
        tenant: attributes.tenant,
        upload,
        mime_type: attributes.mime_type,
        expires_after: attributes.expires_after,
        purge_at: attributes.purge_at,
    })
}

fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A conditional upload change is retried at most this often; each retry
/// means the item changed between the failed write and the re-read.
const MAX_ATTEMPTS: usize = 3;

impl DynamoStore {
    async fn get_upload_item(
        &self,
        tenant: &TenantId,
        id: &str,
        now_secs: i64,
    ) -> Result<Option<UploadRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant.as_str(), id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", e))?;
        Ok(output
            .item
            .map(upload_from_item)
            .transpose()?
            .filter(|record| record.is_live(now_secs)))
    }
}

#[async_trait]
impl FileStore for DynamoStore {
    async fn create_file(&self, record: &FileRecord) -> Result<(), StoreError> {
        self.put_if_absent(to_item(record)?).await
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

    async fn list_files(
        &self,
        tenant: &TenantId,
        query: &FileQuery,
        now_secs: i64,
    ) -> Result<FileListOutcome, StoreError> {
        // The cursor is a file id; its position is its file_order.
        let cursor = match &query.after {
            None => None,
            Some(after) => match self.get_file(tenant, after, now_secs).await? {
                Some(record) => Some(record.file_order()),
                None => return Ok(FileListOutcome::UnknownCursor),
            },
        };
        let (index, partition, partition_value) = match query.purpose {
            Some(purpose) => (
                PURPOSE_FILES_INDEX,
                "tenant_purpose",
                tenant_purpose(tenant.as_str(), purpose.as_str()),
            ),
            None => (FILES_INDEX, "tenant", tenant.to_string()),
        };
        let ascending = query.order == SortOrder::Asc;
        // A key condition, not an ExclusiveStartKey: the cursor file need not be
        // in the index being read (another purpose), and every emulator agrees.
        let mut key_condition = "#partition = :partition".to_string();
        let mut values: Item = HashMap::from([
            (":partition".to_string(), AttributeValue::S(partition_value)),
            (":now".to_string(), number(now_secs)),
        ]);
        if let Some(cursor) = cursor {
            key_condition.push_str(if ascending {
                " AND file_order > :cursor"
            } else {
                " AND file_order < :cursor"
            });
            values.insert(":cursor".into(), AttributeValue::S(cursor));
        }
        let names = HashMap::from([
            ("#partition".to_string(), partition.to_string()),
            ("#expires".to_string(), "expires_at".to_string()),
        ]);
        let request = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression(&key_condition)
            // Expired files (TTL deletes late) are filtered out here; a filter
            // still counts against Limit and the 1 MB page: `query_until` reads on.
            .filter_expression("attribute_not_exists(#expires) OR #expires > :now")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(ascending);
        // One item more than asked for tells whether another page exists.
        let wanted = query.limit.saturating_add(1);
        let mut files = query_until(&request, None, wanted, |item| {
            let record = from_item(item)?;
            Ok(if record.is_live(now_secs) {
                Take::Keep(record.file)
            } else {
                Take::Skip
            })
        })
        .await?;
        let has_more = files.len() > query.limit;
        files.truncate(query.limit);
        Ok(FileListOutcome::Page { files, has_more })
    }

    async fn delete_file(
        &self,
        tenant: &TenantId,
        id: &FileId,
        now_secs: i64,
    ) -> Result<Option<FileRecord>, StoreError> {
        // One request: the old item comes back with the delete.
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| dynamo_error("DeleteItem", e))?;
        Ok(output
            .attributes
            .filter(|item| !item.is_empty())
            .map(from_item)
            .transpose()?
            .filter(|record| record.is_live(now_secs)))
    }

    async fn sweep_expired_files(
        &self,
        _now_secs: i64,
        _limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError> {
        // TTL on `purge_at` removes expired file records; the worker deletes
        // their bytes when the table stream reports the removal.
        Ok(Vec::new())
    }

    async fn create_upload(&self, record: &UploadRecord) -> Result<(), StoreError> {
        self.put_if_absent(upload_to_item(record)?).await
    }

    async fn get_upload(
        &self,
        tenant: &TenantId,
        id: &UploadId,
        now_secs: i64,
    ) -> Result<Option<UploadRecord>, StoreError> {
        self.get_upload_item(tenant, id.as_str(), now_secs).await
    }

    async fn transition_upload(
        &self,
        tenant: &TenantId,
        id: &UploadId,
        transition: &UploadTransition,
        now_secs: i64,
    ) -> Result<UploadOutcome, StoreError> {
        let mut names = HashMap::from([
            ("#status".to_string(), "status".to_string()),
            ("#expires".to_string(), "expires_at".to_string()),
        ]);
        let mut values: Item = HashMap::from([
            (
                ":to".to_string(),
                AttributeValue::S(transition.to().as_str().into()),
            ),
            (":pending".to_string(), AttributeValue::S("pending".into())),
            (":now".to_string(), number(now_secs)),
        ]);
        let mut update = "SET #status = :to".to_string();
        if let UploadTransition::Complete(file) = transition {
            let mut file_item: Item = serde_dynamo::to_item(file.as_ref()).map_err(corrupt)?;
            file_item.retain(|_, value| !matches!(value, AttributeValue::Null(_)));
            names.insert("#file".into(), "file".into());
            values.insert(":file".into(), AttributeValue::M(file_item));
            update.push_str(", #file = :file");
        }
        // Pending and unexpired is the guard (the same as `Upload::is_open`):
        // of a complete and a cancel racing, exactly one wins.
        let condition = "attribute_exists(id) AND purge_at > :now \
                         AND #status = :pending AND #expires > :now";
        for _ in 0..MAX_ATTEMPTS {
            let request = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(tenant.as_str(), id.as_str())))
                .update_expression(&update)
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .return_values(ReturnValue::AllNew);
            let returned = match send_guarded(request).await? {
                Guarded::Applied(item) => {
                    return Ok(UploadOutcome::Applied(Box::new(
                        upload_from_item(item)?.upload,
                    )));
                }
                Guarded::Refused(old) => old,
            };
            // dynalite does not return the old item: read it once.
            let current = match returned {
                Some(item) => Some(upload_from_item(item)?).filter(|r| r.is_live(now_secs)),
                None => self.get_upload_item(tenant, id.as_str(), now_secs).await?,
            };
            match current {
                None => return Ok(UploadOutcome::NotFound),
                Some(record) if !record.upload.is_open(now_secs) => {
                    return Ok(UploadOutcome::Refused(Box::new(record.upload)))
                }
                // Open now, so it changed after the failed write: try again.
                Some(_) => continue,
            }
        }
        Err(StoreError::Corrupt(format!(
            "upload {id} kept changing during a status change"
        )))
    }
}
