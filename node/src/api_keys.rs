//! Issuing API keys and authenticating requests that carry one.

use niso_protocol::{
    api::KeyInfo,
    api_key::{ApiKey, KeyFormatError, generate_key_id},
    scope::{Scope, ScopeError, Scopes},
};

use crate::{
    clock::now_ms,
    last_used::LastUsed,
    store::{KeyEntry, Store, StoreError},
};

/// Who is making a request, and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None` for anonymous pulls.
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub scopes: Scopes,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this registry requires an API key")]
    Missing,
    #[error("the Authorization header must be `Bearer <api-key>`")]
    BadHeader,
    #[error("the API key is malformed")]
    Malformed(#[source] KeyFormatError),
    #[error("the API key is not known to this registry (revoked, or issued by another registry)")]
    Unknown,
    #[error("the API key {0} has expired")]
    Expired(String),
    #[error("stored scopes of key {0} are invalid")]
    BadStoredScopes(String, #[source] ScopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn random_fill(buf: &mut [u8]) {
    // The OS generator failing is unrecoverable for key issuing; `getrandom` documents that it
    // does not fail on supported Linux systems once the pool is initialised.
    if let Err(e) = getrandom::fill(buf) {
        tracing::error!(error = %e, "operating system random number generator failed");
        std::process::abort();
    }
}

/// Creates and stores a new key. The returned [`ApiKey`] is the only copy of the secret.
pub async fn issue_key(
    store: &Store,
    name: String,
    scopes: Vec<Scope>,
    expires_at_ms: Option<u64>,
) -> Result<(ApiKey, KeyInfo), StoreError> {
    let key = ApiKey::generate(&mut random_fill);
    let id = generate_key_id(&mut random_fill);
    let entry = KeyEntry {
        name,
        hash: key.hash().0,
        scopes: scopes.iter().map(ToString::to_string).collect(),
        created_ms: now_ms(),
        last_used_ms: None,
        expires_at_ms,
    };
    let info = key_info(&id, &entry, None);
    store.insert_key(id, &key, entry).await?;
    Ok((key, info))
}

pub fn key_info(id: &str, entry: &KeyEntry, pending_use: Option<u64>) -> KeyInfo {
    KeyInfo {
        id: id.to_owned(),
        name: entry.name.clone(),
        scopes: entry.scopes.clone(),
        created_ms: entry.created_ms,
        last_used_ms: pending_use.max(entry.last_used_ms),
        expires_at_ms: entry.expires_at_ms,
    }
}

/// Checks the `Authorization` header value (if any) and returns who is calling.
pub fn authenticate(
    store: &Store,
    last_used: &LastUsed,
    authorization: Option<&str>,
    anonymous_pull: bool,
) -> Result<Principal, AuthError> {
    let Some(header) = authorization else {
        if anonymous_pull {
            return Ok(Principal {
                key_id: None,
                key_name: None,
                scopes: Scopes::anonymous_pull(),
            });
        }
        return Err(AuthError::Missing);
    };
    let token = header
        .strip_prefix("Bearer ")
        .ok_or(AuthError::BadHeader)?
        .trim();
    let key = ApiKey::parse(token).map_err(AuthError::Malformed)?;
    let (id, entry) = store.find_key(&key)?.ok_or(AuthError::Unknown)?;
    let now = now_ms();
    if entry.expires_at_ms.is_some_and(|t| t <= now) {
        return Err(AuthError::Expired(id));
    }
    let scopes = entry
        .scopes
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<Scope>, _>>()
        .and_then(Scopes::new)
        .map_err(|e| AuthError::BadStoredScopes(id.clone(), e))?;
    last_used.touch(&id, now);
    Ok(Principal {
        key_id: Some(id),
        key_name: Some(entry.name),
        scopes,
    })
}
