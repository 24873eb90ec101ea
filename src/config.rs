//! Every setting, with its environment variable and default, read once at start-up.
//!
//! docs/configuration.md is the reference: every variable, its default and its
//! meaning. `tests/config_docs.rs` fails when it and this file name different
//! variables, so name each variable here with a string literal.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::{Quotas, TenantId};
use crate::upstream::RetryPolicy;
pub use crate::upstream::UpstreamConfig;
use crate::worker::metrics::MetricsFormat;
pub use crate::worker::{ExecutionConfig, ReconcilerConfig};

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub storage: Storage,
    pub blobs: BlobStorage,
    pub queue: QueueConfig,
    pub auth: AuthConfig,
    pub retention_days: u32,
    pub upstream: UpstreamConfig,
    pub reconciler: ReconcilerConfig,
    /// `GET /v1/files/{id}/content` answers with the bytes up to this size and
    /// with a redirect to a presigned S3 URL above it.
    pub inline_content_max_bytes: u64,
    pub execution: ExecutionConfig,
    /// API requests handled at once; the excess is shed with a 503.
    pub max_in_flight_requests: usize,
    pub quotas: Quotas,
}

/// The local server's default cap on requests in flight. (A Lambda instance
/// handles one request at a time, so there it never binds.)
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: usize = 256;

/// Lambda caps a response at 6 MB (6,291,456 bytes) *after* lambda_http has
/// base64-encoded a binary body (4/3 larger): 4 MiB encodes to 5.6 MB, which
/// leaves room for headers; 5 MiB would encode to 7 MB and fail.
pub const DEFAULT_INLINE_CONTENT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Where file bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStorage {
    Local { dir: PathBuf },
    S3 { bucket: String },
}

/// Where batch work waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueConfig {
    InProcess,
    Sqs { queue_url: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Embedded { data_dir: PathBuf },
    DynamoDb { table: String },
}

#[derive(Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// No authentication: every request belongs to the `default` tenant (`BATCHES_AUTH=none`).
    Open,
    /// A static key → tenant map, for development and tests.
    StaticKeys(Vec<(String, TenantId)>),
    /// Keys managed with `lambda-batches keys`, stored hashed (`BATCHES_AUTH=api-keys`).
    ApiKeys { cache_ttl: Duration },
    /// The tenant is a claim that API Gateway's JWT authorizer verified (`BATCHES_AUTH=jwt`).
    Jwt { tenant_claim: String },
    /// Nothing chosen: the entrypoint decides. Lambda requires API keys; the
    /// local server requires them once the store holds one, and is open before.
    Unset { cache_ttl: Duration },
}

/// Revocation must take effect within a minute, cache included.
pub const MAX_AUTH_CACHE_SECS: u64 = 60;

