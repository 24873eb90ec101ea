//! Fault injection against the real local server binary: the process is killed
//! between storing a batch and announcing its validation, and a restarted
//! process still validates it. Needs `--features fault-injection`.

#![cfg(feature = "fault-injection")]

mod common;

use std::time::{Duration, Instant};

use common::binary::{BinaryEnv, Server};
use common::Backend;
use lambda_batches::domain::{IdempotencyKey, TenantId};
use serde_json::{json, Value};

/// The server on the embedded store of `env`, with the reconciler re-driving
/// at once; `crash_at` names the crash point that kills it.
async fn start(env: &BinaryEnv, crash_at: Option<&str>) -> Server {
    let mut env = env.clone();
    env.set("BATCHES_STUCK_AFTER_SECS", "0")
        .set("BATCHES_RECONCILE_INTERVAL_SECS", "1")
        .set("RUST_LOG", "warn");
    if let Some(point) = crash_at {
        env.set("LB_CRASH_AT", point);
    }
    env.serve().await
}

#[tokio::test]
async fn given_a_crash_between_storing_and_announcing_a_batch_then_a_restart_still_validates_it() {
    let env = BinaryEnv::fresh(Backend::Embedded).await;
    let client = reqwest::Client::new();
    let body = json!({"input_file_id": "file-missing", "endpoint": "/v1/chat/completions",
                      "completion_window": "24h", "idempotency_key": "crash-test"});
    let id = IdempotencyKey::parse("crash-test")
        .expect("key")
        .batch_id(&TenantId::default_tenant())
        .to_string();

    let mut doomed = start(&env, Some("after_batch_stored")).await;
    let create = client
        .post(format!("{}/v1/batches", doomed.base))
        .json(&body)
        .send()
        .await;
    assert!(create.is_err(), "the process died before answering");
    let status = doomed.exit_status();
    assert!(!status.success(), "killed by the crash point: {status:?}");

    // Nothing announces the batch again: only the reconciler can find it.
    let server = start(&env, None).await;
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
