//! The sample API Gateway (HTTP API v2) events in `events/`, fed through the real
//! Lambda request path: `lambda_http` parses each one, the Router answers it.

mod common;

use axum::http::StatusCode;
use base64::Engine;
use common::{Backend, TestApp};
use lambda_batches::domain::{IdempotencyKey, TenantId};

fn event(name: &str) -> lambda_http::Request {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&json)
        .unwrap_or_else(|e| panic!("{path} is not an API Gateway event: {e}"))
}

async fn send(app: &TestApp, name: &str) -> common::TestResponse {
    let (parts, body) = event(name).into_parts();
    app.send(axum::http::Request::from_parts(
        parts,
        axum::body::Body::new(body),
    ))
    .await
}

#[tokio::test]
async fn given_the_sample_events_when_replayed_in_order_then_each_gets_its_documented_answer() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let expected_id = IdempotencyKey::parse("demo-key-1")
        .expect("key")
        .batch_id(&TenantId::default_tenant())
        .to_string();

    let created = send(&app, "create_batch.json").await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(
        created.id(),
        expected_id,
        "events/retrieve_batch.json and cancel_batch.json use this id"
    );
    assert_eq!(created.body["metadata"]["project"], "demo");

    let again = send(&app, "create_batch_again.json").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, created.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    let retrieved = send(&app, "retrieve_batch.json").await;
    assert_eq!(retrieved.body, created.body);

    let listed = send(&app, "list_batches.json").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["data"][0]["id"], expected_id.as_str());
    assert_eq!(listed.body["has_more"], false);

    let cancelled = send(&app, "cancel_batch.json").await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelling");
}

/// An event as the API Lambda receives it, through its real handler.
async fn answer(app: &TestApp, event: &serde_json::Value) -> serde_json::Value {
    let payload = serde_json::from_value(event.clone()).expect("an API Gateway event");
    let event = lambda_http::LambdaEvent::new(payload, lambda_http::Context::default());
    let answer = lambda_batches::api::lambda::answer(app.router.clone(), event)
        .await
        .expect("infallible");
    serde_json::to_value(answer).expect("a Lambda response")
}

fn create_event() -> serde_json::Value {
    let path = format!("{}/events/create_batch.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("event")).expect("JSON")
}

async fn expect_invalid_event(app: &TestApp, event: &serde_json::Value) {
    let response = answer(app, event).await;
    assert_eq!(response["statusCode"], 400, "{response}");
    let body: serde_json::Value =
        serde_json::from_str(response["body"].as_str().expect("a text body")).expect("JSON");
    assert_eq!(body["error"]["code"], "invalid_event", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].is_string());
}

// Found by fuzz/fuzz_targets/apigw_event.rs: lambda_http panicked decoding this body.
#[tokio::test]
async fn given_an_event_whose_body_is_marked_base64_but_is_not_when_answered_then_400_in_the_envelope(
) {
    let app = TestApp::spawn(Backend::Embedded).await;
    let mut event = create_event();
    event["isBase64Encoded"] = true.into();
    event["body"] = "LS1sYi1mdXp6files_b1lPSJpbnB1dC5qc29ubCINCkNvb".into();

    expect_invalid_event(&app, &event).await;
}

// Found by fuzz/fuzz_targets/apigw_event.rs: lambda_http panicked parsing this host.
#[tokio::test]
async fn given_an_event_whose_host_is_not_a_host_when_answered_then_400_in_the_envelope() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let mut event = create_event();
    event["headers"]["host"] = "r4nd0m1d42%execute-api.us-east-1.amazonaws.com".into();

    expect_invalid_event(&app, &event).await;
}

#[tokio::test]
async fn given_an_event_with_a_base64_body_when_answered_then_the_router_gets_the_decoded_body() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let mut event = create_event();
    let body = event["body"].as_str().expect("a body").to_string();
    event["isBase64Encoded"] = true.into();
    event["body"] = base64::engine::general_purpose::STANDARD
        .encode(body)
        .into();

    let response = answer(&app, &event).await;

    assert_eq!(response["statusCode"], 200, "{response}");
    let batch: serde_json::Value =
        serde_json::from_str(response["body"].as_str().expect("a text body")).expect("JSON");
    assert_eq!(batch["metadata"]["project"], "demo");
}

/// The JWT sample with its authorizer claims edited (or removed, with `None`).
fn jwt_event_with_claims(claims: Option<serde_json::Value>) -> lambda_http::Request {
    let path = format!(
        "{}/events/create_batch_jwt.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the JWT sample"))
            .expect("JSON");
    match claims {
        Some(claims) => json["requestContext"]["authorizer"]["jwt"]["claims"] = claims,
        None => {
            json["requestContext"]
                .as_object_mut()
                .expect("a request context")
                .remove("authorizer");
        }
    }
    lambda_http::request::from_str(&json.to_string()).expect("still an API Gateway event")
}

