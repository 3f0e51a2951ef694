//! The message a filter plugin works on, as the host hands it over: a mutable view of the
//! request or response header plus what xsigate knows about the request.

use std::cell::OnceCell;
use std::net::IpAddr;

use http::HeaderValue;
use pingora::http::{IntoCaseHeaderName, RequestHeader, ResponseHeader};

use crate::state::session::BoundSession;

/// Headers no plugin may set or remove: they frame the message, and a wrong value would
/// corrupt the connection rather than the request.
const FRAMING: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

enum Message<'a> {
    Request(&'a mut RequestHeader),
    Response {
        request: &'a RequestHeader,
        response: &'a mut ResponseHeader,
    },
}

impl Message<'_> {
    fn put(&mut self, name: impl IntoCaseHeaderName, value: HeaderValue, append: bool) -> bool {
        let put = match (self, append) {
            (Message::Request(request), false) => request.insert_header(name, value),
            (Message::Request(request), true) => request.append_header(name, value).map(drop),
            (Message::Response { response, .. }, false) => response.insert_header(name, value),
            (Message::Response { response, .. }, true) => {
                response.append_header(name, value).map(drop)
            }
        };
        put.is_ok()
    }
}

/// One filter call's view. The host passes `&mut Exchange` to the plugin as an opaque handle
/// and keeps it alive and unmoved until the hook's future is done or dropped.
pub struct Exchange<'a> {
    message: Message<'a>,
    request_id: &'a str,
    provider: &'a str,
    client: Option<IpAddr>,
    /// `client` as text, made only if a plugin asks (the handle returns borrowed bytes).
    client_text: OnceCell<String>,
    route: &'a str,
    upstream: Option<&'a str>,
    session: Option<&'a mut BoundSession>,
    /// Whether the plugin being called may read and write the session's credentials.
    credentials_visible: bool,
}

impl std::fmt::Debug for Exchange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("request_id", &self.request_id)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl<'a> Exchange<'a> {
    pub fn request(
        request: &'a mut RequestHeader,
        request_id: &'a str,
        provider: &'a str,
        client: Option<IpAddr>,
    ) -> Self {
        Self {
            message: Message::Request(request),
            request_id,
            provider,
            client,
            client_text: OnceCell::new(),
            route: "",
            upstream: None,
            session: None,
            credentials_visible: false,
        }
    }

    pub fn response(
        request: &'a RequestHeader,
        response: &'a mut ResponseHeader,
        request_id: &'a str,
        provider: &'a str,
        client: Option<IpAddr>,
    ) -> Self {
        Self {
            message: Message::Response { request, response },
            request_id,
            provider,
            client,
            client_text: OnceCell::new(),
            route: "",
            upstream: None,
            session: None,
            credentials_visible: false,
        }
    }

    /// The request's route and, once chosen, its upstream.
    pub fn routed(mut self, route: &'a str, upstream: Option<&'a str>) -> Self {
        self.route = route;
        self.upstream = upstream;
        self
    }

    /// The login session the request came with.
    pub fn with_session(mut self, session: Option<&'a mut BoundSession>) -> Self {
        self.session = session;
        self
    }

    /// Set before each plugin call, from the plugin's manifest.
    pub fn show_session_credentials(&mut self, visible: bool) {
        self.credentials_visible = visible;
    }

    fn request_header(&self) -> &RequestHeader {
        match &self.message {
            Message::Request(request) => request,
            Message::Response { request, .. } => request,
        }
    }

    fn headers(&self) -> &http::HeaderMap {
        match &self.message {
            Message::Request(request) => &request.headers,
            Message::Response { response, .. } => &response.headers,
        }
    }

    pub(super) fn attribute(&self, attr: u32) -> Option<&[u8]> {
        use xsigate_plugin_sdk::abi::attr;
        let uri = &self.request_header().uri;
        let text = match attr {
            attr::METHOD => self.request_header().method.as_str(),
            attr::PATH => uri.path(),
            attr::QUERY => uri.query()?,
            attr::REQUEST_ID => self.request_id,
            attr::PROVIDER => self.provider,
            attr::CLIENT_ADDR => {
                let client = self.client?;
                self.client_text.get_or_init(|| client.to_string())
            }
            attr::ROUTE => self.route,
            attr::UPSTREAM => self.upstream?,
            _ => return self.session_attribute(attr),
        };
        Some(text.as_bytes())
    }

