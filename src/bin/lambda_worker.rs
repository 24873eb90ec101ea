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
    let worker = lambda_batches::app::lambda_worker(&config).await?;
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        lambda_batches::worker::lambda::handle_event(worker, event.payload)
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    }))
    .await
}