async fn send_request(app: &TestApp, request: lambda_http::Request) -> common::TestResponse {
    let (parts, body) = request.into_parts();
    app.send(axum::http::Request::from_parts(
        parts,
        axum::body::Body::new(body),
    ))
    .await
}

fn jwt_app_auth(claim: &str) -> lambda_batches::config::AuthConfig {
    lambda_batches::config::AuthConfig::Jwt {
        tenant_claim: claim.to_string(),
    }
}

#[tokio::test]
async fn given_jwt_mode_when_the_authorizer_verified_a_token_then_its_sub_claim_is_the_tenant() {
    let app = TestApp::spawn_with_auth(Backend::Embedded, jwt_app_auth("sub")).await;

    let created = send(&app, "create_batch_jwt.json").await;

    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let acme = TenantId::parse("acme-prod").expect("tenant");
    let id = lambda_batches::domain::BatchId::parse(&created.id()).expect("a batch id");
    let now = common::START_MS / 1000;
    assert!(app.store.get(&acme, &id, now).await.expect("get").is_some());
    let default = TenantId::default_tenant();
    assert!(app
        .store
        .get(&default, &id, now)
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn given_jwt_mode_when_the_configured_claim_names_the_tenant_then_that_claim_is_used() {
    let app = TestApp::spawn_with_auth(Backend::Embedded, jwt_app_auth("custom:tenant")).await;
    let claims = serde_json::json!({"sub": "someone", "custom:tenant": "team-b"});

    let created = send_request(&app, jwt_event_with_claims(Some(claims))).await;

    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let id = lambda_batches::domain::BatchId::parse(&created.id()).expect("a batch id");
    let team_b = TenantId::parse("team-b").expect("tenant");
    let stored = app.store.get(&team_b, &id, common::START_MS / 1000).await;
    assert!(stored.expect("get").is_some());
}

#[tokio::test]
async fn given_jwt_mode_when_the_claim_is_missing_or_not_a_tenant_name_then_401() {
    let app = TestApp::spawn_with_auth(Backend::Embedded, jwt_app_auth("sub")).await;
    for claims in [
        None,
        Some(serde_json::json!({})),
        Some(serde_json::json!({"aud": "lambda-batches"})),
        Some(serde_json::json!({"sub": "a tenant/with spaces"})),
        Some(serde_json::json!({"sub": ""})),
    ] {
        let response = send_request(&app, jwt_event_with_claims(claims.clone())).await;
        let error = response.expect_error(StatusCode::UNAUTHORIZED);
        assert_eq!(error["code"], "invalid_api_key", "{claims:?}");
    }
}

/// With `AuthMode=jwt` API Gateway checks the token on every operation of the
/// API's OpenAPI body; a route added to the function's events but not there
/// would skip the check (and the function would answer 401 for want of claims).
#[test]
fn given_the_template_then_every_http_api_route_carries_the_jwt_security_requirement() {
    let template: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml"))
            .expect("template.yaml"),
    )
    .expect("YAML");
    let paths = &template["Resources"]["BatchesApi"]["Properties"]["DefinitionBody"]["paths"];
    let events = template["Resources"]["BatchesApiFunction"]["Properties"]["Events"]
        .as_mapping()
        .expect("events");
    let mut routes = 0;
    for (name, event) in events {
        if event["Type"].as_str() != Some("HttpApi") {
            continue;
        }
        let path = event["Properties"]["Path"].as_str().expect("a path");
        let method = match event["Properties"]["Method"].as_str().expect("a method") {
            "ANY" => "x-amazon-apigateway-any-method".to_string(),
            other => other.to_lowercase(),
        };
        assert!(
            paths[path][method.as_str()].get("security").is_some(),
            "event {name:?} ({method} {path}) has no security requirement in BatchesApi's DefinitionBody"
        );
        routes += 1;
    }
    assert!(routes >= 5, "the template's routes were not found");
}

#[tokio::test]
async fn given_jwt_mode_when_the_api_lambda_handler_answers_the_jwt_sample_then_the_claim_is_the_tenant(
) {
    let app = TestApp::spawn_with_auth(Backend::Embedded, jwt_app_auth("sub")).await;
    let path = format!(
        "{}/events/create_batch_jwt.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("event")).expect("JSON");

    let response = answer(&app, &event).await;

    assert_eq!(response["statusCode"], 200, "{response}");
    let batch: serde_json::Value =
        serde_json::from_str(response["body"].as_str().expect("a text body")).expect("JSON");
    let id = lambda_batches::domain::BatchId::parse(batch["id"].as_str().expect("an id"))
        .expect("a batch id");
    let acme = TenantId::parse("acme-prod").expect("tenant");
    let stored = app.store.get(&acme, &id, common::START_MS / 1000).await;
    assert!(stored.expect("get").is_some());
}
