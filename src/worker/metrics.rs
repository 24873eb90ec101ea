//! Per-batch metrics, emitted once when a batch ends: lines, failures,
//! retries and upstream latency percentiles. In Lambda as a CloudWatch
//! embedded-metric-format line (CloudWatch turns it into metrics with no API
//! call); elsewhere as a structured log event.

use serde_json::{json, Value};

use crate::domain::execution::{LatencyHistogram, Segments};
use crate::domain::BatchStatus;
use crate::store::BatchRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsFormat {
    /// A structured `tracing` event.
    #[default]
    Log,
    /// One CloudWatch EMF JSON object on stdout.
    Emf,
}

/// What one batch did, summed over its committed segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetrics {
    pub lines: u64,
    pub failures: u64,
    pub retries: u64,
    /// Upstream latency percentiles (p50, p90, p99) in ms; 0 with no lines.
    pub latency_ms: [u64; 3],
}

impl BatchMetrics {
    pub fn of(segments: &Segments) -> Self {
        let mut latency = LatencyHistogram::default();
        let (mut lines, mut failures, mut retries) = (0, 0, 0);
        for segment in segments.values() {
            lines += segment.completed + segment.failed;
            failures += segment.failed;
            retries += segment.retries;
            latency.merge(&segment.latency);
        }
        Self {
            lines,
            failures,
            retries,
            latency_ms: [0.5, 0.9, 0.99].map(|p| latency.percentile(p).unwrap_or(0)),
        }
    }
}

/// The CloudWatch EMF object for a finished batch.
pub fn emf_line(
    record: &BatchRecord,
    segments: &Segments,
    status: BatchStatus,
    now_ms: i64,
) -> Value {
    let m = BatchMetrics::of(segments);
    let metric = |name: &str, unit: &str| json!({"Name": name, "Unit": unit});
    json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": "lambda-batches",
                "Dimensions": [["Endpoint"]],
                "Metrics": [
                    metric("Lines", "Count"), metric("Failures", "Count"), metric("Retries", "Count"),
                    metric("UpstreamLatencyP50", "Milliseconds"),
                    metric("UpstreamLatencyP90", "Milliseconds"),
                    metric("UpstreamLatencyP99", "Milliseconds"),
                ],
            }],
        },
        "Endpoint": record.batch.endpoint,
        "Lines": m.lines, "Failures": m.failures, "Retries": m.retries,
        "UpstreamLatencyP50": m.latency_ms[0],
        "UpstreamLatencyP90": m.latency_ms[1],
        "UpstreamLatencyP99": m.latency_ms[2],
        // Properties, not dimensions: searchable in Logs Insights, free of metric cardinality.
        "batch_id": record.batch.id, "tenant": record.tenant.as_str(), "status": status.as_str(),
    })
}

pub fn batch_finished(
    record: &BatchRecord,
    segments: &Segments,
    status: BatchStatus,
    format: MetricsFormat,
    now_ms: i64,
) {
    match format {
        MetricsFormat::Emf => println!("{}", emf_line(record, segments, status, now_ms)),
        MetricsFormat::Log => {
            let m = BatchMetrics::of(segments);
            tracing::info!(
                batch_id = %record.batch.id, tenant = %record.tenant, status = %status,
                endpoint = %record.batch.endpoint, lines = m.lines, failures = m.failures,
                retries = m.retries, upstream_latency_p50_ms = m.latency_ms[0],
                upstream_latency_p90_ms = m.latency_ms[1], upstream_latency_p99_ms = m.latency_ms[2],
                "batch metrics"
            );
        }
    }
}
