//! The health of upstreams: what probes and proxied connects say of each ([`Health`]), and the
//! active probes and DNS refresh for every provider's XSPs ([`HealthService`]).
//!
//! The service runs as a Pingora background service on its own runtime, so probes and lookups
//! never compete with proxied requests for a worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::provider::{Provider, Providers};

/// Health of an upstream as seen by active probes and by proxied connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HealthState {
    /// Not probed yet: used, but not counted as ready.
    Unknown = 0,
    Up = 1,
    Down = 2,
}

#[derive(Debug)]
pub struct Health {
    state: AtomicU8,
    failures: AtomicU32,
    successes: AtomicU32,
    fall: u32,
    rise: u32,
}

impl Health {
    pub fn new(fall: u32, rise: u32) -> Self {
        Self {
            state: AtomicU8::new(HealthState::Unknown as u8),
            failures: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            fall: fall.max(1),
            rise: rise.max(1),
        }
    }

    pub fn state(&self) -> HealthState {
        match self.state.load(Ordering::Relaxed) {
            1 => HealthState::Up,
            2 => HealthState::Down,
            _ => HealthState::Unknown,
        }
    }

    /// Records a failed probe or connect; returns the new state when it changed.
    pub fn record_failure(&self) -> Option<HealthState> {
        self.successes.store(0, Ordering::Relaxed);
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= self.fall {
            self.transition(HealthState::Down)
        } else {
            None
        }
    }

    /// Records a passing probe; returns the new state when it changed. A down upstream needs
    /// `rise` passes in a row, an unknown one comes up at once.
    pub fn record_success(&self) -> Option<HealthState> {
        self.failures.store(0, Ordering::Relaxed);
        let successes = self
            .successes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if self.state() != HealthState::Down || successes >= self.rise {
            self.transition(HealthState::Up)
        } else {
            None
        }
    }

    /// A proxied response arrived: a connect-failure streak is broken, but only probes bring a
    /// down upstream back.
    pub fn record_response(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    fn transition(&self, to: HealthState) -> Option<HealthState> {
        let previous = self.state.swap(to as u8, Ordering::Relaxed);
        (previous != to as u8).then_some(to)
    }
}

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
            async move { (xsp, request.await) }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_falls_and_rises_with_thresholds() {
        let health = Health::new(2, 2);
        assert_eq!(health.state(), HealthState::Unknown);
        assert_eq!(health.record_failure(), None);
        assert_eq!(health.record_failure(), Some(HealthState::Down));
        assert_eq!(health.record_success(), None);
        assert_eq!(health.record_success(), Some(HealthState::Up));
        assert_eq!(health.record_success(), None);
    }
}
