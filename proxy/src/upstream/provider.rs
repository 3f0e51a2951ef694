//! Service providers at run time: their upstreams, metrics, and the domain index that routes a
//! request to exactly one of them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use xsigate_plugin_sdk::QueryMatch;

use super::health::Health;
use super::identity::user_domain;
use super::peer::{Upstream, UpstreamError, load_ca};
use super::pool::Pool;
use crate::config::{AppletMode, Config, HealthCheckConfig, Secret, SsoConfig};
use crate::metrics::{Metrics, ProviderMetrics};

#[derive(Debug)]
pub struct Provider {
    pub id: String,
    /// The provider's position in the configuration, which the plugin host's chains follow.
    pub index: usize,
    pub xsps: Pool,
    pub gateway: HashMap<String, Upstream>,
    pub applets: HashMap<String, Applet>,
    /// Browser origins allowed to call xsigate with this provider's sessions (CORS), as
    /// `scheme://host[:port]`.
    pub cors_origins: HashSet<String>,
    pub metrics: ProviderMetrics,
    pub health_check: HealthCheckConfig,
    /// Trust store for HTTPS XSPs, used by the health checker as well as the proxy.
    pub ca_file: Option<PathBuf>,
    /// The `[[plugins]]` entries this provider uses, in its order (`plugins = [...]`); the
    /// plugin host builds their hook chains.
    pub plugins: Vec<String>,
    /// Administrator credentials, for requests the host makes on the provider's behalf.
    pub master: Option<Master>,
    /// Where redirect logins (single sign-on) come back to, and end.
    pub sso: Option<SsoConfig>,
    /// The client for [`Provider::send_xsi`], made on first use (after the process installed
    /// its TLS provider).
    pub(super) xsi_client: OnceLock<Result<reqwest::Client, String>>,
}

/// A web application shown beside the dialer, reached under `/apps/<name>/` or by redirect.
#[derive(Debug)]
pub struct Applet {
    pub mode: AppletMode,
    /// Where a redirect sends the browser.
    pub url: url::Url,
    /// Where proxied requests go.
    pub upstream: Upstream,
}

/// A provider's master (administrator) login. The password never formats.
#[derive(Debug, Clone)]
pub struct Master {
    pub user: String,
    pub password: Secret,
}

