//! What a plugin can be: one trait per capability, and the data they exchange with the host.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::exchange::{Request, Response};
use crate::host::Host;

/// Every plugin: built once at start from its `config` table.
///
/// `init` is synchronous: it validates configuration, registers metrics and subscribes to
/// topics. Anything that needs I/O belongs in a hook or a [`BackgroundWorker`]. An `Err` (or a
/// `Config` that does not deserialize) stops xsigate from starting, with the message shown.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The plugin's `config` table. Use `#[serde(deny_unknown_fields)]` so typos are errors.
    type Config: DeserializeOwned;

    fn init(host: Host, config: Self::Config) -> Result<Self, Error>;

    /// What the plugin tells the host beyond its hooks.
    fn manifest(&self) -> Manifest {
        Manifest::default()
    }
}

/// A plugin's self-description, returned once after init.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Login methods an [`IdentityProvider`] serves (`POST /api/access/services/idp/<method>`).
    #[serde(default)]
    pub login_methods: Vec<String>,
    /// The methods find users by searching the provider's directory with its master
    /// credentials (an e-mail address, a phone number). The host then refuses to start a
    /// provider that has no `master`, and asks the plugin about queries that no provider claims
    /// by its configured domains or number prefixes. Methods that send the user's credentials
    /// to a provider without looking first (`broadsoft`) leave this false, so credentials only
    /// ever reach the provider the configuration names.
    #[serde(default)]
    pub reverse_lookup: bool,
    /// The plugin's filters read the login session's credentials (the password, the XSP's
    /// session cookies) to act for the user upstream, and may update the cookies. The host
    /// shows them to no plugin that does not declare this, and logs at start which do.
    #[serde(default)]
    pub session_credentials: bool,
    /// The login methods are redirect flows (single sign-on): the user logs in at an external
    /// identity provider, which sends the browser back to the method's callback. The host runs
    /// the flow (its state, the browser binding, the callback) and calls
    /// [`IdentityProvider::authenticate`] twice with a [`RedirectFlow`]: to get the identity
    /// provider's URL, then with what it sent back. The host refuses to start a provider that
    /// lists such a plugin without an `sso` table.
    #[serde(default)]
    pub redirect_login: bool,
    /// The methods find the user with the provider's master credentials (single sign-on
    /// matches a verified e-mail address to a BroadWorks user). Where a provider has no
    /// `master`, the host offers none of them and refuses a login with them as an unknown
    /// method; unlike [`Manifest::reverse_lookup`], such a provider still starts.
    #[serde(default)]
    pub needs_master: bool,
}

/// Decides about a client request before it is sent anywhere. Runs on every request routed to
/// a provider that lists the plugin, in the provider's order; the first `Answer` wins.
pub trait RequestFilter: Plugin {
    fn request_filter(
        &self,
        request: &mut Request,
    ) -> impl Future<Output = Result<Decision, Error>> + Send;
}

/// Adjusts the request about to go upstream (after xsigate set `Host` and forwarding headers).
pub trait UpstreamRequestFilter: Plugin {
    fn upstream_request_filter(
        &self,
        request: &mut Request,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Adjusts the upstream's response header before it reaches the client, or has the request
/// sent again.
pub trait ResponseFilter: Plugin {
    fn response_filter(
        &self,
        response: &mut Response,
    ) -> impl Future<Output = Result<ResponseDecision, Error>> + Send;
}

/// What a [`ResponseFilter`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDecision {
    /// Send this response on (through the next filter) to the client.
    Forward,
    /// Discard this response and send the request upstream once more; the upstream-request
    /// filters run again first. The host allows one retry per request, and none when it no
    /// longer holds the request body; otherwise the response goes on as `Forward`.
    Retry,
}

/// A way to log in: contributes login options for a user, and authenticates.
pub trait IdentityProvider: Plugin {
    /// Login options this provider offers for what the user typed (user id, e-mail or phone).
    /// Return none when the query is not one this method can serve.
    fn login_options(
        &self,
        query: LoginQuery,
    ) -> impl Future<Output = Result<Vec<LoginOption>, Error>> + Send;

    /// Checks a login. `Rejected` is a normal answer; `Err` means the check itself failed.
    fn authenticate(
        &self,
        login: Login,
    ) -> impl Future<Output = Result<Authentication, Error>> + Send;

