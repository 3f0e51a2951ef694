//! One simulated XSP: authentication exactly as BroadWorks does it, then XSI-Actions.
//!
//! - Basic credentials are required on every request, even with a session cookie.
//! - A successful login gets a `JSESSIONID` scoped to the web-app context path; a later request
//!   carrying that cookie on the same XSP is not re-authenticated.
//! - 401 carries `WWW-Authenticate: Basic realm="XtendedServicesInterface"`.
//! - A user reaches only its own `/user/<id>/…`; an administrator only users in its scope (403).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Serialize;

use crate::Platform;
use crate::calls;
use crate::directory::{AdminScope, CommPilotExpressProfile, Directory, Principal, User};
use crate::events;
use crate::http::Body;
use crate::search;
use crate::subscriptions::{self, EventPackage, Subscription, Target};
use crate::xml::{self, Leaves};

const ACTIONS_CONTEXT: &str = "/com.broadsoft.xsi-actions";
const EVENTS_CONTEXT: &str = "/com.broadsoft.xsi-events";
const ASYNC_PREFIX: &str = "/com.broadsoft.async";
/// The content type real XSPs give the channel stream.
const XML_STREAM: &str = "text/xml;charset=UTF-8";
const XML_LATIN1: &str = "application/xml;charset=ISO-8859-1";
const XML_UTF8: &str = "application/xml;charset=UTF-8";
/// Request bodies larger than this are refused; XSI documents are small.
const MAX_BODY: usize = 64 * 1024;

/// How a request authenticated, as recorded for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// No usable `Authorization` header.
    None,
    /// The password was checked.
    Basic,
    /// A session cookie of this XSP stood in for the password check.
    Cookie,
    /// Credentials were given and rejected.
    Rejected,
}

/// One request as the platform saw it: what tests use to prove which credentials reached it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub xsp: usize,
    pub method: String,
    pub path: String,
    /// The user id in the `Authorization` header, if any.
    pub auth_user: Option<String>,
    pub auth: AuthKind,
    pub status: u16,
}

struct Reply {
    status: StatusCode,
    content_type: Option<&'static str>,
    body: Body,
    set_cookie: Option<String>,
}

impl Reply {
    fn xml(status: StatusCode, content_type: &'static str, body: String) -> Self {
        Self {
            status,
            content_type: Some(content_type),
            body: Body::full(body),
            set_cookie: None,
        }
    }

    fn ok_xml(body: String) -> Self {
        Self::xml(StatusCode::OK, XML_LATIN1, body)
    }

    fn empty(status: StatusCode) -> Self {
        Self {
            status,
            content_type: None,
            body: Body::empty(),
            set_cookie: None,
        }
    }

    fn error(status: StatusCode, summary: &str, code: u32) -> Self {
        Self::xml(status, XML_LATIN1, xml::error_info(summary, code))
    }
}

/// Handles one request on XSP number `xsp`.
pub async fn handle(
    platform: Arc<Platform>,
    xsp: usize,
    request: Request<Incoming>,
    _peer: SocketAddr,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let path = parts.uri.path().to_owned();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let credentials = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials);
    let cookie = parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("JSESSIONID=").map(str::to_owned));

    let fault = platform.fault(xsp);
    if fault.delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(fault.delay_ms)).await;
    }
    let (auth, reply) =
        if let Some(status) = fault.status.and_then(|s| StatusCode::from_u16(s).ok()) {
            (AuthKind::None, Reply::empty(status))
        } else if let Some(status) = fault
            .events_status
            .filter(|_| {
                matches!(
                    context(&path),
                    Some(Context::Events(_) | Context::EventsAsync(_))
                )
            })
            .and_then(|s| StatusCode::from_u16(s).ok())
        {
            (AuthKind::None, Reply::empty(status))
        } else if body.len() > MAX_BODY {
            (
                AuthKind::None,
                Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "Request too large", 4000),
            )
        } else {
            let call = Call {
                method: &parts.method,
                query: &query,
                body: &body,
            };
            respond(
                &platform,
                xsp,
                &path,
                &call,
                credentials.as_ref(),
                cookie.as_deref(),
                fault.stale_session_status,
            )
        };
    platform.record(RequestRecord {
        xsp,
        method: parts.method.to_string(),
        path,
        auth_user: credentials.map(|(user, _)| user),
        auth,
        status: reply.status.as_u16(),
    });
    Ok(into_response(reply))
}

