//! An identity provider that asks the operator's own HTTP service who a user is: the worked
//! example of `plugins/README.md`.
//!
//! The service answers one call, `POST {url}/authenticate` with `{"provider", "user",
//! "password"}`: `200 {"user_id"}` (the BroadWorks userId) on success, `401` or `403` on
//! wrong credentials. The login page offers the method for any e-mail-shaped query without
//! asking the service, so the options never tell whether an account exists.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use xsigate_plugin_sdk::{
    Authentication, Counter, Error, Host, HttpRequest, IdentityProvider, Login, LoginOption,
    LoginQuery, Manifest, Plugin,
};

/// The plugin's `config` table in `providers.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the operator's service.
    url: String,
    /// The login method this plugin serves.
    #[serde(default = "default_method")]
    method: String,
    /// What the login page shows for it.
    #[serde(default = "default_label")]
    label: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_method() -> String {
    "webhook".to_owned()
}

fn default_label() -> String {
    "Company account".to_owned()
}

fn default_timeout_ms() -> u64 {
    3_000
}

#[derive(Debug)]
pub struct WebhookIdp {
    host: Host,
    config: Config,
    authentications: Counter,
}

/// What the service answers on success.
#[derive(Debug, Deserialize)]
struct Found {
    user_id: String,
}

#[derive(Debug, Serialize)]
struct Credentials<'a> {
    provider: &'a str,
    user: &'a str,
    password: &'a str,
}

impl Plugin for WebhookIdp {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        if !(config.url.starts_with("https://") || config.url.starts_with("http://")) {
            return Err(Error::msg("url: must be an http:// or https:// URL"));
        }
        let authentications = host.counter(
            "authentications_total",
            "Login attempts checked with the service, by result.",
            &["result"],
        )?;
        Ok(Self {
            host,
            config,
            authentications,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            login_methods: vec![self.config.method.clone()],
            // It asks its own service, not the provider's directory: offered only where the
            // configuration names the provider.
            reverse_lookup: false,
            ..Manifest::default()
        }
    }
}

impl WebhookIdp {
    fn post(&self, path: &str, body: &impl Serialize) -> Result<HttpRequest, Error> {
        let url = format!("{}/{path}", self.config.url.trim_end_matches('/'));
        HttpRequest::post(&url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .json(body)
    }
}

impl IdentityProvider for WebhookIdp {
    async fn login_options(&self, query: LoginQuery) -> Result<Vec<LoginOption>, Error> {
        // From the query's shape alone: asking the service here would tell anyone who types an
        // address whether it has an account.
        if !query.query.contains('@') {
            return Ok(Vec::new());
        }
        Ok(vec![LoginOption {
            method: self.config.method.clone(),
            label: self.config.label.clone(),
            user_id: None,
            details: Default::default(),
        }])
    }

    async fn authenticate(&self, login: Login) -> Result<Authentication, Error> {
        let Some(password) = login.password.as_deref() else {
            return Ok(Authentication::Rejected {
                reason: "no password given".to_owned(),
            });
        };
        let request = self.post(
            "authenticate",
            &Credentials {
                provider: &login.provider,
                user: &login.user,
                password,
            },
        )?;
        let response = self.host.http(request).await?;
        let (result, outcome) = match response.status {
            200 => {
                let found: Found = response.json()?;
                let outcome = Authentication::Authenticated {
                    user_id: found.user_id,
                    grant: Default::default(),
                };
                ("accepted", outcome)
            }
            401 | 403 => (
                "rejected",
                Authentication::Rejected {
                    reason: format!("the service answered {}", response.status),
                },
            ),
            status => {
                self.authentications.inc(&["failed"]);
                return Err(Error::msg(format!("authenticate answered {status}")));
            }
        };
        self.authentications.inc(&[result]);
        self.host
            .debug(&format!("login {result} for method {}", self.config.method));
        Ok(outcome)
    }
}

xsigate_plugin_sdk::export_plugin!(WebhookIdp => IdentityProvider);
