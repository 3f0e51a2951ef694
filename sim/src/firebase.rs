//! A Firebase Realtime Database REST stand-in and a Google OAuth2 token endpoint, as
//! `reference/integrations.md` §1 describes them, on one loopback port.
//!
//! Database (`/<path>.json`):
//! - `GET` answers the value (`null` when absent); with `X-Firebase-ETag: true` also its
//!   `ETag`. `PUT` replaces, `PATCH` updates the named children, and a `PATCH` whose keys are
//!   slash paths updates each location, all or nothing (overlapping paths are a 400), `POST`
//!   pushes a child with a generated key, `DELETE` removes. Writes answer the data they wrote,
//!   or `204` with `print=silent`. `if-match` on a write that no longer matches is a `412` with
//!   the current `ETag` and value. Keys with `. $ # [ ]` or control characters, or a body that
//!   is not JSON, are a 400. Nulls delete, and objects left empty disappear, as in Firebase.
//! - Every request needs a credential: `auth=<database secret>`, or an access token this stand-in
//!   granted (`access_token=` or `Authorization: Bearer`) that has not expired; otherwise
//!   `401 {"error": "Permission denied"}`.
//!
//! Token endpoint (`POST /token`, form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//! and `assertion`): the assertion must be an RS256 JWT signed by the service account's key,
//! with `iss` = its `client_email`, `aud` = this endpoint's URL, `scope` holding the database
//! scopes, `iat` not in the future and `exp` after now and at most an hour after `iat`.
//! Anything else is a 400 `invalid_grant` saying which check failed.
//!
//! `GET /_standin/writes` lists the writes applied, for benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use crate::http::{self, Body};
use crate::lock;

/// Scopes an access token for the database must be asked for.
pub const SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/firebase.database",
];

/// The stand-in's own control route: every write applied so far (JSON list of [`Write`]), for
/// benchmarks in another process. Not part of the Firebase API.
pub const WRITES_PATH: &str = "/_standin/writes";

/// How a stand-in starts.
#[derive(Debug, Clone)]
pub struct FirebaseSettings {
    /// The service account whose assertions the token endpoint accepts: its JSON key file's
    /// text (the public key is derived from it).
    pub service_account: String,
    /// A legacy database secret accepted as `auth=`, if any.
    pub secret: Option<String>,
    /// Lifetime of granted access tokens.
    pub token_lifetime: Duration,
}

/// A fault injected through [`Firebase::set_fault`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirebaseFault {
    /// Answer every database request with this status.
    pub status: Option<u16>,
}

/// A database write as the stand-in applied it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Write {
    pub method: String,
    pub path: String,
    /// When it was applied, ms since the epoch.
    pub at_ms: u64,
    /// The locations it set (for a multi-path PATCH, each key), with their values.
    pub locations: Vec<(String, Value)>,
}

/// A token request and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRequest {
    pub granted: bool,
    /// Why it was refused.
    pub error: Option<String>,
}

#[derive(Debug)]
struct State {
    data: Value,
    tokens: HashMap<String, Instant>,
    writes: Vec<Write>,
    token_requests: Vec<TokenRequest>,
    refused: u64,
    fault: FirebaseFault,
}

/// The service account's identity and public key.
#[derive(Debug)]
struct Account {
    client_email: String,
    public_key: Vec<u8>,
}

/// A running stand-in.
#[derive(Debug)]
pub struct Firebase {
    settings: FirebaseSettings,
    account: Account,
    addr: SocketAddr,
    state: Mutex<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Firebase {
    /// Starts on `addr` (port 0 for a free one).
    pub async fn start(settings: FirebaseSettings, addr: SocketAddr) -> std::io::Result<Arc<Self>> {
        let account = account(&settings.service_account)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = http::bind(addr).await?;
        let firebase = Arc::new(Self {
            settings,
            account,
            addr: listener.local_addr()?,
            state: Mutex::new(State {
                data: Value::Null,
                tokens: HashMap::new(),
                writes: Vec::new(),
                token_requests: Vec::new(),
                refused: 0,
                fault: FirebaseFault::default(),
            }),
            task: Mutex::new(None),
        });
        firebase.serve(listener);
        Ok(firebase)
    }

    fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let weak = Arc::downgrade(self);
        let task = http::serve(listener, None, move |request, _| {
            let firebase = weak.upgrade();
            async move {
                Ok(match firebase {
                    Some(firebase) => firebase.handle(request).await,
                    None => Response::new(Body::empty()),
                })
            }
        });
        *lock(&self.task) = Some(task);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Stops answering: the listener closes and open connections are cut.
    pub fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    /// Answers again on the same address with the same data, as after a network outage.
    pub async fn restart(self: &Arc<Self>) -> std::io::Result<()> {
        if lock(&self.task).is_none() {
            let listener = http::bind(self.addr).await?;
            self.serve(listener);
        }
        Ok(())
    }

    pub fn set_fault(&self, fault: FirebaseFault) {
        lock(&self.state).fault = fault;
    }

    /// The value at `path` (slash-separated, no `.json`).
    pub fn get(&self, path: &str) -> Value {
        value_at(&lock(&self.state).data, &segments(path)).clone()
    }

    pub fn writes(&self) -> Vec<Write> {
        lock(&self.state).writes.clone()
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.state).token_requests.clone()
    }

