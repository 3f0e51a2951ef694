//! The login API, `/api/access/services/…`: which login options a user has, logging in with a
//! method, the session a cookie names, and logging out.
//!
//! Every handler runs on the host runtime ([`crate::host`]), never on a proxy thread, so that a
//! storm of logins (identity-provider calls, store writes, sealing) cannot slow proxied
//! traffic. Answers are JSON. Nothing here reveals whether an account exists: options come from
//! configuration and the shape of the query, and every failed login gets the same answer.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use prometheus::IntCounterVec;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use xsigate_plugin_sdk::{Authentication, Login, LoginQuery};

use crate::host::Host;
use crate::limit::{LoginLimiter, client_key, user_key};
use crate::metrics::{Metrics, MetricsError};
use crate::plugin::AuthenticateError;
use crate::provider::{Providers, Resolution};
use crate::respond::{ErrorCode, error_body};
use crate::route::Endpoint;
use crate::session::{COOKIE, Level, NewSession, Session, SessionSecrets, Sessions};

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
struct LoginBody {
    user: String,
    password: String,
    #[serde(default)]
    params: Map<String, Value>,
}

/// `xsigate_logins_total{provider,method,result}`.
#[derive(Debug, Clone)]
struct AccessMetrics {
    logins: IntCounterVec,
}

impl AccessMetrics {
    fn register(metrics: &Metrics) -> Result<Self, MetricsError> {
        let logins = IntCounterVec::new(
            prometheus::Opts::new(
                "xsigate_logins_total",
                "Login attempts, by provider, method and result (accepted, rejected, locked, \
                 failed).",
            ),
            &["provider", "method", "result"],
        )?;
        metrics.register(Box::new(logins.clone()))?;
        Ok(Self { logins })
    }
}

/// The login API.
#[derive(Debug)]
pub struct Access {
    providers: Arc<Providers>,
    host: Host,
    sessions: Sessions,
    limiter: LoginLimiter,
    metrics: AccessMetrics,
}

impl Access {
    pub fn new(
        providers: Arc<Providers>,
        host: Host,
        sessions: Sessions,
        limiter: LoginLimiter,
        metrics: &Metrics,
    ) -> Result<Self, MetricsError> {
        Ok(Self {
            providers,
            host,
            sessions,
            limiter,
            metrics: AccessMetrics::register(metrics)?,
        })
    }

    /// Answers a request on the host runtime.
    pub async fn serve(self: &Arc<Self>, request: AccessRequest) -> AccessReply {
        let this = Arc::clone(self);
        let request_id = request.request_id.clone();
        match self
            .host
            .runtime
            .spawn(async move { this.handle(request).await })
            .await
        {
            Ok(reply) => reply,
            Err(_) => AccessReply::error(ErrorCode::Internal, &request_id),
        }
    }

    async fn handle(&self, request: AccessRequest) -> AccessReply {
        let allowed = match request.endpoint {
            AccessEndpoint::Session => request.method == http::Method::GET,
            _ => request.method == http::Method::POST,
        };
        if !allowed {
            return AccessReply::error(ErrorCode::MethodNotAllowed, &request.request_id);
        }
        let result = match &request.endpoint {
            AccessEndpoint::Ztp => self.ztp(&request).await,
            AccessEndpoint::Login { method } => self.login(method, &request).await,
            AccessEndpoint::Logout => self.logout(&request).await,
            AccessEndpoint::Session => self.session(&request).await,
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
        let mut options = Vec::new();
        if let Resolution::Found(provider) = self.providers.resolve(Some(query), None) {
            let query = LoginQuery {
                provider: provider.id.clone(),
                query: query.to_owned(),
            };
            options = provider.plugins.login_options(&query).await;
        }
        Ok(AccessReply::ok(&json!({
            "options": options,
            "password_reset": false,
        })))
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
        let internal = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "login bookkeeping failed");
            ErrorCode::Internal
        };
        if let Some(wait) = self
            .limiter
            .retry_after(&keys)
            .await
            .map_err(|e| internal(&e))?
        {
            self.count("-", method, "locked");
            return Ok(locked(wait, &request.request_id));
        }

