//! A login session as the gateway keeps it, and as the filters of a proxied request see it.
//! The session authority that creates, resumes and ends them is [`crate::access::Sessions`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xsigate_broadworks::XsiApp;
use xsigate_plugin_sdk::LoginLevel;

/// Where an administrator session may act; empty for users and system administrators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub service_provider: Option<String>,
    pub group: Option<String>,
}

/// What a session keeps sealed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSecrets {
    /// The password the user logged in with, replayed for XSI-Events and screen recording.
    /// None for a single sign-on, where the user typed no BroadWorks password.
    #[serde(default)]
    pub password: Option<String>,
    /// The XSP's session cookie per XSI context (`xsi-actions`, ...).
    #[serde(default)]
    pub xsp_cookies: BTreeMap<String, String>,
}

impl std::fmt::Debug for SessionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSecrets")
            .field("password", &"<redacted>")
            .field("xsp_cookies", &self.xsp_cookies.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub provider: String,
    pub level: LoginLevel,
    pub scope: Scope,
    pub xsp: Option<String>,
    pub secrets: SessionSecrets,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The user's uniqueId; read for sessions of proxied requests only.
    pub unique_id: Option<String>,
    /// SHA-256 of the CSRF token and of the session token, as the store keeps them.
    pub(crate) csrf_hash: Vec<u8>,
    pub(crate) token_hash: Vec<u8>,
}

/// The key of [`SessionSecrets::xsp_cookies`] for requests of an XSI application: the XSP
/// scopes its session cookie to the application's context path, and the streaming channel
/// belongs to XSI-Events.
pub fn cookie_key(app: XsiApp) -> &'static str {
    match app {
        XsiApp::Actions => "xsi-actions",
        XsiApp::Events | XsiApp::Async => "xsi-events",
    }
}

/// A session on a proxied request: what filters read, and the XSP state they change, which
/// the proxy keeps with the session afterwards.
#[derive(Debug)]
pub struct BoundSession {
    pub session: Arc<Session>,
    /// The XSI application of the request, for XSP routes.
    pub app: Option<XsiApp>,
    /// The session's XSP and its cookie for `app`, as the filters left them.
    pub xsp: Option<String>,
    pub xsp_cookie: Option<String>,
    pub changed: bool,
    /// A plugin asked for the provider's master credentials on the upstream request being
    /// prepared (a single-sign-on session); cleared before each preparation.
    pub master_credentials: bool,
}

impl BoundSession {
    pub fn new(session: Arc<Session>, app: Option<XsiApp>) -> Self {
        let xsp = session.xsp.clone();
        let xsp_cookie =
            app.and_then(|app| session.secrets.xsp_cookies.get(cookie_key(app)).cloned());
        Self {
            session,
            app,
            xsp,
            xsp_cookie,
            changed: false,
            master_credentials: false,
        }
    }
}
