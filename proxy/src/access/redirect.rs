//! Redirect logins (single sign-on): `idp/<method>` for a method whose plugin logs in at an
//! external identity provider, the identity provider's way back (`idp/<method>/callback`), and
//! `session/login`, where the dialer collects what a password login would have answered.
//!
//! The flow's secrets (`state`, `nonce`, the PKCE verifier) are made here, kept sealed in the
//! store for at most [`FLOW_LIFETIME`] under a hash of `state`, and bound to the browser by the
//! flow cookie, which only the callback's path receives: a callback is served only to the
//! browser that started its flow (no login CSRF), and only once. The session cookie is set on
//! the callback's answer, a redirect to the provider's `return_url` with nothing in its URL;
//! the tokens the dialer needs (CSRF token, plugin reports such as a Firebase custom token)
//! wait sealed in the store until the dialer posts to `session/login`, for
//! [`RESULT_LIFETIME`], so no URL that a log, a history or a `Referer` keeps ever holds one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use xsigate_plugin_sdk::{Authentication, FlowStage, Login, MetadataRequest, RedirectFlow};

use super::api::{AccessReply, AccessRequest, LoginApi, internal};
use super::limit::client_key;
use crate::plugin::AuthenticateError;
use crate::state::token::{new_token, pkce_challenge, token_hash, well_formed};
use crate::text::hex;
use crate::upstream::Provider;
use crate::wire::error::ErrorCode;
use crate::wire::headers::{FLOW_COOKIE, SSO_ERROR};

/// How long a user has at the identity provider.
pub(super) const FLOW_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long a redirect login's answer waits for the dialer to collect it.
const RESULT_LIFETIME: Duration = Duration::from_secs(2 * 60);
/// Store namespaces: flows by `state`, answers by session.
const FLOWS: &str = "xsigate/sso-flows";
const RESULTS: &str = "xsigate/sso-results";
/// The most fields a callback may carry (OpenID Connect sends a handful, SAML two).
const CALLBACK_FIELDS: usize = 16;

/// A flow as the store keeps it (sealed).
#[derive(Serialize, Deserialize)]
struct StoredFlow {
    provider: String,
    method: String,
    /// What the user typed at the start.
    user: String,
    nonce: String,
    code_verifier: String,
    redirect_uri: String,
    /// The hash of the flow cookie's value.
    browser: Vec<u8>,
}

/// The callback path of `method`: where the identity provider sends the browser back, and the
/// only path the flow cookie is sent to.
pub fn callback_path(method: &str) -> String {
    format!("/api/access/services/idp/{method}/callback")
}

/// The callback of `method` on the provider's public URL.
fn callback_url(provider: &Provider, method: &str) -> Result<String, ErrorCode> {
    let sso = provider.sso.as_ref().ok_or(ErrorCode::Internal)?;
    Ok(sso
        .public_url
        .join(&callback_path(method))
        .map_err(internal)?
        .to_string())
}

/// The store key of the flow a `state` names.
fn flow_key(state: &str) -> String {
    hex(&token_hash(state))
}

impl LoginApi {
    /// Whether `method` is a redirect login at any provider.
    pub(super) fn redirects_anywhere(&self, method: &str) -> bool {
        self.providers
            .all
            .iter()
            .any(|p| self.plugins.chain(p).redirects(method))
    }

