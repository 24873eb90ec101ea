//! The `BlobStore` port: file bytes, in S3 or in a local directory.
//!
//! Metadata (the File object) lives in the `FileStore` port of `store/`; this
//! port only moves bytes, always as streams, never whole files in memory.
//!
//! Keys are always built by the service (`files/{tenant}/{file_id}`,
//! `uploads/{tenant}/{upload_id}/{part_id}`), never taken from a request.

pub mod local;
pub mod s3;

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::domain::upload::{PartId, UploadId};
use crate::domain::{FileId, TenantId};

/// A stored object, read as a stream.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("S3 {operation} failed")]
    S3 {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("local blob storage failed")]
    Io(#[from] std::io::Error),
    #[error("invalid blob key {0:?}")]
    InvalidKey(String),
}

/// Where a file's content lives.
pub fn file_key(tenant: &TenantId, id: &FileId) -> String {
    format!("files/{tenant}/{id}")
}

/// The folder of an upload's parts; every part is an object of its own in it.
pub fn upload_prefix(tenant: &TenantId, upload: &UploadId) -> String {
    format!("uploads/{tenant}/{upload}/")
}

pub fn part_key(tenant: &TenantId, upload: &UploadId, part: &PartId) -> String {
    format!("{}{part}", upload_prefix(tenant, upload))
}

/// An object being written. Nothing is visible at its key until [`finish`]
/// succeeds; [`abort`] (or dropping the writer unfinished) leaves nothing behind.
///
/// [`finish`]: BlobWriter::finish
/// [`abort`]: BlobWriter::abort
#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError>;

    /// Makes the object visible at its key; returns its size in bytes.
    async fn finish(self: Box<Self>) -> Result<u64, BlobError>;

    /// Discards everything written. Best effort: failures are logged, and what
    /// is left (an unfinished S3 multipart upload) is not visible at any key.
    async fn abort(self: Box<Self>);
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Opens the object at `key` for a streaming read; `None` if it does not exist.
    async fn open(&self, key: &str) -> Result<Option<BlobReader>, BlobError>;

    /// Opens the object at `key` from byte `offset` on (a ranged GET in S3):
    /// each shard of a batch reads only its own part of the input. An offset
    /// at or past the end reads nothing.
    async fn open_at(&self, key: &str, offset: u64) -> Result<Option<BlobReader>, BlobError>;

    /// Starts writing the object at `key`, replacing any object there on finish.
    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError>;

    /// Deletes the object at `key`; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;

    /// Deletes every object whose key starts with `prefix` (a folder, ending in `/`).
    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError>;

    /// The keys of every object whose key starts with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError>;

    /// A URL anyone may GET the object from for `valid_for`, if this store can
    /// make one (S3 presigning); `None` means the bytes must be streamed.
    async fn download_url(
        &self,
        key: &str,
        valid_for: Duration,
    ) -> Result<Option<String>, BlobError>;
}
