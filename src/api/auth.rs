//! Who is calling: resolves the tenant of every request.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::config::AuthConfig;
use crate::domain::TenantId;

/// How requests are mapped to tenants.
#[derive(Debug)]
pub enum Authenticator {
    /// Everyone is the `default` tenant.
    Open(TenantId),
    /// Keys are kept only as SHA-256 digests: a lookup by digest needs no
    /// byte-by-byte comparison of secrets, so its timing reveals nothing about them.
    StaticKeys(HashMap<[u8; 32], TenantId>),
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        match config {
            AuthConfig::Open => Self::Open(TenantId::default_tenant()),
            AuthConfig::StaticKeys(pairs) => Self::StaticKeys(
                pairs
                    .iter()
                    .map(|(key, tenant)| (digest(key.as_bytes()), tenant.clone()))
                    .collect(),
            ),
        }
    }

    pub fn tenant_for(&self, authorization: Option<&[u8]>) -> Option<TenantId> {
        match self {
            Self::Open(tenant) => Some(tenant.clone()),
            Self::StaticKeys(keys) => {
                let token = bearer_token(authorization?)?;
                keys.get(&digest(token)).cloned()
            }
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
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
    let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    match state.auth.tenant_for(header) {
        Some(tenant) => {
            request.extensions_mut().insert(tenant);
            next.run(request).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Authenticator {
        Authenticator::new(&AuthConfig::StaticKeys(vec![
            ("key-a".into(), TenantId::parse("a").unwrap()),
            ("key-b".into(), TenantId::parse("b").unwrap()),
        ]))
    }

    #[test]
    fn bearer_keys_resolve_to_their_tenant() {
        let auth = keys();
        assert_eq!(
            auth.tenant_for(Some(b"Bearer key-a")).unwrap().as_str(),
            "a"
        );
        assert_eq!(
            auth.tenant_for(Some(b"bearer  key-b ")).unwrap().as_str(),
            "b"
        );
    }

    #[test]
    fn missing_malformed_or_unknown_keys_resolve_to_nobody() {
        let auth = keys();
        for header in [
            None,
            Some(&b"key-a"[..]),
            Some(b"Basic key-a"),
            Some(b"Bearer "),
            Some(b"Bearer key-c"),
            Some(b"Bearer"),
        ] {
            assert_eq!(auth.tenant_for(header), None, "{header:?}");
        }
    }

    #[test]
    fn without_keys_everyone_is_the_default_tenant() {
        let auth = Authenticator::new(&AuthConfig::Open);
        assert_eq!(auth.tenant_for(None).unwrap().as_str(), "default");
        assert_eq!(
            auth.tenant_for(Some(b"Bearer anything")).unwrap().as_str(),
            "default"
        );
    }
}
