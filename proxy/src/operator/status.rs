//! What the status page and `GET /api/status` show: the gateway's own state, each provider's
//! XSPs and sessions, and what its plugins report on `operator.status`.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};
use xsigate_plugin_sdk::topics::{
    ActionOutcome, ActionReport, OPERATOR_STATUS, ProviderStatus, StatusReport,
};

use super::parts::{ConsoleParts, PLUGIN_WAIT};
use crate::audit::{AuditResult, RecentEntries};
use crate::upstream::health::HealthState;

/// The audit entries the page shows.
const AUDIT_SHOWN: usize = 20;

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_seconds: u64,
    /// SHA-256 of the configuration file the instance runs.
    pub config_sha256: String,
    pub store: StoreHealth,
    pub providers: BTreeMap<String, ProviderView>,
    /// Failed hook calls (errors, panics, timeouts) by plugin and hook, and worker restarts.
    pub plugin_failures: BTreeMap<String, BTreeMap<String, u64>>,
    /// Plugins that did not report in time, or failed to.
    pub plugins_silent: BTreeMap<String, String>,
    pub audit: RecentEntries,
}

#[derive(Debug, Serialize)]
pub struct StoreHealth {
    pub healthy: bool,
    /// A read's round trip.
    pub latency_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct ProviderView {
    pub xsps: Vec<XspView>,
    pub sessions: u64,
    /// What each plugin of the provider reports about it.
    pub plugins: BTreeMap<String, ProviderStatus>,
}

#[derive(Debug, Serialize)]
pub struct XspView {
    pub name: String,
    pub state: &'static str,
    /// The last answered health probe's round trip.
    pub probe_ms: Option<f64>,
}

/// The gateway's state now, as an operator sees it.
pub(super) async fn gather(parts: &ConsoleParts, checksum: &str, started: Instant) -> Status {
    let mut providers: BTreeMap<String, ProviderView> = BTreeMap::new();
    for provider in &parts.providers.all {
        let xsps = provider
            .xsps
            .members
            .iter()
            .map(|xsp| XspView {
                name: xsp.name.clone(),
                state: match xsp.health.state() {
                    HealthState::Up => "up",
                    HealthState::Down => "down",
                    HealthState::Unknown => "unknown",
                },
                probe_ms: xsp.health.probe_time().map(|t| t.as_secs_f64() * 1000.0),
            })
            .collect();
        providers.insert(
            provider.id.clone(),
            ProviderView {
                xsps,
                ..ProviderView::default()
            },
        );
    }
    let began = Instant::now();
    let counted = parts.sessions.live_by_provider().await;
    let store = StoreHealth {
        healthy: counted.is_ok(),
        latency_ms: began.elapsed().as_secs_f64() * 1000.0,
    };
    for (provider, count) in counted.unwrap_or_default() {
        if let Some(view) = providers.get_mut(&provider) {
            view.sessions = count;
        }
    }
    let reports = parts
        .plugins
        .ask_operator_topic(OPERATOR_STATUS, b"{}", PLUGIN_WAIT)
        .await;
    let mut plugins_silent = BTreeMap::new();
    for (plugin, report) in reports {
        match serde_json::from_value::<StatusReport>(report.clone()) {
            Ok(report) => {
                for (provider, status) in report.providers {
                    if let Some(view) = providers.get_mut(&provider) {
                        view.plugins.insert(plugin.clone(), status);
                    }
                }
            }
            Err(_) => {
                let state = report["state"].as_str().unwrap_or("unreadable").to_owned();
                plugins_silent.insert(plugin, state);
            }
        }
    }
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: started.elapsed().as_secs(),
        config_sha256: checksum.to_owned(),
        store,
        providers,
        plugin_failures: parts.plugins.failure_counts(),
        plugins_silent,
        audit: parts.audit.recent(AUDIT_SHOWN),
    }
}

/// One result and a sentence from the plugins' reports on an action: done when any did it,
/// failed when any failed, not found when none keeps anything of the user's.
pub(super) fn action_outcome(reports: &Map<String, Value>) -> (AuditResult, String) {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (plugin, report) in reports {
        match serde_json::from_value::<ActionReport>(report.clone()) {
            Ok(ActionReport {
                outcome: ActionOutcome::Done,
                detail,
            }) => done.push(format!("{plugin}: {detail}")),
            Ok(ActionReport {
                outcome: ActionOutcome::Failed,
                detail,
            }) => failed.push(format!("{plugin}: {detail}")),
            Ok(_) => {}
            Err(_) => failed.push(format!(
                "{plugin}: {}",
                report["state"].as_str().unwrap_or("no answer")
            )),
        }
    }
    if !failed.is_empty() {
        failed.extend(done);
        return (AuditResult::Failed, failed.join("; "));
    }
    if done.is_empty() {
        return (
            AuditResult::NotFound,
            "no plugin keeps live state for this user".to_owned(),
        );
    }
    (AuditResult::Ok, done.join("; "))
}
