//! The Uploads API (a file in parts) through the real Router, on every backend.

mod common;

use axum::http::StatusCode;
use common::files::{batch_file_of_size, batch_lines};
use common::{Backend, TestApp};
use serde_json::{json, Value};

suite!(
    [embedded, moto, dynalite],
    [
        given_a_file_over_10_mb_in_4_mb_parts_when_completed_then_one_file_holds_them_in_order,
        given_parts_sent_out_of_order_then_part_ids_decide_the_order,
        given_parts_that_do_not_add_up_to_bytes_then_400_and_no_file,
        given_a_bad_batch_file_in_parts_then_400_names_the_line_and_no_file,
        given_a_wrong_md5_then_400_and_the_right_one_completes,
        given_unknown_or_foreign_part_ids_then_400,
        given_a_cancelled_upload_then_parts_are_gone_and_nothing_more_is_accepted,
        given_a_completed_upload_then_it_cannot_be_completed_or_cancelled_again,
        given_an_upload_past_its_hour_then_it_is_expired,
        given_bad_create_requests_then_400_naming_the_field,
        given_unknown_uploads_or_another_tenant_then_404,
    ]
);

fn part_id(response: &common::TestResponse) -> String {
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(response.body["object"], "upload.part");
    let id = response.id();
    assert!(id.starts_with("part_"), "{id}");
    id
}

/// Creates an upload of `content` and adds it in parts of `part_size`.
async fn upload_in_parts(
    app: &TestApp,
    purpose: &str,
    content: &[u8],
    part_size: usize,
) -> (String, Vec<String>) {
    let created = app.create_upload(purpose, content.len()).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let upload_id = created.id();
    let mut parts = Vec::new();
    for chunk in content.chunks(part_size) {
        let part = app.add_part(&upload_id, chunk).await;
        assert_eq!(part.body["upload_id"], json!(upload_id));
        parts.push(part_id(&part));
    }
    (upload_id, parts)
}

fn file_ids(listing: &Value) -> Vec<String> {
    listing["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|f| f["id"].as_str().expect("id").to_string())
        .collect()
}

async fn given_a_file_over_10_mb_in_4_mb_parts_when_completed_then_one_file_holds_them_in_order(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let content = batch_file_of_size(10 * 1024 * 1024 + 300_000);
    let created = app.create_upload("batch", content.len()).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let upload = &created.body;
    let created_at = common::START_MS / 1000;
    assert_eq!(upload["object"], "upload");
    assert_eq!(upload["status"], "pending");
    assert_eq!(upload["bytes"], content.len());
    assert_eq!(upload["filename"], "big.jsonl");
    assert_eq!(upload["purpose"], "batch");
    assert_eq!(upload["created_at"], created_at);
    assert_eq!(upload["expires_at"], created_at + 3600);
    assert!(upload["file"].is_null());
    let upload_id = created.id();
    assert!(upload_id.starts_with("upload_"));

    let mut parts = Vec::new();
    for chunk in content.chunks(4 * 1024 * 1024) {
        parts.push(part_id(&app.add_part(&upload_id, chunk).await));
    }
    assert_eq!(parts.len(), 3);
    let completed = app.complete_upload(&upload_id, &parts).await;

    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    assert_eq!(completed.body["status"], "completed");
    assert_eq!(completed.body["id"], json!(upload_id));
    let file = &completed.body["file"];
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], content.len());
    assert_eq!(file["filename"], "big.jsonl");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["expires_at"], created_at + 30 * 86_400);
    let file_id = file["id"].as_str().expect("file id").to_string();

    assert_eq!(app.get(&format!("/v1/files/{file_id}")).await.body, *file);
    let read = app.content(None, &file_id).await;
    if read.status == StatusCode::TEMPORARY_REDIRECT {
        let location = read.headers["location"].to_str().expect("URL");
        let fetched = reqwest::get(location)
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body");
        assert!(fetched.as_ref() == content.as_slice(), "content differs");
    } else {
        assert_eq!(read.status, StatusCode::OK);
        assert!(read.body.as_ref() == content.as_slice(), "content differs");
    }
    // The parts are gone; only the file's bytes remain. No upload in the listing.
    let objects = app.stored_objects().await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert!(objects[0].starts_with("files/"), "{objects:?}");
    assert_eq!(file_ids(&app.get("/v1/files").await.body), vec![file_id]);
}

async fn given_parts_sent_out_of_order_then_part_ids_decide_the_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (first, second) = (b"{\"n\":1}\n".as_slice(), b"{\"n\":2}\n".as_slice());
    let created = app.create_upload("batch", first.len() + second.len()).await;
    let upload_id = created.id();
    let second_id = part_id(&app.add_part(&upload_id, second).await);
    let first_id = part_id(&app.add_part(&upload_id, first).await);

    let completed = app
        .complete_upload(&upload_id, &[first_id, second_id])
        .await;

    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    let file_id = completed.body["file"]["id"].as_str().expect("file id");
    assert_eq!(
        app.content(None, file_id).await.body.as_ref(),
        b"{\"n\":1}\n{\"n\":2}\n"
    );
}