fn into_response(reply: Reply) -> Response<Body> {
    let mut builder = Response::builder()
        .status(reply.status)
        .header(http::header::SERVER, "BW HTTP Server");
    if let Some(content_type) = reply.content_type {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
    }
    if let Some(cookie) = reply.set_cookie {
        builder = builder.header(http::header::SET_COOKIE, cookie);
    }
    if reply.status == StatusCode::UNAUTHORIZED {
        builder = builder.header(
            http::header::WWW_AUTHENTICATE,
            "Basic realm=\"XtendedServicesInterface\"",
        );
    }
    builder
        .body(reply.body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub(crate) fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// What a request asks of a resource, once routed.
struct Call<'a> {
    method: &'a Method,
    query: &'a [(String, String)],
    body: &'a Bytes,
}

/// Which web application a path belongs to, and the resource below its root.
enum Context<'a> {
    Actions(&'a str),
    Events(&'a str),
    /// `/com.broadsoft.async/com.broadsoft.xsi-events/…`: the streaming channel only.
    EventsAsync(&'a str),
}

fn context(path: &str) -> Option<Context<'_>> {
    let below = |root: &str| {
        path.strip_prefix(root)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if let Some(rest) = below(ACTIONS_CONTEXT) {
        return Some(Context::Actions(rest));
    }
    if let Some(rest) = below(EVENTS_CONTEXT) {
        return Some(Context::Events(rest));
    }
    let rest = path
        .strip_prefix(ASYNC_PREFIX)?
        .strip_prefix(EVENTS_CONTEXT)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(Context::EventsAsync(rest))
}

fn respond(
    platform: &Platform,
    xsp: usize,
    path: &str,
    call: &Call<'_>,
    credentials: Option<&(String, String)>,
    cookie: Option<&str>,
    stale_session_status: Option<u16>,
) -> (AuthKind, Reply) {
    let Some(context) = context(path) else {
        return (
            AuthKind::None,
            Reply::error(StatusCode::NOT_FOUND, "Unknown web application", 110000),
        );
    };
    // The async prefix is rewritten to the events application, whose cookie path it shares.
    let cookie_path = match context {
        Context::Actions(_) => ACTIONS_CONTEXT,
        Context::Events(_) | Context::EventsAsync(_) => EVENTS_CONTEXT,
    };
    let Some((user_id, password)) = credentials else {
        return (AuthKind::None, Reply::empty(StatusCode::UNAUTHORIZED));
    };
    let mut set_cookie = None;
    let session = cookie.map(|c| platform.session(xsp, cookie_path, c));
    let (auth, principal) = match session {
        Some(Some(principal)) if principal.user_id().eq_ignore_ascii_case(user_id) => {
            (AuthKind::Cookie, principal)
        }
        Some(None) if stale_session_status.is_some() => {
            let status = stale_session_status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::UNAUTHORIZED);
            return (AuthKind::Rejected, Reply::empty(status));
        }
        _ => {
            let Some(principal) = platform.directory().authenticate(user_id, password) else {
                return (AuthKind::Rejected, Reply::empty(StatusCode::UNAUTHORIZED));
            };
            let token = platform.open_session(xsp, cookie_path, principal.clone());
            set_cookie = Some(format!("JSESSIONID={token}; Path={cookie_path}; HttpOnly"));
            (AuthKind::Basic, principal)
        }
    };
    let mut reply = match context {
        Context::Actions(resource) => actions(platform, call, resource, &principal),
        Context::Events(resource) => events(platform, xsp, call, resource, &principal),
        Context::EventsAsync(resource) => event_channel(platform, xsp, call, resource, &principal),
    };
    reply.set_cookie = set_cookie;
    (auth, reply)
}

/// `POST /com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel`: opens a channel and
/// answers with its stream. Nothing else uses the async prefix.
fn event_channel(
    platform: &Platform,
    xsp: usize,
    call: &Call<'_>,
    resource: &str,
    principal: &Principal,
) -> Reply {
    if resource.trim_end_matches('/') != "/v2.0/channel" {
        return Reply::error(StatusCode::NOT_FOUND, "Resource not found", 110000);
    }
    if *call.method != Method::POST {
        return Reply::empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let leaves = match Leaves::parse(call.body) {
        Ok(leaves) => leaves,
        Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &e.to_string(), 4000),
    };
    let number = |name: &str| -> Result<Option<u64>, String> {
        leaves
            .get(name)
            .flatten()
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("`{name}` must be a positive number"))
            })
            .transpose()
    };
    let Some(channel_set_id) = leaves
        .get("channelSetId")
        .flatten()
        .filter(|s| !s.is_empty())
    else {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "[Error 4000] channelSetId is required",
            4000,
        );
    };
    let (priority, weight, expires) =
        match (number("priority"), number("weight"), number("expires")) {
            (Ok(p), Ok(w), Ok(e)) => (p, w, e),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return Reply::error(StatusCode::BAD_REQUEST, &format!("[Error 4000] {e}"), 4000);
            }
        };
    let settings = platform.event_settings();
    let opened = platform.channels().open(events::NewChannel {
        xsp,
        owner: principal.user_id().to_owned(),
        channel_set_id: channel_set_id.to_owned(),
        application_id: leaves.get("applicationId").flatten().map(str::to_owned),
        priority: u32::try_from(priority.unwrap_or(1)).unwrap_or(u32::MAX),
        weight: u32::try_from(weight.unwrap_or(50)).unwrap_or(u32::MAX),
        expires: settings.grant(expires),
    });
    let Ok((_, stream)) = opened else {
        return Reply::error(
            StatusCode::FORBIDDEN,
            "[Error 4003] the channel set belongs to another user",
            4003,
        );
    };
    Reply {
        status: StatusCode::OK,
        content_type: Some(XML_STREAM),
        body: Body::Stream(stream),
        set_cookie: None,
    }
}

