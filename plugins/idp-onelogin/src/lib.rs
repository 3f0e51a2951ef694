//! OneLogin single sign-on: the user logs in at their company's OneLogin account (OpenID
//! Connect `/oidc/2`, authorization code with PKCE), and the e-mail address of the verified ID
//! token is matched to the one BroadWorks user whose profile carries it, searched with the
//! provider's master credentials (*m *e). The user never types a BroadWorks password.
//!
//! The option is offered at ZTP only to an address OneLogin's API finds among the account's
//! users, so it reveals what the account's own sign-in page would. The host runs the redirect
//! flow; `xsigate-oidc` builds the authorization URL and checks what comes back (see
//! `docs/sso.md`).

mod api;
mod config;

use xsigate_broadworks::directory::Lookup;
use xsigate_oidc::{EmailSignIn, EmailSignIns, RelyingParty};
use xsigate_plugin_sdk::{
    Authentication, Error, Host, IdentityProvider, Login, LoginOption, LoginQuery, Manifest, Plugin,
};

use api::Users;
use config::{Account, Config};

/// The login method this plugin serves.
pub const METHOD: &str = "onelogin";

#[derive(Debug)]
pub struct OneLoginIdp(EmailSignIns<Users>);

fn sign_in(host: Host, id: &str, account: &Account) -> Result<EmailSignIn<Users>, Error> {
    account.validate(id)?;
    let relying_party = RelyingParty::new(
        host,
        account.issuer(),
        account.client_id.clone(),
        account.client_secret(id)?,
        account.token_auth,
        account.email_claim.scope(),
        account.algorithms.clone(),
    );
    let users = Users::new(
        host,
        account.api_url(),
        account.api_client_id.clone(),
        account.api_client_secret(id)?,
    );
    Ok(EmailSignIn {
        relying_party,
        directory: users,
        email_claim: account.email_claim,
    })
}

impl Plugin for OneLoginIdp {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        let by_provider = config
            .providers
            .iter()
            .map(|(id, account)| Ok((id.clone(), sign_in(host, id, account)?)))
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

impl IdentityProvider for OneLoginIdp {
    async fn login_options(&self, query: LoginQuery) -> Result<Vec<LoginOption>, Error> {
        self.0.login_options(&query).await
    }

    async fn authenticate(&self, login: Login) -> Result<Authentication, Error> {
        self.0.authenticate(&login).await
    }
}

xsigate_plugin_sdk::export_plugin!(OneLoginIdp => IdentityProvider);
