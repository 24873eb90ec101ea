//! Per-tenant quotas, on every backend: batches in flight and enqueued lines,
//! 429 with `retry-after` in the envelope, release at every terminal status,
//! no overshoot under racing creates, and the reconciler's repair of leaks.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::{create_body, fresh_dynamo_store, with_key, Backend, TestApp, TestStores};
use lambda_batches::clock::Clock;
use lambda_batches::config::AuthConfig;
use lambda_batches::domain::{
    BatchErrors, BatchId, BatchStatus, QuotaExceeded, Quotas, TenantId, Transition,
};
use lambda_batches::files::local::LocalBlobStore;
use lambda_batches::store::embedded::EmbeddedStore;
use lambda_batches::store::BatchStore;

suite!(
    [embedded, moto, dynalite],
    [
        given_the_batch_quota_is_reached_then_create_is_429_with_retry_after_in_the_envelope,
        given_racing_creates_then_no_more_than_the_quota_are_admitted,
        given_a_batch_reaches_any_terminal_status_then_its_slot_is_free_again,
        given_the_line_quota_then_reservations_fit_repeat_and_release_exactly_once,
        given_a_slot_left_held_by_a_crash_then_the_reconcilers_repair_frees_it,
    ]
);

// DynamoDB only: in the embedded store slot and batch share a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_a_slot_held_for_a_batch_never_written_is_freed() {
    given_a_create_that_crashed_after_taking_its_slot_then_its_retry_or_the_repair_frees_it(
        Backend::Moto,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynalite_a_slot_held_for_a_batch_never_written_is_freed() {
    given_a_create_that_crashed_after_taking_its_slot_then_its_retry_or_the_repair_frees_it(
        Backend::Dynalite,
    )
    .await;
}

fn batches(max: u32) -> Quotas {
    Quotas {
        max_batches_in_flight: Some(max),
        ..Quotas::UNLIMITED
    }
}

fn lines(max: u64) -> Quotas {
    Quotas {
        max_enqueued_lines: Some(max),
        ..Quotas::UNLIMITED
    }
}

fn tenants() -> AuthConfig {
    AuthConfig::StaticKeys(
        ["a", "b"]
            .iter()
            .map(|t| (format!("key-{t}"), TenantId::parse(t).unwrap()))
            .collect(),
    )
}

/// Fresh stores of `backend`: the batch store enforcing `quotas`, and a second
/// handle on the same data that does not (to stage what a crash leaves).
async fn stores(backend: Backend, quotas: Quotas) -> (TestStores, Arc<dyn BatchStore>) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let blobs = Arc::new(LocalBlobStore::open_dir(dir.path()).unwrap());
    let (with, without): (Arc<dyn common::BatchPorts>, Arc<dyn BatchStore>) = match backend {
        Backend::Embedded => {
            let store = EmbeddedStore::in_memory().unwrap();
            (Arc::new(store.clone().with_quotas(quotas)), Arc::new(store))
        }
        _ => {
            let store = fresh_dynamo_store(backend).await;
            (Arc::new(store.clone().with_quotas(quotas)), Arc::new(store))
        }
    };
    let files: Arc<dyn lambda_batches::store::files::FileStore> = match backend {
        Backend::Embedded => Arc::new(EmbeddedStore::in_memory().unwrap()),
        _ => Arc::new(fresh_dynamo_store(backend).await),
    };
    let stores = TestStores {
        batches: with,
        files,
        blobs,
        dynamodb_requests: None,
        _blob_dir: Some(dir),
        _store_dir: None,
    };
    (stores, without)
}

async fn app(backend: Backend, quotas: Quotas) -> TestApp {
    TestApp::with_stores(stores(backend, quotas).await.0, tenants(), None)
}

fn tenant_a() -> TenantId {
    TenantId::parse("a").unwrap()
}

/// Moves batch `id` of tenant `a` through `steps`, each of which must apply.
async fn drive(store: &dyn BatchStore, app: &TestApp, id: &str, steps: &[Transition]) {
    let id = BatchId::parse(id).unwrap();
    let now = app.clock.now_secs();
    for step in steps {
        let outcome = store
            .transition(&tenant_a(), &id, step.clone(), now)
            .await
            .unwrap();
        assert!(
            matches!(
                outcome,
                lambda_batches::store::TransitionOutcome::Applied(_)
            ),
            "{step:?}: {outcome:?}"
        );
    }
}