    /// Database requests refused for want of a valid credential.
    pub fn refused(&self) -> u64 {
        lock(&self.state).refused
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if parts.uri.path() == WRITES_PATH {
            let writes = serde_json::to_value(&lock(&self.state).writes).unwrap_or_default();
            return reply(200, &writes).build();
        }
        if parts.uri.path() == "/token" {
            return if parts.method == Method::POST {
                self.token(&body)
            } else {
                error(405, "POST only")
            };
        }
        if let Some(status) = lock(&self.state).fault.status {
            return error(status, "fault injected");
        }
        let Some(path) = parts.uri.path().strip_suffix(".json") else {
            return error(404, "append .json to the path");
        };
        let bearer =
            header("authorization").and_then(|h| h.strip_prefix("Bearer ").map(str::to_owned));
        if !self.authorized(
            query.get("auth"),
            query.get("access_token").or(bearer.as_ref()),
        ) {
            lock(&self.state).refused += 1;
            return error(401, "Permission denied");
        }
        let path = segments(path);
        if let Some(bad) = path.iter().find(|s| !valid_key(s)) {
            return error(
                400,
                &format!("Invalid path: key {bad:?} has a forbidden character"),
            );
        }
        let silent = query.get("print").is_some_and(|p| p == "silent");
        let mut state = lock(&self.state);
        if let Some(expected) = header("if-match") {
            let current = etag(value_at(&state.data, &path));
            if current != expected {
                let value = value_at(&state.data, &path).clone();
                return reply(412, &value).header("etag", &current).build();
            }
        }
        let written = match parts.method {
            Method::GET => {
                let value = value_at(&state.data, &path).clone();
                let mut response = reply(200, &value);
                if header("x-firebase-etag").is_some_and(|v| v == "true") {
                    response = response.header("etag", &etag(&value));
                }
                return response.build();
            }
            Method::PUT => match parse(&body) {
                Some(value) => vec![(String::new(), value)],
                None => return bad_json(),
            },
            Method::PATCH => match parse(&body) {
                Some(Value::Object(children)) => match locations(children) {
                    Ok(locations) => locations,
                    Err(message) => return error(400, &message),
                },
                Some(_) => return error(400, "PATCH needs an object"),
                None => return bad_json(),
            },
            Method::POST => match parse(&body) {
                Some(value) => {
                    let name = format!("-{:x}", rand::random::<u64>());
                    vec![(name, value)]
                }
                None => return bad_json(),
            },
            Method::DELETE => vec![(String::new(), Value::Null)],
            _ => return error(405, "method not supported"),
        };
        if let Some(bad) = written.iter().find_map(|(_, v)| invalid_key_in(v)) {
            return error(
                400,
                &format!("Invalid data: key {bad:?} has a forbidden character"),
            );
        }
        for (location, value) in &written {
            let mut at = path.clone();
            at.extend(segments(location));
            set(&mut state.data, &at, value.clone());
        }
        let at_ms = now_ms();
        state.writes.push(Write {
            method: parts.method.to_string(),
            path: path.join("/"),
            at_ms,
            locations: written.clone(),
        });
        drop(state);
        if silent {
            return Reply::new(204, Bytes::new()).build();
        }
        match parts.method {
            Method::POST => reply(200, &json!({"name": written[0].0})).build(),
            Method::DELETE => reply(200, &Value::Null).build(),
            _ => Reply::new(200, body)
                .header("content-type", "application/json")
                .build(),
        }
    }

