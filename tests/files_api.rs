//! The Files API through the real Router, on every backend: the embedded store
//! with local blobs, moto (DynamoDB and S3) and dynalite (with local blobs).

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::files::{batch_file_of_size, batch_lines, Field};
use common::{fresh_stores, Backend, TestApp};
use lambda_batches::api::FileSettings;
use lambda_batches::config::AuthConfig;
use lambda_batches::domain::batch_file::BatchFileLimits;
use serde_json::{json, Value};

suite!(
    [embedded, moto, dynalite],
    [
        given_a_batch_file_when_uploaded_then_it_is_retrieved_read_and_deleted,
        given_files_of_two_purposes_when_listed_then_purpose_order_after_and_limit_apply,
        given_bad_list_parameters_then_400_naming_them,
        given_two_tenants_then_neither_sees_the_others_files,
        given_crlf_bom_blank_lines_and_no_final_newline_then_the_batch_file_is_accepted_byte_for_byte,
        given_an_empty_file_or_a_bad_first_line_then_400_and_nothing_is_stored,
        given_bad_lines_after_the_first_then_the_batch_file_is_accepted_as_openai_does,
        given_the_file_before_the_purpose_then_the_batch_check_still_decides,
        given_more_than_50000_requests_then_the_file_is_refused_at_request_50001,
        given_a_lowered_size_limit_then_a_larger_batch_file_is_refused_but_other_purposes_are_not,
        given_a_bad_form_then_400_naming_the_field_and_nothing_is_stored,
        given_expiry_settings_then_expires_at_follows_them_and_expired_files_are_gone,
        given_a_file_larger_than_the_inline_limit_then_s3_redirects_and_local_streams,
        given_a_file_over_the_64_kib_api_limit_then_the_upload_route_still_takes_it,
    ]
);

fn assert_file_object(file: &Value) {
    for field in [
        "id",
        "object",
        "bytes",
        "created_at",
        "expires_at",
        "filename",
        "purpose",
        "status",
        "status_details",
    ] {
        assert!(file.get(field).is_some(), "missing {field} in {file}");
    }
    assert_eq!(file["object"], "file");
    assert_eq!(file["status"], "processed");
    assert!(file["status_details"].is_null());
    assert!(file["id"].as_str().unwrap_or_default().starts_with("file-"));
}

async fn given_a_batch_file_when_uploaded_then_it_is_retrieved_read_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let content = batch_lines(3);

    let created = app.upload_file("batch", "input.jsonl", &content).await;

    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_file_object(&created.body);
    let id = created.id();
    let created_at = common::START_MS / 1000;
    assert_eq!(created.body["bytes"], content.len());
    assert_eq!(created.body["filename"], "input.jsonl");
    assert_eq!(created.body["purpose"], "batch");
    assert_eq!(created.body["created_at"], created_at);
    assert_eq!(created.body["expires_at"], created_at + 30 * 86_400);

    let retrieved = app.get(&format!("/v1/files/{id}")).await;
    assert_eq!(retrieved.status, StatusCode::OK);
    assert_eq!(retrieved.body, created.body);

    let read = app.content(None, &id).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.headers["content-type"], "application/octet-stream");
    assert_eq!(read.body.as_ref(), content.as_slice());

    let deleted = app.delete(None, &format!("/v1/files/{id}")).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(
        deleted.body,
        json!({"id": id, "object": "file", "deleted": true})
    );

    let error = app
        .get(&format!("/v1/files/{id}"))
        .await
        .expect_error(StatusCode::NOT_FOUND)
        .clone();
    assert_eq!(error["message"], format!("No such File object: {id}"));
    assert_eq!(app.content(None, &id).await.status, StatusCode::NOT_FOUND);
    app.delete(None, &format!("/v1/files/{id}"))
        .await
        .expect_error(StatusCode::NOT_FOUND);
    assert!(app.stored_objects().await.is_empty(), "bytes left behind");
    assert_eq!(app.get("/v1/files").await.body["data"], json!([]));
}

