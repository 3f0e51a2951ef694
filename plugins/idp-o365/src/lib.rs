//! Office 365 single sign-on: the user logs in at their company's Microsoft Entra ID tenant
//! (OpenID Connect, authorization code with PKCE, v2.0 endpoints), and the e-mail address of
//! the verified ID token is matched to the one BroadWorks user whose profile carries it,
//! searched with the provider's master credentials (*m *e). The user never types a BroadWorks
//! password.
//!
//! The option is offered at ZTP only to an address Microsoft Graph finds in the provider's
//! tenant (`mail` or user principal name), so it reveals what the tenant's own sign-in page
//! would. The host runs the redirect flow; this plugin builds the authorization URL and checks
//! what comes back (see `docs/sso.md`).

mod config;
mod graph;

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use xsigate_broadworks::directory::{Lookup, option};
use xsigate_broadworks::rejected;
use xsigate_oidc::{RelyingParty, TokenAuth, email_of};
use xsigate_plugin_sdk::{
    Authentication, Error, FlowStage, Grant, Host, IdentityProvider, Login, LoginOption,
    LoginQuery, Manifest, Plugin, serde_json,
};

use config::{Config, Tenant};
use graph::Directory;

/// The login method this plugin serves.
pub const METHOD: &str = "o365";

/// One provider's tenant: the relying party, the directory, and the claim.
#[derive(Debug)]
struct TenantClient {
    relying_party: RelyingParty,
    directory: Directory,
    email_claim: String,
}

#[derive(Debug)]
pub struct O365Idp {
    label: String,
    lookup: Lookup,
    tenants: HashMap<String, TenantClient>,
}

impl TenantClient {
    fn new(host: Host, id: &str, tenant: &Tenant) -> Result<Self, Error> {
        tenant.validate(id)?;
        let secret = tenant.client_secret(id)?;
        Ok(Self {
            relying_party: RelyingParty::new(
                host,
                tenant.issuer(),
                tenant.client_id.clone(),
                secret.clone(),
                TokenAuth::ClientSecretPost,
                scope(tenant.email_claim.name()),
                tenant.algorithms.clone(),
            ),
            directory: Directory::new(
                host,
                tenant.token_endpoint(),
                &tenant.graph_url,
                tenant.client_id.clone(),
                secret,
            ),
            email_claim: tenant.email_claim.name().to_owned(),
        })
    }
}

/// `openid`, with `email` when that claim is wanted (Entra ID sends it only then) and
/// `profile` for `preferred_username`.
fn scope(claim: &str) -> String {
    match claim {
        "email" => "openid email",
        "preferred_username" => "openid profile",
        _ => "openid",
    }
    .to_owned()
}

impl Plugin for O365Idp {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        let tenants = config
            .providers
            .iter()
            .map(|(id, tenant)| Ok((id.clone(), TenantClient::new(host, id, tenant)?)))
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            label: config.label,
            lookup: Lookup::new(host, config.anchor_users)?,
            tenants,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            login_methods: vec![METHOD.to_owned()],
            redirect_login: true,
            needs_master: true,
            ..Manifest::default()
        }
    }
}

/// An e-mail address: `local@domain` with a dotted domain and nothing a URL or a filter
/// would read specially.
fn is_email(text: &str) -> bool {
    text.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.contains('@')
            && text
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '\'' && c != '*')
    })
}

impl IdentityProvider for O365Idp {
    async fn login_options(&self, query: LoginQuery) -> Result<Vec<LoginOption>, Error> {
        let address = query.query.trim();
        let Some(tenant) = self.tenants.get(&query.provider) else {
            return Ok(Vec::new());
        };
        if !is_email(address) || !tenant.directory.knows(address).await? {
            return Ok(Vec::new());
        }
        let mut offered = option(METHOD, &self.label);
        offered
            .details
            .insert("requires".to_owned(), json!(["master", "email"]));
        Ok(vec![offered])
    }

    async fn authenticate(&self, login: Login) -> Result<Authentication, Error> {
        let Some(flow) = &login.flow else {
            return Err(Error::msg(
                "a single sign-on needs the host's redirect flow",
            ));
        };
        let Some(tenant) = self.tenants.get(&login.provider) else {
            return Ok(rejected("the provider has no tenant for this method"));
        };
        match flow.stage {
            FlowStage::Start => {
                let hint = Some(login.user.trim()).filter(|user| is_email(user));
                let location = tenant.relying_party.authorization_url(flow, hint).await?;
                Ok(Authentication::Redirect { location })
            }
            FlowStage::Callback => self.callback(tenant, &login, &login.params, flow).await,
        }
    }
}

impl O365Idp {
    async fn callback(
        &self,
        tenant: &TenantClient,
        login: &Login,
        params: &Map<String, Value>,
        flow: &xsigate_plugin_sdk::RedirectFlow,
    ) -> Result<Authentication, Error> {
        let claims = match tenant.relying_party.finish(params, flow).await? {
            Ok(claims) => claims,
            Err(declined) => return Ok(rejected(&declined.to_string())),
        };
        let Some(address) = email_of(&claims, std::slice::from_ref(&tenant.email_claim)) else {
            return Ok(rejected("the ID token carries no usable e-mail address"));
        };
        match self
            .lookup
            .sole_user_by_email(&login.provider, &address)
            .await?
        {
            Ok(user) => Ok(Authentication::Authenticated {
                user_id: user.user_id,
                grant: Grant::default(),
            }),
            Err(reason) => Ok(rejected(reason)),
        }
    }
}

xsigate_plugin_sdk::export_plugin!(O365Idp => IdentityProvider);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_addresses_are_looked_up() {
        assert!(is_email("alice.smith@acme.com"));
        for not in [
            "alice",
            "a@localhost",
            "o'brien@acme.com",
            "*@acme.com",
            "a b@acme.com",
            "a@b@acme.com",
        ] {
            assert!(!is_email(not), "{not}");
        }
    }

    #[test]
    fn the_scope_asks_for_the_claim_that_carries_the_address() {
        assert_eq!(scope("email"), "openid email");
        assert_eq!(scope("preferred_username"), "openid profile");
        assert_eq!(scope("upn"), "openid");
    }
}
