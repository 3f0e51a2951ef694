//! What the operator console sees of the channel sets (`operator.status`) and what it can ask
//! of them (`operator.action`): reopen a user's set, or read their state again.

use std::collections::HashMap;

use xsigate_plugin_sdk::topics::{Failing, ProviderStatus, StatusReport};

use crate::channel::Phase;
use crate::{PROVIDER_SET, XsiEvents, lock};

/// One kept channel set as the console shows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SetView {
    pub provider: String,
    /// The user whose set it is; `*` for a provider-level set.
    pub user: String,
    pub phase: Option<Phase>,
    pub subscriptions: usize,
    /// Packages whose subscription the XSP refused, with since when (ms since the epoch).
    pub refused: Vec<(&'static str, u64)>,
    /// Why the channel cannot be opened, and since when (ms since the epoch): the first
    /// failure of the run of failures.
    pub failure: Option<(String, u64)>,
}

impl XsiEvents {
    /// Changes the view of the set kept under `key` (a set's store key), making it if new.
    pub(crate) fn view(
        &self,
        key: &str,
        provider: &str,
        user: Option<&str>,
        change: impl FnOnce(&mut SetView),
    ) {
        let mut views = lock(&self.views);
        let view = views.entry(key.to_owned()).or_insert_with(|| SetView {
            provider: provider.to_owned(),
            user: user.unwrap_or(PROVIDER_SET).to_owned(),
            ..SetView::default()
        });
        change(view);
    }

    pub(crate) fn forget_view(&self, key: &str) {
        lock(&self.views).remove(key);
    }

    /// Channel sets by provider and state, subscriptions, and the sets that fail, by user.
    pub(crate) fn status(&self) -> StatusReport {
        let mut providers: HashMap<String, ProviderStatus> = self
            .config
            .providers
            .keys()
            .map(|p| (p.clone(), ProviderStatus::default()))
            .collect();
        for view in lock(&self.views).values() {
            let status = providers.entry(view.provider.clone()).or_default();
            let phase = view.phase.map_or("closing", Phase::as_str);
            *status.counts.entry(format!("sets_{phase}")).or_default() += 1;
            *status.counts.entry("subscriptions".to_owned()).or_default() +=
                view.subscriptions as u64;
            if let Some((reason, since_ms)) = &view.failure {
                status.failing.push(Failing {
                    user: view.user.clone(),
                    reason: reason.clone(),
                    since_ms: *since_ms,
                });
            }
            for (package, since_ms) in &view.refused {
                status.failing.push(Failing {
                    user: view.user.clone(),
                    reason: format!("the XSP refused a subscription to {package}"),
                    since_ms: *since_ms,
                });
            }
        }
        for status in providers.values_mut() {
            for phase in [Phase::Open, Phase::Connecting] {
                status
                    .counts
                    .entry(format!("sets_{}", phase.as_str()))
                    .or_default();
            }
            status.counts.entry("subscriptions".to_owned()).or_default();
            status
                .failing
                .sort_by(|a, b| (&a.user, &a.reason).cmp(&(&b.user, &b.reason)));
        }
        StatusReport {
            providers: providers.into_iter().collect(),
        }
    }
}
