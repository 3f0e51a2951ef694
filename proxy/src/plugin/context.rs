//! The host's per-plugin state behind `HostApi::context`, and the C functions of the table.
//!
//! Every function here is called by plugin code, so each one treats its arguments as
//! untrusted: lengths and UTF-8 are checked, nothing panics, and a bad call is refused with a
//! result the plugin can see rather than a crash of the host.
#![allow(
    unsafe_code,
    reason = "the C functions of the plugin ABI: they dereference the handles they receive"
)]

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};

use async_ffi::FutureExt as _;
use prometheus::{CounterVec, GaugeVec, HistogramOpts, HistogramVec, Opts};
use xsigate_plugin_sdk::abi::{self, Buf, FfiFuture, HostApi, MetricId, Reply, Str};

use super::exchange::Exchange;
use super::streams::Streams;
use crate::metrics::{LATENCY_BUCKETS, Metrics};
use crate::state::seal::SealKey;

/// The label the host puts on every plugin metric: the plugin's name.
const PLUGIN_LABEL: &str = "plugin";

/// A metric a plugin registered.
enum PluginMetric {
    Counter(CounterVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
}

/// What the host keeps for one plugin. Leaked at load: plugins are never unloaded, and the
/// plugin holds a pointer to this for the life of the process.
pub(super) struct PluginContext {
    pub name: String,
    /// `file:line:column` of the plugin's `[[plugins]]` entry, for startup errors.
    pub origin: String,
    metrics: Metrics,
    /// Metric registration and subscriptions are allowed only while this is set.
    initializing: AtomicBool,
    registered: RwLock<Vec<PluginMetric>>,
    pub subscriptions: Mutex<Vec<String>>,
    /// Attached when the server starts; until then asynchronous calls are refused.
    pub services: OnceLock<Box<dyn HostCalls>>,
    pub seal_key: OnceLock<SealKey>,
    /// Response streams the plugin holds open (XSI-Events channels).
    pub streams: Streams,
}

impl PluginContext {
    pub fn new(name: &str, origin: &str, metrics: Metrics) -> Self {
        Self {
            name: name.to_owned(),
            origin: origin.to_owned(),
            metrics,
            initializing: AtomicBool::new(true),
            registered: RwLock::new(Vec::new()),
            subscriptions: Mutex::new(Vec::new()),
            services: OnceLock::new(),
            seal_key: OnceLock::new(),
            streams: Streams::default(),
        }
    }

    pub fn finish_init(&self) {
        self.initializing.store(false, Ordering::Release);
    }

