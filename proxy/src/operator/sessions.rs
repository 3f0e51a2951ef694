//! Operators' console sessions: a random token in the console's own cookie, kept only as a
//! hash in the store under a namespace of its own, so a user's session token can never name
//! one and an operator's can never name a user's. The CSRF token every change needs is derived
//! from the session token (a hash under a context of its own): unguessable without the
//! cookie, stable for the session, nothing more to keep.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::store::{Store, StoreError, unix_ms};
use crate::state::token::{new_token, token_hash, well_formed};

/// The store namespace of console sessions.
const NAMESPACE: &str = "operator-sessions";

/// A signed-in operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleSession {
    pub user: String,
    created_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ConsoleSessions {
    store: Arc<dyn Store>,
    idle: Duration,
    lifetime: Duration,
}

impl ConsoleSessions {
    pub fn new(store: Arc<dyn Store>, idle: Duration, lifetime: Duration) -> Self {
        Self {
            store,
            idle,
            lifetime,
        }
    }

    fn key(token: &str) -> String {
        crate::text::hex(&token_hash(token))
    }

    /// A new session for `user`; returns its token.
    pub async fn create(&self, user: &str) -> Result<String, StoreError> {
        let token = new_token();
        let session = ConsoleSession {
            user: user.to_owned(),
            created_ms: unix_ms(),
        };
        self.put(&token, &session).await?;
        Ok(token)
    }

    async fn put(&self, token: &str, session: &ConsoleSession) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(session).unwrap_or_default();
        self.store
            .kv_put(NAMESPACE, &Self::key(token), &bytes, Some(self.idle))
            .await
    }

    /// The live session a token names, its idle time restarted; `None` for anything else.
    pub async fn resume(&self, token: &str) -> Result<Option<ConsoleSession>, StoreError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let Some(bytes) = self.store.kv_get(NAMESPACE, &Self::key(token)).await? else {
            return Ok(None);
        };
        let Ok(session) = serde_json::from_slice::<ConsoleSession>(&bytes) else {
            return Ok(None);
        };
        let age = unix_ms().saturating_sub(session.created_ms);
        if u128::try_from(age).unwrap_or(u128::MAX) >= self.lifetime.as_millis() {
            self.end(token).await?;
            return Ok(None);
        }
        self.put(token, &session).await?;
        Ok(Some(session))
    }

    pub async fn end(&self, token: &str) -> Result<(), StoreError> {
        if well_formed(token) {
            self.store.kv_delete(NAMESPACE, &Self::key(token)).await?;
        }
        Ok(())
    }

    /// The CSRF token of the session `token` names.
    pub fn csrf_token(token: &str) -> String {
        use base64::Engine as _;
        let derived = token_hash(&format!("xsigate console csrf {token}"));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(derived)
    }

    /// Whether `presented` is the CSRF token of the session `token` names (hashes of equal
    /// length compared, so timing says nothing about it).
    pub fn csrf_matches(token: &str, presented: &str) -> bool {
        well_formed(presented) && token_hash(presented) == token_hash(&Self::csrf_token(token))
    }
}