    fn authorized(&self, auth: Option<&String>, token: Option<&String>) -> bool {
        if let (Some(auth), Some(secret)) = (auth, &self.settings.secret) {
            if auth == secret {
                return true;
            }
        }
        let Some(token) = token else {
            return false;
        };
        let mut state = lock(&self.state);
        let now = Instant::now();
        state.tokens.retain(|_, expires| *expires > now);
        state.tokens.contains_key(token)
    }

    fn token(&self, body: &[u8]) -> Response<Body> {
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let checked = match form.get("grant_type").map(String::as_str) {
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => form
                .get("assertion")
                .ok_or_else(|| "assertion is missing".to_owned())
                .and_then(|a| self.check_assertion(a)),
            _ => Err("grant_type must be urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned()),
        };
        let mut state = lock(&self.state);
        state.token_requests.push(TokenRequest {
            granted: checked.is_ok(),
            error: checked.clone().err(),
        });
        match checked {
            Ok(()) => {
                let token = format!(
                    "ya29.standin-{:016x}{:016x}",
                    rand::random::<u64>(),
                    rand::random::<u64>()
                );
                state
                    .tokens
                    .insert(token.clone(), Instant::now() + self.settings.token_lifetime);
                reply(
                    200,
                    &json!({
                        "access_token": token,
                        "expires_in": self.settings.token_lifetime.as_secs(),
                        "token_type": "Bearer",
                    }),
                )
                .build()
            }
            Err(why) => reply(
                400,
                &json!({"error": "invalid_grant", "error_description": why}),
            )
            .build(),
        }
    }

    /// Checks a JWT-bearer assertion: signature, then every claim.
    fn check_assertion(&self, assertion: &str) -> Result<(), String> {
        let mut parts = assertion.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the assertion is not a JWT".to_owned());
        };
        let decode = |part: &str| -> Result<Value, String> {
            let bytes = URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| "a JWT part is not base64url".to_owned())?;
            serde_json::from_slice(&bytes).map_err(|_| "a JWT part is not JSON".to_owned())
        };
        let header = decode(header)?;
        if header["alg"] != "RS256" {
            return Err("alg must be RS256".to_owned());
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| "the signature is not base64url".to_owned())?;
        let signed = assertion.rsplit_once('.').map_or("", |(signed, _)| signed);
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &self.account.public_key,
        )
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "invalid signature".to_owned())?;
        let claims = decode(claims)?;
        if claims["iss"] != self.account.client_email.as_str() {
            return Err("iss is not the service account".to_owned());
        }
        if claims["aud"] != self.token_url().as_str() {
            return Err("aud is not this token endpoint".to_owned());
        }
        let scopes: Vec<&str> = claims["scope"].as_str().unwrap_or("").split(' ').collect();
        if !SCOPES.iter().all(|s| scopes.contains(s)) {
            return Err("scope lacks the database scopes".to_owned());
        }
        let now = now_ms() / 1000;
        let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
            return Err("iat and exp must be numbers".to_owned());
        };
        if iat > now + 60 {
            return Err("iat is in the future".to_owned());
        }
        if exp <= now {
            return Err("the assertion expired".to_owned());
        }
        if exp.saturating_sub(iat) > 3600 {
            return Err("exp is more than an hour after iat".to_owned());
        }
        Ok(())
    }
}