    pub fn subscriptions(&self) -> Vec<String> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The host's function table for this plugin; leaked with the context.
    pub fn host_api(context: &'static Self) -> &'static HostApi {
        Box::leak(Box::new(HostApi {
            abi_version: abi::ABI_VERSION,
            context: std::ptr::from_ref(context).cast(),
            call,
            log,
            metric_register,
            metric_record,
            subscribe,
            attribute,
            header,
            set_header,
            remove_header,
            status,
            set_status,
            set_attribute,
        }))
    }

    fn register(
        &self,
        kind: u32,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<u64, String> {
        if !self.initializing.load(Ordering::Acquire) {
            return Err("metrics are registered during init".to_owned());
        }
        if !is_metric_name(name) || labels.iter().any(|l| !is_metric_name(l)) {
            return Err(format!(
                "metric `{name}`: names and labels are [a-zA-Z_][a-zA-Z0-9_]*"
            ));
        }
        if labels.contains(&PLUGIN_LABEL) {
            return Err(format!(
                "metric `{name}`: the host labels every plugin metric `{PLUGIN_LABEL}` itself"
            ));
        }
        let full = format!(
            "xsigate_plugin_{}_{name}",
            self.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        let help = if help.is_empty() { name } else { help };
        // Two plugins may name a metric alike (two lookup plugins' `lookups_total`); the label
        // keeps their series apart once a rate drops the metric name.
        let opts = Opts::new(full, help).const_label(PLUGIN_LABEL, self.name.clone());
        let metric = match kind {
            abi::metric::COUNTER => CounterVec::new(opts, labels).map(PluginMetric::Counter),
            abi::metric::GAUGE => GaugeVec::new(opts, labels).map(PluginMetric::Gauge),
            abi::metric::HISTOGRAM => {
                let buckets = if buckets.is_empty() {
                    LATENCY_BUCKETS.to_vec()
                } else {
                    buckets.to_vec()
                };
                HistogramVec::new(HistogramOpts::from(opts).buckets(buckets), labels)
                    .map(PluginMetric::Histogram)
            }
            other => return Err(format!("unknown metric kind {other}")),
        }
        .map_err(|e| format!("metric `{name}`: {e}"))?;
        let collector: Box<dyn prometheus::core::Collector> = match &metric {
            PluginMetric::Counter(m) => Box::new(m.clone()),
            PluginMetric::Gauge(m) => Box::new(m.clone()),
            PluginMetric::Histogram(m) => Box::new(m.clone()),
        };
        self.metrics
            .register(collector)
            .map_err(|e| format!("metric `{name}`: {e}"))?;
        let mut registered = self
            .registered
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        registered.push(metric);
        Ok(registered.len() as u64 - 1)
    }

    fn record(&self, id: u64, labels: &[&str], value: f64) {
        let registered = self
            .registered
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(metric) = usize::try_from(id).ok().and_then(|i| registered.get(i)) else {
            tracing::warn!(plugin = %self.name, id, "plugin recorded an unknown metric");
            return;
        };
        let recorded = match metric {
            // prometheus panics on negative counter increments; refuse them instead.
            PluginMetric::Counter(_) if value.is_nan() || value < 0.0 => Err(()),
            PluginMetric::Counter(m) => m
                .get_metric_with_label_values(labels)
                .map(|c| c.inc_by(value))
                .map_err(drop),
            PluginMetric::Gauge(m) => m
                .get_metric_with_label_values(labels)
                .map(|g| g.set(value))
                .map_err(drop),
            PluginMetric::Histogram(m) => m
                .get_metric_with_label_values(labels)
                .map(|h| h.observe(value))
                .map_err(drop),
        };
        if recorded.is_err() {
            tracing::warn!(
                plugin = %self.name,
                id,
                "plugin metric record refused: wrong label count or a negative counter increment"
            );
        }
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// # Safety
/// `context` must be a pointer from [`PluginContext::host_api`].
unsafe fn context<'a>(context: *const c_void) -> &'a PluginContext {
    // SAFETY: the table's `context` is a leaked `PluginContext`; plugins pass it back as is.
    unsafe { &*context.cast::<PluginContext>() }
}

/// # Safety
/// `items` must point to `count` valid `Str`s (or be anything when `count` is 0).
unsafe fn strs<'a>(items: *const Str, count: usize) -> Option<Vec<&'a str>> {
    if count == 0 {
        return Some(Vec::new());
    }
    if items.is_null() {
        return None;
    }
    // SAFETY: the caller promises `count` readable items for the call.
    let items = unsafe { std::slice::from_raw_parts(items, count) };
    // SAFETY: each item is valid for the call.
    items.iter().map(|s| unsafe { s.as_str() }).collect()
}

fn ready(code: u32, message: &str) -> FfiFuture<Reply> {
    let reply = Reply {
        code,
        meta: Buf::empty(),
        body: Buf::from(message.to_owned()),
    };
    async move { reply }.into_ffi()
}

/// What performs the plugins' asynchronous host calls ([`super::services`]): declared here so
/// that the ABI table depends on the calls' contract, not on their implementation.
pub trait HostCalls: Send + Sync {
    fn call(
        &self,
        plugin: &'static PluginContext,
        op: u32,
        meta: Buf,
        body: Buf,
    ) -> FfiFuture<Reply>;
}

unsafe extern "C" fn call(
    context: *const c_void,
    op: u32,
    meta: Buf,
    body: Buf,
) -> FfiFuture<Reply> {
    // SAFETY: plugins pass back the context of their table.
    let plugin: &'static PluginContext = unsafe { &*context.cast::<PluginContext>() };
    let Some(services) = plugin.services.get() else {
        return ready(
            abi::reply::UNSUPPORTED,
            "host services are available once the server has started",
        );
    };
    services.call(plugin, op, meta, body)
}

unsafe extern "C" fn log(
    context: *const c_void,
    level: u32,
    message: Str,
    fields: *const Str,
    field_count: usize,
) {
    // SAFETY: plugins pass back the context of their table.
    let plugin = unsafe { self::context(context) };
    // SAFETY: valid for the call, per the ABI.
    let message = unsafe { message.as_bytes() }.map(String::from_utf8_lossy);
    let message = message.as_deref().unwrap_or("");
    // SAFETY: valid for the call, per the ABI.
    let fields = unsafe { strs(fields, field_count) }.unwrap_or_default();
    let fields = fields
        .chunks(2)
        .map(|pair| match pair {
            [name, value] => format!("{name}={value:?}"),
            [name] => (*name).to_owned(),
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "xsigate::plugin",
                $level,
                plugin = %plugin.name,
                fields = %fields,
                "{message}"
            )
        };
    }
    match level {
        abi::level::ERROR => line!(tracing::Level::ERROR),
        abi::level::WARN => line!(tracing::Level::WARN),
        abi::level::DEBUG => line!(tracing::Level::DEBUG),
        abi::level::TRACE => line!(tracing::Level::TRACE),
        _ => line!(tracing::Level::INFO),
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the C signature of the ABI"
)]
unsafe extern "C" fn metric_register(
    context: *const c_void,
    kind: u32,
    name: Str,
    help: Str,
    labels: *const Str,
    label_count: usize,
    buckets: *const f64,
    bucket_count: usize,
) -> MetricId {
    // SAFETY: plugins pass back the context of their table.
    let plugin = unsafe { self::context(context) };
    // SAFETY: all valid for the call, per the ABI.
    let (name, help, labels) = unsafe { (name.as_str(), help.as_str(), strs(labels, label_count)) };
    let buckets: &[f64] = if bucket_count == 0 || buckets.is_null() {
        &[]
    } else {
        // SAFETY: the plugin promises `bucket_count` readable values for the call.
        unsafe { std::slice::from_raw_parts(buckets, bucket_count) }
    };
    let result = match (name, labels) {
        (Some(name), Some(labels)) => {
            plugin.register(kind, name, help.unwrap_or(""), &labels, buckets)
        }
        _ => Err("metric name and labels must be UTF-8".to_owned()),
    };
    match result {
        Ok(id) => MetricId {
            id,
            error: Buf::empty(),
        },
        Err(message) => MetricId {
            id: u64::MAX,
            error: Buf::from(message),
        },
    }
}

unsafe extern "C" fn metric_record(
    context: *const c_void,
    id: u64,
    labels: *const Str,
    label_count: usize,
    value: f64,
) {
    // SAFETY: plugins pass back the context of their table.
    let plugin = unsafe { self::context(context) };
    // SAFETY: valid for the call, per the ABI.
    if let Some(labels) = unsafe { strs(labels, label_count) } {
        plugin.record(id, &labels, value);
    }
}

unsafe extern "C" fn subscribe(context: *const c_void, topic: Str) -> bool {
    // SAFETY: plugins pass back the context of their table.
    let plugin = unsafe { self::context(context) };
    // SAFETY: valid for the call, per the ABI.
    let Some(topic) = (unsafe { topic.as_str() }).filter(|t| !t.is_empty()) else {
        return false;
    };
    if !plugin.initializing.load(Ordering::Acquire) {
        return false;
    }
    let mut subscriptions = plugin
        .subscriptions
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if !subscriptions.iter().any(|t| t == topic) {
        subscriptions.push(topic.to_owned());
    }
    true
}

/// # Safety
/// `exchange` must be the handle the host passed to the running filter hook.
unsafe fn exchange<'a>(exchange: *mut c_void) -> &'a mut Exchange<'a> {
    // SAFETY: the host passes `&mut Exchange` as this handle and keeps it alive and otherwise
    // unused until the hook's future is done.
    unsafe { &mut *exchange.cast::<Exchange<'a>>() }
}

fn borrowed(bytes: Option<&[u8]>) -> Str {
    bytes.map_or(Str::ABSENT, Str::from_bytes)
}

unsafe extern "C" fn attribute(handle: *mut c_void, attr: u32) -> Str {
    // SAFETY: see `exchange`.
    borrowed(unsafe { exchange(handle) }.attribute(attr))
}

unsafe extern "C" fn header(handle: *mut c_void, name: Str, index: usize) -> Str {
    // SAFETY: see `exchange`; `name` is valid for the call.
    let (exchange, name) = unsafe { (exchange(handle), name.as_bytes()) };
    borrowed(name.and_then(|name| exchange.header(name, index)))
}

unsafe extern "C" fn set_header(handle: *mut c_void, name: Str, value: Str, append: bool) -> bool {
    // SAFETY: see `exchange`; `name` and `value` are valid for the call.
    let (exchange, name, value) = unsafe { (exchange(handle), name.as_bytes(), value.as_bytes()) };
    match (name, value) {
        (Some(name), Some(value)) => exchange.set_header(name, value, append),
        _ => false,
    }
}

unsafe extern "C" fn remove_header(handle: *mut c_void, name: Str) {
    // SAFETY: see `exchange`; `name` is valid for the call.
    let (exchange, name) = unsafe { (exchange(handle), name.as_bytes()) };
    if let Some(name) = name {
        exchange.remove_header(name);
    }
}

unsafe extern "C" fn status(handle: *mut c_void) -> u16 {
    // SAFETY: see `exchange`.
    unsafe { exchange(handle) }.status()
}

unsafe extern "C" fn set_status(handle: *mut c_void, status: u16) -> bool {
    // SAFETY: see `exchange`.
    unsafe { exchange(handle) }.set_status(status)
}

unsafe extern "C" fn set_attribute(handle: *mut c_void, attr: u32, value: Str) -> bool {
    // SAFETY: see `exchange`; `value` is valid for the call.
    let (exchange, value) = unsafe { (exchange(handle), value.as_str()) };
    exchange.set_attribute(attr, value)
}
