//! The authorization code flow with PKCE (OpenID Connect Core §3.1, RFC 7636) on the host's
//! redirect flow: [`RelyingParty::authorization_url`] at its start, [`RelyingParty::finish`]
//! at its callback.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};
use xsigate_plugin_sdk::{Error, Host, HttpRequest, RedirectFlow};

use crate::id_token::{self, Expectations, Refusal};
use crate::provider::IdentityProvider;

/// Clock skew allowed between the gateway and the identity provider.
const LEEWAY: Duration = Duration::from_secs(60);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest authorization code accepted from a callback.
const CODE_MAX: usize = 4096;

/// How the relying party authenticates at the token endpoint (OpenID Connect Core §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    /// `client_id` and `client_secret` in the form (Entra ID's way).
    #[default]
    ClientSecretPost,
    /// HTTP Basic with the client id and secret (OneLogin's default).
    ClientSecretBasic,
}

/// A registered client of one identity provider.
pub struct RelyingParty {
    pub provider: IdentityProvider,
    pub client_id: String,
    client_secret: String,
    pub token_auth: TokenAuth,
    /// Space-separated, `openid` first.
    pub scope: String,
    pub algorithms: Vec<Algorithm>,
    host: Host,
}

impl fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelyingParty")
            .field("issuer", &self.provider.issuer())
            .field("client_id", &self.client_id)
            .field("token_auth", &self.token_auth)
            .finish_non_exhaustive()
    }
}

/// Why a callback did not log anyone in. Names a step, never what the identity provider said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declined {
    /// The identity provider answered with an `error` (the user cancelled, say).
    AtIdentityProvider,
    /// The callback has no usable `code`, or an `iss` of another provider (RFC 9207).
    BadCallback,
    /// The token endpoint refused the code (used before, expired, not ours).
    CodeRefused,
    IdToken(Refusal),
}

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AtIdentityProvider => f.write_str("the identity provider answered an error"),
            Self::BadCallback => f.write_str("the callback carries no usable code"),
            Self::CodeRefused => f.write_str("the token endpoint refused the code"),
            Self::IdToken(refusal) => refusal.fmt(f),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

impl RelyingParty {
    pub fn new(
        host: Host,
        issuer: String,
        client_id: String,
        client_secret: String,
        token_auth: TokenAuth,
        scope: String,
        algorithms: Vec<Algorithm>,
    ) -> Self {
        Self {
            provider: IdentityProvider::new(host, issuer),
            client_id,
            client_secret,
            token_auth,
            scope,
            algorithms,
            host,
        }
    }

    /// Where the browser goes to log in: the authorization endpoint with the flow's `state`,
    /// `nonce` and PKCE challenge, and `login_hint` when the user typed an address.
    pub async fn authorization_url(
        &self,
        flow: &RedirectFlow,
        login_hint: Option<&str>,
    ) -> Result<String, Error> {
        let metadata = self.provider.metadata().await?;
        let mut url = url::Url::parse(&metadata.authorization_endpoint)
            .map_err(|_| Error::msg("the identity provider's authorization endpoint is no URL"))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("client_id", &self.client_id)
                .append_pair("response_type", "code")
                .append_pair("response_mode", "query")
                .append_pair("redirect_uri", &flow.redirect_uri)
                .append_pair("scope", &self.scope)
                .append_pair("state", &flow.state)
                .append_pair("nonce", &flow.nonce)
                .append_pair("code_challenge", &flow.code_challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(hint) = login_hint {
                query.append_pair("login_hint", hint);
            }
        }
        Ok(url.into())
    }