async fn given_files_of_two_purposes_when_listed_then_purpose_order_after_and_limit_apply(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let purpose = if n % 2 == 0 { "batch" } else { "user_data" };
        let created = app
            .upload_file(purpose, &format!("f{n}.jsonl"), &batch_lines(1))
            .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.body);
        ids.push(created.id());
        // Two files in the same second still list in creation order.
        app.clock.advance_ms(1);
    }
    // A batch in the same table must never appear among the files, nor a file
    // among the batches.
    let batch = app.create(&common::create_body(&ids[0])).await;
    assert_eq!(batch.status, StatusCode::OK);
    let batches = app.get("/v1/batches").await;
    assert_eq!(batches.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(batches.body["data"][0]["id"], json!(batch.id()));
    let listed = |path: String| {
        let app = &app;
        async move {
            let page = app.get(&path).await;
            assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
            let ids: Vec<String> = page.body["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|f| f["id"].as_str().expect("id").to_string())
                .collect();
            (ids, page.body)
        }
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    let (all, page) = listed("/v1/files".into()).await;
    assert_eq!(all, newest_first);
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], false);
    assert_eq!(page["first_id"], json!(newest_first[0]));
    assert_eq!(page["last_id"], json!(newest_first[4]));

    let (ascending, _) = listed("/v1/files?order=asc".into()).await;
    assert_eq!(ascending, ids);

    let (batch, _) = listed("/v1/files?purpose=batch".into()).await;
    assert_eq!(batch, vec![ids[4].clone(), ids[2].clone(), ids[0].clone()]);
    let (user_data, _) = listed("/v1/files?purpose=user_data&order=asc".into()).await;
    assert_eq!(user_data, vec![ids[1].clone(), ids[3].clone()]);
    let (none, _) = listed("/v1/files?purpose=vision".into()).await;
    assert!(none.is_empty());

    // Paging: every file once, exact has_more.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => "/v1/files?limit=2".to_string(),
            Some(a) => format!("/v1/files?limit=2&after={a}"),
        };
        let (page_ids, page) = listed(path).await;
        seen.extend(page_ids.clone());
        if page["has_more"] == false {
            break;
        }
        assert_eq!(page_ids.len(), 2);
        after = page["last_id"].as_str().map(str::to_string);
    }
    assert_eq!(seen, newest_first);

    // `after` with a purpose and ascending order.
    let (after_first_batch, page) = listed(format!(
        "/v1/files?purpose=batch&order=asc&after={}&limit=1",
        ids[0]
    ))
    .await;
    assert_eq!(after_first_batch, vec![ids[2].clone()]);
    assert_eq!(page["has_more"], true);
    // The cursor may be a file of another purpose: it is a position.
    let (after_user_data, _) = listed(format!("/v1/files?purpose=batch&after={}", ids[3])).await;
    assert_eq!(after_user_data, vec![ids[2].clone(), ids[0].clone()]);
}

async fn given_bad_list_parameters_then_400_naming_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=ten", "limit"),
        ("order=newest", "order"),
        ("purpose=nope", "purpose"),
        ("after=file-00000000000000000000000000000000", "after"),
        ("after=batch_1", "after"),
    ] {
        let response = app.get(&format!("/v1/files?{query}")).await;
        let error = response.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(error["param"], param, "{query}: {error}");
    }
    assert_eq!(
        app.get("/v1/files?limit=10000").await.status,
        StatusCode::OK
    );
}

async fn given_two_tenants_then_neither_sees_the_others_files(backend: Backend) {
    let app = TestApp::spawn_with_tenants(backend, &["a", "b"]).await;
    let created = app
        .upload_file_as(Some("a"), "user_data", "mine.txt", b"secret")
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let id = created.id();

    app.get_as("b", &format!("/v1/files/{id}"))
        .await
        .expect_error(StatusCode::NOT_FOUND);
    assert_eq!(
        app.content(Some("b"), &id).await.status,
        StatusCode::NOT_FOUND
    );
    app.delete(Some("b"), &format!("/v1/files/{id}"))
        .await
        .expect_error(StatusCode::NOT_FOUND);
    let listed = app.get_as("b", "/v1/files").await;
    assert_eq!(listed.body["data"], json!([]));
    app.get_as("b", &format!("/v1/files?after={id}"))
        .await
        .expect_error(StatusCode::BAD_REQUEST);

    // Still there for its owner.
    assert_eq!(
        app.get_as("a", &format!("/v1/files/{id}")).await.status,
        StatusCode::OK
    );
    assert_eq!(app.content(Some("a"), &id).await.body.as_ref(), b"secret");
    // And no key means no access at all.
    app.get(&format!("/v1/files/{id}"))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
}

