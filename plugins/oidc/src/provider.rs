//! The identity provider as the relying party knows it: its discovery document and its
//! signing keys, fetched through the host and cached. An unknown `kid` refreshes the keys once
//! (the provider rotated them), but not more often than [`KEYS_REFRESH_MIN`], so tokens with
//! made-up key ids cannot make the gateway hammer the identity provider.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use xsigate_plugin_sdk::{Error, Host, HttpRequest};

use crate::id_token::SigningKeys;

/// How long discovery and keys are used before they are fetched again.
const METADATA_LIFE: Duration = Duration::from_secs(24 * 3600);
const KEYS_LIFE: Duration = Duration::from_secs(3600);
/// The least time between two fetches of the keys.
pub const KEYS_REFRESH_MIN: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of the discovery document (OpenID Connect Discovery §3) a relying party uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

#[derive(Debug, Default)]
struct Cached {
    metadata: Option<(Metadata, Instant)>,
    keys: Option<(SigningKeys, Instant)>,
    /// When an unknown `kid` last made the keys be fetched.
    refreshed: Option<Instant>,
}

/// One identity provider, named by its issuer.
#[derive(Debug)]
pub struct IdentityProvider {
    host: Host,
    issuer: String,
    cached: Mutex<Cached>,
}

impl IdentityProvider {
    pub fn new(host: Host, issuer: String) -> Self {
        Self {
            host,
            issuer,
            cached: Mutex::new(Cached::default()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached> {
        // A panic while holding the lock left plain data behind: still usable.
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The discovery document, from the cache or `<issuer>/.well-known/openid-configuration`.
    /// Its `issuer` must be the configured one exactly (Discovery §4.3), or a provider could
    /// speak for another.
    pub async fn metadata(&self) -> Result<Metadata, Error> {
        if let Some((metadata, at)) = &self.cached().metadata {
            if at.elapsed() < METADATA_LIFE {
                return Ok(metadata.clone());
            }
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let response = self
            .host
            .http(HttpRequest::get(&url).timeout(FETCH_TIMEOUT))
            .await?;
        if !response.is_success() {
            return Err(Error::msg(format!(
                "the identity provider's discovery answered {}",
                response.status
            )));
        }
        let metadata: Metadata = response.json()?;
        if metadata.issuer != self.issuer {
            return Err(Error::msg(
                "the identity provider's discovery names another issuer",
            ));
        }
        self.cached().metadata = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    /// The signing keys: cached, or fetched when old, or when `refresh` asks (a token named
    /// a key the cache lacks) and no refresh happened in the last [`KEYS_REFRESH_MIN`]. The
    /// first rotation is seen at once, even right after a fetch.
    pub async fn keys(&self, refresh: bool) -> Result<SigningKeys, Error> {
        {
            let mut cached = self.cached();
            let may_refresh = refresh
                && cached
                    .refreshed
                    .is_none_or(|at| at.elapsed() >= KEYS_REFRESH_MIN);
            if let Some((keys, at)) = &cached.keys {
                if at.elapsed() < KEYS_LIFE && !may_refresh {
                    return Ok(keys.clone());
                }
            }
            if may_refresh {
                cached.refreshed = Some(Instant::now());
            }
        }
        let metadata = self.metadata().await?;
        let response = self
            .host
            .http(HttpRequest::get(&metadata.jwks_uri).timeout(FETCH_TIMEOUT))
            .await?;
        if !response.is_success() {
            return Err(Error::msg(format!(
                "the identity provider's key set answered {}",
                response.status
            )));
        }
        let keys = SigningKeys::from_jwks(&response.body)
            .map_err(|_| Error::msg("the identity provider's key set is not a JWK Set"))?;
        self.cached().keys = Some((keys.clone(), Instant::now()));
        Ok(keys)
    }
}
