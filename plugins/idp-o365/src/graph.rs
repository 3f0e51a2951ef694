//! Microsoft Graph, app-only: is an address one of the tenant's users? Asked at ZTP, so that
//! the Office 365 option is offered only to addresses the tenant knows.
//!
//! The token comes from the tenant's client-credentials grant (`scope=<graph>/.default`, which
//! means the application permissions an administrator granted: `User.Read.All`).

use std::time::Duration;

use serde::Deserialize;
use xsigate_oidc::{AppToken, CompanyDirectory, RelyingParty};
use xsigate_plugin_sdk::{Error, Host, HttpRequest};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Users {
    value: Vec<serde::de::IgnoredAny>,
}

/// One tenant's directory; its token comes from the tenant's own token endpoint.
#[derive(Debug)]
pub struct Graph {
    host: Host,
    graph_url: String,
    scope: String,
    token: AppToken,
}

impl Graph {
    pub fn new(host: Host, graph_url: &str, scope: String) -> Self {
        Self {
            host,
            graph_url: graph_url.trim_end_matches('/').to_owned(),
            scope,
            token: AppToken::default(),
        }
    }
}

impl CompanyDirectory for Graph {
    /// Whether a user of the tenant has this address as `mail` or as user principal name.
    async fn knows(&self, tenant: &RelyingParty, address: &str) -> Result<bool, Error> {
        let token = self
            .token
            .get(tenant.client_credentials(&self.scope))
            .await?;
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
            self.token.forget();
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
