//! The embedded store's write path in isolation: each task creates a batch and
//! then writes its validation outcome (`failed`), as a create through
//! `cargo run` does when the input file is missing. Prints the rate, the CPU
//! time and the bytes handed to `write(2)` per create (the WAL and checkpoint
//! traffic), which stay comparable on a busy machine where wall time does not.
//!
//! `cargo run --release --example store_bench -- [creates] [concurrency]`

use std::sync::Arc;
use std::time::Instant;

use lambda_batches::domain::batch::{BatchError, BatchErrors};
use lambda_batches::domain::create::CreateBatch;
use lambda_batches::domain::idempotency::{random_batch_id, Fingerprint};
use lambda_batches::domain::{TenantId, Transition};
use lambda_batches::store::embedded::EmbeddedStore;
use lambda_batches::store::{BatchRecord, BatchStore, CreateOutcome, TransitionOutcome};

const BODY: &[u8] =
    br#"{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let creates: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50_000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let request = CreateBatch::from_json(BODY)?;
    let fingerprint = Fingerprint::of(&request);
    let tenant = TenantId::parse("default").map_err(|e| e.to_string())?;

    let (cpu_before, written_before) = (cpu_seconds()?, written_bytes()?);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (store, request, fingerprint, tenant) = (
            Arc::clone(&store),
            request.clone(),
            fingerprint.clone(),
            tenant.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while n < creates {
                let now_us = 1_800_000_000_000_000 + n as i64;
                let now = now_us / 1_000_000;
                let id = random_batch_id();
                let record = BatchRecord {
                    batch: request.new_batch(&id, now),
                    fingerprint: fingerprint.clone(),
                    output_expires_after: None,
                    created_us: now_us,
                    purge_at: now + 30 * 86_400,
                    sealed: false,
                    max_concurrency: None,
                    tenant: tenant.clone(),
                };
                let created = store.create(&record, now).await?;
                assert!(matches!(created, CreateOutcome::Created));
                let errors = BatchErrors {
                    object: "list".into(),
                    data: vec![BatchError {
                        code: "invalid_file".into(),
                        message: "No file found with id file-1".into(),
                        param: Some("input_file_id".into()),
                        line: None,
                    }],
                };
                let outcome = store
                    .transition(&tenant, &id, Transition::fail_validation(now, errors), now)
                    .await?;
                assert!(matches!(outcome, TransitionOutcome::Applied(_)));
                n += concurrency;
            }
            Ok::<_, lambda_batches::store::StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu_before;
    let written = written_bytes()? - written_before;
    let per = creates as f64;
    println!(
        "{creates} creates at concurrency {concurrency}: {:.0} creates/s, {:.1} µs CPU and {:.1} KiB written per create",
        per / elapsed,
        cpu * 1e6 / per,
        written as f64 / 1024.0 / per
    );
    Ok(())
}

/// User plus system CPU time of this process, from /proc/self/stat.
fn cpu_seconds() -> Result<f64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("bad stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Bytes this process passed to write(2), from /proc/self/io.
fn written_bytes() -> Result<u64, Box<dyn std::error::Error>> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    let line = io
        .lines()
        .find(|l| l.starts_with("wchar:"))
        .ok_or("no wchar")?;
    Ok(line["wchar:".len()..].trim().parse()?)
}