    /// Starts a redirect login: asks the plugin for the identity provider's URL, keeps the
    /// flow, and answers `{"redirect": <url>}` with the flow cookie. No credential is checked
    /// here, so nothing is counted against the limits: the identity provider guards its own
    /// form, and a failed callback counts against the client's address.
    pub(super) async fn start_redirect(
        &self,
        method: &str,
        user: String,
        params: Map<String, Value>,
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let (candidates, matched) = self.candidates(&user);
        let Some(provider) = candidates
            .into_iter()
            .find(|p| self.plugins.chain(p).redirects(method))
        else {
            // An unclaimed domain gets the answer of a refused login, as everywhere.
            self.count("-", method, "rejected");
            return Ok(AccessReply::error(
                ErrorCode::InvalidCredentials,
                &request.request_id,
            ));
        };
        let redirect_uri = callback_url(&provider, method)?;
        let (state, nonce, code_verifier) = (new_token(), new_token(), new_token());
        let login = Login {
            provider: provider.id.clone(),
            method: method.to_owned(),
            user: user.clone(),
            password: None,
            params,
            flow: Some(RedirectFlow {
                stage: FlowStage::Start,
                state: state.clone(),
                nonce: nonce.clone(),
                code_challenge: pkce_challenge(&code_verifier),
                code_verifier: None,
                redirect_uri: redirect_uri.clone(),
            }),
        };
        let location = match self
            .plugins
            .chain(&provider)
            .authenticate(&login, matched)
            .await
        {
            Ok(Authentication::Redirect { location }) => location,
            Ok(Authentication::Rejected { reason }) => {
                tracing::info!(provider = %provider.id, method, reason, "single sign-on refused");
                self.count(&provider.id, method, "rejected");
                return Ok(AccessReply::error(
                    ErrorCode::InvalidCredentials,
                    &request.request_id,
                ));
            }
            // A query no provider claims reaches only reverse lookups; this method is none.
            Err(AuthenticateError::UnknownMethod) => {
                self.count("-", method, "rejected");
                return Ok(AccessReply::error(
                    ErrorCode::InvalidCredentials,
                    &request.request_id,
                ));
            }
            Ok(_) => {
                tracing::error!(
                    provider = %provider.id,
                    method,
                    "the plugin answered the start of a single sign-on with no redirect"
                );
                self.count(&provider.id, method, "failed");
                return Err(ErrorCode::PluginFailed);
            }
            Err(AuthenticateError::Failed(failure)) => {
                self.count(&provider.id, method, "failed");
                return Err(failure.error_code());
            }
        };
        if !url::Url::parse(&location).is_ok_and(|url| matches!(url.scheme(), "https" | "http")) {
            tracing::error!(provider = %provider.id, method, "the plugin's redirect is no URL");
            self.count(&provider.id, method, "failed");
            return Err(ErrorCode::PluginFailed);
        }
        let browser = new_token();
        let flow = StoredFlow {
            provider: provider.id.clone(),
            method: method.to_owned(),
            user,
            nonce,
            code_verifier,
            redirect_uri,
            browser: token_hash(&browser),
        };
        self.keep_sealed(FLOWS, &flow_key(&state), &flow, FLOW_LIFETIME)
            .await?;
        self.count(&provider.id, method, "redirected");
        Ok(AccessReply::ok(&json!({ "redirect": location }))
            .header("set-cookie", flow_cookie(method, &browser, request.tls))
            .about(&provider.id))
    }

