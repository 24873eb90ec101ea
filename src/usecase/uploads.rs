//! The Uploads API's decisions: an upload's parts are objects of their own;
//! completing streams them, in the order named, into a new file checked as
//! `POST /v1/files` checks one, and only then points the upload at it.

use crate::domain::upload::{
    unknown_part, CompleteUpload, CreateUpload, PartId, Upload, UploadId, UploadPart, UploadStatus,
    UploadTransition,
};
use crate::domain::{FileId, TenantId};
use crate::files::{file_key, part_key, upload_prefix};
use crate::store::files::{FileRecord, UploadOutcome, UploadRecord};
use crate::telemetry::ErrorChain;

use super::files::{Files, FilesError};
use super::ingest::{Expected, Ingest};

/// A part whose bytes are being written: the handler pushes them into
/// `ingest`, then [`Files::finish_part`] makes it visible.
pub struct NewPart {
    upload: UploadId,
    id: PartId,
    pub ingest: Ingest,
}

impl Files<'_> {
    #[tracing::instrument(skip_all, fields(%tenant))]
    pub async fn create_upload(
        &self,
        tenant: TenantId,
        request: CreateUpload,
    ) -> Result<Upload, FilesError> {
        let id = UploadId::random();
        let created_at = self.clock.now_secs();
        let record = UploadRecord {
            tenant,
            upload: request.new_upload(&id, created_at),
            mime_type: request.mime_type,
            expires_after: request.expires_after,
            purge_at: created_at + self.retention_secs,
        };
        self.files.create_upload(&record).await?;
        tracing::info!(upload_id = %id, bytes = record.upload.bytes, "upload created");
        Ok(record.upload)
    }

    /// The upload, if it is still open to `action`.
    pub async fn open_upload(
        &self,
        tenant: &TenantId,
        id: &UploadId,
        action: &'static str,
    ) -> Result<UploadRecord, FilesError> {
        let now = self.clock.now_secs();
        let record = self
            .files
            .get_upload(tenant, id, now)
            .await?
            .ok_or_else(|| FilesError::UploadNotFound(id.to_string()))?;
        if !record.upload.is_open(now) {
            return Err(not_pending(record.upload.as_of(now), action));
        }
        Ok(record)
    }

    /// Starts a part of an open upload. A part is only bytes: the checks run
    /// on the whole file, at completion.
    pub async fn begin_part(
        &self,
        tenant: &TenantId,
        upload: &UploadId,
    ) -> Result<NewPart, FilesError> {
        let id = PartId::random();
        let key = part_key(tenant, upload, &id);
        let ingest = Ingest::start(
            self.blobs,
            &key,
            None,
            self.batch_file_limits,
            Expected::default(),
            "data",
        )
        .await?
        .without_format_check();
        Ok(NewPart {
            upload: upload.clone(),
            id,
            ingest,
        })
    }

    pub async fn finish_part(&self, part: NewPart) -> Result<UploadPart, FilesError> {
        let bytes = part.ingest.finish().await?;
        tracing::info!(upload_id = %part.upload, part_id = %part.id, bytes, "upload part stored");
        Ok(UploadPart::new(
            &part.id,
            &part.upload,
            self.clock.now_secs(),
        ))
    }

    /// Assembles the named parts into a new file and points the upload at it.
    #[tracing::instrument(skip_all, fields(%tenant, upload_id = %id))]
    pub async fn complete_upload(
        &self,
        tenant: &TenantId,
        id: &UploadId,
        request: &CompleteUpload,
    ) -> Result<Upload, FilesError> {
        let record = self.open_upload(tenant, id, "be completed").await?;
        let upload = &record.upload;
        let file_id = FileId::random();
        let blob_key = file_key(tenant, &file_id);

        let mut ingest = Ingest::start(
            self.blobs,
            &blob_key,
            Some(upload.purpose),
            self.batch_file_limits,
            Expected {
                bytes: Some(upload.bytes),
                md5: request.md5.clone(),
            },
            "part_ids",
        )
        .await?;
        for (index, part) in request.part_ids.iter().enumerate() {
            let reader = match self.blobs.open(&part_key(tenant, id, part)).await {
                Ok(Some(reader)) => reader,
                Ok(None) => {
                    ingest.abort().await;
                    let param = format!("part_ids[{index}]");
                    return Err(unknown_part(&param, part.as_str()).into());
                }
                Err(error) => {
                    ingest.abort().await;
                    return Err(error.into());
                }
            };
            if let Err(error) = ingest.copy_from(reader).await {
                ingest.abort().await;
                return Err(error.into());
            }
        }
        let bytes = ingest.finish().await?;
        let file_record = self.new_record(
            tenant.clone(),
            &file_id,
            blob_key,
            bytes,
            upload.filename.clone(),
            upload.purpose,
            record.expires_after,
        );
        self.store_record(&file_record).await?;

        // The file exists first, then the upload points at it: a complete racing
        // a cancel (or another complete) loses here, and takes its file back.
        let now = self.clock.now_secs();
        let transition = UploadTransition::Complete(Box::new(file_record.file.clone()));
        let outcome = match self
            .files
            .transition_upload(tenant, id, &transition, now)
            .await
        {
            Ok(outcome) => outcome,
            Err(error) => {
                self.discard_file(&file_record).await;
                return Err(error.into());
            }
        };
        match outcome {
            UploadOutcome::Applied(upload) => {
                tracing::info!(%file_id, bytes, "upload completed");
                self.remove_parts(tenant, id).await;
                Ok(upload.as_of(now))
            }
            UploadOutcome::Refused(upload) => {
                self.discard_file(&file_record).await;
                Err(not_pending(upload.as_of(now), "be completed"))
            }
            UploadOutcome::NotFound => {
                self.discard_file(&file_record).await;
                Err(FilesError::UploadNotFound(id.to_string()))
            }
        }
    }

    /// A cancelled upload stays cancelled (cancelling twice answers the
    /// same); completed or expired ones cannot be.
    #[tracing::instrument(skip_all, fields(%tenant, upload_id = %id))]
    pub async fn cancel_upload(
        &self,
        tenant: &TenantId,
        id: &UploadId,
    ) -> Result<Upload, FilesError> {
        let now = self.clock.now_secs();
        match self
            .files
            .transition_upload(tenant, id, &UploadTransition::Cancel, now)
            .await?
        {
            UploadOutcome::Applied(upload) => {
                tracing::info!("upload cancelled");
                self.remove_parts(tenant, id).await;
                Ok(upload.as_of(now))
            }
            UploadOutcome::Refused(upload) if upload.status == UploadStatus::Cancelled => {
                Ok(upload.as_of(now))
            }
            UploadOutcome::Refused(upload) => Err(not_pending(upload.as_of(now), "be cancelled")),
            UploadOutcome::NotFound => Err(FilesError::UploadNotFound(id.to_string())),
        }
    }

    /// Parts are not needed once the upload is done with; a failure to remove
    /// them leaves only unreachable objects (and a lifecycle rule can sweep them).
    async fn remove_parts(&self, tenant: &TenantId, id: &UploadId) {
        let prefix = upload_prefix(tenant, id);
        if let Err(error) = self.blobs.delete_prefix(&prefix).await {
            tracing::warn!(%prefix, error = %ErrorChain(&error), "could not remove upload parts");
        }
    }

    async fn discard_file(&self, record: &FileRecord) {
        let now = self.clock.now_secs();
        let id = &record.file.id;
        if let Err(error) = self.files.delete_file(&record.tenant, id, now).await {
            tracing::warn!(file_id = %id, error = %ErrorChain(&error), "could not remove the record of a discarded file");
        }
        if let Err(error) = self.blobs.delete(&record.blob_key).await {
            tracing::warn!(key = %record.blob_key, error = %ErrorChain(&error), "could not remove the bytes of a discarded file");
        }
    }
}

fn not_pending(upload: Upload, action: &'static str) -> FilesError {
    FilesError::UploadNotPending {
        id: upload.id.to_string(),
        status: upload.status,
        action,
    }
}
