//! One conformance suite for every `BatchStore` adapter, driven through the
//! real Router: the embedded store, moto server and dynalite.

mod common;

use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use common::{create_body, with_key, Backend, TestApp, TestStores, RETENTION_SECS};
use futures::future::join_all;
use lambda_batches::domain::batch::{InputTokensDetails, Usage};
use lambda_batches::domain::execution::{ByteRange, Segment};
use lambda_batches::domain::{BatchId, BatchStatus, TenantId, Transition};
use lambda_batches::store::{CommitOutcome, SegmentCommit, TransitionOutcome};
use serde_json::{json, Value};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use lambda_batches::files::local::LocalBlobStore;
use lambda_batches::store::embedded::EmbeddedStore;

suite!(
    [embedded, moto, dynalite],
    [
        given_a_valid_request_when_created_then_the_full_batch_object_is_returned_and_stored,
        given_a_key_when_retried_with_reordered_metadata_a_second_later_then_the_same_batch_is_replayed,
        given_different_keys_when_created_then_different_batches_exist,
        given_no_key_when_created_twice_then_two_batches_exist,
        given_a_used_key_when_parameters_differ_then_409_and_the_stored_batch_is_unchanged,
        given_the_same_key_in_header_and_body_when_created_then_both_name_one_batch,
        given_64_concurrent_creates_with_one_key_then_exactly_one_batch_exists,
        given_64_concurrent_creates_with_mixed_fingerprints_then_one_batch_and_only_200_or_409,
        given_a_validating_batch_when_cancelled_twice_then_cancelling_and_unchanged,
        given_a_finished_batch_when_cancelled_then_409,
        given_a_cancel_racing_a_completion_then_exactly_one_transition_wins,
        given_many_batches_when_paged_then_each_is_seen_once_newest_first_with_exact_has_more,
        given_batches_created_in_the_same_millisecond_when_paged_then_each_is_seen_once,
        given_an_unknown_cursor_when_listing_then_400,
        given_two_tenants_when_using_one_key_then_nothing_is_shared,
        given_a_batch_past_retention_then_it_is_gone_and_its_key_is_free,
        given_a_running_batch_when_segments_commit_then_each_start_lands_once_with_its_counts,
        given_a_sealed_or_idle_batch_when_a_segment_commits_then_it_is_closed,
        given_chains_of_many_segments_when_attempts_race_then_the_first_of_each_start_counts_in_order,
        given_a_sealed_batch_then_its_segments_and_counts_are_final,
        given_2000_segments_then_the_batch_record_stays_small_and_each_commit_costs_the_same,
    ]
);

const ALL_FIELDS: [&str; 22] = [
    "id",
    "object",
    "endpoint",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "metadata",
    "model",
    "usage",
];

async fn given_a_valid_request_when_created_then_the_full_batch_object_is_returned_and_stored(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut body = create_body("file-abc");
    body["metadata"] = json!({"project": "demo", "owner": "me"});

    let created = app.create(&body).await;

    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let batch = created.body.as_object().expect("an object");
    for field in ALL_FIELDS {
        assert!(batch.contains_key(field), "missing {field}");
    }
    assert!(created.id().starts_with("batch_"));
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["status"], "validating");
    assert_eq!(batch["endpoint"], "/v1/chat/completions");
    assert_eq!(batch["input_file_id"], "file-abc");
    assert_eq!(batch["completion_window"], "24h");
    let created_at = batch["created_at"].as_i64().expect("created_at");
    assert_eq!(created_at, common::START_MS / 1000);
    assert_eq!(batch["expires_at"], created_at + 86_400);
    assert_eq!(
        batch["request_counts"],
        json!({"total": 0, "completed": 0, "failed": 0})
    );
    assert_eq!(batch["metadata"], json!({"project": "demo", "owner": "me"}));
    for unset in [
        "errors",
        "output_file_id",
        "in_progress_at",
        "cancelled_at",
        "model",
        "usage",
    ] {
        assert!(batch[unset].is_null(), "{unset} should be null");
    }
    assert!(created.headers.get("idempotent-replayed").is_none());

    let retrieved = app.retrieve(&created.id()).await;
    assert_eq!(retrieved.status, StatusCode::OK);
    assert_eq!(retrieved.body, created.body);
}

