//! Segment items on DynamoDB (moto and dynalite): what the conformance suite
//! cannot reach through the port alone — a commit cut between its two writes,
//! a purged batch's leftovers, and items that no listing or index may show.

mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::{create_body, fresh_dynamo_store, Backend, TestApp, TestStores};
use lambda_batches::domain::batch::Usage;
use lambda_batches::domain::execution::{ByteRange, Segment};
use lambda_batches::domain::{BatchId, BatchStatus, TenantId, Transition};
use lambda_batches::store::dynamodb::DynamoStore;
use lambda_batches::store::{CommitOutcome, SegmentCommit, TransitionOutcome};
use std::sync::Arc;

suite!(
    [moto, dynalite],
    [
        given_a_winner_cut_off_before_counting_then_the_next_attempt_counts_it_once,
        given_a_put_retried_after_its_answer_was_lost_then_the_commit_is_still_its_own,
        given_a_purged_batchs_segment_item_then_a_new_commit_replaces_it,
        given_segment_items_then_no_listing_or_index_shows_them,
        given_a_batch_running_with_segments_inside_its_item_then_it_goes_on_from_them,
        given_a_batch_with_segments_inside_its_item_when_another_shard_commits_first_then_it_lands,
    ]
);

const PURGE_AT: i64 = 4_000_000_000;

struct Setup {
    app: TestApp,
    store: DynamoStore,
    tenant: TenantId,
    id: BatchId,
}

async fn running_batch(backend: Backend) -> Setup {
    let store = fresh_dynamo_store(backend).await;
    let shared = Arc::new(store.clone());
    let blobs_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let stores = TestStores {
        batches: shared.clone(),
        files: shared,
        blobs: Arc::new(
            lambda_batches::files::local::LocalBlobStore::open_dir(blobs_dir.path())
                .expect("blobs"),
        ),
        dynamodb_requests: Some(store.requests().clone()),
        _blob_dir: Some(blobs_dir),
        _store_dir: None,
    };
    let app = TestApp::with_stores(stores, lambda_batches::config::AuthConfig::Open, None);
    let id = BatchId::parse(&app.create(&create_body("file-1")).await.id()).expect("id");
    let tenant = TenantId::default_tenant();
    let start = Transition::start(app.clock_secs(), 10, Some("m".into()));
    let outcome = app
        .store
        .transition(&tenant, &id, start, app.clock_secs())
        .await
        .expect("start");
    assert!(matches!(outcome, TransitionOutcome::Applied(_)));
    Setup {
        app,
        store,
        tenant,
        id,
    }
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

fn commit(start: u64, end: u64, completed: u64) -> SegmentCommit {
    SegmentCommit {
        shard_start: 0,
        start,
        segment: Segment {
            end,
            completed,
            ..Segment::default()
        },
        usage: Usage {
            total_tokens: 7 * completed,
            ..Usage::default()
        },
        purge_at: PURGE_AT,
    }
}

/// A segment item as an attempt leaves it when it dies between its put and
/// the batch's update.
async fn put_raw_segment(setup: &Setup, start: u64, end: u64, completed: u64, purge_at: i64) {
    let item = HashMap::from([
        (
            "tenant".to_string(),
            AttributeValue::S(setup.tenant.to_string()),
        ),
        (
            "id".to_string(),
            AttributeValue::S(format!("seg#{}#{start:020}", setup.id)),
        ),
        ("end".to_string(), AttributeValue::N(end.to_string())),
        (
            "completed".to_string(),
            AttributeValue::N(completed.to_string()),
        ),
        ("failed".to_string(), AttributeValue::N("0".into())),
        (
            "purge_at".to_string(),
            AttributeValue::N(purge_at.to_string()),
        ),
        (
            "usage".to_string(),
            serde_dynamo::to_attribute_value(Usage {
                total_tokens: 7 * completed,
                ..Usage::default()
            })
            .expect("usage"),
        ),
    ]);
    setup
        .store
        .client()
        .put_item()
        .table_name(setup.store.table())
        .set_item(Some(item))
        .send()
        .await
        .expect("PutItem");
}

async fn given_a_winner_cut_off_before_counting_then_the_next_attempt_counts_it_once(
    backend: Backend,
) {
    let setup = running_batch(backend).await;
    let (store, tenant, id) = (&setup.app.store, &setup.tenant, &setup.id);
    let now = setup.app.clock_secs();
    put_raw_segment(&setup, 0, 30, 3, PURGE_AT).await;
    let shard = ByteRange { start: 0, end: 100 };
    assert_eq!(
        store
            .resume_point(tenant, id, shard, now)
            .await
            .expect("resume"),
        Some(0),
        "an uncounted segment does not move the chain"
    );

    let retry = store
        .commit_segment(tenant, id, &commit(0, 20, 2), now)
        .await
        .expect("commit");
    let again = store
        .commit_segment(tenant, id, &commit(0, 20, 2), now)
        .await
        .expect("commit");

    assert_eq!(retry, CommitOutcome::AlreadyCommitted);
    assert_eq!(again, CommitOutcome::AlreadyCommitted);
    assert_eq!(
        store
            .resume_point(tenant, id, shard, now)
            .await
            .expect("resume"),
        Some(30),
        "the chain follows the winner"
    );
    let segments = store.segments(tenant, id, now).await.expect("segments");
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[&0].end, 30);
    let batch = store
        .get(tenant, id, now)
        .await
        .expect("get")
        .expect("batch")
        .batch;
    assert_eq!(
        batch.request_counts.completed, 3,
        "the winner's counts, once"
    );
    assert_eq!(batch.usage.expect("usage").total_tokens, 21);
}

