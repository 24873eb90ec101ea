//! Property tests over the upload paths: no multipart body, however hostile
//! (random bytes, unknown or repeated fields, broken boundaries, cut short),
//! earns a 5xx from `POST /v1/files` or `POST /v1/uploads/{id}/parts`, and no
//! JSON body one from `POST /v1/uploads` or `/complete`.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::files::{chunked, multipart, Field, BOUNDARY};
use common::{Backend, TestApp};
use proptest::prelude::*;
use serde_json::{json, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A form field: a known or odd name, and text or file content that is
/// sometimes valid JSONL and sometimes anything at all.
fn any_field() -> impl Strategy<Value = (String, bool, Vec<u8>)> {
    let name = prop_oneof![
        Just("purpose".to_string()),
        Just("file".to_string()),
        Just("data".to_string()),
        Just("expires_after[anchor]".to_string()),
        Just("expires_after[seconds]".to_string()),
        "[ -~]{0,20}",
    ];
    let content = prop_oneof![
        Just(b"batch".to_vec()),
        Just(b"user_data".to_vec()),
        Just(b"created_at".to_vec()),
        Just(b"3600".to_vec()),
        Just(b"{}\n{\"a\":1}\n".to_vec()),
        Just(b"\xEF\xBB\xBF{}\r\n\r\n[1]\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..300),
        "[ -~\n]{0,200}".prop_map(String::into_bytes),
    ];
    (name, any::<bool>(), content)
}

/// How the body reaches the server: whole, cut short, or with a bad boundary.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(usize),
    WrongBoundary,
    NoContentType,
}

fn any_damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => Just(Damage::None),
        2 => (0usize..2_000).prop_map(Damage::Truncate),
        1 => Just(Damage::WrongBoundary),
        1 => Just(Damage::NoContentType),
    ]
}

fn form_request(path: &str, fields: &[(String, bool, Vec<u8>)], damage: &Damage) -> Request<Body> {
    let parts: Vec<Field> = fields
        .iter()
        .map(|(name, is_file, content)| {
            if *is_file {
                Field::File {
                    name,
                    filename: "f.jsonl",
                    content,
                }
            } else {
                Field::Text(name, std::str::from_utf8(content).unwrap_or("\u{fffd}"))
            }
        })
        .collect();
    let mut body = multipart(&parts);
    let mut content_type = Some(format!("multipart/form-data; boundary={BOUNDARY}"));
    match damage {
        Damage::None => {}
        Damage::Truncate(at) => body.truncate(*at),
        Damage::WrongBoundary => content_type = Some("multipart/form-data; boundary=other".into()),
        Damage::NoContentType => content_type = None,
    }
    let mut request = Request::builder().method(Method::POST).uri(path);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.body(chunked(body)).expect("request")
}

fn assert_client_outcome(response: &common::TestResponse) -> Result<(), TestCaseError> {
    prop_assert!(
        !response.status.is_server_error(),
        "{}: {}",
        response.status,
        response.body
    );
    if !response.status.is_success() {
        response.expect_error(response.status);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn hostile_file_forms_never_earn_a_5xx_and_refusals_store_nothing(
        fields in prop::collection::vec(any_field(), 0..5),
        damage in any_damage(),
    ) {
        let rt = runtime();
        let app = rt.block_on(TestApp::spawn(Backend::Embedded));
        let response = rt.block_on(app.send(form_request("/v1/files", &fields, &damage)));
        assert_client_outcome(&response)?;
        let stored = rt.block_on(app.stored_objects());
        if response.status == StatusCode::OK {
            prop_assert_eq!(stored.len(), 1);
        } else {
            prop_assert!(stored.is_empty(), "{:?} left after {}", stored, response.body);
        }
    }

    #[test]
    fn hostile_part_forms_never_earn_a_5xx(
        fields in prop::collection::vec(any_field(), 0..4),
        damage in any_damage(),
    ) {
        let rt = runtime();
        let app = rt.block_on(TestApp::spawn(Backend::Embedded));
        let upload = rt.block_on(app.create_upload("batch", 100));
        prop_assert_eq!(upload.status, StatusCode::OK);
        let path = format!("/v1/uploads/{}/parts", upload.id());
        let response = rt.block_on(app.send(form_request(&path, &fields, &damage)));
        assert_client_outcome(&response)?;
        if response.status != StatusCode::OK {
            prop_assert!(rt.block_on(app.stored_objects()).is_empty());
        }
    }

    #[test]
    fn random_bytes_as_a_form_never_earn_a_5xx(body in prop::collection::vec(any::<u8>(), 0..2_000)) {
        let rt = runtime();
        let app = rt.block_on(TestApp::spawn(Backend::Embedded));
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/files")
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(chunked(body))
            .expect("request");
        let response = rt.block_on(app.send(request));
        assert_client_outcome(&response)?;
    }

    #[test]
    fn hostile_upload_json_never_earns_a_5xx(
        create in any_json_object(&["filename", "purpose", "bytes", "mime_type", "expires_after"]),
        complete in any_json_object(&["part_ids", "md5"]),
    ) {
        let rt = runtime();
        let app = rt.block_on(TestApp::spawn(Backend::Embedded));
        let created = rt.block_on(app.post_json(None, "/v1/uploads", &create));
        assert_client_outcome(&created)?;
        let upload = rt.block_on(app.create_upload("batch", 3));
        let path = format!("/v1/uploads/{}/complete", upload.id());
        let completed = rt.block_on(app.post_json(None, &path, &complete));
        assert_client_outcome(&completed)?;
    }
}

/// Objects with the given field names, each absent, plausible, or any JSON.
fn any_json_object(names: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        Just(json!(3)),
        Just(json!("batch")),
        Just(json!(["part_abc", "part_def"])),
        Just(json!({"anchor": "created_at", "seconds": 3600})),
        "[ -~]{0,40}".prop_map(Value::from),
        prop::collection::vec("[ -~]{0,12}".prop_map(Value::from), 0..4).prop_map(Value::from),
    ];
    prop::collection::vec(prop::option::of(value), names.len()).prop_map(move |values| {
        Value::Object(
            names
                .iter()
                .zip(values)
                .filter_map(|(name, value)| value.map(|v| (name.to_string(), v)))
                .collect(),
        )
    })
}
