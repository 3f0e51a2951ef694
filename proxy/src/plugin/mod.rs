//! The plugin host: loads the libraries named in `[[plugins]]`, offers them the host services,
//! and calls their hooks on behalf of the request path.
//!
//! The boundary is the C ABI in `xsigate_plugin_sdk::abi`. The host owns all I/O: plugin code
//! awaits host futures and the host polls plugin futures, so no async runtime crosses the
//! boundary. Every hook call is guarded the same way ([`Plugin::invoke`]): counted, timed,
//! limited in time, and any error, panic or ABI violation becomes a [`PluginFailure`] that
//! fails only the request (or event) at hand.
//!
//! Lifecycle: [`Plugins::load`] runs at start and for `xsigate check` (so a bad plugin is a
//! startup error, with no I/O done yet); [`Plugins::start`] attaches the host services and
//! starts event delivery and background workers when the server really serves.
#![allow(
    unsafe_code,
    reason = "calls the plugin's C hooks with the handles the ABI describes"
)]

mod context;
mod exchange;
mod loader;
mod metrics;
mod services;

use std::collections::HashMap;
use std::ffi::c_void;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt as _;
use prometheus::{Histogram, IntCounter};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use xsigate_plugin_sdk::abi::{self, Buf, FfiFuture, Outcome, PluginApi};
use xsigate_plugin_sdk::topics::{self, SessionEnded, SessionStarted};
use xsigate_plugin_sdk::{Authentication, Login, LoginOption, LoginQuery, Manifest, QueryMatch};

pub use exchange::Exchange;
pub use loader::{LoadFailure, PluginError};

use crate::config::{Config, PluginConfig, ProviderConfig};
use crate::host::Host;
use crate::metrics::{Metrics, MetricsError};
use crate::provider::Providers;
use crate::respond::ErrorCode;
use context::PluginContext;
use metrics::HostMetrics;
use services::{Bus, EVENT_QUEUE, QueuedEvent, Services, Subscriber};

/// Background workers are started again after a failure, waiting this long at first and
/// doubling up to the maximum.
const WORKER_BACKOFF: Duration = Duration::from_secs(1);
const WORKER_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A plugin hook, as named in metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    RequestFilter,
    UpstreamRequestFilter,
    ResponseFilter,
    LoginOptions,
    Authenticate,
    OnEvent,
    Worker,
}

impl Hook {
    const ALL: [Self; 7] = [
        Self::RequestFilter,
        Self::UpstreamRequestFilter,
        Self::ResponseFilter,
        Self::LoginOptions,
        Self::Authenticate,
        Self::OnEvent,
        Self::Worker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestFilter => "request_filter",
            Self::UpstreamRequestFilter => "upstream_request_filter",
            Self::ResponseFilter => "response_filter",
            Self::LoginOptions => "login_options",
            Self::Authenticate => "authenticate",
            Self::OnEvent => "on_event",
            Self::Worker => "worker",
        }
    }
}

/// Why a plugin call failed. The request it served fails with [`PluginFailure::error_code`];
/// the details go to the log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginFailure {
    /// The hook returned an error.
    Error(String),
    /// The hook panicked (the message and location are logged).
    Panicked(String),
    /// The hook did not finish within the plugin's `call_timeout_ms`.
    TimedOut,
    /// The hook answered something the ABI does not allow.
    Protocol(String),
}

impl PluginFailure {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Error(_) => ErrorCode::PluginFailed,
            Self::TimedOut => ErrorCode::PluginTimeout,
            Self::Panicked(_) | Self::Protocol(_) => ErrorCode::Internal,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Error(_) => "error",
            Self::Panicked(_) => "panic",
            Self::TimedOut => "timeout",
            Self::Protocol(_) => "protocol",
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::Error(m) | Self::Panicked(m) | Self::Protocol(m) => m,
            Self::TimedOut => "the hook did not finish in time",
        }
    }
}

/// A response a request filter wrote, checked against HTTP's rules.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: Bytes,
}