fn completion(now: i64, total: u64) -> Vec<Transition> {
    vec![
        Transition::start(now, total, None),
        Transition::new(&[BatchStatus::InProgress], BatchStatus::Finalizing, now),
        Transition::new(&[BatchStatus::Finalizing], BatchStatus::Completed, now),
    ]
}

async fn given_the_batch_quota_is_reached_then_create_is_429_with_retry_after_in_the_envelope(
    backend: Backend,
) {
    let app = app(backend, batches(2)).await;
    for key in ["k1", "k2"] {
        let created = app
            .create_as("a", &with_key(create_body("file-1"), key))
            .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    }

    let refused = app
        .create_as("a", &with_key(create_body("file-1"), "k3"))
        .await;
    let error = refused.expect_error(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error["code"], "batch_quota_exceeded");
    assert_eq!(error["type"], "requests");
    assert!(error["param"].is_null());
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("2 batches in flight"));
    assert_eq!(refused.headers["retry-after"], "60");
    app.create_as("a", &create_body("file-1"))
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS);

    // At the limit, a retry of an admitted create still replays, and other
    // tenants are not affected.
    let replay = app
        .create_as("a", &with_key(create_body("file-1"), "k1"))
        .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let other = app
        .create_as("b", &with_key(create_body("file-1"), "k3"))
        .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let listed = app.get_as("a", "/v1/batches").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 2);
}

async fn given_racing_creates_then_no_more_than_the_quota_are_admitted(backend: Backend) {
    let app = Arc::new(app(backend, batches(3)).await);
    let racers = (0..12).map(|i| {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            app.create_as("a", &with_key(create_body("file-1"), &format!("race-{i}")))
                .await
                .status
        })
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((admitted, refused), (3, 9), "{statuses:?}");
    // Stored batches, not just answers: exactly three exist.
    let now = app.clock.now_secs();
    let page = app.store.list(&tenant_a(), None, 100, now).await.unwrap();
    let lambda_batches::store::ListOutcome::Page { batches, .. } = page else {
        panic!("a page")
    };
    assert_eq!(batches.len(), 3);
}

async fn given_a_batch_reaches_any_terminal_status_then_its_slot_is_free_again(backend: Backend) {
    let app = app(backend, batches(1)).await;
    let store = Arc::clone(&app.store);
    let now = app.clock.now_secs();
    let create = |key: &'static str| {
        let app = &app;
        async move {
            app.create_as("a", &with_key(create_body("file-1"), key))
                .await
        }
    };

    // Cancelled: cancelling still holds the slot, cancelled gives it back.
    let first = create("cancelled").await.id();
    assert_eq!(
        app.post_as("a", &format!("/v1/batches/{first}/cancel"))
            .await
            .status,
        StatusCode::OK
    );
    create("next")
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS);
    drive(&*store, &app, &first, &[Transition::finish_cancel(now)]).await;

    // Failed at validation.
    let second = create("failed").await.id();
    create("next")
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS);
    let errors = BatchErrors {
        object: "list".into(),
        data: vec![],
    };
    drive(
        &*store,
        &app,
        &second,
        &[Transition::fail_validation(now, errors)],
    )
    .await;

    // Completed.
    let third = create("completed").await.id();
    drive(&*store, &app, &third, &completion(now, 5)).await;

    // Expired.
    let fourth = create("expired").await.id();
    drive(
        &*store,
        &app,
        &fourth,
        &[
            Transition::start(now, 5, None),
            Transition::new(&[BatchStatus::InProgress], BatchStatus::Expired, now),
        ],
    )
    .await;

    let last = create("last").await;
    assert_eq!(last.status, StatusCode::OK, "{}", last.body);
    // Replaying a batch that has ended answers as ever and keeps no slot:
    // once `last` has ended too, the replay leaves room for a new batch.
    drive(&*store, &app, &last.id(), &completion(now, 1)).await;
    let replay = create("completed").await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let after = create("after-replay").await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
}

