//! Managed API keys: the `KeyStore` port on every adapter, and the API's
//! answers to missing, bad, valid and revoked keys.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{fresh_key_store, fresh_stores, Backend, TestApp};
use lambda_batches::config::AuthConfig;
use lambda_batches::domain::api_key::{self, ApiKeyHash, ApiKeyId, ApiKeyName, NewApiKey};
use lambda_batches::domain::TenantId;
use lambda_batches::store::dynamodb::DynamoStore;
use lambda_batches::store::embedded::EmbeddedStore;
use lambda_batches::store::keys::{KeyStore, RevokeOutcome};

suite!(
    [embedded, moto, dynalite],
    [
        given_a_created_key_when_looked_up_by_its_hash_then_it_is_found_and_unknown_hashes_are_not,
        given_keys_of_two_tenants_when_listed_then_each_tenant_sees_its_own_oldest_first,
        given_a_key_when_revoked_twice_then_the_first_revocation_stands,
        given_keys_when_the_api_is_called_without_a_valid_one_then_401,
        given_a_revoked_key_when_the_cache_expires_then_401,
    ]
);

fn new_key(tenant: &str, name: &str, created_at: i64) -> NewApiKey {
    api_key::generate(
        TenantId::parse(tenant).expect("tenant"),
        ApiKeyName::parse(name).expect("name"),
        created_at,
    )
    .expect("randomness")
}

async fn given_a_created_key_when_looked_up_by_its_hash_then_it_is_found_and_unknown_hashes_are_not(
    backend: Backend,
) {
    let (store, _dir) = fresh_key_store(backend).await;
    let key = new_key("acme", "ci", 100);
    store.create_key(&key.record).await.expect("create");

    let found = store.find_key(&key.secret.hash()).await.expect("find");

    assert_eq!(found, Some(key.record));
    let unknown = ApiKeyHash::of(b"lb-never-issued");
    assert_eq!(store.find_key(&unknown).await.expect("find"), None);
}

async fn given_keys_of_two_tenants_when_listed_then_each_tenant_sees_its_own_oldest_first(
    backend: Backend,
) {
    let (store, _dir) = fresh_key_store(backend).await;
    let newer = new_key("acme", "newer", 200);
    let older = new_key("acme", "older", 100);
    let other = new_key("globex", "theirs", 150);
    for key in [&newer, &older, &other] {
        store.create_key(&key.record).await.expect("create");
    }

    let acme = store
        .list_keys(Some(&TenantId::parse("acme").expect("tenant")))
        .await
        .expect("list");
    let all = store.list_keys(None).await.expect("list");

    assert_eq!(acme, vec![older.record.clone(), newer.record.clone()]);
    assert_eq!(all, vec![older.record, other.record, newer.record]);
}

async fn given_a_key_when_revoked_twice_then_the_first_revocation_stands(backend: Backend) {
    let (store, _dir) = fresh_key_store(backend).await;
    let key = new_key("acme", "ci", 100);
    store.create_key(&key.record).await.expect("create");
    let id = &key.record.key_id;

    let first = store.revoke_key(id, 500).await.expect("revoke");
    let second = store.revoke_key(id, 900).await.expect("revoke again");

    let revoked = lambda_batches::domain::api_key::ApiKeyRecord {
        revoked_at: Some(500),
        ..key.record.clone()
    };
    assert_eq!(first, RevokeOutcome::Revoked(revoked.clone()));
    assert_eq!(second, RevokeOutcome::AlreadyRevoked(revoked.clone()));
    let found = store.find_key(&key.secret.hash()).await.expect("find");
    assert_eq!(found, Some(revoked));
    let unknown = ApiKeyId::parse("key_000000000000000000000000").expect("an id");
    assert_eq!(
        store.revoke_key(&unknown, 900).await.expect("revoke"),
        RevokeOutcome::NotFound
    );
}

