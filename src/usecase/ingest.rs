//! Bytes on their way into the blob store: written as they arrive, checked as
//! they pass (the batch-file format, the size, the MD5), and made visible only
//! once every check has passed. A refused file leaves nothing behind.

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;

use crate::domain::batch_file::{BatchFileCheck, BatchFileLimits};
use crate::domain::new_file::max_file_bytes;
use crate::domain::{FilePurpose, ValidationError};
use crate::files::{BlobError, BlobReader, BlobStore, BlobWriter};

/// Why bytes were not taken in.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The client's file fails a check.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// Read size when copying a stored object (an upload's parts).
const COPY_CHUNK_BYTES: usize = 256 * 1024;

/// What the finished bytes must match, beyond the purpose's own rules.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub bytes: Option<u64>,
    /// Lower-case hex.
    pub md5: Option<String>,
}

/// One new object being written and checked.
pub struct Ingest {
    writer: Box<dyn BlobWriter>,
    /// Runs until the purpose is known to be something other than `batch`:
    /// when a form sends the file before the purpose, the verdict waits ready.
    check: Option<BatchFileCheck>,
    purpose: Option<FilePurpose>,
    md5: Option<Md5>,
    expected: Expected,
    bytes: u64,
    /// Which request field the file came in, for error messages.
    param: &'static str,
}

impl Ingest {
    pub async fn start(
        blobs: &dyn BlobStore,
        key: &str,
        purpose: Option<FilePurpose>,
        limits: BatchFileLimits,
        expected: Expected,
        param: &'static str,
    ) -> Result<Self, IngestError> {
        let mut ingest = Self {
            writer: blobs.create(key).await?,
            check: Some(BatchFileCheck::new(limits)),
            purpose: None,
            md5: expected.md5.as_ref().map(|_| Md5::new()),
            expected,
            bytes: 0,
            param,
        };
        if let Some(purpose) = purpose {
            ingest.set_purpose(purpose);
        }
        Ok(ingest)
    }

    /// Bytes that are not a file of their own (an upload's part): stored as
    /// they come, checked only once assembled.
    pub fn without_format_check(mut self) -> Self {
        self.check = None;
        self
    }

    pub fn set_purpose(&mut self, purpose: FilePurpose) {
        self.purpose = Some(purpose);
        if purpose != FilePurpose::Batch {
            self.check = None;
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes one chunk. An error is final: the caller aborts (or drops) the ingest.
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), IngestError> {
        self.bytes += chunk.len() as u64;
        if let Some(check) = &mut self.check {
            check.push(&chunk);
        }
        // Refuse as early as the verdict is certain: nothing more need be stored.
        if let Some(error) = self.refusal() {
            return Err(error.into());
        }
        if let Some(md5) = &mut self.md5 {
            md5.update(&chunk);
        }
        self.writer.write(chunk).await?;
        Ok(())
    }

    /// A reason to refuse the file already, whatever comes after.
    fn refusal(&self) -> Option<ValidationError> {
        if let Some(expected) = self.expected.bytes.filter(|b| self.bytes > *b) {
            return Some(self.size_mismatch(expected));
        }
        let purpose = self.purpose?;
        if purpose == FilePurpose::Batch {
            if let Some(error) = self.check.as_ref().and_then(BatchFileCheck::error) {
                return Some(format_error(self.param, error.to_string()));
            }
        }
        let limit = max_file_bytes(purpose);
        (self.bytes > limit).then(|| {
            ValidationError::invalid_value(
                self.param,
                format!(
                    "The file is larger than {limit} bytes, the limit for purpose '{purpose}'."
                ),
            )
        })
    }

    fn size_mismatch(&self, expected: u64) -> ValidationError {
        let held = if self.bytes > expected {
            format!("more than {expected}")
        } else {
            self.bytes.to_string()
        };
        ValidationError::invalid_value(
            "bytes",
            format!(
                "The parts hold {held} bytes, but the upload was created with bytes={expected}."
            ),
        )
    }

    /// Runs the final checks and, if they pass, makes the object visible.
    /// Returns the size; on any failure nothing is left at the key.
    pub async fn finish(mut self) -> Result<u64, IngestError> {
        if let Err(error) = self.final_checks() {
            self.writer.abort().await;
            return Err(error.into());
        }
        let bytes = self.bytes;
        self.writer.finish().await?;
        Ok(bytes)
    }

    fn final_checks(&mut self) -> Result<(), ValidationError> {
        if let Some(error) = self.refusal() {
            return Err(error);
        }
        if let Some(expected) = self.expected.bytes.filter(|b| self.bytes != *b) {
            return Err(self.size_mismatch(expected));
        }
        if let (Some(md5), Some(expected)) = (self.md5.take(), &self.expected.md5) {
            let actual = hex::encode(md5.finalize());
            if &actual != expected {
                return Err(ValidationError::invalid_value(
                    "md5",
                    format!(
                        "The MD5 of the assembled file is {actual}, but the request gave {expected}."
                    ),
                ));
            }
        }
        if self.purpose == Some(FilePurpose::Batch) {
            if let Some(check) = self.check.take() {
                check
                    .finish()
                    .map_err(|e| format_error(self.param, e.to_string()))?;
            }
        }
        Ok(())
    }

    pub async fn abort(self) {
        self.writer.abort().await;
    }

    /// Copies a stored object into this one, chunk by chunk.
    pub async fn copy_from(&mut self, mut reader: BlobReader) -> Result<(), IngestError> {
        loop {
            let mut buffer = BytesMut::with_capacity(COPY_CHUNK_BYTES);
            let read = reader
                .read_buf(&mut buffer)
                .await
                .map_err(BlobError::from)?;
            if read == 0 {
                return Ok(());
            }
            self.push(buffer.freeze()).await?;
        }
    }
}

fn format_error(param: &str, message: String) -> ValidationError {
    ValidationError::new("invalid_file_format", param.to_string(), message)
}