    /// The document an identity provider's administrator registers the gateway with, for a
    /// redirect login that has one (a SAML service provider's metadata), served at
    /// `GET /api/access/services/idp/<method>/metadata?provider=<id>`. `None`: the method has
    /// none for this provider (the host answers 404).
    fn sign_in_metadata(
        &self,
        request: MetadataRequest,
    ) -> impl Future<Output = Result<Option<SignInMetadata>, Error>> + Send {
        let _ = request;
        async { Ok(None) }
    }
}

/// What [`IdentityProvider::sign_in_metadata`] is asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRequest {
    pub provider: String,
    pub method: String,
    /// The method's callback on the provider's public URL, as [`RedirectFlow::redirect_uri`]
    /// names it in every flow (a SAML assertion consumer service).
    pub callback_url: String,
}

/// A document for the identity provider's administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInMetadata {
    /// The media type (`application/samlmetadata+xml`).
    pub content_type: String,
    pub body: String,
}

/// Receives events published on topics the plugin subscribed to during init. Events arrive in
/// order, one at a time.
///
/// The `Ok` value is the plugin's report on the event, for publishers that wait for one: the
/// host puts reports on `session.started` in the login answer under the plugin's name (for
/// example `{"state": "logged_in"}` from a recording-service login), so keep them to what the
/// user may see. Return `None` for no report. Slow work delays the plugin's next event: do one
/// bounded attempt here and leave retries to a [`BackgroundWorker`].
pub trait EventConsumer: Plugin {
    fn on_event(&self, event: Event) -> impl Future<Output = Result<Option<Value>, Error>> + Send;
}

/// Long-running work started when the server starts. Returning `Ok` ends it; an `Err` or a
/// panic is logged and the worker is started again after a growing delay.
pub trait BackgroundWorker: Plugin {
    fn run(&self) -> impl Future<Output = Result<(), Error>> + Send;
}

/// What a [`RequestFilter`] decided.
#[derive(Debug)]
pub enum Decision {
    /// Go on to the next filter and then upstream.
    Continue,
    /// Answer the client now; nothing goes upstream.
    Answer(Answer),
}

/// A response written by a plugin.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body with its content type.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }
}

/// What the user typed on the login page, and the provider it was matched to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginQuery {
    pub provider: String,
    pub query: String,
    /// What in the provider's configuration matched the query.
    #[serde(default)]
    pub matched: QueryMatch,
}

/// What in a provider's configuration matched a login query to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryMatch {
    /// The query is a user id in one of the provider's `domains`.
    #[default]
    UserDomain,
    /// An e-mail address in one of its `email_domains`.
    EmailDomain,
    /// A phone number under one of its `number_prefixes`.
    NumberPrefix,
    /// Nothing: every provider is a candidate, and only identity providers with
    /// [`Manifest::reverse_lookup`] are asked, since they search with master credentials before
    /// any user credential is sent.
    Nothing,
}

/// A login query that reads as a phone number or extension, reduced to its digits with an
/// optional leading `+`: `+1 (202) 555-0101` is `+12025550101`. Spaces, dashes, dots and
/// brackets between digits are what people type and are dropped; anything else means the query
/// is not a number. The host identifies providers by number prefix with this, and phone lookups
/// search with it, so both read a number the same way.
pub fn phone_number(text: &str) -> Option<String> {
    let text = text.trim();
    let (plus, rest) = match text.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", text),
    };
    let mut number = String::with_capacity(text.len());
    number.push_str(plus);
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    // BroadWorks extensions have at least 2 digits; E.164 numbers at most 15.
    let digits = number.len() - plus.len();
    (2..=15).contains(&digits).then_some(number)
}

/// One way to log in, shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginOption {
    /// The method name, as in `POST /api/access/services/idp/<method>`.
    pub method: String,
    /// What the login page shows.
    pub label: String,
    /// The BroadWorks userId this option logs into, when the method already knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Method-specific facts the login page needs (the levels a BroadSoft login offers, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

/// A login attempt.
#[derive(Clone, Serialize, Deserialize)]
pub struct Login {
    pub provider: String,
    pub method: String,
    pub user: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Method-specific fields (a SAML response, an OAuth code, ...). At a redirect flow's
    /// [`FlowStage::Callback`], what the identity provider sent back: the callback's query
    /// parameters, or its form fields.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// The host's half of a redirect login, for plugins with [`Manifest::redirect_login`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<RedirectFlow>,
}