async fn given_the_line_quota_then_reservations_fit_repeat_and_release_exactly_once(
    backend: Backend,
) {
    let app = app(backend, lines(10)).await;
    let store = Arc::clone(&app.store);
    let now = app.clock.now_secs();
    let tenant = tenant_a();
    let create = |key: &'static str| {
        let app = &app;
        async move {
            app.create_as("a", &with_key(create_body("file-1"), key))
                .await
        }
    };
    let reserve = |id: String, n: u64| {
        let store = Arc::clone(&store);
        let tenant = tenant.clone();
        async move {
            store
                .reserve_lines(&tenant, &BatchId::parse(&id).unwrap(), n, now)
                .await
                .unwrap()
        }
    };
    let exceeded = Err(QuotaExceeded::EnqueuedLines { limit: 10 });

    let a = create("a").await.id();
    assert_eq!(reserve(a.clone(), 6).await, Ok(()));
    assert_eq!(
        reserve(a.clone(), 6).await,
        Ok(()),
        "a repeat reserves nothing more"
    );
    let b = create("b").await.id();
    assert_eq!(reserve(b.clone(), 6).await, exceeded);
    assert_eq!(reserve(b.clone(), 11).await, exceeded);
    let c = create("c").await.id();
    assert_eq!(reserve(c.clone(), 4).await, Ok(()));

    // 10 of 10 lines enqueued: creating is refused until some are given back.
    let refused = create("d").await;
    let error = refused.expect_error(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error["code"], "enqueued_line_limit_exceeded");
    assert_eq!(refused.headers["retry-after"], "60");

    // a completes (6 lines back); a second release of a gives back nothing more.
    drive(&*store, &app, &a, &completion(now, 6)).await;
    store
        .release_quota(&tenant, &BatchId::parse(&a).unwrap(), 6)
        .await
        .unwrap();
    assert_eq!(reserve(b.clone(), 6).await, Ok(()));
    create("e")
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS);
}

async fn given_a_slot_left_held_by_a_crash_then_the_reconcilers_repair_frees_it(backend: Backend) {
    let (stores, without_quotas) = stores(backend, batches(1)).await;
    let app = TestApp::with_stores(stores, tenants(), None);
    let now = app.clock.now_secs();
    let first = app
        .create_as("a", &with_key(create_body("file-1"), "first"))
        .await
        .id();
    // The batch ends but the release is lost (a crash between the two writes;
    // in the embedded store they share a transaction, so nothing is lost).
    let fail = Transition::new(&[BatchStatus::Validating], BatchStatus::Failed, now);
    drive(&*without_quotas, &app, &first, &[fail]).await;

    // A repair that only looks at tenants busy until later changes nothing.
    app.store.repair_quotas(now - 1, now).await.unwrap();
    app.clock.advance_ms(1_000);
    let later = app.clock.now_secs();
    app.store.repair_quotas(later, later).await.unwrap();

    let second = app
        .create_as("a", &with_key(create_body("file-1"), "second"))
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    // A slot in use is never repaired away.
    app.clock.advance_ms(1_000);
    let later = app.clock.now_secs();
    app.store.repair_quotas(later, later).await.unwrap();
    app.create_as("a", &with_key(create_body("file-1"), "third"))
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS);
}

