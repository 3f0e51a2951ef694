//! Which kind of request this is, decided from the path alone, and whether the path means one
//! thing only.

use std::borrow::Cow;

use xsigate_broadworks::XsiApp;

use crate::access::Endpoint;
use crate::wire::error::ErrorCode;
use crate::wire::route::RouteClass;

const GATEWAY: &str = "/api/dialer/services/gateway/";
const ACCESS: &str = "/api/access/services/";
const APPS: &str = "/apps/";
/// Longer paths are refused: no XSI resource comes near it.
const PATH_LIMIT: usize = 2048;

/// A request's destination as far as the path tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Xsp(RouteClass),
    /// `/api/dialer/services/gateway/<service>/<rest>`; `rest` keeps its leading `/` (or is empty).
    Gateway {
        service: &'a str,
        rest: &'a str,
    },
    /// `/apps/<name>/<rest>`; `rest` keeps its leading `/` (or is empty).
    Applet {
        name: &'a str,
        rest: &'a str,
    },
    /// `/api/access/services/<endpoint>`.
    Access(Endpoint),
    Healthz,
    Readyz,
    Unmatched,
}

impl Route<'_> {
    pub fn class(&self) -> RouteClass {
        match self {
            Self::Xsp(class) => *class,
            Self::Gateway { .. } => RouteClass::Gateway,
            Self::Applet { .. } => RouteClass::Applet,
            Self::Access(_) => RouteClass::Access,
            Self::Healthz | Self::Readyz => RouteClass::Local,
            Self::Unmatched => RouteClass::Unmatched,
        }
    }
}

pub fn classify(path: &str) -> Route<'_> {
    if let Some(app) = XsiApp::of_path(path) {
        Route::Xsp(RouteClass::of_xsi_app(app))
    } else if let Some(tail) = path.strip_prefix(GATEWAY) {
        let (service, rest) = tail.split_at(tail.find('/').unwrap_or(tail.len()));
        if service.is_empty() {
            Route::Unmatched
        } else {
            Route::Gateway { service, rest }
        }
    } else if let Some(tail) = path.strip_prefix(APPS) {
        let (name, rest) = tail.split_at(tail.find('/').unwrap_or(tail.len()));
        if name.is_empty() {
            Route::Unmatched
        } else {
            Route::Applet { name, rest }
        }
    } else if let Some(endpoint) = path.strip_prefix(ACCESS) {
        Endpoint::parse(endpoint).map_or(Route::Unmatched, Route::Access)
    } else {
        match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            _ => Route::Unmatched,
        }
    }
}

/// As whom a routed request goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// On its login session, whose provider it goes to.
    Session,
    /// As a plain XSI client sending its own credentials, to the provider its user ids name.
    Transparent,
}

/// Whether a request of `class` may be routed, and as whom. `session` is `None` without a
/// session cookie, else whether the session's provider has a plugin acting for sessions.
///
/// A session's XSI requests carry credentials only such a plugin puts on them; gateway services
/// and applets learn who the user is from xsigate, so they need a session; plain XSI clients
/// send their own credentials, which the XSP checks.
pub fn admit(class: RouteClass, session: Option<bool>) -> Result<Admission, ErrorCode> {
    match session {
        Some(false) if class.is_xsp() => Err(ErrorCode::SessionsNotServed),
        Some(_) => Ok(Admission::Session),
        None if class.is_xsp() => Ok(Admission::Transparent),
        None => Err(ErrorCode::NotLoggedIn),
    }
}

/// Why a path is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    TooLong,
    /// An escape that is not `%` and two hex digits, or bytes that are not UTF-8 once decoded.
    Malformed,
    /// A path an upstream could read otherwise than xsigate does: `.` or `..` segments, empty
    /// segments, encoded `/`, `\` or `%`, path parameters (`;`), control characters.
    Ambiguous,
}