/// An app whose API keys live in `keys`, cached for `cache_ttl`.
async fn app_with_keys(backend: Backend, keys: Arc<dyn KeyStore>, cache_ttl: Duration) -> TestApp {
    TestApp::with_key_store(
        fresh_stores(backend).await,
        AuthConfig::ApiKeys { cache_ttl },
        keys,
    )
}

async fn list_with(app: &TestApp, authorization: Option<&str>) -> common::TestResponse {
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("authorization", *value))
        .collect();
    app.call(Method::GET, "/v1/batches", None, &headers).await
}

async fn given_keys_when_the_api_is_called_without_a_valid_one_then_401(backend: Backend) {
    let (keys, _dir) = fresh_key_store(backend).await;
    let key = new_key("acme", "ci", 100);
    keys.create_key(&key.record).await.expect("create");
    let app = app_with_keys(backend, keys, Duration::from_secs(30)).await;
    let valid = format!("Bearer {}", key.secret.expose());

    assert_eq!(list_with(&app, Some(&valid)).await.status, StatusCode::OK);
    let almost = format!("Bearer {}x", key.secret.expose());
    let hash_as_key = format!("Bearer {}", key.record.hash.to_hex());
    for authorization in [
        None,
        Some("Bearer "),
        Some("Bearer lb-made-up"),
        Some(almost.as_str()),
        Some(hash_as_key.as_str()),
        Some(key.secret.expose()),
    ] {
        let response = list_with(&app, authorization).await;
        let error = response.expect_error(StatusCode::UNAUTHORIZED);
        assert_eq!(error["code"], "invalid_api_key", "{authorization:?}");
        assert_eq!(error["type"], "invalid_request_error");
    }
}

/// How long the revocation test waits at most: the cache TTL plus slack for
/// a slow machine. A hang guard, not a speed claim.
const REVOCATION_PATIENCE: Duration = Duration::from_secs(30);