async fn given_a_key_when_retried_with_reordered_metadata_a_second_later_then_the_same_batch_is_replayed(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut first = with_key(create_body("file-1"), "unique-token-1");
    first["metadata"] = json!({"test": "true", "priority": "high"});
    let original = app.create(&first).await;
    assert_eq!(original.status, StatusCode::OK);

    app.clock.advance_ms(1_000);
    let mut retry = with_key(create_body("file-1"), "unique-token-1");
    retry["metadata"] = json!({"priority": "high", "test": "true"});
    let replayed = app.create(&retry).await;

    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.body);
    assert_eq!(
        replayed.body, original.body,
        "same id, created_at and fields"
    );
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
}

async fn given_different_keys_when_created_then_different_batches_exist(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app
        .create(&with_key(create_body("file-1"), "token-A"))
        .await;
    let b = app
        .create(&with_key(create_body("file-1"), "token-B"))
        .await;
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_ne!(a.id(), b.id());
}

async fn given_no_key_when_created_twice_then_two_batches_exist(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create(&create_body("file-1")).await;
    let b = app.create(&create_body("file-1")).await;
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_ne!(a.id(), b.id());
    let listed = app.get("/v1/batches").await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(2));
}

async fn given_a_used_key_when_parameters_differ_then_409_and_the_stored_batch_is_unchanged(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let base = |metadata: Value| {
        let mut body = create_body("file-001");
        if !metadata.is_null() {
            body["metadata"] = metadata;
        }
        body
    };
    let cases: Vec<(&str, Value, Value)> = vec![
        ("input_file_id", base(json!(null)), create_body("file-002")),
        (
            "metadata value",
            base(json!({"test": "value1"})),
            base(json!({"test": "value2"})),
        ),
        ("metadata null vs {}", base(json!(null)), base(json!({}))),
        ("metadata {} vs null", base(json!({})), base(json!(null))),
        ("endpoint", base(json!(null)), {
            let mut b = base(json!(null));
            b["endpoint"] = json!("/v1/embeddings");
            b
        }),
        ("output_expires_after", base(json!(null)), {
            let mut b = base(json!(null));
            b["output_expires_after"] = json!({"anchor": "created_at", "seconds": 3600});
            b
        }),
    ];
    for (index, (what, first, second)) in cases.into_iter().enumerate() {
        let key = format!("conflict-token-{index}");
        let original = app.create(&with_key(first, &key)).await;
        assert_eq!(original.status, StatusCode::OK, "{what}");

        let conflict = app.create(&with_key(second, &key)).await;

        let error = conflict.expect_error(StatusCode::CONFLICT);
        assert_eq!(
            error["message"],
            format!("Idempotency key '{key}' was previously used with different parameters. Either use a new idempotency key or ensure all parameters match the original request."),
            "{what}"
        );
        assert_eq!(conflict.headers["x-should-retry"], "false", "{what}");
        let stored = app.retrieve(&original.id()).await;
        assert_eq!(
            stored.body, original.body,
            "{what}: the stored batch is unchanged"
        );
    }
}

async fn given_the_same_key_in_header_and_body_when_created_then_both_name_one_batch(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let body = create_body("file-1");
    let via_header = app
        .call(
            Method::POST,
            "/v1/batches",
            Some(&body),
            &[("idempotency-key", "shared-key")],
        )
        .await;
    let via_body = app
        .create(&with_key(create_body("file-1"), "shared-key"))
        .await;
    let via_both = app
        .call(
            Method::POST,
            "/v1/batches",
            Some(&with_key(create_body("file-1"), "shared-key")),
            &[("idempotency-key", "\"shared-key\"")],
        )
        .await;
    assert_eq!(via_header.status, StatusCode::OK);
    assert_eq!(via_body.id(), via_header.id());
    assert_eq!(via_both.id(), via_header.id());
    assert_eq!(via_both.headers["idempotent-replayed"], "true");
}

async fn given_64_concurrent_creates_with_one_key_then_exactly_one_batch_exists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = with_key(create_body("file-race"), "race-key");

    let responses = join_all((0..64).map(|_| {
        let (app, body) = (&app, &body);
        async move { app.create(body).await }
    }))
    .await;

    let ids: HashSet<String> = responses
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.id()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every retry names the same batch");
    let created_ats: HashSet<i64> = responses
        .iter()
        .map(|r| r.body["created_at"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(created_ats.len(), 1);
    let replays = responses
        .iter()
        .filter(|r| r.headers.contains_key("idempotent-replayed"))
        .count();
    assert_eq!(replays, 63, "exactly one create won");
    let listed = app.get("/v1/batches?limit=100").await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1));
}

