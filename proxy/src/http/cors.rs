//! Cross-origin requests from browser dialers (CORS).
//!
//! Each provider lists the origins its dialer pages are served from (`cors_origins`). xsigate
//! answers preflights itself, since XSPs challenge an `OPTIONS` without credentials and
//! browsers never send credentials on a preflight. A preflight carries no session, so it is
//! allowed for an origin some provider lists; the request that follows gets CORS headers only
//! when its own provider (the session's) lists the origin. A disallowed origin gets no CORS
//! headers at all, so the browser keeps the response from the page.

use std::sync::LazyLock;

use pingora::http::RequestHeader;

use crate::upstream::{Provider, Providers};
use crate::wire::headers::{CSRF_TOKEN, REQUEST_ID, XSP_PIN};

const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";
/// What a dialer sends beyond the CORS-safelisted headers: the CSRF token on writes and the
/// XSP pin that XSI-Events channel commands need. Built from the names the proxy reads, so the
/// two cannot drift apart.
static ALLOWED_HEADERS: LazyLock<String> =
    LazyLock::new(|| ["accept", "content-type", CSRF_TOKEN, XSP_PIN].join(", "));
/// What a dialer may read beyond the CORS-safelisted response headers: the request id and
/// which XSP answered (a channel's XSP, for the commands that must follow it).
static EXPOSED_HEADERS: LazyLock<String> = LazyLock::new(|| [REQUEST_ID, XSP_PIN].join(", "));
/// Browsers cache a preflight answer this long (seconds).
const MAX_AGE: &str = "600";

/// The request's `Origin`, if it sent one that is text.
pub fn origin(request: &RequestHeader) -> Option<&str> {
    request
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
}

/// Whether the request is a CORS preflight.
pub fn is_preflight(request: &RequestHeader) -> bool {
    request.method == http::Method::OPTIONS
        && request.headers.contains_key(http::header::ORIGIN)
        && request
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Whether some provider lists the origin (for preflights and the login API, which come
/// before any session names a provider).
pub fn allowed_anywhere(providers: &Providers, origin: &str) -> bool {
    providers.all.iter().any(|p| allowed_for(p, origin))
}

pub fn allowed_for(provider: &Provider, origin: &str) -> bool {
    provider.cors_origins.contains(origin)
}

/// Headers of a response to a request from an allowed origin.
pub fn response_headers(origin: &str) -> [(&'static str, &str); 3] {
    [
        ("access-control-allow-origin", origin),
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", EXPOSED_HEADERS.as_str()),
    ]
}

/// Headers of the answer to an allowed preflight.
pub fn preflight_headers(origin: &str) -> [(&'static str, &str); 5] {
    [
        ("access-control-allow-origin", origin),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", ALLOWED_METHODS),
        ("access-control-allow-headers", ALLOWED_HEADERS.as_str()),
        ("access-control-max-age", MAX_AGE),
    ]
}
