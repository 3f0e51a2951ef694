//! XSI-Actions documents, byte for byte in the shape BroadWorks sends them: default namespace
//! `http://schema.broadsoft.com/xsi`, `xsi:` bound to XML-Schema-instance for nil values, and
//! elements in XSD order. Non-ASCII text is written as character references so the declared
//! encoding (ISO-8859-1 for profile data, as real XSPs declare) is always honest.

use std::fmt::Write as _;

use crate::directory::{
    CallCenter, CallForwardingAlways, DoNotDisturb, QueueEntry, RemoteOffice, User,
};

const NS: &str = "http://schema.broadsoft.com/xsi";
const LATIN1_DECL: &str = r#"<?xml version="1.0" encoding="ISO-8859-1"?>"#;
const UTF8_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Escapes text content; anything outside ASCII becomes a numeric character reference.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_ascii() => out.push(c),
            c => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
        }
    }
    out
}

fn element(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", escape(value));
}

fn optional(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        element(out, name, value);
    }
}

fn nillable(out: &mut String, name: &str, value: Option<&str>) {
    match value {
        Some(value) => element(out, name, value),
        None => {
            let _ = write!(out, "<{name} xsi:nil=\"true\"/>");
        }
    }
}

/// The `UserDetails` elements (XSD order), shared by profiles and directory entries.
fn user_details(out: &mut String, user: &User) {
    element(out, "userId", &user.user_id);
    nillable(out, "firstName", user.first_name.as_deref());
    nillable(out, "lastName", user.last_name.as_deref());
    element(out, "groupId", &user.group);
    let _ = write!(
        out,
        r#"<serviceProvider isEnterprise="{}">{}</serviceProvider>"#,
        user.is_enterprise,
        escape(&user.service_provider)
    );
    optional(out, "number", user.number.as_deref());
    optional(out, "extension", user.extension.as_deref());
}

/// `additionalDetails`. The spec's example writes absent details as `xsi:nil`, but the schema
/// declares them optional and not nillable; absent details are left out so documents validate.
fn additional_details(out: &mut String, user: &User) {
    out.push_str("<additionalDetails>");
    optional(out, "mobile", user.mobile.as_deref());
    optional(out, "emailAddress", user.email.as_deref());
    optional(out, "department", user.department.as_deref());
    out.push_str("</additionalDetails>");
}

/// `GET /v2.0/user/<id>/services/BusyLampField` (`XSIBusyLampField.xsd`): the monitored users'
/// details, in the list's order. No `listURI`: the simulator has no SIP side.
pub fn busy_lamp_field(monitored: &[&User]) -> String {
    let mut out = format!(
        r#"{LATIN1_DECL}<BusyLampField xmlns="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><monitoredUserList>"#
    );
    for user in monitored {
        out.push_str("<userDetails>");
        user_details(&mut out, user);
        out.push_str("</userDetails>");
    }
    out.push_str("</monitoredUserList></BusyLampField>");
    out
}

/// `GET /v2.0/user/<id>/services/CallCenter` (`XSICallCenter.xsd`): the agent's ACD state and
/// the call centres it serves (`serviceUserId`, `available`, `phoneNumber`).
pub fn call_center_agent(state: &str, centers: &[(String, String)]) -> String {
    let mut out = format!(
        r#"{LATIN1_DECL}<CallCenter xmlns="{NS}"><agentACDState>{}</agentACDState><callCenterList>"#,
        escape(state)
    );
    for (id, number) in centers {
        out.push_str("<callCenterDetails>");
        element(&mut out, "serviceUserId", id);
        out.push_str("<available>true</available>");
        element(&mut out, "phoneNumber", number);
        out.push_str("</callCenterDetails>");
    }
    out.push_str("</callCenterList></CallCenter>");
    out
}

