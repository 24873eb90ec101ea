//! The embedded store keeps its data across restarts of the local server.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::{create_body, with_key, TestApp, TestStores};
use lambda_batches::config::AuthConfig;
use lambda_batches::files::local::LocalBlobStore;
use lambda_batches::store::embedded::EmbeddedStore;

#[tokio::test]
async fn given_a_batch_when_the_store_is_reopened_then_it_and_its_key_survive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = || {
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let blobs = Arc::new(LocalBlobStore::open_dir(&dir.path().join("files")).expect("blobs"));
        let stores = TestStores {
            batches: store.clone(),
            files: store,
            blobs,
            dynamodb_requests: None,
            _blob_dir: None,
            _store_dir: None,
        };
        TestApp::with_stores(stores, AuthConfig::Open, None)
    };
    let body = with_key(create_body("file-1"), "durable-key");
    let created = {
        let app = open();
        app.create(&body).await
    };

    let app = open();

    assert_eq!(app.retrieve(&created.id()).await.body, created.body);
    let replayed = app.create(&body).await;
    assert_eq!(replayed.status, StatusCode::OK);
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    let conflict = app
        .create(&with_key(create_body("file-2"), "durable-key"))
        .await;
    conflict.expect_error(StatusCode::CONFLICT);
}
