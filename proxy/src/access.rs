//! The login API, `/api/access/services/…`: which login options a user has, logging in with a
//! method, the session a cookie names, logging out, and resetting a forgotten password.
//!
//! Every handler runs on the host runtime ([`crate::host`]), never on a proxy thread, so that a
//! storm of logins (identity-provider calls, store writes, sealing) cannot slow proxied
//! traffic. Answers are JSON. Nothing here reveals whether an account exists: options come from
//! configuration and the shape of the query, and every failed login gets the same answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::IntCounterVec;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use xsigate_broadworks::{element_text, user_path};
use xsigate_plugin_sdk::topics::{SessionEndReason, SessionEnded, SessionStarted, UserCredentials};
use xsigate_plugin_sdk::{Authentication, Login, LoginOption, LoginQuery, QueryMatch};

use crate::assertion::{Claims, Signer};
use crate::host::Host;
use crate::limit::{LimitPolicy, LoginLimiter, client_key, user_key};
use crate::mail::Mailer;
use crate::metrics::{Metrics, MetricsError};
use crate::plugin::{AuthenticateError, Plugins, SessionEvent};
use crate::provider::{Provider, Providers, Resolution, XsiCall};
use crate::respond::{ErrorCode, error_body};
use crate::route::Endpoint;
use crate::seal::SealError;
use crate::session::{
    BoundSession, COOKIE, NewSession, Scope, Session, SessionPolicy, SessionSecrets, Sessions,
};
use crate::store::{StoreError, millis, unix_ms};
use crate::token::{new_token, token_hash, well_formed};

/// How long a login waits for the plugins' reports on it (a recording service's login, say).
/// Their work goes on after it; the report then says `pending`.
const LOGIN_REPORT_WAIT: Duration = Duration::from_secs(3);

/// Request bodies of the login API are small JSON documents.
pub const BODY_LIMIT: usize = 16 * 1024;
/// The longest query or user id accepted.
const FIELD_LIMIT: usize = 256;

/// A login API request, taken from the client's request by the proxy.
#[derive(Debug)]
pub struct AccessRequest {
    pub endpoint: AccessEndpoint,
    pub method: http::Method,
    pub body: Bytes,
    /// The session cookie's value, if the client sent one.
    pub session_token: Option<String>,
    /// The `X-CSRF-Token` header.
    pub csrf: Option<String>,
    pub client: Option<IpAddr>,
    /// The client came over TLS (cookies get `Secure`).
    pub tls: bool,
    pub request_id: String,
}

/// [`Endpoint`] without borrowing the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessEndpoint {
    Ztp,
    Login { method: String },
    Logout,
    Session,
    ResetRequest,
    ResetConfirm,
    AppletRedirect { name: String },
    Keys,
}

impl From<Endpoint<'_>> for AccessEndpoint {
    fn from(endpoint: Endpoint<'_>) -> Self {
        match endpoint {
            Endpoint::Ztp => Self::Ztp,
            Endpoint::Login { method } => Self::Login {
                method: method.to_owned(),
            },
            Endpoint::Logout => Self::Logout,
            Endpoint::Session => Self::Session,
            Endpoint::ResetRequest => Self::ResetRequest,
            Endpoint::ResetConfirm => Self::ResetConfirm,
            Endpoint::AppletRedirect { name } => Self::AppletRedirect {
                name: name.to_owned(),
            },
            Endpoint::Keys => Self::Keys,
        }
    }
}

/// What to answer.
#[derive(Debug)]
pub struct AccessReply {
    pub status: u16,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
    /// Set when the answer is an error, for the access log.
    pub error: Option<ErrorCode>,
}

impl AccessReply {
    fn ok(body: &Value) -> Self {
        Self {
            status: 200,
            body: Bytes::from(body.to_string()),
            headers: Vec::new(),
            error: None,
        }
    }

