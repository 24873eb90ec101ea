//! The composition root: builds the store and the Router from a `Config`, once.

use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use axum::Router;

use crate::api::{self, AppState, Authenticator};
use crate::clock::SystemClock;
use crate::config::{Config, Storage};
use crate::store::dynamodb::DynamoStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::{BatchStore, StoreError};

/// Loads the AWS configuration from the standard environment (credentials,
/// region, `AWS_ENDPOINT_URL`), with timeouts well inside API Gateway's 30 s.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(8))
                .build(),
        )
        .load()
        .await
}

pub async fn store(config: &Config) -> Result<Arc<dyn BatchStore>, StoreError> {
    Ok(match &config.storage {
        Storage::Embedded { data_dir } => Arc::new(EmbeddedStore::open(data_dir)?),
        Storage::DynamoDb { table } => Arc::new(DynamoStore::new(&aws_config().await, table)),
    })
}

pub async fn router(config: &Config) -> Result<Router, StoreError> {
    Ok(api::router(AppState {
        store: store(config).await?,
        clock: Arc::new(SystemClock),
        auth: Arc::new(Authenticator::new(&config.auth)),
        retention_secs: config.retention_secs(),
    }))
}