async fn given_crlf_bom_blank_lines_and_no_final_newline_then_the_batch_file_is_accepted_byte_for_byte(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    for content in [
        &b"{\"a\":1}\r\n{\"b\":2}\r\n"[..],
        b"\xEF\xBB\xBF{\"a\":1}\n",
        b"\n{\"a\":1}\n\n   \n{\"b\":2}\n\n",
        b"{\"a\":1}\n{\"b\":\"\xc3\xa9\"}",
    ] {
        let created = app.upload_file("batch", "in.jsonl", content).await;
        assert_eq!(
            created.status,
            StatusCode::OK,
            "{:?}: {}",
            String::from_utf8_lossy(content),
            created.body
        );
        assert_eq!(created.body["bytes"], content.len());
        assert_eq!(
            app.content(None, &created.id()).await.body.as_ref(),
            content
        );
    }
}

/// Asserts a 400 about the file's format naming `message`, and that nothing
/// (no record, no object, no temporary file) was kept.
async fn assert_refused_and_nothing_stored(
    app: &TestApp,
    response: &common::TestResponse,
    message: &str,
) {
    let error = response.expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(error["message"], message, "{error}");
    assert_eq!(error["param"], "file");
    assert_eq!(error["code"], "invalid_file_format");
    assert_eq!(app.get("/v1/files").await.body["data"], json!([]));
    assert_eq!(app.stored_objects().await, Vec::<String>::new());
}

/// OpenAI refuses at upload only a batch file that cannot be one at all: an
/// empty file, or a first request line that is not a JSON object.
async fn given_an_empty_file_or_a_bad_first_line_then_400_and_nothing_is_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let prefix = "Invalid file format for Batch API. Must be .jsonl";
    for (content, detail) in [
        (&b""[..], "the file is empty (no non-blank line)"),
        (b"\n \r\n", "the file is empty (no non-blank line)"),
        (
            b"\"just a string\"",
            "line 1, the first request, is not a JSON object",
        ),
        (
            b"{malformed json\n{}\n",
            "line 1, the first request, is not valid JSON",
        ),
        (
            b"\n[1, 2]\n{\"a\": 1}\n",
            "line 2, the first request, is not a JSON object",
        ),
        (
            b"{\"a\": \"\xff\xfe\"}\n{}\n",
            "line 1, the first request, is not valid UTF-8",
        ),
    ] {
        let response = app.upload_file("batch", "bad.jsonl", content).await;
        assert_refused_and_nothing_stored(&app, &response, &format!("{prefix}: {detail}.")).await;
    }
    // The same bytes are fine for a purpose that is not checked.
    let other = app.upload_file("user_data", "x.bin", b"\xff\xfe[1]").await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
}

/// Later lines are the validation stage's to report, with their line numbers
/// (tests/validation_stage.rs), as OpenAI reports them when the batch runs.
async fn given_bad_lines_after_the_first_then_the_batch_file_is_accepted_as_openai_does(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut content = batch_lines(2);
    // (A line over the length limit too: tests/validation_stage.rs uploads one.)
    content.extend_from_slice(b"{broken\n[1, 2]\n{\"a\": \"\xff\"}\n{\"custom_id\": 1}\n");

    let created = app.upload_file("batch", "later.jsonl", &content).await;

    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.body["bytes"], content.len() as u64);
    let read = app.content(None, &created.id()).await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(read.body.as_ref() == content.as_slice(), "byte for byte");
}

async fn given_the_file_before_the_purpose_then_the_batch_check_still_decides(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let form = |content: &'static [u8], purpose: &'static str| {
        let app = &app;
        async move {
            app.post_form(
                None,
                "/v1/files",
                &[
                    Field::File {
                        name: "file",
                        filename: "late.jsonl",
                        content,
                    },
                    Field::Text("purpose", purpose),
                ],
            )
            .await
        }
    };
    let bad = form(b"[]\n{}\n", "batch").await;
    assert_refused_and_nothing_stored(
        &app,
        &bad,
        "Invalid file format for Batch API. Must be .jsonl: line 1, the first request, is not a JSON object.",
    )
    .await;

    let good = form(b"{}\n{}\n", "batch").await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.body);
    assert_eq!(good.body["purpose"], "batch");
    let not_checked = form(b"[]\n{}\n", "fine-tune").await;
    assert_eq!(not_checked.status, StatusCode::OK, "{}", not_checked.body);
    assert_eq!(not_checked.body["purpose"], "fine-tune");
    assert!(not_checked.body["expires_at"].is_null());
}