/// Commands of the events application, each on a normal (non-streaming) connection.
fn events(
    platform: &Platform,
    xsp: usize,
    call: &Call<'_>,
    resource: &str,
    principal: &Principal,
) -> Reply {
    let segments: Vec<&str> = resource.split('/').filter(|s| !s.is_empty()).collect();
    let decoded = |raw: &str| {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned()
    };
    match (call.method.clone(), segments.as_slice()) {
        (Method::GET, ["v2.0", "versions"]) => {
            Reply::xml(StatusCode::OK, XML_UTF8, xml::versions())
        }
        (Method::POST, ["v2.0", "user", user]) => {
            subscribe(platform, call, Target::User(decoded(user)), principal)
        }
        (Method::POST, ["v2.0", "enterprise" | "serviceprovider", sp]) => subscribe(
            platform,
            call,
            Target::ServiceProvider(decoded(sp)),
            principal,
        ),
        (Method::POST, ["v2.0", "enterprise" | "serviceprovider", sp, "group", group]) => {
            let target = Target::Group {
                service_provider: decoded(sp),
                group: decoded(group),
            };
            subscribe(platform, call, target, principal)
        }
        (Method::POST, ["v2.0", "system"]) => subscribe(platform, call, Target::System, principal),
        (Method::GET, ["v2.0", "subscription"]) => subscription_query(platform, call, principal),
        (method, ["v2.0", "subscription", id]) => {
            subscription_command(platform, call, &method, id, principal)
        }
        (method, ["v2.0", "channel", rest @ ..]) => {
            channel_command(platform, xsp, call, &method, rest, principal)
        }
        (Method::GET, ["v2.0", "channelset", set]) => {
            let channels = platform.channels();
            let owner = principal.user_id();
            let mut members = channels
                .in_set(set)
                .filter(|c| c.owner.eq_ignore_ascii_case(owner))
                .peekable();
            if members.peek().is_none() {
                return Reply::error(
                    StatusCode::NOT_FOUND,
                    "[Error 4008] Channel set not found",
                    4008,
                );
            }
            Reply::xml(
                StatusCode::OK,
                XML_UTF8,
                xml::channel_set(members, std::time::Instant::now()),
            )
        }
        _ => Reply::error(StatusCode::NOT_FOUND, "Resource not found", 110000),
    }
}

/// Heartbeat, acknowledgement, update and delete of a channel; a channel exists for these only on
/// the XSP that holds its stream, and only for its owner.
fn channel_command(
    platform: &Platform,
    xsp: usize,
    call: &Call<'_>,
    method: &Method,
    rest: &[&str],
    principal: &Principal,
) -> Reply {
    let not_found = || {
        Reply::error(
            StatusCode::NOT_FOUND,
            "[Error 4008] Channel not found",
            4008,
        )
    };
    let mut channels = platform.channels();
    if let (&Method::POST, ["eventresponse"]) = (method, rest) {
        let leaves = match Leaves::parse(call.body) {
            Ok(leaves) => leaves,
            Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &e.to_string(), 4000),
        };
        let event_id = leaves
            .get("eventID")
            .flatten()
            .unwrap_or_default()
            .to_owned();
        let status = leaves
            .get("statusCode")
            .flatten()
            .unwrap_or_default()
            .to_owned();
        let known = channels.acknowledge(xsp, &event_id);
        drop(channels);
        platform.record_ack(crate::Ack {
            xsp,
            event_id,
            status,
            known,
        });
        return if known {
            Reply::empty(StatusCode::OK)
        } else {
            Reply::error(
                StatusCode::NOT_FOUND,
                "[Error 4008] Event not found on this server",
                4008,
            )
        };
    }
    let Some(id) = rest.first().copied() else {
        return Reply::error(StatusCode::NOT_FOUND, "Resource not found", 110000);
    };
    let owned = channels
        .on_xsp(id, xsp)
        .is_some_and(|c| c.owner.eq_ignore_ascii_case(principal.user_id()));
    if !owned {
        return not_found();
    }
    match (method, &rest[1..]) {
        (&Method::PUT, ["heartbeat"]) => {
            channels.heartbeat(id, xsp);
            Reply::empty(StatusCode::OK)
        }
        (&Method::PUT, []) => {
            let requested = match Leaves::parse(call.body) {
                Ok(leaves) => leaves.get("expires").flatten().and_then(|v| v.parse().ok()),
                Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &e.to_string(), 4000),
            };
            let expires = platform.event_settings().grant(requested);
            if let Some(channel) = channels.on_xsp(id, xsp) {
                channel.expires_at = subscriptions::expiry(expires);
            }
            Reply::xml(StatusCode::OK, XML_UTF8, xml::channel_updated(id, expires))
        }
        // `…/channel/<id>/delete` is not in the spec but real clients send it.
        (&Method::DELETE, [] | ["delete"]) => {
            channels.terminate(id, events::TerminationReason::ExplicitDelete);
            Reply::empty(StatusCode::OK)
        }
        _ => Reply::error(StatusCode::NOT_FOUND, "Resource not found", 110000),
    }
}

