//! The composition root: builds every adapter from a `Config`, once, at init.

use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use axum::Router;
use tokio::sync::OnceCell;

use crate::api::{self, AppState, Authenticator};
use crate::clock::{Clock, SystemClock};
use crate::config::{AuthConfig, BlobStorage, Config, QueueConfig, Storage};
use crate::files::local::LocalBlobStore;
use crate::files::s3::S3BlobStore;
use crate::files::{BlobError, BlobStore};
use crate::queue::in_process::InProcessQueue;
use crate::queue::sqs::SqsQueue;
use crate::queue::{WorkItem, WorkQueue};
use crate::store::dynamodb::DynamoStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::files::FileStore;
use crate::store::keys::KeyStore;
use crate::store::leases::ShardLeases;
use crate::store::{BatchStore, ExecutionLedger, PendingBatches, QuotaLedger, StoreError};
use crate::upstream::{UpstreamClient, UpstreamError};
use crate::worker::local::Ownership;
use crate::worker::Worker;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("{variable} is not set: {why}")]
    MissingSetting {
        variable: &'static str,
        why: &'static str,
    },
}

/// Loads the AWS configuration from the standard environment (credentials,
/// region, `AWS_ENDPOINT_URL`), with timeouts well inside API Gateway's 30 s.
pub async fn aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(25))
                .build(),
        )
        .load()
        .await
}

/// The storage adapters, sharing one AWS configuration loaded only if needed.
/// One adapter struct implements every port but the blobs'.
pub struct Stores {
    pub batches: Arc<dyn BatchStore>,
    pub ledger: Arc<dyn ExecutionLedger>,
    pub pending: Arc<dyn PendingBatches>,
    pub quotas: Arc<dyn QuotaLedger>,
    pub files: Arc<dyn FileStore>,
    pub keys: Arc<dyn KeyStore>,
    pub leases: Arc<dyn ShardLeases>,
    pub blobs: Arc<dyn BlobStore>,
    aws: OnceCell<SdkConfig>,
}

impl Stores {
    pub async fn open(config: &Config) -> Result<Self, InitError> {
        let aws = OnceCell::new();
        let blobs: Arc<dyn BlobStore> = match &config.blobs {
            BlobStorage::Local { dir } => Arc::new(LocalBlobStore::open_dir(dir)?),
            BlobStorage::S3 { bucket } => {
                Arc::new(S3BlobStore::new(aws.get_or_init(aws_config).await, bucket))
            }
        };
        Ok(match &config.storage {
            Storage::Embedded { data_dir } => {
                let store = EmbeddedStore::open(data_dir)?.with_quotas(config.quotas);
                Self::of(Arc::new(store), blobs, aws)
            }
            Storage::DynamoDb { table } => {
                let sdk = aws.get_or_init(aws_config).await;
                let store = DynamoStore::new(sdk, table).with_quotas(config.quotas);
                Self::of(Arc::new(store), blobs, aws)
            }
        })
    }

    fn of<S>(store: Arc<S>, blobs: Arc<dyn BlobStore>, aws: OnceCell<SdkConfig>) -> Self
    where
        S: BatchStore
            + ExecutionLedger
            + PendingBatches
            + QuotaLedger
            + FileStore
            + KeyStore
            + ShardLeases
            + 'static,
    {
        Self {
            batches: store.clone(),
            ledger: store.clone(),
            pending: store.clone(),
            quotas: store.clone(),
            files: store.clone(),
            keys: store.clone(),
            leases: store,
            blobs,
            aws,
        }
    }

    async fn aws(&self) -> &SdkConfig {
        self.aws.get_or_init(aws_config).await
    }
}

/// The key store alone, for the `keys` subcommands: the same backend and
/// place as the server's.
pub async fn key_store(config: &Config) -> Result<Arc<dyn KeyStore>, InitError> {
    Ok(match &config.storage {
        Storage::Embedded { data_dir } => Arc::new(EmbeddedStore::open(data_dir)?),
        Storage::DynamoDb { table } => Arc::new(DynamoStore::new(&aws_config().await, table)),
    })
}

/// Which entrypoint is starting: they resolve an unset `BATCHES_AUTH` differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entrypoint {
    /// In Lambda the API is on the internet: keys are required.
    Lambda,
    /// On a laptop: open until the first key is created, keys required after.
    Local,
}

/// The authenticator for `config`, with an unset mode resolved for `entrypoint`.
pub async fn authenticator(
    config: &Config,
    stores: &Stores,
    entrypoint: Entrypoint,
) -> Result<Authenticator, InitError> {
    let resolved = match (&config.auth, entrypoint) {
        (AuthConfig::Unset { cache_ttl }, Entrypoint::Lambda) => AuthConfig::ApiKeys {
            cache_ttl: *cache_ttl,
        },
        (AuthConfig::Unset { cache_ttl }, Entrypoint::Local) => {
            let keys = stores.keys.list_keys(None).await?;
            if keys.iter().any(|key| key.is_active()) {
                AuthConfig::ApiKeys {
                    cache_ttl: *cache_ttl,
                }
            } else {
                AuthConfig::Open
            }
        }
        (chosen, _) => chosen.clone(),
    };
    Ok(Authenticator::new(&resolved, Arc::clone(&stores.keys)))
}

