//! The `FileStore` port: File objects (metadata) per tenant, and the Upload
//! objects that become files. The bytes live in the `BlobStore` port
//! (`files/`), under `blob_key`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::new_file::ExpiresAfter;
use crate::domain::upload::{Upload, UploadId, UploadTransition};
use crate::domain::{FileId, FileObject, FilePurpose, TenantId};

/// A file as stored: the OpenAI object plus where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub tenant: TenantId,
    pub file: FileObject,
    /// The `BlobStore` key of the content.
    pub blob_key: String,
    /// Creation time in microseconds, for listing order.
    pub created_us: i64,
}

impl FileRecord {
    /// A file past its `expires_at` is gone, whether or not it has been purged yet.
    pub fn is_live(&self, now_secs: i64) -> bool {
        self.file
            .expires_at
            .is_none_or(|expires| expires > now_secs)
    }

    /// The listing sort key: by creation, ties broken by id, so a cursor always
    /// names one exact position.
    pub fn file_order(&self) -> String {
        super::created_order(self.created_us, self.file.id.as_str())
    }
}

/// Listing order, by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    Asc,
    /// OpenAI's default: newest first.
    #[default]
    Desc,
}

/// What `GET /v1/files` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileQuery {
    pub purpose: Option<FilePurpose>,
    /// List the files that come after this one in `order`.
    pub after: Option<FileId>,
    pub limit: usize,
    pub order: SortOrder,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FileListOutcome {
    Page {
        files: Vec<FileObject>,
        has_more: bool,
    },
    /// The `after` cursor names no live file of this tenant.
    UnknownCursor,
}

/// An upload as stored: the OpenAI object plus what completing it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub tenant: TenantId,
    /// As written; render it with [`Upload::as_of`] so a lapsed one reads `expired`.
    pub upload: Upload,
    pub mime_type: String,
    /// The expiry of the file the upload becomes.
    pub expires_after: Option<ExpiresAfter>,
    /// Unix seconds after which the record is gone (DynamoDB TTL; reads check too).
    pub purge_at: i64,
}

impl UploadRecord {
    pub fn is_live(&self, now_secs: i64) -> bool {
        self.purge_at > now_secs
    }
}

/// What a conditional upload status change found.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadOutcome {
    Applied(Box<Upload>),
    /// The upload exists but is no longer pending (or has expired); unchanged.
    Refused(Box<Upload>),
    NotFound,
}

#[async_trait]
pub trait FileStore: Send + Sync {
    /// Stores a new file record (ids are fresh, so this never overwrites).
    async fn create_file(&self, record: &FileRecord) -> Result<(), StoreError>;

    /// A strongly consistent read of one live file.
    async fn get_file(
        &self,
        tenant: &TenantId,
        id: &FileId,
        now_secs: i64,
    ) -> Result<Option<FileRecord>, StoreError>;

    /// One page of a tenant's live files in `query.order`, after `query.after`.
    async fn list_files(
        &self,
        tenant: &TenantId,
        query: &FileQuery,
        now_secs: i64,
    ) -> Result<FileListOutcome, StoreError>;

    /// Deletes a file record, returning it if it was there and live (the
    /// caller then deletes its bytes).
    async fn delete_file(
        &self,
        tenant: &TenantId,
        id: &FileId,
        now_secs: i64,
    ) -> Result<Option<FileRecord>, StoreError>;

    /// Removes up to `limit` file records that expired before `now_secs` and
    /// returns them, so the caller deletes their bytes too. DynamoDB's TTL
    /// removes expired records by itself (and the table stream reports each
    /// removal to the worker), so there this returns nothing.
    async fn sweep_expired_files(
        &self,
        now_secs: i64,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError>;

    /// Stores a new upload record (ids are fresh, so this never overwrites).
    async fn create_upload(&self, record: &UploadRecord) -> Result<(), StoreError>;

    /// A strongly consistent read of one upload, as stored.
    async fn get_upload(
        &self,
        tenant: &TenantId,
        id: &UploadId,
        now_secs: i64,
    ) -> Result<Option<UploadRecord>, StoreError>;

    /// Applies `transition` if, and only if, the upload is still pending and
    /// unexpired: one conditional write, so a complete racing a cancel (or
    /// another complete) cannot both win.
    async fn transition_upload(
        &self,
        tenant: &TenantId,
        id: &UploadId,
        transition: &UploadTransition,
        now_secs: i64,
    ) -> Result<UploadOutcome, StoreError>;
}