/// Whether `principal` may subscribe to `target`: a user to itself, an administrator to what is in
/// its scope, an agent (or administrator in scope) to a call centre. `Err` carries the refusal.
fn may_watch(platform: &Platform, principal: &Principal, target: &Target) -> Result<(), Reply> {
    let forbidden = || {
        Reply::error(
            StatusCode::FORBIDDEN,
            "[Error 4410] Target outside the caller's scope",
            4410,
        )
    };
    let scope = match principal {
        Principal::Admin { scope, .. } => Some(scope),
        Principal::User(_) => None,
    };
    let allowed = match (target, scope) {
        (Target::User(id), _) => {
            let directory = platform.directory();
            if let Some(user) = directory.user(id) {
                Directory::may_access(principal, user)
            } else if let Some(center) = directory.call_center(id) {
                Directory::may_watch_call_center(principal, center)
            } else {
                return Err(Reply::error(
                    StatusCode::NOT_FOUND,
                    &format!("[Error 4008] User not found: {id}"),
                    4008,
                ));
            }
        }
        (_, Some(AdminScope::System)) => true,
        (Target::ServiceProvider(sp), Some(AdminScope::ServiceProvider { service_provider })) => {
            sp == service_provider
        }
        (
            Target::Group {
                service_provider: sp,
                ..
            },
            Some(AdminScope::ServiceProvider { service_provider }),
        ) => sp == service_provider,
        (
            Target::Group {
                service_provider: sp,
                group: g,
            },
            Some(AdminScope::Group {
                service_provider,
                group,
            }),
        ) => sp == service_provider && g == group,
        _ => false,
    };
    if allowed { Ok(()) } else { Err(forbidden()) }
}

/// `POST …/user/<id>`, `…/enterprise/<id>[/group/<id>]`, `…/system`: a new subscription, then
/// for a user target its initial state events.
fn subscribe(platform: &Platform, call: &Call<'_>, target: Target, principal: &Principal) -> Reply {
    if let Err(refusal) = may_watch(platform, principal, &target) {
        return refusal;
    }
    let leaves = match Leaves::parse(call.body) {
        Ok(leaves) => leaves,
        Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &e.to_string(), 4000),
    };
    let bad = |message: String| {
        Reply::error(
            StatusCode::BAD_REQUEST,
            &format!("[Error 4000] {message}"),
            4000,
        )
    };
    let names = leaves.all("event");
    if names.is_empty() {
        return bad("an event package is required".to_owned());
    }
    let mut packages = Vec::with_capacity(names.len());
    for name in names {
        match EventPackage::from_name(name) {
            Some(package) if !packages.contains(&package) => packages.push(package),
            Some(_) => {}
            None => return bad(format!("unknown or unsimulated event package `{name}`")),
        }
    }
    if leaves.get("httpContact").is_some() {
        return bad("only channel delivery is simulated; give a channelSetId".to_owned());
    }
    let Some(channel_set_id) = leaves
        .get("channelSetId")
        .flatten()
        .filter(|s| !s.is_empty())
    else {
        return bad("channelSetId is required".to_owned());
    };
    let requested = match leaves
        .get("expires")
        .flatten()
        .map(str::parse::<u64>)
        .transpose()
    {
        Ok(requested) => requested,
        Err(_) => return bad("`expires` must be a number of seconds".to_owned()),
    };
    let expires = platform.event_settings().grant_subscription(requested);
    let id = xml::new_id();
    let (target_for_initial, packages_for_initial) = (target.clone(), packages.clone());
    platform.subscriptions().add(Subscription {
        id: id.clone(),
        owner: principal.user_id().to_owned(),
        target,
        packages,
        channel_set_id: channel_set_id.to_owned(),
        // The envelope requires an application id; BroadWorks fills in its own when none is given.
        application_id: leaves
            .get("applicationId")
            .flatten()
            .unwrap_or("default")
            .to_owned(),
        expires_at: subscriptions::expiry(expires),
        sequence: 0,
    });
    // Only the smallest target scope (a user or call centre) starts with state events.
    if let Target::User(target_id) = &target_for_initial {
        let events = platform.initial_events(target_id, &packages_for_initial);
        platform.send_initial_events(&id, target_id, &events);
    }
    Reply::xml(
        StatusCode::OK,
        XML_UTF8,
        xml::subscription_granted(&id, expires),
    )
}