async fn given_more_than_50000_requests_then_the_file_is_refused_at_request_50001(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    // A blank line first, so line numbers and request numbers differ by one.
    let mut content = b"\n".to_vec();
    content.extend(b"{}\n".repeat(50_000));
    let accepted = app.upload_file("batch", "max.jsonl", &content).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    let id = accepted.id();

    content.extend_from_slice(b"{}\n");
    let refused = app.upload_file("batch", "over.jsonl", &content).await;
    let error = refused.expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(
        error["message"],
        "A .jsonl file for the Batch API may hold at most 50000 requests: line 50002 is request number 50001."
    );
    // Only the first file was kept.
    let listed = app.get("/v1/files").await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.stored_objects().await.len(), 1, "{id} only");
}

async fn given_a_lowered_size_limit_then_a_larger_batch_file_is_refused_but_other_purposes_are_not(
    backend: Backend,
) {
    let settings = FileSettings {
        batch_file_limits: BatchFileLimits {
            max_bytes: 4_000,
            max_requests: 50_000,
        },
        ..FileSettings::default()
    };
    let app = TestApp::with_file_settings(
        fresh_stores(backend).await,
        AuthConfig::Open,
        None,
        settings,
    );
    let content = batch_file_of_size(5_000);
    let refused = app.upload_file("batch", "big.jsonl", &content).await;
    assert_refused_and_nothing_stored(
        &app,
        &refused,
        "The Batch API only supports .jsonl files of at most 4000 bytes: this file is larger.",
    )
    .await;
    let accepted = app.upload_file("evals", "big.jsonl", &content).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
}

async fn given_a_bad_form_then_400_naming_the_field_and_nothing_is_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let file = Field::File {
        name: "file",
        filename: "in.jsonl",
        content: b"{}\n",
    };
    let file2 = Field::File {
        name: "file",
        filename: "in.jsonl",
        content: b"{}\n",
    };
    let cases: Vec<(Vec<Field>, &str)> = vec![
        (vec![Field::Text("purpose", "batch")], "file"),
        (
            vec![Field::File {
                name: "file",
                filename: "in.jsonl",
                content: b"{}\n",
            }],
            "purpose",
        ),
        (
            vec![
                Field::Text("purpose", "batch_output"),
                Field::File {
                    name: "file",
                    filename: "in.jsonl",
                    content: b"{}\n",
                },
            ],
            "purpose",
        ),
        (
            vec![
                Field::File {
                    name: "file",
                    filename: "in.jsonl",
                    content: b"{}\n",
                },
                Field::Text("purpose", "pictures"),
            ],
            "purpose",
        ),
        (
            vec![
                Field::Text("purpose", "batch"),
                Field::Text("expires_after[anchor]", "last_access"),
                Field::Text("expires_after[seconds]", "3600"),
                Field::File {
                    name: "file",
                    filename: "in.jsonl",
                    content: b"{}\n",
                },
            ],
            "expires_after.anchor",
        ),
        (
            vec![
                Field::Text("purpose", "batch"),
                Field::Text("expires_after[anchor]", "created_at"),
                Field::Text("expires_after[seconds]", "59"),
                Field::File {
                    name: "file",
                    filename: "in.jsonl",
                    content: b"{}\n",
                },
            ],
            "expires_after.seconds",
        ),
        (
            vec![
                Field::Text("purpose", "batch"),
                Field::Text("expires_after[anchor]", "created_at"),
                Field::File {
                    name: "file",
                    filename: "in.jsonl",
                    content: b"{}\n",
                },
            ],
            "expires_after.seconds",
        ),
        (
            vec![
                Field::Text("purpose", "batch"),
                Field::Text("expires_after[seconds]", "a day"),
                Field::File {
                    name: "file",
                    filename: "in.jsonl",
                    content: b"{}\n",
                },
            ],
            "expires_after.anchor",
        ),
        (vec![Field::Text("purpose", "batch"), file, file2], "file"),
    ];
    for (fields, param) in cases {
        let response = app.post_form(None, "/v1/files", &fields).await;
        let error = response.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(error["param"], param, "{error}");
    }
    // Not multipart at all.
    let json = app
        .call(
            Method::POST,
            "/v1/files",
            Some(&json!({"purpose": "batch"})),
            &[],
        )
        .await;
    json.expect_error(StatusCode::BAD_REQUEST);
    // A truncated form.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={}", common::files::BOUNDARY),
        )
        .body(Body::from(format!(
            "--{}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbat",
            common::files::BOUNDARY
        )))
        .expect("request");
    app.send(request)
        .await
        .expect_error(StatusCode::BAD_REQUEST);

    assert_eq!(app.get("/v1/files").await.body["data"], json!([]));
    assert_eq!(app.stored_objects().await, Vec::<String>::new());
}

