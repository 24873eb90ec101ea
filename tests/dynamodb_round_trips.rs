//! DynamoDB requests per API call, counted by the SDK interceptor: the bill
//! and the latency of every call.

mod common;

use axum::http::StatusCode;
use common::{create_body, fresh_stores_with_quotas, with_key, Backend, TestApp};
use lambda_batches::clock::Clock;
use lambda_batches::config::AuthConfig;
use lambda_batches::domain::batch::{BatchError, BatchErrors};
use lambda_batches::domain::{BatchId, Quotas, TenantId, Transition};

async fn count<F: std::future::Future<Output = common::TestResponse>>(
    app: &TestApp,
    call: F,
) -> (u64, common::TestResponse) {
    let before = app.requests_sent();
    let response = call.await;
    (app.requests_sent() - before, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_every_create_is_one_request_whether_new_replayed_or_conflicting() {
    let app = TestApp::spawn(Backend::Moto).await;
    let body = with_key(create_body("file-1"), "k");

    let (new, created) = count(&app, app.create(&body)).await;
    let (replay, replayed) = count(&app, app.create(&body)).await;
    let (conflict, conflicted) =
        count(&app, app.create(&with_key(create_body("file-2"), "k"))).await;
    let (keyless, _) = count(&app, app.create(&create_body("file-3"))).await;

    assert_eq!(
        (created.status, replayed.status, conflicted.status),
        (StatusCode::OK, StatusCode::OK, StatusCode::CONFLICT)
    );
    assert_eq!((new, replay, conflict, keyless), (1, 1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_retrieve_and_cancel_are_one_request_and_a_list_page_at_most_two() {
    let app = TestApp::spawn(Backend::Moto).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create(&create_body(&format!("file-{i}"))).await.id());
        app.clock.advance_ms(1);
    }

    let (retrieve, _) = count(&app, app.retrieve(&ids[0])).await;
    let (missing, _) = count(&app, app.retrieve("batch_00000000000000000000000000000000")).await;
    let (malformed, _) = count(&app, app.retrieve("not-an-id")).await;
    let (first_page, page) = count(&app, app.get("/v1/batches?limit=2")).await;
    let after = page.body["last_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (next_page, _) = count(&app, app.get(&format!("/v1/batches?limit=2&after={after}"))).await;
    let (cancel, _) = count(&app, app.cancel(&ids[1])).await;
    let (cancel_again, _) = count(&app, app.cancel(&ids[1])).await;

    assert_eq!((retrieve, missing, malformed), (1, 1, 0));
    assert_eq!((first_page, next_page), (1, 2));
    assert_eq!((cancel, cancel_again), (1, 1));
}

/// dynalite does not return the old item on a failed condition, so the adapter
/// falls back to one strongly consistent read: still never more than two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynalite_a_failed_condition_costs_one_extra_read() {
    let app = TestApp::spawn(Backend::Dynalite).await;
    let body = with_key(create_body("file-1"), "k");

    let (new, _) = count(&app, app.create(&body)).await;
    let (replay, replayed) = count(&app, app.create(&body)).await;
    let (conflict, _) = count(&app, app.create(&with_key(create_body("file-2"), "k"))).await;

    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    assert_eq!((new, replay, conflict), (1, 2, 2));
}

/// Quotas cost one `UpdateItem` on the usage item per create and per batch
/// end (and nothing at all when unlimited, as every test above shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_a_batch_quota_adds_one_request_to_create_and_to_the_terminal_transition() {
    let quotas = Quotas {
        max_batches_in_flight: Some(1),
        ..Quotas::UNLIMITED
    };
    let stores = fresh_stores_with_quotas(Backend::Moto, quotas).await;
    let app = TestApp::with_stores(stores, AuthConfig::Open, None);
    let body = with_key(create_body("file-1"), "k");

    let (new, created) = count(&app, app.create(&body)).await;
    let (replay, _) = count(&app, app.create(&body)).await;
    let (refused, refusal) = count(&app, app.create(&with_key(create_body("file-1"), "k2"))).await;
    let (cancel, _) = count(&app, app.cancel(&created.id())).await;
    let tenant = TenantId::default_tenant();
    let id = BatchId::parse(&created.id()).unwrap();
    let before = app.requests_sent();
    let now = app.clock.now_secs();
    app.store
        .transition(&tenant, &id, Transition::finish_cancel(now), now)
        .await
        .unwrap();
    let finish = app.requests_sent() - before;

    assert_eq!(refusal.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!((new, replay, refused), (2, 2, 2));
    assert_eq!((cancel, finish), (1, 2));
}

/// A listing page is one Query while its batches are complete in the listing
/// index; batches with errors (left out of the index) add one BatchGetItem
/// for the whole page, however many of them it holds.
async fn a_list_page_is_one_query_plus_one_read_for_batches_with_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = TenantId::default_tenant();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(app.create(&create_body(&format!("file-{i}"))).await.id());
        app.clock.advance_ms(1);
    }
    let (clean, page) = count(&app, app.get("/v1/batches?limit=20")).await;
    assert_eq!(page.body["data"].as_array().map(Vec::len), Some(20));

    for id in ids.iter().step_by(3) {
        let now = app.clock.now_secs();
        let errors = BatchErrors {
            object: "list".into(),
            data: vec![BatchError {
                code: "invalid_json_line".into(),
                message: "This line is not parseable as valid JSON.".into(),
                param: None,
                line: Some(1),
            }],
        };
        app.store
            .transition(
                &tenant,
                &BatchId::parse(id).unwrap(),
                Transition::fail_validation(now, errors),
                now,
            )
            .await
            .unwrap();
    }
    let (with_errors, page) = count(&app, app.get("/v1/batches?limit=20")).await;
    let listed_errors = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|batch| batch["errors"]["data"][0]["line"] == 1)
        .count();

    assert_eq!(listed_errors, 7);
    assert_eq!((clean, with_errors), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_a_list_page_is_one_query_plus_one_read_for_batches_with_errors() {
    a_list_page_is_one_query_plus_one_read_for_batches_with_errors(Backend::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynalite_a_list_page_is_one_query_plus_one_read_for_batches_with_errors() {
    a_list_page_is_one_query_plus_one_read_for_batches_with_errors(Backend::Dynalite).await;
}
