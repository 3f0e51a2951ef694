//! A Genesys Screen Recording Service stand-in: the Client Login API (`/api/v2/me`, `/ping`,
//! `/version`) as Genesys documents it, with CORS for one expected origin, opt-in CSRF
//! protection, cookie sessions, the 60-second keep-alive rule and injected faults.
//!
//! Model (see `reference/integrations.md` §3):
//! - `OPTIONS` on any endpoint answers 200 with CORS headers when `Origin` is the expected
//!   one, 403 without them otherwise, 400 when `Origin` is missing. Every other request needs
//!   the expected `Origin` too, and gets the CORS headers back.
//! - `GET /api/v2/me` logs an agent in from `Authorization: Basic`; `POST /api/v2/me` does the
//!   same with a configuration: a JSON array of `{"name", "value"}` pairs (`server`,
//!   `peer_server`, `place`, `devices`). SRS validates the agent through the RWS named by
//!   `server`: when that RWS is down (a fault) the login fails with 503.
//! - A login sets the session cookie `SRSSESSIONID`. With `X-Support-CSRFP: True` it also
//!   answers `X-CSRF-HEADER: X-CSRF-Token` and `X-CSRF-TOKEN: <token>`; from then on every
//!   POST on that session needs that token, or gets 403 "Missing or invalid Csrf token".
//! - `POST /api/v2/me` with the cookie alone and `{"operationName": "EndContactCenterSession"}`
//!   logs the agent out and invalidates the session (`{"statusCode": 0}`).
//! - `GET /ping` with the cookie (or Basic) keeps the session alive. A session not pinged for
//!   the keep-alive period is disconnected: its pings get 401, and the agent must log in again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::http::{self, Body};
use crate::lock;
use crate::xsp::basic_credentials;

/// The session cookie's name.
pub const COOKIE: &str = "SRSSESSIONID";

/// How an SRS stand-in starts.
#[derive(Debug, Clone)]
pub struct SrsSettings {
    /// The `Origin` SRS expects (the agent desktop's).
    pub origin: String,
    /// Agents and their passwords, as Configuration Server knows them.
    pub agents: HashMap<String, String>,
    /// A session not pinged for this long is disconnected (60 s in SRS).
    pub keep_alive: Duration,
    /// What `GET /version` answers.
    pub version: String,
}

/// A fault injected through [`Srs::set_fault`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrsFault {
    /// Answer every request with this status.
    pub status: Option<u16>,
    /// Wait this long before answering.
    pub delay_ms: u64,
    /// RWS addresses SRS cannot reach: a login configured with one as `server` fails (503).
    pub rws_down: Vec<String>,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SrsRequest {
    pub method: String,
    pub path: String,
    pub origin: Option<String>,
    /// The user of `Authorization: Basic`, if it carried one.
    pub basic_user: Option<String>,
    pub cookie: bool,
    pub csrf_token: bool,
    pub opt_in_csrf: bool,
    pub status: u16,
}

/// An agent's session, as tests inspect it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SrsSession {
    pub agent: String,
    /// The configuration pairs of a `POST` login, as sent.
    pub configuration: Option<Value>,
    pub csrf_protected: bool,
    /// Pings received on this session.
    pub pings: u32,
    /// Still connected: logged in, not ended, pinged in time.
    pub active: bool,
    pub ended: bool,
}

#[derive(Debug)]
struct Session {
    agent: String,
    configuration: Option<Value>,
    csrf: Option<String>,
    last_ping: Instant,
    pings: u32,
    ended: bool,
}

#[derive(Debug)]
struct State {
    sessions: HashMap<String, Session>,
    fault: SrsFault,
    requests: Vec<SrsRequest>,
}