    fn session_attribute(&self, attr: u32) -> Option<&[u8]> {
        use xsigate_plugin_sdk::abi::attr;
        let bound = self.session.as_deref()?;
        let session = &bound.session;
        let text = match attr {
            attr::SESSION_USER => session.user_id.as_str(),
            attr::SESSION_LEVEL => session.level.as_str(),
            attr::SESSION_SERVICE_PROVIDER => session.scope.service_provider.as_deref()?,
            attr::SESSION_GROUP => session.scope.group.as_deref()?,
            attr::SESSION_XSP => bound.xsp.as_deref()?,
            attr::SESSION_PASSWORD if self.credentials_visible => {
                session.secrets.password.as_deref()?
            }
            attr::SESSION_XSP_COOKIE if self.credentials_visible => bound.xsp_cookie.as_deref()?,
            attr::SESSION_CREDENTIALS if self.credentials_visible => {
                if session.secrets.password.is_some() {
                    "password"
                } else {
                    "master"
                }
            }
            _ => return None,
        };
        Some(text.as_bytes())
    }

    pub(super) fn set_attribute(&mut self, attr: u32, value: Option<&str>) -> bool {
        use xsigate_plugin_sdk::abi::attr;
        let visible = self.credentials_visible;
        let Some(bound) = self.session.as_deref_mut() else {
            return false;
        };
        match attr {
            attr::SESSION_XSP_COOKIE if visible && bound.app.is_some() => {
                if bound.xsp_cookie.as_deref() != value {
                    bound.xsp_cookie = value.map(str::to_owned);
                    bound.changed = true;
                }
                true
            }
            // Only a session without a password of its own may borrow the master's; the
            // host applies them after the last upstream-request filter.
            attr::SESSION_CREDENTIALS
                if visible
                    && value == Some("master")
                    && bound.session.secrets.password.is_none()
                    && matches!(self.message, Message::Request(_)) =>
            {
                bound.master_credentials = true;
                true
            }
            attr::SESSION_XSP => {
                let Some(value) = value else {
                    return false;
                };
                if bound.xsp.as_deref() != Some(value) {
                    bound.xsp = Some(value.to_owned());
                    bound.changed = true;
                }
                true
            }
            _ => false,
        }
    }

    pub(super) fn header(&self, name: &[u8], index: usize) -> Option<&[u8]> {
        let name = http::HeaderName::from_bytes(name).ok()?;
        self.headers()
            .get_all(name)
            .iter()
            .nth(index)
            .map(HeaderValue::as_bytes)
    }

    /// The name is parsed (and refused when it is not a field name) by Pingora's method alone:
    /// parsed here first, it would be parsed twice.
    pub(super) fn set_header(&mut self, name: &[u8], value: &[u8], append: bool) -> bool {
        let Ok(value) = HeaderValue::from_bytes(value) else {
            return false;
        };
        if FRAMING
            .iter()
            .any(|framing| name.eq_ignore_ascii_case(framing.as_bytes()))
        {
            return false;
        }
        let cased = match &self.message {
            Message::Request(request) => request.has_case(),
            Message::Response { response, .. } => response.has_case(),
        };
        if cased {
            // Pingora keeps the name's case as given, so pass the plugin's spelling on.
            let Ok(name) = String::from_utf8(name.to_vec()) else {
                return false;
            };
            self.message.put(name, value, append)
        } else {
            // A head without a map of its names' case (the lane's) writes no one's spelling.
            // One field goes in through Pingora's method, more cheaply than the head is taken
            // apart and put together (`wire::fields`); the name as bytes, which it takes as
            // they are, where a `HeaderName` would be matched against the names it titles.
            self.message
                .put(bytes::Bytes::copy_from_slice(name), value, append)
        }
    }

    pub(super) fn remove_header(&mut self, name: &[u8]) {
        let Ok(name) = http::HeaderName::from_bytes(name) else {
            return;
        };
        if FRAMING.contains(&name.as_str()) {
            return;
        }
        match &mut self.message {
            Message::Request(request) => {
                request.remove_header(&name);
            }
            Message::Response { response, .. } => {
                response.remove_header(&name);
            }
        }
    }

    pub(super) fn status(&self) -> u16 {
        match &self.message {
            Message::Request(_) => 0,
            Message::Response { response, .. } => response.status.as_u16(),
        }
    }

