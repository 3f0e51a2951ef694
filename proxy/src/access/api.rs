//! The login API's front: the request the proxy hands over, the dispatch to each endpoint,
//! and what the endpoints share.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use prometheus::IntCounterVec;
use serde_json::Value;

use super::assertion::Signer;
use super::device::Devices;
use super::endpoint::Endpoint;
use super::limit::{LimitPolicy, LoginLimiter, RESET_LIMIT};
use super::mail::Mailer;
use super::sessions::Sessions;
use crate::audit::Audit;
use crate::metrics::{Metrics, MetricsError};
use crate::plugin::Plugins;
use crate::state::Shared;
use crate::state::seal::{SealError, SealKey};
use crate::state::store::store_unavailable;
use crate::upstream::Providers;
use crate::wire::error::{ErrorCode, error_body};

/// The longest query or user id accepted.
pub(super) const FIELD_LIMIT: usize = 256;

/// A login API request, taken from the client's request by the proxy.
#[derive(Debug)]
pub struct AccessRequest {
    pub endpoint: Endpoint,
    pub method: http::Method,
    pub body: Bytes,
    /// The request target's query (a callback's fields).
    pub query: Option<String>,
    /// The session cookie's value, if the client sent one.
    pub session_token: Option<String>,
    /// The device cookie's value, if the client sent one.
    pub device_cookie: Option<String>,
    /// The flow cookie's value, if the client sent one (a single sign-on's callback).
    pub flow_cookie: Option<String>,
    /// The `X-CSRF-Token` header.
    pub csrf: Option<String>,
    pub client: Option<IpAddr>,
    /// The client came over TLS (cookies get `Secure`).
    pub tls: bool,
    /// The body is declared JSON (`Content-Type: application/json`).
    pub json: bool,
    /// The body is declared a form (`Content-Type: application/x-www-form-urlencoded`).
    pub form: bool,
    pub request_id: String,
}

/// What to answer.
#[derive(Debug)]
pub struct AccessReply {
    pub status: u16,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
    /// Set when the answer is an error, for the access log.
    pub error: Option<ErrorCode>,
    /// The provider whose user the answer is about: only that provider's dialer origins may
    /// read it from a browser. `None` for answers about no user.
    pub provider: Option<String>,
}

impl AccessReply {
    pub(super) fn ok(body: &Value) -> Self {
        Self {
            status: 200,
            body: Bytes::from(body.to_string()),
            headers: Vec::new(),
            error: None,
            provider: None,
        }
    }

    pub(super) fn error(code: ErrorCode, request_id: &str) -> Self {
        Self {
            status: code.status(),
            body: error_body(code, request_id),
            headers: Vec::new(),
            error: Some(code),
            provider: None,
        }
    }

