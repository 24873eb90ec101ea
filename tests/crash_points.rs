//! Crash safety, point by point: the real server binary is killed at every
//! crash point of the create → validate → execute → finalize path (and of
//! cancel and the reconciler), restarted on the same data directory, and the
//! batch must still end with each `custom_id` exactly once across its output
//! and error files, and `request_counts` that match them.
//!
//! Small shards and segments (`BATCHES_SHARD_BYTES`, `BATCHES_SEGMENT_LINES`)
//! give one batch several of each, so "the second segment commit" is a real
//! place. The reconciler runs every second with no stuck period, so it also
//! re-delivers the shards of a running batch while they run. Needs
//! `--features fault-injection`.

#![cfg(feature = "fault-injection")]

mod common;
#[path = "../examples/fake_upstream.rs"]
mod fake_upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::binary::{free_port, wait_until, PATIENCE};
use fake_upstream::{FakeConfig, FakeHandle};
use lambda_batches::domain::{IdempotencyKey, TenantId};
use serde_json::{json, Value};

/// Request lines in the input file; every `FAILING_EVERY`-th asks the fake
/// upstream for a `400`, so both the output and the error file are written.
const LINES: usize = 12;
const FAILING_EVERY: usize = 4;
/// About four lines per shard and two per segment: three shards of two segments.
const SHARD_BYTES: &str = "600";
const SEGMENT_LINES: &str = "2";
/// Once the batch has ended, how long a crash point after its last write may
/// still take to fire before the test calls it never reached.
const GRACE_AFTER_END: Duration = Duration::from_secs(3);
/// Upstream latency while a batch is to be cancelled mid-run: long enough that
/// the cancel lands between the first and the last segment commits.
const SLOW_UPSTREAM: Duration = Duration::from_secs(2);

/// The reconciler re-drives whatever has not moved since its last run.
const NO_STUCK_PERIOD: &str = "0";
/// Longer than any test: only the resume at start can re-drive work.
const STUCK_PERIOD_OF_AN_HOUR: &str = "3600";

/// What the batch is driven towards when the crash comes, and so how it must end.
#[derive(Clone, Copy, Debug)]
enum Drive {
    /// Run to completion; the crash comes on the way.
    Completion,
    /// Cancelled once its first segment has committed.
    Cancellation,
    /// A first process dies at `before_segment_commit`, so the next one's
    /// reconciler has stuck work to claim and re-drive: where this point is.
    RecoveryOfAnEarlierCrash,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    point: &'static str,
    /// Crash on this visit of the point (`LB_CRASH_AFTER`).
    visit: u32,
    drive: Drive,
}

const fn on_the_way_to_completion(point: &'static str) -> Scenario {
    Scenario {
        point,
        visit: 1,
        drive: Drive::Completion,
    }
}

const fn on_the_second_visit(point: &'static str) -> Scenario {
    Scenario {
        visit: 2,
        ..on_the_way_to_completion(point)
    }
}

const fn while_cancelling(point: &'static str) -> Scenario {
    Scenario {
        point,
        visit: 1,
        drive: Drive::Cancellation,
    }
}

const fn while_recovering(point: &'static str) -> Scenario {
    Scenario {
        point,
        visit: 1,
        drive: Drive::RecoveryOfAnEarlierCrash,
    }
}

/// One test per scenario, named `given_a_crash_at::<point>::then_<outcome>`.
macro_rules! crash_scenarios {
    ($( $then:ident { $( $case:ident => $scenario:expr ),* $(,)? } )*) => {
        mod given_a_crash_at {
            $( $(
                mod $case {
                    use crate::*;

                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $then() {
                        crash_and_recover($scenario).await;
                    }
                }
            )* )*
        }

        const SCENARIOS: &[Scenario] = &[$( $( $scenario ),* ),*];
    };
}

