//! Blobs in S3.
//!
//! Writes are streamed: the first 8 MiB are buffered, and an object that fits
//! is one `PutObject`; a larger one becomes a multipart upload of 8 MiB parts
//! (S3 wants at least 5 MiB for every part but the last), a few in flight at
//! once, completed on finish and aborted on failure.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::{BlobError, BlobReader, BlobStore, BlobWriter};

/// The size of every part but the last: above S3's 5 MiB minimum, and small
/// enough that a few in flight fit a 256 MB Lambda.
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts uploaded concurrently by one writer.
const PARTS_IN_FLIGHT: usize = 3;
/// `DeleteObjects` takes at most 1,000 keys per request.
const DELETE_BATCH: usize = 1_000;

#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
}

impl S3BlobStore {
    /// Builds the client once, at init.
    pub fn new(sdk_config: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        // Path-style addressing works with every S3 endpoint, emulators included.
        let config = aws_sdk_s3::config::Builder::from(sdk_config)
            .force_path_style(true)
            .build();
        Self {
            client: Client::from_conf(config),
            bucket: bucket.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

fn s3_error<E>(
    operation: &'static str,
) -> impl FnOnce(SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> BlobError
where
    aws_sdk_s3::Error: From<SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
{
    move |error| BlobError::S3 {
        operation,
        source: Box::new(aws_sdk_s3::Error::from(error)),
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn open(&self, key: &str) -> Result<Option<BlobReader>, BlobError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(Box::pin(output.body.into_async_read()))),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), GetObjectError::NoSuchKey(_)) => {
                Ok(None)
            }
            Err(e) => Err(s3_error("GetObject")(e)),
        }
    }

    async fn open_at(&self, key: &str, offset: u64) -> Result<Option<BlobReader>, BlobError> {
        if offset == 0 {
            return self.open(key).await;
        }
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={offset}-"))
            .send()
            .await
        {
            Ok(output) => Ok(Some(Box::pin(output.body.into_async_read()))),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), GetObjectError::NoSuchKey(_)) => {
                Ok(None)
            }
            // 416: the offset is at or past the end; there is nothing more to read.
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 416 => {
                Ok(Some(Box::pin(tokio::io::empty())))
            }
            Err(e) => Err(s3_error("GetObject")(e)),
        }
    }

    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(S3Writer {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            buffer: BytesMut::new(),
            upload_id: None,
            in_flight: VecDeque::new(),
            parts: Vec::new(),
            bytes: 0,
            done: false,
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_error("DeleteObject"))?;
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        let keys = self.list(prefix).await?;
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BlobError::S3 {
                    operation: "DeleteObjects",
                    source: Box::new(e),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| BlobError::S3 {
                    operation: "DeleteObjects",
                    source: Box::new(e),
                })?;
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(s3_error("DeleteObjects"))?;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(s3_error("ListObjectsV2"))?;
            keys.extend(
                page.contents
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|object| object.key),
            );
        }
        keys.sort();
        Ok(keys)
    }

    async fn download_url(
        &self,
        key: &str,
        valid_for: Duration,
    ) -> Result<Option<String>, BlobError> {
        let config = PresigningConfig::expires_in(valid_for).map_err(|e| BlobError::S3 {
            operation: "GetObject (presign)",
            source: Box::new(e),
        })?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(s3_error("GetObject (presign)"))?;
        Ok(Some(request.uri().to_string()))
    }
}

type PartUpload = JoinHandle<Result<CompletedPart, BlobError>>;

struct S3Writer {
    client: Client,
    bucket: String,
    key: String,
    buffer: BytesMut,
    /// Set once the object outgrew one buffer and became a multipart upload.
    upload_id: Option<String>,
    in_flight: VecDeque<PartUpload>,
    parts: Vec<CompletedPart>,
    bytes: u64,
    /// Finished or aborted: nothing left to clean up on drop.
    done: bool,
}

impl S3Writer {
    async fn start_multipart(&mut self) -> Result<String, BlobError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
            .map_err(s3_error("CreateMultipartUpload"))?;
        let id = output.upload_id.ok_or_else(|| BlobError::S3 {
            operation: "CreateMultipartUpload",
            source: "no upload id in the answer".into(),
        })?;
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    async fn send_part(&mut self, data: Bytes) -> Result<(), BlobError> {
        let upload_id = self.start_multipart().await?;
        // Part numbers run from 1; parts already done or in flight come first.
        let number = i32::try_from(self.parts.len() + self.in_flight.len() + 1).map_err(|_| {
            BlobError::S3 {
                operation: "UploadPart",
                source: "too many parts".into(),
            }
        })?;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(data));
        self.in_flight.push_back(tokio::spawn(async move {
            let output = request.send().await.map_err(s3_error("UploadPart"))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(output.e_tag)
                .build())
        }));
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_oldest().await?;
        }
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<(), BlobError> {
        if let Some(handle) = self.in_flight.pop_front() {
            let part = handle.await.map_err(|e| BlobError::S3 {
                operation: "UploadPart",
                source: Box::new(e),
            })??;
            self.parts.push(part);
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), BlobError> {
        let rest = self.buffer.split().freeze();
        let Some(upload_id) = self.upload_id.clone() else {
            // It all fit in one buffer: one request, no multipart bookkeeping.
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .body(ByteStream::from(rest))
                .send()
                .await
                .map_err(s3_error("PutObject"))?;
            return Ok(());
        };
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest().await?;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await
            .map_err(s3_error("CompleteMultipartUpload"))?;
        Ok(())
    }

    fn cancel_in_flight(&mut self) {
        for handle in self.in_flight.drain(..) {
            handle.abort();
        }
    }
}

/// Aborting a multipart upload frees its parts; without it they linger
/// (billed, invisible) until a lifecycle rule removes them.
async fn abort_multipart(client: Client, bucket: String, key: String, upload_id: String) {
    if let Err(error) = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .upload_id(upload_id)
        .send()
        .await
    {
        let error = aws_sdk_s3::Error::from(error);
        tracing::warn!(%key, error = %crate::telemetry::ErrorChain(&error), "could not abort a multipart upload");
    }
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        self.bytes += chunk.len() as u64;
        self.buffer.extend_from_slice(&chunk);
        while self.buffer.len() >= PART_BYTES {
            let part = self.buffer.split_to(PART_BYTES).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, BlobError> {
        match self.complete().await {
            Ok(()) => {
                self.done = true;
                Ok(self.bytes)
            }
            // Dropping `self` aborts the multipart upload.
            Err(e) => Err(e),
        }
    }

    async fn abort(mut self: Box<Self>) {
        self.done = true;
        self.cancel_in_flight();
        if let Some(upload_id) = self.upload_id.take() {
            abort_multipart(
                self.client.clone(),
                self.bucket.clone(),
                self.key.clone(),
                upload_id,
            )
            .await;
        }
    }
}

impl Drop for S3Writer {
    /// A writer dropped unfinished (an error, or the client went away mid-upload)
    /// still aborts its multipart upload, in the background.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.cancel_in_flight();
        if let (Some(upload_id), Ok(runtime)) =
            (self.upload_id.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(abort_multipart(
                self.client.clone(),
                self.bucket.clone(),
                self.key.clone(),
                upload_id,
            ));
        }
    }
}