async fn given_a_revoked_key_when_the_cache_expires_then_401(backend: Backend) {
    let (keys, _dir) = fresh_key_store(backend).await;
    let key = new_key("acme", "ci", 100);
    keys.create_key(&key.record).await.expect("create");
    let app = app_with_keys(backend, Arc::clone(&keys), Duration::from_secs(1)).await;
    let valid = format!("Bearer {}", key.secret.expose());
    assert_eq!(list_with(&app, Some(&valid)).await.status, StatusCode::OK);

    keys.revoke_key(&key.record.key_id, 200)
        .await
        .expect("revoke");

    let revoked_at = Instant::now();
    loop {
        let response = list_with(&app, Some(&valid)).await;
        if response.status == StatusCode::UNAUTHORIZED {
            response.expect_error(StatusCode::UNAUTHORIZED);
            break;
        }
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        assert!(
            revoked_at.elapsed() < REVOCATION_PATIENCE,
            "a revoked key still works after {REVOCATION_PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn given_no_cache_when_a_key_is_revoked_then_the_next_request_is_refused() {
    let (keys, _dir) = fresh_key_store(Backend::Embedded).await;
    let key = new_key("acme", "ci", 100);
    keys.create_key(&key.record).await.expect("create");
    let app = app_with_keys(Backend::Embedded, Arc::clone(&keys), Duration::ZERO).await;
    let valid = format!("Bearer {}", key.secret.expose());
    assert_eq!(list_with(&app, Some(&valid)).await.status, StatusCode::OK);

    keys.revoke_key(&key.record.key_id, 200)
        .await
        .expect("revoke");

    list_with(&app, Some(&valid))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn given_two_keys_of_two_tenants_when_each_lists_then_each_sees_only_its_own_batches() {
    let (keys, _dir) = fresh_key_store(Backend::Embedded).await;
    let acme = new_key("acme", "a", 100);
    let globex = new_key("globex", "g", 100);
    for key in [&acme, &globex] {
        keys.create_key(&key.record).await.expect("create");
    }
    let app = app_with_keys(Backend::Embedded, keys, Duration::from_secs(30)).await;
    let as_acme = format!("Bearer {}", acme.secret.expose());
    let created = app
        .call(
            Method::POST,
            "/v1/batches",
            Some(&common::create_body("file-abc")),
            &[("authorization", &as_acme)],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);

    let as_globex = format!("Bearer {}", globex.secret.expose());
    let theirs = list_with(&app, Some(&as_globex)).await;
    let ours = list_with(&app, Some(&as_acme)).await;

    assert_eq!(theirs.body["data"].as_array().map(Vec::len), Some(0));
    assert_eq!(ours.body["data"][0]["id"], created.body["id"]);
}

/// Round trips per authenticated request: one GetItem on a cache miss, none on a hit.
#[tokio::test]
async fn given_dynamodb_keys_when_one_key_is_used_twice_then_the_table_is_read_once() {
    for backend in [Backend::Moto, Backend::Dynalite] {
        let keys = Arc::new(common::fresh_dynamo_store(backend).await);
        let key = new_key("acme", "ci", 100);
        keys.create_key(&key.record).await.expect("create");
        let before = keys.requests().get();
        let app = app_with_keys(backend, keys.clone(), Duration::from_secs(30)).await;
        let valid = format!("Bearer {}", key.secret.expose());

        assert_eq!(list_with(&app, Some(&valid)).await.status, StatusCode::OK);
        assert_eq!(keys.requests().get() - before, 1, "{backend:?}: a miss");
        assert_eq!(list_with(&app, Some(&valid)).await.status, StatusCode::OK);
        list_with(&app, Some("Bearer lb-made-up"))
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
        list_with(&app, Some("Bearer lb-made-up"))
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
        assert_eq!(
            keys.requests().get() - before,
            2,
            "{backend:?}: hits, and one miss for the unknown key"
        );
    }
}

/// The secret is nowhere in the embedded store's files, WAL included; its hash is.
#[tokio::test]
async fn given_an_embedded_store_when_keys_are_created_then_no_file_holds_a_plaintext_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let keys: Vec<NewApiKey> = (0..3)
        .map(|i| new_key("acme", &format!("k{i}"), i))
        .collect();
    for key in &keys {
        store.create_key(&key.record).await.expect("create");
    }
    store
        .revoke_key(&keys[0].record.key_id, 10)
        .await
        .expect("revoke");

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            bytes.extend(std::fs::read(&path).expect("read"));
        }
    }

    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    for key in &keys {
        // The random part alone, in case a store kept the secret without its prefix.
        let random = &key.secret.expose()["lb-".len()..];
        assert!(!contains(random), "a plaintext key is in the store's files");
        assert!(
            contains(&key.record.hash.to_hex()),
            "the scan must see what the store wrote"
        );
    }
}

/// The secret is in no attribute of any item of the table; its hash is.
#[tokio::test]
async fn given_a_dynamodb_table_when_keys_are_created_then_a_scan_finds_no_plaintext_key() {
    for backend in [Backend::Moto, Backend::Dynalite] {
        let store: DynamoStore = common::fresh_dynamo_store(backend).await;
        let key = new_key("acme", "ci", 100);
        store.create_key(&key.record).await.expect("create");
        store
            .revoke_key(&key.record.key_id, 200)
            .await
            .expect("revoke");

        let items = store
            .client()
            .scan()
            .table_name(store_table(&store))
            .send()
            .await
            .expect("Scan")
            .items
            .unwrap_or_default();

        let dump = format!("{items:?}");
        let random = &key.secret.expose()["lb-".len()..];
        assert!(
            !dump.contains(random),
            "{backend:?}: a plaintext key is stored"
        );
        assert!(
            dump.contains(&key.record.hash.to_hex()),
            "{backend:?}: {dump}"
        );
        assert_eq!(items.len(), 1, "{backend:?}");
    }
}

fn store_table(store: &DynamoStore) -> String {
    store.table().to_string()
}
