//! Which XSI resources a login session may reach. The host has already refused every path
//! that could be read two ways (dot segments, encoded separators, ...), so the segments seen
//! here are the segments the XSP serves; each is percent-decoded once and compared the way
//! BroadWorks compares it: resource names and user ids in any case.

use std::borrow::Cow;

use xsigate_broadworks::{ACTIONS_CONTEXT, ASYNC_CONTEXT, EVENTS_CONTEXT, decoded_segments};
use xsigate_plugin_sdk::{LoginLevel, SessionInfo};

const VERSION: &str = "v2.0";

/// Why a request was refused: the `reason` label of the refusal metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another user's resources.
    OtherUser,
    /// A service provider, enterprise, group or system resource outside the session's scope.
    OutOfScope,
    /// Not an XSI resource a dialer uses (unknown version, unknown root).
    UnknownResource,
    /// A single-sign-on session setting the BroadWorks password: it never proved it knows the
    /// current one, and the master's credentials would set it without asking.
    PasswordChange,
}

impl Refusal {
    pub const ALL: [Self; 4] = [
        Self::OtherUser,
        Self::OutOfScope,
        Self::UnknownResource,
        Self::PasswordChange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OtherUser => "other_user",
            Self::OutOfScope => "out_of_scope",
            Self::UnknownResource => "unknown_resource",
            Self::PasswordChange => "password_change",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    Actions,
    Events,
    /// The streaming channel request, the only thing under the async prefix.
    AsyncEvents,
}

/// What follows `context/` in `path`.
fn below<'a>(path: &'a str, context: &str) -> Option<&'a str> {
    path.strip_prefix(context)?.strip_prefix('/')
}

/// Decides whether `session` may send a request for `path`.
pub fn authorize(path: &str, session: &SessionInfo<'_>) -> Result<(), Refusal> {
    let (app, rest) = if let Some(rest) = below(path, ACTIONS_CONTEXT) {
        (App::Actions, rest)
    } else if let Some(rest) = below(path, EVENTS_CONTEXT) {
        (App::Events, rest)
    } else if let Some(rest) = path
        .strip_prefix(ASYNC_CONTEXT)
        .and_then(|r| below(r, EVENTS_CONTEXT))
    {
        (App::AsyncEvents, rest)
    } else {
        return Err(Refusal::UnknownResource);
    };
    // Read a segment at a time, as far as the decision needs: most requests are decided by
    // the first three, and the rest of the path is never split.
    let mut segments = decoded_segments(rest.trim_end_matches('/'));
    let (Some(version), Some(root)) = (segments.next(), segments.next()) else {
        return Err(Refusal::UnknownResource);
    };
    if version != VERSION {
        return Err(Refusal::UnknownResource);
    }
    let first_below = segments.next();
    let root = if root.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(root.to_ascii_lowercase())
    } else {
        Cow::Borrowed(root.as_ref())
    };
    match (app, root.as_ref()) {
        (App::AsyncEvents, "channel") if first_below.is_none() => Ok(()),
        (App::AsyncEvents, _) => Err(Refusal::UnknownResource),
        (_, "versions") if first_below.is_none() => Ok(()),
        (_, "user") => {
            let user = first_below.ok_or(Refusal::UnknownResource)?;
            if session.level != LoginLevel::User || user.eq_ignore_ascii_case(session.user_id) {
                // An administrator's own credentials reach only users in its scope: the XSP
                // enforces that with them (403), and xsigate never lends it other credentials.
                Ok(())
            } else {
                Err(Refusal::OtherUser)
            }
        }
        // Channels and subscriptions answer only their owner, which the XSP knows from the
        // credentials: no other user's can be reached with these.
        (App::Events, "channel" | "channelset" | "subscription") => Ok(()),
        (_, "serviceprovider" | "enterprise") => {
            let below: Vec<Cow<'_, str>> = first_below.into_iter().chain(segments).collect();
            in_scope(session, &below)
        }
        (_, "group" | "system") if session.level == LoginLevel::System => Ok(()),
        (_, "group" | "system") => Err(Refusal::OutOfScope),
        _ => Err(Refusal::UnknownResource),
    }
}

