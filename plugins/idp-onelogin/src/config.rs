//! The plugin's `config` table: the label, the anchor users whose directories the verified
//! address is searched in, and per provider its OneLogin account: the OpenID Connect app and
//! an API credential that may read users.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use xsigate_oidc::{Algorithm, EmailClaim, TokenAuth};
use xsigate_plugin_sdk::{Error, secret};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What the login page shows for this method.
    #[serde(default = "default_label")]
    pub label: String,
    /// One user per enterprise whose directory is searched for the verified address; the
    /// provider's master credentials must cover them.
    pub anchor_users: Vec<String>,
    /// By provider id. A provider that lists the plugin without an entry here offers nothing.
    pub providers: BTreeMap<String, Account>,
}

fn default_label() -> String {
    "OneLogin".to_owned()
}

/// One provider's OneLogin account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The account's subdomain: `acme` for `https://acme.onelogin.com`.
    pub subdomain: String,
    /// The OpenID Connect app's client ID.
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    /// How the app authenticates at the token endpoint, as set on the app's SSO tab
    /// ("Token Endpoint: Basic" by default, or "POST").
    #[serde(default = "default_token_auth")]
    pub token_auth: TokenAuth,
    /// An API credential with the "Read users" scope, for ZTP's lookups.
    pub api_client_id: String,
    pub api_client_secret_file: Option<PathBuf>,
    pub api_client_secret_env: Option<String>,
    /// The OpenID Connect issuer; `https://<subdomain>.onelogin.com/oidc/2` by default.
    pub issuer: Option<String>,
    /// The API's base URL; `https://<subdomain>.onelogin.com` by default (or a regional
    /// `https://api.us.onelogin.com`).
    pub api_url: Option<String>,
    /// The ID-token claim that carries the user's e-mail address.
    #[serde(default)]
    pub email_claim: EmailClaim,
    /// The signature algorithms accepted on ID tokens.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
}

fn default_token_auth() -> TokenAuth {
    TokenAuth::ClientSecretBasic
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256]
}

impl Account {
    /// Checks the table; errors name `providers.<id>.<key>`.
    pub fn validate(&self, id: &str) -> Result<(), Error> {
        let key = |name: &str, why: &str| Error::msg(format!("providers.{id}.{name}: {why}"));
        let label = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if self.subdomain.is_empty() || !self.subdomain.chars().all(label) {
            return Err(key(
                "subdomain",
                "the account's subdomain, such as `acme` for acme.onelogin.com",
            ));
        }
        for (name, value) in [
            ("client_id", &self.client_id),
            ("api_client_id", &self.api_client_id),
        ] {
            if value.trim().is_empty() {
                return Err(key(name, "must not be empty"));
            }
        }
        for (name, value) in [("issuer", &self.issuer), ("api_url", &self.api_url)] {
            let Some(value) = value else { continue };
            let url = url::Url::parse(value).map_err(|_| key(name, "must be a URL"))?;
            if !matches!(url.scheme(), "https" | "http") || url.query().is_some() {
                return Err(key(name, "must be an http or https URL without a query"));
            }
        }
        xsigate_oidc::check_algorithms(&self.algorithms).map_err(|why| key("algorithms", why))?;
        Ok(())
    }

    fn account_url(&self) -> String {
        format!("https://{}.onelogin.com", self.subdomain)
    }

    pub fn issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("{}/oidc/2", self.account_url()))
    }

    pub fn api_url(&self) -> String {
        self.api_url
            .clone()
            .unwrap_or_else(|| self.account_url())
            .trim_end_matches('/')
            .to_owned()
    }

    pub fn client_secret(&self, id: &str) -> Result<String, Error> {
        required_secret(
            id,
            ("client_secret_file", self.client_secret_file.as_deref()),
            ("client_secret_env", self.client_secret_env.as_deref()),
            "the OpenID Connect app's client secret",
        )
    }

    pub fn api_client_secret(&self, id: &str) -> Result<String, Error> {
        required_secret(
            id,
            (
                "api_client_secret_file",
                self.api_client_secret_file.as_deref(),
            ),
            (
                "api_client_secret_env",
                self.api_client_secret_env.as_deref(),
            ),
            "the API credential's client secret",
        )
    }
}

fn required_secret(
    id: &str,
    file: (&str, Option<&std::path::Path>),
    env: (&str, Option<&str>),
    what: &str,
) -> Result<String, Error> {
    let (file_key, env_key) = (file.0, env.0);
    secret::read(&format!("providers.{id}"), file, env)?
        .map(|secret| secret.trim().to_owned())
        .ok_or_else(|| {
            Error::msg(format!(
                "providers.{id}.{file_key}: {what} is required ({file_key} or {env_key})"
            ))
        })
}
