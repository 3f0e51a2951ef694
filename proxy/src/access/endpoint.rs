//! What the proxy hands the login API: which endpoint a path names, and the session cookie.

/// Request bodies of the login API are small JSON documents.
pub const BODY_LIMIT: usize = 16 * 1024;

/// The endpoints of the login API, `/api/access/services/<endpoint>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `ztp`: which login options a user has.
    Ztp,
    /// `idp/<method>`: log in with a method.
    Login { method: String },
    /// `logout`: end the session.
    Logout,
    /// `session`: the session the cookie names.
    Session,
    /// `reset`: mail a password-reset link.
    ResetRequest,
    /// `reset/confirm`: set a new password with a link's token.
    ResetConfirm,
    /// `applets/<name>`: a redirect to an applet with a short-lived signed token.
    AppletRedirect { name: String },
    /// `keys`: the public keys that verify identity assertions (a JWK Set).
    Keys,
}

impl Endpoint {
    /// The endpoint a path names below `/api/access/services/`.
    pub fn parse(endpoint: &str) -> Option<Self> {
        Some(match endpoint {
            "ztp" => Self::Ztp,
            "keys" => Self::Keys,
            "logout" => Self::Logout,
            "session" => Self::Session,
            "reset" => Self::ResetRequest,
            "reset/confirm" => Self::ResetConfirm,
            _ => {
                let named = |prefix: &str| {
                    endpoint
                        .strip_prefix(prefix)
                        .filter(|name| !name.is_empty() && !name.contains('/'))
                        .map(str::to_owned)
                };
                if let Some(method) = named("idp/") {
                    Self::Login { method }
                } else if let Some(name) = named("applets/") {
                    Self::AppletRedirect { name }
                } else {
                    return None;
                }
            }
        })
    }

    /// The one HTTP method the endpoint takes.
    pub fn method(&self) -> http::Method {
        match self {
            Self::Session | Self::AppletRedirect { .. } | Self::Keys => http::Method::GET,
            _ => http::Method::POST,
        }
    }
}

/// Whether a `Content-Type` value declares JSON: `application/json`, in any case, with or
/// without parameters.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The value of the cookie `name` from `Cookie` headers.
pub fn cookie<'a>(
    cookies: impl Iterator<Item = &'a http::HeaderValue>,
    name: &str,
) -> Option<String> {
    cookies
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_named_by_the_path_and_take_one_method() {
        assert_eq!(Endpoint::parse("ztp"), Some(Endpoint::Ztp));
        assert_eq!(
            Endpoint::parse("idp/broadsoft"),
            Some(Endpoint::Login {
                method: "broadsoft".to_owned()
            })
        );
        assert_eq!(Endpoint::parse("idp/"), None);
        assert_eq!(Endpoint::parse("idp/a/b"), None);
        assert_eq!(Endpoint::parse("other"), None);
        assert_eq!(Endpoint::Keys.method(), http::Method::GET);
        assert_eq!(Endpoint::ResetConfirm.method(), http::Method::POST);
    }

    #[test]
    fn only_json_bodies_are_declared_json() {
        for json in ["application/json", "Application/JSON; charset=utf-8"] {
            assert!(is_json(Some(json)), "{json}");
        }
        for other in [
            None,
            Some("text/plain"),
            Some("application/jsonx"),
            Some("application/x-www-form-urlencoded"),
            Some("text/plain; application/json"),
        ] {
            assert!(!is_json(other), "{other:?}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let values = [
            http::HeaderValue::from_static("theme=dark; xsigate_session=abc; other=1"),
            http::HeaderValue::from_static("x=y"),
        ];
        assert_eq!(
            cookie(values.iter(), "xsigate_session").as_deref(),
            Some("abc")
        );
        let none = [http::HeaderValue::from_static("xsigate_sessionx=abc")];
        assert_eq!(cookie(none.iter(), "xsigate_session"), None);
    }
}
