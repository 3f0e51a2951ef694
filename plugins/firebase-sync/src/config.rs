//! The plugin's `config` table: write batching for the whole plugin and, per provider, its
//! database, service account and how writes authenticate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use xsigate_plugin_sdk::{Error, secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// By provider id. A provider that lists the plugin without an entry here is not synced.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderFirebase>,
    /// How long a change waits for others to share its write.
    #[serde(default = "default_batch_ms")]
    pub batch_ms: u64,
    /// Most locations in one multi-path write.
    #[serde(default = "default_batch_paths")]
    pub batch_paths: usize,
    /// Writes one database may have in flight at once (each for other users).
    #[serde(default = "default_writes_in_flight")]
    pub writes_in_flight: usize,
}

fn default_batch_ms() -> u64 {
    25
}

fn default_batch_paths() -> usize {
    500
}

fn default_writes_in_flight() -> usize {
    4
}

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        if !(1..=1000).contains(&self.batch_ms) {
            return Err(Error::msg("batch_ms: must be between 1 and 1000"));
        }
        if !(1..=10_000).contains(&self.batch_paths) {
            return Err(Error::msg("batch_paths: must be between 1 and 10000"));
        }
        if !(1..=64).contains(&self.writes_in_flight) {
            return Err(Error::msg("writes_in_flight: must be between 1 and 64"));
        }
        for (id, provider) in &self.providers {
            provider.validate(id)?;
        }
        Ok(())
    }

    pub fn batch_window(&self) -> Duration {
        Duration::from_millis(self.batch_ms)
    }
}

/// One provider's Realtime Database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFirebase {
    /// `https://<db>.firebaseio.com`, a regional `https://<db>.<region>.firebasedatabase.app`,
    /// or an emulator's `http://127.0.0.1:<port>?ns=<db>`. What browsers are told as well.
    pub database_url: String,
    /// The service account's JSON key file (as the Firebase console downloads it).
    pub service_account_file: Option<PathBuf>,
    /// Or an environment variable holding that JSON.
    pub service_account_env: Option<String>,
    /// The OAuth2 token endpoint; the service account's `token_uri` when unset.
    pub token_url: Option<String>,
    /// A legacy database secret (file or environment variable): writes then authenticate with
    /// it instead of an OAuth2 access token. Deprecated by Google; for databases that still
    /// rely on it.
    pub database_secret_file: Option<PathBuf>,
    pub database_secret_env: Option<String>,
    /// Lifetime of the browser's custom token: only the window to exchange it for a session.
    #[serde(default = "default_custom_token_seconds")]
    pub custom_token_seconds: u64,
    /// Bound on each write and token request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Whose lamps each logged-in user sees (busy lamp field, docs/firebase.md).
    #[serde(default)]
    pub blf: BlfPolicy,
    /// How often each watcher's monitored users are read again (BLF list, group, enterprise).
    #[serde(default = "default_blf_refresh_seconds")]
    pub blf_refresh_seconds: u64,
}

/// Who may watch whom, as BroadWorks says: read with the provider's master credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlfPolicy {
    /// The users on the watcher's Busy Lamp Field service list.
    #[default]
    List,
    /// Everyone in the watcher's group.
    Group,
    /// Everyone in the watcher's enterprise (or service provider).
    Enterprise,
    /// No lamps.
    Off,
}

fn default_blf_refresh_seconds() -> u64 {
    60
}

