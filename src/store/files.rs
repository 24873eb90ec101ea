//! The `FileStore` port: File objects (metadata) per tenant. The bytes live in
//! the `BlobStore` port (`files/`), under `blob_key`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::{FileId, FileObject, TenantId};

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
}