    /// A redirect login's document for identity-provider administrators, by `?provider=<id>`.
    /// Public by nature (a SAML service provider's metadata holds only public keys and URLs),
    /// and the same for anyone who asks: 404 for a provider or method that has none.
    pub(super) async fn sign_in_metadata(
        &self,
        method: &str,
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let query = request.query.as_deref().unwrap_or("");
        let named = url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "provider")
            .map(|(_, id)| id.into_owned());
        let provider = named
            .and_then(|id| self.providers.get(&id).cloned())
            .ok_or(ErrorCode::NotFound)?;
        let chain = self.plugins.chain(&provider);
        if !chain.redirects(method) {
            return Err(ErrorCode::NotFound);
        }
        let asked = MetadataRequest {
            provider: provider.id.clone(),
            method: method.to_owned(),
            callback_url: callback_url(&provider, method)?,
        };
        let document = chain
            .sign_in_metadata(&asked)
            .await
            .map_err(|failure| failure.error_code())?
            .ok_or(ErrorCode::NotFound)?;
        Ok(AccessReply {
            status: 200,
            body: Bytes::from(document.body),
            headers: vec![
                ("content-type", document.content_type),
                ("cache-control", "public, max-age=300".to_owned()),
            ],
            error: None,
            provider: None,
        })
    }

    /// The identity provider sent the browser back. Served once, to the browser that started
    /// the flow; the answer is always a redirect to the provider's `return_url`, with the
    /// session cookie or with `?sso_error=<code>`, except for a callback that names no live
    /// flow, which has no provider to go back to.
    pub(super) async fn callback(
        &self,
        method: &str,
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let params = callback_params(request)?;
        let state = ["state", "RelayState"]
            .into_iter()
            .find_map(|name| params.get(name).and_then(Value::as_str))
            .filter(|state| well_formed(state))
            .ok_or(ErrorCode::LoginFlowUnknown)?
            .to_owned();
        let key = flow_key(&state);
        let sealed = self
            .shared
            .store
            .kv_get(FLOWS, &key)
            .await
            .map_err(internal)?
            .ok_or(ErrorCode::LoginFlowUnknown)?;
        let flow: StoredFlow = self
            .flow_seal
            .open(key.as_bytes(), &sealed)
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .filter(|flow: &StoredFlow| flow.method == method)
            .ok_or(ErrorCode::LoginFlowUnknown)?;
        let provider = self
            .providers
            .get(&flow.provider)
            .cloned()
            .ok_or(ErrorCode::LoginFlowUnknown)?;
        let back = ReturnTo::of(&provider)?;
        let client = request.client.map(client_key);
        if let Some(client) = &client {
            if self
                .limiter
                .retry_after(&[client])
                .await
                .map_err(internal)?
                .is_some()
            {
                self.count(&provider.id, method, "locked");
                return Ok(back.failed(ErrorCode::TooManyAttempts, method, request.tls));
            }
        }
        // Another browser's callback leaves the flow alone: its own browser may still finish.
        let presented = request.flow_cookie.as_deref().filter(|c| well_formed(c));
        if presented.is_none_or(|cookie| token_hash(cookie) != flow.browser) {
            tracing::info!(provider = %provider.id, method, "single sign-on callback from another browser");
            self.count(&provider.id, method, "rejected");
            return Ok(back.failed(ErrorCode::LoginFlowForeign, method, request.tls));
        }
        // Used once: of two callbacks racing with one state, one deletes the flow.
        if !self
            .shared
            .store
            .kv_delete(FLOWS, &key)
            .await
            .map_err(internal)?
        {
            return Ok(back.failed(ErrorCode::LoginFlowUnknown, method, request.tls));
        }
        let login = Login {
            provider: provider.id.clone(),
            method: method.to_owned(),
            user: flow.user.clone(),
            password: None,
            params,
            flow: Some(RedirectFlow {
                stage: FlowStage::Callback,
                state,
                nonce: flow.nonce,
                code_challenge: pkce_challenge(&flow.code_verifier),
                code_verifier: Some(flow.code_verifier),
                redirect_uri: flow.redirect_uri,
            }),
        };
        let matched = self.candidates(&flow.user).1;
        let outcome = self
            .plugins
            .chain(&provider)
            .authenticate(&login, matched)
            .await;
        let (user_id, grant) = match outcome {
            Ok(Authentication::Authenticated { user_id, grant }) => (user_id, grant),
            Ok(Authentication::Rejected { reason }) => {
                tracing::info!(provider = %provider.id, method, reason, "single sign-on refused");
                if let Some(client) = &client {
                    self.limiter.failed(&[client]).await.map_err(internal)?;
                }
                self.count(&provider.id, method, "rejected");
                return Ok(back.failed(ErrorCode::InvalidCredentials, method, request.tls));
            }
            Ok(_) | Err(AuthenticateError::UnknownMethod) => {
                tracing::error!(
                    provider = %provider.id,
                    method,
                    "the plugin answered a single sign-on's callback with neither a user nor a refusal"
                );
                self.count(&provider.id, method, "failed");
                return Ok(back.failed(ErrorCode::PluginFailed, method, request.tls));
            }
            Err(AuthenticateError::Failed(failure)) => {
                self.count(&provider.id, method, "failed");
                return Ok(back.failed(failure.error_code(), method, request.tls));
            }
        };
        let opened = self
            .open_session(&provider, method, user_id, grant, None)
            .await?;
        let key = hex(&token_hash(&opened.token));
        self.keep_sealed(RESULTS, &key, &opened.answer, RESULT_LIFETIME)
            .await?;
        Ok(back.redirect(&back.url, method, request.tls).header(
            "set-cookie",
            self.sessions.cookie(&opened.token, request.tls),
        ))
    }

    /// Keeps `value` sealed in the store under `key`, bound to it, for `life`.
    async fn keep_sealed(
        &self,
        namespace: &str,
        key: &str,
        value: &impl Serialize,
        life: Duration,
    ) -> Result<(), ErrorCode> {
        let plain = serde_json::to_vec(value).map_err(internal)?;
        let sealed = self
            .flow_seal
            .seal(key.as_bytes(), &plain)
            .map_err(internal)?;
        self.shared
            .store
            .kv_put(namespace, key, &sealed, Some(life))
            .await
            .map_err(internal)
    }

    /// `session/login`: the answer of the redirect login that made this session, once.
    pub(super) async fn login_result(
        &self,
        request: &AccessRequest,
    ) -> Result<AccessReply, ErrorCode> {
        let session = self.resume(request).await?.ok_or(ErrorCode::NotLoggedIn)?;
        let token = request
            .session_token
            .as_deref()
            .ok_or(ErrorCode::NotLoggedIn)?;
        let key = hex(&token_hash(token));
        let store = &self.shared.store;
        let sealed = store
            .kv_get(RESULTS, &key)
            .await
            .map_err(internal)?
            .ok_or(ErrorCode::NoLoginResult)?;
        if !store.kv_delete(RESULTS, &key).await.map_err(internal)? {
            return Err(ErrorCode::NoLoginResult);
        }
        let answer = self
            .flow_seal
            .open(key.as_bytes(), &sealed)
            .map_err(internal)?;
        Ok(AccessReply {
            status: 200,
            body: Bytes::from(answer),
            headers: Vec::new(),
            error: None,
            provider: Some(session.provider),
        })
    }
}

