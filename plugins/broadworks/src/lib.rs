//! What the host and the plugins share about BroadWorks: the XSI paths, the shape of user ids,
//! the checks that prove credentials at each login level, directory searches for reverse
//! lookups, and the typed states of the `xsi.event` bus topic ([`bus`]).
//!
//! Every request goes through [`Host::xsi`], so the host picks the XSP, fails over and
//! attaches the credentials; nothing here opens a connection of its own.

pub mod bus;
pub mod directory;
mod xml;

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use xsigate_plugin_sdk::{Authentication, Error, Grant, Host, LoginLevel, XsiRequest, XsiResponse};

pub use xml::{Node, XmlError, element_text, records, records_of, tree};

// Each XSI context path is written once, here; the constants below are built from them.
macro_rules! actions_context {
    () => {
        "/com.broadsoft.xsi-actions"
    };
}
macro_rules! events_context {
    () => {
        "/com.broadsoft.xsi-events"
    };
}
macro_rules! async_context {
    () => {
        "/com.broadsoft.async"
    };
}

/// The XSI-Actions web application on an XSP.
pub const ACTIONS_CONTEXT: &str = actions_context!();
/// The XSI-Events web application (channel commands, subscriptions).
pub const EVENTS_CONTEXT: &str = events_context!();
/// The asynchronous servlet context that carries long-lived XSI-Events channels.
pub const ASYNC_CONTEXT: &str = async_context!();
/// The XSI-Actions root.
pub const ACTIONS: &str = concat!(actions_context!(), "/v2.0");
/// The XSI-Events root.
pub const EVENTS: &str = concat!(events_context!(), "/v2.0");
/// Where an XSI-Events channel is opened (`POST`, answered with a stream).
pub const CHANNEL_OPEN: &str = concat!(async_context!(), events_context!(), "/v2.0/channel");

/// The segments of a path, each percent-decoded once (bytes that are not UTF-8 replaced), as an
/// XSP reads them. A segment with nothing to decode, as most are, is borrowed from `path`.
///
/// Split a byte at a time: `split('/')` sets up a `memchr` for each segment, and a `char`
/// predicate decodes each character, where XSI segments are a few ASCII bytes long and a
/// request's hooks split its path on every request.
pub fn decoded_segments(path: &str) -> impl Iterator<Item = Cow<'_, str>> + '_ {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let current = rest?;
        // A `/` is a byte of its own in UTF-8: the text either side of it is text.
        let segment = match current.bytes().position(|b| b == b'/') {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                &current[..at]
            }
            None => {
                rest = None;
                current
            }
        };
        Some(if segment.bytes().any(|b| b == b'%') {
            // Decoding checks the bytes as UTF-8 again, which a segment of a `str` is already.
            percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
        } else {
            Cow::Borrowed(segment)
        })
    })
}

/// The user whose portal password a request changes (`PUT …/user/<userId>/profile/Password/
/// Portal`, segments in any case as the XSP reads them), if it is one.
pub fn password_change_user(method: &str, path: &str) -> Option<String> {
    if method != "PUT" {
        return None;
    }
    let decoded: Vec<Cow<'_, str>> = decoded_segments(path).collect();
    let [.., user_root, user, profile, password, portal] = decoded.as_slice() else {
        return None;
    };
    let named = |segment: &str, name: &str| segment.eq_ignore_ascii_case(name);
    (named(user_root, "user")
        && !user.is_empty()
        && named(profile, "profile")
        && named(password, "password")
        && named(portal, "portal"))
    .then(|| user.clone().into_owned())
}

/// The XSI application a path belongs to, decided by its context path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XsiApp {
    /// `/com.broadsoft.xsi-actions/…`
    Actions,
    /// `/com.broadsoft.xsi-events/…`
    Events,
    /// `/com.broadsoft.async/…`: the streaming channel.
    Async,
}

impl XsiApp {
    /// The application `path` is under, if any (`/com.broadsoft.xsi-actionsX` is none).
    pub fn of_path(path: &str) -> Option<Self> {
        let under = |context: &str| {
            path.strip_prefix(context)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        if under(ACTIONS_CONTEXT) {
            Some(Self::Actions)
        } else if under(EVENTS_CONTEXT) {
            Some(Self::Events)
        } else if under(ASYNC_CONTEXT) {
            Some(Self::Async)
        } else {
            None
        }
    }
}

/// Characters a path segment or query value keeps; everything else is percent-encoded. `+`
/// is encoded too: in a query it would read as a space.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'@')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');
/// BroadWorks user ids are at most this long.
const USER_ID_MAX: usize = 161;

/// Whether `text` has the shape of a BroadWorks userId (`user@domain`).
pub fn is_user_id(text: &str) -> bool {
    let Some((user, domain)) = text.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && !domain.is_empty()
        && text.len() <= USER_ID_MAX
        && !text.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/')
}

/// `text` percent-encoded for a path segment or a query value.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, KEEP).to_string()
}

