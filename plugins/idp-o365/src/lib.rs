//! Office 365 single sign-on: the user logs in at their company's Microsoft Entra ID tenant
//! (OpenID Connect, authorization code with PKCE, v2.0 endpoints), and the e-mail address of
//! the verified ID token is matched to the one BroadWorks user whose profile carries it,
//! searched with the provider's master credentials (*m *e). The user never types a BroadWorks
//! password.
//!
//! The option is offered at ZTP only to an address Microsoft Graph finds in the provider's
//! tenant (`mail` or user principal name), so it reveals what the tenant's own sign-in page
//! would. The host runs the redirect flow; `xsigate-oidc` builds the authorization URL and
//! checks what comes back (see `docs/sso.md`).

mod config;
mod graph;

use xsigate_broadworks::directory::Lookup;
use xsigate_oidc::{EmailSignIn, EmailSignIns, RelyingParty, TokenAuth};
use xsigate_plugin_sdk::{
    Authentication, Error, Host, IdentityProvider, Login, LoginOption, LoginQuery, Manifest, Plugin,
};

use config::{Config, Tenant};
use graph::Graph;

/// The login method this plugin serves.
pub const METHOD: &str = "o365";

#[derive(Debug)]
pub struct O365Idp(EmailSignIns<Graph>);

fn sign_in(host: Host, id: &str, tenant: &Tenant) -> Result<EmailSignIn<Graph>, Error> {
    tenant.validate(id)?;
    let relying_party = RelyingParty::new(
        host,
        tenant.issuer(),
        tenant.client_id.clone(),
        tenant.client_secret(id)?,
        TokenAuth::ClientSecretPost,
        tenant.email_claim.scope(),
        tenant.algorithms.clone(),
    );
    Ok(EmailSignIn {
        relying_party,
        directory: Graph::new(host, &tenant.graph_url, tenant.graph_scope()),
        email_claim: tenant.email_claim,
    })
}

impl Plugin for O365Idp {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        let by_provider = config
            .providers
            .iter()
            .map(|(id, tenant)| Ok((id.clone(), sign_in(host, id, tenant)?)))
            .collect::<Result<_, Error>>()?;
        let lookup = Lookup::new(host, config.anchor_users)?;
        Ok(Self(EmailSignIns::new(
            METHOD,
            config.label,
            lookup,
            by_provider,
        )))
    }

    fn manifest(&self) -> Manifest {
        self.0.manifest()
    }
}

impl IdentityProvider for O365Idp {
    async fn login_options(&self, query: LoginQuery) -> Result<Vec<LoginOption>, Error> {
        self.0.login_options(&query).await
    }

    async fn authenticate(&self, login: Login) -> Result<Authentication, Error> {
        self.0.authenticate(&login).await
    }
}

xsigate_plugin_sdk::export_plugin!(O365Idp => IdentityProvider);
