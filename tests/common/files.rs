//! Helpers for the file and upload endpoints: multipart bodies, raw responses,
//! and what the blob store holds.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{TestApp, TestResponse};

pub const BOUNDARY: &str = "lb-test-boundary-7MA4YWxkTrZu0gW";

/// One field of a `multipart/form-data` body.
pub enum Field<'a> {
    Text(&'a str, &'a str),
    File {
        name: &'a str,
        filename: &'a str,
        content: &'a [u8],
    },
}

/// A `multipart/form-data` body with [`BOUNDARY`], fields in the order given.
pub fn multipart(fields: &[Field]) -> Vec<u8> {
    let mut body = Vec::new();
    for field in fields {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match field {
            Field::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}")
                        .as_bytes(),
                );
            }
            Field::File {
                name,
                filename,
                content,
            } => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(content);
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A body that arrives in 64 KiB chunks, each a moment after the last, as
/// over a socket: a parser that reads whatever is ready (multer) then hands
/// the handler many chunks rather than one.
pub fn chunked(bytes: Vec<u8>) -> Body {
    use futures::StreamExt;
    let chunks: Vec<Bytes> = bytes
        .chunks(64 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    Body::from_stream(futures::stream::iter(chunks).then(|chunk| async move {
        tokio::task::yield_now().await;
        Ok::<_, std::convert::Infallible>(chunk)
    }))
}

pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }
}

fn auth_header(tenant: Option<&str>) -> Option<String> {
    tenant.map(|t| format!("Bearer key-{t}"))
}

impl TestApp {
    pub async fn send_raw(&self, request: Request<Body>) -> RawResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        RawResponse {
            status,
            headers,
            body,
        }
    }

    /// POSTs a multipart form to `path`, as `tenant` when given.
    pub async fn post_form(
        &self,
        tenant: Option<&str>,
        path: &str,
        fields: &[Field<'_>],
    ) -> TestResponse {
        let mut request = Request::builder().method(Method::POST).uri(path).header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        );
        if let Some(auth) = auth_header(tenant) {
            request = request.header("authorization", auth);
        }
        self.send(request.body(chunked(multipart(fields))).expect("request"))
            .await
    }

    /// `POST /v1/files` the way the SDKs send it: purpose, then the file.
    pub async fn upload_file(&self, purpose: &str, filename: &str, content: &[u8]) -> TestResponse {
        self.upload_file_as(None, purpose, filename, content).await
    }

    pub async fn upload_file_as(
        &self,
        tenant: Option<&str>,
        purpose: &str,
        filename: &str,
        content: &[u8],
    ) -> TestResponse {
        self.post_form(
            tenant,
            "/v1/files",
            &[
                Field::Text("purpose", purpose),
                Field::File {
                    name: "file",
                    filename,
                    content,
                },
            ],
        )
        .await
    }

    /// `GET /v1/files/{id}/content`, as raw bytes.
    pub async fn content(&self, tenant: Option<&str>, id: &str) -> RawResponse {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(format!("/v1/files/{id}/content"));
        if let Some(auth) = auth_header(tenant) {
            request = request.header("authorization", auth);
        }
        self.send_raw(request.body(Body::empty()).expect("request"))
            .await
    }

    pub async fn delete(&self, tenant: Option<&str>, path: &str) -> TestResponse {
        let auth = auth_header(tenant);
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        self.call(Method::DELETE, path, None, &headers).await
    }

    pub async fn post_json(&self, tenant: Option<&str>, path: &str, body: &Value) -> TestResponse {
        let auth = auth_header(tenant);
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        self.call(Method::POST, path, Some(body), &headers).await
    }

    /// `POST /v1/uploads` for `bytes` bytes.
    pub async fn create_upload(&self, purpose: &str, bytes: usize) -> TestResponse {
        self.post_json(
            None,
            "/v1/uploads",
            &json!({"filename": "big.jsonl", "purpose": purpose, "bytes": bytes, "mime_type": "application/jsonl"}),
        )
        .await
    }

    pub async fn add_part(&self, upload_id: &str, data: &[u8]) -> TestResponse {
        self.post_form(
            None,
            &format!("/v1/uploads/{upload_id}/parts"),
            &[Field::File {
                name: "data",
                filename: "blob",
                content: data,
            }],
        )
        .await
    }

    pub async fn complete_upload(&self, upload_id: &str, part_ids: &[String]) -> TestResponse {
        self.post_json(
            None,
            &format!("/v1/uploads/{upload_id}/complete"),
            &json!({ "part_ids": part_ids }),
        )
        .await
    }

    /// Every object in the blob store, and for a local directory also any
    /// temporary file an unfinished write left behind.
    pub async fn stored_objects(&self) -> Vec<String> {
        let mut keys = self.blobs.list("").await.expect("list blobs");
        if let Some(dir) = &self.blob_dir {
            let temp = dir.path().join(".tmp");
            if let Ok(entries) = std::fs::read_dir(&temp) {
                for entry in entries.flatten() {
                    keys.push(format!(".tmp/{}", entry.file_name().to_string_lossy()));
                }
            }
        }
        keys
    }
}

/// `n` valid request lines of a chat-completions batch, newline-terminated.
pub fn batch_lines(n: usize) -> Vec<u8> {
    let mut content = Vec::new();
    for i in 0..n {
        content.extend_from_slice(
            format!(
                "{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi {i}\"}}]}}}}\n"
            )
            .as_bytes(),
        );
    }
    content
}

/// About `bytes` bytes of valid batch lines (each line padded to ~1 KiB).
pub fn batch_file_of_size(bytes: usize) -> Vec<u8> {
    let pad = "x".repeat(900);
    let mut content = Vec::with_capacity(bytes + 1024);
    let mut i = 0;
    while content.len() < bytes {
        content.extend_from_slice(
            format!(
                "{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{pad}\"}}]}}}}\n"
            )
            .as_bytes(),
        );
        i += 1;
    }
    content
}
