//! Housekeeping beside the login API: expired sessions are ended and announced, live sessions
//! counted, and old reset tokens and failure counts deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use xsigate_plugin_sdk::topics::{SessionEndReason, SessionEnded};

use super::api::LoginApi;
use super::sessions::SessionError;
use crate::plugin::SessionEvent;
use crate::state::store::{StoreError, unix_ms};

impl LoginApi {
    /// [`LoginApi::end_sessions_of`] for a proxied request, on the state runtime: the store
    /// work never runs on a proxy thread.
    pub async fn end_sessions_holding_an_old_password(
        self: &Arc<Self>,
        user_id: String,
    ) -> Result<(), String> {
        let this = Arc::clone(self);
        self.shared
            .runtime
            .spawn(async move {
                this.end_sessions_of(&user_id, SessionEndReason::PasswordChanged)
                    .await
                    .map(|_| ())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Ends every session of a user, whose plugins hear `session.ended` with `reason`: when
    /// the password changed (a reset, or a change that went through the gateway), since they
    /// hold the old password and replaying it would spend the user's BroadWorks lockout
    /// budget; or when an operator says so. Returns how many sessions ended.
    pub async fn end_sessions_of(
        &self,
        user_id: &str,
        reason: SessionEndReason,
    ) -> Result<usize, SessionError> {
        let mut owners = self.sessions.end_all_of(user_id).await?;
        let ended = owners.len();
        owners.sort_by(|a, b| (&a.user_id, &a.provider).cmp(&(&b.user_id, &b.provider)));
        owners.dedup();
        for owner in owners {
            self.announce_end(&owner.user_id, &owner.provider, reason)
                .await?;
        }
        Ok(ended)
    }

    /// Ends expired sessions (telling their plugins) every `Sessions::sweep_interval`, counts
    /// live sessions every 30 s, and every 5 minutes deletes expired reset tokens and failure
    /// counts; with instances sharing the store, follows their login locks. Runs for the life
    /// of the process.
    pub async fn sweep(self: Arc<Self>) {
        if self.shared.clustered {
            tokio::spawn(self.limiter.clone().follow_locks());
        }
        let every = self.sessions.sweep_interval();
        let mut interval = tokio::time::interval(every);
        let mut last_count = None::<Instant>;
        let mut last_bookkeeping = Instant::now();
        loop {
            interval.tick().await;
            // Expired sessions are ended (and their plugins told) promptly: a recording
            // service or an event channel must not outlive the session by long.
            match self.sessions.sweep().await {
                Ok(ended) => {
                    for owner in ended {
                        if let Err(e) = self
                            .announce_end(
                                &owner.user_id,
                                &owner.provider,
                                SessionEndReason::Expired,
                            )
                            .await
                        {
                            tracing::warn!(error = %e, "announcing an expired session failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "sweeping expired sessions failed"),
            }
            if last_count.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
                last_count = Some(Instant::now());
                match self.sessions.live().await {
                    Ok(live) => self
                        .metrics
                        .sessions
                        .set(i64::try_from(live).unwrap_or(i64::MAX)),
                    Err(e) => tracing::warn!(error = %e, "counting sessions failed"),
                }
            }
            if last_bookkeeping.elapsed() < Duration::from_secs(300) {
                continue;
            }
            last_bookkeeping = Instant::now();

            if let Err(e) = self.shared.store.reset_sweep(unix_ms()).await {
                tracing::warn!(error = %e, "sweeping expired reset tokens failed");
            }
            if let Err(e) = self.limiter.sweep().await {
                tracing::warn!(error = %e, "sweeping old login failures failed");
            }
            if let Err(e) = self.reset_limiter.sweep().await {
                tracing::warn!(error = %e, "sweeping old reset requests failed");
            }
        }
    }

    /// Tells the provider's plugins that one of a user's sessions ended, and whether it was
    /// the user's last.
    pub(super) async fn announce_end(
        &self,
        user_id: &str,
        provider_id: &str,
        reason: SessionEndReason,
    ) -> Result<(), StoreError> {
        let Some(provider) = self.providers.get(provider_id) else {
            return Ok(());
        };
        let unique_id = self.shared.store.unique_id(user_id).await?;
        let last = self.sessions.live_of(user_id).await? == 0;
        let ended = SessionEvent::Ended(SessionEnded {
            unique_id,
            provider: provider_id.to_owned(),
            reason,
            last,
        });
        self.plugins
            .publish_session(&provider.plugins, &ended, Duration::ZERO)
            .await;
        Ok(())
    }
}
