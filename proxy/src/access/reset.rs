//! `reset` and `reset/confirm`: a forgotten password, for providers with `master`, `smtp` and
//! `reset_url`. The request's answer is the same, and as quick, whether or not the user exists;
//! the link works once, and setting the password ends the user's sessions.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use xsigate_broadworks::{element_text, user_path};
use xsigate_plugin_sdk::topics::SessionEndReason;

use super::api::{AccessReply, AccessRequest, FIELD_LIMIT, LoginApi, internal, parse};
use super::limit::{client_key, user_key};
use crate::audit::{AuditAction, AuditResult};
use crate::state::store::{millis, unix_ms};
use crate::state::token::{new_token, token_hash, well_formed};
use crate::upstream::{Resolution, XsiCall};
use crate::wire::error::ErrorCode;

/// How long a reset link works.
const RESET_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// BroadWorks portal passwords are 1 to 60 characters.
const PASSWORD_MAX: usize = 60;
/// Time allowed for each XSI request of a reset.
const XSI_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetBody {
    pub(super) user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfirmBody {
    pub(super) token: String,
    pub(super) password: String,
}

impl LoginApi {
    /// Mails a reset link when the user exists, has an e-mail address on their profile and
    /// their provider offers reset. The answer is the same, and as quick, in every case: the
    /// work happens after it.
    pub(super) async fn reset_request(
        self: &Arc<Self>,
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let body: ResetBody = parse(&request.body)?;
        let user = body.user.trim().to_owned();
        if user.is_empty() || user.len() > FIELD_LIMIT {
            return Err(ErrorCode::BadRequest);
        }
        let user_key = format!("reset:{}", user_key(&user));
        let client_key = request.client.map(|ip| format!("reset:{}", client_key(ip)));
        let keys: Vec<&str> = [Some(user_key.as_str()), client_key.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        if let Some(wait) = self
            .reset_limiter
            .retry_after(&keys)
            .await
            .map_err(internal)?
        {
            return Ok(self.locked("reset", wait, &request.request_id));
        }
        // Every request counts, whatever its outcome.
        self.reset_limiter.failed(&keys).await.map_err(internal)?;
        let this = Arc::clone(self);
        let client = request.client;
        self.shared.runtime.spawn(async move {
            let provider = match this.providers.resolve(Some(&user), None) {
                Resolution::Found(provider) => provider.id.clone(),
                _ => "-".to_owned(),
            };
            let (result, audited) = match this.send_reset_link(&user).await {
                Ok(true) => ("mailed", AuditResult::Ok),
                Ok(false) => ("requested", AuditResult::NotFound),
                Err(e) => {
                    tracing::warn!(provider, error = %e, "sending a reset link failed");
                    ("failed", AuditResult::Failed)
                }
            };
            this.audit.record(
                &client_actor(client),
                AuditAction::PasswordResetRequest,
                &user,
                audited,
            );
            this.metrics
                .resets
                .with_label_values(&[&provider, result])
                .inc();
        });
        Ok(AccessReply::ok(&json!({ "status": "accepted" })))
    }

    /// True when a link was mailed; false when there is nobody (or no way) to mail it to.
    async fn send_reset_link(&self, user: &str) -> Result<bool, String> {
        let Resolution::Found(provider) = self.providers.resolve(Some(user), None) else {
            return Ok(false);
        };
        let (Some(channel), Some(master)) = (self.resets.get(&provider.id), &provider.master)
        else {
            return Ok(false);
        };
        let path = user_path(user, "profile");
        let (response, _) = provider
            .send_xsi(XsiCall {
                method: reqwest::Method::GET,
                path: &path,
                headers: http::HeaderMap::new(),
                body: Vec::new(),
                credentials: Some((&master.user, master.password.expose())),
                pin: None,
                timeout: XSI_TIMEOUT,
            })
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != reqwest::StatusCode::OK {
            return Ok(false);
        }
        let profile = response
            .bytes()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let (Some(user_id), Some(email)) = (
            element_text(&profile, "userId"),
            element_text(&profile, "emailAddress"),
        ) else {
            return Ok(false);
        };
        let token = new_token();
        let expires = unix_ms().saturating_add(millis(RESET_LIFETIME));
        self.shared
            .store
            .reset_insert(&token_hash(&token), &user_id, &provider.id, expires)
            .await
            .map_err(|e| e.to_string())?;
        let mut link = channel.url.clone();
        link.set_fragment(Some(&format!("token={token}")));
        let text = format!(
            "A new password was requested for {user_id}.\n\n\
             Set it here within {} minutes: {link}\n\n\
             If you did not ask for this, ignore this message; your password stays as it is.\n",
            RESET_LIFETIME.as_secs() / 60
        );
        channel
            .mailer
            .send(&email, "Reset your password", &text)
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Sets the new password with the provider's master credentials, takes the token (it
    /// works once), and ends the user's sessions, which hold the old password.
    pub(super) async fn reset_confirm(
        &self,
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let body: ConfirmBody = parse(&request.body)?;
        if body.password.is_empty() || body.password.chars().count() > PASSWORD_MAX {
            return Err(ErrorCode::PasswordRejected);
        }
        if !well_formed(&body.token) {
            return Err(ErrorCode::InvalidResetToken);
        }
        let (user_id, provider_id) = self
            .shared
            .store
            .reset_take(&token_hash(&body.token), unix_ms())
            .await
            .map_err(internal)?
            .ok_or(ErrorCode::InvalidResetToken)?;
        let provider = self
            .providers
            .get(&provider_id)
            .ok_or(ErrorCode::InvalidResetToken)?;
        let master = provider
            .master
            .as_ref()
            .ok_or(ErrorCode::InvalidResetToken)?;
        let path = user_path(&user_id, "profile/Password/Portal");
        let document = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <PortalPassword xmlns=\"http://schema.broadsoft.com/xsi\">\
             <newPassword>{}</newPassword></PortalPassword>",
            quick_xml::escape::escape(body.password.as_str())
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/xml; charset=UTF-8"),
        );
        let (response, _) = provider
            .send_xsi(XsiCall {
                method: reqwest::Method::PUT,
                path: &path,
                headers,
                body: document.into_bytes(),
                credentials: Some((&master.user, master.password.expose())),
                pin: None,
                timeout: XSI_TIMEOUT,
            })
            .await
            .map_err(|e| {
                tracing::warn!(provider = %provider.id, error = %e, "password reset: XSP failed");
                ErrorCode::UpstreamUnavailable
            })?;
        let resets = &self.metrics.resets;
        let status = response.status().as_u16();
        self.audit.record(
            &format!("user:{user_id}"),
            AuditAction::PasswordReset,
            &user_id,
            AuditResult::of_status(status),
        );
        match status {
            200 => {
                self.end_sessions_of(&user_id, SessionEndReason::PasswordChanged)
                    .await
                    .map_err(internal)?;
                resets.with_label_values(&[&provider.id, "completed"]).inc();
                Ok(AccessReply::ok(&json!({ "status": "password_changed" })))
            }
            400..=499 => {
                resets.with_label_values(&[&provider.id, "rejected"]).inc();
                Err(ErrorCode::PasswordRejected)
            }
            _ => Err(ErrorCode::UpstreamUnavailable),
        }
    }
}

/// Who asked, for the audit trail: the client's address, as the access log names it.
fn client_actor(client: Option<std::net::IpAddr>) -> String {
    client.map_or_else(|| "client:-".to_owned(), |ip| format!("client:{ip}"))
}
