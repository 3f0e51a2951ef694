//! The plugins a provider uses, by hook, in the provider's order: what the request path and the
//! login API call.

use std::sync::Arc;

use xsigate_plugin_sdk::{
    Authentication, Login, LoginOption, LoginQuery, MetadataRequest, QueryMatch, SignInMetadata,
};

use super::hooks::{Plugin, PluginFailure};

/// The plugins a provider uses, per hook, in the provider's order.
#[derive(Debug, Default, Clone)]
pub struct PluginChain {
    /// The provider whose chain this is.
    pub provider: String,
    pub request: Vec<Arc<Plugin>>,
    pub upstream_request: Vec<Arc<Plugin>>,
    pub response: Vec<Arc<Plugin>>,
    pub identity: Vec<Arc<Plugin>>,
}

/// Why [`PluginChain::authenticate`] gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthenticateError {
    /// No identity provider of this provider serves the method.
    UnknownMethod,
    Failed(PluginFailure),
}

impl PluginChain {
    /// The identity providers that may act on a query matched this way: all of them when the
    /// configuration names the provider, only reverse lookups when it is just a candidate.
    fn identity_for(&self, matched: QueryMatch) -> impl Iterator<Item = &Arc<Plugin>> {
        self.identity
            .iter()
            .filter(move |p| matched != QueryMatch::Nothing || p.manifest.reverse_lookup)
    }

    /// Every identity provider's options; one that fails is logged and left out.
    pub async fn login_options(&self, query: &LoginQuery) -> Vec<LoginOption> {
        let mut options = Vec::new();
        for plugin in self.identity_for(query.matched) {
            if let Ok(found) = plugin.login_options(query).await {
                options.extend(found);
            }
        }
        options
    }

    /// Whether a filter of this chain declares `session_credentials`: something puts a login
    /// session's credentials on its XSI requests.
    pub fn acts_for_sessions(&self) -> bool {
        self.upstream_request
            .iter()
            .any(|p| p.manifest.session_credentials)
    }

    /// Whether an identity provider of this chain serves `method`.
    pub fn serves_login_method(&self, method: &str) -> bool {
        self.identity
            .iter()
            .any(|p| p.manifest.login_methods.iter().any(|m| m == method))
    }

    /// Whether `method` is a redirect login (single sign-on) in this chain.
    pub fn redirects(&self, method: &str) -> bool {
        self.identity.iter().any(|p| {
            p.manifest.redirect_login && p.manifest.login_methods.iter().any(|m| m == method)
        })
    }

    /// Authenticates with the identity provider that serves `login.method`.
    pub async fn authenticate(
        &self,
        login: &Login,
        matched: QueryMatch,
    ) -> Result<Authentication, AuthenticateError> {
        let plugin = self
            .identity_for(matched)
            .find(|p| p.manifest.login_methods.contains(&login.method))
            .ok_or(AuthenticateError::UnknownMethod)?;
        plugin
            .authenticate(login)
            .await
            .map_err(AuthenticateError::Failed)
    }

    /// The sign-in metadata of the redirect login `request.method`, if it has one here.
    pub async fn sign_in_metadata(
        &self,
        request: &MetadataRequest,
    ) -> Result<Option<SignInMetadata>, PluginFailure> {
        let Some(plugin) = self.identity.iter().find(|p| {
            p.manifest.redirect_login && p.manifest.login_methods.contains(&request.method)
        }) else {
            return Ok(None);
        };
        plugin.sign_in_metadata(request).await
    }
}