impl Master {
    /// The `Authorization` value the master's requests carry.
    pub fn authorization(&self) -> String {
        use base64::Engine as _;
        let pair = format!("{}:{}", self.user, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

impl Provider {
    /// A client for requests the host itself sends to this provider's upstreams: it trusts what
    /// the proxy trusts (`ca_file`, else the system roots) and never follows redirects.
    pub fn client_builder(
        &self,
    ) -> Result<reqwest::ClientBuilder, Box<dyn std::error::Error + Send + Sync>> {
        let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(ca_file) = &self.ca_file {
            let pem = std::fs::read(ca_file)?;
            builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?);
        }
        Ok(builder)
    }

    /// Every upstream of the provider: XSPs first, then gateway services and proxied applets.
    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        let applets = self
            .applets
            .values()
            .filter(|a| a.mode == AppletMode::Proxy)
            .map(|a| &a.upstream);
        self.xsps
            .members
            .iter()
            .chain(self.gateway.values())
            .chain(applets)
    }
}

/// How a request maps to a provider.
#[derive(Debug)]
pub enum Resolution<'a> {
    Found(&'a Arc<Provider>),
    /// Neither credentials nor path name a user with a domain.
    NoIdentity,
    /// The domain belongs to no provider.
    Unknown,
    /// Credentials and path name users of different providers.
    Conflict,
}

#[derive(Debug)]
pub struct Providers {
    by_domain: HashMap<String, Arc<Provider>>,
    by_email_domain: HashMap<String, Arc<Provider>>,
    /// Longest prefix first.
    by_number_prefix: Vec<(String, Arc<Provider>)>,
    pub all: Vec<Arc<Provider>>,
    /// Where requests that reach no provider are counted.
    pub unrouted: ProviderMetrics,
}

impl Providers {
    pub fn build(config: &Config, metrics: &Metrics) -> Result<Self, UpstreamError> {
        let mut by_domain = HashMap::new();
        let mut by_email_domain = HashMap::new();
        let mut by_number_prefix = Vec::new();
        let mut all = Vec::new();
        for (index, (id, provider)) in config.providers.iter().enumerate() {
            let ca = provider.ca_file.as_deref().map(load_ca).transpose()?;
            let health = &provider.health_check;
            let xsps = provider
                .xsp
                .iter()
                .enumerate()
                .map(|(i, url)| {
                    let name = format!("xsp{}", i + 1);
                    Upstream::new(
                        name.clone(),
                        url,
                        ca.clone(),
                        config.server.timeouts.clone(),
                        Health::new(health.fall, health.rise),
                        metrics.for_upstream(id, &name, true),
                    )
                })
                .collect();
            let gateway = provider
                .gateway
                .iter()
                .map(|(name, url)| {
                    let upstream = Upstream::new(
                        name.clone(),
                        url,
                        None,
                        config.server.timeouts.clone(),
                        Health::new(health.fall, health.rise),
                        metrics.for_upstream(id, name, false),
                    );
                    (name.clone(), upstream)
                })
                .collect();
            let applets = provider
                .applets
                .iter()
                .map(|(name, applet)| {
                    let upstream = Upstream::new(
                        format!("app-{name}"),
                        &applet.url,
                        None,
                        config.server.timeouts.clone(),
                        Health::new(health.fall, health.rise),
                        metrics.for_upstream(id, &format!("app-{name}"), false),
                    );
                    let applet = Applet {
                        mode: applet.mode,
                        url: applet.url.clone(),
                        upstream,
                    };
                    (name.clone(), applet)
                })
                .collect();
            let runtime = Arc::new(Provider {
                id: id.clone(),
                index,
                xsps: Pool::new(xsps),
                gateway,
                applets,
                cors_origins: provider
                    .cors_origins
                    .iter()
                    .map(|o| o.origin().ascii_serialization())
                    .collect(),
                metrics: metrics.for_provider(id),
                health_check: provider.health_check.clone(),
                ca_file: provider.ca_file.clone(),
                plugins: provider.plugins.clone(),
                master: provider.master.as_ref().map(|m| Master {
                    user: m.user.clone(),
                    password: m.password.clone(),
                }),
                sso: provider.sso.clone(),
                xsi_client: OnceLock::new(),
            });
            for domain in &provider.domains {
                by_domain.insert(domain.clone(), Arc::clone(&runtime));
            }
            for domain in &provider.email_domains {
                by_email_domain.insert(domain.clone(), Arc::clone(&runtime));
            }
            for prefix in &provider.number_prefixes {
                by_number_prefix.push((prefix.clone(), Arc::clone(&runtime)));
            }
            all.push(runtime);
        }
        by_number_prefix.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(Self {
            by_domain,
            by_email_domain,
            by_number_prefix,
            all,
            unrouted: metrics.for_provider("none"),
        })
    }

    /// Picks the provider for a transparent-mode request from the user ids it carries. The
    /// credentials decide; a path user of another provider is a conflict, never a guess.
    pub fn resolve(
        &self,
        credential_user: Option<&str>,
        path_user: Option<&str>,
    ) -> Resolution<'_> {
        let lookup =
            |user: Option<&str>| user.and_then(user_domain).map(|d| self.by_domain.get(&*d));
        match (lookup(credential_user), lookup(path_user)) {
            (Some(Some(a)), Some(Some(b))) if !Arc::ptr_eq(a, b) => Resolution::Conflict,
            (Some(Some(p)), _) => Resolution::Found(p),
            (Some(None), _) => Resolution::Unknown,
            (None, Some(Some(p))) => Resolution::Found(p),
            (None, Some(None)) => Resolution::Unknown,
            (None, None) => Resolution::NoIdentity,
        }
    }

    /// Resolves every upstream host once, blocking; for start-up, before serving.
    pub fn resolve_all_blocking(&self) {
        for provider in &self.all {
            for upstream in provider.upstreams() {
                if !upstream.resolve_blocking() {
                    tracing::warn!(provider = %provider.id, upstream = %upstream.name, "upstream host does not resolve yet");
                }
            }
        }
    }

