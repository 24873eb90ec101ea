//! Test helpers: an isolated app per test, on a fresh store of the chosen backend.
//!
//! DynamoDB backends are real protocol servers started by `scripts/test.sh`
//! (`LB_MOTO_ENDPOINT`, `LB_DYNALITE_ENDPOINT`); each test gets its own table,
//! created from `template.yaml`, the single source of truth for its schema.

#![allow(dead_code)] // each test crate uses a different part of these helpers

pub mod binary;
pub mod files;

/// Runs each listed case, an `async fn(Backend)` of the calling test file, once
/// per listed backend: `suite!([embedded, moto, dynalite], [case_a, case_b])`
/// makes `embedded::case_a`, `moto::case_a`, … as tokio tests.
#[macro_export]
macro_rules! suite {
    ([$($backend:ident),*], $cases:tt) => {
        $( $crate::backend_suite!($backend, $cases); )*
    };
}

#[macro_export]
macro_rules! backend_suite {
    ($backend:ident, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::named(stringify!($backend))).await;
                }
            )*
        }
    };
}

use std::sync::Arc;

use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus,
};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use lambda_batches::api::{self, AppState, Authenticator, FileSettings};
use lambda_batches::clock::{Clock, ManualClock};
use lambda_batches::config::AuthConfig;
use lambda_batches::domain::{Quotas, TenantId};
use lambda_batches::files::local::LocalBlobStore;
use lambda_batches::files::s3::S3BlobStore;
use lambda_batches::files::BlobStore;
use lambda_batches::queue::WorkQueue;
use lambda_batches::store::dynamodb::{DynamoStore, RequestCounter};
use lambda_batches::store::embedded::EmbeddedStore;
use lambda_batches::store::files::FileStore;
use lambda_batches::store::keys::KeyStore;
use lambda_batches::store::{BatchStore, ExecutionLedger, PendingBatches, QuotaLedger};
use serde_json::{json, Value};
use tower::ServiceExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Moto,
    Dynalite,
}

impl Backend {
    pub fn named(name: &str) -> Self {
        match name {
            "embedded" => Self::Embedded,
            "moto" => Self::Moto,
            "dynalite" => Self::Dynalite,
            other => panic!("unknown backend {other}"),
        }
    }

    fn endpoint_variable(self) -> &'static str {
        match self {
            Self::Embedded => unreachable!("the embedded store has no endpoint"),
            Self::Moto => "LB_MOTO_ENDPOINT",
            Self::Dynalite => "LB_DYNALITE_ENDPOINT",
        }
    }
}

/// 2026-01-01T00:00:00Z: a fixed start, so tests never depend on the wall clock.
pub const START_MS: i64 = 1_767_225_600_000;
pub const RETENTION_SECS: i64 = 30 * 86_400;

pub struct TestApp {
    pub router: Router,
    pub clock: Arc<ManualClock>,
    pub store: Arc<dyn BatchPorts>,
    pub files: Arc<dyn FileStore>,
    pub blobs: Arc<dyn BlobStore>,
    /// DynamoDB requests sent, for round-trip assertions (DynamoDB backends only).
    pub dynamodb_requests: Option<RequestCounter>,
    /// Keeps a local blob directory alive as long as the app.
    pub blob_dir: Option<Arc<tempfile::TempDir>>,
    /// Keeps an embedded store's data directory alive as long as the app.
    pub _store_dir: Option<Arc<tempfile::TempDir>>,
}

/// Every port of the store that holds batches: one adapter implements them all.
pub trait BatchPorts: BatchStore + ExecutionLedger + PendingBatches + QuotaLedger {}
impl<T: BatchStore + ExecutionLedger + PendingBatches + QuotaLedger + ?Sized> BatchPorts for T {}