/// `GET /v2.0/user/<id>/profile`.
pub fn profile(user: &User) -> String {
    let id = escape(&user.user_id);
    let mut out = format!(
        r#"{LATIN1_DECL}<Profile xmlns="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><details>"#
    );
    user_details(&mut out, user);
    out.push_str("</details>");
    additional_details(&mut out, user);
    let _ = write!(
        out,
        "<passwordExpiresDays>2147483647</passwordExpiresDays>\
         <fac>/v2.0/user/{id}/profile/Fac</fac>\
         <registrations>/v2.0/user/{id}/profile/Registrations</registrations>\
         <scheduleList>/v2.0/user/{id}/profile/Schedule</scheduleList>\
         <portalPasswordChange>/v2.0/user/{id}/profile/Password/Portal</portalPasswordChange>\
         <countryCode>1</countryCode></Profile>"
    );
    out
}

/// Which directory a search reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryKind {
    Enterprise,
    Group,
}

/// `GET /v2.0/user/<id>/directories/Enterprise|Group`: one page of a search.
pub fn directory(kind: DirectoryKind, page: &crate::search::Page<'_>) -> String {
    let (root, list) = match kind {
        DirectoryKind::Enterprise => ("Enterprise", "enterpriseDirectory"),
        DirectoryKind::Group => ("Group", "groupDirectory"),
    };
    let mut out = format!(
        r#"{LATIN1_DECL}<{root} xmlns="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><startIndex>{}</startIndex><numberOfRecords>{}</numberOfRecords><totalAvailableRecords>{}</totalAvailableRecords><{list}>"#,
        page.start,
        page.users.len(),
        page.total
    );
    for user in &page.users {
        out.push_str("<directoryDetails>");
        user_details(&mut out, user);
        additional_details(&mut out, user);
        out.push_str("</directoryDetails>");
    }
    let _ = write!(out, "</{list}></{root}>");
    out
}

/// The services this simulator assigns to every user, with their Actions resource names.
pub const SERVICES: [(&str, &str); 4] = [
    ("Call Forwarding Always", "callforwardingalways"),
    ("CommPilot Express", "commpilotexpress"),
    ("Do Not Disturb", "donotdisturb"),
    ("Remote Office", "remoteoffice"),
];

