//! Who is calling: resolves the tenant of every request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{Extensions, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;

use super::{ApiError, AppState};
use crate::config::AuthConfig;
use crate::domain::api_key::ApiKeyHash;
use crate::domain::TenantId;
use crate::store::keys::KeyStore;
use crate::store::StoreError;

/// Most cached key lookups kept at once: a flood of made-up keys evicts
/// entries (costing lookups), never memory.
const MAX_CACHED_KEYS: u64 = 10_000;

/// How requests are mapped to tenants.
pub enum Authenticator {
    /// Everyone is the `default` tenant.
    Open(TenantId),
    /// Development and tests. Keys are kept only as SHA-256 digests: a lookup
    /// by digest needs no byte-by-byte comparison of secrets, so its timing
    /// reveals nothing about them.
    StaticKeys(HashMap<ApiKeyHash, TenantId>),
    /// Managed keys, found by the hash of the presented bearer token.
    StoredKeys(StoredKeys),
    /// API Gateway's JWT authorizer verified the token; the tenant is one of its claims.
    Jwt { tenant_claim: String },
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.mode())
    }
}

/// Managed keys with a cache of lookups, found and not found alike: a hit
/// costs no store round trip, a miss one. An entry lives at most `ttl`, so a
/// revocation reaches every instance within it.
pub struct StoredKeys {
    keys: Arc<dyn KeyStore>,
    /// The tenant of an active key, or `None` for a key that is unknown or revoked.
    cache: Option<moka::future::Cache<ApiKeyHash, Option<TenantId>>>,
}

impl StoredKeys {
    pub fn new(keys: Arc<dyn KeyStore>, ttl: Duration) -> Self {
        let cache = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(MAX_CACHED_KEYS)
                .time_to_live(ttl)
                .build()
        });
        Self { keys, cache }
    }

    async fn tenant_for(&self, token: &[u8]) -> Result<Option<TenantId>, StoreError> {
        let presented = ApiKeyHash::of(token);
        let lookup = lookup(Arc::clone(&self.keys), presented);
        match &self.cache {
            // Concurrent misses on one key share a single store lookup.
            Some(cache) => cache
                .try_get_with(presented, lookup)
                .await
                .map_err(StoreError::Shared),
            None => lookup.await,
        }
    }
}

async fn lookup(
    keys: Arc<dyn KeyStore>,
    presented: ApiKeyHash,
) -> Result<Option<TenantId>, StoreError> {
    let found = keys.find_key(&presented).await?;
    // The store found the record by this hash; comparing again, in constant
    // time, keeps a store's lookup (index, collation) out of what decides.
    Ok(found
        .filter(|record| record.hash.matches(&presented) && record.is_active())
        .map(|record| record.tenant))
}

impl Authenticator {
    /// The authenticator `config` asks for. `Unset` must be resolved by the
    /// entrypoint first; here it means API keys, the safe choice.
    pub fn new(config: &AuthConfig, keys: Arc<dyn KeyStore>) -> Self {
        match config {
            AuthConfig::Open => Self::Open(TenantId::default_tenant()),
            AuthConfig::StaticKeys(pairs) => Self::StaticKeys(
                pairs
                    .iter()
                    .map(|(key, tenant)| (ApiKeyHash::of(key.as_bytes()), tenant.clone()))
                    .collect(),
            ),
            AuthConfig::ApiKeys { cache_ttl } | AuthConfig::Unset { cache_ttl } => {
                Self::StoredKeys(StoredKeys::new(keys, *cache_ttl))
            }
            AuthConfig::Jwt { tenant_claim } => Self::Jwt {
                tenant_claim: tenant_claim.clone(),
            },
        }
    }

