//! The input file of a running batch, read a shard's lines at a time.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{Worker, WorkerError};
use crate::domain::FileId;
use crate::store::BatchRecord;

/// The input file of a running batch.
pub(super) struct Input {
    pub(super) blob_key: String,
    pub(super) bytes: u64,
}

/// One line of a shard, with the byte offsets it spans.
pub(super) struct ShardLine {
    pub(super) offset: u64,
    pub(super) next: u64,
    /// `None` for a blank line: nothing to run, but it is covered all the same.
    pub(super) request: Option<Vec<u8>>,
}

impl Worker {
    pub(super) async fn input_of(
        &self,
        record: &BatchRecord,
        now: i64,
    ) -> Result<Option<Input>, WorkerError> {
        let Some(file_id) = FileId::parse(&record.batch.input_file_id) else {
            return Ok(None);
        };
        Ok(self
            .files
            .get_file(&record.tenant, &file_id, now)
            .await?
            .map(|file| Input {
                blob_key: file.blob_key,
                bytes: file.file.bytes,
            }))
    }

    /// The lines of the shard from `start` (at most `segment_lines`), and where
    /// reading stopped when no line of this shard was found.
    pub(super) async fn read_lines(
        &self,
        input: &Input,
        start: u64,
        shard_end: u64,
    ) -> Result<(Vec<ShardLine>, u64), WorkerError> {
        // Read from one byte early: a line belongs to the shard holding its
        // first byte, so a start inside a line skips to the next one.
        let from = start.saturating_sub(1);
        let Some(reader) = self.blobs.open_at(&input.blob_key, from).await? else {
            return Ok((Vec::new(), start));
        };
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let mut position = from;
        let mut buffer = Vec::new();
        if start > 0 {
            let mut previous = [0u8; 1];
            if reader.read(&mut previous).await? == 0 {
                return Ok((Vec::new(), start));
            }
            position += 1;
            if previous[0] != b'\n' {
                position += reader.read_until(b'\n', &mut buffer).await? as u64;
            }
        }
        let mut lines = Vec::new();
        while lines.len() < self.execution.segment_lines
            && position < shard_end.max(start)
            && position < input.bytes
        {
            buffer.clear();
            let read = reader.read_until(b'\n', &mut buffer).await?;
            if read == 0 {
                break;
            }
            let offset = position;
            position += read as u64;
            let mut content = buffer.as_slice();
            if offset == 0 {
                content = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
            }
            let request = (!crate::domain::jsonl::is_blank(content)).then(|| content.to_vec());
            lines.push(ShardLine {
                offset,
                next: position,
                request,
            });
        }
        Ok((lines, position))
    }
}
