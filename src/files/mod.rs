//! The `BlobStore` port: file bytes, in S3 or in a local directory.
//!
//! Metadata (the File object) lives in the `FileStore` port of `store/`; this
//! port only moves bytes, always as streams, never whole files in memory.

pub mod local;
pub mod s3;

use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::AsyncRead;

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
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Opens the object at `key` for a streaming read; `None` if it does not exist.
    async fn open(&self, key: &str) -> Result<Option<BlobReader>, BlobError>;
}
