//! The one error envelope: every answer xsigate gives itself when it refuses or fails a request
//! has the body `{"error":{"status","code","message","request_id"}}`, and names nothing about
//! upstreams: no host, address or upstream error text.

use bytes::Bytes;

/// Why xsigate answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound,
    MissingCredentials,
    UnknownProvider,
    ConflictingProvider,
    UnknownService,
    InvalidPin,
    BadRequest,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// An upstream's error whose body xsigate does not pass on (it may name the upstream).
    UpstreamError,
    PluginFailed,
    PluginTimeout,
    InvalidCredentials,
    TooManyAttempts,
    NotLoggedIn,
    CsrfTokenInvalid,
    UnknownLoginMethod,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidResetToken,
    PasswordRejected,
    AmbiguousPath,
    OriginNotAllowed,
    SessionsNotServed,
    UnknownApplet,
    /// Framing that two HTTP parsers could read differently (request smuggling).
    AmbiguousFraming,
    HeaderTooLarge,
    RequestTimeout,
    /// A session's channel would join another user's XSI-Events channel set.
    ChannelSetNotOwned,
    TooManyConnections,
    TooManyRequests,
    /// A single sign-on's callback names no flow this gateway started, or one used or expired.
    LoginFlowUnknown,
    /// A single sign-on's callback came to another browser than the one that started it.
    LoginFlowForeign,
    /// The answer of the redirect login that made this session was picked up or has expired.
    NoLoginResult,
    /// The gateway's store (the shared database) cannot be reached just now.
    StoreUnavailable,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            Self::NotFound
            | Self::UnknownProvider
            | Self::UnknownService
            | Self::UnknownApplet
            | Self::NoLoginResult => 404,
            Self::OriginNotAllowed
            | Self::SessionsNotServed
            | Self::ChannelSetNotOwned
            | Self::LoginFlowForeign => 403,
            Self::MissingCredentials | Self::InvalidCredentials | Self::NotLoggedIn => 401,
            Self::CsrfTokenInvalid => 403,
            Self::UnknownLoginMethod => 404,
            Self::MethodNotAllowed => 405,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::TooManyAttempts | Self::TooManyConnections | Self::TooManyRequests => 429,
            Self::HeaderTooLarge => 431,
            Self::RequestTimeout => 408,
            Self::ConflictingProvider
            | Self::InvalidPin
            | Self::BadRequest
            | Self::InvalidResetToken
            | Self::PasswordRejected
            | Self::AmbiguousPath
            | Self::AmbiguousFraming
            | Self::LoginFlowUnknown => 400,
            Self::UpstreamUnavailable | Self::UpstreamError | Self::PluginFailed => 502,
            Self::UpstreamTimeout | Self::PluginTimeout => 504,
            Self::StoreUnavailable => 503,
            Self::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MissingCredentials => "missing_credentials",
            Self::UnknownProvider => "unknown_provider",
            Self::ConflictingProvider => "conflicting_provider",
            Self::UnknownService => "unknown_service",
            Self::InvalidPin => "invalid_pin",
            Self::BadRequest => "bad_request",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamError => "upstream_error",
            Self::PluginFailed => "plugin_failed",
            Self::PluginTimeout => "plugin_timeout",
            Self::InvalidCredentials => "invalid_credentials",
            Self::TooManyAttempts => "too_many_attempts",
            Self::NotLoggedIn => "not_logged_in",
            Self::CsrfTokenInvalid => "csrf_token_invalid",
            Self::UnknownLoginMethod => "unknown_login_method",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidResetToken => "invalid_reset_token",
            Self::PasswordRejected => "password_rejected",
            Self::AmbiguousPath => "ambiguous_path",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::SessionsNotServed => "sessions_not_served",
            Self::UnknownApplet => "unknown_applet",
            Self::AmbiguousFraming => "ambiguous_framing",
            Self::HeaderTooLarge => "header_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::ChannelSetNotOwned => "channel_set_not_owned",
            Self::TooManyConnections => "too_many_connections",
            Self::TooManyRequests => "too_many_requests",
            Self::LoginFlowUnknown => "login_flow_unknown",
            Self::LoginFlowForeign => "login_flow_foreign",
            Self::NoLoginResult => "no_login_result",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal => "internal_error",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::NotFound => "no route serves this path",
            Self::MissingCredentials => "credentials naming a user id with a domain are required",
            Self::UnknownProvider => "no service provider serves this user's domain",
            Self::ConflictingProvider => {
                "the credentials and the path name users of different service providers"
            }
            Self::UnknownService => "this service provider has no such gateway service",
            Self::InvalidPin => {
                "the X-Xsigate-Xsp header does not name an XSP of this service provider"
            }
            Self::BadRequest => "the request could not be read",
            Self::UpstreamUnavailable => "the service provider's server could not be reached",
            Self::UpstreamTimeout => "the service provider's server did not answer in time",
            Self::UpstreamError => "the service provider's server answered with an error",
            Self::PluginFailed => "an extension of the gateway could not handle the request",
            Self::PluginTimeout => "an extension of the gateway did not finish in time",
            Self::InvalidCredentials => "the user id or password is not correct",
            Self::TooManyAttempts => "too many failed logins; try again later",
            Self::NotLoggedIn => "no session: log in first",
            Self::CsrfTokenInvalid => "the X-CSRF-Token header is missing or wrong",
            Self::UnknownLoginMethod => "this login method is not offered here",
            Self::MethodNotAllowed => "this endpoint does not take this method",
            Self::PayloadTooLarge => "the request body is too large",
            Self::UnsupportedMediaType => "the request body must be JSON (application/json)",
            Self::InvalidResetToken => "the reset link is unknown, used or expired",
            Self::PasswordRejected => "the service provider refused this password",
            Self::AmbiguousPath => {
                "the path has dot segments, empty segments, encoded separators or other parts \
                 that servers read differently"
            }
            Self::OriginNotAllowed => "this origin may not call the gateway from a browser",
            Self::SessionsNotServed => {
                "this service provider does not serve XSI requests on login sessions"
            }
            Self::UnknownApplet => "this service provider has no such applet",
            Self::AmbiguousFraming => {
                "the request's length is given in ways that servers read differently \
                 (Content-Length with Transfer-Encoding, several or malformed lengths)"
            }
            Self::HeaderTooLarge => "the request header is too large or has too many fields",
            Self::RequestTimeout => "the request header did not arrive in time",
            Self::ChannelSetNotOwned => "this channel set belongs to another user",
            Self::TooManyConnections => "this address holds too many connections",
            Self::TooManyRequests => "this address sends too many requests; slow down",
            Self::LoginFlowUnknown => {
                "this single sign-on is unknown, already used or expired: log in again"
            }
            Self::LoginFlowForeign => "this single sign-on was started in another browser",
            Self::NoLoginResult => "this session's login result was already collected or expired",
            Self::StoreUnavailable => {
                "the gateway cannot reach its database just now; try again in a few seconds"
            }
            Self::Internal => "the gateway failed to handle the request",
        }
    }
}

/// The `/healthz` answer: the process serves.
pub const LIVE: &[u8] = br#"{"status":"ok"}"#;

/// The `/readyz` answer: status and body.
pub fn readiness(ready: bool) -> (u16, &'static [u8]) {
    if ready {
        (200, br#"{"status":"ready"}"#)
    } else {
        (503, br#"{"status":"not_ready"}"#)
    }
}

/// The JSON body of an error response.
pub fn error_body(code: ErrorCode, request_id: &str) -> Bytes {
    error_body_with_status(code, code.status(), request_id)
}

/// The JSON body of an error response whose status is not the code's own: an upstream's error
/// keeps its status, and only its body is replaced.
pub fn error_body_with_status(code: ErrorCode, status: u16, request_id: &str) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "status": status,
            "code": code.as_str(),
            "message": code.message(),
            "request_id": request_id,
        }
    });
    Bytes::from(body.to_string())
}