fn default_custom_token_seconds() -> u64 {
    3600
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl ProviderFirebase {
    pub fn validate(&self, id: &str) -> Result<(), Error> {
        let key =
            |name: &str, problem: &str| Error::msg(format!("providers.{id}.{name}: {problem}"));
        let url = self.database_url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url.contains('#')
            || url.len() <= "https://".len()
        {
            return Err(key(
                "database_url",
                "must be an http(s) URL such as https://<db>.firebaseio.com",
            ));
        }
        if !(1..=3600).contains(&self.blf_refresh_seconds) {
            return Err(key("blf_refresh_seconds", "must be between 1 and 3600"));
        }
        if let Some(token_url) = &self.token_url {
            if !(token_url.starts_with("https://") || token_url.starts_with("http://")) {
                return Err(key("token_url", "must be an http(s) URL"));
            }
        }
        match (&self.service_account_file, &self.service_account_env) {
            (Some(_), Some(_)) => {
                return Err(key(
                    "service_account_file",
                    "give either service_account_file or service_account_env, not both",
                ));
            }
            (None, None) => {
                return Err(key(
                    "service_account_file",
                    "a service account is required (service_account_file or service_account_env): it signs the browsers' custom tokens",
                ));
            }
            _ => {}
        }
        if self.database_secret_file.is_some() && self.database_secret_env.is_some() {
            return Err(key(
                "database_secret_file",
                "give either database_secret_file or database_secret_env, not both",
            ));
        }
        if !(60..=3600).contains(&self.custom_token_seconds) {
            return Err(key(
                "custom_token_seconds",
                "must be between 60 and 3600 (Firebase refuses custom tokens valid for more than an hour)",
            ));
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            return Err(key("timeout_ms", "must be between 100 and 120000"));
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn blf_refresh(&self) -> Duration {
        Duration::from_secs(self.blf_refresh_seconds)
    }

    /// The service account's JSON, from its file or variable.
    pub fn service_account_json(&self, id: &str) -> Result<String, Error> {
        secret::read(
            &format!("providers.{id}"),
            ("service_account_file", self.service_account_file.as_deref()),
            ("service_account_env", self.service_account_env.as_deref()),
        )?
        .ok_or_else(|| Error::msg(format!("providers.{id}.service_account_file: not set")))
    }

    /// The legacy database secret, when one is configured.
    pub fn database_secret(&self, id: &str) -> Result<Option<String>, Error> {
        Ok(secret::read(
            &format!("providers.{id}"),
            ("database_secret_file", self.database_secret_file.as_deref()),
            ("database_secret_env", self.database_secret_env.as_deref()),
        )?
        .map(|s| s.trim().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn provider(extra: &str) -> Result<ProviderFirebase, String> {
        let text = format!(
            "{{\"database_url\": \"https://demo.firebaseio.com\", \"service_account_env\": \"XSIGATE_FIREBASE_TEST_UNSET\"{extra}}}"
        );
        xsigate_plugin_sdk::serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_an_hour_and_ten_seconds() {
        let p = provider("").unwrap();
        assert_eq!((p.custom_token_seconds, p.timeout_ms), (3600, 10_000));
        p.validate("demo").unwrap();
    }

    #[test]
    fn errors_name_the_provider_and_key() {
        let long = provider(", \"custom_token_seconds\": 7200").unwrap();
        let error = long.validate("demo").unwrap_err().to_string();
        assert!(
            error.contains("providers.demo.custom_token_seconds"),
            "{error}"
        );
        let both = provider(", \"service_account_file\": \"/x.json\"").unwrap();
        assert!(
            both.validate("demo")
                .unwrap_err()
                .to_string()
                .contains("providers.demo.service_account_file")
        );
        let mut ftp = provider("").unwrap();
        ftp.database_url = "ftp://demo".to_owned();
        assert!(
            ftp.validate("demo")
                .unwrap_err()
                .to_string()
                .contains("providers.demo.database_url")
        );
        assert!(
            provider(", \"secret\": \"x\"")
                .unwrap_err()
                .contains("unknown field")
        );
    }

    #[test]
    fn a_missing_variable_is_named_without_a_value() {
        let p = provider("").unwrap();
        let error = p.service_account_json("demo").unwrap_err().to_string();
        assert!(
            error.contains("providers.demo.service_account_env"),
            "{error}"
        );
        assert!(error.contains("XSIGATE_FIREBASE_TEST_UNSET"), "{error}");
    }
}
