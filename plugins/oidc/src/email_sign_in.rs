//! What both e-mail reverse-lookup plugins (`idp-o365`, `idp-onelogin`) do around the relying
//! party: offer the method at ZTP only to an address the company directory knows, and after
//! the identity provider returns, match the verified address to exactly one BroadWorks user
//! with the provider's master credentials (*m *e). Each plugin brings its directory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use xsigate_broadworks::directory::{Lookup, is_email, option};
use xsigate_broadworks::rejected;
use xsigate_plugin_sdk::{
    Authentication, Error, FlowStage, Grant, Login, LoginOption, LoginQuery, Manifest, RedirectFlow,
};

use crate::relying_party::{RelyingParty, email_of};

/// A company directory: does one of its users have this address? `identity_provider` is the
/// provider's relying party, for a directory whose app-only token comes from it (Graph's does).
pub trait CompanyDirectory {
    fn knows(
        &self,
        identity_provider: &RelyingParty,
        address: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// Where the ID token carries the address: `email`, `preferred_username` (usually the user
/// principal name in Entra ID, the username in OneLogin), or `upn`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailClaim {
    #[default]
    Email,
    PreferredUsername,
    Upn,
}

impl EmailClaim {
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::PreferredUsername => "preferred_username",
            Self::Upn => "upn",
        }
    }

    /// The scope that has the identity provider put the claim in the ID token: `email` for
    /// `email` (Entra ID sends it only then), `profile` for `preferred_username`.
    pub fn scope(self) -> String {
        match self {
            Self::Email => "openid email",
            Self::PreferredUsername => "openid profile",
            Self::Upn => "openid",
        }
        .to_owned()
    }
}

/// Checks an allow-list of ID-token algorithms from a plugin's configuration: at least one,
/// and only public-key ones (an HMAC secret would be the client secret, which the identity
/// provider shares with whoever registered the app).
pub fn check_algorithms(algorithms: &[crate::Algorithm]) -> Result<(), &'static str> {
    use crate::Algorithm::{HS256, HS384, HS512};
    if algorithms.is_empty()
        || algorithms
            .iter()
            .any(|a| matches!(a, HS256 | HS384 | HS512))
    {
        return Err("name at least one public-key algorithm (RS256, PS256, ES256, ...)");
    }
    Ok(())
}

/// One provider's sign-in: its relying party, its company directory and the claim.
#[derive(Debug)]
pub struct EmailSignIn<D> {
    pub relying_party: RelyingParty,
    pub directory: D,
    pub email_claim: EmailClaim,
}

impl<D: CompanyDirectory> EmailSignIn<D> {
    /// The option for `address` at ZTP, if the directory knows it. It reveals what the
    /// identity provider's own sign-in page would.
    pub async fn option_for(
        &self,
        address: &str,
        method: &str,
        label: &str,
    ) -> Result<Option<LoginOption>, Error> {
        let address = address.trim();
        if !is_email(address) || !self.directory.knows(&self.relying_party, address).await? {
            return Ok(None);
        }
        let mut offered = option(method, label);
        offered
            .details
            .insert("requires".to_owned(), json!(["master", "email"]));
        Ok(Some(offered))
    }

    /// Both stages of the redirect flow: the identity provider's URL at the start, and at the
    /// callback the one BroadWorks user the verified address belongs to.
    pub async fn authenticate(
        &self,
        lookup: &Lookup,
        login: &Login,
    ) -> Result<Authentication, Error> {
        let Some(flow) = &login.flow else {
            return Err(Error::msg(
                "a single sign-on needs the host's redirect flow",
            ));
        };
        match flow.stage {
            FlowStage::Start => {
                let hint = Some(login.user.trim()).filter(|user| is_email(user));
                let location = self.relying_party.authorization_url(flow, hint).await?;
                Ok(Authentication::Redirect { location })
            }
            FlowStage::Callback => self.callback(lookup, login, &login.params, flow).await,
        }
    }

    async fn callback(
        &self,
        lookup: &Lookup,
        login: &Login,
        params: &Map<String, Value>,
        flow: &RedirectFlow,
    ) -> Result<Authentication, Error> {
        let claims = match self.relying_party.finish(params, flow).await? {
            Ok(claims) => claims,
            Err(declined) => return Ok(rejected(&declined.to_string())),
        };
        let claim = self.email_claim.name().to_owned();
        let Some(address) = email_of(&claims, std::slice::from_ref(&claim)) else {
            return Ok(rejected("the ID token carries no usable e-mail address"));
        };
        match lookup.sole_user_by_email(&login.provider, &address).await? {
            Ok(user) => Ok(Authentication::Authenticated {
                user_id: user.user_id,
                grant: Grant::default(),
            }),
            Err(reason) => Ok(rejected(reason)),
        }
    }
}

/// A whole e-mail sign-in method: its label, the directory search after the identity
/// provider, and each provider's sign-in. The plugins' `IdentityProvider` hooks forward here.
#[derive(Debug)]
pub struct EmailSignIns<D> {
    method: &'static str,
    label: String,
    lookup: Lookup,
    by_provider: HashMap<String, EmailSignIn<D>>,
}

impl<D: CompanyDirectory> EmailSignIns<D> {
    pub fn new(
        method: &'static str,
        label: String,
        lookup: Lookup,
        by_provider: HashMap<String, EmailSignIn<D>>,
    ) -> Self {
        Self {
            method,
            label,
            lookup,
            by_provider,
        }
    }

    /// A redirect login that finds its user with master credentials.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            login_methods: vec![self.method.to_owned()],
            redirect_login: true,
            needs_master: true,
            ..Manifest::default()
        }
    }

    pub async fn login_options(&self, query: &LoginQuery) -> Result<Vec<LoginOption>, Error> {
        let Some(sign_in) = self.by_provider.get(&query.provider) else {
            return Ok(Vec::new());
        };
        Ok(sign_in
            .option_for(&query.query, self.method, &self.label)
            .await?
            .into_iter()
            .collect())
    }

    pub async fn authenticate(&self, login: &Login) -> Result<Authentication, Error> {
        match self.by_provider.get(&login.provider) {
            Some(sign_in) => sign_in.authenticate(&self.lookup, login).await,
            None => Ok(rejected("the provider is not configured for this method")),
        }
    }
}

/// An app-only access token for a directory API, kept until a minute before it expires.
#[derive(Debug, Default)]
pub struct AppToken {
    held: Mutex<Option<(String, Instant)>>,
}

/// A token is renewed this long before it expires.
const EARLY: Duration = Duration::from_secs(60);

impl AppToken {
    fn held(&self) -> std::sync::MutexGuard<'_, Option<(String, Instant)>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The kept token, or a new one from `fetch` (the token and its lifetime in seconds).
    pub async fn get<F>(&self, fetch: F) -> Result<String, Error>
    where
        F: Future<Output = Result<(String, u64), Error>>,
    {
        if let Some((token, until)) = &*self.held() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = fetch.await?;
        let life = Duration::from_secs(lifetime).saturating_sub(EARLY);
        *self.held() = Some((token.clone(), Instant::now() + life));
        Ok(token)
    }

    /// Forgets the token (the API refused it: revoked or rotated).
    pub fn forget(&self) {
        *self.held() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_asks_for_the_claim_that_carries_the_address() {
        assert_eq!(EmailClaim::Email.scope(), "openid email");
        assert_eq!(EmailClaim::PreferredUsername.scope(), "openid profile");
        assert_eq!(EmailClaim::Upn.scope(), "openid");
    }
}
