//! Prometheus metrics.
//!
//! Everything lives in one registry owned by [`Metrics`] (not the `prometheus` crate's global
//! one), so tests and several instances in one process never share counters. Label sets that the
//! hot path uses are resolved once per provider into [`ProviderMetrics`], so recording a request
//! is a few atomic adds with no hashing or locking.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::wire::route::RouteClass;

/// Latency buckets in seconds: sub-millisecond for proxied XSI reads up to the upstream read timeout.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Status classes, the `status` label: index 0 is "no response was sent".
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, thiserror::Error)]
#[error("metrics registration failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_connect_failures: IntCounterVec,
    upstream_retries: IntCounterVec,
    xsp_up: IntGaugeVec,
    pub requests_in_flight: IntGauge,
    pub downstream_connections: IntGauge,
    /// What the edge refused before a request reached the proxy, by error code.
    pub client_refusals: IntCounterVec,
    audit: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "xsigate_requests_total",
                "Requests answered, by provider, route class and status class.",
            ),
            &["provider", "route", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "xsigate_request_duration_seconds",
                "Time from reading a request to the end of its response, as the client sees it.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider", "route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "xsigate_upstream_response_duration_seconds",
                "Time from choosing an upstream to receiving its response header.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider", "route"],
        )?;
        let upstream_connect_failures = IntCounterVec::new(
            Opts::new(
                "xsigate_upstream_connect_failures_total",
                "Failed attempts to connect to an upstream, by provider and upstream name.",
            ),
            &["provider", "upstream"],
        )?;
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "xsigate_upstream_retries_total",
                "Requests sent again to an upstream after a failure.",
            ),
            &["provider"],
        )?;
        let xsp_up = IntGaugeVec::new(
            Opts::new(
                "xsigate_xsp_up",
                "1 when the XSP passes health checks, 0 when it is marked down.",
            ),
            &["provider", "xsp"],
        )?;
        let requests_in_flight = IntGauge::new(
            "xsigate_requests_in_flight",
            "Requests being served right now, streams included.",
        )?;
        let downstream_connections = IntGauge::new(
            "xsigate_downstream_connections",
            "Open client connections, HTTP/1.x and HTTP/2.",
        )?;
        let client_refusals = IntCounterVec::new(
            Opts::new(
                "xsigate_client_refusals_total",
                "Connections and requests refused before routing (per-address limits, slow or \
                 oversized headers, ambiguous framing), by error code.",
            ),
            &["code"],
        )?;
        let audit = IntCounterVec::new(
            Opts::new(
                "xsigate_audit_total",
                "Audited acts (master-credential use, password resets, operators' logins and \
                 actions), by action and result.",
            ),
            &["action", "result"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "xsigate_build_info",
                "Always 1; the labels describe the running build.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let collectors: [Box<dyn Collector>; 12] = [
            Box::new(client_refusals.clone()),
            Box::new(audit.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_connect_failures.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(xsp_up.clone()),
            Box::new(requests_in_flight.clone()),
            Box::new(downstream_connections.clone()),
            Box::new(build_info),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for collector in collectors {
            registry.register(collector)?;
        }
        Ok(Self {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_connect_failures,
            upstream_retries,
            xsp_up,
            requests_in_flight,
            downstream_connections,
            client_refusals,
            audit,
        })
    }

    /// Counts one audited act (`audit::Audit::record`).
    pub fn audited(&self, action: &str, result: &str) {
        self.audit.with_label_values(&[action, result]).inc();
    }

    /// Makes an audit series exist, at zero.
    pub fn audit_series(&self, action: &str, result: &str) {
        self.audit.with_label_values(&[action, result]);
    }

    /// The handles one provider's requests record into (`provider = "none"` for requests that
    /// never reached a provider).
    pub fn for_provider(&self, provider: &str) -> ProviderMetrics {
        let per_route = |f: &dyn Fn(RouteClass) -> Histogram| RouteClass::ALL.map(f);
        ProviderMetrics {
            requests: RouteClass::ALL.map(|route| {
                STATUS_CLASSES.map(|status| {
                    self.requests
                        .with_label_values(&[provider, route.as_str(), status])
                })
            }),
            request_duration: per_route(&|route| {
                self.request_duration
                    .with_label_values(&[provider, route.as_str()])
            }),
            upstream_duration: per_route(&|route| {
                self.upstream_duration
                    .with_label_values(&[provider, route.as_str()])
            }),
            retries: self.upstream_retries.with_label_values(&[provider]),
        }
    }

    /// The handles of one upstream (an XSP or a gateway service).
    pub fn for_upstream(
        &self,
        provider: &str,
        upstream: &str,
        health_checked: bool,
    ) -> UpstreamMetrics {
        UpstreamMetrics {
            connect_failures: self
                .upstream_connect_failures
                .with_label_values(&[provider, upstream]),
            up: health_checked.then(|| self.xsp_up.with_label_values(&[provider, upstream])),
        }
    }

    /// The text exposition format.
    /// Adds a collector made elsewhere (the plugin host's, and plugins' own).
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), MetricsError> {
        Ok(self.registry.register(collector)?)
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on invalid metric data, which registration rules out.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct ProviderMetrics {
    requests: [[IntCounter; STATUS_CLASSES.len()]; RouteClass::ALL.len()],
    request_duration: [Histogram; RouteClass::ALL.len()],
    upstream_duration: [Histogram; RouteClass::ALL.len()],
    pub retries: IntCounter,
}

impl ProviderMetrics {
    pub fn record_request(&self, route: RouteClass, status: u16, seconds: f64) {
        let class = match status {
            100..=599 => usize::from(status / 100),
            _ => 0,
        };
        if let Some(counter) = self.requests.get(route.index()).and_then(|r| r.get(class)) {
            counter.inc();
        }
        if let Some(histogram) = self.request_duration.get(route.index()) {
            histogram.observe(seconds);
        }
    }

    pub fn record_upstream(&self, route: RouteClass, seconds: f64) {
        if let Some(histogram) = self.upstream_duration.get(route.index()) {
            histogram.observe(seconds);
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    pub connect_failures: IntCounter,
    /// Present for health-checked upstreams (XSPs).
    pub up: Option<IntGauge>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_route_and_status_class() {
        let metrics = Metrics::new().unwrap();
        let acme = metrics.for_provider("acme");
        acme.record_request(RouteClass::XsiActions, 200, 0.002);
        acme.record_request(RouteClass::XsiActions, 502, 0.002);
        acme.record_request(RouteClass::Gateway, 0, 0.002);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains(
            r#"xsigate_requests_total{provider="acme",route="xsi_actions",status="2xx"} 1"#
        ));
        assert!(text.contains(
            r#"xsigate_requests_total{provider="acme",route="xsi_actions",status="5xx"} 1"#
        ));
        assert!(text.contains(
            r#"xsigate_requests_total{provider="acme",route="gateway",status="none"} 1"#
        ));
        assert!(text.contains("xsigate_build_info{version="));
    }
}

/// Increments a gauge while it lives.
#[derive(Debug)]
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