/// `…/user/<userId>/<rest>` under XSI-Actions.
pub fn user_path(user_id: &str, rest: &str) -> String {
    format!("{ACTIONS}/user/{}/{rest}", encode(user_id))
}

/// The one rejection every failed check gives: which part was wrong (the user, the password,
/// the scope) is not the client's to know. `reason` goes to the log only.
pub fn rejected(reason: &str) -> Authentication {
    Authentication::Rejected {
        reason: reason.to_owned(),
    }
}

/// The `name=value` part of the first `Set-Cookie` for `JSESSIONID`.
pub fn session_cookie(headers: &[(String, String)]) -> Option<String> {
    session_cookie_of(
        headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, value)| value.as_str()),
    )
}

/// The `name=value` part of the first of these `Set-Cookie` values that sets `JSESSIONID`.
pub fn session_cookie_of<'a>(set_cookies: impl IntoIterator<Item = &'a str>) -> Option<String> {
    set_cookies
        .into_iter()
        .filter_map(|value| value.split(';').next())
        .map(str::trim)
        .find(|pair| pair.starts_with("JSESSIONID="))
        .map(str::to_owned)
}

/// The grant of a successful check: the XSP that answered and its session cookie for `context`.
fn grant(level: LoginLevel, response: &XsiResponse, context: &str) -> Grant {
    let mut grant = Grant {
        level,
        xsp: Some(response.xsp.clone()),
        ..Grant::default()
    };
    if let Some(cookie) = session_cookie(&response.headers) {
        grant.xsp_cookies.insert(context.to_owned(), cookie);
    }
    grant
}

/// Checks a user's own credentials by reading their profile (`GET …/user/<id>/profile`), the
/// first thing a dialer does anyway. The answer names the canonical userId.
pub async fn check_user(
    host: Host,
    provider: &str,
    user_id: &str,
    password: &str,
) -> Result<Authentication, Error> {
    if !is_user_id(user_id) || password.is_empty() {
        return Ok(rejected("not a user id, or no password"));
    }
    let request = XsiRequest::get(provider, &user_path(user_id, "profile")).user(user_id, password);
    let response = host.xsi(request).await?;
    match response.status {
        200 => {
            let user_id = element_text(&response.body, "userId")
                .ok_or_else(|| Error::msg("the XSP's profile has no userId"))?;
            Ok(Authentication::Authenticated {
                grant: grant(LoginLevel::User, &response, "xsi-actions"),
                user_id,
            })
        }
        401 | 403 | 404 => Ok(rejected("the XSP refused the user's credentials")),
        status => Err(Error::msg(format!(
            "the XSP answered a user login with {status}"
        ))),
    }
}

/// Where an administrator claims to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminScope {
    Group {
        service_provider: String,
        group: String,
    },
    ServiceProvider(String),
    System,
}

impl AdminScope {
    pub fn level(&self) -> LoginLevel {
        match self {
            Self::Group { .. } => LoginLevel::Group,
            Self::ServiceProvider(_) => LoginLevel::ServiceProvider,
            Self::System => LoginLevel::System,
        }
    }

    /// The XSI-Events subscription query that names this scope as its target. BroadWorks
    /// answers it (possibly with an empty list) only to a caller whose scope covers the target,
    /// and with 403 otherwise [SPEC §4.6.2.5]: a read without side effects that proves both
    /// the credentials and the scope.
    fn probe(&self) -> String {
        let query = match self {
            Self::Group {
                service_provider,
                group,
            } => format!(
                "targetEntityType=Group&targetGrpParentId={}&targetId={}",
                encode(service_provider),
                encode(group)
            ),
            Self::ServiceProvider(id) => {
                format!("targetEntityType=ServiceProvider&targetId={}", encode(id))
            }
            Self::System => "targetEntityType=System".to_owned(),
        };
        format!("{EVENTS}/subscription?{query}")
    }
}