crash_scenarios! {
    then_a_restart_completes_the_batch_with_each_custom_id_once {
        after_batch_stored => on_the_way_to_completion("after_batch_stored"),
        validate_before_reading_input => on_the_way_to_completion("validate_before_reading_input"),
        validate_before_in_progress => on_the_way_to_completion("validate_before_in_progress"),
        before_shards_enqueued => on_the_way_to_completion("before_shards_enqueued"),
        after_the_first_shard_enqueued => on_the_way_to_completion("after_shard_enqueued"),
        after_the_second_shard_enqueued => on_the_second_visit("after_shard_enqueued"),
        before_the_first_segment_upstream_calls => on_the_way_to_completion("before_segment_upstream_calls"),
        before_the_second_segment_upstream_calls => on_the_second_visit("before_segment_upstream_calls"),
        after_the_first_segment_upstream_calls => on_the_way_to_completion("after_segment_upstream_calls"),
        after_the_second_segment_upstream_calls => on_the_second_visit("after_segment_upstream_calls"),
        after_the_first_output_part_written => on_the_way_to_completion("after_output_part_written"),
        after_the_second_output_part_written => on_the_second_visit("after_output_part_written"),
        before_the_first_segment_commit => on_the_way_to_completion("before_segment_commit"),
        before_the_second_segment_commit => on_the_second_visit("before_segment_commit"),
        after_the_first_segment_commit => on_the_way_to_completion("after_segment_commit"),
        after_the_second_segment_commit => on_the_second_visit("after_segment_commit"),
        before_finalize_enqueued => on_the_way_to_completion("before_finalize_enqueued"),
        after_finalizing => on_the_way_to_completion("after_finalizing"),
        after_seal => on_the_way_to_completion("after_seal"),
        after_output_blob_written => on_the_way_to_completion("after_output_blob_written"),
        after_output_file_created => on_the_way_to_completion("after_output_file_created"),
        after_error_blob_written => on_the_way_to_completion("after_error_blob_written"),
        after_error_file_created => on_the_way_to_completion("after_error_file_created"),
        before_completed => on_the_way_to_completion("before_completed"),
        before_parts_deleted => on_the_way_to_completion("before_parts_deleted"),
    }
    then_a_restart_completes_the_recovered_batch_with_each_custom_id_once {
        reconcile_after_claim => while_recovering("reconcile_after_claim"),
        redrive_after_shard_enqueued => while_recovering("redrive_after_shard_enqueued"),
    }
    then_a_restart_cancels_the_batch_with_each_finished_custom_id_once {
        after_cancelling_stored => while_cancelling("after_cancelling_stored"),
        finish_cancel_after_seal => while_cancelling("finish_cancel_after_seal"),
        finish_cancel_before_cancelled => while_cancelling("finish_cancel_before_cancelled"),
    }
}

#[test]
fn given_the_sources_then_every_crash_point_has_a_scenario_and_every_scenario_a_point() {
    let in_sources = crash_points_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let in_scenarios: BTreeSet<String> = SCENARIOS.iter().map(|s| s.point.to_owned()).collect();
    let untested: Vec<_> = in_sources.difference(&in_scenarios).collect();
    let unknown: Vec<_> = in_scenarios.difference(&in_sources).collect();
    assert!(
        untested.is_empty(),
        "crash points without a scenario: {untested:?}"
    );
    assert!(
        unknown.is_empty(),
        "scenarios naming no crash point: {unknown:?}"
    );
    assert!(
        in_sources.len() >= 20,
        "the issue asks for at least 20 crash points, the sources have {}",
        in_sources.len()
    );
}

/// Every string literal inside a `crash_point(...)` call under `dir`
/// (`fault.rs`, which defines it, aside).
fn crash_points_in(dir: &Path) -> BTreeSet<String> {
    let mut points = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            points.extend(crash_points_in(&path));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("fault.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("read source");
        for (at, _) in source.match_indices("crash_point(") {
            let call = &source[at + "crash_point(".len()..];
            let call = &call[..call.find(");").unwrap_or(call.len())];
            // Literals the call compares (`kind == "output"`) are not names.
            let pieces: Vec<&str> = call.split('"').collect();
            for (i, literal) in pieces.iter().enumerate().skip(1).step_by(2) {
                if !pieces[i - 1].trim_end().ends_with("==") {
                    points.insert((*literal).to_owned());
                }
            }
        }
    }
    points
}

