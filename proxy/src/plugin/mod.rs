//! The plugin host: loads the libraries named in `[[plugins]]`, offers them the host services,
//! and calls their hooks on behalf of the request path and the login API.
//!
//! The boundary is the C ABI in `xsigate_plugin_sdk::abi`. The host owns all I/O: plugin code
//! awaits host futures and the host polls plugin futures, so no async runtime crosses the
//! boundary.
//!
//! - [`loader`]: opening a library and checking its ABI version; [`context`]: the host's side
//!   of the ABI (the function table a plugin calls); [`services`]: the asynchronous host calls
//!   (HTTP, XSI, store, sealing, publishing, timers, streams).
//! - [`hooks`]: a loaded plugin and its guarded hook calls; [`chain`]: a provider's plugins by
//!   hook; [`exchange`]: the request or response a filter sees; [`bus`]: events to consumers.
//!
//! Lifecycle: [`Plugins::load`] runs at start and for `xsigate check` (so a bad plugin is a
//! startup error, with no I/O done yet); [`Plugins::start`] attaches the host services and
//! starts event delivery and background workers when the server really serves.
//!
//! Layer: above [`crate::config`], [`crate::wire`], [`crate::metrics`], [`crate::state`] and
//! [`crate::upstream`] (a plugin's XSI calls go through its provider's XSP pool).

mod bus;
mod chain;
mod context;
mod exchange;
mod hooks;
mod loader;
mod metrics;
mod services;
mod streams;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};

pub use bus::SessionEvent;
pub use chain::{AuthenticateError, PluginChain};
pub use exchange::Exchange;
pub use hooks::{Answer, Hook, Plugin, PluginFailure};
pub use loader::{LoadFailure, PluginError};

use crate::audit::Audit;
use crate::cluster::Leases;
use crate::config::{Config, PluginConfig, ProviderConfig};
use crate::metrics::{Metrics, MetricsError};
use crate::state::Shared;
use crate::upstream::{Provider, Providers};
use bus::{Bus, EVENT_QUEUE, QueuedEvent, Subscriber};
use context::PluginContext;
use hooks::HookMetrics;
use metrics::HostMetrics;
use services::Services;

/// Why the plugins could not be loaded or started.
#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    #[error(transparent)]
    Load(#[from] PluginError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot build the plugins' HTTP client: {0}")]
    HttpClient(String),
}

/// Every loaded plugin.
#[derive(Debug)]
pub struct Plugins {
    by_name: HashMap<String, Arc<Plugin>>,
    /// In `[[plugins]]` order.
    all: Vec<Arc<Plugin>>,
    /// Each provider's chain, in configuration order: a provider's `index`.
    chains: Vec<PluginChain>,
    metrics: Option<HostMetrics>,
    /// Set by [`Plugins::start`].
    services: OnceLock<Arc<Services>>,
}

/// The chain of a provider that uses no plugins.
static NO_PLUGINS: LazyLock<PluginChain> = LazyLock::new(PluginChain::default);

impl Plugins {
    /// No plugins: what a configuration without `[[plugins]]` gets.
    pub fn none() -> Self {
        Self {
            by_name: HashMap::new(),
            all: Vec::new(),
            chains: Vec::new(),
            metrics: None,
            services: OnceLock::new(),
        }
    }

    /// Loads and initialises every `[[plugins]]` entry, and checks how providers combine them.
    pub fn load(config: &Config, metrics: &Metrics) -> Result<Self, PluginsError> {
        if config.plugins.is_empty() {
            return Ok(Self::none());
        }
        let host_metrics = HostMetrics::register(metrics)?;
        let mut plugins = Self::none();
        for entry in &config.plugins {
            let plugin = Arc::new(load_one(entry, metrics, &host_metrics)?);
            tracing::info!(
                plugin = %plugin.name,
                path = %plugin.path.display(),
                login_methods = ?plugin.manifest.login_methods,
                "plugin loaded"
            );
            plugins
                .by_name
                .insert(plugin.name.clone(), Arc::clone(&plugin));
            plugins.all.push(plugin);
        }
        plugins.metrics = Some(host_metrics);
        for (id, provider) in &config.providers {
            plugins.check_login_methods(id, provider)?;
            let chain = plugins.build_chain(id, provider);
            plugins.chains.push(chain);
        }
        Ok(plugins)
    }