// Never print the keys themselves.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open => f.write_str("Open"),
            Self::StaticKeys(keys) => write!(f, "StaticKeys({} keys)", keys.len()),
            Self::ApiKeys { cache_ttl } => write!(f, "ApiKeys {{ cache_ttl: {cache_ttl:?} }}"),
            Self::Jwt { tenant_claim } => write!(f, "Jwt {{ tenant_claim: {tenant_claim:?} }}"),
            Self::Unset { cache_ttl } => write!(f, "Unset {{ cache_ttl: {cache_ttl:?} }}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let parse_error = |variable: &'static str| {
            move |e: &dyn std::fmt::Display| ConfigError {
                variable,
                reason: e.to_string(),
            }
        };

        let host = match get("BATCHES_HOST") {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e| parse_error("BATCHES_HOST")(&e))?,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        let port = match get("PORT") {
            Some(v) => v.trim().parse().map_err(|e| parse_error("PORT")(&e))?,
            None => 8080,
        };
        let data_dir = get("BATCHES_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("./.lambda-batches"));
        let storage = match get("BATCHES_TABLE") {
            Some(table) => Storage::DynamoDb {
                table: table.trim().to_string(),
            },
            None => Storage::Embedded {
                data_dir: data_dir.clone(),
            },
        };
        let blobs = match get("BATCHES_BUCKET") {
            Some(bucket) => BlobStorage::S3 {
                bucket: bucket.trim().to_string(),
            },
            None => BlobStorage::Local {
                dir: data_dir.join("files"),
            },
        };
        let queue = match get("BATCHES_QUEUE_URL") {
            Some(url) => QueueConfig::Sqs {
                queue_url: url.trim().to_string(),
            },
            None => QueueConfig::InProcess,
        };
        let upstream = UpstreamConfig {
            base_url: get("UPSTREAM_BASE_URL")
                .map(|url| url.trim().trim_end_matches('/').to_string())
                .unwrap_or_else(|| "http://127.0.0.1:11434/v1".to_string()),
            api_key: get("UPSTREAM_API_KEY").map(|k| k.trim().to_string()),
        };
        if !(upstream.base_url.starts_with("http://") || upstream.base_url.starts_with("https://"))
        {
            return Err(ConfigError {
                variable: "UPSTREAM_BASE_URL",
                reason: format!("expected an http(s) URL, got {:?}", upstream.base_url),
            });
        }
        let retry = RetryPolicy {
            max_attempts: number(&get, "UPSTREAM_MAX_ATTEMPTS", 6, 1..=20)?,
            attempt_timeout: std::time::Duration::from_secs(number(
                &get,
                "UPSTREAM_TIMEOUT_SECS",
                300,
                1..=900,
            )?),
            ..RetryPolicy::default()
        };
        let metrics = match get("BATCHES_METRICS_FORMAT").as_deref().map(str::trim) {
            None | Some("log") => MetricsFormat::Log,
            Some("emf") => MetricsFormat::Emf,
            Some(other) => {
                return Err(ConfigError {
                    variable: "BATCHES_METRICS_FORMAT",
                    reason: format!("expected log or emf, got {other:?}"),
                })
            }
        };
        let execution = ExecutionConfig {
            metrics,
            shard_bytes: number(&get, "BATCHES_SHARD_BYTES", 4 * 1024 * 1024, 1..=1 << 40)?,
            segment_lines: number(&get, "BATCHES_SEGMENT_LINES", 256, 1..=50_000)?,
            concurrency: number(&get, "UPSTREAM_CONCURRENCY", 32, 1..=1024)?,
            retry,
        };
        let reconciler = ReconcilerConfig {
            stuck_after_secs: number(&get, "BATCHES_STUCK_AFTER_SECS", 300, 0..=86_400)?,
            interval_secs: number(&get, "BATCHES_RECONCILE_INTERVAL_SECS", 60, 1..=86_400)?,
            shard_lease_secs: number(&get, "BATCHES_SHARD_LEASE_SECS", 30, 3..=3_600)?,
        };
        let auth = auth(&get)?;
        let retention_days = number(&get, "BATCHES_RETENTION_DAYS", 30, 1..=36_500)?;
        let inline_content_max_bytes = number(
            &get,
            "BATCHES_INLINE_CONTENT_MAX_BYTES",
            DEFAULT_INLINE_CONTENT_MAX_BYTES,
            0..=(1 << 40),
        )?;
        let max_in_flight_requests = number(
            &get,
            "BATCHES_MAX_IN_FLIGHT_REQUESTS",
            DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            1..=1_000_000,
        )?;
        // 0 (the default) is unlimited: no usage is kept and quotas cost nothing.
        let quotas = Quotas {
            max_batches_in_flight: Some(number(
                &get,
                "BATCHES_MAX_BATCHES_IN_FLIGHT",
                0,
                0..=100_000,
            )?)
            .filter(|&n| n > 0),
            max_enqueued_lines: Some(number(
                &get,
                "BATCHES_MAX_ENQUEUED_LINES",
                0,
                0..=1_000_000_000_000,
            )?)
            .filter(|&n| n > 0),
        };
        Ok(Self {
            max_in_flight_requests,
            quotas,
            host,
            port,
            data_dir,
            storage,
            blobs,
            queue,
            auth,
            retention_days,
            upstream,
            reconciler,
            inline_content_max_bytes,
            execution,
        })
    }

    pub fn retention_secs(&self) -> i64 {
        i64::from(self.retention_days) * 86_400
    }
}

