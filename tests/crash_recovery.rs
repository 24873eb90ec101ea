//! Fault injection against the real local server binary: the process is killed
//! between storing a batch and announcing its validation, and a restarted
//! process still validates it. Needs `--features fault-injection`.

#![cfg(feature = "fault-injection")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lambda_batches::domain::{IdempotencyKey, TenantId};
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start(data_dir: &std::path::Path, crash_at: Option<&str>) -> Server {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lambda-batches"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("BATCHES_DATA_DIR", data_dir)
        .env("BATCHES_STUCK_AFTER_SECS", "0")
        .env("BATCHES_RECONCILE_INTERVAL_SECS", "1")
        .env("UPSTREAM_BASE_URL", "http://127.0.0.1:9/v1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(point) = crash_at {
        command.env("LB_CRASH_AT", point);
    }
    let server = Server {
        child: command.spawn().expect("start lambda-batches"),
        base: format!("http://127.0.0.1:{port}"),
    };
    let health = format!("{}/health", server.base);
    wait_until("the server answers /health", || async {
        reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    server
}

/// Polls `condition` for up to 60 s; the bound is a hang guard, not a speed claim.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn given_a_crash_between_storing_and_announcing_a_batch_then_a_restart_still_validates_it() {
    let data = tempfile::tempdir().expect("temp dir");
    let client = reqwest::Client::new();
    let body = json!({"input_file_id": "file-missing", "endpoint": "/v1/chat/completions",
                      "completion_window": "24h", "idempotency_key": "crash-test"});
    let id = IdempotencyKey::parse("crash-test")
        .expect("key")
        .batch_id(&TenantId::default_tenant())
        .to_string();

    let mut doomed = start(data.path(), Some("after_batch_stored")).await;
    let create = client
        .post(format!("{}/v1/batches", doomed.base))
        .json(&body)
        .send()
        .await;
    assert!(create.is_err(), "the process died before answering");
    let status = doomed.child.wait().expect("exit status");
    assert!(!status.success(), "killed by the crash point: {status:?}");

    // Nothing announces the batch again: only the reconciler can find it.
    let server = start(data.path(), None).await;
    let url = format!("{}/v1/batches/{id}", server.base);
    let deadline = Instant::now() + Duration::from_secs(60);
    let batch = loop {
        let batch: Value = match client.get(&url).send().await {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if batch["status"] == "failed" {
            break batch;
        }
        assert!(
            Instant::now() < deadline,
            "the orphaned batch was never validated: {batch}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        batch["input_file_id"], "file-missing",
        "the batch the dead process stored"
    );
    assert_eq!(
        batch["errors"]["data"][0]["message"],
        "Cannot find file file-missing."
    );
}