    /// Publishes a login session's start or end to `plugins` (the session provider's
    /// `plugins = [...]`) that subscribed to its topic, and waits up to `wait` for their
    /// reports.
    ///
    /// A plugin that has not reported by the deadline is `{"state": "pending"}` and goes on
    /// with its work; one whose hook failed is `{"state": "failed"}` (the log says why).
    /// Plugins that write no report are left out.
    pub async fn publish_session(
        &self,
        plugins: &[String],
        event: &SessionEvent,
        wait: Duration,
    ) -> serde_json::Map<String, serde_json::Value> {
        self.publish_for_reports(
            event.topic(),
            |plugin| plugins.contains(&plugin.name),
            |plugin| event.payload_for(plugin),
            wait,
        )
        .await
    }

    /// Each plugin's failed hook calls (errors, panics, ABI breaks, timeouts) by hook, and its
    /// worker's restarts, counted since start: what the console shows beside the metrics.
    pub fn failure_counts(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        use prometheus::core::Collector as _;
        let mut counts: BTreeMap<String, BTreeMap<String, u64>> = self
            .all
            .iter()
            .map(|p| (p.name.clone(), BTreeMap::new()))
            .collect();
        let Some(metrics) = &self.metrics else {
            return counts;
        };
        let families = [
            (metrics.errors.collect(), None),
            (metrics.worker_restarts.collect(), Some("worker_restarts")),
        ];
        for (family, fixed) in families
            .iter()
            .flat_map(|(f, fixed)| f.iter().map(move |f| (f, *fixed)))
        {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                };
                let (Some(plugin), Some(what)) = (
                    label("plugin"),
                    fixed.map(str::to_owned).or_else(|| label("hook")),
                ) else {
                    continue;
                };
                // Counters hold whole numbers.
                #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let value = metric.get_counter().get_value() as u64;
                if value > 0 {
                    counts.entry(plugin).or_default().insert(what, value);
                }
            }
        }
        counts
    }

    /// Asks every plugin subscribed to an operator topic (`topics::OPERATOR_*`) and waits up
    /// to `wait` for their reports, as [`Plugins::publish_session`] does.
    pub async fn ask_operator_topic(
        &self,
        topic: &str,
        payload: &[u8],
        wait: Duration,
    ) -> serde_json::Map<String, serde_json::Value> {
        self.publish_for_reports(topic, |_| true, |_| Ok(payload.to_vec()), wait)
            .await
    }

    async fn publish_for_reports(
        &self,
        topic: &str,
        wanted: impl Fn(&Plugin) -> bool,
        payload_for: impl Fn(&Plugin) -> Result<Vec<u8>, serde_json::Error>,
        wait: Duration,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut reports = serde_json::Map::new();
        let Some(services) = self.services.get() else {
            return reports;
        };
        let mut pending = Vec::new();
        for subscriber in services.subscribers(topic).filter(|s| wanted(&s.plugin)) {
            let (report, received) = oneshot::channel();
            let queued = match payload_for(&subscriber.plugin) {
                Ok(payload) => services.enqueue(
                    subscriber,
                    QueuedEvent {
                        topic: topic.to_owned(),
                        payload,
                        report: Some(report),
                    },
                ),
                Err(e) => {
                    tracing::error!(plugin = %subscriber.plugin.name, topic, error = %e, "an event could not be written");
                    false
                }
            };
            if queued {
                pending.push((subscriber.plugin.name.clone(), received));
            } else {
                reports.insert(subscriber.plugin.name.clone(), json!({ "state": "failed" }));
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        for (name, received) in pending {
            match tokio::time::timeout_at(deadline, received).await {
                Ok(Ok(Some(report))) => {
                    reports.insert(name, report);
                }
                Ok(Ok(None)) => {}
                Ok(Err(_)) => {
                    reports.insert(name, json!({ "state": "failed" }));
                }
                Err(_) => {
                    reports.insert(name, json!({ "state": "pending" }));
                }
            }
        }
        reports
    }

    /// Two identity providers of one service provider must not claim the same login method,
    /// reverse lookups need the provider's master credentials, and redirect logins its `sso`.
    fn check_login_methods(&self, id: &str, provider: &ProviderConfig) -> Result<(), PluginError> {
        let mut claimed: HashMap<&str, &str> = HashMap::new();
        for plugin in provider.plugins.iter().filter_map(|n| self.by_name.get(n)) {
            let wiring = |reason: String| PluginError {
                origin: plugin.context.origin.clone(),
                name: plugin.name.clone(),
                path: plugin.path.clone(),
                reason: LoadFailure::Wiring(reason),
            };
            if plugin.manifest.reverse_lookup && provider.master.is_none() {
                return Err(wiring(format!(
                    "it looks users up with master credentials, and provider `{id}` has no \
                     `master`"
                )));
            }
            if plugin.manifest.redirect_login && provider.sso.is_none() {
                return Err(wiring(format!(
                    "its logins come back from an identity provider, and provider `{id}` has no \
                     `sso` table saying where"
                )));
            }
            for method in &plugin.manifest.login_methods {
                if let Some(first) = claimed.insert(method, &plugin.name) {
                    return Err(wiring(format!(
                        "provider `{id}` also uses plugin `{first}`, and both serve login \
                         method `{method}`"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The plugins acting on `provider`'s requests and logins, by hook. No map lookup: the
    /// chains follow the configuration's order, as [`Provider::index`] does.
    pub fn chain(&self, provider: &Provider) -> &PluginChain {
        self.chains
            .get(provider.index)
            .filter(|chain| chain.provider == provider.id)
            .unwrap_or(&NO_PLUGINS)
    }

    /// The chain of a provider's `plugins = [...]` (names were validated with the config).
    /// An identity provider that needs master credentials serves nothing for a provider
    /// without them: its options are not offered and its methods are unknown there.
    fn build_chain(&self, id: &str, provider: &ProviderConfig) -> PluginChain {
        let mut chain = PluginChain {
            provider: id.to_owned(),
            ..PluginChain::default()
        };
        for plugin in provider.plugins.iter().filter_map(|n| self.by_name.get(n)) {
            let api = &plugin.api;
            let add = |hooked: bool, list: &mut Vec<Arc<Plugin>>| {
                if hooked {
                    list.push(Arc::clone(plugin));
                }
            };
            add(api.request_filter.is_some(), &mut chain.request);
            add(
                api.upstream_request_filter.is_some(),
                &mut chain.upstream_request,
            );
            add(api.response_filter.is_some(), &mut chain.response);
            let usable = !plugin.manifest.needs_master || provider.master.is_some();
            if plugin.is_identity_provider() && !usable {
                tracing::warn!(
                    provider = id,
                    plugin = %plugin.name,
                    "the plugin's login methods need master credentials, which the provider \
                     lacks: they are not offered"
                );
            }
            add(plugin.is_identity_provider() && usable, &mut chain.identity);
        }
        chain
    }

    /// Attaches the host services and starts event delivery and background workers, all on the
    /// host's runtime. Only the first call does anything.
    pub fn start(
        &self,
        shared: &Shared,
        leases: &Arc<Leases>,
        providers: &Arc<Providers>,
        audit: &Audit,
    ) -> Result<(), PluginsError> {
        let Some(metrics) = &self.metrics else {
            return Ok(());
        };
        if self.services.get().is_some() {
            return Ok(());
        }
        // The plugins' HTTP client uses the process's TLS provider, as Pingora does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("xsigate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PluginsError::HttpClient(e.to_string()))?;

        let mut bus = Bus::new();
        let mut queues = Vec::new();
        for plugin in &self.all {
            let topics = plugin.context.subscriptions();
            if topics.is_empty() {
                continue;
            }
            let (sender, receiver) = mpsc::channel::<QueuedEvent>(EVENT_QUEUE);
            for topic in topics {
                bus.entry(topic).or_default().push(Subscriber {
                    plugin: Arc::clone(plugin),
                    queue: sender.clone(),
                });
            }
            queues.push((Arc::clone(plugin), receiver));
        }

        let runtime = &shared.runtime;
        let services = Arc::new(Services {
            runtime: runtime.clone(),
            http,
            // Channel streams connect as proxied requests do: Pingora's connector, the XSP's
            // resolved stream peer with its TLS settings.
            connector: pingora::connectors::TransportConnector::new(None),
            providers: Arc::clone(providers),
            store: Arc::clone(&shared.store),
            leases: Arc::clone(leases),
            sealer: Arc::clone(&shared.sealer),
            bus,
            metrics: metrics.clone(),
            audit: audit.clone(),
        });
        for plugin in &self.all {
            let _ = plugin.context.services.set(Box::new(Arc::clone(&services)));
            leases.count_for(&plugin.name);
        }
        let _ = self.services.set(Arc::clone(&services));
        for (plugin, mut receiver) in queues {
            runtime.spawn(async move {
                while let Some(event) = receiver.recv().await {
                    let delivered = plugin.deliver(event.topic, event.payload).await;
                    // After a failure the sender is dropped unanswered: the publisher hears
                    // "failed". The next event is delivered either way.
                    if let (Ok(report), Some(sender)) = (delivered, event.report) {
                        let _ = sender.send(report);
                    }
                }
            });
        }
        for plugin in &self.all {
            let restarts = metrics.worker_restarts.with_label_values(&[&plugin.name]);
            runtime.spawn(Arc::clone(plugin).supervise_worker(restarts));
        }
        Ok(())
    }
}

fn load_one(
    entry: &PluginConfig,
    metrics: &Metrics,
    host_metrics: &HostMetrics,
) -> Result<Plugin, PluginError> {
    let error = |reason| PluginError {
        origin: entry.origin.clone(),
        name: entry.name.clone(),
        path: entry.path.clone(),
        reason,
    };
    let config = serde_json::Value::Object(entry.config.clone()).to_string();
    let context = PluginContext::new(&entry.name, &entry.origin, metrics.clone());
    let loaded = loader::load(&entry.path, &config, context).map_err(error)?;
    if loaded.api.on_event.is_none() && !loaded.context.subscriptions().is_empty() {
        return Err(error(LoadFailure::Wiring(
            "it subscribes to topics but implements no EventConsumer".to_owned(),
        )));
    }
    if !loaded.manifest.login_methods.is_empty()
        && (loaded.api.login_options.is_none() || loaded.api.authenticate.is_none())
    {
        return Err(error(LoadFailure::Wiring(
            "it declares login methods but implements no IdentityProvider".to_owned(),
        )));
    }
    // Every plugin's series exist from the start, at zero, so that rates and alerts see them.
    host_metrics
        .events_dropped
        .with_label_values(&[&entry.name]);
    host_metrics
        .worker_restarts
        .with_label_values(&[&entry.name]);
    let hooks = Hook::ALL
        .iter()
        .map(|hook| {
            let labels = [entry.name.as_str(), hook.as_str()];
            HookMetrics {
                calls: host_metrics.calls.with_label_values(&labels),
                errors: host_metrics.errors.with_label_values(&labels),
                duration: host_metrics.duration.with_label_values(&labels),
            }
        })
        .collect();
    Ok(Plugin {
        name: entry.name.clone(),
        path: entry.path.clone(),
        manifest: loaded.manifest,
        api: loaded.api,
        context: loaded.context,
        call_timeout: Duration::from_millis(entry.call_timeout_ms),
        hooks,
    })
}