    pub(super) fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Marks the answer as about a user of `provider`.
    pub(super) fn about(mut self, provider: &str) -> Self {
        self.provider = Some(provider.to_owned());
        self
    }
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
const LIMITED_ENDPOINTS: [&str; 3] = ["login", "reset", "transparent"];
/// The `result` label values of `xsigate_password_resets_total`.
const RESET_RESULTS: [&str; 5] = ["requested", "mailed", "completed", "rejected", "failed"];

/// `xsigate_logins_total{provider,method,result}`,
/// `xsigate_password_resets_total{provider,result}`, `xsigate_rate_limited_total{endpoint}`
/// and `xsigate_sessions_active`.
#[derive(Debug, Clone)]
pub(super) struct AccessMetrics {
    pub(super) logins: IntCounterVec,
    pub(super) resets: IntCounterVec,
    pub(super) limited: IntCounterVec,
    pub(super) sessions: prometheus::IntGauge,
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
                "Requests refused with 429 by brute-force protection, by endpoint (login, reset, \
                 and transparent: plain XSI clients' credentials).",
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

/// Why the login API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The login API, `/api/access/services/…`.
#[derive(Debug)]
pub struct LoginApi {
    pub(super) providers: Arc<Providers>,
    pub(super) plugins: Arc<Plugins>,
    pub(super) shared: Shared,
    pub(super) sessions: Arc<Sessions>,
    pub(super) limiter: LoginLimiter,
    /// Counts reset requests, so that nobody can flood a user's mailbox.
    pub(super) reset_limiter: LoginLimiter,
    /// Per provider id, for those that offer password reset.
    pub(super) resets: HashMap<String, ResetChannel>,
    pub(super) metrics: AccessMetrics,
    pub(super) signer: Arc<Signer>,
    pub(super) devices: Devices,
    /// Seals single sign-on flows and their answers in the store.
    pub(super) flow_seal: SealKey,
    pub(super) audit: Audit,
}

impl LoginApi {
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts the login API is assembled from, each made once by server::run"
    )]
    pub fn new(
        providers: Arc<Providers>,
        plugins: Arc<Plugins>,
        shared: Shared,
        sessions: Arc<Sessions>,
        signer: Arc<Signer>,
        resets: HashMap<String, ResetChannel>,
        metrics: &Metrics,
        audit: &Audit,
    ) -> Result<Self, AccessError> {
        let limiter = LoginLimiter::new(Arc::clone(&shared.store), LimitPolicy::default());
        let reset_limiter = LoginLimiter::new(Arc::clone(&shared.store), RESET_LIMIT);
        let metrics = AccessMetrics::register(metrics)?;
        let devices = Devices::new(&shared.sealer)?;
        let flow_seal = shared.sealer.key("sso-flow")?;
        // Every series a dashboard or alert watches exists from the start, at zero.
        for provider in &providers.all {
            for plugin in &plugins.chain(provider).identity {
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
            shared,
            sessions,
            limiter,
            reset_limiter,
            resets,
            metrics,
            signer,
            devices,
            audit: audit.clone(),
            flow_seal,
        })
    }

    pub async fn serve(self: &Arc<Self>, request: AccessRequest) -> AccessReply {
        let this = Arc::clone(self);
        let request_id = request.request_id.clone();
        match self
            .shared
            .runtime
            .spawn(async move { this.handle(&request).await })
            .await
        {
            Ok(reply) => reply,
            Err(_) => AccessReply::error(ErrorCode::Internal, &request_id),
        }
    }

    async fn handle(self: &Arc<Self>, request: &AccessRequest) -> AccessReply {
        if !request.endpoint.takes(&request.method) {
            return AccessReply::error(ErrorCode::MethodNotAllowed, &request.request_id);
        }
        // A cross-site form can post text without a preflight; only JSON is read, except
        // where a cross-site form is the protocol (a callback, guarded by its flow cookie).
        let readable = if request.endpoint.reads_form() {
            request.form
        } else {
            request.json
        };
        if !request.body.is_empty() && !readable {
            return AccessReply::error(ErrorCode::UnsupportedMediaType, &request.request_id);
        }
        let result = match &request.endpoint {
            Endpoint::Ztp => self.ztp(request).await,
            Endpoint::Login { method } => self.login(method, request).await,
            Endpoint::LoginCallback { method } => self.callback(method, request).await,
            Endpoint::LoginMetadata { method } => self.sign_in_metadata(method, request).await,
            Endpoint::LoginResult => self.login_result(request).await,
            Endpoint::Logout => self.logout(request).await,
            Endpoint::Session => self.session(request).await,
            Endpoint::ResetRequest => self.reset_request(request).await,
            Endpoint::ResetConfirm => self.reset_confirm(request).await,
            Endpoint::AppletRedirect { name } => self.applet_redirect(name, request).await,
            Endpoint::Keys => Ok(AccessReply::ok(&self.signer.jwks())
                .header("cache-control", "public, max-age=300".to_owned())),
        };
        result.unwrap_or_else(|code| AccessReply::error(code, &request.request_id))
    }
}

/// Answers a failure of the API's own bookkeeping (the store, sealing): 503 while the store
/// cannot be reached (the client may try again shortly), 500 otherwise. What failed goes to the
/// log, not to the client.
pub(super) fn internal(error: impl std::error::Error + 'static) -> ErrorCode {
    if store_unavailable(&error) {
        tracing::warn!(error = %error, "the store cannot be reached; the request is refused");
        return ErrorCode::StoreUnavailable;
    }
    tracing::error!(error = %error, "login API bookkeeping failed");
    ErrorCode::Internal
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ErrorCode> {
    serde_json::from_slice(body).map_err(|_| ErrorCode::BadRequest)
}