    fn error(code: ErrorCode, request_id: &str) -> Self {
        Self {
            status: code.status(),
            body: error_body(code, request_id),
            headers: Vec::new(),
            error: Some(code),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZtpBody {
    query: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    token: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
    #[serde(default)]
    params: Map<String, Value>,
}

/// The `result` label values of `xsigate_logins_total`.
const LOGIN_RESULTS: [&str; 6] = [
    "accepted",
    "rejected",
    "locked",
    "failed",
    "redirected",
    "choose",
];
/// The `endpoint` label values of `xsigate_rate_limited_total`.
const LIMITED_ENDPOINTS: [&str; 2] = ["login", "reset"];
/// The `result` label values of `xsigate_password_resets_total`.
const RESET_RESULTS: [&str; 5] = ["requested", "mailed", "completed", "rejected", "failed"];

/// `xsigate_logins_total{provider,method,result}`,
/// `xsigate_password_resets_total{provider,result}`, `xsigate_rate_limited_total{endpoint}`
/// and `xsigate_sessions_active`.
#[derive(Debug, Clone)]
struct AccessMetrics {
    logins: IntCounterVec,
    resets: IntCounterVec,
    limited: IntCounterVec,
    sessions: prometheus::IntGauge,
}

impl AccessMetrics {
    fn register(metrics: &Metrics) -> Result<Self, MetricsError> {
        let logins = IntCounterVec::new(
            prometheus::Opts::new(
                "xsigate_logins_total",
                "Login attempts, by provider, method and result (accepted, rejected, locked, \
                 redirected, choose, failed).",
            ),
            &["provider", "method", "result"],
        )?;
        let resets = IntCounterVec::new(
            prometheus::Opts::new(
                "xsigate_password_resets_total",
                "Password resets, by provider and result (requested, mailed, completed, \
                 rejected, failed).",
            ),
            &["provider", "result"],
        )?;
        let limited = IntCounterVec::new(
            prometheus::Opts::new(
                "xsigate_rate_limited_total",
                "Requests of the login API refused with 429 by brute-force protection, by \
                 endpoint (login, reset).",
            ),
            &["endpoint"],
        )?;
        let sessions = prometheus::IntGauge::new(
            "xsigate_sessions_active",
            "Live login sessions in the store (all instances sharing it): counted every 30 s, \
             and moved by this instance's logins and logouts in between.",
        )?;
        metrics.register(Box::new(logins.clone()))?;
        metrics.register(Box::new(resets.clone()))?;
        metrics.register(Box::new(limited.clone()))?;
        metrics.register(Box::new(sessions.clone()))?;
        for endpoint in LIMITED_ENDPOINTS {
            limited.with_label_values(&[endpoint]);
        }
        Ok(Self {
            logins,
            resets,
            limited,
            sessions,
        })
    }
}

/// How a provider's password-reset links reach users.
#[derive(Debug)]
pub struct ResetChannel {
    pub mailer: Mailer,
    /// The page the link opens; the token goes in its fragment.
    pub url: url::Url,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The login API.
#[derive(Debug)]
pub struct Access {
    providers: Arc<Providers>,
    plugins: Arc<Plugins>,
    host: Host,
    sessions: Sessions,
    limiter: LoginLimiter,
    /// Counts reset requests, so that nobody can flood a user's mailbox.
    reset_limiter: LoginLimiter,
    /// Per provider id, for those that offer password reset.
    resets: HashMap<String, ResetChannel>,
    metrics: AccessMetrics,
    signer: Signer,
}

impl Access {
    pub fn new(
        providers: Arc<Providers>,
        plugins: Arc<Plugins>,
        host: Host,
        resets: HashMap<String, ResetChannel>,
        policy: SessionPolicy,
        metrics: &Metrics,
    ) -> Result<Self, AccessError> {
        let sessions = Sessions::new(Arc::clone(&host.store), &host.sealer, policy)?;
        let signer = Signer::new(&host.sealer)?;
        let limiter = LoginLimiter::new(Arc::clone(&host.store), LimitPolicy::default());
        let reset_limiter = LoginLimiter::new(Arc::clone(&host.store), RESET_LIMIT);
        let metrics = AccessMetrics::register(metrics)?;
        // Every series a dashboard or alert watches exists from the start, at zero.
        for provider in &providers.all {
            for plugin in &provider.plugins.identity {
                for method in &plugin.manifest.login_methods {
                    for result in LOGIN_RESULTS {
                        metrics
                            .logins
                            .with_label_values(&[&provider.id, method, result]);
                    }
                }
            }
            if resets.contains_key(&provider.id) {
                for result in RESET_RESULTS {
                    metrics.resets.with_label_values(&[&provider.id, result]);
                }
            }
        }
        Ok(Self {
            providers,
            plugins,
            host,
            sessions,
            limiter,
            reset_limiter,
            resets,
            metrics,
            signer,
        })
    }

    /// Answers a request on the host runtime.
    /// Signs identity assertions for gateway services and applets.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The live session of a proxied request: from memory when fresh, else read on the host
    /// runtime, so that store work never runs on a proxy thread.
    pub async fn resume_proxied(self: &Arc<Self>, token: &str) -> Result<Option<Arc<Session>>, ()> {
        if let Some(session) = self.sessions.cached_by_token(token) {
            return Ok(Some(session));
        }
        let this = Arc::clone(self);
        let token = token.to_owned();
        match self
            .host
            .runtime
            .spawn(async move { this.sessions.resume_cached(&token).await })
            .await
        {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading a session failed");
                Err(())
            }
            Err(_) => Err(()),
        }
    }

    /// Keeps the XSP state the filters of a proxied request changed: in the session cache at
    /// once (the client's next request may follow immediately), in the store on the host
    /// runtime.
    pub fn keep_xsp_state(&self, bound: &BoundSession) {
        let provider = bound.session.provider.clone();
        match self.sessions.keep_xsp_state(bound) {
            Ok(write) => {
                self.host.runtime.spawn(async move {
                    if let Err(e) = write.await {
                        tracing::warn!(provider = %provider, error = %e, "storing a session's XSP cookie failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(provider = %provider, error = %e, "keeping a session's XSP cookie failed");
            }
        }
    }

    pub async fn serve(self: &Arc<Self>, request: AccessRequest) -> AccessReply {
        let this = Arc::clone(self);
        let request_id = request.request_id.clone();
        match self
            .host
            .runtime
            .spawn(async move { this.handle(&request).await })
            .await
        {
            Ok(reply) => reply,
            Err(_) => AccessReply::error(ErrorCode::Internal, &request_id),
        }
    }

    async fn handle(self: &Arc<Self>, request: &AccessRequest) -> AccessReply {
        let allowed = match request.endpoint {
            AccessEndpoint::Session
            | AccessEndpoint::AppletRedirect { .. }
            | AccessEndpoint::Keys => request.method == http::Method::GET,
            _ => request.method == http::Method::POST,
        };
        if !allowed {
            return AccessReply::error(ErrorCode::MethodNotAllowed, &request.request_id);
        }
        let result = match &request.endpoint {
            AccessEndpoint::Ztp => self.ztp(request).await,
            AccessEndpoint::Login { method } => self.login(method, request).await,
            AccessEndpoint::Logout => self.logout(request).await,
            AccessEndpoint::Session => self.session(request).await,
            AccessEndpoint::ResetRequest => self.reset_request(request).await,
            AccessEndpoint::ResetConfirm => self.reset_confirm(request).await,
            AccessEndpoint::AppletRedirect { name } => self.applet_redirect(name, request).await,
            AccessEndpoint::Keys => Ok(AccessReply::ok(&self.signer.jwks())
                .header("cache-control", "public, max-age=300".to_owned())),
        };
        result.unwrap_or_else(|code| AccessReply::error(code, &request.request_id))
    }

    /// Which login options the user has. Answered from configuration and the query's shape:
    /// the same for an existing and a made-up account.
    async fn ztp(&self, request: &AccessRequest) -> Result<AccessReply, ErrorCode> {
        let body: ZtpBody = parse(&request.body)?;
        let query = body.query.trim();
        if query.is_empty() || query.len() > FIELD_LIMIT {
            return Err(ErrorCode::BadRequest);
        }
        let (candidates, matched) = self.candidates(query);
        let mut options: Vec<LoginOption> = Vec::new();
        for provider in &candidates {
            let query = LoginQuery {
                provider: provider.id.clone(),
                query: query.to_owned(),
                matched,
            };
            for option in provider.plugins.login_options(&query).await {
                // Candidates offer the same lookups; the login tries them all.
                if !options.iter().any(|o| o.method == option.method) {
                    options.push(option);
                }
            }
        }
        // Reset links are requested by user id.
        let password_reset = matched == QueryMatch::UserDomain
            && candidates.iter().any(|p| self.resets.contains_key(&p.id));
        Ok(AccessReply::ok(&json!({
            "options": options,
            "password_reset": password_reset,
        })))
    }

    /// The providers a login query may belong to: the one the configuration names, or else
    /// every provider, as candidates for reverse lookups only.
    fn candidates(&self, query: &str) -> (Vec<Arc<Provider>>, QueryMatch) {
        match self.providers.identify(query) {
            Some((provider, matched)) => (vec![Arc::clone(provider)], matched),
            None => (self.providers.all.clone(), QueryMatch::Nothing),
        }
    }

    async fn login(&self, method: &str, request: &AccessRequest) -> Result<AccessReply, ErrorCode> {
        let body: LoginBody = parse(&request.body)?;
        let user = body.user.trim().to_owned();
        if user.is_empty() || user.len() > FIELD_LIMIT {
            return Err(ErrorCode::BadRequest);
        }
        let user_key = user_key(&user);
        let client_key = request.client.map(client_key);
        let keys: Vec<&str> = [Some(user_key.as_str()), client_key.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        if let Some(wait) = self.limiter.retry_after(&keys).await.map_err(internal)? {
            self.count("-", method, "locked");
            return Ok(self.locked("login", wait, &request.request_id));
        }

        // The first candidate whose identity provider does not reject decides: a lookup that
        // finds nobody at one provider goes on to the next.
        let (candidates, matched) = self.candidates(&user);
        // Failures are counted under the provider the configuration named; a query no
        // provider claims counts under `-`.
        let counted_as = match (matched, candidates.first()) {
            (QueryMatch::Nothing, _) | (_, None) => "-".to_owned(),
            (_, Some(provider)) => provider.id.clone(),
        };
        let mut decided = None;
        for provider in candidates {
            let login = Login {
                provider: provider.id.clone(),
                method: method.to_owned(),
                user: user.clone(),
                password: Some(body.password.clone()),
                params: body.params.clone(),
            };
            match provider.plugins.authenticate(&login, matched).await {
                Err(AuthenticateError::UnknownMethod) => {}
                Ok(Authentication::Rejected { reason }) => {
                    tracing::info!(provider = %provider.id, method, reason, "login rejected");
                }
                outcome => {
                    decided = Some((provider, outcome));
                    break;
                }
            }
        }
        let Some((provider, outcome)) = decided else {
            if !self.serves_anywhere(method) {
                return Err(ErrorCode::UnknownLoginMethod);
            }
            // An unknown domain, an unknown user and a wrong password are all one answer.
            return self.rejected(&counted_as, method, &keys, request).await;
        };
        match outcome {
            Ok(Authentication::Authenticated { user_id, grant }) => {
                self.limiter.succeeded(&user_key).await.map_err(internal)?;
                let unique_id = self
                    .host
                    .store
                    .unique_id(&user_id)
                    .await
                    .map_err(internal)?;
                let level = grant.level;
                let issued = self
                    .sessions
                    .create(NewSession {
                        user_id,
                        provider: provider.id.clone(),
                        level,
                        scope: Scope {
                            service_provider: grant.service_provider,
                            group: grant.group,
                        },
                        xsp: grant.xsp,
                        secrets: SessionSecrets {
                            password: body.password.clone(),
                            xsp_cookies: grant.xsp_cookies,
                        },
                    })
                    .await
                    .map_err(internal)?;
                self.count(&provider.id, method, "accepted");
                // The periodic count corrects this for expiries and other instances.
                self.metrics.sessions.inc();
                let started = SessionEvent::Started(SessionStarted {
                    unique_id: unique_id.clone(),
                    provider: provider.id.clone(),
                    level,
                    credentials: Some(UserCredentials {
                        user_id: issued.session.user_id.clone(),
                        password: body.password.clone(),
                    }),
                });
                let reports = self
                    .plugins
                    .publish_session(&provider.plugins.names, &started, LOGIN_REPORT_WAIT)
                    .await;
                let cookie = self.sessions.cookie(&issued.token, request.tls);
                let mut answer = json!({
                    "unique_id": unique_id,
                    "level": level,
                    "csrf_token": issued.csrf,
                    "expires_at_ms": issued.session.expires_at_ms,
                });
                if !reports.is_empty() {
                    answer["reports"] = Value::Object(reports);
                }
                Ok(AccessReply::ok(&answer).header("set-cookie", cookie))
            }
            Ok(Authentication::Choose { choices }) => {
                // Only accounts the credentials opened are named, so this reveals nothing the
                // user could not have logged in to.
                self.count(&provider.id, method, "choose");
                Ok(AccessReply::ok(&json!({ "choose": choices })))
            }
            Ok(Authentication::Redirect { location }) => {
                self.count(&provider.id, method, "redirected");
                Ok(AccessReply::ok(&json!({ "redirect": location })))
            }
            Ok(Authentication::Rejected { .. }) | Err(AuthenticateError::UnknownMethod) => {
                self.rejected(&provider.id, method, &keys, request).await
            }
            Err(AuthenticateError::Failed(failure)) => {
                self.count(&provider.id, method, "failed");
                Err(failure.error_code())
            }
        }
    }

    /// 429 with the wait, counted by endpoint.
    fn locked(&self, endpoint: &str, wait: Duration, request_id: &str) -> AccessReply {
        self.metrics.limited.with_label_values(&[endpoint]).inc();
        AccessReply::error(ErrorCode::TooManyAttempts, request_id)
            .header("retry-after", wait.as_secs().to_string())
    }

    /// Whether any provider offers `method`.
    fn serves_anywhere(&self, method: &str) -> bool {
        self.providers
            .all
            .iter()
            .any(|p| p.plugins.serves_login_method(method))
    }

    /// Counts a failed login and answers it: 401, or 429 when it locked a key.
    async fn rejected(
        &self,
        provider: &str,
        method: &str,
        keys: &[&str],
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let lock = self.limiter.failed(keys).await.map_err(internal)?;
        self.count(provider, method, "rejected");
        Ok(match lock {
            Some(wait) => self.locked("login", wait, &request.request_id),
            None => AccessReply::error(ErrorCode::InvalidCredentials, &request.request_id),
        })
    }

    /// Ends expired sessions (telling their plugins) every `Sessions::sweep_interval`, counts
    /// live sessions every 30 s, and every 5 minutes deletes expired reset tokens and failure
    /// counts; runs for the life of the process.
    pub async fn sweep(self: Arc<Self>) {
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

            if let Err(e) = self.host.store.reset_sweep(unix_ms()).await {
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
    async fn announce_end(
        &self,
        user_id: &str,
        provider_id: &str,
        reason: SessionEndReason,
    ) -> Result<(), StoreError> {
        let Some(provider) = self.providers.get(provider_id) else {
            return Ok(());
        };
        let unique_id = self.host.store.unique_id(user_id).await?;
        let last = self.sessions.live_of(user_id).await? == 0;
        let ended = SessionEvent::Ended(SessionEnded {
            unique_id,
            provider: provider_id.to_owned(),
            reason,
            last,
        });
        self.plugins
            .publish_session(&provider.plugins.names, &ended, Duration::ZERO)
            .await;
        Ok(())
    }

    fn count(&self, provider: &str, method: &str, result: &str) {
        // Method names come from the path: only configured ones become label values.
        let method = if self.serves_anywhere(method) {
            method
        } else {
            "other"
        };
        self.metrics
            .logins
            .with_label_values(&[provider, method, result])
            .inc();
    }

    /// The session the cookie names.
    async fn resume(&self, request: &AccessRequest) -> Result<Option<Session>, ErrorCode> {
        let Some(token) = &request.session_token else {
            return Ok(None);
        };
        self.sessions.resume(token).await.map_err(internal)
    }

    /// Sends the browser to a redirect-mode applet with a short-lived signed token that names
    /// the user (by uniqueId) to it.
    async fn applet_redirect(
        &self,
        name: &str,
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let session = self.resume(request).await?.ok_or(ErrorCode::NotLoggedIn)?;
        let applet = self
            .providers
            .get(&session.provider)
            .and_then(|p| p.applets.get(name))
            .filter(|a| a.mode == crate::config::AppletMode::Redirect)
            .ok_or(ErrorCode::UnknownApplet)?;
        let unique_id = self
            .host
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
        })
    }

    async fn session(&self, request: &AccessRequest) -> Result<AccessReply, ErrorCode> {
        let session = self.resume(request).await?.ok_or(ErrorCode::NotLoggedIn)?;
        let unique_id = self
            .host
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
        })))
    }

    /// Ends the session. A cookie session needs its CSRF token, so another site cannot log the
    /// user out; without a live session there is nothing to end and the answer is the same.
    async fn logout(&self, request: &AccessRequest) -> Result<AccessReply, ErrorCode> {
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
        }
        Ok(AccessReply::ok(&json!({ "status": "logged_out" }))
            .header("set-cookie", Sessions::removal_cookie(request.tls)))
    }
}

/// Reset requests per user and per client: three an hour, then a doubling wait.
const RESET_LIMIT: LimitPolicy = LimitPolicy {
    free_failures: 3,
    first_lock: Duration::from_secs(300),
    max_lock: Duration::from_secs(3600),
    forget_after: Duration::from_secs(3600),
};
/// How long an applet's redirect token works: long enough for the browser to follow it.
const REDIRECT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// How long a reset link works.
const RESET_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// BroadWorks portal passwords are 1 to 60 characters.
const PASSWORD_MAX: usize = 60;
/// Time allowed for each XSI request of a reset.
const XSI_TIMEOUT: Duration = Duration::from_secs(10);

impl Access {
    /// Mails a reset link when the user exists, has an e-mail address on their profile and
    /// their provider offers reset. The answer is the same, and as quick, in every case: the
    /// work happens after it.
    async fn reset_request(
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
        self.host.runtime.spawn(async move {
            let provider = match this.providers.resolve(Some(&user), None) {
                Resolution::Found(provider) => provider.id.clone(),
                _ => "-".to_owned(),
            };
            let result = match this.send_reset_link(&user).await {
                Ok(true) => "mailed",
                Ok(false) => "requested",
                Err(e) => {
                    tracing::warn!(provider, error = %e, "sending a reset link failed");
                    "failed"
                }
            };
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
                stream: false,
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
        self.host
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
    async fn reset_confirm(&self, request: &AccessRequest) -> Result<AccessReply, ErrorCode> {
        let body: ConfirmBody = parse(&request.body)?;
        if body.password.is_empty() || body.password.chars().count() > PASSWORD_MAX {
            return Err(ErrorCode::PasswordRejected);
        }
        if !well_formed(&body.token) {
            return Err(ErrorCode::InvalidResetToken);
        }
        let (user_id, provider_id) = self
            .host
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
                stream: false,
            })
            .await
            .map_err(|e| {
                tracing::warn!(provider = %provider.id, error = %e, "password reset: XSP failed");
                ErrorCode::UpstreamUnavailable
            })?;
        let resets = &self.metrics.resets;
        match response.status().as_u16() {
            200 => {
                if self.sessions.end_all_of(&user_id).await.map_err(internal)? > 0 {
                    self.announce_end(&user_id, &provider.id, SessionEndReason::PasswordChanged)
                        .await
                        .map_err(internal)?;
                }
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

/// Answers a failure of the API's own bookkeeping (the store, sealing) with 500; what failed goes
/// to the log, not to the client.
fn internal(error: impl std::fmt::Display) -> ErrorCode {
    tracing::error!(error = %error, "login API bookkeeping failed");
    ErrorCode::Internal
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ErrorCode> {
    serde_json::from_slice(body).map_err(|_| ErrorCode::BadRequest)
}

/// The session token from `Cookie` headers.
pub fn session_token<'a>(cookies: impl Iterator<Item = &'a http::HeaderValue>) -> Option<String> {
    cookies
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let values = [
            http::HeaderValue::from_static("theme=dark; xsigate_session=abc; other=1"),
            http::HeaderValue::from_static("x=y"),
        ];
        assert_eq!(session_token(values.iter()).as_deref(), Some("abc"));
        let none = [http::HeaderValue::from_static("xsigate_sessionx=abc")];
        assert_eq!(session_token(none.iter()), None);
    }
}