impl Answer {
    fn from_outcome(outcome: &Outcome) -> Result<Self, String> {
        if !(200..=599).contains(&outcome.status) {
            return Err(format!("answered with status {}", outcome.status));
        }
        let pairs: Vec<(String, String)> = if outcome.headers.as_slice().is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(outcome.headers.as_slice())
                .map_err(|e| format!("answered with malformed headers: {e}"))?
        };
        let mut headers = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("answered with an invalid header name {name:?}"))?;
            let value = http::HeaderValue::from_str(&value)
                .map_err(|_| format!("answered with an invalid value for {name}"))?;
            // The host frames the answer itself.
            if ![
                http::header::CONTENT_LENGTH,
                http::header::TRANSFER_ENCODING,
                http::header::CONNECTION,
            ]
            .contains(&name)
            {
                headers.push((name, value));
            }
        }
        Ok(Self {
            status: outcome.status,
            headers,
            body: Bytes::from(outcome.body.to_vec()),
        })
    }
}

#[derive(Debug)]
struct HookMetrics {
    calls: IntCounter,
    errors: IntCounter,
    duration: Histogram,
}

/// A loaded plugin.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    pub manifest: Manifest,
    api: PluginApi,
    context: &'static PluginContext,
    call_timeout: Duration,
    /// Indexed like [`Hook::ALL`]; resolved once so a call records with no label lookup.
    hooks: Vec<HookMetrics>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn text(buf: &Buf) -> String {
    String::from_utf8_lossy(buf.as_slice()).into_owned()
}

impl Plugin {
    fn metrics(&self, hook: Hook) -> Option<&HookMetrics> {
        self.hooks.get(hook as usize)
    }

    /// Awaits a hook's future under the plugin's time limit, catching panics, and records it.
    async fn invoke(
        &self,
        hook: Hook,
        future: FfiFuture<Outcome>,
        limit: Option<Duration>,
    ) -> Result<Outcome, PluginFailure> {
        let metrics = self.metrics(hook);
        if let Some(m) = metrics {
            m.calls.inc();
        }
        let started = Instant::now();
        // The SDK turns panics into outcomes; this catches plugins built without it, whose
        // panics async-ffi re-raises on the host side.
        let guarded = AssertUnwindSafe(future).catch_unwind();
        let result = match limit {
            Some(limit) => tokio::time::timeout(limit, guarded).await,
            None => Ok(guarded.await),
        };
        if let Some(m) = metrics {
            m.duration.observe(started.elapsed().as_secs_f64());
        }
        let failure = match result {
            Err(_) => PluginFailure::TimedOut,
            Ok(Err(_)) => PluginFailure::Panicked("its future panicked across the ABI".to_owned()),
            Ok(Ok(outcome)) => match outcome.kind {
                abi::outcome::OK | abi::outcome::RESPOND | abi::outcome::RETRY => {
                    return Ok(outcome);
                }
                abi::outcome::ERROR => PluginFailure::Error(text(&outcome.body)),
                abi::outcome::PANICKED => PluginFailure::Panicked(text(&outcome.body)),
                other => PluginFailure::Protocol(format!("unknown outcome kind {other}")),
            },
        };
        Err(self.failed(hook, failure))
    }

    fn failed(&self, hook: Hook, failure: PluginFailure) -> PluginFailure {
        if let Some(m) = self.metrics(hook) {
            m.errors.inc();
        }
        tracing::error!(
            plugin = %self.name,
            hook = hook.as_str(),
            failure = failure.kind(),
            message = failure.message(),
            "plugin hook failed"
        );
        failure
    }

    /// Runs the request filter; `Some` when the plugin answered the request itself.
    pub async fn request_filter(
        &self,
        exchange: &mut Exchange<'_>,
    ) -> Result<Option<Answer>, PluginFailure> {
        let Some(hook) = self.api.request_filter else {
            return Ok(None);
        };
        exchange.show_session_credentials(self.manifest.session_credentials);
        let future = {
            let handle = std::ptr::from_mut(exchange).cast::<c_void>();
            // SAFETY: `handle` is the exchange, borrowed mutably until the future is awaited
            // or dropped inside this function; `instance` is the plugin's own pointer.
            unsafe { hook(self.api.instance, handle) }
        };
        let outcome = self
            .invoke(Hook::RequestFilter, future, Some(self.call_timeout))
            .await?;
        match outcome.kind {
            abi::outcome::RESPOND => {}
            abi::outcome::RETRY => {
                return Err(self.failed(
                    Hook::RequestFilter,
                    PluginFailure::Protocol(
                        "only a response filter may ask for a retry".to_owned(),
                    ),
                ));
            }
            _ => return Ok(None),
        }
        Answer::from_outcome(&outcome)
            .map(Some)
            .map_err(|m| self.failed(Hook::RequestFilter, PluginFailure::Protocol(m)))
    }

