//! `session`, `logout` and `applets/<name>`: what a session cookie names, ending it, and the
//! signed redirect to a redirect-mode applet.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use xsigate_plugin_sdk::topics::SessionEndReason;

use super::api::{AccessReply, AccessRequest, LoginApi, internal};
use super::assertion::Claims;
use super::sessions::Sessions;
use crate::config::AppletMode;
use crate::state::session::Session;
use crate::wire::error::ErrorCode;

/// How long an applet's redirect token works: long enough for the browser to follow it.
const REDIRECT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

impl LoginApi {
    /// The session the cookie names.
    pub(super) async fn resume(
        &self,
        request: &AccessRequest,
    ) -> Result<Option<Session>, ErrorCode> {
        let Some(token) = &request.session_token else {
            return Ok(None);
        };
        self.sessions.resume(token).await.map_err(internal)
    }

    /// Sends the browser to a redirect-mode applet with a short-lived signed token that names
    /// the user (by uniqueId) to it.
    pub(super) async fn applet_redirect(
        &self,
        name: &str,
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let session = self.resume(request).await?.ok_or(ErrorCode::NotLoggedIn)?;
        let applet = self
            .providers
            .get(&session.provider)
            .and_then(|p| p.applets.get(name))
            .filter(|a| a.mode == AppletMode::Redirect)
            .ok_or(ErrorCode::UnknownApplet)?;
        let unique_id = self
            .shared
            .store
            .unique_id(&session.user_id)
            .await
            .map_err(internal)?;
        let token = self.signer.sign(&Claims {
            audience: name,
            subject: &unique_id,
            provider: &session.provider,
            level: session.level.as_str(),
            user_id: None,
            lifetime_seconds: REDIRECT_TOKEN_LIFETIME.as_secs(),
        });
        let mut location = applet.url.clone();
        location
            .query_pairs_mut()
            .append_pair("xsigate_token", &token);
        Ok(AccessReply {
            status: 302,
            body: Bytes::from(json!({ "redirect": location.as_str() }).to_string()),
            headers: vec![("location", location.to_string())],
            error: None,
            provider: Some(session.provider.clone()),
        })
    }

    pub(super) async fn session(&self, request: &AccessRequest) -> Result<AccessReply, ErrorCode> {
        let session = self.resume(request).await?.ok_or(ErrorCode::NotLoggedIn)?;
        let unique_id = self
            .shared
            .store
            .unique_id(&session.user_id)
            .await
            .map_err(internal)?;
        // The session's own userId, for its XSI paths; the login answer leaves it out so that
        // an e-mail or phone login does not name accounts to whoever is trying passwords.
        Ok(AccessReply::ok(&json!({
            "unique_id": unique_id,
            "user_id": session.user_id,
            "level": session.level,
            "expires_at_ms": session.expires_at_ms,
        }))
        .about(&session.provider))
    }

    /// Ends the session. A cookie session needs its CSRF token, so another site cannot log the
    /// user out; without a live session there is nothing to end and the answer is the same.
    pub(super) async fn logout(&self, request: &AccessRequest) -> Result<AccessReply, ErrorCode> {
        let mut provider = None;
        if let Some(session) = self.resume(request).await? {
            let presented = request.csrf.as_deref().unwrap_or("");
            if !Sessions::csrf_matches(&session, presented) {
                return Err(ErrorCode::CsrfTokenInvalid);
            }
            if let Some(token) = &request.session_token {
                if self.sessions.end(token).await.map_err(internal)?.is_some() {
                    self.metrics.sessions.dec();
                    self.announce_end(
                        &session.user_id,
                        &session.provider,
                        SessionEndReason::Logout,
                    )
                    .await
                    .map_err(internal)?;
                }
            }
            provider = Some(session.provider);
        }
        let mut reply = AccessReply::ok(&json!({ "status": "logged_out" }))
            .header("set-cookie", Sessions::removal_cookie(request.tls));
        reply.provider = provider;
        Ok(reply)
    }
}
