//! The local binary: `cargo run` serves the all-in-one server; `keys …`
//! manages API keys in the same store, with the same configuration.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lambda_batches::admin;
use lambda_batches::config::Config;
use lambda_batches::store::keys::RevokeOutcome;
use lambda_batches::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "lambda-batches",
    version,
    about = "An OpenAI-compatible Batch API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (what no subcommand does).
    Serve,
    /// Manage API keys in the store the server uses (BATCHES_TABLE, else BATCHES_DATA_DIR).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it: it is shown this once, and never stored.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
    },
    /// List keys (ids, tenants, names, times; never secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by its id (key_…); it stops working within BATCHES_AUTH_CACHE_SECS.
    Revoke { key_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("lambda-batches: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lambda-batches: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None | Some(Command::Serve) => serve(config).await,
            Some(Command::Keys { command }) => keys(config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lambda-batches: {error}");
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error>;

async fn serve(config: Config) -> Result<(), AnyError> {
    telemetry::init(LogFormat::Text);
    let server = lambda_batches::app::local_server(&config).await?;
    let listener = tokio::net::TcpListener::bind((config.host, config.port))
        .await
        // The kind (`AddrInUse`, …) is what scripts and tests match on.
        .map_err(|e| {
            format!(
                "cannot listen on {}:{}: {e} ({:?})",
                config.host,
                config.port,
                e.kind()
            )
        })?;
    let address = listener.local_addr()?;
    tracing::info!(%address, storage = ?config.storage, auth = server.auth_mode, "lambda-batches listening");
    if server.open && !config.host.is_loopback() {
        tracing::warn!(
            %address,
            "authentication is off and the server is reachable beyond this machine: \
             anyone who can connect can use it; create a key (lambda-batches keys create) \
             and restart, or set BATCHES_AUTH=api-keys"
        );
    }
    axum::serve(listener, server.router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn keys(config: Config, command: KeysCommand) -> Result<(), AnyError> {
    let store = lambda_batches::app::key_store(&config).await?;
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        .try_into()?;
    match command {
        KeysCommand::Create { tenant, name } => {
            let key = admin::create_key(store.as_ref(), &tenant, &name, now_secs).await?;
            print!("{}", admin::created_text(&key));
            eprintln!("Store the api_key now: it is not shown again.");
        }
        KeysCommand::List { tenant } => {
            let keys = admin::list_keys(store.as_ref(), tenant.as_deref()).await?;
            print!("{}", admin::list_text(&keys));
        }
        KeysCommand::Revoke { key_id } => {
            match admin::revoke_key(store.as_ref(), &key_id, now_secs).await? {
                RevokeOutcome::Revoked(key) => println!(
                    "revoked {} (tenant {}); running servers refuse it within BATCHES_AUTH_CACHE_SECS",
                    key.key_id, key.tenant
                ),
                RevokeOutcome::AlreadyRevoked(key) => println!(
                    "{} was already revoked (at {})",
                    key.key_id,
                    key.revoked_at.unwrap_or_default()
                ),
                RevokeOutcome::NotFound => unreachable!("admin::revoke_key reports it as an error"),
            }
        }
    }
    Ok(())
}

/// Ctrl-C or SIGTERM: stop accepting, finish in-flight requests, exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