/// `GET …/subscription?subscriberId=&targetId=&event=&targetEntityType=&targetGrpParentId=`: the
/// caller's subscriptions, filtered. `targetEntityType` is `User` by default; `Group` needs
/// `targetGrpParentId` (BroadWorks' "XCap error" otherwise).
fn subscription_query(platform: &Platform, call: &Call<'_>, principal: &Principal) -> Reply {
    let param = |name: &str| {
        call.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let subscriber = param("subscriberId").unwrap_or(principal.user_id());
    if !subscriber.eq_ignore_ascii_case(principal.user_id()) {
        return Reply::error(
            StatusCode::FORBIDDEN,
            "[Error 4410] Subscriber outside the caller's scope",
            4410,
        );
    }
    let kind = param("targetEntityType").unwrap_or("User");
    if !matches!(kind, "User" | "Group" | "ServiceProvider" | "System") {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "[Error 4000] unknown targetEntityType",
            4000,
        );
    }
    let parent = param("targetGrpParentId");
    if kind == "Group" && parent.is_none() {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "[Error 4000] XCap error: targetGrpParentId is required",
            4000,
        );
    }
    let (target_id, event) = (param("targetId"), param("event"));
    // A named target outside the caller's scope is refused, even with nothing to list
    // [SPEC §4.6.2.5]: BroadWorks answers 403 rather than an empty list.
    let target = match (kind, target_id, parent) {
        ("User", Some(id), _) => Some(Target::User(id.to_owned())),
        ("ServiceProvider", Some(id), _) => Some(Target::ServiceProvider(id.to_owned())),
        ("Group", Some(id), Some(sp)) => Some(Target::Group {
            service_provider: sp.to_owned(),
            group: id.to_owned(),
        }),
        ("System", _, _) => Some(Target::System),
        _ => None,
    };
    if let Some(Err(refusal)) = target.map(|t| may_watch(platform, principal, &t)) {
        return refusal;
    }
    let subscriptions = platform.subscriptions();
    let matches = subscriptions.of_owner(subscriber).filter(|s| {
        s.target.type_name() == kind
            && target_id.is_none_or(|id| s.target.id().is_some_and(|t| t.eq_ignore_ascii_case(id)))
            && event.is_none_or(|e| s.packages.iter().any(|p| p.name() == e))
            && parent.is_none_or(|p| matches!(&s.target, Target::Group { service_provider, .. } if service_provider == p))
    });
    Reply::xml(
        StatusCode::OK,
        XML_UTF8,
        xml::subscription_list(matches, std::time::Instant::now()),
    )
}