async fn given_64_concurrent_creates_with_mixed_fingerprints_then_one_batch_and_only_200_or_409(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let bodies: Vec<Value> = (0..64)
        .map(|i| with_key(create_body(&format!("file-{}", i % 2)), "mixed-key"))
        .collect();

    let responses = join_all(bodies.iter().map(|body| app.create(body))).await;

    let winners: HashSet<(String, String)> = responses
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .map(|r| {
            (
                r.id(),
                r.body["input_file_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "all 200s name one batch with one input file"
    );
    let (_, winning_file) = winners.into_iter().next().unwrap_or_default();
    for (body, response) in bodies.iter().zip(&responses) {
        if body["input_file_id"] == winning_file.as_str() {
            assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        } else {
            response.expect_error(StatusCode::CONFLICT);
        }
    }
    let listed = app.get("/v1/batches?limit=100").await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1));
}

async fn given_a_validating_batch_when_cancelled_twice_then_cancelling_and_unchanged(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let created = app.create(&create_body("file-1")).await;
    app.clock.advance_ms(2_000);

    let cancelled = app.cancel(&created.id()).await;

    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelling");
    let created_at = created.body["created_at"].as_i64().unwrap_or_default();
    assert_eq!(cancelled.body["cancelling_at"], created_at + 2);
    assert_eq!(app.retrieve(&created.id()).await.body, cancelled.body);

    app.clock.advance_ms(5_000);
    let again = app.cancel(&created.id()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body, cancelled.body,
        "a second cancel changes nothing"
    );
}

/// Moves a batch through the store port, as the worker will.
async fn force_status(app: &TestApp, tenant: &str, id: &str, to: BatchStatus) {
    let transition = Transition::new(&BatchStatus::ALL, to, app.clock_secs());
    let outcome = app
        .store
        .transition(
            &TenantId::parse(tenant).expect("tenant"),
            &BatchId::parse(id).expect("id"),
            transition,
            app.clock_secs(),
        )
        .await
        .expect("transition");
    assert!(
        matches!(outcome, TransitionOutcome::Applied(_)),
        "{outcome:?}"
    );
}

trait ClockSecs {
    fn clock_secs(&self) -> i64;
}

impl ClockSecs for TestApp {
    fn clock_secs(&self) -> i64 {
        use lambda_batches::clock::Clock;
        self.clock.now_secs()
    }
}

async fn given_a_finished_batch_when_cancelled_then_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for status in [
        BatchStatus::Completed,
        BatchStatus::Failed,
        BatchStatus::Expired,
        BatchStatus::Finalizing,
    ] {
        let id = app.create(&create_body("file-1")).await.id();
        force_status(&app, "default", &id, status).await;

        let refused = app.cancel(&id).await;

        let error = refused.expect_error(StatusCode::CONFLICT);
        assert_eq!(
            error["message"],
            format!(
                "Cannot cancel batch '{id}' with status '{}'",
                status.as_str()
            )
        );
        assert_eq!(app.retrieve(&id).await.body["status"], status.as_str());
    }
    let cancelled = app.create(&create_body("file-1")).await.id();
    force_status(&app, "default", &cancelled, BatchStatus::Cancelled).await;
    assert_eq!(app.cancel(&cancelled).await.status, StatusCode::OK);
}

async fn given_a_cancel_racing_a_completion_then_exactly_one_transition_wins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = TenantId::default_tenant();
    for round in 0..8 {
        let id = app
            .create(&create_body(&format!("file-{round}")))
            .await
            .id();
        let batch_id = BatchId::parse(&id).expect("id");
        let complete = Transition::new(
            &[BatchStatus::Validating, BatchStatus::InProgress],
            BatchStatus::Completed,
            1,
        );

        let (cancel, completion) = tokio::join!(
            app.cancel(&id),
            app.store.transition(&tenant, &batch_id, complete, 0)
        );

        let completed = matches!(
            completion.expect("transition"),
            TransitionOutcome::Applied(_)
        );
        let final_status = app.retrieve(&id).await.body["status"].clone();
        if completed {
            assert_eq!(cancel.status, StatusCode::CONFLICT, "round {round}");
            assert_eq!(final_status, "completed");
        } else {
            assert_eq!(cancel.status, StatusCode::OK, "round {round}");
            assert_eq!(final_status, "cancelling");
        }
    }
}

