//! Listing pages hold every batch they should, whatever the batches weigh: a
//! DynamoDB Query page also ends at 1 MB, and batches that failed validation
//! carry up to hundreds of kilobytes of errors.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::http::StatusCode;
use common::{create_body, Backend, TestApp, TestStores};
use lambda_batches::clock::Clock;
use lambda_batches::config::AuthConfig;
use lambda_batches::domain::batch::{BatchError, BatchErrors};
use lambda_batches::domain::{BatchId, BatchStatus, TenantId, Transition};
use lambda_batches::store::dynamodb::DynamoStore;
use lambda_batches::store::TransitionOutcome;
use serde_json::Value;

suite!(
    [embedded, moto, dynalite],
    [given_batches_near_the_item_size_limit_when_listed_by_20_then_every_page_is_full_and_has_more_exact]
);

/// About `count` × 350 bytes of validation errors: 1,000 of them make a batch
/// item of about 350 KB, near DynamoDB's 400 KB limit.
fn line_errors(count: u64) -> BatchErrors {
    BatchErrors {
        object: "list".into(),
        data: (1..=count)
            .map(|line| BatchError {
                code: "invalid_json_line".into(),
                message: format!(
                    "This line is not parseable as valid JSON. {}",
                    "x".repeat(280)
                ),
                param: None,
                line: Some(line),
            })
            .collect(),
    }
}

async fn fail_with(app: &TestApp, id: &str, errors: BatchErrors) {
    let now = app.clock.now_secs();
    let outcome = app
        .store
        .transition(
            &TenantId::default_tenant(),
            &BatchId::parse(id).expect("id"),
            Transition::fail_validation(now, errors),
            now,
        )
        .await
        .expect("transition");
    assert!(
        matches!(outcome, TransitionOutcome::Applied(_)),
        "{outcome:?}"
    );
}