/// `serviceprovider/<sp>[/group/<group>]…` within an administrator's scope.
fn in_scope(session: &SessionInfo<'_>, below: &[Cow<'_, str>]) -> Result<(), Refusal> {
    let same = |claimed: Option<&Cow<'_, str>>, held: Option<&str>| matches!((claimed, held), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b));
    let service_provider = below.first();
    let group = match below.get(1) {
        Some(segment) if segment.eq_ignore_ascii_case("group") => Some(below.get(2)),
        _ => None,
    };
    let allowed = match session.level {
        LoginLevel::System => true,
        LoginLevel::ServiceProvider => same(service_provider, session.service_provider),
        LoginLevel::Group => {
            same(service_provider, session.service_provider)
                && group.is_some_and(|g| same(g, session.group))
        }
        LoginLevel::User => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::OutOfScope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(user_id: &str) -> SessionInfo<'_> {
        SessionInfo {
            user_id,
            level: LoginLevel::User,
            service_provider: None,
            group: None,
            xsp: None,
        }
    }

    fn admin(
        level: LoginLevel,
        sp: &'static str,
        group: Option<&'static str>,
    ) -> SessionInfo<'static> {
        SessionInfo {
            user_id: "admin@acme.example",
            level,
            service_provider: Some(sp),
            group,
            xsp: None,
        }
    }

    #[test]
    fn a_user_reaches_its_own_resources_and_the_shared_events_resources() {
        let alice = user("alice@acme.example");
        for path in [
            "/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/profile",
            "/com.broadsoft.xsi-actions/v2.0/user/ALICE%40Acme.Example/services/DoNotDisturb",
            "/com.broadsoft.xsi-actions/v2.0/USER/alice@acme.example",
            "/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/directories/Enterprise",
            "/com.broadsoft.xsi-actions/v2.0/versions",
            "/com.broadsoft.xsi-events/v2.0/user/alice@acme.example",
            "/com.broadsoft.xsi-events/v2.0/channel/abc/heartbeat",
            "/com.broadsoft.xsi-events/v2.0/channel/eventresponse",
            "/com.broadsoft.xsi-events/v2.0/channelset/set-1",
            "/com.broadsoft.xsi-events/v2.0/subscription/s-1",
            "/com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel",
        ] {
            assert_eq!(authorize(path, &alice), Ok(()), "{path}");
        }
    }

    #[test]
    fn a_user_is_refused_everything_else() {
        let alice = user("alice@acme.example");
        for (path, refusal) in [
            (
                "/com.broadsoft.xsi-actions/v2.0/user/bob@acme.example/profile",
                Refusal::OtherUser,
            ),
            (
                "/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example.evil/profile",
                Refusal::OtherUser,
            ),
            (
                "/com.broadsoft.xsi-actions/v2.0/user/alice/profile",
                Refusal::OtherUser,
            ),
            (
                "/com.broadsoft.xsi-events/v2.0/user/bob@acme.example",
                Refusal::OtherUser,
            ),
            (
                "/com.broadsoft.xsi-events/v2.0/serviceprovider/acme",
                Refusal::OutOfScope,
            ),
            (
                "/com.broadsoft.xsi-events/v2.0/enterprise/acme/group/sales",
                Refusal::OutOfScope,
            ),
            ("/com.broadsoft.xsi-events/v2.0/system", Refusal::OutOfScope),
            (
                "/com.broadsoft.xsi-actions/v2.0/group/sales",
                Refusal::OutOfScope,
            ),
            (
                "/com.broadsoft.xsi-actions/v1.0/user/alice@acme.example",
                Refusal::UnknownResource,
            ),
            (
                "/com.broadsoft.xsi-actions/v2.0/user",
                Refusal::UnknownResource,
            ),
            (
                "/com.broadsoft.xsi-actions/v2.0/channel",
                Refusal::UnknownResource,
            ),
            (
                "/com.broadsoft.async/com.broadsoft.xsi-events/v2.0/user/alice@acme.example",
                Refusal::UnknownResource,
            ),
            (
                "/com.broadsoft.xsi-actions/v2.0/versions/x",
                Refusal::UnknownResource,
            ),
            (
                "/com.broadsoft.other/v2.0/user/alice@acme.example",
                Refusal::UnknownResource,
            ),
        ] {
            assert_eq!(authorize(path, &alice), Err(refusal), "{path}");
        }
    }

    #[test]
    fn administrators_reach_their_scope_only() {
        let sp = admin(LoginLevel::ServiceProvider, "acme", None);
        let group = admin(LoginLevel::Group, "acme", Some("sales"));
        let system = SessionInfo {
            level: LoginLevel::System,
            service_provider: None,
            ..sp
        };
        let events = "/com.broadsoft.xsi-events/v2.0";
        for (path, sp_ok, group_ok, system_ok) in [
            ("/serviceprovider/acme", true, false, true),
            ("/enterprise/ACME/group/sales", true, true, true),
            ("/serviceprovider/acme/group/support", true, false, true),
            ("/serviceprovider/other", false, false, true),
            ("/system", false, false, true),
            ("/group/sales", false, false, true),
            ("/user/bob@acme.example", true, true, true),
        ] {
            let path = format!("{events}{path}");
            assert_eq!(authorize(&path, &sp).is_ok(), sp_ok, "{path} (sp)");
            assert_eq!(authorize(&path, &group).is_ok(), group_ok, "{path} (group)");
            assert_eq!(
                authorize(&path, &system).is_ok(),
                system_ok,
                "{path} (system)"
            );
        }
    }
}