async fn list_ids(app: &TestApp, query: &str) -> (Vec<String>, Value) {
    let page = app.get(&format!("/v1/batches{query}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let ids = page.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|b| b["id"].as_str().unwrap_or_default().to_string())
        .collect();
    (ids, page.body)
}

async fn given_many_batches_when_paged_then_each_is_seen_once_newest_first_with_exact_has_more(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let empty = list_ids(&app, "").await.1;
    assert_eq!(
        empty,
        json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false})
    );
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.create(&create_body(&format!("file-{i}"))).await.id());
        app.clock.advance_ms(1);
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let (all, _) = list_ids(&app, "").await;
    assert_eq!(all, newest_first);

    for page_size in [1, 3, 6, 7, 8] {
        let mut seen = Vec::new();
        let mut query = format!("?limit={page_size}");
        loop {
            let (ids, page) = list_ids(&app, &query).await;
            assert!(
                !ids.is_empty() || seen.is_empty(),
                "no empty page after the first"
            );
            assert_eq!(
                page["first_id"],
                ids.first().map_or(Value::Null, |id| json!(id))
            );
            assert_eq!(
                page["last_id"],
                ids.last().map_or(Value::Null, |id| json!(id))
            );
            seen.extend(ids);
            let has_more = page["has_more"].as_bool().expect("has_more");
            assert_eq!(
                has_more,
                seen.len() < created.len(),
                "exact has_more at {}",
                seen.len()
            );
            if !has_more {
                break;
            }
            query = format!("?limit={page_size}&after={}", seen.last().expect("an id"));
        }
        assert_eq!(seen, newest_first, "limit {page_size}");
    }
}

async fn given_batches_created_in_the_same_millisecond_when_paged_then_each_is_seen_once(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut created: Vec<String> = Vec::new();
    for i in 0..5 {
        created.push(app.create(&create_body(&format!("file-{i}"))).await.id());
    }
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let (ids, page) = list_ids(&app, &query).await;
        seen.extend(ids);
        if page["has_more"] == json!(false) {
            break;
        }
        query = format!("?limit=2&after={}", seen.last().expect("an id"));
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 5);
    assert_eq!(unique, created.iter().collect());
}

async fn given_an_unknown_cursor_when_listing_then_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create(&create_body("file-1")).await;
    for after in [
        "batch_00000000000000000000000000000000",
        "not-a-batch-id",
        "",
    ] {
        let page = app.get(&format!("/v1/batches?after={after}")).await;
        let error = page.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(error["param"], "after");
    }
}

async fn given_two_tenants_when_using_one_key_then_nothing_is_shared(backend: Backend) {
    let app = TestApp::spawn_with_tenants(backend, &["tenant-a", "tenant-b"]).await;
    let body = with_key(create_body("file-1"), "shared-key");
    let a = app.create_as("tenant-a", &body).await;
    let b = app
        .create_as(
            "tenant-b",
            &with_key(create_body("file-other"), "shared-key"),
        )
        .await;

    assert_eq!(
        (a.status, b.status),
        (StatusCode::OK, StatusCode::OK),
        "no cross-tenant conflict"
    );
    assert_ne!(a.id(), b.id());
    assert!(
        b.headers.get("idempotent-replayed").is_none(),
        "no cross-tenant replay"
    );

    let path = format!("/v1/batches/{}", a.id());
    app.get_as("tenant-b", &path)
        .await
        .expect_error(StatusCode::NOT_FOUND);
    app.post_as("tenant-b", &format!("{path}/cancel"))
        .await
        .expect_error(StatusCode::NOT_FOUND);
    assert_eq!(
        app.get_as("tenant-a", &path).await.body["status"],
        "validating",
        "tenant-b's cancel did nothing"
    );

    let listed_b = app.get_as("tenant-b", "/v1/batches").await;
    let ids_b: Vec<&str> = listed_b.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids_b, vec![b.id().as_str()]);
    app.get_as("tenant-b", &format!("/v1/batches?after={}", a.id()))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
}