fn auth(get: &impl Fn(&str) -> Option<String>) -> Result<AuthConfig, ConfigError> {
    let cache_ttl = Duration::from_secs(number(
        get,
        "BATCHES_AUTH_CACHE_SECS",
        30,
        0..=MAX_AUTH_CACHE_SECS,
    )?);
    let static_keys = get("BATCHES_API_KEYS")
        .map(|map| parse_key_map(&map))
        .transpose()?;
    let mode = get("BATCHES_AUTH").map(|m| m.trim().to_string());
    match (mode.as_deref(), static_keys) {
        (None, Some(keys)) => Ok(AuthConfig::StaticKeys(keys)),
        (None, None) => Ok(AuthConfig::Unset { cache_ttl }),
        // A development key map beside a production mode is a mistake to
        // report, not a choice to guess.
        (Some(mode), Some(_)) => Err(ConfigError {
            variable: "BATCHES_API_KEYS",
            reason: format!(
                "the static key map is for development and tests and only applies when BATCHES_AUTH is unset (it is {mode:?})"
            ),
        }),
        (Some("api-keys"), None) => Ok(AuthConfig::ApiKeys { cache_ttl }),
        (Some("none"), None) => Ok(AuthConfig::Open),
        (Some("jwt"), None) => {
            let tenant_claim = get("BATCHES_JWT_TENANT_CLAIM")
                .map(|c| c.trim().to_string())
                .unwrap_or_else(|| "sub".to_string());
            Ok(AuthConfig::Jwt { tenant_claim })
        }
        (Some(other), None) => Err(ConfigError {
            variable: "BATCHES_AUTH",
            reason: format!("expected api-keys, jwt or none, got {other:?}"),
        }),
    }
}

/// A whole number from `range`, or `default` when unset.
fn number<T>(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(text) = get(variable) else {
        return Ok(default);
    };
    match text.trim().parse::<T>() {
        Ok(value) if range.contains(&value) => Ok(value),
        _ => Err(ConfigError {
            variable,
            reason: format!(
                "expected a whole number from {} to {}, got {text:?}",
                range.start(),
                range.end()
            ),
        }),
    }
}

