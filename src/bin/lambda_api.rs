//! The API Lambda: the same Router, served by `lambda_http`.

use lambda_batches::config::Config;
use lambda_batches::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init(LogFormat::Json);
    // Built once per execution environment, at init, not per request.
    let config = Config::from_env()?;
    let router = lambda_batches::app::lambda_router(&config).await?;
    lambda_batches::api::lambda::run(router).await
}