async fn given_a_purged_batchs_segment_item_then_a_new_commit_replaces_it(backend: Backend) {
    let setup = running_batch(backend).await;
    let (store, tenant, id) = (&setup.app.store, &setup.tenant, &setup.id);
    let now = setup.app.clock_secs();
    put_raw_segment(&setup, 0, 99, 9, now - 1).await;
    assert!(store
        .segments(tenant, id, now)
        .await
        .expect("segments")
        .is_empty());

    let outcome = store
        .commit_segment(tenant, id, &commit(0, 10, 1), now)
        .await
        .expect("commit");

    assert_eq!(outcome, CommitOutcome::Committed);
    let segments = store.segments(tenant, id, now).await.expect("segments");
    assert_eq!(segments[&0].end, 10);
    let batch = store
        .get(tenant, id, now)
        .await
        .expect("get")
        .expect("batch")
        .batch;
    assert_eq!(batch.request_counts.completed, 1);
}

async fn given_segment_items_then_no_listing_or_index_shows_them(backend: Backend) {
    let setup = running_batch(backend).await;
    let (store, tenant, id) = (&setup.app.store, &setup.tenant, &setup.id);
    let now = setup.app.clock_secs();
    for n in 0..5 {
        let outcome = store
            .commit_segment(tenant, id, &commit(n * 10, n * 10 + 10, 1), now)
            .await
            .expect("commit");
        assert_eq!(outcome, CommitOutcome::Committed);
    }

    let listed = setup.app.get("/v1/batches?limit=100").await.body;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    let files = setup.app.get("/v1/files").await.body;
    assert_eq!(files["data"], serde_json::json!([]), "{files}");
    let stuck = store
        .stuck(BatchStatus::InProgress, now + 1_000_000, 100)
        .await
        .expect("stuck");
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    // Each segment item expires with its batch.
    let item = setup
        .store
        .client()
        .get_item()
        .table_name(setup.store.table())
        .key("tenant", AttributeValue::S(tenant.to_string()))
        .key("id", AttributeValue::S(format!("seg#{id}#{:020}", 20)))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
        .expect("the segment item");
    assert_eq!(
        item.get("purge_at"),
        Some(&AttributeValue::N(PURGE_AT.to_string()))
    );
}

/// An item written before segments had items of their own: its segments live
/// in a map inside it and it has no resume points. The batch goes on from them.
/// A running batch as an earlier version left it: two segments of its first
/// shard (0..10, 10..25) inside its item, and no `resume_points`.
async fn batch_with_segments_inside_its_item(backend: Backend) -> Setup {
    let setup = running_batch(backend).await;
    let (tenant, id) = (&setup.tenant, &setup.id);
    let old_segment = |end: u64, part: &str| {
        serde_dynamo::to_attribute_value(Segment {
            end,
            output_part: Some(part.into()),
            completed: 1,
            ..Segment::default()
        })
        .expect("segment")
    };
    let inline = AttributeValue::M(HashMap::from([
        (format!("{:020}", 0), old_segment(10, "p0")),
        (format!("{:020}", 10), old_segment(25, "p1")),
    ]));
    setup
        .store
        .client()
        .update_item()
        .table_name(setup.store.table())
        .key("tenant", AttributeValue::S(tenant.to_string()))
        .key("id", AttributeValue::S(id.to_string()))
        .update_expression(
            "SET #segments = :inline, request_counts.completed = :two REMOVE resume_points",
        )
        .expression_attribute_names("#segments", "segments")
        .expression_attribute_values(":inline", inline)
        .expression_attribute_values(":two", AttributeValue::N("2".into()))
        .send()
        .await
        .expect("UpdateItem");
    setup
}