/// Checks an administrator's credentials and that their scope covers `scope`.
pub async fn check_admin(
    host: Host,
    provider: &str,
    admin_id: &str,
    password: &str,
    scope: &AdminScope,
) -> Result<Authentication, Error> {
    if !is_user_id(admin_id) || password.is_empty() {
        return Ok(rejected("not an administrator id, or no password"));
    }
    let request = XsiRequest::get(provider, &scope.probe()).user(admin_id, password);
    let response = host.xsi(request).await?;
    match response.status {
        200 => {
            let mut grant = grant(scope.level(), &response, "xsi-events");
            match scope {
                AdminScope::Group {
                    service_provider,
                    group,
                } => {
                    grant.service_provider = Some(service_provider.clone());
                    grant.group = Some(group.clone());
                }
                AdminScope::ServiceProvider(id) => grant.service_provider = Some(id.clone()),
                AdminScope::System => {}
            }
            Ok(Authentication::Authenticated {
                user_id: admin_id.to_owned(),
                grant,
            })
        }
        401 => Ok(rejected("the XSP refused the administrator's credentials")),
        403 => Ok(rejected(
            "the administrator's scope does not cover the claimed one",
        )),
        400 | 404 => Ok(rejected("the XSP does not know the claimed scope")),
        status => Err(Error::msg(format!(
            "the XSP answered an administrator login with {status}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The segments are `split('/')`'s, each decoded: empty ones, escapes, non-ASCII text and
    /// escapes that are not UTF-8 included.
    #[test]
    fn a_paths_segments_are_its_splits_decoded() {
        let paths = [
            "",
            "/",
            "//",
            "a",
            "/a/b/",
            "a//b",
            "/user/alice%40example.com/profile",
            "/%2F/%zz/%e9/\u{e9}t\u{e9}/\u{1f4de}",
            "%41%42/%",
        ];
        for path in paths {
            let decoded: Vec<String> = decoded_segments(path).map(Cow::into_owned).collect();
            let split: Vec<String> = path
                .split('/')
                .map(|segment| {
                    percent_encoding::percent_decode_str(segment)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .collect();
            assert_eq!(decoded, split, "{path:?}");
        }
        let borrowed = decoded_segments("/a/b%20c").map(|s| matches!(s, Cow::Borrowed(_)));
        assert_eq!(borrowed.collect::<Vec<_>>(), [true, true, false]);
    }

    #[test]
    fn paths_are_built_from_the_contexts_and_classified_by_them() {
        assert_eq!(ACTIONS, "/com.broadsoft.xsi-actions/v2.0");
        assert_eq!(
            CHANNEL_OPEN,
            "/com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel"
        );
        assert_eq!(
            XsiApp::of_path(&format!("{ACTIONS}/versions")),
            Some(XsiApp::Actions)
        );
        assert_eq!(
            XsiApp::of_path(&format!("{EVENTS}/channel")),
            Some(XsiApp::Events)
        );
        assert_eq!(XsiApp::of_path(CHANNEL_OPEN), Some(XsiApp::Async));
        assert_eq!(XsiApp::of_path("/com.broadsoft.xsi-actionsX/v2.0"), None);
        assert_eq!(XsiApp::of_path("/com.broadsoft.xsi-actions"), None);
        assert_eq!(XsiApp::of_path("/apps/x"), None);
    }

    #[test]
    fn user_ids_have_a_user_a_domain_and_nothing_that_breaks_a_path() {
        assert!(is_user_id("alice@acme.example"));
        assert!(is_user_id("alice+cti@acme.example"));
        for bad in [
            "alice",
            "@acme.example",
            "alice@",
            "al ice@acme.example",
            "a/b@acme.example",
            "2025550101",
        ] {
            assert!(!is_user_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_session_cookie_is_taken_without_its_attributes() {
        let headers = vec![
            ("content-type".to_owned(), "text/xml".to_owned()),
            (
                "set-cookie".to_owned(),
                "JSESSIONID=abc123; Path=/com.broadsoft.xsi-actions; HttpOnly".to_owned(),
            ),
        ];
        assert_eq!(
            session_cookie(&headers).as_deref(),
            Some("JSESSIONID=abc123")
        );
        assert_eq!(session_cookie(&[]), None);
    }

    #[test]
    fn scope_probes_name_their_target_and_encode_it() {
        let group = AdminScope::Group {
            service_provider: "acme sp".to_owned(),
            group: "sales&co".to_owned(),
        };
        assert_eq!(
            group.probe(),
            "/com.broadsoft.xsi-events/v2.0/subscription?targetEntityType=Group&targetGrpParentId=acme%20sp&targetId=sales%26co"
        );
        assert_eq!(
            AdminScope::System.probe(),
            "/com.broadsoft.xsi-events/v2.0/subscription?targetEntityType=System"
        );
        assert_eq!(group.level(), LoginLevel::Group);
    }

    #[test]
    fn a_portal_password_change_names_its_user_in_any_spelling() {
        let put = "PUT";
        let path = |s: &str| format!("/com.broadsoft.xsi-actions/v2.0/{s}");
        assert_eq!(
            password_change_user(
                put,
                &path("user/alice@acme.example/profile/Password/Portal")
            )
            .as_deref(),
            Some("alice@acme.example")
        );
        assert_eq!(
            password_change_user(
                put,
                &path("USER/alice%40acme.example/PROFILE/password/portal")
            )
            .as_deref(),
            Some("alice@acme.example")
        );
        for other in [
            "user/alice@acme.example/profile/Password",
            "user/alice@acme.example/profile/Password/Portal/x",
            "user/alice@acme.example/services/Password/Portal",
            "user/alice@acme.example/x/profile/Password/Portal",
        ] {
            assert_eq!(password_change_user(put, &path(other)), None, "{other}");
        }
        assert_eq!(
            password_change_user(
                "GET",
                &path("user/alice@acme.example/profile/Password/Portal")
            ),
            None
        );
    }
}