/// Checks that a proxied path means one thing only. Upstreams (Tomcat behind the XSPs, gateway
/// services, applets) decode and normalise paths in their own ways; refusing everything that
/// normalisation could change leaves nothing to disagree about, so the path xsigate authorises
/// is the path the upstream serves, byte for byte.
pub fn check_path(path: &str) -> Result<(), PathError> {
    if path.len() > PATH_LIMIT {
        return Err(PathError::TooLong);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::Ambiguous);
    };
    // Most paths have no escapes: their segments are their own decoding, valid UTF-8 already.
    let escaped = rest.contains('%');
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let decoded = if escaped {
            escaped_segment(segment)?
        } else {
            Cow::Borrowed(segment.as_bytes())
        };
        let dots = matches!(&*decoded, b"." | b"..");
        let forbidden = decoded
            .iter()
            .any(|b| matches!(b, b'/' | b'\\' | b'%' | b';') || b.is_ascii_control());
        // Only the last segment may be empty: a trailing `/` is a path of its own.
        let empty_inside = segment.is_empty() && segments.peek().is_some();
        if empty_inside || dots || forbidden {
            return Err(PathError::Ambiguous);
        }
    }
    Ok(())
}

/// A segment with escapes, decoded; borrowed when it has none. Refused when an escape is not
/// two hex digits or what they decode to is not UTF-8.
fn escaped_segment(segment: &str) -> Result<Cow<'_, [u8]>, PathError> {
    let escapes_valid = segment.match_indices('%').all(|(i, _)| {
        segment
            .as_bytes()
            .get(i + 1..i + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    let decoded = Cow::<[u8]>::from(percent_encoding::percent_decode_str(segment));
    if !escapes_valid || std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::Malformed);
    }
    Ok(decoded)
}

