//! Multipart uploads through the real Router: `POST /v1/files`, and a part of
//! an open upload (`POST /v1/uploads/{id}/parts`, then `/complete`).
//!
//! Input: `[options][multipart body...]`, sent with the boundary [`BOUNDARY`].
//! Options: bit 0 picks the route; bits 1-7 the size of the chunks the body
//! arrives in (1 to 128 bytes), so the parser meets every split point.
//!
//! Properties: never a 5xx, every rejection a 4xx in the OpenAI envelope, and
//! an accepted file reads back with the size it reported.

#![no_main]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use lambda_batches_fuzz::{chunked_body, runtime, App};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const BOUNDARY: &str = "lb-fuzz-boundary";

fuzz_target!(|data: &[u8]| {
    let [options, body @ ..] = data else {
        return;
    };
    let to_upload = options & 1 == 1;
    let chunk = usize::from(options >> 1) + 1;
    runtime().block_on(async {
        let app = App::fresh();
        let form = |path: &str| {
            Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(chunked_body(body.to_vec(), chunk))
                .expect("a request")
        };
        if !to_upload {
            let answer = app.send(form("/v1/files")).await;
            if answer.status == StatusCode::OK {
                let file = answer.json();
                let id = file["id"].as_str().expect("a file id");
                let content = app.send(get(&format!("/v1/files/{id}/content"))).await;
                assert_eq!(content.status, StatusCode::OK);
                assert_eq!(Some(content.body.len() as u64), file["bytes"].as_u64());
            }
            return;
        }
        let upload = app
            .send(json_post(
                "/v1/uploads",
                &json!({"filename": "f.jsonl", "purpose": "batch", "bytes": 64, "mime_type": "application/jsonl"}),
            ))
            .await;
        assert_eq!(upload.status, StatusCode::OK);
        let upload_id = upload.json()["id"].as_str().expect("an upload id").to_string();
        let part = app
            .send(form(&format!("/v1/uploads/{upload_id}/parts")))
            .await;
        if part.status == StatusCode::OK {
            let part_id = part.json()["id"].as_str().expect("a part id").to_string();
            // Usually the wrong size or not JSONL: a 4xx, but never a 5xx.
            app.send(json_post(
                &format!("/v1/uploads/{upload_id}/complete"),
                &json!({"part_ids": [part_id]}),
            ))
            .await;
        }
    });
});

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("a request")
}

fn json_post(path: &str, body: &serde_json::Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request")
}
