//! The operator console (`[server.console]`, `[[server.admins]]`): its own listener, loopback
//! by default, where operators sign in with their own accounts and see and act on what the
//! gateway keeps. docs/operator.md describes it for operators.
//!
//! - `GET /` the status page (server-rendered, readable without JavaScript; `console.js`
//!   refreshes it), `GET /api/status` the same as JSON;
//! - `GET|POST /login`, `POST /logout`;
//! - `POST /actions/<action>` (a form) and `POST /api/actions/<action>` (JSON), `<action>`
//!   one of `end_sessions`, `reopen_channel_set`, `resync`, each for one user id.
//!
//! Sign-in failures are limited and locked as user logins are (`access::LoginLimiter`, under
//! keys of the console's own). Every change needs the session's CSRF token. Every sign-in and
//! action is audited.
//!
//! Uses: [`crate::config`], [`crate::wire`], [`crate::audit`], [`crate::state`],
//! [`crate::upstream`], [`crate::plugin`], [`crate::access`].

mod page;
mod parts;
mod sessions;
mod status;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use xsigate_plugin_sdk::topics::{OPERATOR_ACTION, OperatorAction, SessionEndReason, UserAction};

use crate::access::is_form;
use crate::access::limit::{LimitPolicy, LoginLimiter, client_key, user_key};
use crate::audit::{AuditAction, AuditResult};
use crate::config::{AdminConfig, Config};
use crate::wire::error::{self, ErrorCode};
use crate::wire::headers::{CONSOLE_COOKIE, CONSOLE_CSRF_FIELD, CSRF_TOKEN};

pub use parts::ConsoleParts;
use parts::PLUGIN_WAIT;
pub use sessions::{ConsoleSession, ConsoleSessions};

/// Requests to the console are forms and small JSON documents.
const BODY_LIMIT: usize = 16 * 1024;
/// Operators' sign-ins: the user logins' lock times, and the fifth wrong password in a row
/// locks the account.
const SIGN_IN_LIMIT: LimitPolicy = LimitPolicy {
    free_failures: 4,
    first_lock: Duration::from_secs(30),
    max_lock: Duration::from_secs(15 * 60),
    forget_after: Duration::from_secs(3600),
};

/// The console's HTTP application.
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    parts: ConsoleParts,
    admins: HashMap<String, AdminConfig>,
    sessions: ConsoleSessions,
    limiter: LoginLimiter,
    checksum: String,
    started: Instant,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("admins", &self.inner.admins.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Console {
    /// The console of `config`'s operators; `None` when there are none, and then nothing
    /// listens.
    pub fn new(config: &Config, parts: ConsoleParts) -> Option<Self> {
        if config.server.admins.is_empty() {
            return None;
        }
        let console = &config.server.console;
        let store = Arc::clone(&parts.shared.store);
        Some(Self {
            inner: Arc::new(Inner {
                admins: config
                    .server
                    .admins
                    .iter()
                    .map(|a| (a.user.to_lowercase(), a.clone()))
                    .collect(),
                sessions: ConsoleSessions::new(
                    Arc::clone(&store),
                    Duration::from_secs(console.idle_seconds),
                    Duration::from_secs(console.lifetime_seconds),
                ),
                limiter: LoginLimiter::new(store, SIGN_IN_LIMIT),
                checksum: config.checksum.clone(),
                started: Instant::now(),
                parts,
            }),
        })
    }
}

/// A request as the console handles it, read whole.
struct ConsoleRequest {
    method: http::Method,
    path: String,
    query: String,
    cookie: Option<String>,
    csrf_header: Option<String>,
    content_type: String,
    body: Vec<u8>,
    client: Option<IpAddr>,
}

/// An answer before it becomes a Pingora response.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(http::HeaderName, String)>,
}

impl Answer {
    fn html(status: StatusCode, body: String) -> Self {
        Self {
            status,
            content_type: "text/html; charset=utf-8",
            body: body.into_bytes(),
            headers: Vec::new(),
        }
    }

    fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).unwrap_or_default(),
            headers: Vec::new(),
        }
    }

    fn error(code: ErrorCode) -> Self {
        Self {
            status: StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST),
            content_type: "application/json",
            body: error::error_body(code, "").to_vec(),
            headers: Vec::new(),
        }
    }

    fn see_other(location: &str) -> Self {
        Self {
            status: StatusCode::SEE_OTHER,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
            headers: vec![(http::header::LOCATION, location.to_owned())],
        }
    }

    fn header(mut self, name: http::HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

#[async_trait]
impl ServeHttp for Console {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let answer = match read_request(session).await {
            Ok(request) => {
                // Store work and argon2 run on the state runtime, never on a listener thread.
                let inner = Arc::clone(&self.inner);
                let runtime = inner.parts.shared.runtime.clone();
                runtime
                    .spawn(async move { inner.handle(request).await })
                    .await
                    .unwrap_or_else(|_| Answer::error(ErrorCode::Internal))
            }
            Err(code) => Answer::error(code),
        };
        into_response(answer)
    }
}

async fn read_request(session: &mut ServerSession) -> Result<ConsoleRequest, ErrorCode> {
    let header = session.req_header();
    let text = |name: &str| {
        header
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let cookie = header
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == CONSOLE_COOKIE)
        .map(|(_, value)| value.to_owned());
    let mut request = ConsoleRequest {
        method: header.method.clone(),
        path: header.uri.path().to_owned(),
        query: header.uri.query().unwrap_or_default().to_owned(),
        cookie,
        csrf_header: text(CSRF_TOKEN),
        content_type: text("content-type").unwrap_or_default(),
        body: Vec::new(),
        client: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(std::net::SocketAddr::ip),
    };
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|_| ErrorCode::BadRequest)?
    {
        if request.body.len() + chunk.len() > BODY_LIMIT {
            return Err(ErrorCode::PayloadTooLarge);
        }
        request.body.extend_from_slice(&chunk);
    }
    Ok(request)
}

fn into_response(answer: Answer) -> Response<Vec<u8>> {
    let length = answer.body.len();
    let mut response = Response::new(answer.body);
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    let mut set = |name: http::HeaderName, value: &str| {
        if let Ok(value) = http::HeaderValue::from_str(value) {
            headers.append(name, value);
        }
    };
    set(http::header::CONTENT_TYPE, answer.content_type);
    set(http::header::CONTENT_LENGTH, &length.to_string());
    // The console's pages load nothing but its own script and style, go in no frame, and are
    // kept by no cache.
    set(
        http::header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(http::header::X_FRAME_OPTIONS, "DENY");
    set(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(http::header::REFERRER_POLICY, "no-referrer");
    set(http::header::CACHE_CONTROL, "no-store");
    for (name, value) in answer.headers {
        set(name, &value);
    }
    response
}

/// The JSON API's body of an action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    user: String,
}

/// The fields of a form, each at most once; `None` for anything else.
fn form_fields(request: &ConsoleRequest) -> Option<HashMap<String, String>> {
    if !is_form(Some(&request.content_type)) {
        return None;
    }
    let mut fields = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(&request.body) {
        if fields
            .insert(name.into_owned(), value.into_owned())
            .is_some()
        {
            return None;
        }
    }
    Some(fields)
}

/// A form's field, or empty.
fn field(fields: &HashMap<String, String>, name: &str) -> String {
    fields.get(name).cloned().unwrap_or_default()
}

/// What an operator may do to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    EndSessions,
    Plugin(UserAction),
}

impl Action {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "end_sessions" => Some(Self::EndSessions),
            "reopen_channel_set" => Some(Self::Plugin(UserAction::ReopenChannelSet)),
            "resync" => Some(Self::Plugin(UserAction::Resync)),
            _ => None,
        }
    }

    fn audited(self) -> AuditAction {
        match self {
            Self::EndSessions => AuditAction::EndSessions,
            Self::Plugin(UserAction::ReopenChannelSet) => AuditAction::ReopenChannelSet,
            Self::Plugin(UserAction::Resync) => AuditAction::Resync,
        }
    }
}

impl Inner {
    async fn handle(&self, request: ConsoleRequest) -> Answer {
        let method = &request.method;
        let path = request.path.as_str();
        match (method.as_str(), path) {
            ("GET", "/console.js") => static_file("text/javascript; charset=utf-8", page::SCRIPT),
            ("GET", "/console.css") => static_file("text/css; charset=utf-8", page::STYLE),
            // Browsers ask for it unprompted; there is none.
            ("GET", "/favicon.ico") => Answer {
                status: StatusCode::NO_CONTENT,
                content_type: "image/x-icon",
                body: Vec::new(),
                headers: Vec::new(),
            },
            ("GET", "/login") => Answer::html(StatusCode::OK, page::login(None)),
            ("POST", "/login") => self.login(&request).await,
            _ => self.signed_in(request).await,
        }
    }