/// The provider's `return_url`, where a callback's answer sends the browser.
struct ReturnTo {
    url: url::Url,
    provider: String,
}

impl ReturnTo {
    fn of(provider: &Arc<Provider>) -> Result<Self, ErrorCode> {
        let sso = provider.sso.as_ref().ok_or(ErrorCode::Internal)?;
        Ok(Self {
            url: sso.return_url.clone(),
            provider: provider.id.clone(),
        })
    }

    /// A `303` to `location` that also ends the flow cookie.
    fn redirect(&self, location: &url::Url, method: &str, tls: bool) -> AccessReply {
        AccessReply {
            status: 303,
            body: Bytes::new(),
            headers: vec![
                ("location", location.to_string()),
                ("set-cookie", flow_cookie_removal(method, tls)),
                ("cache-control", "no-store".to_owned()),
            ],
            error: None,
            provider: Some(self.provider.clone()),
        }
    }

    /// Back to the dialer with `?sso_error=<code>`: a code, never the identity provider's
    /// words or a stack.
    fn failed(&self, code: ErrorCode, method: &str, tls: bool) -> AccessReply {
        let mut location = self.url.clone();
        location
            .query_pairs_mut()
            .append_pair(SSO_ERROR, code.as_str());
        let mut reply = self.redirect(&location, method, tls);
        reply.error = Some(code);
        reply
    }
}

/// What the identity provider sent: the query of a `GET`, the form of a `POST`.
fn callback_params(request: &AccessRequest) -> Result<Map<String, Value>, ErrorCode> {
    // The API's front refused a body that is not a form.
    let encoded: &[u8] = if request.method == http::Method::POST {
        &request.body
    } else {
        request.query.as_deref().unwrap_or("").as_bytes()
    };
    callback_fields(encoded)
}

