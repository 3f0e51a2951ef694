//! Company user directories, as single-sign-on lookups reach them (`reference/integrations.md`
//! §4.1 and §4.2), on one loopback port: Microsoft Graph's user list and OneLogin's API v2.
//!
//! Microsoft Graph (`GET /v1.0/users?$filter=…`): the bearer token must be an app-only access
//! token of the tenant's client-credentials grant — an RS256 JWT signed by a key of the
//! tenant's key set, `iss` the tenant's issuer, `aud` Graph, unexpired, carrying the
//! `User.Read.All` role or the `/.default` scope. The filter may be `mail eq '…'`,
//! `userPrincipalName eq '…'`, or both joined by `or`, literals quoted as OData does;
//! anything else is a 400 `Request_UnsupportedQuery`. The answer lists matching users' ids.
//!
//! OneLogin (`POST /auth/oauth2/v2/token`, then `GET /api/2/users?email=…`): the token request
//! carries the API credential by HTTP Basic (or OneLogin's `client_id:…, client_secret:…`
//! form) and a JSON `{"grant_type": "client_credentials"}`; the users request a token this
//! stand-in granted, unexpired. The answer is a JSON array of matching users.
//!
//! Every lookup is recorded with whether it was let in ([`Directories::lookups`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::http::{self, Body};
use crate::lock;

/// The audience of an access token for Microsoft Graph.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
/// How long a OneLogin API token lives.
const ONELOGIN_TOKEN_LIFE: Duration = Duration::from_secs(36_000);

/// One person in the company directory.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    pub mail: String,
    pub user_principal_name: String,
}

/// The tenant whose app-only tokens Graph accepts: its issuer and its JWK Set (as text).
#[derive(Debug, Clone)]
pub struct GraphTenant {
    pub issuer: String,
    pub jwks: String,
}

/// A OneLogin API credential.
#[derive(Debug, Clone)]
pub struct OneLoginCredential {
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Debug, Clone)]
pub struct DirectorySettings {
    pub users: Vec<DirectoryUser>,
    pub graph: Option<GraphTenant>,
    pub onelogin: Option<OneLoginCredential>,
}

/// A user lookup as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// `graph` or `onelogin`.
    pub api: &'static str,
    /// The query as sent.
    pub query: String,
    /// Whether its token was accepted; why not, when it was not.
    pub refused: Option<String>,
}

/// An RSA public key of the tenant.
#[derive(Debug)]
struct RsaKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    onelogin_tokens: HashMap<String, Instant>,
    lookups: Vec<Lookup>,
}