/// Fresh storage of one backend: records, file bytes, and a request counter.
pub struct TestStores {
    pub batches: Arc<dyn BatchPorts>,
    pub files: Arc<dyn FileStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub dynamodb_requests: Option<RequestCounter>,
    /// Keeps a local blob directory alive as long as the stores.
    pub _blob_dir: Option<Arc<tempfile::TempDir>>,
    /// Keeps an embedded store's data directory alive as long as the stores.
    pub _store_dir: Option<Arc<tempfile::TempDir>>,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", self.body))
            .to_string()
    }

    /// Asserts an OpenAI error envelope with this status and returns its `error`.
    pub fn expect_error(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        let error = &self.body["error"];
        for field in ["message", "type", "param", "code"] {
            assert!(
                error.get(field).is_some(),
                "error envelope lacks {field}: {}",
                self.body
            );
        }
        assert!(error["message"].is_string(), "{}", self.body);
        error
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with_auth(backend, AuthConfig::Open).await
    }

    /// An app whose bearer keys `key-<tenant>` map to each listed tenant.
    pub async fn spawn_with_tenants(backend: Backend, tenants: &[&str]) -> Self {
        let keys = tenants
            .iter()
            .map(|t| (format!("key-{t}"), TenantId::parse(t).expect("tenant")))
            .collect();
        Self::spawn_with_auth(backend, AuthConfig::StaticKeys(keys)).await
    }

    pub async fn spawn_with_auth(backend: Backend, auth: AuthConfig) -> Self {
        Self::with_stores(fresh_stores(backend).await, auth, None)
    }

    /// An app over `stores`, announcing work to `work` when given.
    pub fn with_stores(
        stores: TestStores,
        auth: AuthConfig,
        work: Option<Arc<dyn WorkQueue>>,
    ) -> Self {
        Self::with_file_settings(stores, auth, work, FileSettings::default())
    }

    /// An app over `stores` with its own file settings (lowered limits).
    /// Stored API keys (if `auth` asks for them) come from an empty store:
    /// tests of managed keys use [`TestApp::with_key_store`].
    pub fn with_file_settings(
        stores: TestStores,
        auth: AuthConfig,
        work: Option<Arc<dyn WorkQueue>>,
        file_settings: FileSettings,
    ) -> Self {
        Self::with_state(stores, auth, work, |state| {
            state.file_settings = file_settings
        })
    }

    /// An app over `stores` whose state `adjust` changes first (limits, settings).
    /// Stored API keys (if `auth` asks for them) come from an empty store:
    /// tests of managed keys use [`TestApp::with_key_store`].
    pub fn with_state(
        stores: TestStores,
        auth: AuthConfig,
        work: Option<Arc<dyn WorkQueue>>,
        adjust: impl FnOnce(&mut AppState),
    ) -> Self {
        let no_keys: Arc<dyn KeyStore> =
            Arc::new(EmbeddedStore::in_memory().expect("in-memory store"));
        Self::with_authenticator(stores, Authenticator::new(&auth, no_keys), work, adjust)
    }

    /// An app whose API keys are checked against `keys`, as `auth` says.
    pub fn with_key_store(stores: TestStores, auth: AuthConfig, keys: Arc<dyn KeyStore>) -> Self {
        Self::with_authenticator(stores, Authenticator::new(&auth, keys), None, |_| {})
    }

    pub fn with_authenticator(
        stores: TestStores,
        authenticator: Authenticator,
        work: Option<Arc<dyn WorkQueue>>,
        adjust: impl FnOnce(&mut AppState),
    ) -> Self {
        let clock = Arc::new(ManualClock::starting_at_ms(START_MS));
        let mut state = AppState {
            batches: stores.batches.clone(),
            files: Arc::clone(&stores.files),
            blobs: Arc::clone(&stores.blobs),
            work,
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            auth: Arc::new(authenticator),
            retention_secs: RETENTION_SECS,
            file_settings: FileSettings::default(),
            max_in_flight_requests: lambda_batches::config::DEFAULT_MAX_IN_FLIGHT_REQUESTS,
        };
        adjust(&mut state);
        Self {
            router: api::router(state),
            clock,
            store: stores.batches,
            files: stores.files,
            blobs: stores.blobs,
            dynamodb_requests: stores.dynamodb_requests,
            blob_dir: stores._blob_dir,
            _store_dir: stores._store_dir,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "response is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).expect("request")).await
    }

    pub async fn create(&self, body: &Value) -> TestResponse {
        self.call(Method::POST, "/v1/batches", Some(body), &[])
            .await
    }

    pub async fn create_as(&self, tenant: &str, body: &Value) -> TestResponse {
        let auth = format!("Bearer key-{tenant}");
        self.call(
            Method::POST,
            "/v1/batches",
            Some(body),
            &[("authorization", &auth)],
        )
        .await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn get_as(&self, tenant: &str, path: &str) -> TestResponse {
        let auth = format!("Bearer key-{tenant}");
        self.call(Method::GET, path, None, &[("authorization", &auth)])
            .await
    }

    pub async fn post_as(&self, tenant: &str, path: &str) -> TestResponse {
        let auth = format!("Bearer key-{tenant}");
        self.call(Method::POST, path, None, &[("authorization", &auth)])
            .await
    }

    pub async fn retrieve(&self, id: &str) -> TestResponse {
        self.get(&format!("/v1/batches/{id}")).await
    }

    pub async fn cancel(&self, id: &str) -> TestResponse {
        self.call(Method::POST, &format!("/v1/batches/{id}/cancel"), None, &[])
            .await
    }

    pub fn requests_sent(&self) -> u64 {
        self.dynamodb_requests
            .as_ref()
            .expect("a DynamoDB backend")
            .get()
    }
}

/// The body of a valid create request.
pub fn create_body(input_file_id: &str) -> Value {
    json!({
        "input_file_id": input_file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    })
}

pub fn with_key(mut body: Value, key: &str) -> Value {
    body["idempotency_key"] = json!(key);
    body
}

pub async fn fresh_stores(backend: Backend) -> TestStores {
    fresh_stores_with_quotas(backend, Quotas::UNLIMITED).await
}

/// Fresh storage whose batch store enforces `quotas`.
pub async fn fresh_stores_with_quotas(backend: Backend, quotas: Quotas) -> TestStores {
    let local_blobs = || {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let blobs: Arc<dyn BlobStore> =
            Arc::new(LocalBlobStore::open_dir(dir.path()).expect("blob dir"));
        (blobs, Some(dir))
    };
    match backend {
        Backend::Embedded => {
            let (blobs, dir) = local_blobs();
            let store_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
            // On disk, as `cargo run` uses it: readers apart from the writer, WAL.
            let store = Arc::new(
                EmbeddedStore::open(store_dir.path())
                    .expect("embedded store")
                    .with_quotas(quotas),
            );
            TestStores {
                batches: store.clone(),
                files: store,
                blobs,
                dynamodb_requests: None,
                _blob_dir: dir,
                _store_dir: Some(store_dir),
            }
        }
        Backend::Moto | Backend::Dynalite => {
            let store = Arc::new(fresh_dynamo_store(backend).await.with_quotas(quotas));
            let counter = store.requests().clone();
            // moto serves S3 too; dynalite is DynamoDB only.
            let (blobs, dir) = if backend == Backend::Moto {
                (
                    Arc::new(fresh_bucket(backend).await) as Arc<dyn BlobStore>,
                    None,
                )
            } else {
                local_blobs()
            };
            TestStores {
                batches: store.clone(),
                files: store,
                blobs,
                dynamodb_requests: Some(counter),
                _blob_dir: dir,
                _store_dir: None,
            }
        }
    }
}

/// A fresh S3 bucket on the backend's endpoint.
pub async fn fresh_bucket(backend: Backend) -> S3BlobStore {
    let config = sdk_config(backend).await;
    let bucket = format!("lb-test-{}", uuid::Uuid::new_v4().simple());
    let store = S3BlobStore::new(&config, &bucket);
    store
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket");
    store
}

pub async fn sdk_config(backend: Backend) -> aws_config::SdkConfig {
    let variable = backend.endpoint_variable();
    let endpoint = std::env::var(variable).unwrap_or_else(|_| {
        panic!(
            "{variable} is not set: run the suite with scripts/test.sh, which starts the emulators"
        )
    });
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await
}

/// A fresh key store of one backend (its own table for DynamoDB backends; a
/// data directory on disk, kept as long as the second value, for embedded).
pub async fn fresh_key_store(
    backend: Backend,
) -> (Arc<dyn KeyStore>, Option<Arc<tempfile::TempDir>>) {
    match backend {
        Backend::Embedded => {
            let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
            let store = EmbeddedStore::open(dir.path()).expect("embedded store");
            (Arc::new(store), Some(dir))
        }
        Backend::Moto | Backend::Dynalite => (Arc::new(fresh_dynamo_store(backend).await), None),
    }
}

pub async fn fresh_dynamo_store(backend: Backend) -> DynamoStore {
    let config = sdk_config(backend).await;
    let table = format!("batches-{}", uuid::Uuid::new_v4().simple());
    create_table_from_template(&aws_sdk_dynamodb::Client::new(&config), &table).await;
    DynamoStore::new(&config, table)
}

/// Creates `table` as `template.yaml`'s `BatchesTable` defines it.
pub async fn create_table_from_template(client: &aws_sdk_dynamodb::Client, table: &str) {
    create_table_with_indexes(client, table, |_| true).await;
}

/// Creates `table` as `template.yaml`'s `BatchesTable` defines it, with only the
/// indexes `keep` names (a table as an older template built it).
pub async fn create_table_with_indexes(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keep: fn(&str) -> bool,
) {
    let template: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml"))
            .expect("template.yaml"),
    )
    .expect("template.yaml is YAML");
    let properties = &template["Resources"]["BatchesTable"]["Properties"];
    let text = |v: &serde_yaml::Value| v.as_str().expect("a string").to_string();
    let key_schema = |v: &serde_yaml::Value| -> Vec<KeySchemaElement> {
        v.as_sequence()
            .expect("KeySchema")
            .iter()
            .map(|k| {
                KeySchemaElement::builder()
                    .attribute_name(text(&k["AttributeName"]))
                    .key_type(KeyType::from(text(&k["KeyType"]).as_str()))
                    .build()
                    .expect("key schema element")
            })
            .collect()
    };
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::from(text(&properties["BillingMode"]).as_str()))
        .set_key_schema(Some(key_schema(&properties["KeySchema"])));
    for attribute in properties["AttributeDefinitions"]
        .as_sequence()
        .expect("AttributeDefinitions")
    {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(text(&attribute["AttributeName"]))
                .attribute_type(ScalarAttributeType::from(
                    text(&attribute["AttributeType"]).as_str(),
                ))
                .build()
                .expect("attribute definition"),
        );
    }
    for index in properties["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("GlobalSecondaryIndexes")
        .iter()
        .filter(|index| keep(&text(&index["IndexName"])))
    {
        let non_key = index["Projection"]["NonKeyAttributes"]
            .as_sequence()
            .map(|names| names.iter().map(text).collect());
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(text(&index["IndexName"]))
                .set_key_schema(Some(key_schema(&index["KeySchema"])))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(
                            text(&index["Projection"]["ProjectionType"]).as_str(),
                        ))
                        .set_non_key_attributes(non_key)
                        .build(),
                )
                .build()
                .expect("GSI"),
        );
    }
    if let Some(view) = properties["StreamSpecification"]["StreamViewType"].as_str() {
        request = request.stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::from(view))
                .build()
                .expect("stream specification"),
        );
    }
    request.send().await.expect("CreateTable");
    // dynalite creates tables asynchronously: poll until ACTIVE.
    for _ in 0..200 {
        let status = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("DescribeTable")
            .table
            .and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("table {table} never became ACTIVE");
}
