//! The validation stage on a local file, for BENCHMARKS.md:
//!
//! ```sh
//! cargo run --release --example validate_file -- generate /tmp/batch.jsonl   # 50,000 lines, 200 MB
//! cargo run --release --example validate_file -- check /tmp/batch.jsonl
//! ```
//!
//! `check` runs the same streaming validator the worker runs
//! (`worker::validate_stream`) and prints lines/s, MB/s and the peak RSS.

use std::io::Write;
use std::time::Instant;

use lambda_batches::domain::Endpoint;
use lambda_batches::worker::validate_stream;

const LINES: usize = 50_000;
const TOTAL_BYTES: usize = 200 * 1024 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [command, path] if command == "generate" => generate(path),
        [command, path] if command == "check" => check(path).await,
        _ => Err("usage: validate_file generate|check <path>".into()),
    }
}

/// 50,000 valid chat-completion lines that add up to 200 MB.
fn generate(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let template = |id: usize, padding: &str| {
        format!(
            r#"{{"custom_id":"request-{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"fake-model","messages":[{{"role":"user","content":"{padding}"}}]}}}}"#
        )
    };
    let overhead = template(0, "").len() + 6; // + digits of the id and the newline
    let padding = "x".repeat(TOTAL_BYTES / LINES - overhead);
    for id in 0..LINES {
        writeln!(out, "{}", template(id, &padding))?;
    }
    out.flush()?;
    Ok(())
}

async fn check(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::metadata(path)?.len();
    let mut file = tokio::fs::File::open(path).await?;
    let started = Instant::now();
    let report = validate_stream(&mut file, Endpoint::ChatCompletions, None).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"requests\":{},\"errors\":{},\"bytes\":{bytes},\"seconds\":{seconds:.3},\"lines_per_sec\":{:.0},\"mb_per_sec\":{:.1},\"peak_rss_kb\":{}}}",
        report.requests,
        report.errors.len(),
        report.requests as f64 / seconds,
        bytes as f64 / 1_048_576.0 / seconds,
        peak_rss_kb().unwrap_or(0)
    );
    Ok(())
}

/// VmHWM from /proc: the most resident memory this process ever had.
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