async fn crash_and_recover(scenario: Scenario) {
    let data = tempfile::tempdir().expect("temp dir");
    let upstream = fake_upstream::start(FakeConfig {
        latency: match scenario.drive {
            Drive::Cancellation => SLOW_UPSTREAM,
            _ => Duration::ZERO,
        },
        ..FakeConfig::default()
    })
    .await;
    let key = format!("crash-{}-{}", scenario.point, scenario.visit);
    let batch_id = IdempotencyKey::parse(&key)
        .expect("key")
        .batch_id(&TenantId::default_tenant())
        .to_string();
    let input = input_lines();

    let crash = Some((scenario.point, scenario.visit));
    let doomed = match scenario.drive {
        Drive::RecoveryOfAnEarlierCrash => {
            let earlier = ("before_segment_commit", 1);
            let first = Server::start(data.path(), &upstream, Some(earlier)).await;
            let file_id = first.upload(&input).await;
            let _ = first.create_batch(&file_id, &key).await;
            first.died_at(earlier, &batch_id).await;
            // Its reconciler may claim the stuck batch, and die, before /health answers.
            Server::start(data.path(), &upstream, crash).await
        }
        _ => {
            let server = Server::start(data.path(), &upstream, crash).await;
            let file_id = server.upload(&input).await;
            // At `after_batch_stored` the process dies before it answers.
            let _ = server.create_batch(&file_id, &key).await;
            if let Drive::Cancellation = scenario.drive {
                server.cancel_after_first_commit(&batch_id).await;
            }
            server
        }
    };
    doomed
        .died_at((scenario.point, scenario.visit), &batch_id)
        .await;

    let server = Server::start(data.path(), &upstream, None).await;
    let expected = match scenario.drive {
        Drive::Cancellation => "cancelled",
        _ => "completed",
    };
    let batch = server.until_ended(&batch_id).await;
    assert_eq!(
        batch["status"], expected,
        "after a crash at {}: {batch}",
        scenario.point
    );

    server
        .assert_each_custom_id_once(&batch, expected == "completed", scenario.point)
        .await;
}

/// Batches running while the server is killed again and again.
const BATCHES_UNDER_KILLS: usize = 4;
const KILLS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_random_kills_while_batches_run_then_a_restart_resumes_them_at_once() {
    let data = tempfile::tempdir().expect("temp dir");
    let upstream = fake_upstream::start(FakeConfig {
        // Longer than the whole series of kills: each lands mid-segment.
        latency: Duration::from_secs(2),
        ..FakeConfig::default()
    })
    .await;
    let start = |crash| Server::start_with(data.path(), &upstream, crash, STUCK_PERIOD_OF_AN_HOUR);
    let mut server = start(None).await;
    // Every file first, then the creates in a row: the batches start together.
    let mut file_ids = Vec::new();
    for _ in 0..BATCHES_UNDER_KILLS {
        file_ids.push(server.upload(&input_lines()).await);
    }
    let mut ids = Vec::new();
    for (n, file_id) in file_ids.iter().enumerate() {
        let key = format!("random-kills-{n}");
        server.create_batch(file_id, &key).await.expect("created");
        ids.push(
            IdempotencyKey::parse(&key)
                .expect("key")
                .batch_id(&TenantId::default_tenant())
                .to_string(),
        );
    }

    // SIGKILL at pseudo-random moments (a fixed seed, so a failure replays).
    let mut seed: u64 = 0x5eed_cafe;
    let mut last_kill = Instant::now();
    for kill in 0..KILLS {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(50 + (seed >> 33) % 400)).await;
        let mut statuses = Vec::new();
        for id in &ids {
            statuses.push(server.batch(id).await["status"].clone());
        }
        assert!(
            statuses
                .iter()
                .any(|s| s == "validating" || s == "in_progress"),
            "no batch was running when kill {kill} came: {statuses:?}"
        );
        drop(server);
        last_kill = Instant::now();
        server = start(None).await;
    }

    for id in &ids {
        let batch = server.until_ended(id).await;
        assert_eq!(batch["status"], "completed", "{batch}");
        server
            .assert_each_custom_id_once(&batch, true, "random kills")
            .await;
    }
    // For BENCHMARKS.md, not asserted: speed is no test's business.
    eprintln!(
        "random kills: the last batch ended {:?} after the last kill",
        last_kill.elapsed()
    );
}

fn custom_id(i: usize) -> String {
    format!("req-{i:02}")
}