async fn given_a_batch_past_retention_then_it_is_gone_and_its_key_is_free(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let original = app
        .create(&with_key(create_body("file-1"), "old-key"))
        .await;
    let id = original.id();

    app.clock.advance_ms(RETENTION_SECS * 1000);

    app.retrieve(&id).await.expect_error(StatusCode::NOT_FOUND);
    app.cancel(&id).await.expect_error(StatusCode::NOT_FOUND);
    assert_eq!(list_ids(&app, "").await.0, Vec::<String>::new());
    let reused = app
        .create(&with_key(create_body("file-2"), "old-key"))
        .await;
    assert_eq!(
        reused.status,
        StatusCode::OK,
        "an expired key may be used again: {}",
        reused.body
    );
    assert_eq!(reused.id(), id, "the key still derives the same id");
    assert!(reused.headers.get("idempotent-replayed").is_none());
    assert_eq!(reused.body["input_file_id"], "file-2");
    assert!(reused.body["created_at"].as_i64() > original.body["created_at"].as_i64());
}

/// Far beyond every test's clock: segment records outlive the test.
const PURGE_AT: i64 = 4_000_000_000;

fn segment_commit(start: u64, end: u64, completed: u64, failed: u64) -> SegmentCommit {
    shard_commit(0, start, end, completed, failed)
}

fn shard_commit(
    shard_start: u64,
    start: u64,
    end: u64,
    completed: u64,
    failed: u64,
) -> SegmentCommit {
    let usage = Usage {
        input_tokens: 10 * completed,
        output_tokens: 5 * completed,
        total_tokens: 15 * completed,
        input_tokens_details: InputTokensDetails {
            cached_tokens: completed,
        },
        ..Usage::default()
    };
    SegmentCommit {
        shard_start,
        start,
        segment: Segment {
            end,
            output_part: Some(format!("parts/{start}.out")),
            completed,
            failed,
            retries: 2,
            ..Segment::default()
        },
        usage,
        purge_at: PURGE_AT,
    }
}

async fn running_batch(app: &TestApp) -> (TenantId, BatchId) {
    running_batch_of(app, 10).await
}

async fn running_batch_of(app: &TestApp, total: u64) -> (TenantId, BatchId) {
    let id = app.create(&create_body("file-1")).await.id();
    let (tenant, batch_id) = (TenantId::default_tenant(), BatchId::parse(&id).expect("id"));
    let start = Transition::start(app.clock_secs(), total, Some("m".into()));
    let outcome = app
        .store
        .transition(&tenant, &batch_id, start, app.clock_secs())
        .await
        .expect("start");
    assert!(
        matches!(outcome, TransitionOutcome::Applied(_)),
        "{outcome:?}"
    );
    (tenant, batch_id)
}

async fn given_a_running_batch_when_segments_commit_then_each_start_lands_once_with_its_counts(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (tenant, id) = running_batch(&app).await;
    let now = app.clock_secs();

    let attempts = join_all((0..16).map(|i| {
        let mut commit = segment_commit(0, 100, 3 + (i % 2), 1);
        // Every attempt writes parts of its own (keyed by the attempt).
        commit.segment.output_part = Some(format!("parts/attempt-{i}.out"));
        let (app, tenant, id) = (&app, &tenant, &id);
        async move {
            app.store
                .commit_segment(tenant, id, &commit, now)
                .await
                .expect("commit")
        }
    }))
    .await;
    let committed = attempts
        .iter()
        .filter(|o| **o == CommitOutcome::Committed)
        .count();
    assert_eq!(committed, 1, "one attempt per start wins: {attempts:?}");
    assert!(attempts.iter().all(|o| matches!(
        o,
        CommitOutcome::Committed | CommitOutcome::AlreadyCommitted
    )));
    let second = app
        .store
        .commit_segment(&tenant, &id, &segment_commit(100, 180, 2, 0), now)
        .await
        .expect("commit");
    assert_eq!(second, CommitOutcome::Committed);

    let segments = app
        .store
        .segments(&tenant, &id, now)
        .await
        .expect("segments");
    assert_eq!(segments.keys().copied().collect::<Vec<_>>(), vec![0, 100]);
    assert_eq!(segments[&100].end, 180);
    assert_eq!(
        segments[&100].retries, 2,
        "segment stats round-trip through the store"
    );
    let record = app
        .store
        .get(&tenant, &id, now)
        .await
        .expect("get")
        .expect("record");
    let counts = record.batch.request_counts;
    let first_completed = segments[&0].completed;
    assert_eq!(
        (counts.completed, counts.failed, counts.total),
        (first_completed + 2, 1, 10)
    );
    let usage = record.batch.usage.expect("usage");
    assert_eq!(usage.input_tokens, 10 * (first_completed + 2));
    assert_eq!(
        usage.input_tokens_details.cached_tokens,
        first_completed + 2
    );
    let retrieved = app.retrieve(id.as_str()).await.body;
    assert_eq!(
        retrieved["request_counts"]["completed"],
        first_completed + 2,
        "progress is visible"
    );
    assert_eq!(
        retrieved["usage"]["total_tokens"],
        15 * (first_completed + 2)
    );
}