    /// Everything behind the sign-in.
    async fn signed_in(&self, request: ConsoleRequest) -> Answer {
        let api = request.path.starts_with("/api/");
        let session = match &request.cookie {
            Some(token) => self.sessions.resume(token).await,
            None => Ok(None),
        };
        let (token, session) = match (session, &request.cookie) {
            (Ok(Some(session)), Some(token)) => (token.clone(), session),
            (Err(e), _) => {
                tracing::warn!(error = %e, "console: reading a session failed");
                return Answer::error(ErrorCode::Internal);
            }
            _ if api => return Answer::error(ErrorCode::NotLoggedIn),
            _ => return Answer::see_other("/login"),
        };
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/") => {
                let status = status::gather(&self.parts, &self.checksum, self.started).await;
                let csrf = ConsoleSessions::csrf_token(&token);
                let notice = notice_of(&request.query);
                Answer::html(
                    StatusCode::OK,
                    page::status(&session.user, &csrf, &status, notice.as_deref()),
                )
            }
            ("GET", "/api/status") => {
                let status = status::gather(&self.parts, &self.checksum, self.started).await;
                let mut status = serde_json::to_value(status).unwrap_or_default();
                status["operator"] = session.user.clone().into();
                status["csrf_token"] = ConsoleSessions::csrf_token(&token).into();
                Answer::json(StatusCode::OK, &status)
            }
            ("POST", "/logout") => {
                let presented = form_fields(&request)
                    .map(|f| field(&f, CONSOLE_CSRF_FIELD))
                    .unwrap_or_default();
                if !ConsoleSessions::csrf_matches(&token, &presented) {
                    return self.csrf_refused(&session, AuditAction::AdminLogout);
                }
                let _ = self.sessions.end(&token).await;
                self.parts.audit.record(
                    &actor(&session.user),
                    AuditAction::AdminLogout,
                    &session.user,
                    AuditResult::Ok,
                );
                Answer::see_other("/login").header(http::header::SET_COOKIE, removal_cookie())
            }
            ("POST", path) => {
                let (name, api) = match path.strip_prefix("/api/actions/") {
                    Some(name) => (name, true),
                    None => match path.strip_prefix("/actions/") {
                        Some(name) => (name, false),
                        None => return Answer::error(ErrorCode::NotFound),
                    },
                };
                let Some(action) = Action::parse(name) else {
                    return Answer::error(ErrorCode::NotFound);
                };
                self.act(&request, &token, &session, action, api).await
            }
            ("GET", _) => Answer::error(ErrorCode::NotFound),
            _ => Answer::error(ErrorCode::MethodNotAllowed),
        }
    }

    fn csrf_refused(&self, session: &ConsoleSession, action: AuditAction) -> Answer {
        self.parts
            .audit
            .record(&actor(&session.user), action, "-", AuditResult::Refused);
        Answer::error(ErrorCode::CsrfTokenInvalid)
    }

    async fn login(&self, request: &ConsoleRequest) -> Answer {
        let form = form_fields(request).unwrap_or_default();
        let (user, password) = (field(&form, "user"), field(&form, "password"));
        if user.is_empty() || password.is_empty() {
            return Answer::html(
                StatusCode::BAD_REQUEST,
                page::login(Some("Enter a user and a password.")),
            );
        }
        let user = user.trim().to_lowercase();
        let user_key = format!("console:{}", user_key(&user));
        let client_key = request
            .client
            .map(|ip| format!("console:{}", client_key(ip)));
        let keys: Vec<&str> = [Some(user_key.as_str()), client_key.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let audit = |result| {
            self.parts
                .audit
                .record(&actor(&user), AuditAction::AdminLogin, &user, result);
        };
        match self.limiter.retry_after(&keys).await {
            Ok(Some(wait)) => {
                audit(AuditResult::Refused);
                return Answer::html(
                    StatusCode::TOO_MANY_REQUESTS,
                    page::login(Some("Too many failed sign-ins: wait, then try again.")),
                )
                .header(http::header::RETRY_AFTER, wait.as_secs().max(1).to_string());
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "console: reading sign-in failures failed");
                return Answer::error(ErrorCode::Internal);
            }
        }
        let admin = self.admins.get(&user).cloned();
        // argon2id at OWASP's cost is slow on purpose; an unknown user costs the same.
        let verified = tokio::task::spawn_blocking(move || match admin {
            Some(admin) => admin.password_hash.verify(&password),
            None => {
                let _ = crate::config::password::hash(&password);
                false
            }
        })
        .await
        .unwrap_or(false);
        if !verified {
            audit(AuditResult::Refused);
            return match self.limiter.failed(&keys).await {
                Ok(Some(wait)) => Answer::html(
                    StatusCode::TOO_MANY_REQUESTS,
                    page::login(Some("Too many failed sign-ins: wait, then try again.")),
                )
                .header(http::header::RETRY_AFTER, wait.as_secs().max(1).to_string()),
                Ok(None) => Answer::html(
                    StatusCode::UNAUTHORIZED,
                    page::login(Some("Wrong user or password.")),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "console: counting a failed sign-in failed");
                    Answer::error(ErrorCode::Internal)
                }
            };
        }
        let _ = self.limiter.succeeded(&user_key).await;
        match self.sessions.create(&user).await {
            Ok(token) => {
                audit(AuditResult::Ok);
                Answer::see_other("/").header(http::header::SET_COOKIE, session_cookie(&token))
            }
            Err(e) => {
                tracing::warn!(error = %e, "console: storing a session failed");
                Answer::error(ErrorCode::Internal)
            }
        }
    }

    async fn act(
        &self,
        request: &ConsoleRequest,
        token: &str,
        session: &ConsoleSession,
        action: Action,
        api: bool,
    ) -> Answer {
        let (user, presented) = if api {
            let Ok(body) = serde_json::from_slice::<UserBody>(&request.body) else {
                return Answer::error(ErrorCode::BadRequest);
            };
            (body.user, request.csrf_header.clone().unwrap_or_default())
        } else {
            let Some(form) = form_fields(request) else {
                return Answer::error(ErrorCode::BadRequest);
            };
            (field(&form, "user"), field(&form, CONSOLE_CSRF_FIELD))
        };
        if !ConsoleSessions::csrf_matches(token, &presented) {
            return self.csrf_refused(session, action.audited());
        }
        let user = user.trim().to_owned();
        if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
            return Answer::error(ErrorCode::BadRequest);
        }
        let (result, detail) = self.perform(action, &user).await;
        self.parts
            .audit
            .record(&actor(&session.user), action.audited(), &user, result);
        if api {
            return Answer::json(
                StatusCode::OK,
                &serde_json::json!({ "result": result, "detail": detail }),
            );
        }
        let notice: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("notice", &format!("{user}: {detail}"))
            .finish();
        Answer::see_other(&format!("/?{notice}"))
    }

    /// Does it; returns the result and what to tell the operator.
    async fn perform(&self, action: Action, user: &str) -> (AuditResult, String) {
        let parts = &self.parts;
        let Some((provider, _)) = parts.providers.identify(user) else {
            return (
                AuditResult::NotFound,
                "no provider serves this user id".to_owned(),
            );
        };
        match action {
            Action::EndSessions => {
                match parts
                    .login_api
                    .end_sessions_of(user, SessionEndReason::Operator)
                    .await
                {
                    Ok(0) => (AuditResult::NotFound, "the user has no session".to_owned()),
                    Ok(n) => (AuditResult::Ok, format!("{n} session(s) ended")),
                    Err(e) => {
                        tracing::warn!(error = %e, "console: ending sessions failed");
                        (AuditResult::Failed, "the store failed".to_owned())
                    }
                }
            }
            Action::Plugin(user_action) => {
                let unique_id = match parts.shared.store.unique_id(user).await {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::warn!(error = %e, "console: reading a uniqueId failed");
                        return (AuditResult::Failed, "the store failed".to_owned());
                    }
                };
                let payload = serde_json::to_vec(&OperatorAction {
                    action: user_action,
                    provider: provider.id.clone(),
                    unique_id,
                    user_id: user.to_owned(),
                })
                .unwrap_or_default();
                let reports = parts
                    .plugins
                    .ask_operator_topic(OPERATOR_ACTION, &payload, PLUGIN_WAIT)
                    .await;
                status::action_outcome(&reports)
            }
        }
    }
}

fn static_file(content_type: &'static str, body: &'static str) -> Answer {
    Answer {
        status: StatusCode::OK,
        content_type,
        body: body.as_bytes().to_vec(),
        headers: Vec::new(),
    }
}

fn actor(user: &str) -> String {
    format!("operator:{user}")
}

fn session_cookie(token: &str) -> String {
    format!("{CONSOLE_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

fn removal_cookie() -> String {
    format!("{CONSOLE_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The notice an action's redirect carries.
fn notice_of(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "notice")
        .map(|(_, value)| value.into_owned())
}
