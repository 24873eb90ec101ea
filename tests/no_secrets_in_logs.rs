//! The real server at `RUST_LOG=trace` never writes a secret: not the API key,
//! not the `Authorization` header, not the upstream key, not the content of a
//! user's request lines, whatever path a batch takes.

mod common;
#[path = "../examples/fake_upstream.rs"]
mod fake_upstream;

use common::binary::{wait_until, BinaryEnv};
use common::Backend;
use fake_upstream::FakeConfig;
use serde_json::{json, Value};

fn line(custom_id: &str, model: &str, content: &str, extra: Value) -> String {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": content}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})
        .to_string()
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn upload(&self, content: String) -> String {
        const BOUNDARY: &str = "no-secrets-boundary-5dY1dGVzdA";
        let body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\n\
             Content-Type: application/jsonl\r\n\r\n{content}\r\n--{BOUNDARY}--\r\n"
        );
        let file: Value = self
            .http
            .post(format!("{}/v1/files", self.base))
            .bearer_auth(&self.key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .expect("upload")
            .json()
            .await
            .expect("file JSON");
        file["id"].as_str().expect("a file id").to_string()
    }

    async fn create(&self, input_file_id: &str) -> String {
        let batch: Value = self
            .http
            .post(format!("{}/v1/batches", self.base))
            .bearer_auth(&self.key)
            .json(
                &json!({"input_file_id": input_file_id, "endpoint": "/v1/chat/completions",
                          "completion_window": "24h"}),
            )
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("batch JSON");
        batch["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no batch id: {batch}"))
            .to_string()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET")
    }

    async fn status(&self, batch_id: &str) -> Value {
        let batch: Value = self
            .get(&format!("/v1/batches/{batch_id}"))
            .await
            .json()
            .await
            .unwrap_or(Value::Null);
        batch
    }
}

#[tokio::test]
async fn given_trace_logging_when_batches_run_then_no_key_header_or_line_content_is_logged() {
    let upstream = fake_upstream::start(FakeConfig::default()).await;
    let mut env = BinaryEnv::fresh(Backend::Embedded).await;
    let upstream_key = format!("sk-upstream-{}", uuid::Uuid::new_v4().simple());
    env.set("RUST_LOG", "trace")
        .set("UPSTREAM_BASE_URL", &upstream.base_url())
        .set("UPSTREAM_API_KEY", &upstream_key);
    let created = env.run_ok(&["keys", "create", "--tenant", "acme", "--name", "ci"]);
    let key = created
        .lines()
        .find_map(|l| l.strip_prefix("api_key\t"))
        .expect("an api_key line")
        .to_string();
    let server = env.serve().await;
    let client = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        key: key.clone(),
    };
    let mark = uuid::Uuid::new_v4().simple().to_string();
    let (succeeds, fails, invalid) = (
        format!("ok-line-{mark}"),
        format!("failing-line-{mark}"),
        format!("unknown-model-{mark}"),
    );

    // One batch that runs: a line that succeeds and one the upstream refuses.
    let input = [
        line("a", "fake-model", &succeeds, json!({})),
        line("b", "fake-model", &fails, json!({"fail_with": 400})),
    ]
    .join("\n");
    let ran = client.create(&client.upload(input).await).await;
    // One that fails validation, naming a model made of user content.
    let invalid_input = line("c", &invalid, &invalid, json!({}));
    let failed = client.create(&client.upload(invalid_input).await).await;
    wait_until("both batches end", || async {
        client.status(&ran).await["status"] == "completed"
            && client.status(&failed).await["status"] == "failed"
    })
    .await;
    let batch = client.status(&ran).await;
    for file in ["output_file_id", "error_file_id"] {
        let id = batch[file].as_str().expect("a result file");
        let content = client.get(&format!("/v1/files/{id}/content")).await;
        assert!(content.status().is_success());
        let _ = content.text().await;
    }
    // Requests that fail authentication are logged too.
    let refused = reqwest::Client::new()
        .get(format!("{}/v1/batches", server.base))
        .bearer_auth(format!("{key}-tampered"))
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);

    let output = String::from_utf8_lossy(&server.stop()).into_owned();

    // The log is really at trace level, and really covers these requests.
    assert!(output.contains("TRACE"), "no trace output:\n{output}");
    assert!(output.contains(&ran), "the batch's id appears in its logs");
    let secrets = [
        ("the API key", key.clone()),
        ("the API key's random part", key["lb-".len()..].to_string()),
        ("the upstream key", upstream_key.clone()),
        ("the line content", mark.clone()),
    ];
    for (what, secret) in secrets {
        if let Some(at) = output.find(&secret) {
            let start = output[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = output[at..].find('\n').map_or(output.len(), |i| at + i);
            panic!("{what} is in the log:\n{}", &output[start..end]);
        }
    }
}