    /// The mode's name, as `BATCHES_AUTH` spells it, for start-up logs.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Open(_) => "none",
            Self::StaticKeys(_) => "static-keys",
            Self::StoredKeys(_) => "api-keys",
            Self::Jwt { .. } => "jwt",
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open(_))
    }

    /// The caller's tenant, `None` when the request does not authenticate.
    /// (Headers and extensions, not the request: the body is not `Sync`, and
    /// the future must be `Send`.)
    pub async fn tenant_for(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Option<TenantId>, StoreError> {
        let token = || {
            let header = headers.get(AUTHORIZATION)?;
            bearer_token(header.as_bytes())
        };
        match self {
            Self::Open(tenant) => Ok(Some(tenant.clone())),
            Self::StaticKeys(keys) => {
                Ok(token().and_then(|token| keys.get(&ApiKeyHash::of(token)).cloned()))
            }
            Self::StoredKeys(stored) => match token() {
                Some(token) => stored.tenant_for(token).await,
                None => Ok(None),
            },
            Self::Jwt { tenant_claim } => Ok(jwt_tenant(extensions, tenant_claim)),
        }
    }
}

/// The tenant named by `claim` of the JWT that API Gateway's authorizer
/// verified. lambda_http puts the request context in the extensions; a request
/// that did not come through API Gateway has none, and is refused.
fn jwt_tenant(extensions: &Extensions, claim: &str) -> Option<TenantId> {
    let context = extensions.get::<RequestContext>()?;
    let RequestContext::ApiGatewayV2(context) = context else {
        return None;
    };
    let value = context
        .authorizer
        .as_ref()?
        .jwt
        .as_ref()?
        .claims
        .get(claim)?;
    TenantId::parse(value).ok()
}

fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = header.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Middleware: puts the caller's `TenantId` into the request extensions, or answers 401.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let tenant = state
        .auth
        .tenant_for(request.headers(), request.extensions())
        .await;
    match tenant {
        Ok(Some(tenant)) => {
            request.extensions_mut().insert(tenant);
            next.run(request).await
        }
        Ok(None) => ApiError::Unauthorized.into_response(),
        Err(error) => ApiError::Store(error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn store() -> Arc<dyn KeyStore> {
        Arc::new(EmbeddedStore::in_memory().unwrap())
    }

    fn request(authorization: Option<&[u8]>) -> Request {
        let mut builder = Request::builder().uri("/v1/batches");
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    async fn tenant(auth: &Authenticator, authorization: Option<&[u8]>) -> Option<String> {
        let request = request(authorization);
        auth.tenant_for(request.headers(), request.extensions())
            .await
            .unwrap()
            .map(|t| t.to_string())
    }

    fn keys() -> Authenticator {
        Authenticator::new(
            &AuthConfig::StaticKeys(vec![
                ("key-a".into(), TenantId::parse("a").unwrap()),
                ("key-b".into(), TenantId::parse("b").unwrap()),
            ]),
            store(),
        )
    }

    #[tokio::test]
    async fn bearer_keys_resolve_to_their_tenant() {
        let auth = keys();
        assert_eq!(tenant(&auth, Some(b"Bearer key-a")).await.unwrap(), "a");
        assert_eq!(tenant(&auth, Some(b"bearer  key-b ")).await.unwrap(), "b");
    }

    #[tokio::test]
    async fn missing_malformed_or_unknown_keys_resolve_to_nobody() {
        let auth = keys();
        for header in [
            None,
            Some(&b"key-a"[..]),
            Some(b"Basic key-a"),
            Some(b"Bearer "),
            Some(b"Bearer key-c"),
            Some(b"Bearer"),
        ] {
            assert_eq!(tenant(&auth, header).await, None, "{header:?}");
        }
    }

    #[tokio::test]
    async fn without_keys_everyone_is_the_default_tenant() {
        let auth = Authenticator::new(&AuthConfig::Open, store());
        assert_eq!(tenant(&auth, None).await.unwrap(), "default");
        assert_eq!(
            tenant(&auth, Some(b"Bearer anything")).await.unwrap(),
            "default"
        );
    }

    #[tokio::test]
    async fn jwt_mode_refuses_requests_that_did_not_come_through_api_gateway() {
        let auth = Authenticator::new(
            &AuthConfig::Jwt {
                tenant_claim: "sub".into(),
            },
            store(),
        );
        assert_eq!(tenant(&auth, Some(b"Bearer eyJhbGciOi.x.y")).await, None);
    }
}
