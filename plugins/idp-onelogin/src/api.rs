//! OneLogin's API v2, with an API credential of the "Read users" scope: is an address one of
//! the account's users? Asked at ZTP, so that the OneLogin option is offered only to addresses
//! the account knows.
//!
//! The token comes from the API's own client-credentials grant (`POST /auth/oauth2/v2/token`
//! with the credential as HTTP Basic and `{"grant_type": "client_credentials"}`), not from the
//! OpenID Connect app, whose credentials cannot read users.

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use xsigate_oidc::{AppToken, CompanyDirectory, RelyingParty};
use xsigate_plugin_sdk::{Error, Host, HttpRequest};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    expires_in: u64,
}

/// One account's user list.
pub struct Users {
    host: Host,
    api_url: String,
    client_id: String,
    client_secret: String,
    token: AppToken,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl Users {
    pub fn new(host: Host, api_url: String, client_id: String, client_secret: String) -> Self {
        Self {
            host,
            api_url,
            client_id,
            client_secret,
            token: AppToken::default(),
        }
    }

    async fn grant(&self) -> Result<(String, u64), Error> {
        let credential = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.client_id, self.client_secret));
        let response = self
            .host
            .http(
                HttpRequest::post(&format!("{}/auth/oauth2/v2/token", self.api_url))
                    .header("authorization", &format!("Basic {credential}"))
                    .header("content-type", "application/json")
                    .timeout(TIMEOUT)
                    .body(r#"{"grant_type":"client_credentials"}"#),
            )
            .await?;
        if !response.is_success() {
            return Err(Error::msg(format!(
                "OneLogin refused the API credential ({})",
                response.status
            )));
        }
        let granted: Granted = response.json()?;
        Ok((granted.access_token, granted.expires_in))
    }
}

impl CompanyDirectory for Users {
    /// Whether a user of the account has this address as `email`.
    async fn knows(&self, _identity_provider: &RelyingParty, address: &str) -> Result<bool, Error> {
        let token = self.token.get(self.grant()).await?;
        let mut url = url::Url::parse(&format!("{}/api/2/users", self.api_url))
            .map_err(|_| Error::msg("api_url is not a URL"))?;
        url.query_pairs_mut()
            .append_pair("email", address)
            .append_pair("fields", "id");
        let response = self
            .host
            .http(
                HttpRequest::get(url.as_str())
                    .header("authorization", &format!("Bearer {token}"))
                    .timeout(TIMEOUT),
            )
            .await?;
        if response.status == 401 {
            self.token.forget();
        }
        if !response.is_success() {
            return Err(Error::msg(format!(
                "OneLogin answered {} to a user lookup",
                response.status
            )));
        }
        Ok(!response.json::<Vec<serde::de::IgnoredAny>>()?.is_empty())
    }
}