/// `key1:tenantA,key2:tenantB`. A key may contain `:`; the tenant is after the last one.
fn parse_key_map(text: &str) -> Result<Vec<(String, TenantId)>, ConfigError> {
    let error = |reason: String| ConfigError {
        variable: "BATCHES_API_KEYS",
        reason,
    };
    let mut pairs: Vec<(String, TenantId)> = Vec::new();
    for (index, entry) in text.split(',').map(str::trim).enumerate() {
        let position = index + 1;
        let (key, tenant) = entry
            .rsplit_once(':')
            .ok_or_else(|| error(format!("entry {position} is not key:tenant")))?;
        if key.is_empty() {
            return Err(error(format!("entry {position} has an empty key")));
        }
        let tenant = TenantId::parse(tenant)
            .map_err(|reason| error(format!("entry {position}: {reason}")))?;
        if pairs.iter().any(|(existing, _)| existing == key) {
            return Err(error(format!("entry {position} repeats a key")));
        }
        pairs.push((key.to_string(), tenant));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_serve_an_open_embedded_store_on_loopback_8080() {
        let c = config(&[]).unwrap();
        assert_eq!(c.host.to_string(), "127.0.0.1");
        assert_eq!(c.port, 8080);
        assert_eq!(
            c.storage,
            Storage::Embedded {
                data_dir: "./.lambda-batches".into()
            }
        );
        assert_eq!(
            c.auth,
            AuthConfig::Unset {
                cache_ttl: Duration::from_secs(30)
            }
        );
        assert_eq!(c.retention_secs(), 30 * 86_400);
        assert_eq!(
            c.blobs,
            BlobStorage::Local {
                dir: "./.lambda-batches/files".into()
            }
        );
        assert_eq!(c.queue, QueueConfig::InProcess);
        assert_eq!(c.inline_content_max_bytes, 4 * 1024 * 1024);
        assert_eq!(c.max_in_flight_requests, 256);
        assert!(c.quotas.is_unlimited());
        assert_eq!(c.upstream.base_url, "http://127.0.0.1:11434/v1");
        assert_eq!(
            c.reconciler,
            ReconcilerConfig {
                stuck_after_secs: 300,
                interval_secs: 60,
                shard_lease_secs: 30,
            }
        );
    }

    #[test]
    fn a_table_selects_dynamodb_and_keys_select_static_auth() {
        let c = config(&[
            ("BATCHES_TABLE", "batches"),
            ("BATCHES_API_KEYS", "k1:tenant-a, sk:with:colon:tenant-b"),
        ])
        .unwrap();
        assert_eq!(
            c.storage,
            Storage::DynamoDb {
                table: "batches".into()
            }
        );
        let AuthConfig::StaticKeys(keys) = c.auth else {
            panic!("expected keys")
        };
        assert_eq!(keys[0].0, "k1");
        assert_eq!(keys[1].0, "sk:with:colon");
        assert_eq!(keys[1].1.as_str(), "tenant-b");
    }

    #[test]
    fn malformed_settings_fail_at_start_up_naming_the_variable() {
        for (var, value) in [
            ("PORT", "eighty"),
            ("BATCHES_HOST", "not-an-ip"),
            ("BATCHES_API_KEYS", "no-colon"),
            ("BATCHES_API_KEYS", ":tenant"),
            ("BATCHES_API_KEYS", "k:bad tenant"),
            ("BATCHES_API_KEYS", "k:a,k:b"),
            ("BATCHES_RETENTION_DAYS", "0"),
            ("BATCHES_STUCK_AFTER_SECS", "-1"),
            ("BATCHES_RECONCILE_INTERVAL_SECS", "0"),
            ("UPSTREAM_BASE_URL", "ftp://x"),
            ("BATCHES_INLINE_CONTENT_MAX_BYTES", "-1"),
            ("BATCHES_INLINE_CONTENT_MAX_BYTES", "5MB"),
            ("BATCHES_MAX_IN_FLIGHT_REQUESTS", "0"),
            ("BATCHES_MAX_BATCHES_IN_FLIGHT", "-1"),
            ("BATCHES_MAX_ENQUEUED_LINES", "lots"),
            ("BATCHES_AUTH", "basic"),
            ("BATCHES_AUTH_CACHE_SECS", "61"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{value}");
        }
    }

    #[test]
    fn the_auth_mode_is_chosen_explicitly_or_left_to_the_entrypoint() {
        let mode = |vars: &[(&str, &str)]| config(vars).map(|c| c.auth);
        let ttl = |secs| Duration::from_secs(secs);
        assert_eq!(
            mode(&[
                ("BATCHES_AUTH", "api-keys"),
                ("BATCHES_AUTH_CACHE_SECS", "5")
            ])
            .unwrap(),
            AuthConfig::ApiKeys { cache_ttl: ttl(5) }
        );
        assert_eq!(mode(&[("BATCHES_AUTH", "none")]).unwrap(), AuthConfig::Open);
        assert_eq!(
            mode(&[("BATCHES_AUTH", "jwt")]).unwrap(),
            AuthConfig::Jwt {
                tenant_claim: "sub".into()
            }
        );
        assert_eq!(
            mode(&[
                ("BATCHES_AUTH", "jwt"),
                ("BATCHES_JWT_TENANT_CLAIM", "custom:org")
            ])
            .unwrap(),
            AuthConfig::Jwt {
                tenant_claim: "custom:org".into()
            }
        );
        let err = mode(&[("BATCHES_AUTH", "api-keys"), ("BATCHES_API_KEYS", "k:t")]).unwrap_err();
        assert_eq!(err.variable, "BATCHES_API_KEYS");
    }

    #[test]
    fn the_inline_content_limit_is_read_in_bytes() {
        let c = config(&[("BATCHES_INLINE_CONTENT_MAX_BYTES", "1048576")]).unwrap();
        assert_eq!(c.inline_content_max_bytes, 1_048_576);
    }

    #[test]
    fn quotas_are_read_per_tenant_and_zero_is_unlimited() {
        let c = config(&[
            ("BATCHES_MAX_BATCHES_IN_FLIGHT", "50"),
            ("BATCHES_MAX_ENQUEUED_LINES", "0"),
        ])
        .unwrap();
        assert_eq!(
            c.quotas,
            Quotas {
                max_batches_in_flight: Some(50),
                max_enqueued_lines: None
            }
        );
    }

    #[test]
    fn debug_output_never_contains_keys() {
        let c = config(&[
            ("BATCHES_API_KEYS", "super-secret:t"),
            ("UPSTREAM_API_KEY", "sk-upstream"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("super-secret"));
        assert!(!format!("{c:?}").contains("sk-upstream"));
    }
}