/// `GET|PUT|DELETE …/subscription/<id>`; BroadWorks answers every failure here with 403.
fn subscription_command(
    platform: &Platform,
    call: &Call<'_>,
    method: &Method,
    id: &str,
    principal: &Principal,
) -> Reply {
    let refused = || {
        Reply::error(
            StatusCode::FORBIDDEN,
            "[Error 4410] Subscription not found for this subscriber",
            4410,
        )
    };
    let owner = principal.user_id();
    match *method {
        Method::GET => match platform.subscriptions().owned(id, owner) {
            Some(subscription) => Reply::xml(
                StatusCode::OK,
                XML_UTF8,
                xml::subscription(subscription, std::time::Instant::now()),
            ),
            None => refused(),
        },
        Method::DELETE => {
            // One lock for the check and the removal: a guard held in a `match` scrutinee would
            // still be held inside its arms.
            let mut subscriptions = platform.subscriptions();
            if subscriptions.owned(id, owner).is_none() {
                return refused();
            }
            subscriptions.remove(id);
            Reply::empty(StatusCode::OK)
        }
        Method::PUT => {
            let requested = match Leaves::parse(call.body) {
                Ok(leaves) => leaves.get("expires").flatten().and_then(|v| v.parse().ok()),
                Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &e.to_string(), 4000),
            };
            let expires = platform.event_settings().grant_subscription(requested);
            let (target, packages) = {
                let mut subscriptions = platform.subscriptions();
                let Some(subscription) = subscriptions.owned(id, owner) else {
                    return refused();
                };
                subscription.expires_at = subscriptions::expiry(expires);
                (subscription.target.clone(), subscription.packages.clone())
            };
            // A refresh of a user-level subscription starts again with the current state.
            if let Target::User(target_id) = target {
                let events = platform.initial_events(&target_id, &packages);
                platform.send_initial_events(id, &target_id, &events);
            }
            Reply::xml(
                StatusCode::OK,
                XML_UTF8,
                xml::subscription_granted(id, expires),
            )
        }
        _ => Reply::empty(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// `POST …/calls/new?address=`, `PUT …/calls/<id>/Talk`, `DELETE …/calls/<id>`, then the call
/// events for both halves.
fn call_command(
    platform: &Platform,
    call: &Call<'_>,
    directory: std::sync::MutexGuard<'_, Directory>,
    user_id: &str,
    rest: &[&str],
) -> Reply {
    let Some(user) = directory.user(user_id).cloned() else {
        return Reply::error(StatusCode::NOT_FOUND, "[Error 4008] User not found", 4008);
    };
    let mut calls = platform.calls();
    let outcome = match (call.method.clone(), rest) {
        (Method::POST, ["calls", "new"]) => {
            let address = call
                .query
                .iter()
                .find(|(k, _)| k == "address")
                .map_or("", |(_, v)| v.as_str());
            calls
                .dial(&user, address, &directory)
                .map(|(origin, changes)| {
                    (
                        Reply::xml(StatusCode::CREATED, XML_UTF8, xml::call_start_info(&origin)),
                        changes,
                    )
                })
        }
        (Method::PUT, ["calls", id, "talk"]) => calls
            .answer(&user.user_id, id)
            .map(|c| (Reply::empty(StatusCode::OK), c)),
        (Method::DELETE, ["calls", id]) => calls
            .release(&user.user_id, id)
            .map(|c| (Reply::empty(StatusCode::OK), c)),
        (Method::GET, ["calls"]) => {
            return Reply::ok_xml(xml::calls(&user.user_id, &calls.of_user(&user.user_id)));
        }
        (Method::GET, ["calls", id]) => {
            return match calls
                .of_user(&user.user_id)
                .into_iter()
                .find(|c| c.id == *id)
            {
                Some(call) => Reply::ok_xml(xml::call(call)),
                None => Reply::error(StatusCode::NOT_FOUND, "[Error 4008] Call not found", 4008),
            };
        }
        (Method::GET | Method::PUT | Method::POST | Method::DELETE, _) => {
            return Reply::error(StatusCode::NOT_FOUND, "Resource not found", 110000);
        }
        _ => return Reply::empty(StatusCode::METHOD_NOT_ALLOWED),
    };
    match outcome {
        Ok((reply, changes)) => {
            let users: Vec<User> = changes
                .iter()
                .filter_map(|(half, _)| directory.user(&half.user_id).cloned())
                .collect();
            drop(calls);
            drop(directory);
            platform.publish_calls(&changes, &users);
            reply
        }
        Err(e) => {
            let status = if e == calls::CallError::NotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            Reply::error(status, &e.to_string(), 4000)
        }
    }
}

/// XSI-Actions below the context root (`/v2.0/…`).
fn actions(platform: &Platform, call: &Call<'_>, resource: &str, principal: &Principal) -> Reply {
    let segments: Vec<&str> = resource.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["v2.0", "versions"] => match *call.method {
            Method::GET => Reply::xml(StatusCode::OK, XML_UTF8, xml::versions()),
            _ => Reply::empty(StatusCode::METHOD_NOT_ALLOWED),
        },
        ["v2.0", "user", user, rest @ ..] => {
            let Some(user_id) = percent_encoding::percent_decode_str(user)
                .decode_utf8()
                .ok()
            else {
                return Reply::error(StatusCode::BAD_REQUEST, "Invalid user id", 4000);
            };
            let rest: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            user_resource(platform, call, &user_id, &rest, principal)
        }
        _ => Reply::error(StatusCode::NOT_FOUND, "Resource not found", 110000),
    }
}

/// The users a Busy Lamp Field request names, of the watcher's service provider, by lower-cased
/// user id (BroadWorks user ids are case-insensitive).
struct Monitorable(HashMap<String, User>);

impl Monitorable {
    fn get(&self, user_id: &str) -> Option<&User> {
        self.0.get(&user_id.to_ascii_lowercase())
    }
}

/// A PUT of the Busy Lamp Field service: `Some(list)` when it sets the monitored users (only
/// their `userId`s count, as the schema says; `xsi:nil` clears the list), `None` when it leaves
/// them. Each must be a user of the watcher's service provider, and not the watcher.
fn busy_lamp_field_change(
    leaves: &Leaves,
    watcher: &User,
    others: &Monitorable,
) -> Result<Option<Vec<String>>, Reply> {
    if leaves.get("monitoredUserList") == Some(None) {
        return Ok(Some(Vec::new()));
    }
    let ids = leaves.all("userId");
    if ids.is_empty() && leaves.get("monitoredUserList").is_none() {
        return Ok(None);
    }
    let mut list: Vec<String> = Vec::new();
    for id in ids {
        let Some(user) = others.get(id) else {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                &format!("[Error 4008] User not found: {id}"),
                4008,
            ));
        };
        if user.user_id.eq_ignore_ascii_case(&watcher.user_id) {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "[Error 4000] A user cannot monitor itself",
                4000,
            ));
        }
        if !list.iter().any(|l| l.eq_ignore_ascii_case(&user.user_id)) {
            list.push(user.user_id.clone());
        }
    }
    Ok(Some(list))
}

