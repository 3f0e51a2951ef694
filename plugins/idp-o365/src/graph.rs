//! Microsoft Graph, app-only: is an address one of the tenant's users? Asked at ZTP, so that
//! the Office 365 option is offered only to addresses the tenant knows.
//!
//! The token comes from the client-credentials grant (`scope=<graph>/.default`, which means
//! the application permissions an administrator granted: `User.Read.All`) and is kept until a
//! minute before it expires.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use xsigate_plugin_sdk::{Error, Host, HttpRequest};

const TIMEOUT: Duration = Duration::from_secs(10);
/// A token is renewed this long before it expires.
const EARLY: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct Users {
    value: Vec<serde::de::IgnoredAny>,
}

/// One tenant's directory.
pub struct Directory {
    host: Host,
    token_endpoint: String,
    graph_url: String,
    client_id: String,
    client_secret: String,
    token: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("graph_url", &self.graph_url)
            .finish_non_exhaustive()
    }
}

impl Directory {
    pub fn new(
        host: Host,
        token_endpoint: String,
        graph_url: &str,
        client_id: String,
        client_secret: String,
    ) -> Self {
        Self {
            host,
            token_endpoint,
            graph_url: graph_url.trim_end_matches('/').to_owned(),
            client_id,
            client_secret,
            token: Mutex::new(None),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<(String, Instant)>> {
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn token(&self) -> Result<String, Error> {
        if let Some((token, until)) = &*self.cached() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", &self.client_secret)
            .append_pair("scope", &format!("{}/.default", self.graph_url))
            .finish();
        let response = self
            .host
            .http(
                HttpRequest::post(&self.token_endpoint)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .timeout(TIMEOUT)
                    .body(form),
            )
            .await?;
        if !response.is_success() {
            return Err(Error::msg(format!(
                "the tenant's token endpoint refused the app's credentials ({})",
                response.status
            )));
        }
        let answer: TokenAnswer = response.json()?;
        let life = Duration::from_secs(answer.expires_in).saturating_sub(EARLY);
        *self.cached() = Some((answer.access_token.clone(), Instant::now() + life));
        Ok(answer.access_token)
    }

    /// Whether a user of the tenant has this address as `mail` or as user principal name.
    pub async fn knows(&self, address: &str) -> Result<bool, Error> {
        let token = self.token().await?;
        // OData string literals double their single quotes.
        let literal = address.replace('\'', "''");
        let filter = format!("mail eq '{literal}' or userPrincipalName eq '{literal}'");
        let mut url = url::Url::parse(&format!("{}/v1.0/users", self.graph_url))
            .map_err(|_| Error::msg("graph_url is not a URL"))?;
        url.query_pairs_mut()
            .append_pair("$filter", &filter)
            .append_pair("$select", "id");
        let response = self
            .host
            .http(
                HttpRequest::get(url.as_str())
                    .header("authorization", &format!("Bearer {token}"))
                    .timeout(TIMEOUT),
            )
            .await?;
        if response.status == 401 {
            // Revoked or rotated: fetch a new token next time.
            *self.cached() = None;
        }
        if !response.is_success() {
            return Err(Error::msg(format!(
                "Microsoft Graph answered {} to a user lookup",
                response.status
            )));
        }
        Ok(!response.json::<Users>()?.value.is_empty())
    }
}