/// The fields of a form-encoded query or body, each at most once, at most
/// [`CALLBACK_FIELDS`] of them.
pub(super) fn callback_fields(encoded: &[u8]) -> Result<Map<String, Value>, ErrorCode> {
    let mut params = Map::new();
    for (name, value) in url::form_urlencoded::parse(encoded) {
        // A field twice is a request no identity provider makes.
        if params
            .insert(name.into_owned(), Value::String(value.into_owned()))
            .is_some()
            || params.len() > CALLBACK_FIELDS
        {
            return Err(ErrorCode::BadRequest);
        }
    }
    Ok(params)
}

/// The flow cookie: sent only to the method's callback, for at most the flow's lifetime. It
/// must come back on the identity provider's redirect (a top-level `GET`) and on a SAML
/// response, a cross-site form `POST` that `SameSite=Lax` would strip, hence `SameSite=None`
/// wherever browsers accept it (with `Secure`). That opens nothing: a callback is served only
/// when the cookie's hash matches the one stored with the flow its `state` names, so another
/// site's post can finish no flow but the browser's own.
fn flow_cookie(method: &str, value: &str, secure: bool) -> String {
    format!(
        "{FLOW_COOKIE}={value}; Path={}; HttpOnly; {}; Max-Age={}",
        callback_path(method),
        flow_cookie_reach(secure),
        FLOW_LIFETIME.as_secs()
    )
}

fn flow_cookie_removal(method: &str, secure: bool) -> String {
    format!(
        "{FLOW_COOKIE}=; Path={}; HttpOnly; {}; Max-Age=0",
        callback_path(method),
        flow_cookie_reach(secure)
    )
}

/// `SameSite=None` needs `Secure`; a plain-HTTP gateway (a test, the demo) gets `Lax`, which
/// same-site identity providers satisfy.
fn flow_cookie_reach(secure: bool) -> &'static str {
    if secure {
        "SameSite=None; Secure"
    } else {
        "SameSite=Lax"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: http::Method, query: Option<&str>, body: &str, form: bool) -> AccessRequest {
        AccessRequest {
            endpoint: super::super::Endpoint::LoginCallback {
                method: "o365".to_owned(),
            },
            method,
            body: Bytes::from(body.to_owned()),
            query: query.map(str::to_owned),
            session_token: None,
            device_cookie: None,
            flow_cookie: None,
            csrf: None,
            client: None,
            tls: false,
            json: false,
            form,
            request_id: "r".to_owned(),
        }
    }

    #[test]
    fn callback_fields_come_from_the_query_or_a_form_only() {
        let get = request(http::Method::GET, Some("code=a%2Bb&state=s"), "", false);
        let params = callback_params(&get).unwrap();
        assert_eq!(params["code"], "a+b");
        assert_eq!(params["state"], "s");

        let post = request(
            http::Method::POST,
            None,
            "SAMLResponse=x&RelayState=s",
            true,
        );
        assert_eq!(callback_params(&post).unwrap()["RelayState"], "s");
        // A POST's query is not read: the identity provider's fields are in the form.
        let post = request(http::Method::POST, Some("state=q"), "RelayState=s", true);
        assert!(!callback_params(&post).unwrap().contains_key("state"));
    }

    #[test]
    fn a_callback_field_given_twice_or_too_many_fields_is_refused() {
        let twice = request(http::Method::GET, Some("state=a&state=b"), "", false);
        assert_eq!(callback_params(&twice), Err(ErrorCode::BadRequest));
        let many: Vec<String> = (0..=CALLBACK_FIELDS).map(|i| format!("f{i}=1")).collect();
        let many = request(http::Method::GET, Some(&many.join("&")), "", false);
        assert_eq!(callback_params(&many), Err(ErrorCode::BadRequest));
    }

    #[test]
    fn the_flow_cookie_goes_to_the_callback_only_and_expires_with_the_flow() {
        let cookie = flow_cookie("o365", "v", true);
        assert_eq!(
            cookie,
            "xsigate_flow=v; Path=/api/access/services/idp/o365/callback; HttpOnly; \
             SameSite=None; Secure; Max-Age=600"
        );
        assert!(flow_cookie("saml", "v", false).contains("; SameSite=Lax;"));
        assert!(flow_cookie_removal("o365", false).contains("Max-Age=0"));
    }
}
