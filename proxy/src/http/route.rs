//! Which kind of request this is, decided from the path alone, and whether the path means one
//! thing only.

use std::borrow::Cow;

use xsigate_broadworks::XsiApp;

use crate::access::Endpoint;
use crate::text::{any_byte, any_pair};
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
    let rest = rest.as_bytes();
    if any_byte(rest, |b| b == b'%') {
        escaped_path(rest)
    } else {
        plain_path(rest)
    }
}

/// A path without escapes: its segments are their own decoding, valid UTF-8 already. Every
/// proxied request asks, so the bytes are tested in passes that do not stop at each segment: one
/// for what no segment may hold, one for a `/` or `.` that starts a segment, which an empty or
/// dot segment needs; only a path with such a start is then walked segment by segment. (An XSI
/// profile path of 62 bytes: about 600 instructions, against 1,600 segment by segment.)
fn plain_path(rest: &[u8]) -> Result<(), PathError> {
    let forbidden = any_byte(rest, |b| (b != b'/') & forbidden_in_segment(b));
    let starts_segment = |b: u8| (b == b'/') | (b == b'.');
    let suspect = rest.first().is_some_and(|&b| starts_segment(b))
        || any_pair(rest, |a, b| (a == b'/') & starts_segment(b));
    if forbidden || (suspect && has_empty_or_dots_segment(rest)) {
        return Err(PathError::Ambiguous);
    }
    Ok(())
}

/// Whether a segment is `.` or `..`, or empty and not the last: only the last segment may be
/// empty, a trailing `/` being a path of its own.
fn has_empty_or_dots_segment(rest: &[u8]) -> bool {
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        if empty_or_dots(segment) && (!segment.is_empty() || segments.peek().is_some()) {
            return true;
        }
    }
    false
}

/// A path with escapes, segment by segment, each decoded.
fn escaped_path(rest: &[u8]) -> Result<(), PathError> {
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let decoded = escaped_segment(segment)?;
        let dots = !decoded.is_empty() && empty_or_dots(&decoded);
        let forbidden = decoded.iter().copied().any(forbidden_in_segment);
        let empty_inside = segment.is_empty() && segments.peek().is_some();
        if empty_inside || dots || forbidden {
            return Err(PathError::Ambiguous);
        }
    }
    Ok(())
}

/// Empty, `.` or `..`.
fn empty_or_dots(segment: &[u8]) -> bool {
    segment.len() <= 2 && segment.iter().all(|&b| b == b'.')
}

/// What a segment may not hold, raw or decoded: a separator, an escape of its own, a path
/// parameter or a control character.
fn forbidden_in_segment(byte: u8) -> bool {
    matches!(byte, b'/' | b'\\' | b'%' | b';') || byte.is_ascii_control()
}

/// A segment with escapes, decoded; borrowed when it has none. Refused when an escape is not
/// two hex digits or what they decode to is not UTF-8.
fn escaped_segment(segment: &[u8]) -> Result<Cow<'_, [u8]>, PathError> {
    let escapes_valid = segment.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || segment
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    let decoded = Cow::<[u8]>::from(percent_encoding::percent_decode(segment));
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

    /// The check as first written, segment by segment: the reference the one-pass check must
    /// agree with.
    fn check_path_by_segments(path: &str) -> Result<(), PathError> {
        if path.len() > PATH_LIMIT {
            return Err(PathError::TooLong);
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Err(PathError::Ambiguous);
        };
        let mut segments = rest.split('/').peekable();
        while let Some(segment) = segments.next() {
            let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
            let escapes_valid = segment.match_indices('%').all(|(i, _)| {
                segment
                    .as_bytes()
                    .get(i + 1..i + 3)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            });
            if !escapes_valid || std::str::from_utf8(&decoded).is_err() {
                return Err(PathError::Malformed);
            }
            let dots = matches!(&decoded[..], b"." | b"..");
            let forbidden = decoded
                .iter()
                .any(|b| matches!(b, b'/' | b'\\' | b'%' | b';') || b.is_ascii_control());
            let empty_inside = segment.is_empty() && segments.peek().is_some();
            if empty_inside || dots || forbidden {
                return Err(PathError::Ambiguous);
            }
        }
        Ok(())
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_segment_by_segment_one() {
        const PIECES: [&str; 16] = [
            "/", "/", ".", "a", "%", "2", "e", "F", "C", "3", "5c", "\\", ";", "\u{1}", "é", "%2",
        ];
        // A fixed sequence (xorshift), so that a failure is the same path on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut passed, mut refused) = (0, 0);
        for _ in 0..100_000 {
            let mut path = String::new();
            for _ in 0..next() % 12 {
                path.push_str(PIECES[(next() % 16) as usize]);
            }
            let expected = check_path_by_segments(&path);
            assert_eq!(check_path(&path), expected, "{path:?}");
            if expected.is_ok() {
                passed += 1;
            } else {
                refused += 1;
            }
        }
        // Both answers come up often enough for the comparison to mean something.
        assert!(
            passed > 1_000 && refused > 1_000,
            "{passed} passed, {refused} refused"
        );
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
