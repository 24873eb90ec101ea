//! The worker Lambda: the table stream, the work queue and the reconciler schedule.

use lambda_batches::config::Config;
use lambda_batches::telemetry::{self, LogFormat};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(LogFormat::Json);
    // Built once per execution environment, at init, not per event.
    let config = Config::from_env()?;
    let worker = lambda_batches::app::lambda_worker(&config)
        .await
        .inspect_err(|error| tracing::error!(%error, "the worker cannot start"))?;
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // The invocation's deadline, as an Instant: work stops before it.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let left = std::time::Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        let deadline = Some(tokio::time::Instant::now() + left);
        lambda_batches::worker::lambda::handle_event_until(worker, event.payload, deadline)
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    }))
    .await
}