fn user_resource(
    platform: &Platform,
    call: &Call<'_>,
    user_id: &str,
    rest: &[&str],
    principal: &Principal,
) -> Reply {
    let mut directory = platform.directory();
    let Some(user) = directory.user(user_id) else {
        return Reply::error(
            StatusCode::NOT_FOUND,
            &format!("[Error 4008] User not found: {user_id}"),
            4008,
        );
    };
    if !Directory::may_access(principal, user) {
        return Reply::error(
            StatusCode::FORBIDDEN,
            "[Error 4410] Access denied: outside the caller's scope",
            4410,
        );
    }
    if let ["calls", ..] = rest {
        return call_command(platform, call, directory, user_id, rest);
    }
    if let ["directories", which] = rest {
        let kind = match *which {
            "enterprise" => xml::DirectoryKind::Enterprise,
            "group" => xml::DirectoryKind::Group,
            _ => return Reply::error(StatusCode::NOT_FOUND, "Resource not found", 110000),
        };
        if *call.method != Method::GET {
            return Reply::empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        let query = match search::Query::parse(call.query) {
            Ok(query) => query,
            Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &e.to_string(), 4000),
        };
        let (service_provider, group) = (user.service_provider.clone(), user.group.clone());
        let candidates = directory.users().filter(|u| {
            u.service_provider == service_provider
                && (kind == xml::DirectoryKind::Enterprise || u.group == group)
        });
        return Reply::ok_xml(xml::directory(kind, &query.run(candidates)));
    }
    let leaves = if *call.method == Method::PUT {
        match Leaves::parse(call.body) {
            Ok(leaves) => Some(leaves),
            Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &e.to_string(), 4000),
        }
    } else {
        None
    };
    // The users a Busy Lamp Field request names (the list, or the PUT's user ids) that it may
    // name: those of the same service provider (enterprise).
    let others: HashMap<String, User> =
        if rest.first() == Some(&"services") && rest.get(1) == Some(&"busylampfield") {
            let named: Vec<&str> = match &leaves {
                Some(leaves) => leaves.all("userId"),
                None => user.busy_lamp_field.iter().map(String::as_str).collect(),
            };
            named
                .into_iter()
                .filter_map(|id| directory.user(id))
                .filter(|u| u.service_provider == user.service_provider)
                .map(|u| (u.user_id.to_ascii_lowercase(), u.clone()))
                .collect()
        } else {
            HashMap::new()
        };
    let others = Monitorable(others);
    let centers: Vec<(String, String)> = if rest == ["services", "callcenter"] {
        directory
            .call_centers_of(user_id)
            .map(|c| (c.user_id.clone(), c.number.clone()))
            .collect()
    } else {
        Vec::new()
    };
    let Some(user) = directory.user_mut(user_id) else {
        return Reply::error(StatusCode::NOT_FOUND, "User not found", 4008);
    };
    // A PUT edits a draft that replaces the user only when the whole change is valid.
    let before = user.clone();
    let mut draft = before.clone();
    let result = match (call.method.clone(), rest, leaves) {
        (Method::GET, ["profile"], _) => Ok(Reply::ok_xml(xml::profile(user))),
        (Method::GET, ["services"], _) => Ok(Reply::ok_xml(xml::services(user))),
        (Method::GET, ["services", "donotdisturb"], _) => {
            Ok(Reply::ok_xml(xml::do_not_disturb(&user.do_not_disturb)))
        }
        (Method::GET, ["services", "callforwardingalways"], _) => Ok(Reply::ok_xml(
            xml::call_forwarding_always(&user.call_forwarding_always),
        )),
        (Method::GET, ["services", "remoteoffice"], _) => {
            Ok(Reply::ok_xml(xml::remote_office(&user.remote_office)))
        }
        (Method::GET, ["services", "callcenter"], _) if !centers.is_empty() => Ok(Reply::ok_xml(
            xml::call_center_agent(user.agent_state.name(), &centers),
        )),
        (Method::GET, ["services", "busylampfield"], _) => {
            let monitored: Vec<&User> = user
                .busy_lamp_field
                .iter()
                .filter_map(|id| others.get(id))
                .collect();
            Ok(Reply::ok_xml(xml::busy_lamp_field(&monitored)))
        }
        (Method::PUT, ["services", "busylampfield"], Some(leaves)) => {
            match busy_lamp_field_change(&leaves, user, &others) {
                Ok(Some(list)) => {
                    draft.busy_lamp_field = list;
                    Ok(Reply::empty(StatusCode::OK))
                }
                Ok(None) => Ok(Reply::empty(StatusCode::OK)),
                Err(reply) => Ok(reply),
            }
        }
        (Method::GET, ["services", "commpilotexpress"], _) => Ok(Reply::ok_xml(
            xml::comm_pilot_express(user.comm_pilot_express),
        )),
        (Method::PUT, ["services", "commpilotexpress"], Some(leaves)) => {
            match leaves.get("profile") {
                None => Ok(Reply::empty(StatusCode::OK)),
                Some(None) => {
                    draft.comm_pilot_express = None;
                    Ok(Reply::empty(StatusCode::OK))
                }
                Some(Some(name)) => match CommPilotExpressProfile::from_name(name) {
                    Some(profile) => {
                        draft.comm_pilot_express = Some(profile);
                        Ok(Reply::empty(StatusCode::OK))
                    }
                    None => Ok(Reply::error(
                        StatusCode::BAD_REQUEST,
                        &format!("[Error 4000] unknown profile `{name}`"),
                        4000,
                    )),
                },
            }
        }
        (Method::PUT, ["services", "donotdisturb"], Some(leaves)) => (|| {
            let state = &mut draft.do_not_disturb;
            state.active = leaves.boolean("active")?.unwrap_or(state.active);
            state.ring_splash = leaves.boolean("ringSplash")?.unwrap_or(state.ring_splash);
            Ok(Reply::empty(StatusCode::OK))
        })(),
        (Method::PUT, ["services", "callforwardingalways"], Some(leaves)) => (|| {
            let state = &mut draft.call_forwarding_always;
            state.active = leaves.boolean("active")?.unwrap_or(state.active);
            state.ring_splash = leaves.boolean("ringSplash")?.unwrap_or(state.ring_splash);
            if let Some(number) = leaves.get("forwardToPhoneNumber") {
                state.forward_to_phone_number = number.map(str::to_owned);
            }
            if state.active && state.forward_to_phone_number.is_none() {
                return Ok(Reply::error(
                    StatusCode::BAD_REQUEST,
                    "[Error 4602] A forward-to number is required",
                    4602,
                ));
            }
            Ok(Reply::empty(StatusCode::OK))
        })(),
        (Method::PUT, ["services", "remoteoffice"], Some(leaves)) => (|| {
            let state = &mut draft.remote_office;
            state.active = leaves.boolean("active")?.unwrap_or(state.active);
            if let Some(number) = leaves.get("remoteOfficeNumber") {
                state.remote_office_number = number.map(str::to_owned);
            }
            Ok(Reply::empty(StatusCode::OK))
        })(),
        (Method::PUT, ["profile", "password", "portal"], Some(leaves)) => {
            let new = leaves.get("newPassword").flatten().unwrap_or_default();
            let is_self = matches!(principal, Principal::User(_));
            if new.is_empty() || new.len() > 60 {
                Ok(Reply::error(
                    StatusCode::BAD_REQUEST,
                    "[Error 4001] newPassword must be 1 to 60 characters",
                    4001,
                ))
            } else if is_self && leaves.get("oldPassword").flatten() != Some(user.password.as_str())
            {
                Ok(Reply::error(
                    StatusCode::BAD_REQUEST,
                    "[Error 4962] The old password is not correct",
                    4962,
                ))
            } else {
                user.password = new.to_owned();
                let user_id = user.user_id.clone();
                drop(directory);
                platform.close_sessions_of(&user_id);
                return Reply::empty(StatusCode::OK);
            }
        }
        (Method::GET | Method::PUT, _, _) => Ok(Reply::error(
            StatusCode::NOT_FOUND,
            "Resource not found",
            110000,
        )),
        _ => Ok(Reply::empty(StatusCode::METHOD_NOT_ALLOWED)),
    };
    let reply = result.unwrap_or_else(|e: xml::XmlError| {
        Reply::error(StatusCode::BAD_REQUEST, &e.to_string(), 4000)
    });
    if *call.method == Method::PUT && reply.status == StatusCode::OK {
        *user = draft.clone();
        drop(directory);
        platform.publish_changes(&before, &draft);
    }
    reply
}