/// The identity and public key of a service account's JSON key file.
fn account(text: &str) -> Result<Account, String> {
    let file: Value = serde_json::from_str(text).map_err(|e| format!("service account: {e}"))?;
    let pem = file["private_key"]
        .as_str()
        .ok_or("service account: no private_key")?;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .split_whitespace()
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|_| "service account: private_key is not PEM")?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("service account: private_key: {e}"))?;
    use ring::signature::KeyPair as _;
    Ok(Account {
        client_email: file["client_email"]
            .as_str()
            .ok_or("service account: no client_email")?
            .to_owned(),
        public_key: key.public_key().as_ref().to_vec(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 768
        && !key
            .chars()
            .any(|c| matches!(c, '.' | '$' | '#' | '[' | ']' | '/') || c.is_control())
}

/// The first key anywhere in `value` that Firebase would refuse.
fn invalid_key_in(value: &Value) -> Option<String> {
    let Value::Object(map) = value else {
        return None;
    };
    map.iter().find_map(|(k, v)| {
        if valid_key(k) {
            invalid_key_in(v)
        } else {
            Some(k.clone())
        }
    })
}

/// A multi-path PATCH's locations; overlapping ones are refused, as Firebase does. Sorted by
/// their segments, a location's descendants follow it directly, so neighbours tell.
fn locations(children: Map<String, Value>) -> Result<Vec<(String, Value)>, String> {
    let mut keyed: Vec<(Vec<String>, String, Value)> = children
        .into_iter()
        .map(|(location, value)| (segments(&location), location, value))
        .collect();
    if let Some(bad) = keyed
        .iter()
        .flat_map(|(parts, _, _)| parts)
        .find(|s| !valid_key(s))
    {
        return Err(format!(
            "Invalid path: key {bad:?} has a forbidden character"
        ));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    for pair in keyed.windows(2) {
        if pair[1].0.starts_with(&pair[0].0) {
            return Err(format!(
                "Path {} is an ancestor of {}",
                pair[0].1, pair[1].1
            ));
        }
    }
    Ok(keyed
        .into_iter()
        .map(|(_, location, value)| (location, value))
        .collect())
}

fn value_at<'a>(data: &'a Value, path: &[String]) -> &'a Value {
    path.iter()
        .try_fold(data, |value, key| value.get(key))
        .unwrap_or(&Value::Null)
}

/// Sets `value` at `path`; nulls and objects left empty on the way disappear, as in Firebase.
fn set(node: &mut Value, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *node = prune(value);
        return;
    };
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        let child = map.entry(first.clone()).or_insert(Value::Null);
        set(child, rest, value);
        if child.is_null() {
            map.remove(first);
        }
    }
    if node.as_object().is_some_and(Map::is_empty) {
        *node = Value::Null;
    }
}

fn prune(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let map: Map<String, Value> = map
                .into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| !v.is_null())
                .collect();
            if map.is_empty() {
                Value::Null
            } else {
                Value::Object(map)
            }
        }
        other => other,
    }
}

/// An opaque tag of a value: a hash of its JSON text.
fn etag(value: &Value) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, value.to_string().as_bytes());
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..18])
}

fn parse(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

fn bad_json() -> Response<Body> {
    error(
        400,
        "Invalid data; couldn't parse JSON object, array, or value.",
    )
}

fn error(status: u16, message: &str) -> Response<Body> {
    reply(status, &json!({ "error": message })).build()
}

fn reply(status: u16, value: &Value) -> Reply {
    Reply::new(status, Bytes::from(value.to_string())).header("content-type", "application/json")
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Reply {
    fn new(status: u16, body: Bytes) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn build(self) -> Response<Body> {
        let mut response = Response::new(Body::full(self.body));
        *response.status_mut() = hyper::StatusCode::from_u16(self.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                hyper::header::HeaderValue::from_str(&value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn path(p: &str) -> Vec<String> {
        segments(p)
    }

    #[test]
    fn nulls_delete_and_empty_objects_vanish() {
        let mut data = Value::Null;
        set(&mut data, &path("users/u1/dnd"), json!({"active": true}));
        set(
            &mut data,
            &path("users/u1/calls/c1"),
            json!({"state": "Active"}),
        );
        assert_eq!(data["users"]["u1"]["dnd"]["active"], true);
        set(&mut data, &path("users/u1/calls/c1"), Value::Null);
        assert_eq!(data["users"]["u1"].get("calls"), None);
        set(&mut data, &path("users/u1"), Value::Null);
        assert_eq!(data, Value::Null);
    }

    #[test]
    fn overlapping_multi_path_locations_are_refused() {
        let mut map = Map::new();
        map.insert("users/u1".to_owned(), json!({}));
        map.insert("users/u1/dnd".to_owned(), json!(true));
        assert!(locations(map).unwrap_err().contains("ancestor"));
        let mut map = Map::new();
        map.insert("users/u1/a.b".to_owned(), json!(1));
        assert!(locations(map).is_err());
        let mut map = Map::new();
        for location in ["a", "a-x", "a/b", "b/c", "b/cd"] {
            map.insert(location.to_owned(), json!(1));
        }
        assert_eq!(locations(map).unwrap_err(), "Path a is an ancestor of a/b");
        let mut map = Map::new();
        for location in ["a-x", "a/b", "b/c", "b/cd"] {
            map.insert(location.to_owned(), json!(1));
        }
        assert_eq!(locations(map).unwrap().len(), 4);
        assert_eq!(
            invalid_key_in(&json!({"a": {"b$": 1}})),
            Some("b$".to_owned())
        );
    }
}