    pub(super) fn set_status(&mut self, status: u16) -> bool {
        match &mut self.message {
            Message::Request(_) => false,
            Message::Response { response, .. } => {
                (200..=599).contains(&status) && response.set_status(status).is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pingora::http::{RequestHeader, ResponseHeader};
    use xsigate_plugin_sdk::LoginLevel;
    use xsigate_plugin_sdk::abi::attr;

    use super::Exchange;
    use crate::state::session::{BoundSession, Scope, Session, SessionSecrets};

    fn bound(password: Option<&str>) -> BoundSession {
        let session = Session {
            user_id: "alice@acme.example".to_owned(),
            provider: "acme".to_owned(),
            level: LoginLevel::User,
            scope: Scope::default(),
            xsp: None,
            secrets: SessionSecrets {
                password: password.map(str::to_owned),
                xsp_cookies: Default::default(),
            },
            created_at_ms: 0,
            expires_at_ms: i64::MAX,
            unique_id: None,
            csrf_hash: Vec::new(),
            token_hash: Vec::new(),
        };
        BoundSession::new(Arc::new(session), None)
    }

    fn request() -> RequestHeader {
        RequestHeader::build(
            "GET",
            b"/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example",
            None,
        )
        .unwrap()
    }

    /// Asks for the master's credentials as a plugin would; whether the host took the ask.
    fn ask(session: &mut BoundSession, visible: bool, response: bool) -> bool {
        let mut head = request();
        let mut answer = ResponseHeader::build(200, None).unwrap();
        let mut exchange = if response {
            Exchange::response(&head, &mut answer, "r1", "acme", None)
        } else {
            Exchange::request(&mut head, "r1", "acme", None)
        }
        .with_session(Some(session));
        exchange.show_session_credentials(visible);
        exchange.set_attribute(attr::SESSION_CREDENTIALS, Some("master"))
    }

    /// A plugin sets a field on a head with or without a map of its names' case (Pingora's
    /// parser's, the lane's); never one that frames the message, in any case, nor a name or
    /// value that is not a field's, and a refused field leaves the head as it was.
    #[test]
    fn a_plugin_sets_fields_but_never_framing_or_malformed_ones() {
        let uncased = || {
            let mut parts = http::Request::new(()).into_parts().0;
            parts.uri = "/a".parse().unwrap();
            RequestHeader::from(parts)
        };
        for mut head in [request(), uncased()] {
            let mut exchange = Exchange::request(&mut head, "r1", "acme", None);
            assert!(exchange.set_header(b"Authorization", b"Basic YTpi", false));
            assert!(exchange.set_header(b"authorization", b"Basic Yzpk", false));
            assert!(exchange.set_header(b"X-Trace", b"1", false));
            assert!(exchange.set_header(b"x-trace", b"2", true));
            for framing in ["Content-Length", "transfer-encoding", "CONNECTION"] {
                assert!(
                    !exchange.set_header(framing.as_bytes(), b"0", false),
                    "{framing}"
                );
            }
            assert!(!exchange.set_header(b"bad name", b"1", false));
            assert!(!exchange.set_header(b"", b"1", false));
            assert!(!exchange.set_header(b"x-\xff", b"1", false));
            assert!(!exchange.set_header(b"x-ok", b"a\r\nb", false));
            let names: Vec<_> = head.headers.keys().map(http::HeaderName::as_str).collect();
            assert_eq!(names, ["authorization", "x-trace"]);
            assert_eq!(head.headers["authorization"], "Basic Yzpk");
            let traces: Vec<_> = head.headers.get_all("x-trace").iter().collect();
            assert_eq!(traces, ["1", "2"]);
        }
    }

    #[test]
    fn only_a_session_without_a_password_may_borrow_the_masters_credentials() {
        let mut single_sign_on = bound(None);
        assert!(ask(&mut single_sign_on, true, false));
        assert!(single_sign_on.master_credentials);

        let mut password = bound(Some("alice-pw"));
        assert!(!ask(&mut password, true, false));
        assert!(!password.master_credentials);
    }

    #[test]
    fn only_a_plugin_shown_session_credentials_may_ask_and_only_for_a_request() {
        let mut session = bound(None);
        assert!(!ask(&mut session, false, false));
        assert!(!ask(&mut session, true, true));
        assert!(!session.master_credentials);
    }

    #[test]
    fn the_session_says_how_it_authenticates_to_plugins_shown_credentials_only() {
        for (password, kind) in [(None, "master"), (Some("alice-pw"), "password")] {
            let mut session = bound(password);
            let mut head = request();
            let mut exchange =
                Exchange::request(&mut head, "r1", "acme", None).with_session(Some(&mut session));
            assert_eq!(exchange.attribute(attr::SESSION_CREDENTIALS), None);
            exchange.show_session_credentials(true);
            assert_eq!(
                exchange.attribute(attr::SESSION_CREDENTIALS),
                Some(kind.as_bytes())
            );
        }
    }
}