/// `GET /v2.0/user/<id>/services`: URIs are relative to the xsi-actions root, lower-case.
pub fn services(user: &User) -> String {
    let id = escape(&user.user_id);
    let mut out = format!(r#"{LATIN1_DECL}<Services xmlns="{NS}">"#);
    for (name, resource) in SERVICES {
        let _ = write!(
            out,
            "<service><name>{name}</name><uri>/v2.0/user/{id}/services/{resource}</uri></service>"
        );
    }
    out.push_str("</Services>");
    out
}

pub fn do_not_disturb(state: &DoNotDisturb) -> String {
    format!(
        r#"{LATIN1_DECL}<DoNotDisturb xmlns="{NS}"><active>{}</active><ringSplash>{}</ringSplash></DoNotDisturb>"#,
        state.active, state.ring_splash
    )
}

pub fn call_forwarding_always(state: &CallForwardingAlways) -> String {
    let mut out = format!(
        r#"{LATIN1_DECL}<CallForwardingAlways xmlns="{NS}"><active>{}</active>"#,
        state.active
    );
    optional(
        &mut out,
        "forwardToPhoneNumber",
        state.forward_to_phone_number.as_deref(),
    );
    let _ = write!(
        out,
        "<ringSplash>{}</ringSplash></CallForwardingAlways>",
        state.ring_splash
    );
    out
}

pub fn remote_office(state: &RemoteOffice) -> String {
    let mut out = format!(
        r#"{LATIN1_DECL}<RemoteOffice xmlns="{NS}"><active>{}</active>"#,
        state.active
    );
    optional(
        &mut out,
        "remoteOfficeNumber",
        state.remote_office_number.as_deref(),
    );
    out.push_str("</RemoteOffice>");
    out
}

/// `GET …/services/CommPilotExpress`: the profile, nil when none is set.
pub fn comm_pilot_express(profile: Option<crate::directory::CommPilotExpressProfile>) -> String {
    let profile = match profile {
        Some(p) => format!("<profile>{}</profile>", p.name()),
        None => r#"<profile xsi:nil="true"/>"#.to_owned(),
    };
    format!(
        r#"{LATIN1_DECL}<CommPilotExpress xmlns="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">{profile}</CommPilotExpress>"#
    )
}

/// `GET /v2.0/versions` (Actions) with the baseline release this simulator imitates.
pub fn versions() -> String {
    format!(
        r#"{UTF8_DECL}<Versions xmlns="{NS}"><commands><baseline>22.0</baseline></commands></Versions>"#
    )
}

/// An `ErrorInfo` document.
pub fn error_info(summary: &str, code: u32) -> String {
    let summary = escape(summary);
    format!(
        r#"{LATIN1_DECL}<ErrorInfo xmlns="{NS}"><summary>{summary}</summary><summaryEnglish>{summary}</summaryEnglish><errorCode>{code}</errorCode></ErrorInfo>"#
    )
}

/// A fresh identifier in BroadWorks' style (a random UUID, lower-case hex).
pub fn new_id() -> String {
    let v: u128 = rand::random();
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Every document on an event stream is one chunk: the declaration and the document on one
/// line, ended by a newline so that clients reading line by line get whole documents.
fn stream_document(body: &str) -> String {
    format!("{UTF8_DECL}{body}\n")
}

/// The first chunk of a new channel's stream.
pub fn channel_opened(channel_id: &str, expires: u64) -> String {
    stream_document(&channel(channel_id, expires))
}

/// The answer to a channel update.
pub fn channel_updated(channel_id: &str, expires: u64) -> String {
    format!("{UTF8_DECL}{}", channel(channel_id, expires))
}

fn channel(channel_id: &str, expires: u64) -> String {
    format!(
        r#"<Channel xmlns="{NS}"><channelId>{}</channelId><expires>{expires}</expires></Channel>"#,
        escape(channel_id)
    )
}

pub fn channel_heartbeat() -> String {
    stream_document(&format!(r#"<ChannelHeartBeat xmlns="{NS}"/>"#))
}

/// `ChannelTerminatedEvent`, with the literal prefixes real XSPs use and clients match on.
pub fn channel_terminated(channel_id: &str, reason: &str) -> String {
    stream_document(&format!(
        r#"<xsi:Event xsi1:type="xsi:ChannelTerminatedEvent" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsi="{NS}"><xsi:channelId>{}</xsi:channelId><xsi:reason>{reason}</xsi:reason></xsi:Event>"#,
        escape(channel_id)
    ))
}

/// What an event says, inside `eventData`: its `xsi:type` and its content.
#[derive(Debug, Clone)]
pub struct EventData {
    pub kind: &'static str,
    pub content: String,
}

fn info(fields: &[(&str, Option<String>)]) -> String {
    let mut out = String::from("<xsi:info>");
    for (name, value) in fields {
        if let Some(value) = value {
            let _ = write!(out, "<xsi:{name}>{}</xsi:{name}>", escape(value));
        }
    }
    out.push_str("</xsi:info>");
    out
}

/// Numbers in events are `tel:` URIs.
fn tel(number: Option<&str>) -> Option<String> {
    number.map(|n| {
        if n.starts_with("tel:") {
            n.to_owned()
        } else {
            format!("tel:{n}")
        }
    })
}

pub fn do_not_disturb_event(state: &DoNotDisturb) -> EventData {
    EventData {
        kind: "DoNotDisturbEvent",
        content: info(&[
            ("active", Some(state.active.to_string())),
            ("ringSplash", Some(state.ring_splash.to_string())),
        ]),
    }
}

pub fn call_forwarding_always_event(state: &CallForwardingAlways) -> EventData {
    EventData {
        kind: "CallForwardingAlwaysEvent",
        content: info(&[
            ("active", Some(state.active.to_string())),
            (
                "forwardToPhoneNumber",
                tel(state.forward_to_phone_number.as_deref()),
            ),
            ("ringSplash", Some(state.ring_splash.to_string())),
        ]),
    }
}

pub fn remote_office_event(state: &RemoteOffice) -> EventData {
    EventData {
        kind: "RemoteOfficeEvent",
        content: info(&[
            ("active", Some(state.active.to_string())),
            (
                "remoteOfficeNumber",
                tel(state.remote_office_number.as_deref()),
            ),
        ]),
    }
}

/// The initial event of the call packages: the user's calls, and the hook status they imply.
pub fn call_subscription_event(calls: &[&crate::calls::CallHalf]) -> EventData {
    let mut content = String::new();
    if !calls.is_empty() {
        content.push_str("<xsi:calls>");
        for call in calls {
            content.push_str(&call_element(call));
        }
        content.push_str("</xsi:calls>");
    }
    let hook = if calls.is_empty() {
        "On-Hook"
    } else {
        "Off-Hook"
    };
    let _ = write!(content, "<xsi:hookStatus>{hook}</xsi:hookStatus>");
    EventData {
        kind: "CallSubscriptionEvent",
        content,
    }
}

/// A call event (`CallReceivedEvent`, `CallAnsweredEvent`, …) about one call half.
pub fn call_event(kind: &'static str, call: &crate::calls::CallHalf) -> EventData {
    EventData {
        kind,
        content: call_element(call),
    }
}

/// `<xsi:call>` in the schema's element order.
fn call_element(call: &crate::calls::CallHalf) -> String {
    call_fields(call, "xsi:", "call")
}

/// `GET …/calls`: the user's active calls, by id, with where to read each.
pub fn calls(user_id: &str, calls: &[&crate::calls::CallHalf]) -> String {
    let mut out = format!(r#"{UTF8_DECL}<Calls xmlns="{NS}">"#);
    for call in calls {
        let _ = write!(
            out,
            "<call><callId>{id}</callId><uri>/com.broadsoft.xsi-actions/v2.0/user/{user}/calls/{id}</uri></call>",
            id = escape(&call.id),
            user = escape(user_id),
        );
    }
    out.push_str("</Calls>");
    out
}

/// `GET …/calls/<callId>`: one call's details, the fields its events carry.
pub fn call(call: &crate::calls::CallHalf) -> String {
    let fields = call_fields(call, "", "");
    format!(r#"{UTF8_DECL}<Call xmlns="{NS}">{fields}</Call>"#)
}

/// A call's fields in the schema's element order, each named with `p` (a prefix and colon, or
/// nothing), inside `<{p}{root}>` unless `root` is empty.
fn call_fields(call: &crate::calls::CallHalf, p: &str, root: &str) -> String {
    use crate::calls::{CallState, Personality};
    let personality = match call.personality {
        Personality::Originator => "Originator",
        Personality::Terminator => "Terminator",
    };
    let state = match call.state {
        CallState::Alerting => "Alerting",
        CallState::Active => "Active",
        CallState::Released => "Released",
    };
    let mut out = String::new();
    if !root.is_empty() {
        let _ = write!(out, "<{p}{root}>");
    }
    let _ = write!(
        out,
        "<{p}callId>{}</{p}callId><{p}extTrackingId>{}</{p}extTrackingId><{p}personality>{personality}</{p}personality><{p}state>{state}</{p}state>",
        escape(&call.id),
        escape(&call.ext_tracking_id)
    );
    if let Some(party) = call.releasing_party {
        let _ = write!(out, "<{p}releasingParty>{party}</{p}releasingParty>");
    }
    let _ = write!(out, "<{p}remoteParty>");
    if let Some(name) = &call.remote.name {
        let _ = write!(out, "<{p}name>{}</{p}name>", escape(name));
    }
    let _ = write!(
        out,
        "<{p}address>{}</{p}address>",
        escape(&call.remote.address)
    );
    if let Some(user_id) = &call.remote.user_id {
        let _ = write!(out, "<{p}userId>{}</{p}userId>", escape(user_id));
    }
    let _ = write!(
        out,
        "<{p}callType>{}</{p}callType></{p}remoteParty>",
        call.remote.call_type
    );
    let _ = write!(out, "<{p}startTime>{}</{p}startTime>", call.start_time);
    if let Some(time) = call.answer_time {
        let _ = write!(out, "<{p}answerTime>{time}</{p}answerTime>");
    }
    if let Some(time) = call.release_time {
        let _ = write!(out, "<{p}releaseTime>{time}</{p}releaseTime>");
    }
    if !root.is_empty() {
        let _ = write!(out, "</{p}{root}>");
    }
    out
}

/// `POST …/calls/new`: call responses are always UTF-8.
pub fn call_start_info(call: &crate::calls::CallHalf) -> String {
    format!(
        r#"{UTF8_DECL}<CallStartInfo xmlns="{NS}"><callId>{}</callId><externalTrackingId>{}</externalTrackingId></CallStartInfo>"#,
        escape(&call.id),
        escape(&call.ext_tracking_id)
    )
}

/// The profile in force, nil when none is set.
pub fn comm_pilot_express_event(
    profile: Option<crate::directory::CommPilotExpressProfile>,
) -> EventData {
    let profile = match profile {
        Some(p) => format!("<xsi:profile>{}</xsi:profile>", p.name()),
        None => r#"<xsi:profile xsi1:nil="true"/>"#.to_owned(),
    };
    EventData {
        kind: "CommPilotExpressEvent",
        content: format!("<xsi:info>{profile}</xsi:info>"),
    }
}

/// A statistic with a severity (`NonNegativeIntWithSeverity`); the simulator sets no thresholds.
fn statistic(out: &mut String, name: &str, value: u64) {
    let _ = write!(
        out,
        "<xsi:{name}><xsi:value>{value}</xsi:value></xsi:{name}>"
    );
}

/// `<xsi:queueEntry>` in schema order; `remove_time` once the call left the queue.
fn queue_entry(center: &CallCenter, entry: &QueueEntry, remove_time: Option<u64>) -> String {
    let mut out = format!(
        "<xsi:queueEntry><xsi:callId>{}</xsi:callId><xsi:extTrackingId>{}</xsi:extTrackingId><xsi:remoteParty>",
        escape(&entry.call_id),
        escape(&entry.ext_tracking_id)
    );
    if let Some(name) = &entry.name {
        let _ = write!(out, "<xsi:name>{}</xsi:name>", escape(name));
    }
    let _ = write!(
        out,
        "<xsi:address>{}</xsi:address><xsi:callType>Network</xsi:callType></xsi:remoteParty><xsi:addTime>{}</xsi:addTime>",
        escape(&entry.address),
        entry.add_time
    );
    if let Some(time) = remove_time {
        let _ = write!(out, "<xsi:removeTime>{time}</xsi:removeTime>");
    }
    let _ = write!(
        out,
        "<xsi:acdName>{}</xsi:acdName><xsi:acdNumber>{}</xsi:acdNumber></xsi:queueEntry>",
        escape(&center.name),
        escape(&tel(Some(&center.number)).unwrap_or_default())
    );
    out
}

/// Call Center Queue's initial event: every waiting call.
pub fn acd_subscription_event(center: &CallCenter) -> EventData {
    let mut content = String::new();
    if !center.queue.is_empty() {
        content.push_str("<xsi:queueEntries>");
        for entry in &center.queue {
            content.push_str(&queue_entry(center, entry, None));
        }
        content.push_str("</xsi:queueEntries>");
    }
    EventData {
        kind: "ACDSubscriptionEvent",
        content,
    }
}

/// A call joined the queue at `position` (1 is next to be answered).
pub fn acd_call_added_event(center: &CallCenter, entry: &QueueEntry, position: usize) -> EventData {
    EventData {
        kind: "ACDCallAddedEvent",
        content: format!(
            "{}<xsi:position>{position}</xsi:position>",
            queue_entry(center, entry, None)
        ),
    }
}

/// The caller hung up while waiting.
pub fn acd_call_abandoned_event(
    center: &CallCenter,
    entry: &QueueEntry,
    remove_time: u64,
) -> EventData {
    EventData {
        kind: "ACDCallAbandonedEvent",
        content: queue_entry(center, entry, Some(remove_time)),
    }
}

/// Figures of Call Center Monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCenterFigures {
    pub calls_in_queue: u64,
    pub longest_wait_seconds: u64,
    pub agents_assigned: u64,
    pub agents_staffed: u64,
    pub staffed_idle: u64,
    pub staffed_unavailable: u64,
}

/// Call Center Monitoring's event, also its initial one.
pub fn call_center_monitoring_event(figures: &CallCenterFigures) -> EventData {
    let mut content = String::from("<xsi:monitoringStatus>");
    statistic(&mut content, "averageSpeedOfAnswer", 0);
    statistic(
        &mut content,
        "longestWaitTime",
        figures.longest_wait_seconds,
    );
    statistic(&mut content, "numCallsInQueue", figures.calls_in_queue);
    let _ = write!(
        content,
        "<xsi:numAgentsAssigned>{}</xsi:numAgentsAssigned><xsi:numAgentsStaffed>{}</xsi:numAgentsStaffed><xsi:numStaffedAgentsIdle>{}</xsi:numStaffedAgentsIdle><xsi:numStaffedAgentsUnavailable>{}</xsi:numStaffedAgentsUnavailable></xsi:monitoringStatus>",
        figures.agents_assigned,
        figures.agents_staffed,
        figures.staffed_idle,
        figures.staffed_unavailable
    );
    EventData {
        kind: "CallCenterMonitoringEvent",
        content,
    }
}

fn agent_state_info(user: &User) -> String {
    format!(
        "<xsi:state>{}</xsi:state><xsi:stateTimestamp><xsi:value>{}</xsi:value></xsi:stateTimestamp>",
        user.agent_state.name(),
        user.agent_state_since_ms
    )
}

/// Call Center Agent's initial event: the call centres joined and the agent's state.
pub fn agent_subscription_event<'a>(
    user: &User,
    centers: impl Iterator<Item = &'a CallCenter>,
) -> EventData {
    let joins: Vec<String> = centers
        .map(|c| {
            format!(
                "<xsi:joinInfo><xsi:acdUserId>{}</xsi:acdUserId><xsi:joined/></xsi:joinInfo>",
                escape(&c.user_id)
            )
        })
        .collect();
    let joins = if joins.is_empty() {
        String::new()
    } else {
        format!("<xsi:joinInfos>{}</xsi:joinInfos>", joins.concat())
    };
    EventData {
        kind: "AgentSubscriptionEvent",
        content: format!(
            "<xsi:joinData>{joins}</xsi:joinData><xsi:stateInfo>{}</xsi:stateInfo>",
            agent_state_info(user)
        ),
    }
}

pub fn agent_state_event(user: &User) -> EventData {
    EventData {
        kind: "AgentStateEvent",
        content: format!(
            "<xsi:agentStateInfo>{}</xsi:agentStateInfo>",
            agent_state_info(user)
        ),
    }
}

/// Call Center Agent Monitoring: `initial` selects the subscription event over the update.
pub fn agent_monitoring_event(
    monitoring: &crate::directory::AgentMonitoring,
    initial: bool,
) -> EventData {
    let mut content = String::from("<xsi:monitoringStatus>");
    statistic(
        &mut content,
        "averageACDCallTime",
        monitoring.average_acd_call_time_ms,
    );
    statistic(
        &mut content,
        "averageACDOutgoingCallTime",
        monitoring.average_acd_outgoing_call_time_ms,
    );
    content.push_str("</xsi:monitoringStatus>");
    EventData {
        kind: if initial {
            "CallCenterAgentMonitoringSubscriptionEvent"
        } else {
            "CallCenterAgentMonitoringEvent"
        },
        content,
    }
}

/// Counts are PositiveInt in the schema, so a zero count is left out.
pub fn voice_mail_summary_event(state: &crate::directory::VoiceMail) -> EventData {
    let mut content = String::from("<xsi:messageSummary>");
    for (name, count) in [
        ("newMessages", state.new_messages),
        ("oldMessages", state.old_messages),
    ] {
        if count > 0 {
            let _ = write!(content, "<xsi:{name}>{count}</xsi:{name}>");
        }
    }
    content.push_str("</xsi:messageSummary>");
    EventData {
        kind: "VoiceMailMessageSummaryEvent",
        content,
    }
}

pub fn subscription_terminated_event() -> EventData {
    EventData {
        kind: "SubscriptionTerminatedEvent",
        content: String::new(),
    }
}

/// The envelope of everything a subscription delivers.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub event_id: &'a str,
    pub sequence: u64,
    pub owner: &'a str,
    pub application_id: &'a str,
    pub subscription_id: &'a str,
    pub channel_id: &'a str,
    pub target_id: &'a str,
}

/// A `SubscriptionEvent` on a channel, with the literal prefixes real XSPs use.
pub fn subscription_event(envelope: &Envelope<'_>, data: &EventData) -> String {
    let data = if data.content.is_empty() {
        format!(r#"<xsi:eventData xsi1:type="xsi:{}"/>"#, data.kind)
    } else {
        format!(
            r#"<xsi:eventData xsi1:type="xsi:{}">{}</xsi:eventData>"#,
            data.kind, data.content
        )
    };
    stream_document(&format!(
        r#"<xsi:Event xmlns:xsi="{NS}" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xsi1:type="xsi:SubscriptionEvent"><xsi:eventID>{}</xsi:eventID><xsi:sequenceNumber>{}</xsi:sequenceNumber><xsi:userId>{}</xsi:userId><xsi:externalApplicationId>{}</xsi:externalApplicationId><xsi:subscriptionId>{}</xsi:subscriptionId><xsi:channelId>{}</xsi:channelId><xsi:targetId>{}</xsi:targetId>{data}</xsi:Event>"#,
        escape(envelope.event_id),
        envelope.sequence,
        escape(envelope.owner),
        escape(envelope.application_id),
        escape(envelope.subscription_id),
        escape(envelope.channel_id),
        escape(envelope.target_id),
    ))
}

/// The answer to a subscription create or refresh.
pub fn subscription_granted(subscription_id: &str, expires: u64) -> String {
    format!(
        r#"{UTF8_DECL}<Subscription xmlns="{NS}"><subscriptionId>{}</subscriptionId><expires>{expires}</expires></Subscription>"#,
        escape(subscription_id)
    )
}

/// `GET …/subscription/<id>`.
pub fn subscription(s: &crate::subscriptions::Subscription, now: std::time::Instant) -> String {
    format!(
        r#"{UTF8_DECL}<Subscription xmlns="{NS}">{}</Subscription>"#,
        subscription_fields(s, now)
    )
}

/// `GET …/subscription?…`: every matching subscription.
pub fn subscription_list<'a>(
    subscriptions: impl Iterator<Item = &'a crate::subscriptions::Subscription>,
    now: std::time::Instant,
) -> String {
    let mut out = format!(r#"{UTF8_DECL}<SubscriptionList xmlns="{NS}">"#);
    for s in subscriptions {
        let _ = write!(
            out,
            "<subscription>{}</subscription>",
            subscription_fields(s, now)
        );
    }
    out.push_str("</SubscriptionList>");
    out
}

/// The `Subscription` fields in schema order.
fn subscription_fields(s: &crate::subscriptions::Subscription, now: std::time::Instant) -> String {
    use crate::subscriptions::Target;
    let mut out = String::new();
    element(&mut out, "subscriptionId", &s.id);
    element(&mut out, "subscriberId", &s.owner);
    element(&mut out, "targetIdType", s.target.type_name());
    if let Target::Group {
        service_provider, ..
    } = &s.target
    {
        element(&mut out, "targetGrpParentId", service_provider);
    }
    if let Some(id) = s.target.id() {
        element(&mut out, "targetId", id);
    }
    match s.packages.as_slice() {
        [one] => element(&mut out, "event", one.name()),
        many => {
            out.push_str("<eventPackageList>");
            for package in many {
                element(&mut out, "event", package.name());
            }
            out.push_str("</eventPackageList>");
        }
    }
    let _ = write!(
        out,
        "<expires>{}</expires>",
        s.expires_at.saturating_duration_since(now).as_secs()
    );
    element(&mut out, "channelSetId", &s.channel_set_id);
    element(&mut out, "applicationId", &s.application_id);
    out
}

/// `GET …/channelset/<id>`.
pub fn channel_set<'a>(
    channels: impl Iterator<Item = &'a crate::events::Channel>,
    now: std::time::Instant,
) -> String {
    let mut out = format!(r#"{UTF8_DECL}<ChannelSet xmlns="{NS}">"#);
    for c in channels {
        let _ = write!(
            out,
            "<channel><channelId>{}</channelId><channelSetId>{}</channelSetId><priority>{}</priority><weight>{}</weight><expires>{}</expires></channel>",
            escape(&c.id),
            escape(&c.channel_set_id),
            c.priority,
            c.weight,
            c.expires_in(now)
        );
    }
    out.push_str("</ChannelSet>");
    out
}

/// The leaf elements of a request document by local name: `Some(text)`, or `None` when the
/// element is `xsi:nil`. Namespaces and prefixes are ignored, as BroadWorks does.
#[derive(Debug, Default)]
pub struct Leaves(Vec<(String, Option<String>)>);

#[derive(Debug, thiserror::Error)]
#[error("malformed XML: {0}")]
pub struct XmlError(String);

impl Leaves {
    pub fn parse(body: &[u8]) -> Result<Self, XmlError> {
        use quick_xml::events::Event;

        let mut reader = quick_xml::Reader::from_reader(body);
        reader.config_mut().trim_text(true);
        let mut leaves = Vec::new();
        let mut open: Option<(String, bool)> = None;
        let mut text = String::new();
        let mut depth = 0usize;
        let mut buf = Vec::new();
        loop {
            match reader.read_event_into(&mut buf) {
                Ok(Event::Start(start)) => {
                    depth += 1;
                    open = Some((start.local_name().as_ref().to_owned(), is_nil(&start)));
                    text.clear();
                }
                Ok(Event::Empty(start)) => {
                    let nil = is_nil(&start);
                    leaves.push((
                        start.local_name().as_ref().to_owned(),
                        if nil { None } else { Some(String::new()) },
                    ));
                }
                Ok(Event::Text(t)) => text.push_str(&t.xml10_content()),
                Ok(Event::GeneralRef(reference)) => {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(c)) => Some(c),
                        Ok(None) => {
                            quick_xml::escape::resolve_predefined_entity(&reference.xml10_content())
                                .and_then(|s| s.chars().next())
                        }
                        Err(e) => return Err(XmlError(e.to_string())),
                    };
                    text.push(
                        resolved.ok_or_else(|| XmlError("unknown entity reference".to_owned()))?,
                    );
                }
                Ok(Event::End(_)) => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| XmlError("unbalanced end tag".to_owned()))?;
                    if let Some((name, nil)) = open.take() {
                        leaves.push((
                            name,
                            if nil {
                                None
                            } else {
                                Some(text.trim().to_owned())
                            },
                        ));
                    }
                }
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(e) => return Err(XmlError(e.to_string())),
            }
            buf.clear();
        }
        if depth != 0 {
            return Err(XmlError("unclosed element".to_owned()));
        }
        Ok(Self(leaves))
    }

    /// The text of the first leaf of that name; `Some(None)` when it is nil, `None` when absent.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    /// The texts of every leaf of that name, in document order (nil ones left out).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    /// A boolean leaf: `Ok(None)` when absent, an error when not `true`/`false`.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, XmlError> {
        match self.get(name).flatten() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(XmlError(format!(
                "`{name}` must be true or false, not `{other}`"
            ))),
        }
    }
}