async fn given_parts_that_do_not_add_up_to_bytes_then_400_and_no_file(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let content = batch_lines(4);
    for declared in [content.len() + 1, content.len() - 1] {
        let created = app.create_upload("batch", declared).await;
        let upload_id = created.id();
        let parts = vec![part_id(&app.add_part(&upload_id, &content).await)];

        let response = app.complete_upload(&upload_id, &parts).await;

        let error = response.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(error["param"], "bytes", "{error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("bytes={declared}")),
            "{error}"
        );
        // Still pending: the client may send the right parts.
        let cancel = app
            .post_json(None, &format!("/v1/uploads/{upload_id}/cancel"), &json!({}))
            .await;
        assert_eq!(cancel.body["status"], "cancelled", "{}", cancel.body);
    }
    assert_eq!(app.get("/v1/files").await.body["data"], json!([]));
    assert_eq!(app.stored_objects().await, Vec::<String>::new());
}

async fn given_a_bad_batch_file_in_parts_then_400_names_the_line_and_no_file(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut content = b"\n42\n".to_vec();
    content.extend(batch_lines(3));
    let (upload_id, parts) = upload_in_parts(&app, "batch", &content, 100).await;

    let response = app.complete_upload(&upload_id, &parts).await;

    let error = response.expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(
        error["message"],
        "Invalid file format for Batch API. Must be .jsonl: line 2, the first request, is not a JSON object."
    );
    assert_eq!(error["code"], "invalid_file_format");
    assert_eq!(app.get("/v1/files").await.body["data"], json!([]));
    let objects = app.stored_objects().await;
    assert!(
        objects.iter().all(|key| key.starts_with("uploads/")),
        "only the parts may remain: {objects:?}"
    );
    // The same bytes as another purpose are not checked.
    let (other, other_parts) = upload_in_parts(&app, "user_data", &content, 100).await;
    let completed = app.complete_upload(&other, &other_parts).await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    assert!(completed.body["file"]["expires_at"].is_null());
    // A bad line after the first is for the batch's validation to report, as
    // OpenAI does: the upload completes.
    let mut later = batch_lines(3);
    later.extend_from_slice(b"\n42\n");
    let (upload_id, parts) = upload_in_parts(&app, "batch", &later, 100).await;
    let completed = app.complete_upload(&upload_id, &parts).await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    assert_eq!(completed.body["file"]["bytes"], later.len() as u64);
}

async fn given_a_wrong_md5_then_400_and_the_right_one_completes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let content = b"{\"a\":1}\n";
    let (upload_id, parts) = upload_in_parts(&app, "batch", content, 4).await;
    let path = format!("/v1/uploads/{upload_id}/complete");

    let wrong = app
        .post_json(
            None,
            &path,
            &json!({"part_ids": parts, "md5": "00000000000000000000000000000000"}),
        )
        .await;
    assert_eq!(wrong.expect_error(StatusCode::BAD_REQUEST)["param"], "md5");
    assert_eq!(app.get("/v1/files").await.body["data"], json!([]));

    // `python3 -c 'import hashlib; print(hashlib.md5(b"{\"a\":1}\\n").hexdigest())'`
    let right = app
        .post_json(
            None,
            &path,
            &json!({"part_ids": parts, "md5": "4588FF3797B78D819D858FA3BDD82B09"}),
        )
        .await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
    assert_eq!(right.body["status"], "completed");
}

async fn given_unknown_or_foreign_part_ids_then_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (upload_id, parts) = upload_in_parts(&app, "batch", b"{}\n", 10).await;
    let (_, foreign_parts) = upload_in_parts(&app, "batch", b"{}\n", 10).await;
    for (part_ids, param) in [
        (
            vec![
                parts[0].clone(),
                "part_00000000000000000000000000000000".to_string(),
            ],
            "part_ids[1]",
        ),
        (vec![foreign_parts[0].clone()], "part_ids[0]"),
        (vec!["file-1".to_string()], "part_ids[0]"),
        (vec![parts[0].clone(), parts[0].clone()], "part_ids[1]"),
    ] {
        let response = app.complete_upload(&upload_id, &part_ids).await;
        let error = response.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(error["param"], param, "{error}");
    }
    let no_parts = app.complete_upload(&upload_id, &[]).await;
    no_parts.expect_error(StatusCode::BAD_REQUEST);
    // After all that, the right parts still complete it.
    let completed = app.complete_upload(&upload_id, &parts).await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
}