/// A running SRS stand-in on a loopback port.
#[derive(Debug)]
pub struct Srs {
    settings: SrsSettings,
    addr: SocketAddr,
    state: Mutex<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Srs {
    /// Starts on `addr` (port 0 for a free one).
    pub async fn start(settings: SrsSettings, addr: SocketAddr) -> std::io::Result<Arc<Self>> {
        let listener = http::bind(addr).await?;
        let srs = Arc::new(Self {
            settings,
            addr: listener.local_addr()?,
            state: Mutex::new(State {
                sessions: HashMap::new(),
                fault: SrsFault::default(),
                requests: Vec::new(),
            }),
            task: Mutex::new(None),
        });
        srs.serve(listener);
        Ok(srs)
    }

    fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let weak = Arc::downgrade(self);
        let task = http::serve(listener, None, move |request, _| {
            let srs = weak.upgrade();
            async move {
                Ok(match srs {
                    Some(srs) => srs.handle(request).await,
                    None => Response::new(Body::empty()),
                })
            }
        });
        *lock(&self.task) = Some(task);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops answering: the listener closes and open connections are cut.
    pub fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    /// Answers again on the same address; sessions survive, as in a network outage.
    pub async fn restart(self: &Arc<Self>) -> std::io::Result<()> {
        if lock(&self.task).is_none() {
            let listener = http::bind(self.addr).await?;
            self.serve(listener);
        }
        Ok(())
    }

    pub fn set_fault(&self, fault: SrsFault) {
        lock(&self.state).fault = fault;
    }

    pub fn requests(&self) -> Vec<SrsRequest> {
        lock(&self.state).requests.clone()
    }

    /// Every session ever opened, oldest first by agent name.
    pub fn sessions(&self) -> Vec<SrsSession> {
        let state = lock(&self.state);
        let mut sessions: Vec<SrsSession> = state
            .sessions
            .values()
            .map(|s| SrsSession {
                agent: s.agent.clone(),
                configuration: s.configuration.clone(),
                csrf_protected: s.csrf.is_some(),
                pings: s.pings,
                active: !s.ended && s.last_ping.elapsed() <= self.settings.keep_alive,
                ended: s.ended,
            })
            .collect();
        sessions.sort_by(|a, b| a.agent.cmp(&b.agent));
        sessions
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let fault = lock(&self.state).fault.clone();
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let origin = header("origin");
        let basic = header("authorization").and_then(|h| basic_credentials(&h));
        let cookie = header("cookie").and_then(|h| session_cookie(&h));
        let csrf_token = header("x-csrf-token");
        let opt_in_csrf = header("x-support-csrfp").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let reply = match fault.status {
            Some(status) => Reply::json(status, &json!({ "statusCode": 1, "error": "fault" })),
            None => self.serve_request(&Call {
                method: &parts.method,
                path: parts.uri.path(),
                origin: origin.as_deref(),
                basic: basic.as_ref(),
                cookie: cookie.as_deref(),
                csrf_token: csrf_token.as_deref(),
                opt_in_csrf,
                body: &body,
                rws_down: &fault.rws_down,
            }),
        };
        lock(&self.state).requests.push(SrsRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            origin: origin.clone(),
            basic_user: basic.map(|(user, _)| user),
            cookie: cookie.is_some(),
            csrf_token: csrf_token.is_some(),
            opt_in_csrf,
            status: reply.status,
        });
        let cors = origin.as_deref().filter(|o| *o == self.settings.origin);
        reply.into_response(cors)
    }

    fn serve_request(&self, call: &Call<'_>) -> Reply {
        let Some(origin) = call.origin else {
            return Reply::json(
                400,
                &json!({ "statusCode": 1, "error": "Origin is required" }),
            );
        };
        if origin != self.settings.origin {
            return Reply::json(
                403,
                &json!({ "statusCode": 1, "error": "origin not allowed" }),
            );
        }
        match (call.method, call.path) {
            (&Method::OPTIONS, "/api/v2/me" | "/ping" | "/version") => Reply::empty(200),
            (&Method::GET, "/version") => {
                Reply::json(200, &json!({ "version": self.settings.version }))
            }
            (&Method::GET, "/api/v2/me") => self.login(call, None),
            (&Method::POST, "/api/v2/me") if call.basic.is_some() => {
                match configuration(call.body) {
                    Ok(pairs) => self.login(call, Some(pairs)),
                    Err(why) => Reply::json(400, &json!({ "statusCode": 1, "error": why })),
                }
            }
            (&Method::POST, "/api/v2/me") => self.operation(call),
            (&Method::GET, "/ping") => self.ping(call),
            _ => Reply::json(404, &json!({ "statusCode": 1, "error": "not found" })),
        }
    }

    fn login(&self, call: &Call<'_>, configuration: Option<Value>) -> Reply {
        let Some((agent, password)) = call.basic else {
            return Reply::json(401, &json!({ "statusCode": 1, "error": "login required" }));
        };
        if self.settings.agents.get(agent) != Some(password) {
            return Reply::json(
                401,
                &json!({ "statusCode": 1, "error": "invalid credentials" }),
            );
        }
        let server = configuration
            .as_ref()
            .and_then(|pairs| pair(pairs, "server"))
            .and_then(Value::as_str);
        if server.is_some_and(|s| call.rws_down.iter().any(|down| down == s)) {
            return Reply::json(503, &json!({ "statusCode": 1, "error": "RWS unreachable" }));
        }
        let token = format!("{:032x}", rand::random::<u128>());
        let csrf = call
            .opt_in_csrf
            .then(|| format!("{:032x}", rand::random::<u128>()));
        let mut reply = Reply::json(200, &json!({ "statusCode": 0 }))
            .header("set-cookie", format!("{COOKIE}={token}; Path=/; HttpOnly"));
        if let Some(csrf) = &csrf {
            reply = reply
                .header("x-csrf-header", "X-CSRF-Token".to_owned())
                .header("x-csrf-token", csrf.clone());
        }
        lock(&self.state).sessions.insert(
            token,
            Session {
                agent: agent.clone(),
                configuration,
                csrf,
                last_ping: Instant::now(),
                pings: 0,
                ended: false,
            },
        );
        reply
    }

