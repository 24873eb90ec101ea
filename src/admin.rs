//! Key management, as the `lambda-batches keys …` subcommands run it: the
//! operations over the `KeyStore` port and their terminal output.

use crate::domain::api_key::{self, ApiKeyError, ApiKeyId, ApiKeyName, ApiKeyRecord, NewApiKey};
use crate::domain::TenantId;
use crate::store::keys::{KeyStore, RevokeOutcome};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Key(#[from] ApiKeyError),
    #[error("{0}")]
    Tenant(String),
    #[error("no key has the id {0}")]
    UnknownKey(ApiKeyId),
    #[error("the key store failed: {0}")]
    Store(#[from] StoreError),
}

/// Makes and stores a key; the caller shows its secret once and drops it.
pub async fn create_key(
    keys: &dyn KeyStore,
    tenant: &str,
    name: &str,
    now_secs: i64,
) -> Result<NewApiKey, AdminError> {
    let tenant = TenantId::parse(tenant).map_err(AdminError::Tenant)?;
    let name = ApiKeyName::parse(name)?;
    let key = api_key::generate(tenant, name, now_secs)?;
    keys.create_key(&key.record).await?;
    Ok(key)
}

pub async fn list_keys(
    keys: &dyn KeyStore,
    tenant: Option<&str>,
) -> Result<Vec<ApiKeyRecord>, AdminError> {
    let tenant = tenant
        .map(TenantId::parse)
        .transpose()
        .map_err(AdminError::Tenant)?;
    Ok(keys.list_keys(tenant.as_ref()).await?)
}

/// Revokes a key; revoking a revoked key is not an error (it stays revoked
/// since its first revocation).
pub async fn revoke_key(
    keys: &dyn KeyStore,
    key_id: &str,
    now_secs: i64,
) -> Result<RevokeOutcome, AdminError> {
    let key_id = ApiKeyId::parse(key_id)?;
    match keys.revoke_key(&key_id, now_secs).await? {
        RevokeOutcome::NotFound => Err(AdminError::UnknownKey(key_id)),
        outcome => Ok(outcome),
    }
}

/// What `keys create` prints: the only time the secret is ever shown.
pub fn created_text(key: &NewApiKey) -> String {
    format!(
        "key_id\t{}\ntenant\t{}\nname\t{}\napi_key\t{}\n",
        key.record.key_id,
        key.record.tenant,
        key.record.name.as_str(),
        key.secret.expose()
    )
}

/// What `keys list` prints: tab-separated, one key a line, never a secret or a hash.
pub fn list_text(keys: &[ApiKeyRecord]) -> String {
    let mut text = String::from("key_id\ttenant\tname\tcreated_at\trevoked_at\n");
    for key in keys {
        let revoked = key
            .revoked_at
            .map_or_else(|| "-".to_string(), |at| at.to_string());
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            key.key_id,
            key.tenant,
            key.name.as_str(),
            key.created_at,
            revoked
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn created_keys_are_listed_without_their_secret_and_revoked_once() {
        let store = EmbeddedStore::in_memory().unwrap();
        let key = create_key(&store, "acme", "ci", 100).await.unwrap();
        assert!(created_text(&key).contains(key.secret.expose()));

        let listed = list_keys(&store, Some("acme")).await.unwrap();
        assert_eq!(listed, vec![key.record.clone()]);
        let text = list_text(&listed);
        assert!(text.contains(key.record.key_id.as_str()));
        assert!(!text.contains(key.secret.expose()));
        assert!(!text.contains(&key.record.hash.to_hex()));
        assert!(list_keys(&store, Some("other")).await.unwrap().is_empty());

        let id = key.record.key_id.as_str();
        let RevokeOutcome::Revoked(revoked) = revoke_key(&store, id, 200).await.unwrap() else {
            panic!("expected a revocation")
        };
        assert_eq!(revoked.revoked_at, Some(200));
        let RevokeOutcome::AlreadyRevoked(again) = revoke_key(&store, id, 300).await.unwrap()
        else {
            panic!("expected the first revocation to stand")
        };
        assert_eq!(again.revoked_at, Some(200));
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_the_store_is_touched() {
        let store = EmbeddedStore::in_memory().unwrap();
        assert!(matches!(
            create_key(&store, "bad tenant", "ci", 0).await,
            Err(AdminError::Tenant(_))
        ));
        assert!(matches!(
            create_key(&store, "acme", "", 0).await,
            Err(AdminError::Key(_))
        ));
        assert!(matches!(
            revoke_key(&store, "lb-not-an-id", 0).await,
            Err(AdminError::Key(_))
        ));
        assert!(matches!(
            revoke_key(&store, "key_000000000000000000000000", 0).await,
            Err(AdminError::UnknownKey(_))
        ));
    }
}
