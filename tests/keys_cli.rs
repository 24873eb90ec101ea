//! `lambda-batches keys …` against the store the server uses: create a key,
//! use it, revoke it, and see the server refuse it, on the embedded store and
//! on DynamoDB (moto, dynalite).

mod common;

use common::binary::{wait_until, BinaryEnv};
use common::Backend;
use reqwest::StatusCode;

suite!(
    [embedded, moto, dynalite],
    [given_the_keys_cli_when_a_key_is_created_used_and_revoked_then_the_server_follows]
);

async fn list_status(base: &str, key: Option<&str>) -> StatusCode {
    let mut request = reqwest::Client::new().get(format!("{base}/v1/batches"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("GET /v1/batches").status()
}

/// The value of `field` in `keys create`'s `field<TAB>value` lines.
fn field<'a>(output: &'a str, field: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix('\t'))
        .unwrap_or_else(|| panic!("no {field} in {output:?}"))
}

async fn given_the_keys_cli_when_a_key_is_created_used_and_revoked_then_the_server_follows(
    backend: Backend,
) {
    let mut env = BinaryEnv::fresh(backend).await;
    env.set("BATCHES_AUTH_CACHE_SECS", "1");

    // No key yet: the local server is open, as the default tenant.
    let open = env.serve().await;
    assert_eq!(list_status(&open.base, None).await, StatusCode::OK);
    drop(open);

    let created = env.run_ok(&["keys", "create", "--tenant", "acme", "--name", "ci"]);
    let (key, key_id) = (field(&created, "api_key"), field(&created, "key_id"));
    assert!(key.starts_with("lb-"), "{created}");
    assert_eq!(field(&created, "tenant"), "acme");

    let listed = env.run_ok(&["keys", "list", "--tenant", "acme"]);
    assert!(
        listed.contains(&format!("{key_id}\tacme\tci\t")),
        "{listed}"
    );
    assert!(listed.trim_end().ends_with("\t-"), "active: {listed}");
    assert!(!listed.contains(key), "keys list must never show a secret");
    let others = env.run_ok(&["keys", "list", "--tenant", "globex"]);
    assert!(!others.contains(key_id), "{others}");

    // A key exists: the same server now requires one.
    let server = env.serve().await;
    assert_eq!(
        list_status(&server.base, None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        list_status(&server.base, Some("lb-made-up")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(list_status(&server.base, Some(key)).await, StatusCode::OK);

    let revoked = env.run_ok(&["keys", "revoke", key_id]);
    assert!(revoked.contains(key_id), "{revoked}");
    wait_until("the revoked key is refused", || async {
        list_status(&server.base, Some(key)).await == StatusCode::UNAUTHORIZED
    })
    .await;

    let listed = env.run_ok(&["keys", "list"]);
    let line = listed
        .lines()
        .find(|line| line.starts_with(key_id))
        .unwrap_or_else(|| panic!("{key_id} not listed: {listed}"));
    let revoked_at = line.rsplit('\t').next().expect("a revoked_at column");
    assert!(revoked_at.parse::<i64>().is_ok(), "revoked: {line}");

    let again = env.run_ok(&["keys", "revoke", key_id]);
    assert!(again.contains("already revoked"), "{again}");
    let unknown = env.run(&["keys", "revoke", "key_000000000000000000000000"]);
    assert!(!unknown.status.success());
    let bad_name = env.run(&["keys", "create", "--tenant", "acme", "--name", "a\nb"]);
    assert!(!bad_name.status.success());
}

#[tokio::test]
async fn given_no_keys_when_the_server_binds_beyond_loopback_then_it_warns_that_it_is_open() {
    let mut env = BinaryEnv::fresh(Backend::Embedded).await;
    env.set("BATCHES_HOST", "0.0.0.0");

    let server = env.serve().await;

    wait_until("the open-server warning is logged", || async {
        String::from_utf8_lossy(&server.output()).contains("authentication is off")
    })
    .await;
}

#[tokio::test]
async fn given_no_keys_on_loopback_when_the_server_starts_then_it_does_not_warn() {
    let env = BinaryEnv::fresh(Backend::Embedded).await;

    let server = env.serve().await;
    wait_until("the start-up line is logged", || async {
        String::from_utf8_lossy(&server.output()).contains("lambda-batches listening")
    })
    .await;

    let output = server.stop();
    assert!(!String::from_utf8_lossy(&output).contains("authentication is off"));
}