async fn given_expiry_settings_then_expires_at_follows_them_and_expired_files_are_gone(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let created_at = common::START_MS / 1000;
    let short = app
        .post_form(
            None,
            "/v1/files",
            &[
                Field::Text("purpose", "user_data"),
                Field::Text("expires_after[anchor]", "created_at"),
                Field::Text("expires_after[seconds]", "3600"),
                Field::File {
                    name: "file",
                    filename: "short.txt",
                    content: b"soon gone",
                },
            ],
        )
        .await;
    assert_eq!(short.status, StatusCode::OK, "{}", short.body);
    assert_eq!(short.body["expires_at"], created_at + 3600);
    let forever = app.upload_file("vision", "keep.png", b"\x89PNG").await;
    assert!(forever.body["expires_at"].is_null(), "{}", forever.body);

    app.clock.advance_ms(3_600_000);
    let id = short.id();
    app.get(&format!("/v1/files/{id}"))
        .await
        .expect_error(StatusCode::NOT_FOUND);
    assert_eq!(app.content(None, &id).await.status, StatusCode::NOT_FOUND);
    let listed = app.get("/v1/files").await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed.body["data"][0]["id"], json!(forever.id()));
}

async fn given_a_file_larger_than_the_inline_limit_then_s3_redirects_and_local_streams(
    backend: Backend,
) {
    let settings = FileSettings {
        inline_content_max_bytes: 1_024,
        ..FileSettings::default()
    };
    let app = TestApp::with_file_settings(
        fresh_stores(backend).await,
        AuthConfig::Open,
        None,
        settings,
    );
    let small = batch_lines(2);
    let large = batch_file_of_size(3_000);
    let small_id = app.upload_file("batch", "s.jsonl", &small).await.id();
    let large_id = app.upload_file("batch", "l.jsonl", &large).await.id();

    let inline = app.content(None, &small_id).await;
    assert_eq!(inline.status, StatusCode::OK);
    assert_eq!(inline.body.as_ref(), small.as_slice());

    let read = app.content(None, &large_id).await;
    if backend == Backend::Moto {
        assert_eq!(read.status, StatusCode::TEMPORARY_REDIRECT);
        let location = read.headers["location"].to_str().expect("a URL");
        assert!(location.contains("X-Amz-Expires=300"), "{location}");
        let fetched = reqwest::get(location).await.expect("GET the presigned URL");
        assert_eq!(fetched.status(), 200);
        assert_eq!(
            fetched.bytes().await.expect("body").as_ref(),
            large.as_slice()
        );
    } else {
        // A local directory streams any size.
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.body.as_ref(), large.as_slice());
    }
}

async fn given_a_file_over_the_64_kib_api_limit_then_the_upload_route_still_takes_it(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let content = batch_file_of_size(1024 * 1024);
    let created = app.upload_file("batch", "one-mib.jsonl", &content).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.body["bytes"], content.len());
    assert_eq!(
        app.content(None, &created.id()).await.body.as_ref(),
        content.as_slice()
    );
    // Other routes keep the small limit.
    let mut huge = common::create_body("file-1");
    huge["metadata"] = json!({"k": "x".repeat(70_000)});
    app.create(&huge)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE);
}

// --- S3 specifics, on moto ----------------------------------------------------