    pub async fn upstream_request_filter(
        &self,
        exchange: &mut Exchange<'_>,
    ) -> Result<(), PluginFailure> {
        let retry = self
            .filter(
                Hook::UpstreamRequestFilter,
                self.api.upstream_request_filter,
                exchange,
            )
            .await?;
        if retry {
            return Err(self.failed(
                Hook::UpstreamRequestFilter,
                PluginFailure::Protocol("only a response filter may ask for a retry".to_owned()),
            ));
        }
        Ok(())
    }

    /// Runs the response filter; true when the plugin asks for the request to be sent again.
    pub async fn response_filter(
        &self,
        exchange: &mut Exchange<'_>,
    ) -> Result<bool, PluginFailure> {
        self.filter(Hook::ResponseFilter, self.api.response_filter, exchange)
            .await
    }

    /// Runs a filter that cannot answer; true when it asked for a retry.
    async fn filter(
        &self,
        hook: Hook,
        function: Option<abi::FilterFn>,
        exchange: &mut Exchange<'_>,
    ) -> Result<bool, PluginFailure> {
        let Some(function) = function else {
            return Ok(false);
        };
        exchange.show_session_credentials(self.manifest.session_credentials);
        let future = {
            let handle = std::ptr::from_mut(exchange).cast::<c_void>();
            // SAFETY: as in `request_filter`.
            unsafe { function(self.api.instance, handle) }
        };
        let outcome = self.invoke(hook, future, Some(self.call_timeout)).await?;
        if outcome.kind == abi::outcome::RESPOND {
            return Err(self.failed(
                hook,
                PluginFailure::Protocol("only a request filter may answer".to_owned()),
            ));
        }
        Ok(outcome.kind == abi::outcome::RETRY)
    }

    /// Calls a JSON hook and decodes its result.
    async fn json_hook<T: serde::de::DeserializeOwned>(
        &self,
        hook: Hook,
        function: Option<abi::JsonHookFn>,
        input: &impl serde::Serialize,
    ) -> Result<T, PluginFailure> {
        let Some(function) = function else {
            return Err(PluginFailure::Protocol(format!(
                "does not implement {}",
                hook.as_str()
            )));
        };
        let input = serde_json::to_vec(input)
            .map_err(|e| self.failed(hook, PluginFailure::Protocol(e.to_string())))?;
        // SAFETY: `instance` is the plugin's own pointer; the buffer's ownership moves to it.
        let future = unsafe { function(self.api.instance, Buf::from_vec(input)) };
        let outcome = self.invoke(hook, future, Some(self.call_timeout)).await?;
        serde_json::from_slice(outcome.body.as_slice()).map_err(|e| {
            self.failed(
                hook,
                PluginFailure::Protocol(format!("returned a malformed {}: {e}", hook.as_str())),
            )
        })
    }

    pub async fn login_options(
        &self,
        query: &LoginQuery,
    ) -> Result<Vec<LoginOption>, PluginFailure> {
        self.json_hook(Hook::LoginOptions, self.api.login_options, query)
            .await
    }

    pub async fn authenticate(&self, login: &Login) -> Result<Authentication, PluginFailure> {
        self.json_hook(Hook::Authenticate, self.api.authenticate, login)
            .await
    }

    pub fn is_identity_provider(&self) -> bool {
        self.api.login_options.is_some() && self.api.authenticate.is_some()
    }

