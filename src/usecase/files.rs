//! Storing a new file: its bytes streamed and checked (`ingest`), then its
//! record, the bytes removed again when the record cannot be written.

use crate::clock::Clock;
use crate::domain::batch_file::BatchFileLimits;
use crate::domain::new_file::{file_expires_at, ExpiresAfter};
use crate::domain::upload::UploadStatus;
use crate::domain::{FileId, FileObject, FilePurpose, TenantId, ValidationError};
use crate::files::{file_key, BlobError, BlobStore};
use crate::store::files::{FileRecord, FileStore};
use crate::store::StoreError;
use crate::telemetry::ErrorChain;

use super::ingest::{Expected, Ingest, IngestError};

/// What the file and upload use cases work with.
pub struct Files<'a> {
    pub files: &'a dyn FileStore,
    pub blobs: &'a dyn BlobStore,
    pub clock: &'a dyn Clock,
    /// How long an upload's record is kept.
    pub retention_secs: i64,
    /// The limits a `purpose=batch` file is checked against.
    pub batch_file_limits: BatchFileLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("no upload {0}")]
    UploadNotFound(String),
    #[error("upload {id} is {status} and cannot {action}")]
    UploadNotPending {
        id: String,
        status: UploadStatus,
        action: &'static str,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<IngestError> for FilesError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Invalid(error) => Self::Invalid(error),
            IngestError::Blob(error) => Self::Blob(error),
        }
    }
}

/// A file whose bytes are being written: the handler pushes them into
/// `ingest` as they arrive, then [`Files::finish_file`] records it.
pub struct NewFile {
    pub id: FileId,
    blob_key: String,
    pub ingest: Ingest,
}

/// What the client said about a new file besides its bytes.
pub struct FileDetails {
    pub filename: String,
    pub purpose: FilePurpose,
    pub expires_after: Option<ExpiresAfter>,
}

impl Files<'_> {
    /// Starts a file of `tenant`; `purpose` when already known (it decides the
    /// checks, which otherwise run until it is).
    pub async fn begin_file(
        &self,
        tenant: &TenantId,
        purpose: Option<FilePurpose>,
        param: &'static str,
    ) -> Result<NewFile, FilesError> {
        let id = FileId::random();
        let blob_key = file_key(tenant, &id);
        let ingest = Ingest::start(
            self.blobs,
            &blob_key,
            purpose,
            self.batch_file_limits,
            Expected::default(),
            param,
        )
        .await?;
        Ok(NewFile {
            id,
            blob_key,
            ingest,
        })
    }

    /// Runs the final checks, makes the bytes visible and writes the record.
    #[tracing::instrument(skip_all, fields(%tenant, file_id = %file.id))]
    pub async fn finish_file(
        &self,
        tenant: TenantId,
        mut file: NewFile,
        details: FileDetails,
    ) -> Result<FileObject, FilesError> {
        file.ingest.set_purpose(details.purpose);
        let bytes = file.ingest.finish().await?;
        let record = self.new_record(
            tenant,
            &file.id,
            file.blob_key,
            bytes,
            details.filename,
            details.purpose,
            details.expires_after,
        );
        self.store_record(&record).await?;
        tracing::info!(bytes, purpose = %details.purpose, "file uploaded");
        Ok(record.file)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_record(
        &self,
        tenant: TenantId,
        id: &FileId,
        blob_key: String,
        bytes: u64,
        filename: String,
        purpose: FilePurpose,
        expires_after: Option<ExpiresAfter>,
    ) -> FileRecord {
        let created_us = self.clock.now_micros();
        let created_at = created_us.div_euclid(1_000_000);
        FileRecord {
            tenant,
            file: FileObject {
                id: id.clone(),
                object: Default::default(),
                bytes,
                created_at,
                expires_at: file_expires_at(purpose, expires_after, created_at),
                filename,
                purpose,
                status: Default::default(),
                status_details: None,
            },
            blob_key,
            created_us,
        }
    }

    /// Writes the record of a file whose bytes are stored; without the record
    /// the bytes would be unreachable, so a failed write removes them.
    pub(super) async fn store_record(&self, record: &FileRecord) -> Result<(), FilesError> {
        if let Err(error) = self.files.create_file(record).await {
            if let Err(cleanup) = self.blobs.delete(&record.blob_key).await {
                tracing::warn!(key = %record.blob_key, error = %ErrorChain(&cleanup), "could not remove the bytes of an unrecorded file");
            }
            return Err(error.into());
        }
        Ok(())
    }
}