async fn given_a_sealed_or_idle_batch_when_a_segment_commits_then_it_is_closed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let now = app.clock_secs();
    let validating = BatchId::parse(&app.create(&create_body("file-1")).await.id()).expect("id");
    let tenant = TenantId::default_tenant();
    let idle = app
        .store
        .commit_segment(&tenant, &validating, &segment_commit(0, 10, 1, 0), now)
        .await
        .expect("commit");
    assert_eq!(idle, CommitOutcome::Closed);

    let (tenant, id) = running_batch(&app).await;
    let sealed = app
        .store
        .seal(&tenant, &id, now)
        .await
        .expect("seal")
        .expect("a record");
    assert!(sealed.sealed);
    let late = app
        .store
        .commit_segment(&tenant, &id, &segment_commit(0, 10, 1, 0), now)
        .await
        .expect("commit");
    assert_eq!(late, CommitOutcome::Closed);
    assert!(app
        .store
        .segments(&tenant, &id, now)
        .await
        .expect("segments")
        .is_empty());
    let record = app
        .store
        .get(&tenant, &id, now)
        .await
        .expect("get")
        .expect("record");
    assert_eq!(record.batch.request_counts.completed, 0);
    let missing = BatchId::parse("batch_00000000000000000000000000000000").expect("id");
    assert_eq!(
        app.store.seal(&tenant, &missing, now).await.expect("seal"),
        None
    );
    assert_eq!(
        app.store
            .commit_segment(&tenant, &missing, &segment_commit(0, 1, 1, 0), now)
            .await
            .expect("commit"),
        CommitOutcome::NotFound
    );
    assert_eq!(
        app.store
            .run_state(&tenant, &missing, now)
            .await
            .expect("state"),
        None
    );
}

/// Two shards, each a chain of 60 one-line segments, every start attempted
/// twice at once with different ends: the first attempt at each start counts,
/// the other is told so, and the chains read back in order.
async fn given_chains_of_many_segments_when_attempts_race_then_the_first_of_each_start_counts_in_order(
    backend: Backend,
) {
    const SEGMENTS: u64 = 60;
    let app = TestApp::spawn(backend).await;
    let (tenant, id) = running_batch_of(&app, 2 * SEGMENTS).await;
    let now = app.clock_secs();
    let shards = [
        ByteRange {
            start: 0,
            end: 1_000,
        },
        ByteRange {
            start: 1_000,
            end: 2_000,
        },
    ];

    let run_shard = |shard: ByteRange| {
        let (app, tenant, id) = (&app, &tenant, &id);
        async move {
            let mut at = shard.start;
            for _ in 0..SEGMENTS {
                assert_eq!(
                    app.store
                        .resume_point(tenant, id, shard, now)
                        .await
                        .expect("resume"),
                    Some(at)
                );
                // The two racers read a different number of bytes: 10 or 15.
                let (short, long) = (
                    shard_commit(shard.start, at, at + 10, 1, 0),
                    shard_commit(shard.start, at, at + 15, 1, 0),
                );
                let (a, b) = futures::join!(
                    app.store.commit_segment(tenant, id, &short, now),
                    app.store.commit_segment(tenant, id, &long, now)
                );
                let outcomes = [a.expect("commit"), b.expect("commit")];
                let won = match outcomes {
                    [CommitOutcome::Committed, CommitOutcome::AlreadyCommitted] => &short,
                    [CommitOutcome::AlreadyCommitted, CommitOutcome::Committed] => &long,
                    other => panic!("exactly one attempt wins: {other:?}"),
                };
                at = won.segment.end;
            }
            at
        }
    };
    let ends = join_all(shards.map(run_shard)).await;

    let segments = app
        .store
        .segments(&tenant, &id, now)
        .await
        .expect("segments");
    assert_eq!(segments.len() as u64, 2 * SEGMENTS);
    for (shard, end) in shards.iter().zip(&ends) {
        let mut at = shard.start;
        for (start, segment) in segments.range(shard.start..shard.end) {
            assert_eq!(*start, at, "each segment starts where the one before ended");
            at = segment.end;
        }
        assert_eq!(at, *end);
        assert_eq!(
            app.store
                .resume_point(&tenant, &id, *shard, now)
                .await
                .expect("resume"),
            Some(*end)
        );
    }
    let done = ByteRange { start: 0, end: 10 };
    assert_eq!(
        app.store
            .resume_point(&tenant, &id, done, now)
            .await
            .expect("resume"),
        None,
        "a shard its chain covers is done"
    );
    let record = app
        .store
        .get(&tenant, &id, now)
        .await
        .expect("get")
        .expect("record");
    assert_eq!(
        record.batch.request_counts.completed,
        2 * SEGMENTS,
        "each start counted once"
    );
    assert_eq!(
        record.batch.usage.expect("usage").input_tokens,
        10 * 2 * SEGMENTS
    );
}