fn is_nil(start: &quick_xml::events::BytesStart<'_>) -> bool {
    start
        .attributes()
        .flatten()
        .any(|a| a.key.local_name().as_ref() == "nil" && a.value.as_ref() == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_non_ascii() {
        assert_eq!(escape("a<b & \"Zoë\""), "a&lt;b &amp; &quot;Zo&#235;&quot;");
    }

    #[test]
    fn parses_leaves_with_any_prefix_and_nil() {
        let body = br#"<RemoteOffice xmlns="http://schema.broadsoft.com/xsi"><active>true</active><remoteOfficeNumber xs:nil="true" xmlns:xs="http://www.w3.org/2001/XMLSchema-instance"/></RemoteOffice>"#;
        let leaves = Leaves::parse(body).unwrap();
        assert_eq!(leaves.boolean("active").unwrap(), Some(true));
        assert_eq!(leaves.get("remoteOfficeNumber"), Some(None));
        assert_eq!(leaves.get("absent"), None);
    }

    #[test]
    fn rejects_malformed_documents() {
        assert!(Leaves::parse(b"<a><b>x</a>").is_err());
        assert!(Leaves::parse(b"<a>").is_err());
        assert!(
            Leaves::parse(b"<a><active>maybe</active></a>")
                .unwrap()
                .boolean("active")
                .is_err()
        );
    }
}
