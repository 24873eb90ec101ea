//! The real `lambda-batches` binary, as an operator runs it: the server on a
//! free port, and the `keys` subcommands, over one store.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::Backend;

/// A hang guard for every wait, never a speed claim.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The environment that points the binary at one store (and nothing else of
/// the developer's environment).
#[derive(Clone)]
pub struct BinaryEnv {
    pub vars: BTreeMap<String, String>,
    /// Keeps the data directory alive as long as the environment.
    pub dir: std::sync::Arc<tempfile::TempDir>,
}

impl BinaryEnv {
    /// A fresh store of `backend`: an embedded data directory, or a fresh
    /// table (from `template.yaml`) on the backend's emulator.
    pub async fn fresh(backend: Backend) -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut vars = BTreeMap::from([
            (
                "BATCHES_DATA_DIR".to_string(),
                dir.path().display().to_string(),
            ),
            ("UPSTREAM_BASE_URL".into(), "http://127.0.0.1:9/v1".into()),
            ("RUST_LOG".into(), "info".into()),
        ]);
        if backend != Backend::Embedded {
            let config = super::sdk_config(backend).await;
            let table = format!("keys-{}", uuid::Uuid::new_v4().simple());
            super::create_table_from_template(&aws_sdk_dynamodb::Client::new(&config), &table)
                .await;
            let variable = match backend {
                Backend::Moto => "LB_MOTO_ENDPOINT",
                _ => "LB_DYNALITE_ENDPOINT",
            };
            let endpoint = std::env::var(variable).expect("the emulator endpoint");
            vars.extend([
                ("BATCHES_TABLE".to_string(), table),
                ("AWS_ENDPOINT_URL".into(), endpoint),
                ("AWS_ACCESS_KEY_ID".into(), "test".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
            ]);
        }
        Self { vars, dir }
    }

    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lambda-batches"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.vars);
        command
    }

    /// Runs `lambda-batches <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("run lambda-batches")
    }

    /// Runs `lambda-batches <args>`, which must succeed; returns its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "lambda-batches {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Starts the server and waits until it answers `/health`. Its stdout and
    /// stderr go to files, for tests that read its logs.
    pub async fn serve(&self) -> Server {
        let port = free_port();
        let stdout = self.dir.path().join(format!("stdout-{port}.log"));
        let stderr = self.dir.path().join(format!("stderr-{port}.log"));
        let child = self
            .command()
            .env("PORT", port.to_string())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start lambda-batches");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stdout,
            stderr,
        };
        let health = format!("{}/health", server.base);
        wait_until("the server answers /health", || async {
            reqwest::get(&health)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        server
    }
}

pub struct Server {
    child: Child,
    pub base: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Server {
    /// Everything the process wrote so far, stdout then stderr.
    pub fn output(&self) -> Vec<u8> {
        let mut bytes = std::fs::read(&self.stdout).unwrap_or_default();
        bytes.extend(std::fs::read(&self.stderr).unwrap_or_default());
        bytes
    }

    /// Waits for the process to end by itself.
    pub fn exit_status(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("exit status")
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn stop(mut self) -> Vec<u8> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `condition` for up to [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