/// Every page of `limit`, following `after` as the SDK's auto-paging does.
async fn walk(app: &TestApp, limit: usize) -> Vec<(Vec<Value>, bool)> {
    let mut pages = Vec::new();
    let mut query = format!("?limit={limit}");
    loop {
        let page = app.get(&format!("/v1/batches{query}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let data = page.body["data"].as_array().expect("data").clone();
        let has_more = page.body["has_more"].as_bool().expect("has_more");
        let last = page.body["last_id"].as_str().map(str::to_string);
        pages.push((data, has_more));
        match (has_more, last) {
            (true, Some(last)) => query = format!("?limit={limit}&after={last}"),
            _ => return pages,
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

/// `ids` newest first in full pages of `limit`; with `whole`, each listed
/// batch equal to the batch retrieved alone.
async fn assert_lists_exactly(app: &TestApp, limit: usize, ids: &[String], whole: bool) {
    let pages = walk(app, limit).await;
    let newest_first: Vec<&String> = ids.iter().rev().collect();
    let expected_pages = ids.len().div_ceil(limit).max(1);
    assert_eq!(pages.len(), expected_pages, "pages of {limit}");
    for (n, (data, has_more)) in pages.iter().enumerate() {
        let last = n + 1 == expected_pages;
        assert_eq!(*has_more, !last, "has_more of page {n}");
        if !last {
            assert_eq!(data.len(), limit, "page {n} is full");
        }
    }
    let listed: Vec<&Value> = pages.iter().flat_map(|(data, _)| data).collect();
    let listed_ids: Vec<&str> = listed.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(
        listed_ids,
        newest_first.iter().map(|s| s.as_str()).collect::<Vec<_>>()
    );
    for batch in listed.into_iter().filter(|_| whole) {
        let alone = app.retrieve(batch["id"].as_str().unwrap()).await;
        assert_eq!(&alone.body, batch, "a listed batch is the whole batch");
    }
}

async fn given_batches_near_the_item_size_limit_when_listed_by_20_then_every_page_is_full_and_has_more_exact(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for i in 0..22 {
        let id = app.create(&create_body(&format!("file-{i}"))).await.id();
        // Most batches failed with about 350 KB of errors; a few hold none.
        if i % 5 != 2 {
            fail_with(&app, &id, line_errors(1_000)).await;
        }
        ids.push(id);
        app.clock.advance_ms(1);
    }

    // The pages of 20 hold 7 MB of batches: several Query pages each.
    assert_lists_exactly(&app, 20, &ids, true).await;
}

/// Tables and items as earlier releases wrote them (DynamoDB only).
mod upgrade {
    use super::*;

    suite!(
        [moto, dynalite],
        [
            given_items_written_before_the_listing_index_when_listed_then_they_read_whole,
            given_a_table_whose_listing_index_is_not_ready_when_listed_then_the_previous_index_serves,
        ]
    );

    /// An app over a DynamoDB table of the given shape (`keep` picks the indexes
    /// of `template.yaml` to build).
    async fn app_over_table(backend: Backend, keep: fn(&str) -> bool) -> (TestApp, DynamoStore) {
        let config = common::sdk_config(backend).await;
        let table = format!("batches-{}", uuid::Uuid::new_v4().simple());
        common::create_table_with_indexes(&aws_sdk_dynamodb::Client::new(&config), &table, keep)
            .await;
        let store = Arc::new(DynamoStore::new(&config, &table));
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let stores = TestStores {
            batches: store.clone(),
            files: store,
            blobs: Arc::new(
                lambda_batches::files::local::LocalBlobStore::open_dir(dir.path()).expect("blobs"),
            ),
            dynamodb_requests: None,
            _blob_dir: Some(dir),
            _store_dir: None,
        };
        let app = TestApp::with_stores(stores, AuthConfig::Open, None);
        (app, DynamoStore::new(&config, table))
    }

    /// Makes a batch item look as the code before `errors_count` wrote it.
    async fn strip_errors_count(store: &DynamoStore, id: &str) {
        store
            .client()
            .update_item()
            .table_name(store.table())
            .key("tenant", AttributeValue::S("default".into()))
            .key("id", AttributeValue::S(id.into()))
            .update_expression("REMOVE errors_count")
            .send()
            .await
            .expect("UpdateItem");
    }

    async fn given_items_written_before_the_listing_index_when_listed_then_they_read_whole(
        backend: Backend,
    ) {
        let (app, raw) = app_over_table(backend, |_| true).await;
        let mut ids = Vec::new();
        for i in 0..6 {
            let id = app.create(&create_body(&format!("file-{i}"))).await.id();
            if i % 2 == 0 {
                fail_with(&app, &id, line_errors(3)).await;
            }
            strip_errors_count(&raw, &id).await;
            ids.push(id);
            app.clock.advance_ms(1);
        }

        assert_lists_exactly(&app, 4, &ids, true).await;
        let (page, _) = &walk(&app, 6).await[0];
        let failed: HashSet<&str> = page
            .iter()
            .filter(|b| b["status"] == BatchStatus::Failed.as_str())
            .map(|b| b["id"].as_str().unwrap())
            .collect();
        assert_eq!(failed.len(), 3);
        for batch in page {
            assert_eq!(
                batch["errors"].is_object(),
                failed.contains(batch["id"].as_str().unwrap())
            );
        }
    }

    /// The upgrade path: CloudFormation adds the new listing index to a deployed
    /// table and backfills it while the new code already runs.
    async fn given_a_table_whose_listing_index_is_not_ready_when_listed_then_the_previous_index_serves(
        backend: Backend,
    ) {
        let (app, _) = app_over_table(backend, |index| {
            index != lambda_batches::store::dynamodb::LISTING_INDEX
        })
        .await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let id = app.create(&create_body(&format!("file-{i}"))).await.id();
            if i % 2 == 0 {
                fail_with(&app, &id, line_errors(3)).await;
            }
            ids.push(id);
            app.clock.advance_ms(1);
        }

        assert_lists_exactly(&app, 2, &ids, true).await;
    }
}

/// The listing index carries every field of a listed batch but `errors`, and
/// what the listing reads beside them.
#[test]
fn the_listing_index_projects_every_batch_field_but_errors() {
    let template: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml"))
            .expect("template.yaml"),
    )
    .expect("YAML");
    let index = template["Resources"]["BatchesTable"]["Properties"]["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("indexes")
        .iter()
        .find(|index| index["IndexName"] == lambda_batches::store::dynamodb::LISTING_INDEX)
        .expect("the listing index");
    assert_eq!(index["Projection"]["ProjectionType"], "INCLUDE");
    let projected: HashSet<&str> = index["Projection"]["NonKeyAttributes"]
        .as_sequence()
        .expect("NonKeyAttributes")
        .iter()
        .map(|name| name.as_str().expect("a name"))
        .collect();
    let sample = serde_json::to_value(
        lambda_batches::domain::CreateBatch::from_json(
            br#"{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}"#,
        )
        .expect("request")
        .new_batch(&BatchId::parse("batch_00000000000000000000000000000000").unwrap(), 0),
    )
    .expect("JSON");
    let mut expected: HashSet<&str> = sample
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .filter(|field| !["id", "errors"].contains(field))
        .collect();
    expected.extend(["purge_at", "errors_count"]);
    assert_eq!(projected, expected);
}