    /// The identity provider sent the browser back with `params`: exchanges the code (with the
    /// PKCE verifier) and verifies the ID token. `Ok(Err(_))` is a refusal; `Err` a failure to
    /// reach the identity provider.
    pub async fn finish(
        &self,
        params: &Map<String, Value>,
        flow: &RedirectFlow,
    ) -> Result<Result<Map<String, Value>, Declined>, Error> {
        if params.contains_key("error") {
            return Ok(Err(Declined::AtIdentityProvider));
        }
        let metadata = self.provider.metadata().await?;
        // RFC 9207: a callback that names its issuer must name ours (mix-up defence).
        if let Some(iss) = params.get("iss") {
            if iss.as_str() != Some(metadata.issuer.as_str()) {
                return Ok(Err(Declined::BadCallback));
            }
        }
        let (Some(code), Some(verifier)) = (
            params
                .get("code")
                .and_then(Value::as_str)
                .filter(|code| !code.is_empty() && code.len() <= CODE_MAX),
            flow.code_verifier.as_deref(),
        ) else {
            return Ok(Err(Declined::BadCallback));
        };
        let request = self.token_request(
            &metadata.token_endpoint,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &flow.redirect_uri),
                ("code_verifier", verifier),
            ],
        );
        let response = self.host.http(request).await?;
        if response.status >= 500 {
            return Err(Error::msg(format!(
                "the identity provider's token endpoint answered {}",
                response.status
            )));
        }
        if !response.is_success() {
            return Ok(Err(Declined::CodeRefused));
        }
        let Ok(TokenResponse {
            id_token: Some(id_token),
        }) = response.json::<TokenResponse>()
        else {
            return Ok(Err(Declined::IdToken(Refusal::Malformed)));
        };
        let expect = Expectations {
            issuer: &metadata.issuer,
            client_id: &self.client_id,
            nonce: &flow.nonce,
            algorithms: &self.algorithms,
            leeway: LEEWAY,
        };
        let keys = self.provider.keys(false).await?;
        match id_token::verify(&id_token, &keys, &expect) {
            Err(Refusal::UnknownKey) => {
                // The provider may have rotated its keys since they were fetched.
                let keys = self.provider.keys(true).await?;
                Ok(id_token::verify(&id_token, &keys, &expect).map_err(Declined::IdToken))
            }
            verified => Ok(verified.map_err(Declined::IdToken)),
        }
    }

    /// An app-only access token from the identity provider's token endpoint (RFC 6749 §4.4,
    /// client credentials) for `scope`: the token and its lifetime in seconds.
    pub async fn client_credentials(&self, scope: &str) -> Result<(String, u64), Error> {
        #[derive(Deserialize)]
        struct Granted {
            access_token: String,
            expires_in: u64,
        }
        let metadata = self.provider.metadata().await?;
        let request = self.token_request(
            &metadata.token_endpoint,
            &[("grant_type", "client_credentials"), ("scope", scope)],
        );
        let response = self.host.http(request).await?;
        if !response.is_success() {
            return Err(Error::msg(format!(
                "the identity provider refused the app's client credentials ({})",
                response.status
            )));
        }
        let granted: Granted = response.json()?;
        Ok((granted.access_token, granted.expires_in))
    }

    /// A form POST of `grant` to the token endpoint, authenticated as the client is registered
    /// to (OpenID Connect Core §9).
    fn token_request(&self, token_endpoint: &str, grant: &[(&str, &str)]) -> HttpRequest {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.extend_pairs(grant);
        if self.token_auth == TokenAuth::ClientSecretPost {
            form.append_pair("client_id", &self.client_id)
                .append_pair("client_secret", &self.client_secret);
        }
        let request = HttpRequest::post(token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .timeout(TOKEN_TIMEOUT);
        let request = match self.token_auth {
            TokenAuth::ClientSecretBasic => {
                request.header("authorization", &self.basic_authorization())
            }
            TokenAuth::ClientSecretPost => request,
        };
        request.body(form.finish())
    }

    /// RFC 6749 §2.3.1: the client id and secret, each form-encoded, as Basic credentials.
    fn basic_authorization(&self) -> String {
        let encode =
            |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let pair = format!(
            "{}:{}",
            encode(&self.client_id),
            encode(&self.client_secret)
        );
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// The e-mail address an ID token's claims carry, under the first of `claims` present. An
/// `email` the identity provider says it has not verified is not believed.
pub fn email_of(verified: &Map<String, Value>, claims: &[String]) -> Option<String> {
    let (claim, address) = claims.iter().find_map(|claim| {
        verified
            .get(claim)
            .and_then(Value::as_str)
            .map(|address| (claim, address.trim()))
    })?;
    if claim == "email" && verified.get("email_verified") == Some(&Value::Bool(false)) {
        return None;
    }
    address
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        .then(|| address.to_owned())
}