async fn given_a_sealed_batch_then_its_segments_and_counts_are_final(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (tenant, id) = running_batch(&app).await;
    let now = app.clock_secs();
    for (start, end) in [(0, 10), (10, 20), (20, 30)] {
        let outcome = app
            .store
            .commit_segment(&tenant, &id, &segment_commit(start, end, 1, 0), now)
            .await
            .expect("commit");
        assert_eq!(outcome, CommitOutcome::Committed);
    }
    let state = app
        .store
        .run_state(&tenant, &id, now)
        .await
        .expect("state")
        .expect("live");
    assert!(state.accepts_results());

    let cancel = Transition::new(&[BatchStatus::InProgress], BatchStatus::Cancelling, now);
    app.store
        .transition(&tenant, &id, cancel, now)
        .await
        .expect("cancel");
    let partial = app
        .store
        .commit_segment(&tenant, &id, &segment_commit(30, 40, 1, 0), now)
        .await
        .expect("commit");
    assert_eq!(
        partial,
        CommitOutcome::Committed,
        "a cancelling batch keeps results"
    );
    app.store
        .seal(&tenant, &id, now)
        .await
        .expect("seal")
        .expect("record");
    let state = app
        .store
        .run_state(&tenant, &id, now)
        .await
        .expect("state")
        .expect("live");
    assert_eq!(
        (state.status, state.sealed),
        (BatchStatus::Cancelling, true)
    );
    assert!(!state.accepts_results());
    let late = app
        .store
        .commit_segment(&tenant, &id, &segment_commit(40, 50, 1, 0), now)
        .await
        .expect("commit");
    assert_eq!(late, CommitOutcome::Closed);
    let again = app
        .store
        .commit_segment(&tenant, &id, &segment_commit(30, 45, 1, 0), now)
        .await
        .expect("commit");
    assert_eq!(again, CommitOutcome::AlreadyCommitted);

    let segments = app
        .store
        .segments(&tenant, &id, now)
        .await
        .expect("segments");
    assert_eq!(
        segments.keys().copied().collect::<Vec<_>>(),
        vec![0, 10, 20, 30]
    );
    assert_eq!(segments[&30].end, 40);
    let record = app
        .store
        .get(&tenant, &id, now)
        .await
        .expect("get")
        .expect("record");
    assert_eq!(record.batch.request_counts.completed, 4);
}

/// The batch's stored record, as the backend holds it, in bytes.
async fn stored_record_size(stores: &StoredRecord, tenant: &TenantId, id: &BatchId) -> usize {
    match stores {
        StoredRecord::Embedded(dir) => {
            let conn =
                rusqlite::Connection::open(dir.path().join("batches.sqlite3")).expect("open");
            conn.query_row(
                "SELECT length(record) FROM batches WHERE tenant = ?1 AND id = ?2",
                [tenant.as_str(), id.as_str()],
                |row| row.get::<_, i64>(0),
            )
            .expect("the record") as usize
        }
        StoredRecord::Dynamo(store) => {
            let item = store
                .client()
                .get_item()
                .table_name(store.table())
                .key("tenant", AttributeValue::S(tenant.to_string()))
                .key("id", AttributeValue::S(id.to_string()))
                .consistent_read(true)
                .send()
                .await
                .expect("GetItem")
                .item
                .expect("the item");
            // DynamoDB's item size: names plus values; the JSON form is close enough.
            item.iter()
                .map(|(name, value)| name.len() + format!("{value:?}").len())
                .sum()
        }
    }
}