/// A running stand-in.
#[derive(Debug)]
pub struct Directories {
    settings: DirectorySettings,
    graph_keys: HashMap<String, RsaKey>,
    addr: SocketAddr,
    state: Mutex<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Directories {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Directories {
    /// Starts on `addr` (port 0 for a free one).
    pub async fn start(
        settings: DirectorySettings,
        addr: SocketAddr,
    ) -> std::io::Result<Arc<Self>> {
        let graph_keys = match &settings.graph {
            Some(tenant) => rsa_keys(&tenant.jwks)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            None => HashMap::new(),
        };
        let listener = http::bind(addr).await?;
        let directories = Arc::new(Self {
            settings,
            graph_keys,
            addr: listener.local_addr()?,
            state: Mutex::new(State::default()),
            task: Mutex::new(None),
        });
        let weak = Arc::downgrade(&directories);
        let task = http::serve(listener, None, move |request, _| {
            let directories = weak.upgrade();
            async move {
                Ok(match directories {
                    Some(directories) => directories.handle(request).await,
                    None => Response::new(Body::empty()),
                })
            }
        });
        *lock(&directories.task) = Some(task);
        Ok(directories)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn lookups(&self) -> Vec<Lookup> {
        lock(&self.state).lookups.clone()
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
                .unwrap_or("")
        };
        match (&parts.method, parts.uri.path()) {
            (&Method::GET, "/v1.0/users") if self.settings.graph.is_some() => {
                self.graph_users(header("authorization"), &query)
            }
            (&Method::POST, "/auth/oauth2/v2/token") if self.settings.onelogin.is_some() => {
                self.onelogin_token(header("authorization"), &body)
            }
            (&Method::GET, "/api/2/users") if self.settings.onelogin.is_some() => {
                self.onelogin_users(header("authorization"), &query)
            }
            _ => reply(404, &json!({ "error": "not found" })),
        }
    }

    fn record(&self, api: &'static str, query: String, refused: Option<String>) {
        lock(&self.state).lookups.push(Lookup {
            api,
            query,
            refused,
        });
    }

    fn graph_users(&self, authorization: &str, query: &BTreeMap<String, String>) -> Response<Body> {
        let filter = query.get("$filter").cloned().unwrap_or_default();
        if let Err(why) = self.graph_token(authorization) {
            self.record("graph", filter, Some(why.clone()));
            return reply(
                401,
                &json!({ "error": { "code": "InvalidAuthenticationToken", "message": why } }),
            );
        }
        self.record("graph", filter.clone(), None);
        let Some(wanted) = graph_filter(&filter) else {
            return reply(
                400,
                &json!({ "error": { "code": "Request_UnsupportedQuery", "message": "Unsupported query." } }),
            );
        };
        let value: Vec<Value> = self
            .settings
            .users
            .iter()
            .enumerate()
            .filter(|(_, user)| {
                wanted.iter().any(|(property, literal)| {
                    let held = match *property {
                        "mail" => &user.mail,
                        _ => &user.user_principal_name,
                    };
                    held.eq_ignore_ascii_case(literal)
                })
            })
            .map(|(i, _)| json!({ "id": format!("00000000-0000-0000-0000-{i:012}") }))
            .collect();
        reply(
            200,
            &json!({ "@odata.context": format!("{}/v1.0/$metadata#users(id)", self.url()), "value": value }),
        )
    }

    /// Checks an app-only Graph token; why it is refused.
    fn graph_token(&self, authorization: &str) -> Result<(), String> {
        let Some(tenant) = &self.settings.graph else {
            return Err("no tenant".to_owned());
        };
        let token = authorization
            .strip_prefix("Bearer ")
            .ok_or("no bearer token")?;
        let Some((signed, signature)) = token.rsplit_once('.') else {
            return Err("not a JWT".to_owned());
        };
        let Some((header, claims)) = signed.split_once('.').filter(|(_, c)| !c.contains('.'))
        else {
            return Err("not a JWT".to_owned());
        };
        let header = decode(header)?;
        if header["alg"] != "RS256" {
            return Err("not RS256".to_owned());
        }
        let key = header["kid"]
            .as_str()
            .and_then(|kid| self.graph_keys.get(kid))
            .ok_or("signed by a key the tenant does not publish")?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| "signature is not base64url")?;
        ring::signature::RsaPublicKeyComponents {
            n: &key.n,
            e: &key.e,
        }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &signature,
        )
        .map_err(|_| "invalid signature".to_owned())?;
        let claims = decode(claims)?;
        if claims["iss"] != tenant.issuer.as_str() {
            return Err("another issuer".to_owned());
        }
        if claims["aud"] != GRAPH_AUDIENCE {
            return Err("not for Graph".to_owned());
        }
        if claims["exp"]
            .as_u64()
            .is_none_or(|exp| exp <= now_seconds())
        {
            return Err("expired".to_owned());
        }
        let role = claims["roles"]
            .as_array()
            .is_some_and(|roles| roles.iter().any(|r| r == "User.Read.All"));
        let scope = claims["scope"].as_str().is_some_and(|s| {
            s.split(' ')
                .any(|s| s == "https://graph.microsoft.com/.default")
        });
        if !(role || scope) {
            return Err("without User.Read.All".to_owned());
        }
        Ok(())
    }