/// The DynamoDB create takes the slot, then writes the batch: a crash between
/// the two leaves a slot whose batch does not exist. Staged here by deleting
/// the batch item of an admitted create.
async fn given_a_create_that_crashed_after_taking_its_slot_then_its_retry_or_the_repair_frees_it(
    backend: Backend,
) {
    let store = fresh_dynamo_store(backend).await.with_quotas(batches(1));
    let (client, table) = (store.client().clone(), store.table().to_string());
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let stores = TestStores {
        batches: Arc::new(store.clone()),
        files: Arc::new(store),
        blobs: Arc::new(LocalBlobStore::open_dir(dir.path()).unwrap()),
        dynamodb_requests: None,
        _blob_dir: Some(dir),
        _store_dir: None,
    };
    let app = TestApp::with_stores(stores, tenants(), None);
    let lose_batch = |id: String| {
        let (client, table) = (client.clone(), table.clone());
        async move {
            client
                .delete_item()
                .table_name(table)
                .key(
                    "tenant",
                    aws_sdk_dynamodb::types::AttributeValue::S("a".into()),
                )
                .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id))
                .send()
                .await
                .unwrap();
        }
    };
    let body = with_key(create_body("file-1"), "crashed");

    // The retry of the same create takes the held slot over: created, and
    // the quota still counts one batch.
    let id = app.create_as("a", &body).await.id();
    lose_batch(id.clone()).await;
    let retried = app.create_as("a", &body).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert!(retried.headers.get("idempotent-replayed").is_none());
    assert_eq!(retried.id(), id);
    app.create_as("a", &with_key(create_body("file-1"), "other"))
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS);

    // Never retried: the repair gives the slot back once the tenant is idle.
    lose_batch(id).await;
    let now = app.clock.now_secs();
    assert_eq!(
        app.store.repair_quotas(now, now).await.unwrap(),
        0,
        "not idle yet"
    );
    app.clock.advance_ms(1_000);
    let later = app.clock.now_secs();
    assert_eq!(app.store.repair_quotas(later, later).await.unwrap(), 1);
    let fresh = app
        .create_as("a", &with_key(create_body("file-1"), "other"))
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
}

/// One usage item per tenant holds the ids of its batches in flight (about 80
/// bytes each) beside DynamoDB's 400 KB item limit: the DynamoDB store tracks
/// at most `MAX_TRACKED_BATCHES` per tenant, whatever the quota says, and
/// refuses the next create with a 429 instead of failing the write. The usage
/// item is staged one short of the bound, each batch with its lines reserved,
/// as creates and validations would have left it.
async fn given_more_batches_in_flight_than_one_usage_item_holds_then_the_next_is_429(
    backend: Backend,
) {
    use aws_sdk_dynamodb::types::AttributeValue;
    use lambda_batches::store::dynamodb::{MAX_TRACKED_BATCHES, USAGE_ID};
    let bound = MAX_TRACKED_BATCHES;
    let store = fresh_dynamo_store(backend).await;
    let ids: Vec<String> = (1..bound).map(|i| format!("batch_{i:032x}")).collect();
    let reservations: Vec<String> = ids.iter().map(|id| format!("{id}=1000000")).collect();
    store
        .client()
        .put_item()
        .table_name(store.table())
        .item("tenant", AttributeValue::S("a".into()))
        .item("id", AttributeValue::S(USAGE_ID.into()))
        .item("in_flight", AttributeValue::Ss(ids))
        .item("enqueued", AttributeValue::Ss(reservations))
        .item(
            "enqueued_lines",
            AttributeValue::N((u64::from(bound - 1) * 1_000_000).to_string()),
        )
        .send()
        .await
        .expect("staged usage item");
    // Only the line quota is set (and never reached): no batch quota would
    // stop the ids growing.
    let quotas = lines(u64::MAX);
    let shared = Arc::new(store.with_quotas(quotas));
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let stores = TestStores {
        batches: shared.clone(),
        files: shared,
        blobs: Arc::new(LocalBlobStore::open_dir(dir.path()).unwrap()),
        dynamodb_requests: None,
        _blob_dir: Some(dir),
        _store_dir: None,
    };
    let app = TestApp::with_stores(stores, tenants(), None);

    let last = app.create_as("a", &create_body("file-last")).await;
    assert_eq!(last.status, StatusCode::OK, "{}", last.body);
    let refused = app.create_as("a", &create_body("file-next")).await;

    let error = refused.expect_error(StatusCode::TOO_MANY_REQUESTS);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&bound.to_string()),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_the_usage_item_tracks_a_bounded_number_of_batches() {
    given_more_batches_in_flight_than_one_usage_item_holds_then_the_next_is_429(Backend::Moto)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynalite_the_usage_item_tracks_a_bounded_number_of_batches() {
    given_more_batches_in_flight_than_one_usage_item_holds_then_the_next_is_429(Backend::Dynalite)
        .await;
}
