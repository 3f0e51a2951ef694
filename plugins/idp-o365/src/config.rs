//! The plugin's `config` table: the label, the anchor users whose directories the verified
//! address is searched in, and per provider its Entra ID tenant and app registration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use xsigate_oidc::{Algorithm, EmailClaim};
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
    pub providers: BTreeMap<String, Tenant>,
}

fn default_label() -> String {
    "Office 365".to_owned()
}

/// One provider's Entra ID tenant and the app registered there for xsigate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// The directory (tenant) ID. Entra ID's v2.0 issuer names the tenant by its ID, so a
    /// domain name here could never match the ID token's `iss`.
    pub tenant: String,
    /// The application (client) ID.
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    /// The Entra ID login host; another national cloud's, or a stand-in's in tests.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// Microsoft Graph's base URL.
    #[serde(default = "default_graph")]
    pub graph_url: String,
    /// The resource the app-only token is asked for (`<resource>/.default`): `graph_url`
    /// unless Graph is reached through another name than its own.
    pub graph_resource: Option<String>,
    /// The ID-token claim that carries the user's e-mail address.
    #[serde(default)]
    pub email_claim: EmailClaim,
    /// The signature algorithms accepted on ID tokens.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".to_owned()
}

fn default_graph() -> String {
    "https://graph.microsoft.com".to_owned()
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256]
}

impl Tenant {
    /// Checks the table; errors name `providers.<id>.<key>`.
    pub fn validate(&self, id: &str) -> Result<(), Error> {
        let key = |name: &str, why: &str| Error::msg(format!("providers.{id}.{name}: {why}"));
        let guid = self.tenant.len() == 36
            && self.tenant.bytes().enumerate().all(|(i, b)| {
                matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
            });
        if !guid {
            return Err(key(
                "tenant",
                "the directory (tenant) ID, a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47",
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err(key("client_id", "must not be empty"));
        }
        for (name, value) in [
            ("authority", Some(&self.authority)),
            ("graph_url", Some(&self.graph_url)),
            ("graph_resource", self.graph_resource.as_ref()),
        ] {
            let Some(value) = value else { continue };
            let url = url::Url::parse(value).map_err(|_| key(name, "must be a URL"))?;
            if !matches!(url.scheme(), "https" | "http") || url.query().is_some() {
                return Err(key(name, "must be an http or https URL without a query"));
            }
        }
        xsigate_oidc::check_algorithms(&self.algorithms).map_err(|why| key("algorithms", why))?;
        Ok(())
    }

    /// The issuer of the tenant's v2.0 tokens.
    pub fn issuer(&self) -> String {
        format!(
            "{}/{}/v2.0",
            self.authority.trim_end_matches('/'),
            self.tenant
        )
    }

    /// The scope of the app-only token for Graph: the application permissions an
    /// administrator granted the app (`User.Read.All`).
    pub fn graph_scope(&self) -> String {
        let resource = self.graph_resource.as_deref().unwrap_or(&self.graph_url);
        format!("{}/.default", resource.trim_end_matches('/'))
    }

    pub fn client_secret(&self, id: &str) -> Result<String, Error> {
        secret::read(
            &format!("providers.{id}"),
            ("client_secret_file", self.client_secret_file.as_deref()),
            ("client_secret_env", self.client_secret_env.as_deref()),
        )?
        .map(|secret| secret.trim().to_owned())
        .ok_or_else(|| {
            Error::msg(format!(
                "providers.{id}.client_secret_file: the app's client secret is required \
                 (client_secret_file or client_secret_env)"
            ))
        })
    }
}
