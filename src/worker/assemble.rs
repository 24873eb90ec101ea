//! Assembling the output and error files from the committed segments' parts,
//! in input order.

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::input::Input;
use super::{Worker, WorkerError};
use crate::domain::execution::{gaps, ResultFile, Segments};
use crate::domain::request_line::parse_request;
use crate::domain::{BatchPatch, FileObject, FilePurpose};
use crate::fault::crash_point;
use crate::store::files::FileRecord;
use crate::store::BatchRecord;
use crate::upstream::{Outcome, OutputLine};

impl Worker {
    /// Joins the committed parts, in input order, into the output and error
    /// files. Deterministic names and ids, so doing it twice gives the same files.
    pub(super) async fn assemble(
        &self,
        record: &BatchRecord,
        segments: &Segments,
        expired: Option<&Input>,
    ) -> Result<Option<BatchPatch>, WorkerError> {
        let mut patch = BatchPatch::default();
        let counts = segments
            .values()
            .fold((0, 0), |(c, f), s| (c + s.completed, f + s.failed));
        let expired_lines = match expired {
            Some(input) => self.expired_lines(record, segments, input, None).await?,
            None => 0,
        };
        patch.request_counts = Some(crate::domain::RequestCounts {
            total: record.batch.request_counts.total,
            completed: counts.0,
            failed: counts.1 + expired_lines,
        });
        for kind in ResultFile::ALL {
            let parts: Vec<&String> = segments
                .values()
                .filter_map(|s| match kind {
                    ResultFile::Output => s.output_part.as_ref(),
                    ResultFile::Error => s.error_part.as_ref(),
                })
                .collect();
            let with_expired = kind == ResultFile::Error && expired_lines > 0;
            if parts.is_empty() && !with_expired {
                continue;
            }
            let file_id = record.instance().result_file_id(kind);
            let blob_key = crate::files::file_key(&record.tenant, &file_id);
            let now = self.clock.now_secs();
            if self
                .files
                .get_file(&record.tenant, &file_id, now)
                .await?
                .is_none()
            {
                let mut writer = self.blobs.create(&blob_key).await?;
                let mut chunk = vec![0u8; 256 * 1024];
                for part in parts {
                    let Some(mut reader) = self.blobs.open(part).await? else {
                        writer.abort().await;
                        return self.part_missing(record, part).await;
                    };
                    loop {
                        let read = reader.read(&mut chunk).await?;
                        if read == 0 {
                            break;
                        }
                        writer.write(Bytes::copy_from_slice(&chunk[..read])).await?;
                    }
                }
                if let (true, Some(input)) = (with_expired, expired) {
                    self.expired_lines(record, segments, input, Some(&mut writer))
                        .await?;
                }
                let bytes = writer.finish().await?;
                crash_point(match kind {
                    ResultFile::Output => "after_output_blob_written",
                    ResultFile::Error => "after_error_blob_written",
                });
                let file = FileRecord {
                    tenant: record.tenant.clone(),
                    file: FileObject {
                        id: file_id.clone(),
                        object: Default::default(),
                        bytes,
                        created_at: now,
                        expires_at: record
                            .output_expires_after
                            .as_ref()
                            .map(|e| now + e.seconds),
                        filename: format!("{}_{}.jsonl", record.batch.id, kind.as_str()),
                        purpose: FilePurpose::BatchOutput,
                        status: Default::default(),
                        status_details: None,
                    },
                    blob_key,
                    created_us: self.clock.now_micros(),
                };
                if let Err(error) = self.files.create_file(&file).await {
                    // Another finalizer of the same batch may have just created it.
                    if self
                        .files
                        .get_file(&record.tenant, &file_id, now)
                        .await?
                        .is_none()
                    {
                        return Err(error.into());
                    }
                }
            }
            crash_point(match kind {
                ResultFile::Output => "after_output_file_created",
                ResultFile::Error => "after_error_file_created",
            });
            match kind {
                ResultFile::Output => patch.output_file_id = Some(file_id.clone()),
                ResultFile::Error => patch.error_file_id = Some(file_id.clone()),
            }
        }
        Ok(Some(patch))
    }

    /// A part vanishes when a racing finalizer finished first and deleted the
    /// parts: then there is nothing left to do. Otherwise it is an error.
    async fn part_missing(
        &self,
        record: &BatchRecord,
        part: &str,
    ) -> Result<Option<BatchPatch>, WorkerError> {
        let now = self.clock.now_secs();
        let current = self
            .batches
            .get(&record.tenant, &record.batch.id, now)
            .await?;
        if current.is_none_or(|c| c.batch.status.is_terminal()) {
            return Ok(None);
        }
        Err(WorkerError::Read(std::io::Error::other(format!(
            "result part {part} is missing"
        ))))
    }

    /// The request lines no committed segment covers, written (when `sink` is
    /// given) as `batch_expired` error lines; returns how many there are.
    async fn expired_lines(
        &self,
        record: &BatchRecord,
        segments: &Segments,
        input: &Input,
        mut sink: Option<&mut Box<dyn crate::files::BlobWriter>>,
    ) -> Result<u64, WorkerError> {
        let expired = Outcome::TransportError {
            code: "batch_expired",
            message: "This request could not be executed before the completion window expired."
                .to_string(),
        };
        let mut count = 0;
        for gap in gaps(segments, input.bytes) {
            let mut at = gap.start;
            while at < gap.end {
                let (lines, _) = self.read_lines(input, at, gap.end).await?;
                let Some(last) = lines.last() else { break };
                at = last.next;
                let mut buffer = Vec::new();
                for line in &lines {
                    let Some(request) = &line.request else {
                        continue;
                    };
                    count += 1;
                    if sink.is_some() {
                        let custom_id = parse_request(request)
                            .map(|r| r.custom_id)
                            .unwrap_or_default();
                        let id = record.instance().request_id(line.offset);
                        serde_json::to_writer(
                            &mut buffer,
                            &OutputLine::new(id.as_str(), &custom_id, &expired),
                        )
                        .map_err(std::io::Error::other)?;
                        buffer.push(b'\n');
                    }
                }
                if let Some(writer) = sink.as_mut() {
                    writer.write(Bytes::from(buffer)).await?;
                }
            }
        }
        Ok(count)
    }
}
