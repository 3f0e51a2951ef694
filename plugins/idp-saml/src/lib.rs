//! SAML 2.0 single sign-on (service-provider initiated): the user signs in at the company's
//! identity provider (ADFS, Okta, Ping, Shibboleth, ...), whose signed assertion vouches for an
//! e-mail address, matched to the one BroadWorks user whose profile carries it, searched with
//! the provider's master credentials (*m *e). The user never types a BroadWorks password.
//!
//! The host runs the redirect flow (its secrets, the browser binding, the callback served
//! once); this plugin writes the AuthnRequest (`request`), screens and verifies what comes back
//! (`screen`, `response`), keeps a replay cache of assertion IDs in the host's store, and
//! serves the service provider's metadata. `docs/sso.md` (SAML) states what is checked and why.

mod compat;
mod config;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod quiet;
mod request;
mod response;
mod screen;

use std::collections::HashMap;

use openssl::sha::sha256;
use samael::schema::Assertion;
use serde_json::Value;
use xsigate_broadworks::directory::{Lookup, is_email, option};
use xsigate_broadworks::rejected;
use xsigate_plugin_sdk::{
    Authentication, Error, FlowStage, Grant, Host, IdentityProvider, Login, LoginOption,
    LoginQuery, Manifest, MetadataRequest, Plugin, RedirectFlow, SignInMetadata, serde_json,
};

use config::{Config, Provider};

/// The login method this plugin serves.
pub const METHOD: &str = "saml";

const METADATA_TYPE: &str = "application/samlmetadata+xml";

pub struct SamlIdp {
    host: Host,
    label: String,
    lookup: Lookup,
    by_provider: HashMap<String, Provider>,
}

impl std::fmt::Debug for SamlIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlIdp")
            .field("providers", &self.by_provider)
            .finish_non_exhaustive()
    }
}

impl Plugin for SamlIdp {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        let by_provider = config
            .providers
            .iter()
            .map(|(id, table)| Ok((id.clone(), table.load(id)?)))
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            host,
            label: config.label,
            lookup: Lookup::new(host, config.anchor_users)?,
            by_provider,
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

impl IdentityProvider for SamlIdp {
    /// Offered for an address in one of the identity provider's domains: that reveals what
    /// the configuration says, nothing about any user.
    async fn login_options(&self, query: LoginQuery) -> Result<Vec<LoginOption>, Error> {
        let address = query.query.trim();
        let Some(provider) = self.by_provider.get(&query.provider) else {
            return Ok(Vec::new());
        };
        if !is_email(address) || !provider.signs_in(address) {
            return Ok(Vec::new());
        }
        let mut offered = option(METHOD, &self.label);
        offered.details.insert(
            "requires".to_owned(),
            serde_json::json!(["master", "email"]),
        );
        Ok(vec![offered])
    }

    async fn authenticate(&self, login: Login) -> Result<Authentication, Error> {
        let Some(provider) = self.by_provider.get(&login.provider) else {
            return Ok(rejected("the provider is not configured for this method"));
        };
        let Some(flow) = &login.flow else {
            return Err(Error::msg(
                "a single sign-on needs the host's redirect flow",
            ));
        };
        match flow.stage {
            FlowStage::Start => Ok(Authentication::Redirect {
                location: request::redirect_url(provider, flow)?,
            }),
            FlowStage::Callback => self.callback(provider, &login, flow).await,
        }
    }

    async fn sign_in_metadata(
        &self,
        request: MetadataRequest,
    ) -> Result<Option<SignInMetadata>, Error> {
        let Some(provider) = self.by_provider.get(&request.provider) else {
            return Ok(None);
        };
        Ok(Some(SignInMetadata {
            content_type: METADATA_TYPE.to_owned(),
            body: request::metadata(provider, &request.callback_url)?,
        }))
    }
}

impl SamlIdp {
    async fn callback(
        &self,
        provider: &Provider,
        login: &Login,
        flow: &RedirectFlow,
    ) -> Result<Authentication, Error> {
        let Some(encoded) = login.params.get("SAMLResponse").and_then(Value::as_str) else {
            return Ok(rejected("the callback carries no SAMLResponse"));
        };
        let request_id = request::request_id(&flow.nonce);
        let assertion = match response::verify(provider, encoded, &request_id, &flow.redirect_uri) {
            Ok(assertion) => assertion,
            Err(reason) => return Ok(rejected(reason)),
        };
        if !self.first_use(&assertion).await? {
            return Ok(rejected("the assertion was used before"));
        }
        let address = match provider.address_in(&assertion) {
            Ok(address) => address,
            Err(reason) => return Ok(rejected(reason)),
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

    /// Records the assertion's ID until it expires; false if it was recorded before. The
    /// store keeps it across restarts and, on a shared store, across instances.
    async fn first_use(&self, assertion: &Assertion) -> Result<bool, Error> {
        let digest = sha256(assertion.id.as_bytes());
        let key: String = std::iter::once("assertion/".to_owned())
            .chain(digest.iter().map(|b| format!("{b:02x}")))
            .collect();
        let store = self.host.store();
        if store.get(&key).await?.is_some() {
            return Ok(false);
        }
        store
            .put(&key, b"used", Some(response::usable_for(assertion)))
            .await?;
        Ok(true)
    }
}

impl Provider {
    /// Whether `address` is in one of the identity provider's domains.
    fn signs_in(&self, address: &str) -> bool {
        address.rsplit_once('@').is_some_and(|(_, domain)| {
            self.email_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
        })
    }

    /// The e-mail address the assertion vouches for: the `NameID`, or the one value of the
    /// configured attribute; in one of the identity provider's own domains, since it vouches
    /// for no other.
    fn address_in(&self, assertion: &Assertion) -> Result<String, &'static str> {
        let address = match &self.email_attribute {
            None => assertion
                .subject
                .as_ref()
                .and_then(|s| s.name_id.as_ref())
                .map(|n| n.value.trim().to_owned()),
            Some(name) => {
                let mut values = assertion
                    .attribute_statements
                    .iter()
                    .flatten()
                    .flat_map(|s| &s.attributes)
                    .filter(|a| a.name.as_deref() == Some(name))
                    .flat_map(|a| &a.values)
                    .filter_map(|v| v.value.as_deref());
                match (values.next(), values.next()) {
                    (Some(one), None) => Some(one.trim().to_owned()),
                    _ => None,
                }
            }
        };
        let address = address
            .filter(|a| is_email(a))
            .ok_or("the assertion carries no usable e-mail address")?;
        if !self.signs_in(&address) {
            return Err(
                "the assertion vouches for an address outside the identity provider's domains",
            );
        }
        Ok(address)
    }
}

xsigate_plugin_sdk::export_plugin!(SamlIdp => IdentityProvider);
