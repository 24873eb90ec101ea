//! Every setting, with its environment variable and default, read once at start-up.
//!
//! | variable                 | default             | meaning |
//! |--------------------------|---------------------|---------|
//! | `PORT`                   | `8080`              | local server port |
//! | `BATCHES_HOST`           | `127.0.0.1`         | local server bind address |
//! | `BATCHES_DATA_DIR`       | `./.lambda-batches` | embedded store directory (when `BATCHES_TABLE` is unset) |
//! | `BATCHES_TABLE`          | unset               | DynamoDB table; set it to use DynamoDB instead of the embedded store |
//! | `BATCHES_API_KEYS`       | unset               | static `key:tenant,...` map; unset means no auth, one `default` tenant |
//! | `BATCHES_RETENTION_DAYS` | `30`                | how long a batch record, and so its idempotency key, is kept |
//! | `RUST_LOG`               | `info`              | log filter |

use std::net::IpAddr;
use std::path::PathBuf;

use crate::domain::TenantId;

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub storage: Storage,
    pub auth: AuthConfig,
    pub retention_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Embedded { data_dir: PathBuf },
    DynamoDb { table: String },
}

#[derive(Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// No authentication: every request belongs to the `default` tenant.
    Open,
    /// A static key → tenant map, for development and tests.
    StaticKeys(Vec<(String, TenantId)>),
}

// Never print the keys themselves.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open => f.write_str("Open"),
            Self::StaticKeys(keys) => write!(f, "StaticKeys({} keys)", keys.len()),
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
        let storage = match get("BATCHES_TABLE") {
            Some(table) => Storage::DynamoDb {
                table: table.trim().to_string(),
            },
            None => Storage::Embedded {
                data_dir: get("BATCHES_DATA_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("./.lambda-batches")),
            },
        };
        let auth = match get("BATCHES_API_KEYS") {
            Some(map) => AuthConfig::StaticKeys(parse_key_map(&map)?),
            None => AuthConfig::Open,
        };
        let retention_days = match get("BATCHES_RETENTION_DAYS") {
            Some(v) => match v.trim().parse::<u32>() {
                Ok(days) if (1..=36_500).contains(&days) => days,
                _ => {
                    return Err(ConfigError {
                        variable: "BATCHES_RETENTION_DAYS",
                        reason: format!(
                            "expected a whole number of days from 1 to 36500, got {v:?}"
                        ),
                    })
                }
            },
            None => 30,
        };
        Ok(Self {
            host,
            port,
            storage,
            auth,
            retention_days,
        })
    }

    pub fn retention_secs(&self) -> i64 {
        i64::from(self.retention_days) * 86_400
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
        assert_eq!(c.auth, AuthConfig::Open);
        assert_eq!(c.retention_secs(), 30 * 86_400);
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
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{value}");
        }
    }

    #[test]
    fn debug_output_never_contains_keys() {
        let c = config(&[("BATCHES_API_KEYS", "super-secret:t")]).unwrap();
        assert!(!format!("{c:?}").contains("super-secret"));
    }
}