async fn given_a_cancelled_upload_then_parts_are_gone_and_nothing_more_is_accepted(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (upload_id, parts) = upload_in_parts(&app, "batch", &batch_lines(2), 50).await;
    assert!(!app.stored_objects().await.is_empty());
    let cancel_path = format!("/v1/uploads/{upload_id}/cancel");

    let cancelled = app.post_json(None, &cancel_path, &json!({})).await;

    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert!(cancelled.body["file"].is_null());
    assert_eq!(app.stored_objects().await, Vec::<String>::new());
    let again = app.post_json(None, &cancel_path, &json!({})).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, cancelled.body);
    let part = app.add_part(&upload_id, b"{}\n").await;
    assert_eq!(
        part.expect_error(StatusCode::CONFLICT)["code"],
        "invalid_status"
    );
    let complete = app.complete_upload(&upload_id, &parts).await;
    let error = complete.expect_error(StatusCode::CONFLICT);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is cancelled"),
        "{error}"
    );
    assert_eq!(complete.headers["x-should-retry"], "false");
    assert_eq!(app.stored_objects().await, Vec::<String>::new());
}

async fn given_a_completed_upload_then_it_cannot_be_completed_or_cancelled_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (upload_id, parts) = upload_in_parts(&app, "batch", b"{}\n", 10).await;
    let completed = app.complete_upload(&upload_id, &parts).await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);

    app.complete_upload(&upload_id, &parts)
        .await
        .expect_error(StatusCode::CONFLICT);
    app.post_json(None, &format!("/v1/uploads/{upload_id}/cancel"), &json!({}))
        .await
        .expect_error(StatusCode::CONFLICT);
    assert_eq!(
        app.get("/v1/files").await.body["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

async fn given_an_upload_past_its_hour_then_it_is_expired(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (upload_id, parts) = upload_in_parts(&app, "batch", b"{}\n", 10).await;
    app.clock.advance_ms(3_600_000);

    let part = app.add_part(&upload_id, b"{}\n").await;
    let error = part.expect_error(StatusCode::CONFLICT);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is expired"),
        "{error}"
    );
    app.complete_upload(&upload_id, &parts)
        .await
        .expect_error(StatusCode::CONFLICT);
    let cancel = app
        .post_json(None, &format!("/v1/uploads/{upload_id}/cancel"), &json!({}))
        .await;
    cancel.expect_error(StatusCode::CONFLICT);
}

async fn given_bad_create_requests_then_400_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let valid = json!({"filename": "f.jsonl", "purpose": "batch", "bytes": 10, "mime_type": "application/jsonl"});
    for (field, value, param) in [
        ("purpose", json!("batch_output"), "purpose"),
        ("bytes", json!(201 * 1024 * 1024), "bytes"),
        ("bytes", json!(-5), "bytes"),
        ("filename", json!(""), "filename"),
        (
            "expires_after",
            json!({"anchor": "created_at", "seconds": 1}),
            "expires_after.seconds",
        ),
    ] {
        let mut body = valid.clone();
        body[field] = value;
        let response = app.post_json(None, "/v1/uploads", &body).await;
        assert_eq!(
            response.expect_error(StatusCode::BAD_REQUEST)["param"],
            param
        );
    }
    let not_json = app
        .call(
            axum::http::Method::POST,
            "/v1/uploads",
            None,
            &[("content-type", "application/json")],
        )
        .await;
    not_json.expect_error(StatusCode::BAD_REQUEST);
    // A part that is not multipart, and a form without `data`.
    let upload_id = app.create_upload("batch", 3).await.id();
    app.post_json(
        None,
        &format!("/v1/uploads/{upload_id}/parts"),
        &json!({"data": "x"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST);
    let no_data = app
        .post_form(
            None,
            &format!("/v1/uploads/{upload_id}/parts"),
            &[common::files::Field::Text("other", "x")],
        )
        .await;
    assert_eq!(
        no_data.expect_error(StatusCode::BAD_REQUEST)["param"],
        "data"
    );
    app.post_json(
        None,
        &format!("/v1/uploads/{upload_id}/complete"),
        &json!({"part_ids": "all"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST);
}

async fn given_unknown_uploads_or_another_tenant_then_404(backend: Backend) {
    let app = TestApp::spawn_with_tenants(backend, &["a", "b"]).await;
    let created = app
        .post_json(
            Some("a"),
            "/v1/uploads",
            &json!({"filename": "f", "purpose": "user_data", "bytes": 1, "mime_type": "text/plain"}),
        )
        .await;
    let upload_id = created.id();
    for id in [
        upload_id.as_str(),
        "upload_00000000000000000000000000000000",
        "nope",
    ] {
        for action in ["complete", "cancel"] {
            let response = app
                .post_json(
                    Some("b"),
                    &format!("/v1/uploads/{id}/{action}"),
                    &json!({"part_ids": []}),
                )
                .await;
            let error = response.expect_error(StatusCode::NOT_FOUND);
            assert_eq!(error["param"], "id");
        }
        let part = app
            .post_form(
                Some("b"),
                &format!("/v1/uploads/{id}/parts"),
                &[common::files::Field::File {
                    name: "data",
                    filename: "d",
                    content: b"x",
                }],
            )
            .await;
        part.expect_error(StatusCode::NOT_FOUND);
    }
    // The owner still can.
    let part = app
        .post_form(
            Some("a"),
            &format!("/v1/uploads/{upload_id}/parts"),
            &[common::files::Field::File {
                name: "data",
                filename: "d",
                content: b"x",
            }],
        )
        .await;
    assert_eq!(part.status, StatusCode::OK, "{}", part.body);
}

// --- DynamoDB requests per call, on moto -------------------------------------

async fn count<F: std::future::Future<Output = T>, T>(app: &TestApp, call: F) -> (u64, T) {
    let before = app.requests_sent();
    let response = call.await;
    (app.requests_sent() - before, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_each_upload_call_costs_the_fewest_dynamodb_requests() {
    let app = TestApp::spawn(Backend::Moto).await;
    let (create, created) = count(&app, app.create_upload("batch", 6)).await;
    let upload_id = created.id();
    let (part, added) = count(&app, app.add_part(&upload_id, b"{}\n{}\n")).await;
    let parts = vec![part_id(&added)];
    let (complete, completed) = count(&app, app.complete_upload(&upload_id, &parts)).await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    let other = app.create_upload("batch", 6).await.id();
    let (cancel, _) = count(
        &app,
        app.post_json(None, &format!("/v1/uploads/{other}/cancel"), &json!({})),
    )
    .await;

    // complete: read the upload, write the file, move the upload to completed.
    assert_eq!((create, part, complete, cancel), (1, 1, 3, 1));
}

/// The part route has its own body limit (64 MB, OpenAI's); above it the
/// answer is a 413 in the envelope, and nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_part_over_64_mib_then_413_and_nothing_stored() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let upload_id = app.create_upload("user_data", 1).await.id();
    // Just over the part limit, and over the route's body limit as well.
    for size in [64 * 1024 * 1024 + 1, 65 * 1024 * 1024] {
        let data = vec![b'x'; size];

        let response = app.add_part(&upload_id, &data).await;

        let error = response.expect_error(StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error["code"], "request_too_large");
        assert_eq!(app.stored_objects().await, Vec::<String>::new());
    }
    let at_the_limit = app
        .add_part(&upload_id, &vec![b'x'; 64 * 1024 * 1024])
        .await;
    assert_eq!(at_the_limit.status, StatusCode::OK, "{}", at_the_limit.body);
}

/// Regression (found by schemathesis): `part_ids` allowed 10,000 ids, but the
/// 64 KiB body limit cut a completion off at ~900 long ones with a 413. Now the
/// most parts allowed, each with the longest id allowed, fit in one body and are
/// answered on their merits, and one more is a 400 naming `part_ids`.
#[tokio::test]
async fn given_max_parts_of_the_longest_ids_then_the_completion_fits_the_body_limit() {
    use lambda_batches::api::MAX_BODY_BYTES;
    use lambda_batches::domain::upload::{MAX_PARTS, MAX_PART_ID_CHARS};

    let app = TestApp::spawn(Backend::Embedded).await;
    let upload_id = app.create_upload("batch", 3).await.id();
    let longest_ids = |count: usize| -> Vec<String> {
        (0..count)
            .map(|n| format!("part_{n:0>width$}", width = MAX_PART_ID_CHARS - 5))
            .collect()
    };
    let body = |ids: Vec<String>| json!({"part_ids": ids, "md5": "0".repeat(32)});

    let most = body(longest_ids(MAX_PARTS));
    // Even pretty-printed, as some clients send it.
    let pretty = serde_json::to_string_pretty(&most).expect("json");
    assert!(pretty.len() < MAX_BODY_BYTES, "{} bytes", pretty.len());
    let request = axum::http::Request::post(format!("/v1/uploads/{upload_id}/complete"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(pretty))
        .expect("request");
    let response = app.send(request).await;
    let error = response.expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(error["param"], "part_ids[0]", "{error}");

    let too_many = app
        .post_json(
            None,
            &format!("/v1/uploads/{upload_id}/complete"),
            &body(longest_ids(MAX_PARTS + 1)),
        )
        .await;
    let error = too_many.expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(error["param"], "part_ids", "{error}");
}