    fn onelogin_token(&self, authorization: &str, body: &[u8]) -> Response<Body> {
        let refused = || {
            reply(
                401,
                &json!({ "status": { "error": true, "code": 401, "type": "Unauthorized", "message": "Authentication Failure" } }),
            )
        };
        let Some(credential) = &self.settings.onelogin else {
            return refused();
        };
        let presented = authorization
            .strip_prefix("Basic ")
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pair| {
                pair.split_once(':')
                    .map(|(id, secret)| (id.to_owned(), secret.to_owned()))
            })
            .or_else(|| {
                let (id, secret) = authorization.split_once(',')?;
                Some((
                    id.trim().strip_prefix("client_id:")?.to_owned(),
                    secret.trim().strip_prefix("client_secret:")?.to_owned(),
                ))
            });
        if presented
            != Some((
                credential.client_id.clone(),
                credential.client_secret.clone(),
            ))
        {
            return refused();
        }
        let grant: Value = serde_json::from_slice(body).unwrap_or_default();
        if grant["grant_type"] != "client_credentials" {
            return reply(
                400,
                &json!({ "status": { "error": true, "code": 400, "type": "bad request", "message": "grant_type must be client_credentials" } }),
            );
        }
        let token = crate::xml::new_id().replace('-', "");
        lock(&self.state)
            .onelogin_tokens
            .insert(token.clone(), Instant::now() + ONELOGIN_TOKEN_LIFE);
        reply(
            200,
            &json!({
                "access_token": token,
                "token_type": "bearer",
                "expires_in": ONELOGIN_TOKEN_LIFE.as_secs(),
                "refresh_token": null,
            }),
        )
    }

    fn onelogin_users(
        &self,
        authorization: &str,
        query: &BTreeMap<String, String>,
    ) -> Response<Body> {
        let email = query.get("email").cloned().unwrap_or_default();
        let granted = authorization
            .strip_prefix("Bearer ")
            .and_then(|token| lock(&self.state).onelogin_tokens.get(token).copied())
            .is_some_and(|until| Instant::now() < until);
        if !granted {
            self.record("onelogin", email, Some("no token granted here".to_owned()));
            return reply(
                401,
                &json!({ "statusCode": 401, "name": "Unauthorized", "message": "Unauthorized" }),
            );
        }
        self.record("onelogin", email.clone(), None);
        let users: Vec<Value> = self
            .settings
            .users
            .iter()
            .enumerate()
            .filter(|(_, user)| !email.is_empty() && user.mail.eq_ignore_ascii_case(&email))
            .map(|(i, user)| json!({ "id": 1000 + i, "email": user.mail, "username": user.user_principal_name }))
            .collect();
        reply(200, &Value::Array(users))
    }
}

/// The `(property, literal)` pairs of a filter of the shapes Graph lookups use, or `None`.
fn graph_filter(filter: &str) -> Option<Vec<(&'static str, String)>> {
    let mut wanted = Vec::new();
    for clause in filter.split(" or ") {
        let (property, literal) = clause.trim().split_once(" eq ")?;
        let property = match property.trim() {
            "mail" => "mail",
            "userPrincipalName" => "userPrincipalName",
            _ => return None,
        };
        let inner = literal.trim().strip_prefix('\'')?.strip_suffix('\'')?;
        // A lone quote ends an OData literal; a doubled one stands for itself.
        if inner.replace("''", "").contains('\'') {
            return None;
        }
        wanted.push((property, inner.replace("''", "'")));
    }
    Some(wanted)
}

/// The RSA keys of a JWK Set, by `kid`.
fn rsa_keys(jwks: &str) -> Result<HashMap<String, RsaKey>, String> {
    let set: Value = serde_json::from_str(jwks).map_err(|e| format!("JWK Set: {e}"))?;
    let mut keys = HashMap::new();
    for key in set["keys"].as_array().ok_or("JWK Set without keys")? {
        if key["kty"] != "RSA" {
            continue;
        }
        let part = |name: &str| {
            key[name]
                .as_str()
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                .ok_or(format!("JWK without {name}"))
        };
        let kid = key["kid"].as_str().unwrap_or_default().to_owned();
        keys.insert(
            kid,
            RsaKey {
                n: part("n")?,
                e: part("e")?,
            },
        );
    }
    Ok(keys)
}

fn decode(part: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| "a JWT part is not base64url")?;
    serde_json::from_slice(&bytes).map_err(|_| "a JWT part is not JSON".to_owned())
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn reply(status: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::full(body.to_string()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::graph_filter;

    #[test]
    fn reads_the_filters_lookups_send_and_nothing_else() {
        assert_eq!(
            graph_filter("mail eq 'a@b.example' or userPrincipalName eq 'o''brien@b.example'"),
            Some(vec![
                ("mail", "a@b.example".to_owned()),
                ("userPrincipalName", "o'brien@b.example".to_owned())
            ])
        );
        for other in [
            "startswith(mail,'a')",
            "mail eq 'a' and mail eq 'b'",
            "mail eq 'a'b'",
            "displayName eq 'a'",
        ] {
            assert_eq!(graph_filter(other), None, "{other}");
        }
    }
}