/// One redirect login (single sign-on), as the host keeps it: made at the start, stored
/// server-side for at most 10 minutes, bound to the browser that started it, used once.
///
/// The values are unguessable and fresh for each flow; the plugin puts them in what it sends
/// the identity provider and checks them in what comes back. The host has already matched
/// `state` and the browser when it calls the plugin at [`FlowStage::Callback`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectFlow {
    pub stage: FlowStage,
    /// The value the identity provider returns unchanged (OpenID Connect `state`, SAML
    /// `RelayState`).
    pub state: String,
    /// Binds the identity provider's answer to this flow (OpenID Connect `nonce`; a SAML
    /// AuthnRequest's `ID`, which the Response's `InResponseTo` must repeat).
    pub nonce: String,
    /// PKCE (RFC 7636): the S256 challenge to send with the authorization request.
    pub code_challenge: String,
    /// PKCE: the verifier for the token request. Only at [`FlowStage::Callback`]: nothing
    /// before it needs the verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_verifier: Option<String>,
    /// Where the identity provider sends the browser back: the method's callback on the
    /// gateway's public URL (`…/api/access/services/idp/<method>/callback`).
    pub redirect_uri: String,
}

impl fmt::Debug for RedirectFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedirectFlow")
            .field("stage", &self.stage)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// Where a [`RedirectFlow`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowStage {
    /// The user asked to log in: answer [`Authentication::Redirect`] with the identity
    /// provider's URL.
    Start,
    /// The identity provider sent the browser back; [`Login::params`] holds what it sent.
    /// Answer `Authenticated` with the one BroadWorks user it proves, or `Rejected`.
    Callback,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("provider", &self.provider)
            .field("method", &self.method)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("flow", &self.flow)
            .finish_non_exhaustive()
    }
}

/// The answer of [`IdentityProvider::authenticate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Authentication {
    /// The user is who they say; `user_id` is their BroadWorks userId.
    Authenticated {
        user_id: String,
        #[serde(default)]
        grant: Grant,
    },
    /// Wrong credentials, unknown user, locked account... `reason` is for the log only.
    Rejected { reason: String },
    /// The user must continue at an external identity provider.
    Redirect { location: String },
    /// The credentials open several accounts (one e-mail address on several users, say). The
    /// login page shows these, and the user logs in again with `params.user_id` set to one.
    /// Only accounts the credentials were proven for belong here.
    Choose { choices: Vec<Choice> },
}

/// One account of [`Authentication::Choose`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub user_id: String,
    /// What the login page shows (a name, a group).
    pub label: String,
}

/// The BroadWorks level a login is at. Administrators act within a scope: their group, their
/// service provider (or enterprise), or the whole system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginLevel {
    #[default]
    User,
    Group,
    ServiceProvider,
    System,
}

impl LoginLevel {
    pub const ALL: [Self; 4] = [Self::User, Self::Group, Self::ServiceProvider, Self::System];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
            Self::ServiceProvider => "service_provider",
            Self::System => "system",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str() == text)
    }
}

/// What a successful login opens: the session's level and scope, and the XSP state the host
/// keeps for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub level: LoginLevel,
    /// The service provider (or enterprise) of a group or service-provider administrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_provider: Option<String>,
    /// The group of a group administrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The XSP that checked the credentials; the session is pinned to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xsp: Option<String>,
    /// The XSP's session cookie (`JSESSIONID=…`) per XSI context (`xsi-actions`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xsp_cookies: BTreeMap<String, String>,
}

/// An event delivered to an [`EventConsumer`].
#[derive(Clone)]
pub struct Event {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Event {
    /// The payload as JSON, as the host's own events (`session.started`, `session.ended`) are.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

/// The payload may hold credentials (`session.started` to plugins that declare
/// `session_credentials`): only its size is shown.
impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("topic", &self.topic)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_read_as_people_type_them() {
        assert_eq!(
            phone_number("+1 (202) 555-0101").as_deref(),
            Some("+12025550101")
        );
        assert_eq!(phone_number("202.555.0101").as_deref(), Some("2025550101"));
        assert_eq!(phone_number(" 5006 ").as_deref(), Some("5006"));
        for not_a_number in [
            "",
            "+",
            "7",
            "alice@acme.example",
            "555-CALL",
            "1234567890123456",
            "++1202",
        ] {
            assert_eq!(phone_number(not_a_number), None, "{not_a_number}");
        }
    }
}
