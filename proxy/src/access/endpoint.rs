//! What the proxy hands the login API: which endpoint a path names, and the session cookie.

use crate::text::every_byte;

/// Request bodies of the login API are small JSON documents.
pub const BODY_LIMIT: usize = 16 * 1024;

/// The endpoints of the login API, `/api/access/services/<endpoint>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `ztp`: which login options a user has.
    Ztp,
    /// `idp/<method>`: log in with a method.
    Login { method: String },
    /// `idp/<method>/callback`: an identity provider sends the browser back (single sign-on).
    LoginCallback { method: String },
    /// `idp/<method>/metadata?provider=<id>`: what an identity provider's administrator
    /// registers the gateway with (a SAML service provider's metadata).
    LoginMetadata { method: String },
    /// `session/login`: the answer of the redirect login that made the session, once.
    LoginResult,
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
            "session/login" => Self::LoginResult,
            "reset" => Self::ResetRequest,
            "reset/confirm" => Self::ResetConfirm,
            _ => {
                let named = |prefix: &str| {
                    endpoint
                        .strip_prefix(prefix)
                        .filter(|name| !name.is_empty() && !name.contains('/'))
                        .map(str::to_owned)
                };
                let method_before = |suffix: &str| {
                    endpoint
                        .strip_prefix("idp/")
                        .and_then(|rest| rest.strip_suffix(suffix))
                        .filter(|method| !method.is_empty() && !method.contains('/'))
                        .map(str::to_owned)
                };
                if let Some(method) = method_before("/callback") {
                    Self::LoginCallback { method }
                } else if let Some(method) = method_before("/metadata") {
                    Self::LoginMetadata { method }
                } else if let Some(method) = named("idp/") {
                    Self::Login { method }
                } else if let Some(name) = named("applets/") {
                    Self::AppletRedirect { name }
                } else {
                    return None;
                }
            }
        })
    }

    /// Whether the endpoint takes this HTTP method: one each, except a callback, which
    /// identity providers reach by redirect (`GET`, OpenID Connect) or by a form (`POST`,
    /// SAML).
    pub fn takes(&self, method: &http::Method) -> bool {
        match self {
            Self::Session
            | Self::AppletRedirect { .. }
            | Self::Keys
            | Self::LoginMetadata { .. } => method == http::Method::GET,
            Self::LoginCallback { .. } => {
                method == http::Method::GET || method == http::Method::POST
            }
            _ => method == http::Method::POST,
        }
    }

    /// Whether the endpoint reads a form (`application/x-www-form-urlencoded`) rather than
    /// JSON: only a callback, which a cross-site form posts by design and which its flow cookie
    /// guards.
    pub fn reads_form(&self) -> bool {
        matches!(self, Self::LoginCallback { .. })
    }
}

/// Whether a `Content-Type` value declares JSON: `application/json`, in any case, with or
/// without parameters.
pub fn is_json(content_type: Option<&str>) -> bool {
    declares(content_type, "application/json")
}

/// Whether a `Content-Type` value declares an HTML form's encoding
/// (`application/x-www-form-urlencoded`), in any case, with or without parameters.
pub fn is_form(content_type: Option<&str>) -> bool {
    declares(content_type, "application/x-www-form-urlencoded")
}

fn declares(content_type: Option<&str>, media_type: &str) -> bool {
    content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(media_type))
}

