//! The audit trail: every use of a provider's master credentials by a plugin, every password
//! reset, and every operator's login and action. Each entry is one structured log line (target
//! `xsigate::audit`), a count in `xsigate_audit_total{action,result}`, and one of the recent
//! entries the console shows. An entry names who, what, whom and the result; never a
//! credential, a token or an upstream address.
//!
//! Uses: [`crate::metrics`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::metrics::Metrics;

/// Entries the console can show; older ones live on in the log.
const RECENT: usize = 100;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A plugin sent an XSI-Actions request with the provider's master credentials (a reverse
    /// lookup, a single-sign-on user's read).
    MasterCredentials,
    /// A user asked for a password-reset link.
    PasswordResetRequest,
    /// A user set a new password with a reset link.
    PasswordReset,
    AdminLogin,
    AdminLogout,
    EndSessions,
    ReopenChannelSet,
    Resync,
}

impl AuditAction {
    pub const ALL: [Self; 8] = [
        Self::MasterCredentials,
        Self::PasswordResetRequest,
        Self::PasswordReset,
        Self::AdminLogin,
        Self::AdminLogout,
        Self::EndSessions,
        Self::ReopenChannelSet,
        Self::Resync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MasterCredentials => "master_credentials",
            Self::PasswordResetRequest => "password_reset_request",
            Self::PasswordReset => "password_reset",
            Self::AdminLogin => "admin_login",
            Self::AdminLogout => "admin_logout",
            Self::EndSessions => "end_sessions",
            Self::ReopenChannelSet => "reopen_channel_set",
            Self::Resync => "resync",
        }
    }
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Ok,
    /// Refused: wrong credentials, a lock, a missing CSRF token.
    Refused,
    /// Nothing to act on.
    NotFound,
    Failed,
}

impl AuditResult {
    pub const ALL: [Self; 4] = [Self::Ok, Self::Refused, Self::NotFound, Self::Failed];

    /// The result an upstream's HTTP status says.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=399 => Self::Ok,
            401 | 403 => Self::Refused,
            404 => Self::NotFound,
            _ => Self::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::NotFound => "not_found",
            Self::Failed => "failed",
        }
    }
}

/// One audited act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `operator:<name>`, `plugin:<name>`, `user:<user id>` or `client:<address>`.
    pub actor: String,
    pub action: AuditAction,
    /// Whom or what it was done to: a user id, a provider, an XSI path without its query.
    pub subject: String,
    pub result: AuditResult,
}

#[derive(Debug, Clone)]
pub struct Audit {
    recent: Arc<Mutex<Recent>>,
    metrics: Metrics,
}

/// The latest entries, in two rings: plugins' reads on master credentials come with every
/// login and would soon push people's acts out of a shared one.
#[derive(Debug, Default)]
struct Recent {
    master_credentials: VecDeque<AuditEntry>,
    acts: VecDeque<AuditEntry>,
}

/// The latest entries, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct RecentEntries {
    /// Resets and operators' sign-ins and actions.
    pub acts: Vec<AuditEntry>,
    pub master_credentials: Vec<AuditEntry>,
}

impl Audit {
    pub fn new(metrics: &Metrics) -> Self {
        // Every series a dashboard or alert watches exists from the start, at zero.
        for action in AuditAction::ALL {
            for result in AuditResult::ALL {
                metrics.audit_series(action.as_str(), result.as_str());
            }
        }
        Self {
            recent: Arc::default(),
            metrics: metrics.clone(),
        }
    }

    pub fn record(&self, actor: &str, action: AuditAction, subject: &str, result: AuditResult) {
        tracing::info!(
            target: "xsigate::audit",
            actor,
            action = action.as_str(),
            subject,
            result = result.as_str(),
            "audit"
        );
        self.metrics.audited(action.as_str(), result.as_str());
        let entry = AuditEntry {
            at_ms: xsigate_plugin_sdk::unix_ms(),
            actor: actor.to_owned(),
            action,
            subject: subject.to_owned(),
            result,
        };
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let ring = if action == AuditAction::MasterCredentials {
            &mut recent.master_credentials
        } else {
            &mut recent.acts
        };
        if ring.len() == RECENT {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The latest `limit` entries of each kind.
    pub fn recent(&self, limit: usize) -> RecentEntries {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let latest = |ring: &VecDeque<AuditEntry>| ring.iter().rev().take(limit).cloned().collect();
        RecentEntries {
            acts: latest(&recent.acts),
            master_credentials: latest(&recent.master_credentials),
        }
    }
}
