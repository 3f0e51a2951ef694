//! Active health checks and DNS refresh for every provider's XSPs ([`HealthService`]).
//!
//! It runs as a Pingora background service on its own runtime, so probes and lookups never
//! compete with proxied requests for a worker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::provider::{Provider, Providers};

/// How often host names are looked up again.
const DNS_REFRESH: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct HealthService {
    providers: Arc<Providers>,
}

impl HealthService {
    pub fn new(providers: Arc<Providers>) -> Self {
        Self { providers }
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = tokio::task::JoinSet::new();
        for provider in &self.providers.all {
            match probe_client(provider) {
                Ok(client) => {
                    tasks.spawn(probe_loop(Arc::clone(provider), client));
                }
                Err(e) => {
                    tracing::error!(provider = %provider.id, error = %e, "cannot build the health-check client; XSPs stay unprobed");
                }
            }
        }
        tasks.spawn(dns_loop(Arc::clone(&self.providers)));
        // Either shutdown or every loop ending (they do not) stops the service.
        let _ = shutdown.changed().await;
        tasks.shutdown().await;
    }
}

fn probe_client(
    provider: &Provider,
) -> Result<reqwest::Client, Box<dyn std::error::Error + Send + Sync>> {
    Ok(provider
        .client_builder()?
        .timeout(Duration::from_millis(provider.health_check.timeout_ms))
        .pool_max_idle_per_host(1)
        .user_agent(concat!("xsigate-health/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

async fn probe_loop(provider: Arc<Provider>, client: reqwest::Client) {
    let mut interval =
        tokio::time::interval(Duration::from_millis(provider.health_check.interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let probes = provider.xsps.members.iter().map(|xsp| {
            let url = xsp.url_for(&provider.health_check.path);
            let request = client.get(url).send();
            async move {
                let sent = std::time::Instant::now();
                let outcome = request.await;
                if outcome.is_ok() {
                    xsp.health.record_probe_time(sent.elapsed());
                }
                (xsp, outcome)
            }
        });
        for (xsp, outcome) in futures_util::future::join_all(probes).await {
            match outcome {
                Ok(response) if response.status().as_u16() < 500 => xsp.mark_success(&provider.id),
                Ok(response) => {
                    tracing::debug!(provider = %provider.id, upstream = %xsp.name, status = response.status().as_u16(), "health probe failed");
                    xsp.mark_failure(&provider.id);
                }
                Err(e) => {
                    // reqwest errors name the URL; log the kind only so no address reaches the log.
                    tracing::debug!(provider = %provider.id, upstream = %xsp.name, timeout = e.is_timeout(), connect = e.is_connect(), "health probe failed");
                    xsp.mark_failure(&provider.id);
                }
            }
        }
    }
}

async fn dns_loop(providers: Arc<Providers>) {
    let mut interval = tokio::time::interval(DNS_REFRESH);
    interval.tick().await;
    loop {
        interval.tick().await;
        for provider in &providers.all {
            for upstream in provider.upstreams() {
                if !upstream.resolve().await {
                    tracing::warn!(provider = %provider.id, upstream = %upstream.name, "upstream host does not resolve");
                }
            }
        }
    }
}