async fn given_a_batch_running_with_segments_inside_its_item_then_it_goes_on_from_them(
    backend: Backend,
) {
    let setup = batch_with_segments_inside_its_item(backend).await;
    let (store, tenant, id) = (&setup.app.store, &setup.tenant, &setup.id);
    let now = setup.app.clock_secs();
    let (first, second) = (
        ByteRange { start: 0, end: 100 },
        ByteRange {
            start: 100,
            end: 200,
        },
    );
    assert_eq!(
        store
            .resume_point(tenant, id, first, now)
            .await
            .expect("resume"),
        Some(25)
    );

    let next = store
        .commit_segment(tenant, id, &commit(25, 40, 1), now)
        .await
        .expect("commit");
    let other = SegmentCommit {
        shard_start: 100,
        ..commit(100, 130, 1)
    };
    let other = store
        .commit_segment(tenant, id, &other, now)
        .await
        .expect("commit");
    let stale = store
        .commit_segment(tenant, id, &commit(10, 30, 1), now)
        .await
        .expect("commit");

    assert_eq!(
        (next, other),
        (CommitOutcome::Committed, CommitOutcome::Committed)
    );
    assert_ne!(
        stale,
        CommitOutcome::Committed,
        "a start the old chain passed"
    );
    assert_eq!(
        store
            .resume_point(tenant, id, first, now)
            .await
            .expect("resume"),
        Some(40)
    );
    assert_eq!(
        store
            .resume_point(tenant, id, second, now)
            .await
            .expect("resume"),
        Some(130)
    );
    let segments = store.segments(tenant, id, now).await.expect("segments");
    assert_eq!(
        segments.keys().copied().collect::<Vec<_>>(),
        vec![0, 10, 25, 100]
    );
    assert_eq!(segments[&10].output_part.as_deref(), Some("p1"));
    let batch = store
        .get(tenant, id, now)
        .await
        .expect("get")
        .expect("batch")
        .batch;
    assert_eq!(batch.request_counts.completed, 4);
}

/// The SDK retries a request whose answer was lost: a retried put finds the
/// segment item its first try wrote. That commit is still this attempt's
/// (its parts are referenced and must not be deleted).
async fn given_a_put_retried_after_its_answer_was_lost_then_the_commit_is_still_its_own(
    backend: Backend,
) {
    let setup = running_batch(backend).await;
    let (store, tenant, id) = (&setup.app.store, &setup.tenant, &setup.id);
    let now = setup.app.clock_secs();
    // What the first try of the put left.
    put_raw_segment(&setup, 0, 30, 3, PURGE_AT).await;

    let outcome = store
        .commit_segment(tenant, id, &commit(0, 30, 3), now)
        .await
        .expect("commit");

    assert_eq!(outcome, CommitOutcome::Committed);
    let batch = store
        .get(tenant, id, now)
        .await
        .expect("get")
        .expect("batch")
        .batch;
    assert_eq!(batch.request_counts.completed, 3);
}

/// The first commit after an upgrade may fall on a shard the item's old
/// segments never reached: its chain starts at the shard's start.
async fn given_a_batch_with_segments_inside_its_item_when_another_shard_commits_first_then_it_lands(
    backend: Backend,
) {
    let setup = batch_with_segments_inside_its_item(backend).await;
    let (store, tenant, id) = (&setup.app.store, &setup.tenant, &setup.id);
    let now = setup.app.clock_secs();
    let other = SegmentCommit {
        shard_start: 100,
        ..commit(100, 130, 1)
    };

    let outcome = store
        .commit_segment(tenant, id, &other, now)
        .await
        .expect("commit");

    assert_eq!(outcome, CommitOutcome::Committed);
    let second = ByteRange {
        start: 100,
        end: 200,
    };
    assert_eq!(
        store
            .resume_point(tenant, id, second, now)
            .await
            .expect("resume"),
        Some(130)
    );
    let next = store
        .commit_segment(tenant, id, &commit(25, 40, 1), now)
        .await
        .expect("commit");
    assert_eq!(next, CommitOutcome::Committed, "the old chain goes on too");
}