pub fn api_state(
    config: &Config,
    stores: &Stores,
    work: Option<Arc<dyn WorkQueue>>,
    auth: Authenticator,
) -> AppState {
    AppState {
        batches: Arc::clone(&stores.batches),
        files: Arc::clone(&stores.files),
        blobs: Arc::clone(&stores.blobs),
        work,
        clock: Arc::new(SystemClock),
        auth: Arc::new(auth),
        retention_secs: config.retention_secs(),
        file_settings: api::FileSettings {
            inline_content_max_bytes: config.inline_content_max_bytes,
            ..api::FileSettings::default()
        },
        max_in_flight_requests: config.max_in_flight_requests,
    }
}

pub fn worker(
    config: &Config,
    stores: &Stores,
    queue: Arc<dyn WorkQueue>,
    clock: Arc<dyn Clock>,
) -> Result<Worker, InitError> {
    Ok(Worker {
        batches: Arc::clone(&stores.batches),
        ledger: Arc::clone(&stores.ledger),
        pending: Arc::clone(&stores.pending),
        quotas: Arc::clone(&stores.quotas),
        files: Arc::clone(&stores.files),
        blobs: Arc::clone(&stores.blobs),
        queue,
        leases: Arc::clone(&stores.leases),
        upstream: UpstreamClient::new(&config.upstream)?,
        clock,
        reconciler: config.reconciler,
        execution: config.execution.clone(),
    })
}

/// The Router for the API Lambda: it only writes; the table's stream announces
/// the work, so a crash after a create loses nothing.
pub async fn lambda_router(config: &Config) -> Result<Router, InitError> {
    let stores = Stores::open(config).await?;
    let auth = authenticator(config, &stores, Entrypoint::Lambda).await?;
    tracing::info!(auth = auth.mode(), "API ready");
    Ok(api::router(api_state(config, &stores, None, auth)))
}

/// The queue the worker Lambda reads and the stream handler writes.
///
/// It must be SQS: an in-process queue in a Lambda would take the stream's
/// work into a process that ends with the invocation, so nobody would run it.
pub async fn lambda_worker(config: &Config) -> Result<Worker, InitError> {
    let QueueConfig::Sqs { queue_url } = &config.queue else {
        return Err(InitError::MissingSetting {
            variable: "BATCHES_QUEUE_URL",
            why: "the worker Lambda hands batch work to this SQS queue and reads it back; \
                  without it the work would go nowhere (template.yaml sets it)",
        });
    };
    let stores = Stores::open(config).await?;
    let queue = Arc::new(SqsQueue::new(stores.aws().await, queue_url));
    worker(config, &stores, queue, Arc::new(SystemClock))
}

/// The local all-in-one server: the Router (plus an in-process worker), and
/// the auth mode it runs in.
pub struct LocalServer {
    pub router: Router,
    pub auth_mode: &'static str,
    /// Every request is served, unauthenticated, as the `default` tenant.
    pub open: bool,
}

pub async fn local_server(config: &Config) -> Result<LocalServer, InitError> {
    let stores = Stores::open(config).await?;
    let auth = authenticator(config, &stores, Entrypoint::Local).await?;
    let (auth_mode, open) = (auth.mode(), auth.is_open());
    let (queue, items) = local_queue(config, &stores).await;
    let worker = Arc::new(worker(
        config,
        &stores,
        Arc::clone(&queue),
        Arc::new(SystemClock),
    )?);
    if let Some(items) = items {
        let ownership = match config.storage {
            Storage::Embedded { .. } => Ownership::Sole,
            Storage::DynamoDb { .. } => Ownership::Shared,
        };
        crate::worker::local::spawn(worker, items, ownership);
    }
    Ok(LocalServer {
        router: api::router(api_state(config, &stores, Some(queue), auth)),
        auth_mode,
        open,
    })
}

async fn local_queue(
    config: &Config,
    stores: &Stores,
) -> (
    Arc<dyn WorkQueue>,
    Option<tokio::sync::mpsc::UnboundedReceiver<WorkItem>>,
) {
    match &config.queue {
        QueueConfig::InProcess => {
            let (queue, items) = InProcessQueue::new();
            (Arc::new(queue), Some(items))
        }
        QueueConfig::Sqs { queue_url } => {
            (Arc::new(SqsQueue::new(stores.aws().await, queue_url)), None)
        }
    }
}