/// The user id named in an XSI path (`…/v2.0/user/<userId>/…`), percent-decoded.
/// Segments are compared as the XSP compares them: percent-decoded, `user` in any case, so that
/// `/USER/…` or `/%75ser/…` name the same user as `/user/…`.
/// Borrowed from `path` unless it had to be decoded: every transparent request asks.
pub fn path_user_id(path: &str) -> Option<Cow<'_, str>> {
    // A segment without an escape is itself, already UTF-8: no decoder's pass over it.
    fn decoded(segment: &str) -> Option<Cow<'_, str>> {
        if segment.contains('%') {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()
        } else {
            Some(Cow::Borrowed(segment))
        }
    }
    let mut segments = path.split('/');
    segments
        .by_ref()
        .find(|s| decoded(s).is_some_and(|s| s.eq_ignore_ascii_case("user")))?;
    decoded(segments.next().filter(|s| !s.is_empty())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_prefix() {
        assert_eq!(
            classify("/com.broadsoft.xsi-actions/v2.0/user/a@b/profile"),
            Route::Xsp(RouteClass::XsiActions)
        );
        assert_eq!(
            classify("/com.broadsoft.xsi-events/v2.0/channel/x/heartbeat"),
            Route::Xsp(RouteClass::XsiEvents)
        );
        assert_eq!(
            classify("/com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel"),
            Route::Xsp(RouteClass::XsiAsync)
        );
        assert_eq!(
            classify("/api/dialer/services/gateway/history/calls?x=1"),
            Route::Gateway {
                service: "history",
                rest: "/calls?x=1"
            }
        );
        assert_eq!(
            classify("/api/dialer/services/gateway/history"),
            Route::Gateway {
                service: "history",
                rest: ""
            }
        );
        assert_eq!(classify("/api/dialer/services/gateway/"), Route::Unmatched);
        assert_eq!(
            classify("/com.broadsoft.xsi-actionsX/v2.0"),
            Route::Unmatched
        );
        assert_eq!(
            classify("/api/access/services/ztp"),
            Route::Access(Endpoint::Ztp)
        );
        assert_eq!(
            classify("/api/access/services/idp/broadsoft"),
            Route::Access(Endpoint::Login {
                method: "broadsoft".to_owned()
            })
        );
        assert_eq!(classify("/api/access/services/idp/"), Route::Unmatched);
        assert_eq!(classify("/api/access/services/idp/a/b"), Route::Unmatched);
        assert_eq!(classify("/api/access/services/other"), Route::Unmatched);
        assert_eq!(classify("/healthz"), Route::Healthz);
        assert_eq!(classify("/"), Route::Unmatched);
    }

    #[test]
    fn sessions_reach_xsps_only_through_a_plugin_and_the_rest_needs_one() {
        let xsi = [
            RouteClass::XsiActions,
            RouteClass::XsiEvents,
            RouteClass::XsiAsync,
        ];
        for class in xsi {
            assert_eq!(admit(class, Some(true)), Ok(Admission::Session));
            assert_eq!(admit(class, Some(false)), Err(ErrorCode::SessionsNotServed));
            assert_eq!(admit(class, None), Ok(Admission::Transparent));
        }
        for class in [RouteClass::Gateway, RouteClass::Applet] {
            assert_eq!(admit(class, Some(false)), Ok(Admission::Session));
            assert_eq!(admit(class, None), Err(ErrorCode::NotLoggedIn));
        }
    }

    #[test]
    fn only_paths_with_one_meaning_pass() {
        for fine in [
            "/",
            "/com.broadsoft.xsi-actions/v2.0/user/alice%40acme.example/profile",
            "/com.broadsoft.xsi-actions/v2.0/user/+12025550101@acme.example/services/",
            "/apps/crm/",
            "/apps/crm/a.b/c..d/caf%C3%A9",
        ] {
            assert_eq!(check_path(fine), Ok(()), "{fine}");
        }
        for ambiguous in [
            "/a/../b",
            "/a/./b",
            "/a/%2e%2E/b",
            "/a//b",
            "/a/%2F/b",
            "/a/b%5Cc",
            "/a/b\\c",
            "/a/b;jsessionid=1",
            "/a/%3Bx",
            "/a/%2541",
            "/a/%00",
            "/a/%0d%0a",
            "a/b",
        ] {
            assert_eq!(
                check_path(ambiguous),
                Err(PathError::Ambiguous),
                "{ambiguous}"
            );
        }
        for malformed in ["/a/%zz", "/a/%4", "/a/%C3%28"] {
            assert_eq!(
                check_path(malformed),
                Err(PathError::Malformed),
                "{malformed}"
            );
        }
        assert_eq!(check_path(&"/a".repeat(2000)), Err(PathError::TooLong));
    }

    #[test]
    fn finds_and_decodes_the_path_user() {
        assert_eq!(
            path_user_id("/com.broadsoft.xsi-actions/v2.0/user/alice%40acme.example/profile")
                .as_deref(),
            Some("alice@acme.example")
        );
        assert_eq!(
            path_user_id("/com.broadsoft.xsi-events/v2.0/user/bob@x.example").as_deref(),
            Some("bob@x.example")
        );
        assert_eq!(
            path_user_id("/com.broadsoft.xsi-actions/v2.0/versions"),
            None
        );
        assert_eq!(path_user_id("/com.broadsoft.xsi-actions/v2.0/user/"), None);
        assert!(matches!(
            path_user_id("/com.broadsoft.xsi-actions/v2.0/user/bob@x.example/profile"),
            Some(Cow::Borrowed("bob@x.example"))
        ));
        assert_eq!(
            path_user_id("/com.broadsoft.xsi-actions/v2.0/user/bob%ff/profile"),
            None
        );
        for spelling in ["USER", "User", "%75ser", "%55%53%45%52"] {
            assert_eq!(
                path_user_id(&format!(
                    "/com.broadsoft.xsi-actions/v2.0/{spelling}/bob@beta.example/profile"
                ))
                .as_deref(),
                Some("bob@beta.example"),
                "{spelling}"
            );
        }
    }
}
