//! The validation stage: stream the input file, check every line, and move the
//! batch to `failed` (with every error) or `in_progress` (ready to execute).

use tokio::io::AsyncReadExt;

use super::{Worker, WorkerError};
use crate::domain::jsonl::{InputValidator, LineSplitter, ValidationReport, MAX_FILE_BYTES};
use crate::domain::quota::lines_over_limit_message;
use crate::domain::{
    BatchError, BatchErrors, BatchId, BatchStatus, Endpoint, FileId, QuotaExceeded, TenantId,
    Transition,
};
use crate::store::TransitionOutcome;

/// Read buffer: large enough for S3 throughput, small for Lambda memory.
const CHUNK_BYTES: usize = 256 * 1024;

impl Worker {
    #[tracing::instrument(skip_all)]
    pub(super) async fn validate(
        &self,
        tenant: &TenantId,
        id: &BatchId,
    ) -> Result<(), WorkerError> {
        let now = self.clock.now_secs();
        let Some(record) = self.batches.get(tenant, id, now).await? else {
            return Ok(());
        };
        let batch = record.batch;
        match batch.status {
            BatchStatus::Validating => {}
            BatchStatus::Cancelling => return self.finish_cancel(tenant, id).await,
            // Already validated (a duplicate message): nothing to do.
            _ => return Ok(()),
        }
        let Some(endpoint) = Endpoint::parse(&batch.endpoint) else {
            return self
                .fail(
                    tenant,
                    id,
                    single_error(
                        "invalid_request",
                        "endpoint",
                        format!("Unsupported endpoint {}.", batch.endpoint),
                    ),
                )
                .await;
        };
        let cannot_find = || {
            single_error(
                "invalid_request",
                "input_file_id",
                format!("Cannot find file {}.", batch.input_file_id),
            )
        };
        let Some(file_id) = FileId::parse(&batch.input_file_id) else {
            return self.fail(tenant, id, cannot_find()).await;
        };
        let Some(file) = self.files.get_file(tenant, &file_id, now).await? else {
            return self.fail(tenant, id, cannot_find()).await;
        };
        if file.file.bytes > MAX_FILE_BYTES {
            let message = format!(
                "The input file is {} bytes; a batch input file may be at most {MAX_FILE_BYTES} bytes.",
                file.file.bytes
            );
            return self
                .fail(
                    tenant,
                    id,
                    single_error("invalid_request", "input_file_id", message),
                )
                .await;
        }
        crate::fault::crash_point("validate_before_reading_input");
        let Some(mut reader) = self.blobs.open(&file.blob_key).await? else {
            return self.fail(tenant, id, cannot_find()).await;
        };

        // One model list per batch; an unreachable upstream skips the check
        // rather than failing a batch it may serve later.
        let known_models = match self.upstream.model_ids().await {
            Ok(models) => Some(models),
            Err(error) => {
                tracing::warn!(batch_id = %id, error = %crate::telemetry::ErrorChain(&error), "upstream model list unavailable; skipping the model check");
                None
            }
        };

        let report = validate_stream(&mut reader, endpoint, known_models).await?;
        self.conclude(tenant, id, report, file.file.bytes).await
    }

    async fn conclude(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        report: ValidationReport,
        input_bytes: u64,
    ) -> Result<(), WorkerError> {
        let now = self.clock.now_secs();
        match report.batch_errors() {
            Some(errors) => self.fail(tenant, id, errors).await,
            None => {
                // Lines are known only now: reserve them before the batch runs,
                // or fail it as OpenAI fails a batch over its enqueued token limit.
                let lines = report.requests;
                if let Err(exceeded) = self.quotas.reserve_lines(tenant, id, lines, now).await? {
                    let limit = match exceeded {
                        QuotaExceeded::EnqueuedLines { limit } => limit,
                        QuotaExceeded::BatchesInFlight { limit } => u64::from(limit),
                    };
                    let error = BatchError {
                        code: exceeded.code().to_string(),
                        message: lines_over_limit_message(lines, limit),
                        param: None,
                        line: None,
                    };
                    let errors = BatchErrors {
                        object: "list".to_string(),
                        data: vec![error],
                    };
                    return self.fail(tenant, id, errors).await;
                }
                crate::fault::crash_point("validate_before_in_progress");
                let transition = Transition::start(now, lines, report.model);
                let outcome = self.batches.transition(tenant, id, transition, now).await?;
                tracing::info!(batch_id = %id, %tenant, requests = lines, outcome = outcome.label(), "validation passed");
                match outcome {
                    TransitionOutcome::Applied(_) => {
                        // A crash before this is healed by the reconciler (stuck in_progress).
                        self.start_execution(tenant, id, input_bytes, lines).await?;
                    }
                    // Cancelled while validating: its end did not know of the lines
                    // just reserved, so give them back here. (A batch another worker
                    // already started keeps them.)
                    TransitionOutcome::Refused(batch)
                        if matches!(
                            batch.status,
                            BatchStatus::Cancelling | BatchStatus::Cancelled
                        ) =>
                    {
                        self.quotas.release_quota(tenant, id, lines).await?;
                    }
                    TransitionOutcome::Refused(_) => {}
                    TransitionOutcome::NotFound => {
                        self.quotas.release_quota(tenant, id, lines).await?
                    }
                }
                Ok(())
            }
        }
    }

    async fn fail(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        errors: BatchErrors,
    ) -> Result<(), WorkerError> {
        let now = self.clock.now_secs();
        let count = errors.data.len();
        let outcome = self
            .batches
            .transition(tenant, id, Transition::fail_validation(now, errors), now)
            .await?;
        tracing::info!(batch_id = %id, %tenant, errors = count, outcome = outcome.label(), "validation failed");
        Ok(())
    }
}

/// Streams an input file through the line splitter and validator, in
/// constant memory: one read buffer and at most one line at a time.
pub async fn validate_stream<R>(
    reader: &mut R,
    endpoint: Endpoint,
    known_models: Option<std::collections::HashSet<String>>,
) -> Result<ValidationReport, std::io::Error>
where
    R: tokio::io::AsyncRead + Unpin + ?Sized,
{
    let mut splitter = LineSplitter::new();
    let mut validator = InputValidator::new(endpoint, known_models);
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        splitter.push(&buffer[..read]);
        while let Some(line) = splitter.next_line() {
            validator.check(line);
        }
    }
    splitter.finish();
    while let Some(line) = splitter.next_line() {
        validator.check(line);
    }
    Ok(validator.finish())
}

fn single_error(code: &str, param: &str, message: String) -> BatchErrors {
    BatchErrors {
        object: "list".to_string(),
        data: vec![BatchError {
            code: code.to_string(),
            message,
            param: Some(param.to_string()),
            line: None,
        }],
    }
}