fn input_lines() -> String {
    (0..LINES)
        .map(|i| {
            let mut body = json!({"model": "fake-model",
                "messages": [{"role": "user", "content": format!("hello {i}")}]});
            if i % FAILING_EVERY == 0 {
                body["fail_with"] = json!(400);
            }
            json!({"custom_id": custom_id(i), "method": "POST",
                   "url": "/v1/chat/completions", "body": body})
            .to_string()
                + "\n"
        })
        .collect()
}

/// The server binary on a data directory; killed when dropped.
struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
    stderr: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary, armed to crash at `crash` (point, visit) when given,
    /// and waits until it answers `/health` or dies. Another process may take
    /// the free port before the server binds it: then it tries another.
    async fn start(data_dir: &Path, upstream: &FakeHandle, crash: Option<(&str, u32)>) -> Server {
        Server::start_with(data_dir, upstream, crash, NO_STUCK_PERIOD).await
    }

    /// [`Server::start`], with the reconciler's stuck period (`BATCHES_STUCK_AFTER_SECS`).
    async fn start_with(
        data_dir: &Path,
        upstream: &FakeHandle,
        crash: Option<(&str, u32)>,
        stuck_after_secs: &str,
    ) -> Server {
        for _ in 0..5 {
            let mut server = Server::spawn(data_dir, upstream, crash, stuck_after_secs);
            let health = format!("{}/health", server.base);
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Some(status) = server.child.try_wait().expect("the server's status") {
                    let stderr = std::fs::read_to_string(&server.stderr).unwrap_or_default();
                    if stderr.contains("AddrInUse") {
                        break;
                    }
                    assert!(crash.is_some(), "the server died: {status:?}\n{stderr}");
                    return server;
                }
                let answered = server
                    .client
                    .get(&health)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if answered {
                    return server;
                }
                assert!(
                    Instant::now() < deadline,
                    "the server never answered /health"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("no free port for the server after 5 tries");
    }

    fn spawn(
        data_dir: &Path,
        upstream: &FakeHandle,
        crash: Option<(&str, u32)>,
        stuck_after_secs: &str,
    ) -> Server {
        let port = free_port();
        // A fresh name per process, so the doomed one's last words stay readable.
        let stderr = data_dir.join(format!("stderr-{port}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_lambda-batches"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("BATCHES_DATA_DIR", data_dir)
            .env("BATCHES_SHARD_BYTES", SHARD_BYTES)
            .env("BATCHES_SEGMENT_LINES", SEGMENT_LINES)
            .env("BATCHES_STUCK_AFTER_SECS", stuck_after_secs)
            .env("BATCHES_RECONCILE_INTERVAL_SECS", "1")
            .env("UPSTREAM_BASE_URL", upstream.base_url())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        if let Some((point, visit)) = crash {
            command
                .env("LB_CRASH_AT", point)
                .env("LB_CRASH_AFTER", visit.to_string());
        }
        Server {
            child: command.spawn().expect("start lambda-batches"),
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            stderr,
        }
    }

    async fn upload(&self, content: &str) -> String {
        const BOUNDARY: &str = "crash-points-boundary-5dY1dGVzdA";
        let body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n\
             Content-Type: application/jsonl\r\n\r\n{content}\r\n--{BOUNDARY}--\r\n"
        );
        let response = self
            .client
            .post(format!("{}/v1/files", self.base))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .expect("upload the input file");
        let file: Value = response.json().await.expect("file JSON");
        file["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no file id: {file}"))
            .to_owned()
    }

    async fn create_batch(&self, input_file_id: &str, key: &str) -> reqwest::Result<Value> {
        self.client
            .post(format!("{}/v1/batches", self.base))
            .json(
                &json!({"input_file_id": input_file_id, "endpoint": "/v1/chat/completions",
                          "completion_window": "24h", "idempotency_key": key}),
            )
            .send()
            .await?
            .json()
            .await
    }

    async fn batch(&self, id: &str) -> Value {
        match self
            .client
            .get(format!("{}/v1/batches/{id}", self.base))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Cancels the batch between its first and its last segment commits, so
    /// the cancelled batch keeps partial results.
    async fn cancel_after_first_commit(&self, id: &str) {
        wait_until("the first segment of the batch commits", || async {
            let batch = self.batch(id).await;
            let counts = &batch["request_counts"];
            let done =
                counts["completed"].as_u64().unwrap_or(0) + counts["failed"].as_u64().unwrap_or(0);
            assert!(
                !is_ended(&batch),
                "the batch ended before it could be cancelled: {batch}"
            );
            done > 0
        })
        .await;
        // At `after_cancelling_stored` the process dies before it answers.
        let _ = self
            .client
            .post(format!("{}/v1/batches/{id}/cancel", self.base))
            .send()
            .await;
    }

    /// Waits for the armed process to die at `point` on its `visit`. The batch
    /// ending while the process lives means the point was never reached.
    async fn died_at(mut self, (point, visit): (&str, u32), batch_id: &str) {
        let deadline = Instant::now() + PATIENCE;
        let mut ended_at: Option<Instant> = None;
        let status: ExitStatus = loop {
            if let Some(status) = self.child.try_wait().expect("the server's status") {
                break status;
            }
            let batch = self.batch(batch_id).await;
            if is_ended(&batch) {
                let since = *ended_at.get_or_insert_with(Instant::now);
                assert!(
                    since.elapsed() < GRACE_AFTER_END,
                    "crash point {point} was never reached: the batch ended {} and the process lives",
                    batch["status"]
                );
            }
            assert!(
                Instant::now() < deadline,
                "crash point {point} was not reached within {PATIENCE:?}: {batch}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            !status.success(),
            "the process was to crash at {point}, it exited: {status:?}"
        );
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(
            stderr.contains(&format!(
                "fault injection: crashing at {point} (visit {visit})"
            )),
            "the process died, but not at {point} (visit {visit}): {status:?}\n{stderr}"
        );
    }

    /// Each `custom_id` of the input at most once across the batch's output
    /// and error files (every one when `complete`), and counts that match them.
    async fn assert_each_custom_id_once(&self, batch: &Value, complete: bool, context: &str) {
        let server = self;
        let output = server.lines_of(&batch["output_file_id"]).await;
        let errors = server.lines_of(&batch["error_file_id"]).await;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for line in output.iter().chain(&errors) {
            let custom_id = line["custom_id"].as_str().expect("custom_id").to_owned();
            *seen.entry(custom_id).or_default() += 1;
        }
        let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "after a crash at {}, custom_ids more than once: {repeated:?}",
            context
        );
        let every_id: BTreeSet<String> = (0..LINES).map(custom_id).collect();
        let found: BTreeSet<String> = seen.into_keys().collect();
        assert!(
            found.is_subset(&every_id),
            "unknown custom_ids: {:?}",
            found.difference(&every_id).collect::<Vec<_>>()
        );
        if complete {
            assert_eq!(
                found, every_id,
                "after a crash at {}, every custom_id is in the files",
                context
            );
            let failing: BTreeSet<String> = (0..LINES)
                .filter(|i| i % FAILING_EVERY == 0)
                .map(custom_id)
                .collect();
            let in_errors: BTreeSet<String> = errors
                .iter()
                .filter_map(|l| l["custom_id"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(in_errors, failing, "the error file holds the failing lines");
        }
        let counts = &batch["request_counts"];
        assert_eq!(counts["total"], LINES, "{batch}");
        assert_eq!(counts["completed"], output.len(), "{batch}");
        assert_eq!(counts["failed"], errors.len(), "{batch}");
    }

    async fn until_ended(&self, id: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let batch = self.batch(id).await;
            if is_ended(&batch) {
                return batch;
            }
            assert!(
                Instant::now() < deadline,
                "the batch did not end after the restart: {batch}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The JSON lines of a file, none for a null id.
    async fn lines_of(&self, file_id: &Value) -> Vec<Value> {
        let Some(file_id) = file_id.as_str() else {
            return Vec::new();
        };
        let response = self
            .client
            .get(format!("{}/v1/files/{file_id}/content", self.base))
            .send()
            .await
            .expect("download a result file");
        assert!(response.status().is_success(), "{file_id}: {response:?}");
        let content = response.text().await.expect("file content");
        content
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

fn is_ended(batch: &Value) -> bool {
    matches!(
        batch["status"].as_str(),
        Some("completed" | "failed" | "cancelled" | "expired")
    )
}
