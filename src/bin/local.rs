//! The local all-in-one server: `cargo run`.

use lambda_batches::config::Config;
use lambda_batches::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    telemetry::init(LogFormat::Text);
    let config = Config::from_env()?;
    let router = lambda_batches::app::local_server(&config).await?;
    let listener = tokio::net::TcpListener::bind((config.host, config.port)).await?;
    tracing::info!(address = %listener.local_addr()?, storage = ?config.storage, auth = ?config.auth, "lambda-batches listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
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
