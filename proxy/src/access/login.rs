//! `idp/<method>`: logging in with a method, through the identity-provider plugin of the
//! provider that serves it. Every failed login gets the same answer; failures are counted per
//! user id and per client address ([`super::limit`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use xsigate_plugin_sdk::topics::{SessionStarted, UserCredentials};
use xsigate_plugin_sdk::{Authentication, Grant, Login, QueryMatch};

use super::api::{AccessReply, AccessRequest, FIELD_LIMIT, LoginApi, internal, parse};
use super::device::Devices;
use super::limit::{client_key, user_key};
use super::sessions::NewSession;
use crate::plugin::{AuthenticateError, SessionEvent};
use crate::state::session::{Scope, SessionSecrets};
use crate::upstream::Provider;
use crate::wire::error::ErrorCode;

/// How long a login waits for the plugins' reports on it (a recording service's login, say).
/// Their work goes on after it; the report then says `pending`.
const LOGIN_REPORT_WAIT: Duration = Duration::from_secs(3);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    pub(super) user: String,
    /// Absent for a redirect login (single sign-on), required for any other.
    #[serde(default)]
    pub(super) password: Option<String>,
    #[serde(default)]
    pub(super) params: Map<String, Value>,
}

/// A login that succeeded: the session and the answer the dialer gets.
pub(super) struct Opened {
    pub(super) token: String,
    pub(super) answer: Value,
}

impl LoginApi {
    pub(super) async fn login(
        &self,
        method: &str,
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let body: LoginBody = parse(&request.body)?;
        let user = body.user.trim().to_owned();
        if user.is_empty() || user.len() > FIELD_LIMIT {
            return Err(ErrorCode::BadRequest);
        }
        if self.redirects_anywhere(method) {
            return self
                .start_redirect(method, user, body.params, request)
                .await;
        }
        let Some(password) = body.password else {
            return Err(if self.serves_anywhere(method) {
                ErrorCode::BadRequest
            } else {
                ErrorCode::UnknownLoginMethod
            });
        };
        // A browser that logged in as this user before is counted on its own; any other
        // client under the user id and its address, which strangers' failures may lock.
        let device = request
            .device_cookie
            .as_deref()
            .and_then(|cookie| self.devices.recognise(cookie, &user));
        let owned_keys: Vec<String> = match &device {
            Some(device) => vec![device.clone()],
            None => [Some(user_key(&user)), request.client.map(client_key)]
                .into_iter()
                .flatten()
                .collect(),
        };
        let keys: Vec<&str> = owned_keys.iter().map(String::as_str).collect();
        // The key a success clears: the device's, or the user id's for unknown clients.
        let cleared = device.clone().unwrap_or_else(|| user_key(&user));
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
                password: Some(password.clone()),
                params: body.params.clone(),
                flow: None,
            };
            match self
                .plugins
                .chain(&provider)
                .authenticate(&login, matched)
                .await
            {
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
                self.limiter.succeeded(&cleared).await.map_err(internal)?;
                let opened = self
                    .open_session(&provider, method, user_id, grant, Some(password))
                    .await?;
                let mut reply = AccessReply::ok(&opened.answer)
                    .header(
                        "set-cookie",
                        self.sessions.cookie(&opened.token, request.tls),
                    )
                    .about(&provider.id);
                if device.is_none() {
                    let device = self.devices.issue(&user).map_err(internal)?;
                    reply = reply.header("set-cookie", Devices::cookie(&device, request.tls));
                }
                Ok(reply)
            }
            Ok(Authentication::Choose { choices }) => {
                // Only accounts the credentials opened are named, so this reveals nothing the
                // user could not have logged in to.
                self.count(&provider.id, method, "choose");
                Ok(AccessReply::ok(&json!({ "choose": choices })).about(&provider.id))
            }
            Ok(Authentication::Redirect { location }) => {
                self.count(&provider.id, method, "redirected");
                Ok(AccessReply::ok(&json!({ "redirect": location })).about(&provider.id))
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

    /// A login succeeded: makes the session, publishes `session.started` and waits (briefly)
    /// for the plugins' reports. The answer is the same for every method: the uniqueId, the
    /// level, the CSRF token, the expiry and the reports (a Firebase custom token, ...).
    /// `password` is the user's BroadWorks password, when they typed one.
    pub(super) async fn open_session(
        &self,
        provider: &Provider,
        method: &str,
        user_id: String,
        grant: Grant,
        password: Option<String>,
    ) -> Result<Opened, ErrorCode> {
        let unique_id = self
            .shared
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
                    password: password.clone(),
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
                password,
            }),
        });
        let reports = self
            .plugins
            .publish_session(&provider.plugins, &started, LOGIN_REPORT_WAIT)
            .await;
        let mut answer = json!({
            "unique_id": unique_id,
            "level": level,
            "csrf_token": issued.csrf,
            "expires_at_ms": issued.session.expires_at_ms,
        });
        if !reports.is_empty() {
            answer["reports"] = Value::Object(reports);
        }
        Ok(Opened {
            token: issued.token,
            answer,
        })
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

    /// 429 with the wait, counted by endpoint.
    pub(super) fn locked(&self, endpoint: &str, wait: Duration, request_id: &str) -> AccessReply {
        self.metrics.limited.with_label_values(&[endpoint]).inc();
        AccessReply::error(ErrorCode::TooManyAttempts, request_id)
            .header("retry-after", wait.as_secs().to_string())
    }

    /// Whether any provider offers `method`.
    pub(super) fn serves_anywhere(&self, method: &str) -> bool {
        self.providers
            .all
            .iter()
            .any(|p| self.plugins.chain(p).serves_login_method(method))
    }

    pub(super) fn count(&self, provider: &str, method: &str, result: &str) {
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
}

/// Plain XSI clients (transparent mode) send their own credentials to the XSP on every
/// request. Those guesses count as login failures, under the same keys as an unknown client's
/// logins (the user id and the address), so a user id locked at the login API is not probed
/// through the proxy either, and no guess ever spends the user's BroadWorks lockout budget past
/// the gateway's own limit.
impl LoginApi {
    /// How long a plain XSI client's request with credentials of `user` must wait; `None`
    /// when it may go to the XSP. From memory: no await on the request path.
    pub fn transparent_wait(&self, user: &str, client: Option<IpAddr>) -> Option<Duration> {
        if self.limiter.is_quiet() {
            return None;
        }
        let user_key = user_key(user);
        let client_key = client.map(client_key);
        let keys: Vec<&str> = [Some(user_key.as_str()), client_key.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let wait = self.limiter.retry_after_now(&keys);
        if wait.is_some() {
            self.metrics
                .limited
                .with_label_values(&["transparent"])
                .inc();
        }
        wait
    }

    /// The XSP answered a plain XSI client's request with credentials of `user`: a 401 counts
    /// as a failed login, a success clears the user's count. The store work runs on the state
    /// runtime.
    pub fn transparent_answered(self: &Arc<Self>, user: &str, client: Option<IpAddr>, status: u16) {
        let refused = status == 401;
        if !refused && (!(200..300).contains(&status) || self.limiter.is_quiet()) {
            return;
        }
        let user_key = user_key(user);
        if !refused && !self.limiter.is_failing(&user_key) {
            return;
        }
        let client_key = client.map(client_key);
        let limiter = self.limiter.clone();
        self.shared.runtime.spawn(async move {
            let result = if refused {
                let keys: Vec<&str> = [Some(user_key.as_str()), client_key.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                limiter.failed(&keys).await.map(|_| ())
            } else {
                limiter.succeeded(&user_key).await
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "counting a plain XSI client's login failed");
            }
        });
    }
}