    /// The provider with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Provider>> {
        self.all.iter().find(|p| p.id == id)
    }

    /// The provider the configuration names for a login page's query, and what matched: the
    /// domain of a user id, then of an e-mail address, then the longest number prefix of a
    /// phone number. `None` when nothing does; only reverse lookups may then find the user.
    pub fn identify(&self, query: &str) -> Option<(&Arc<Provider>, QueryMatch)> {
        if let Some(domain) = user_domain(query) {
            return match self.by_domain.get(&*domain) {
                Some(provider) => Some((provider, QueryMatch::UserDomain)),
                None => self
                    .by_email_domain
                    .get(&*domain)
                    .map(|provider| (provider, QueryMatch::EmailDomain)),
            };
        }
        let number = xsigate_plugin_sdk::phone_number(query)?;
        self.by_number_prefix
            .iter()
            .find(|(prefix, _)| number.starts_with(prefix.as_str()))
            .map(|(_, provider)| (provider, QueryMatch::NumberPrefix))
    }

    /// Ready when every provider has at least one XSP that passed its health check.
    pub fn ready(&self) -> bool {
        self.all.iter().all(|p| p.xsps.any_up())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> Providers {
        let text = r#"
            [providers.acme]
            domains = ["acme.example", "acme2.example"]
            xsp = ["http://127.0.0.1:1"]
            email_domains = ["acme.com"]
            number_prefixes = ["+1202", "+1202555"]
            [providers.beta]
            domains = ["beta.example"]
            xsp = ["http://127.0.0.1:2"]
            number_prefixes = ["+120255501"]
        "#;
        let config = crate::config::load(&crate::config::Source {
            name: "t.toml".to_owned(),
            text,
            base_dir: std::path::Path::new("."),
        })
        .unwrap();
        Providers::build(&config, &Metrics::new().unwrap()).unwrap()
    }

    fn id(resolution: Resolution<'_>) -> String {
        match resolution {
            Resolution::Found(p) => p.id.clone(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn login_queries_find_providers_by_domain_e_mail_domain_or_longest_prefix() {
        let p = providers();
        let id = |query: &str| p.identify(query).map(|(p, _)| p.id.as_str());
        assert_eq!(id("alice@Acme2.example"), Some("acme"));
        assert_eq!(id("alice.smith@acme.com"), Some("acme"));
        let matched = |query: &str| p.identify(query).map(|(_, m)| m);
        assert_eq!(matched("a@acme.example"), Some(QueryMatch::UserDomain));
        assert_eq!(matched("a@acme.com"), Some(QueryMatch::EmailDomain));
        assert_eq!(matched("+12025550101"), Some(QueryMatch::NumberPrefix));
        assert_eq!(id("alice@gmail.com"), None);
        assert_eq!(id("+1 202 555 0101"), Some("beta"));
        assert_eq!(id("+1 202 555 0201"), Some("acme"));
        assert_eq!(id("+1 303 555 0101"), None);
        assert_eq!(id("2025550101"), None);
        assert_eq!(id("alice"), None);
    }

    #[test]
    fn routes_by_credentials_then_path() {
        let p = providers();
        assert_eq!(id(p.resolve(Some("a@acme.example"), None)), "acme");
        assert_eq!(id(p.resolve(None, Some("b@ACME2.example"))), "acme");
        assert_eq!(
            id(p.resolve(Some("a@acme.example"), Some("b@acme2.example"))),
            "acme"
        );
        assert_eq!(
            id(p.resolve(Some("a@acme.example"), Some("b@beta.example"))),
            "Conflict"
        );
        assert_eq!(id(p.resolve(Some("a@nowhere.example"), None)), "Unknown");
        assert_eq!(
            id(p.resolve(Some("a@acme.example"), Some("b@nowhere.example"))),
            "acme"
        );
        assert_eq!(id(p.resolve(Some("5551234"), None)), "NoIdentity");
        assert_eq!(id(p.resolve(None, None)), "NoIdentity");
    }
}
