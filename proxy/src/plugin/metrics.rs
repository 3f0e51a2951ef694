//! What the host counts about plugins.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::{LATENCY_BUCKETS, Metrics, MetricsError};

#[derive(Debug, Clone)]
pub(crate) struct HostMetrics {
    pub calls: IntCounterVec,
    pub errors: IntCounterVec,
    pub duration: HistogramVec,
    pub host_calls: IntCounterVec,
    pub events_dropped: IntCounterVec,
    pub worker_restarts: IntCounterVec,
    pub streams_open: IntGaugeVec,
}

impl HostMetrics {
    pub fn register(metrics: &Metrics) -> Result<Self, MetricsError> {
        let calls = IntCounterVec::new(
            Opts::new(
                "xsigate_plugin_calls_total",
                "Plugin hook calls, by plugin and hook.",
            ),
            &["plugin", "hook"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "xsigate_plugin_errors_total",
                "Plugin hook calls that returned an error, panicked, broke the ABI or ran out of time.",
            ),
            &["plugin", "hook"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "xsigate_plugin_call_duration_seconds",
                "Time from calling a plugin hook to its outcome, host calls included.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["plugin", "hook"],
        )?;
        let host_calls = IntCounterVec::new(
            Opts::new(
                "xsigate_plugin_host_calls_total",
                "Services the host performed for plugins, by plugin, service and result.",
            ),
            &["plugin", "service", "result"],
        )?;
        let events_dropped = IntCounterVec::new(
            Opts::new(
                "xsigate_plugin_events_dropped_total",
                "Events not delivered to a consumer plugin because its queue was full.",
            ),
            &["plugin"],
        )?;
        let worker_restarts = IntCounterVec::new(
            Opts::new(
                "xsigate_plugin_worker_restarts_total",
                "Background workers started again after an error or a panic.",
            ),
            &["plugin"],
        )?;
        let streams_open = IntGaugeVec::new(
            Opts::new(
                "xsigate_plugin_streams_open",
                "Streaming responses (XSI-Events channels) the host holds open for a plugin.",
            ),
            &["plugin"],
        )?;
        metrics.register(Box::new(streams_open.clone()))?;
        for collector in [
            &calls,
            &errors,
            &host_calls,
            &events_dropped,
            &worker_restarts,
        ] {
            metrics.register(Box::new(collector.clone()))?;
        }
        metrics.register(Box::new(duration.clone()))?;
        Ok(Self {
            calls,
            errors,
            duration,
            host_calls,
            events_dropped,
            worker_restarts,
            streams_open,
        })
    }
}
