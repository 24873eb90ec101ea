//! `/openapi.json` and the Router describe the same API: every route the Router
//! serves is documented, with the same methods and the same authentication,
//! and every documented operation is served. (tests/contract runs schemathesis
//! against the built binary, with this document.)

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Backend, TestApp};
use lambda_batches::config::AuthConfig;
use lambda_batches::domain::TenantId;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp) -> Value {
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(response.headers["content-type"], "application/json");
    response.body
}

/// path template → documented methods (lower case).
fn operations(document: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("path item")
                .keys()
                .filter(|key| METHODS.contains(&key.as_str()))
                .cloned()
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// The paths in the Router's own route table. axum offers no listing, but its
/// `Debug` output prints the table (`RouteId(n): "/path"`); if that output ever
/// changes shape this finds nothing and the test fails, never passes vacuously.
fn served_paths(app: &TestApp) -> BTreeSet<String> {
    let debug = format!("{:?}", app.router);
    let table = debug
        .split("fallback_router")
        .next()
        .expect("split yields at least one part");
    table
        .split("RouteId(")
        .skip(1)
        .filter_map(|entry| {
            let (_, rest) = entry.split_once(")")?;
            let path = rest.strip_prefix(": \"")?;
            path.split_once('"').map(|(path, _)| path.to_string())
        })
        .collect()
}

/// A concrete path for a template: every `{param}` becomes `probe`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "probe"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn probe(app: &TestApp, method: &str, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"))
        .uri(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = app
        .send(request.body(Body::empty()).expect("request"))
        .await;
    (response.status, response.body)
}

fn answered_by_fallback(status: StatusCode, body: &Value) -> bool {
    let code = &body["error"]["code"];
    (status == StatusCode::NOT_FOUND && code == "unknown_url")
        || (status == StatusCode::METHOD_NOT_ALLOWED && code == "method_not_allowed")
}

#[tokio::test]
async fn given_the_router_then_it_serves_exactly_the_documented_paths() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let documented: BTreeSet<String> = operations(&document(&app).await).into_keys().collect();
    let served = served_paths(&app);
    assert!(
        served.contains("/v1/batches") && served.contains("/health"),
        "could not read the Router's route table: {served:?}"
    );
    assert_eq!(served, documented);
    assert!(documented.contains("/openapi.json"));
}

#[tokio::test]
async fn given_each_documented_path_then_its_documented_methods_reach_a_handler_and_others_are_405()
{
    let app = TestApp::spawn(Backend::Embedded).await;
    let operations = operations(&document(&app).await);
    assert!(operations.len() >= 12, "{operations:?}");
    for (template, methods) in &operations {
        let path = concrete(template);
        for method in METHODS {
            let (status, body) = probe(&app, method, &path, None).await;
            if methods.contains(method) {
                assert!(
                    !answered_by_fallback(status, &body),
                    "{method} {template} is documented but not served: {status} {body}"
                );
            } else {
                assert_eq!(
                    (status, &body["error"]["code"]),
                    (
                        StatusCode::METHOD_NOT_ALLOWED,
                        &Value::from("method_not_allowed")
                    ),
                    "{method} {template} is served but not documented: {body}"
                );
            }
        }
    }
    // axum answers HEAD wherever GET is served (OpenAPI leaves HEAD implied);
    // OPTIONS is served nowhere.
    for (template, methods) in &operations {
        let path = concrete(template);
        let (status, _) = probe(&app, "head", &path, None).await;
        assert_eq!(
            status != StatusCode::METHOD_NOT_ALLOWED,
            methods.contains("get"),
            "HEAD {template}: {status}"
        );
        let (status, body) = probe(&app, "options", &path, None).await;
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "OPTIONS {template}: {body}"
        );
    }
    let (status, body) = probe(&app, "get", "/v1/undocumented", None).await;
    assert!(answered_by_fallback(status, &body), "{status} {body}");
}

#[tokio::test]
async fn given_keys_then_exactly_the_operations_documented_with_security_require_one() {
    let tenant = TenantId::parse("a").expect("tenant");
    let app = TestApp::spawn_with_auth(
        Backend::Embedded,
        AuthConfig::StaticKeys(vec![("key-a".to_string(), tenant)]),
    )
    .await;
    let document = document(&app).await;
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let global = &document["security"];
    for (template, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            // An operation's own `security` overrides the document's; `[{}]` is none.
            let security = operation.get("security").unwrap_or(global);
            let needs_key = security
                .as_array()
                .expect("security list")
                .iter()
                .any(|requirement| requirement.get("bearer").is_some());
            let (status, body) = probe(&app, method, &concrete(template), None).await;
            if needs_key {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {template}: {body}"
                );
                let (status, body) = probe(&app, method, &concrete(template), Some("key-a")).await;
                assert_ne!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {template}: {body}"
                );
            } else {
                assert_eq!(status, StatusCode::OK, "{method} {template}: {body}");
            }
        }
    }
}

#[tokio::test]
async fn given_the_document_then_every_reference_resolves_and_operation_ids_are_unique() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let document = document(&app).await;
    assert_eq!(document["openapi"], "3.1.0");

    fn refs(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target.clone());
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {target}"));
        assert!(
            document["components"]["schemas"].get(name).is_some(),
            "{target} does not resolve"
        );
    }

    let mut ids = BTreeSet::new();
    for item in document["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("path item").values() {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
        }
    }
}

/// The request schemas describe what the hand-written parsers accept, and the
/// enums list what the domain knows.
#[tokio::test]
async fn given_the_document_then_request_schemas_and_enums_match_the_domain() {
    use lambda_batches::domain::create::KNOWN_FIELDS;
    use lambda_batches::domain::upload::CREATE_FIELDS;
    use lambda_batches::domain::{BatchStatus, Endpoint, FilePurpose};

    let app = TestApp::spawn(Backend::Embedded).await;
    let document = document(&app).await;
    let schemas = &document["components"]["schemas"];
    let properties = |name: &str| -> BTreeSet<String> {
        schemas[name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has properties"))
            .keys()
            .cloned()
            .collect()
    };
    let strings =
        |items: &[&str]| -> BTreeSet<String> { items.iter().map(|s| s.to_string()).collect() };
    let enumeration = |name: &str| -> BTreeSet<String> {
        schemas[name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an enum"))
            .iter()
            .map(|v| v.as_str().expect("string").to_string())
            .collect()
    };

    assert_eq!(properties("CreateBatchRequest"), strings(&KNOWN_FIELDS));
    assert_eq!(properties("CreateUploadRequest"), strings(&CREATE_FIELDS));
    for closed in [
        "CreateBatchRequest",
        "CreateUploadRequest",
        "CompleteUploadRequest",
    ] {
        assert_eq!(schemas[closed]["additionalProperties"], false, "{closed}");
    }
    let endpoints: Vec<&str> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(enumeration("EndpointName"), strings(&endpoints));
    let purposes: Vec<&str> = FilePurpose::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(enumeration("FilePurpose"), strings(&purposes));
    let uploadable: Vec<&str> = FilePurpose::ALL
        .iter()
        .filter(|p| p.is_uploadable())
        .map(|p| p.as_str())
        .collect();
    assert_eq!(enumeration("UploadPurpose"), strings(&uploadable));
    let statuses: Vec<&str> = BatchStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(enumeration("BatchStatus"), strings(&statuses));
}