    /// Hands an event to the plugin; returns its report, if it wrote one. A failure is counted
    /// and logged by `invoke`; the caller only decides what the publisher hears.
    async fn deliver(
        &self,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<Option<serde_json::Value>, PluginFailure> {
        let Some(function) = self.api.on_event else {
            return Ok(None);
        };
        // SAFETY: `instance` is the plugin's own pointer; the buffers move to it.
        let future =
            unsafe { function(self.api.instance, Buf::from(topic), Buf::from_vec(payload)) };
        let outcome = self
            .invoke(Hook::OnEvent, future, Some(self.call_timeout))
            .await?;
        let body = outcome.body.as_slice();
        if body.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(body).map(Some).map_err(|e| {
            self.failed(
                Hook::OnEvent,
                PluginFailure::Protocol(format!("returned a malformed report: {e}")),
            )
        })
    }

    /// Runs the background worker until it ends normally, starting it again after failures.
    async fn supervise_worker(self: Arc<Self>, restarts: IntCounter) {
        let Some(function) = self.api.run_worker else {
            return;
        };
        let mut backoff = WORKER_BACKOFF;
        loop {
            let started = Instant::now();
            // SAFETY: `instance` is the plugin's own pointer.
            let future = unsafe { function(self.api.instance) };
            if self.invoke(Hook::Worker, future, None).await.is_ok() {
                tracing::info!(plugin = %self.name, "plugin worker finished");
                return;
            }
            // A worker that ran for a while before failing starts over from a short delay.
            if started.elapsed() > WORKER_BACKOFF_MAX {
                backoff = WORKER_BACKOFF;
            }
            restarts.inc();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(WORKER_BACKOFF_MAX);
        }
    }
}

/// The plugins a provider uses, per hook, in the provider's order.
#[derive(Debug, Default, Clone)]
pub struct PluginChain {
    /// Every plugin the provider lists, whatever its hooks: these may act for the provider.
    pub names: Vec<String>,
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
}

/// A login session's start or end, as [`Plugins::publish_session`] announces it.
#[derive(Debug)]
pub enum SessionEvent {
    /// With the user's credentials: only subscribers that declare `session_credentials` get
    /// them.
    Started(SessionStarted),
    Ended(SessionEnded),
}

impl SessionEvent {
    fn topic(&self) -> &'static str {
        match self {
            Self::Started(_) => topics::SESSION_STARTED,
            Self::Ended(_) => topics::SESSION_ENDED,
        }
    }

    /// The payload one subscriber gets.
    fn payload_for(&self, plugin: &Plugin) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Self::Started(started) if !plugin.manifest.session_credentials => {
                serde_json::to_vec(&SessionStarted {
                    credentials: None,
                    ..started.clone()
                })
            }
            Self::Started(started) => serde_json::to_vec(started),
            Self::Ended(ended) => serde_json::to_vec(ended),
        }
    }
}

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
    metrics: Option<HostMetrics>,
    /// Set by [`Plugins::start`].
    services: OnceLock<Arc<Services>>,
}

impl Plugins {
    /// No plugins: what a configuration without `[[plugins]]` gets.
    pub fn none() -> Self {
        Self {
            by_name: HashMap::new(),
            all: Vec::new(),
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
        let mut reports = serde_json::Map::new();
        let Some(services) = self.services.get() else {
            return reports;
        };
        let mut pending = Vec::new();
        for subscriber in services
            .subscribers(event.topic())
            .filter(|s| plugins.contains(&s.plugin.name))
        {
            let (report, received) = oneshot::channel();
            let queued = match event.payload_for(&subscriber.plugin) {
                Ok(payload) => services.enqueue(
                    subscriber,
                    QueuedEvent {
                        topic: event.topic().to_owned(),
                        payload,
                        report: Some(report),
                    },
                ),
                Err(e) => {
                    tracing::error!(plugin = %subscriber.plugin.name, error = %e, "a session event could not be written");
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
    /// and reverse lookups need the provider's master credentials.
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

    /// The chain of a provider's `plugins = [...]` (names were validated with the config).
    pub fn chain(&self, names: &[String]) -> PluginChain {
        let mut chain = PluginChain {
            names: names.to_vec(),
            ..PluginChain::default()
        };
        for plugin in names.iter().filter_map(|n| self.by_name.get(n)) {
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
            add(plugin.is_identity_provider(), &mut chain.identity);
        }
        chain
    }

    /// Attaches the host services and starts event delivery and background workers, all on the
    /// host's runtime. Only the first call does anything.
    pub fn start(&self, host: &Host, providers: &Arc<Providers>) -> Result<(), PluginsError> {
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

        let runtime = &host.runtime;
        let services = Arc::new(Services {
            runtime: runtime.clone(),
            http,
            providers: Arc::clone(providers),
            store: Arc::clone(&host.store),
            sealer: Arc::clone(&host.sealer),
            bus,
            metrics: metrics.clone(),
        });
        for plugin in &self.all {
            let _ = plugin.context.services.set(Arc::clone(&services));
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