    /// A POST on the session cookie: the only operation is `EndContactCenterSession`.
    fn operation(&self, call: &Call<'_>) -> Reply {
        let mut state = lock(&self.state);
        let Some(session) = call
            .cookie
            .and_then(|token| state.sessions.get_mut(token))
            .filter(|s| !s.ended)
        else {
            return Reply::json(401, &json!({ "statusCode": 1, "error": "login required" }));
        };
        if let Some(expected) = &session.csrf {
            if call.csrf_token != Some(expected.as_str()) {
                return Reply::json(
                    403,
                    &json!({ "statusCode": 1, "error": "Missing or invalid Csrf token" }),
                );
            }
        }
        let operation: Option<String> = serde_json::from_slice::<Value>(call.body)
            .ok()
            .and_then(|v| v.get("operationName")?.as_str().map(str::to_owned));
        match operation.as_deref() {
            Some("EndContactCenterSession") => {
                session.ended = true;
                Reply::json(200, &json!({ "statusCode": 0 }))
            }
            _ => Reply::json(
                400,
                &json!({ "statusCode": 1, "error": "unknown operation" }),
            ),
        }
    }

    fn ping(&self, call: &Call<'_>) -> Reply {
        let keep_alive = self.settings.keep_alive;
        let mut state = lock(&self.state);
        let session = match (call.cookie, call.basic) {
            (Some(token), _) => state.sessions.get_mut(token),
            (None, Some((agent, password)))
                if self.settings.agents.get(agent) == Some(password) =>
            {
                state
                    .sessions
                    .values_mut()
                    .find(|s| &s.agent == agent && !s.ended)
            }
            _ => None,
        };
        match session {
            Some(s) if !s.ended && s.last_ping.elapsed() <= keep_alive => {
                s.last_ping = Instant::now();
                s.pings += 1;
                Reply::json(200, &json!({ "statusCode": 0 }))
            }
            _ => Reply::json(401, &json!({ "statusCode": 1, "error": "login required" })),
        }
    }
}

struct Call<'a> {
    method: &'a Method,
    path: &'a str,
    origin: Option<&'a str>,
    basic: Option<&'a (String, String)>,
    cookie: Option<&'a str>,
    csrf_token: Option<&'a str>,
    opt_in_csrf: bool,
    body: &'a Bytes,
    rws_down: &'a [String],
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: value.to_string().into_bytes(),
        }
    }

    fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// With `cors_origin`, the CORS headers SRS sends to its expected origin.
    fn into_response(self, cors_origin: Option<&str>) -> Response<Body> {
        let mut builder = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        if let Some(origin) = cors_origin {
            builder = builder
                .header("access-control-allow-origin", origin)
                .header("access-control-allow-credentials", "true")
                .header("access-control-allow-methods", "GET, POST, OPTIONS")
                .header(
                    "access-control-allow-headers",
                    "Authorization, Content-Type, X-Support-CSRFP, X-CSRF-Token",
                )
                .header(
                    "access-control-expose-headers",
                    "X-CSRF-HEADER, X-CSRF-TOKEN",
                )
                .header("vary", "Origin");
        }
        builder
            .body(Body::full(self.body))
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }
}

fn session_cookie(header: &str) -> Option<String> {
    header.split(';').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        (name == COOKIE).then(|| value.to_owned())
    })
}

fn pair<'a>(pairs: &'a Value, name: &str) -> Option<&'a Value> {
    pairs
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")
}

/// Checks a login configuration as SRS documents it: an array of name/value pairs, `server` a
/// URL, `peer_server` a URL, `place` a string, `devices` a list of `{dn, switch}`.
fn configuration(body: &[u8]) -> Result<Value, String> {
    let pairs: Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed configuration: {e}"))?;
    let Some(list) = pairs.as_array() else {
        return Err("the configuration is not an array of name/value pairs".to_owned());
    };
    for entry in list {
        let name = entry.get("name").and_then(Value::as_str).unwrap_or("");
        let value = entry.get("value").unwrap_or(&Value::Null);
        let valid = match name {
            "server" | "peer_server" => value
                .as_str()
                .is_some_and(|v| v.starts_with("http://") || v.starts_with("https://")),
            "place" => value.as_str().is_some_and(|v| !v.is_empty()),
            "devices" => value.as_array().is_some_and(|devices| {
                devices.iter().all(|d| {
                    d.get("dn")
                        .and_then(Value::as_str)
                        .is_some_and(|v| !v.is_empty())
                        && d.get("switch")
                            .and_then(Value::as_str)
                            .is_some_and(|v| !v.is_empty())
                })
            }),
            _ => return Err(format!("unknown configuration name {name:?}")),
        };
        if !valid {
            return Err(format!("invalid value for {name:?}"));
        }
    }
    if pair(&pairs, "server").is_none() {
        return Err("the configuration has no server".to_owned());
    }
    Ok(pairs)
}
