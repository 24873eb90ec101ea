//! Several servers share one DynamoDB table (moto): when one is killed while
//! it runs shards, the others take them over once their leases run out (not
//! after the stuck period, an hour here), and every line comes out once.

#[path = "../examples/fake_upstream.rs"]
mod fake_upstream;

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::binary::{BinaryEnv, Server};
use common::Backend;
use fake_upstream::FakeConfig;
use serde_json::{json, Value};

const LINES: usize = 24;
/// A hang guard for the whole takeover, never a speed claim: well past a
/// lease plus a reconciler interval plus the work left.
const TAKEOVER_PATIENCE: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_servers_on_one_table_when_one_is_killed_mid_run_then_the_others_finish_its_batches_each_line_once(
) {
    let upstream = fake_upstream::start(FakeConfig {
        // Each segment (two lines) takes about this long: the kill lands mid-run.
        latency: Duration::from_millis(500),
        ..FakeConfig::default()
    })
    .await;
    let mut env = BinaryEnv::fresh(Backend::Moto).await;
    env.set("UPSTREAM_BASE_URL", &upstream.base_url())
        .set("BATCHES_SEGMENT_LINES", "2")
        // An hour: only the leases can bring the killed server's shards back soon.
        .set("BATCHES_STUCK_AFTER_SECS", "3600")
        .set("BATCHES_RECONCILE_INTERVAL_SECS", "5");
    let victim = env.serve().await;
    let survivors = [env.serve().await, env.serve().await];
    let client = reqwest::Client::new();

    let mut ids = Vec::new();
    for n in 0..2 {
        let file = upload(&client, &victim.base).await;
        ids.push(create(&client, &victim.base, &file, n).await);
    }
    // Kill the server that runs them once each has committed a segment.
    let deadline = Instant::now() + TAKEOVER_PATIENCE;
    for id in &ids {
        loop {
            let batch = get(&client, &survivors[0].base, id).await;
            let counts = &batch["request_counts"];
            let done =
                counts["completed"].as_u64().unwrap_or(0) + counts["failed"].as_u64().unwrap_or(0);
            assert_ne!(
                batch["status"], "completed",
                "ended before the kill: {batch}"
            );
            if batch["status"] == "in_progress" && done > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "never ran: {batch}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let killed_at = Instant::now();
    drop(victim.stop());

    for id in &ids {
        let batch = loop {
            let batch = get(&client, &survivors[1].base, id).await;
            if batch["status"] == "completed" {
                break batch;
            }
            assert!(
                Instant::now() < killed_at + TAKEOVER_PATIENCE,
                "not taken over: {batch}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_each_custom_id_once(&client, &survivors[0], &batch).await;
    }
    // For BENCHMARKS.md, not asserted: speed is no test's business.
    eprintln!(
        "shard takeover on moto: the last batch completed {:?} after the kill",
        killed_at.elapsed()
    );
}

async fn upload(client: &reqwest::Client, base: &str) -> String {
    let content: String = (0..LINES)
        .map(|i| {
            json!({"custom_id": format!("req-{i:02}"), "method": "POST",
                   "url": "/v1/chat/completions",
                   "body": {"model": "fake-model",
                            "messages": [{"role": "user", "content": format!("hello {i}")}]}})
            .to_string()
                + "\n"
        })
        .collect();
    const BOUNDARY: &str = "shard-takeover-boundary-5dY1dGVzdA";
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{content}\r\n--{BOUNDARY}--\r\n"
    );
    let file: Value = client
        .post(format!("{base}/v1/files"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("file JSON");
    file["id"].as_str().expect("file id").to_owned()
}

async fn create(client: &reqwest::Client, base: &str, file: &str, n: usize) -> String {
    let batch: Value = client
        .post(format!("{base}/v1/batches"))
        .json(
            &json!({"input_file_id": file, "endpoint": "/v1/chat/completions",
                      "completion_window": "24h", "idempotency_key": format!("takeover-{n}")}),
        )
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("batch JSON");
    batch["id"].as_str().expect("batch id").to_owned()
}

async fn get(client: &reqwest::Client, base: &str, id: &str) -> Value {
    match client.get(format!("{base}/v1/batches/{id}")).send().await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn assert_each_custom_id_once(client: &reqwest::Client, server: &Server, batch: &Value) {
    let file_id = batch["output_file_id"].as_str().expect("an output file");
    let content = client
        .get(format!("{}/v1/files/{file_id}/content", server.base))
        .send()
        .await
        .expect("download")
        .text()
        .await
        .expect("content");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in content.lines() {
        let line: Value = serde_json::from_str(line).expect("a JSON line");
        *seen
            .entry(line["custom_id"].as_str().expect("custom_id").to_owned())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> =
        (0..LINES).map(|i| (format!("req-{i:02}"), 1)).collect();
    assert_eq!(seen, expected, "{batch}");
}
