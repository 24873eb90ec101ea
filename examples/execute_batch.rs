//! Execution throughput, for BENCHMARKS.md: one worker process runs a whole
//! batch (validation, shards, finalization) from an input file against an
//! upstream, on the embedded store, and reports lines/s, its own CPU time per
//! line and its peak RSS.
//!
//! ```sh
//! cargo run --release --example fake_upstream -- --port 9100 --latency-ms 0 &
//! cargo run --release --example execute_batch -- --upstream http://127.0.0.1:9100/v1 \
//!     --input /tmp/batch.jsonl --concurrency 64 [--workers 1]
//! cargo run --release --example execute_batch -- ... --reference   # chunks of 10, one after another
//! ```
//!
//! `--reference` runs the same lines the way the llama-stack reference provider
//! does: chunks of 10 one after another, each waiting for its slowest line.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use lambda_batches::clock::{Clock, SystemClock};
use lambda_batches::config::{Config, ReconcilerConfig, UpstreamConfig};
use lambda_batches::domain::{
    BatchId, BatchStatus, CreateBatch, FileId, FileObject, FilePurpose, Fingerprint, TenantId,
};
use lambda_batches::files::local::LocalBlobStore;
use lambda_batches::queue::in_process::InProcessQueue;
use lambda_batches::queue::{WorkItem, WorkQueue};
use lambda_batches::store::embedded::EmbeddedStore;
use lambda_batches::store::files::{FileRecord, FileStore};
use lambda_batches::store::{BatchRecord, BatchStore};
use lambda_batches::upstream::UpstreamClient;
use lambda_batches::worker::Worker;

struct Args {
    upstream: String,
    input: String,
    concurrency: usize,
    /// Work items handled at once: 1 is one Lambda invocation at a time.
    workers: usize,
    reference: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        upstream: String::new(),
        input: String::new(),
        concurrency: 64,
        workers: 1,
        reference: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--upstream" => args.upstream = it.next().ok_or("--upstream URL")?,
            "--input" => args.input = it.next().ok_or("--input PATH")?,
            "--concurrency" => {
                args.concurrency = it
                    .next()
                    .and_then(|c| c.parse().ok())
                    .ok_or("--concurrency N")?
            }
            "--workers" => {
                args.workers = it
                    .next()
                    .and_then(|c| c.parse().ok())
                    .ok_or("--workers N")?
            }
            "--reference" => args.reference = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.upstream.is_empty() || args.input.is_empty() {
        return Err(
            "usage: execute_batch --upstream URL --input PATH [--concurrency N] [--reference]"
                .into(),
        );
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let upstream = UpstreamClient::new(&UpstreamConfig {
        base_url: args.upstream.clone(),
        api_key: None,
    })?;
    let started = Instant::now();
    let lines = if args.reference {
        reference(&upstream, &args.input).await?
    } else {
        ours(upstream, &args).await?
    };
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds().unwrap_or(0.0);
    println!(
        "{{\"mode\":\"{}\",\"lines\":{lines},\"seconds\":{seconds:.3},\"lines_per_sec\":{:.0},\"cpu_us_per_line\":{:.1},\"peak_rss_kb\":{}}}",
        if args.reference { "reference" } else { "lambda-batches" },
        lines as f64 / seconds,
        cpu * 1e6 / lines.max(1) as f64,
        peak_rss_kb().unwrap_or(0)
    );
    Ok(())
}

/// The whole batch through the worker: validation, shards, finalization.
async fn ours(upstream: UpstreamClient, args: &Args) -> Result<u64, Box<dyn std::error::Error>> {
    let dir = tempfile_dir()?;
    let store = Arc::new(EmbeddedStore::open(&dir)?);
    let blobs = Arc::new(LocalBlobStore::open_dir(&dir.join("files"))?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let tenant = TenantId::default_tenant();
    let now = clock.now_secs();

    // The input file, as an upload would leave it.
    let file_id = FileId::random();
    let blob_key = lambda_batches::files::file_key(&tenant, &file_id);
    std::fs::create_dir_all(dir.join("files").join(format!("files/{tenant}")))?;
    std::fs::copy(&args.input, dir.join("files").join(&blob_key))?;
    let bytes = std::fs::metadata(&args.input)?.len();
    store
        .create_file(&FileRecord {
            tenant: tenant.clone(),
            file: FileObject {
                id: file_id.clone(),
                object: Default::default(),
                bytes,
                created_at: now,
                expires_at: None,
                filename: "input.jsonl".into(),
                purpose: FilePurpose::Batch,
                status: Default::default(),
                status_details: None,
            },
            blob_key,
            created_us: clock.now_micros(),
        })
        .await?;
    let request = CreateBatch::from_json(
        format!(r#"{{"input_file_id":"{file_id}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#).as_bytes(),
    )?;
    let id = lambda_batches::domain::idempotency::random_batch_id();
    store
        .create(
            &BatchRecord {
                tenant: tenant.clone(),
                batch: request.new_batch(&id, now),
                fingerprint: Fingerprint::of(&request),
                output_expires_after: None,
                created_us: clock.now_micros(),
                purge_at: now + 86_400,
                sealed: false,
                max_concurrency: None,
            },
            now,
        )
        .await?;

    let config = Config::from_lookup(|_| None)?;
    let mut execution = config.execution;
    execution.concurrency = args.concurrency;
    let (queue, mut items) = InProcessQueue::new();
    let worker = Arc::new(Worker {
        batches: store.clone(),
        ledger: store.clone(),
        pending: store.clone(),
        quotas: store.clone(),
        files: store.clone(),
        blobs,
        queue: Arc::new(queue.clone()),
        leases: store.clone(),
        upstream,
        clock: Arc::clone(&clock),
        reconciler: ReconcilerConfig {
            stuck_after_secs: 3600,
            interval_secs: 3600,
            shard_lease_secs: 30,
        },
        execution,
    });
    queue
        .enqueue(&WorkItem::ValidateBatch {
            tenant: tenant.clone(),
            batch_id: id.clone(),
        })
        .await?;
    // At most `workers` items at a time, as that many Lambda invocations would.
    let mut wave = Vec::new();
    loop {
        while wave.len() < args.workers {
            match items.try_recv() {
                Ok(item) => wave.push(item),
                Err(_) => break,
            }
        }
        if wave.is_empty() {
            break;
        }
        for result in join_all(wave.drain(..).map(|item| {
            let worker = Arc::clone(&worker);
            tokio::spawn(async move { worker.handle(&item).await })
        }))
        .await
        {
            result??;
        }
    }
    let record = store
        .get(&tenant, &BatchId::parse(id.as_str()).ok_or("id")?, now)
        .await?
        .ok_or("batch vanished")?;
    if record.batch.status != BatchStatus::Completed {
        return Err(format!("batch ended {}", record.batch.status).into());
    }
    let counts = record.batch.request_counts;
    std::fs::remove_dir_all(&dir)?;
    Ok(counts.completed + counts.failed)
}

/// The reference provider's loop: chunks of 10, one after another.
async fn reference(
    upstream: &UpstreamClient,
    input: &str,
) -> Result<u64, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(input)?;
    let requests: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let policy = lambda_batches::upstream::RetryPolicy::default();
    for chunk in requests.chunks(10) {
        join_all(chunk.iter().map(|r| {
            upstream.execute(
                r["url"].as_str().unwrap_or_default(),
                &r["body"],
                &policy,
                None,
            )
        }))
        .await;
    }
    Ok(requests.len() as u64)
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("execute-batch-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// utime + stime of this process, from /proc (clock ticks of 10 ms).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn peak_rss_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