/// The value of the first cookie `name` in `Cookie` headers, when it is text (visible ASCII,
/// as `HeaderValue::to_str` reads text).
///
/// Read as bytes, pair by pair, and only the value found read as text: every proxied request
/// looks up its session cookie among whatever else the browser holds for the host.
pub fn cookie<'a>(
    mut cookies: impl Iterator<Item = &'a http::HeaderValue>,
    name: &str,
) -> Option<&'a str> {
    let text = |value: &'a [u8]| {
        every_byte(value, |b| (b == b'\t') | (b' '..=b'~').contains(&b))
            .then(|| std::str::from_utf8(value).ok())
            .flatten()
    };
    let named = |pair: &'a [u8]| {
        let value = pair.trim_ascii().strip_prefix(name.as_bytes())?;
        value.strip_prefix(b"=")
    };
    // Pairs are split where `memchr` finds a `;`, many bytes at a time: a browser's `Cookie`
    // holds every cookie of the host, and a split that tests each byte cost more than the rest
    // of the look-up.
    cookies
        .find_map(|value| {
            let mut rest = value.as_bytes();
            loop {
                let Some(end) = memchr::memchr(b';', rest) else {
                    return named(rest);
                };
                if let Some(found) = named(&rest[..end]) {
                    return Some(found);
                }
                rest = &rest[end + 1..];
            }
        })
        .and_then(text)
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
        assert_eq!(
            Endpoint::parse("idp/o365/callback"),
            Some(Endpoint::LoginCallback {
                method: "o365".to_owned()
            })
        );
        assert_eq!(Endpoint::parse("idp//callback"), None);
        let metadata = Endpoint::parse("idp/saml/metadata").unwrap();
        assert_eq!(
            metadata,
            Endpoint::LoginMetadata {
                method: "saml".to_owned()
            }
        );
        assert!(metadata.takes(&http::Method::GET) && !metadata.takes(&http::Method::POST));
        assert_eq!(Endpoint::parse("idp/a/b/metadata"), None);
        assert_eq!(Endpoint::parse("idp/a/b/callback"), None);
        assert_eq!(
            Endpoint::parse("session/login"),
            Some(Endpoint::LoginResult)
        );
        assert_eq!(Endpoint::parse("other"), None);
        assert!(Endpoint::Keys.takes(&http::Method::GET));
        assert!(!Endpoint::Keys.takes(&http::Method::POST));
        assert!(Endpoint::ResetConfirm.takes(&http::Method::POST));
        let callback = Endpoint::parse("idp/saml/callback").unwrap();
        assert!(callback.takes(&http::Method::GET) && callback.takes(&http::Method::POST));
        assert!(!callback.takes(&http::Method::PUT));
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
        assert!(is_form(Some(
            "application/x-www-form-urlencoded; charset=UTF-8"
        )));
        assert!(!is_form(Some("multipart/form-data")));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let values = [
            http::HeaderValue::from_static("theme=dark; xsigate_session=abc; other=1"),
            http::HeaderValue::from_static("x=y"),
        ];
        assert_eq!(cookie(values.iter(), "xsigate_session"), Some("abc"));
        let none = [http::HeaderValue::from_static("xsigate_sessionx=abc")];
        assert_eq!(cookie(none.iter(), "xsigate_session"), None);
        let spaced = [http::HeaderValue::from_static("xsigate_session =abc; x=1")];
        assert_eq!(cookie(spaced.iter(), "xsigate_session"), None);
        // Another cookie's bytes do not hide the session's; the session's must be text.
        let obs_text =
            [http::HeaderValue::from_bytes(b"a=\xe9t\xe9; xsigate_session=abc").unwrap()];
        assert_eq!(cookie(obs_text.iter(), "xsigate_session"), Some("abc"));
        let not_text = [http::HeaderValue::from_bytes(b"xsigate_session=\xe9; x=1").unwrap()];
        assert_eq!(cookie(not_text.iter(), "xsigate_session"), None);
        let first = [http::HeaderValue::from_static(
            "xsigate_session=one; xsigate_session=two",
        )];
        assert_eq!(cookie(first.iter(), "xsigate_session"), Some("one"));
    }

    /// Whatever the pairs and the space around them, the cookie found is the one a split at
    /// every `;` finds: the first pair named so, trimmed, in the first value that holds one.
    #[test]
    fn the_cookie_found_is_the_first_a_split_at_every_semicolon_finds() {
        let split = |values: &[http::HeaderValue]| {
            values
                .iter()
                .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
                .find_map(|pair| pair.trim_ascii().strip_prefix(b"s")?.strip_prefix(b"="))
                .map(|value| std::str::from_utf8(value).unwrap().to_owned())
        };
        let pieces = [
            "s=1", " s=2 ", "s=", "\ts=3", "t=4", "s =5", "ss=6", "", " ", "x=s=7",
        ];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for value in [format!("{a};{b};{c}"), format!("{a}; {b};{c};")] {
                        let values = [
                            http::HeaderValue::from_str(&value).unwrap(),
                            http::HeaderValue::from_static("s=last"),
                        ];
                        let found = cookie(values.iter(), "s").map(str::to_owned);
                        assert_eq!(found, split(&values), "{value:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2_000);
    }
}