        let provider = match self.providers.resolve(Some(&user), None) {
            Resolution::Found(provider) => Arc::clone(provider),
            // An unknown domain is a failed login like any other: it is counted, and it
            // answers exactly as a wrong password does.
            _ => return self.rejected("-", method, &keys, request).await,
        };
        let login = Login {
            provider: provider.id.clone(),
            method: method.to_owned(),
            user: user.clone(),
            password: Some(body.password.clone()),
            params: body.params,
        };
        match provider.plugins.authenticate(&login).await {
            Ok(Authentication::Authenticated {
                user_id,
                attributes,
            }) => {
                self.limiter
                    .succeeded(&user_key)
                    .await
                    .map_err(|e| internal(&e))?;
                let level = attributes
                    .get("level")
                    .cloned()
                    .and_then(|v| serde_json::from_value::<Level>(v).ok())
                    .unwrap_or(Level::User);
                let xsp = attributes
                    .get("xsp")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let xsp_cookies = attributes
                    .get("xsp_cookies")
                    .and_then(Value::as_object)
                    .map(|cookies| {
                        cookies
                            .iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                let unique_id = self
                    .host
                    .store
                    .unique_id(&user_id)
                    .await
                    .map_err(|e| internal(&e))?;
                let issued = self
                    .sessions
                    .create(NewSession {
                        user_id,
                        provider: provider.id.clone(),
                        level,
                        xsp,
                        secrets: SessionSecrets {
                            password: body.password,
                            xsp_cookies,
                        },
                    })
                    .await
                    .map_err(|e| internal(&e))?;
                self.count(&provider.id, method, "accepted");
                let cookie = self.sessions.cookie(&issued.token, request.tls);
                Ok(AccessReply::ok(&json!({
                    "unique_id": unique_id,
                    "level": level,
                    "csrf_token": issued.csrf,
                    "expires_at_ms": issued.session.expires_at_ms,
                }))
                .header("set-cookie", cookie))
            }
            Ok(Authentication::Rejected { reason }) => {
                tracing::info!(provider = %provider.id, method, reason, "login rejected");
                self.rejected(&provider.id, method, &keys, request).await
            }
            Ok(Authentication::Redirect { location }) => {
                self.count(&provider.id, method, "redirected");
                Ok(AccessReply::ok(&json!({ "redirect": location })))
            }
            Err(AuthenticateError::UnknownMethod) => Err(ErrorCode::UnknownLoginMethod),
            Err(AuthenticateError::Failed(failure)) => {
                self.count(&provider.id, method, "failed");
                Err(failure.error_code())
            }
        }
    }

    /// Counts a failed login and answers it: 401, or 429 when it locked a key.
    async fn rejected(
        &self,
        provider: &str,
        method: &str,
        keys: &[&str],
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let lock = self.limiter.failed(keys).await.map_err(|e| {
            tracing::error!(error = %e, "login bookkeeping failed");
            ErrorCode::Internal
        })?;
        self.count(provider, method, "rejected");
        Ok(match lock {
            Some(wait) => locked(wait, &request.request_id),
            None => AccessReply::error(ErrorCode::InvalidCredentials, &request.request_id),
        })
    }

    /// Deletes expired sessions now and then; runs for the life of the process.
    pub async fn sweep_sessions(self: Arc<Self>) {
        let mut interval = tokio::time::interval(std::time::Duration::from_secs(300));
        loop {
            interval.tick().await;
            if let Err(e) = self.sessions.sweep().await {
                tracing::warn!(error = %e, "sweeping expired sessions failed");
            }
        }
    }

    fn count(&self, provider: &str, method: &str, result: &str) {
        // Method names come from the path: only configured ones become label values.
        let method = if self
            .providers
            .all
            .iter()
            .any(|p| p.plugins.serves_login_method(method))
        {
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
        self.sessions.resume(token).await.map_err(|e| {
            tracing::error!(error = %e, "reading a session failed");
            ErrorCode::Internal
        })
    }

    async fn session(&self, request: &AccessRequest) -> Result<AccessReply, ErrorCode> {
        let session = self.resume(request).await?.ok_or(ErrorCode::NotLoggedIn)?;
        let unique_id = self
            .host
            .store
            .unique_id(&session.user_id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "reading a uniqueId failed");
                ErrorCode::Internal
            })?;
        Ok(AccessReply::ok(&json!({
            "unique_id": unique_id,
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
                self.sessions.end(token).await.map_err(|e| {
                    tracing::error!(error = %e, "ending a session failed");
                    ErrorCode::Internal
                })?;
            }
        }
        Ok(AccessReply::ok(&json!({ "status": "logged_out" }))
            .header("set-cookie", Sessions::removal_cookie(request.tls)))
    }
}

fn locked(wait: std::time::Duration, request_id: &str) -> AccessReply {
    AccessReply::error(ErrorCode::TooManyAttempts, request_id)
        .header("retry-after", wait.as_secs().to_string())
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
