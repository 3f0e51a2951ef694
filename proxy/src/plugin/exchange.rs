//! The message a filter plugin works on, as the host hands it over: a mutable view of the
//! request or response header plus what xsigate knows about the request.

use std::cell::OnceCell;
use std::net::IpAddr;

use pingora::http::{RequestHeader, ResponseHeader};

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

/// One filter call's view. The host passes `&mut Exchange` to the plugin as an opaque handle
/// and keeps it alive and unmoved until the hook's future is done or dropped.
pub struct Exchange<'a> {
    message: Message<'a>,
    request_id: &'a str,
    provider: &'a str,
    client: Option<IpAddr>,
    /// `client` as text, made only if a plugin asks (the handle returns borrowed bytes).
    client_text: OnceCell<String>,
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
        }
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
            _ => return None,
        };
        Some(text.as_bytes())
    }

    pub(super) fn header(&self, name: &[u8], index: usize) -> Option<&[u8]> {
        let name = http::HeaderName::from_bytes(name).ok()?;
        self.headers()
            .get_all(name)
            .iter()
            .nth(index)
            .map(http::HeaderValue::as_bytes)
    }

    pub(super) fn set_header(&mut self, name: &[u8], value: &[u8], append: bool) -> bool {
        let (Ok(parsed), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            return false;
        };
        if FRAMING.contains(&parsed.as_str()) {
            return false;
        }
        // Pingora keeps the name's case as given, so pass the plugin's spelling on.
        let Ok(name) = String::from_utf8(name.to_vec()) else {
            return false;
        };
        let result = match (&mut self.message, append) {
            (Message::Request(request), false) => request.insert_header(name, value),
            (Message::Request(request), true) => request.append_header(name, value).map(|_| ()),
            (Message::Response { response, .. }, false) => response.insert_header(name, value),
            (Message::Response { response, .. }, true) => {
                response.append_header(name, value).map(|_| ())
            }
        };
        result.is_ok()
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