/// A file larger than one S3 part goes up as a multipart upload; refused, it
/// leaves neither an object nor an unfinished multipart upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_a_multipart_sized_file_round_trips_and_a_refused_one_leaves_no_upload_behind() {
    let mut stores = fresh_stores(Backend::Moto).await;
    let bucket = common::fresh_bucket(Backend::Moto).await;
    stores.blobs = std::sync::Arc::new(bucket.clone());
    let content = batch_file_of_size(20 * 1024 * 1024);
    // A request limit the file just meets, so one more line is refused at
    // its very end, with parts already written.
    let requests = content.iter().filter(|&&b| b == b'\n').count() as u64;
    let settings = FileSettings {
        batch_file_limits: BatchFileLimits {
            max_requests: requests,
            ..BatchFileLimits::OPENAI
        },
        ..FileSettings::default()
    };
    let app = TestApp::with_file_settings(stores, AuthConfig::Open, None, settings);

    let created = app.upload_file("batch", "twenty.jsonl", &content).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let read = app.content(None, &created.id()).await;
    // Above the default inline limit: a redirect to S3.
    assert_eq!(read.status, StatusCode::TEMPORARY_REDIRECT);
    let location = read.headers["location"].to_str().expect("URL");
    let fetched = reqwest::get(location)
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert!(fetched.as_ref() == content.as_slice(), "content differs");
    app.delete(None, &format!("/v1/files/{}", created.id()))
        .await;

    let mut bad = content.clone();
    bad.extend_from_slice(b"{}\n");
    let refused = app.upload_file("batch", "bad.jsonl", &bad).await;
    let error = refused.expect_error(StatusCode::BAD_REQUEST);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most")),
        "{error}"
    );
    assert_eq!(app.stored_objects().await, Vec::<String>::new());
    // The abort of the refused upload may run just after the answer.
    let mut pending = usize::MAX;
    for _ in 0..50 {
        pending = multipart_uploads(&bucket).await;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0, "an unfinished multipart upload was left behind");

    // The probe itself sees an unfinished upload (so the zero above means something).
    bucket
        .client()
        .create_multipart_upload()
        .bucket(bucket.bucket())
        .key("probe")
        .send()
        .await
        .expect("CreateMultipartUpload");
    assert_eq!(multipart_uploads(&bucket).await, 1);
}

async fn multipart_uploads(bucket: &lambda_batches::files::s3::S3BlobStore) -> usize {
    let uploads = bucket
        .client()
        .list_multipart_uploads()
        .bucket(bucket.bucket())
        .send()
        .await
        .expect("ListMultipartUploads");
    uploads.uploads.unwrap_or_default().len()
}

// --- DynamoDB requests per call, on moto -------------------------------------

async fn count<F: std::future::Future<Output = T>, T>(app: &TestApp, call: F) -> (u64, T) {
    let before = app.requests_sent();
    let response = call.await;
    (app.requests_sent() - before, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_moto_each_file_call_costs_the_fewest_dynamodb_requests() {
    let app = TestApp::spawn(Backend::Moto).await;
    let (create, created) = count(&app, app.upload_file("batch", "a.jsonl", b"{}\n")).await;
    let id = created.id();
    app.clock.advance_ms(1);
    app.upload_file("user_data", "b.txt", b"b").await;

    let (retrieve, _) = count(&app, app.get(&format!("/v1/files/{id}"))).await;
    let (missing, _) = count(
        &app,
        app.get("/v1/files/file-00000000000000000000000000000000"),
    )
    .await;
    let (malformed, _) = count(&app, app.get("/v1/files/not-a-file")).await;
    let (content, _) = count(&app, app.content(None, &id)).await;
    let (list, _) = count(&app, app.get("/v1/files")).await;
    let (list_purpose, _) = count(&app, app.get("/v1/files?purpose=batch")).await;
    let (list_after, _) = count(&app, app.get(&format!("/v1/files?order=asc&after={id}"))).await;
    let (refused, _) = count(&app, app.upload_file("batch", "bad.jsonl", b"[]\n")).await;
    let (delete, _) = count(&app, app.delete(None, &format!("/v1/files/{id}"))).await;

    assert_eq!((create, refused), (1, 0));
    assert_eq!((retrieve, missing, malformed, content), (1, 1, 0, 1));
    assert_eq!((list, list_purpose, list_after), (1, 1, 2));
    assert_eq!(delete, 1);
}