enum StoredRecord {
    Embedded(tempfile::TempDir),
    Dynamo(lambda_batches::store::dynamodb::DynamoStore),
}

/// 2,000 segments in 50 chains of 40: the batch's own record must not grow
/// with them (a DynamoDB item stops at 400 KB), and the last commit must cost
/// the round trips the first did.
async fn given_2000_segments_then_the_batch_record_stays_small_and_each_commit_costs_the_same(
    backend: Backend,
) {
    const SHARDS: u64 = 50;
    const PER_SHARD: u64 = 40;
    let (stores, raw) = match backend {
        Backend::Embedded => {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
            let blobs_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
            let stores = TestStores {
                batches: store.clone(),
                files: store,
                blobs: Arc::new(LocalBlobStore::open_dir(blobs_dir.path()).expect("blobs")),
                dynamodb_requests: None,
                _blob_dir: Some(blobs_dir),
                _store_dir: None,
            };
            (stores, StoredRecord::Embedded(dir))
        }
        Backend::Moto | Backend::Dynalite => {
            let stores = common::fresh_stores(backend).await;
            let store = common::fresh_dynamo_store(backend).await;
            let counter = store.requests().clone();
            let shared = Arc::new(store.clone());
            let stores = TestStores {
                batches: shared.clone(),
                files: shared,
                dynamodb_requests: Some(counter),
                ..stores
            };
            (stores, StoredRecord::Dynamo(store))
        }
    };
    let app = TestApp::with_stores(stores, lambda_batches::config::AuthConfig::Open, None);
    let (tenant, id) = running_batch_of(&app, SHARDS * PER_SHARD).await;
    let now = app.clock_secs();
    let empty = stored_record_size(&raw, &tenant, &id).await;

    let requests = || app.dynamodb_requests.as_ref().map(|c| c.get());
    let commit_one = |shard: u64, n: u64| {
        let start = shard * 1_000 + n * 10;
        shard_commit(shard * 1_000, start, start + 10, 1, 0)
    };
    let before = requests();
    let first = app
        .store
        .commit_segment(&tenant, &id, &commit_one(0, 0), now)
        .await
        .expect("commit");
    assert_eq!(first, CommitOutcome::Committed);
    let first_cost = requests().zip(before).map(|(a, b)| a - b);
    join_all((0..SHARDS).map(|shard| {
        let (app, tenant, id) = (&app, &tenant, &id);
        async move {
            for n in u64::from(shard == 0)..PER_SHARD {
                let outcome = app
                    .store
                    .commit_segment(tenant, id, &commit_one(shard, n), now)
                    .await
                    .expect("commit");
                assert_eq!(outcome, CommitOutcome::Committed);
            }
        }
    }))
    .await;
    let before = requests();
    let last = app
        .store
        .commit_segment(
            &tenant,
            &id,
            &shard_commit(0, PER_SHARD * 10, PER_SHARD * 10 + 10, 1, 0),
            now,
        )
        .await
        .expect("commit");
    assert_eq!(last, CommitOutcome::Committed);
    let last_cost = requests().zip(before).map(|(a, b)| a - b);

    let full = stored_record_size(&raw, &tenant, &id).await;
    // The shards' resume points may add a few bytes each, never a segment's worth.
    assert!(
        full <= empty + 40 * SHARDS as usize,
        "the batch's record grew from {empty} to {full} bytes with 2,001 segments"
    );
    assert_eq!(
        first_cost, last_cost,
        "round trips of the first and the 2,001st commit"
    );
    let segments = app
        .store
        .segments(&tenant, &id, now)
        .await
        .expect("segments");
    assert_eq!(segments.len() as u64, SHARDS * PER_SHARD + 1);
    let record = app
        .store
        .get(&tenant, &id, now)
        .await
        .expect("get")
        .expect("record");
    assert_eq!(
        record.batch.request_counts.completed,
        SHARDS * PER_SHARD + 1
    );
}
