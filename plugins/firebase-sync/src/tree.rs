//! What a user's node in the database holds, and how each bus event (`xsi.event`, see
//! `docs/events.md`) changes it. Pure: the plugin keeps one [`Node`] per user and writes the
//! locations a change touched.
//!
//! ```text
//! users/<uniqueId>/
//!   updated_ms                        last write, ms since the epoch
//!   dnd                 {active, ring_splash}
//!   forwarding/always   {active, forward_to, ring_splash}
//!   remote_office       {active, number}
//!   comm_pilot_express  {profile}
//!   voicemail           {new, old, new_urgent, old_urgent}
//!   hook_status         "On-Hook" | "Off-Hook"
//!   calls/<callId>      {state, personality, remote {name, number, call_type}, start_ms, answer_ms, releasing_party}
//!   agent               {state, since_ms, call_centers/<uniqueId> {joined, skill_level}}
//!   queue/<callId>      {position, remote {...}, add_ms, acd_name, acd_number}   (a call centre's node)
//!   monitoring/<name>   {value, severity, threshold}
//! ```
//!
//! Nothing here names a BroadWorks userId, a domain or an XSP: remote parties keep a name and
//! a number, never a userId or a SIP URI; call centres are named by their uniqueId.

use std::collections::{BTreeSet, HashMap};

use xsigate_broadworks::bus::{Call, Package, Party, QueueEntry, State};
use xsigate_plugin_sdk::serde_json::{Map, Value, json};

/// A user's node: its children as the database should hold them. A child that was removed
/// stays as `null`, so a full rewrite deletes it in the database as well.
pub type Node = Map<String, Value>;

/// Queue events after which the call is no longer waiting.
const LEFT_QUEUE: [&str; 7] = [
    "ACDCallAnsweredByAgentEvent",
    "ACDCallAbandonedEvent",
    "ACDCallReleasedEvent",
    "ACDCallStrandedEvent",
    "ACDCallTransferredEvent",
    "ACDCallOverflowedEvent",
    "ACDCallOverflowedTreatmentCompletedEvent",
];

/// Where a service package's state lives, for `unassigned`.
fn service_child(package: Package) -> Option<&'static str> {
    Some(match package {
        Package::DoNotDisturb => "dnd",
        Package::CallForwardingAlways => "forwarding/always",
        Package::RemoteOffice => "remote_office",
        Package::CommPilotExpress => "comm_pilot_express",
        Package::VoiceMailMessageSummary => "voicemail",
        _ => return None,
    })
}

/// Applies one event to `node`; returns the locations (relative to the user's node) it
/// changed. `call_centers` maps call centres' userIds to their uniqueIds.
pub fn apply(
    node: &mut Node,
    package: Package,
    event: &str,
    state: &State,
    call_centers: &HashMap<String, String>,
) -> Vec<String> {
    let set = |node: &mut Node, path: &str, value: Value| {
        set_path(node, path, value);
        vec![path.to_owned()]
    };
    match state {
        State::DoNotDisturb {
            active,
            ring_splash,
        } => set(
            node,
            "dnd",
            json!({"active": active, "ring_splash": ring_splash}),
        ),
        State::CallForwardingAlways {
            active,
            forward_to,
            ring_splash,
        } => set(
            node,
            "forwarding/always",
            json!({"active": active, "forward_to": public_number(forward_to.as_deref()), "ring_splash": ring_splash}),
        ),
        State::RemoteOffice { active, number } => set(
            node,
            "remote_office",
            json!({"active": active, "number": public_number(number.as_deref())}),
        ),
        State::CommPilotExpress { profile } => {
            set(node, "comm_pilot_express", json!({"profile": profile}))
        }
        State::VoiceMailSummary {
            new_messages,
            old_messages,
            new_urgent_messages,
            old_urgent_messages,
        } => set(
            node,
            "voicemail",
            json!({"new": new_messages, "old": old_messages, "new_urgent": new_urgent_messages, "old_urgent": old_urgent_messages}),
        ),
        State::Calls { hook_status, calls } => {
            let calls: Map<String, Value> =
                calls.iter().map(|c| (key(&c.call_id), call(c))).collect();
            let mut changed = set(node, "calls", Value::Object(calls));
            if let Some(hook_status) = hook_status {
                changed.extend(set(node, "hook_status", json!(hook_status)));
            }
            changed
        }
        State::Call { call: c } => {
            let path = format!("calls/{}", key(&c.call_id));
            let released = event == "CallReleasedEvent" || c.state.as_deref() == Some("Released");
            let value = if released { Value::Null } else { call(c) };
            set(node, &path, value)
        }
        State::HookStatus { hook_status } => set(node, "hook_status", json!(hook_status)),
        State::Queue { entries } => {
            let entries: Map<String, Value> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| (key(&e.call_id), queue_entry(e, u32::try_from(i + 1).ok())))
                .collect();
            set(node, "queue", Value::Object(entries))
        }
        State::QueuedCall {
            entry,
            call_id,
            position,
        } => {
            let Some(call_id) = entry.as_ref().map(|e| &e.call_id).or(call_id.as_ref()) else {
                return Vec::new();
            };
            let path = format!("queue/{}", key(call_id));
            let value = match entry {
                Some(entry) if !LEFT_QUEUE.contains(&event) => queue_entry(entry, *position),
                _ => Value::Null,
            };
            set(node, &path, value)
        }
        State::Agent {
            state,
            since_ms,
            call_centers: memberships,
        } => {
            let mut changed = set(node, "agent/state", json!(state));
            changed.extend(set(node, "agent/since_ms", json!(since_ms)));
            if let Some(memberships) = memberships {
                let centers: Map<String, Value> = memberships
                    .iter()
                    .filter_map(|m| {
                        let unique_id = call_centers.get(&m.call_center)?;
                        Some((
                            key(unique_id),
                            json!({"joined": m.joined, "skill_level": m.skill_level}),
                        ))
                    })
                    .collect();
                changed.extend(set(node, "agent/call_centers", Value::Object(centers)));
            }
            changed
        }
        State::Monitoring { figures } => {
            let figures: Map<String, Value> = figures
                .iter()
                .map(|f| {
                    (
                        key(&f.name),
                        json!({"value": f.value, "severity": f.severity, "threshold": f.threshold}),
                    )
                })
                .collect();
            set(node, "monitoring", Value::Object(figures))
        }
        State::Unassigned => match service_child(package) {
            Some(path) => set(node, path, Value::Null),
            None => Vec::new(),
        },
        State::SubscriptionTerminated | State::Other => Vec::new(),
    }
}

fn call(call: &Call) -> Value {
    json!({
        "state": call.state,
        "personality": call.personality,
        "remote": call.remote_party.as_ref().map(party),
        "start_ms": call.start_time,
        "answer_ms": call.answer_time,
        "releasing_party": call.releasing_party,
    })
}

fn queue_entry(entry: &QueueEntry, position: Option<u32>) -> Value {
    json!({
        "position": position,
        "remote": entry.remote_party.as_ref().map(party),
        "add_ms": entry.add_time,
        "acd_name": entry.acd_name,
        "acd_number": public_number(entry.acd_number.as_deref()),
    })
}

/// A remote party as a browser may see it: a name and a number, never a userId or a URI that
/// carries a domain.
fn party(party: &Party) -> Value {
    json!({
        "name": party.name,
        "number": public_number(party.address.as_deref()),
        "call_type": party.call_type,
    })
}

/// A number, or nothing when the address is a URI (`sip:user@domain`) rather than a number.
fn public_number(address: Option<&str>) -> Option<String> {
    let number = address?.strip_prefix("tel:").unwrap_or(address?);
    let digits = number.strip_prefix('+').unwrap_or(number);
    (!digits.is_empty()
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | '-' | ' ')))
    .then(|| number.to_owned())
}

/// Whether text names a user, a domain or a SIP URI: each has an `@`.
pub fn names_a_user(text: &str) -> bool {
    text.contains('@')
}

/// Replaces every string in `value` that [`names_a_user`] (and every object member whose key
/// does) with `null`; returns how many were replaced.
pub fn withhold_user_names(value: &mut Value) -> usize {
    match value {
        Value::String(text) if names_a_user(text) => {
            *value = Value::Null;
            1
        }
        Value::Array(items) => items.iter_mut().map(withhold_user_names).sum(),
        Value::Object(members) => {
            let named: Vec<String> = members
                .keys()
                .filter(|k| names_a_user(k))
                .cloned()
                .collect();
            let mut count = named.len();
            for key in named {
                members.remove(&key);
            }
            count += members.values_mut().map(withhold_user_names).sum::<usize>();
            count
        }
        _ => 0,
    }
}

/// A database key from text BroadWorks chose: the characters Firebase forbids in keys
/// (`. $ # [ ] /` and control characters) become `_`, and it is cut to Firebase's 768 bytes.
pub fn key(text: &str) -> String {
    let mut key: String = text
        .chars()
        .map(|c| {
            if matches!(c, '.' | '$' | '#' | '[' | ']' | '/') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if key.is_empty() {
        key.push('_');
    }
    while key.len() > 768 {
        key.pop();
    }
    key
}

/// The value at `path` (slash-separated) in `node`; `null` where nothing is.
pub fn value_at(node: &Node, path: &str) -> Value {
    let mut parts = path.split('/');
    let Some(first) = parts.next() else {
        return Value::Null;
    };
    let mut value = node.get(first);
    for part in parts {
        value = value.and_then(|v| v.get(part));
    }
    value.cloned().unwrap_or(Value::Null)
}

/// Sets `path` in `node`, making the objects on the way. `null` below the top level removes
/// the entry, as the database does.
pub(crate) fn set_path(node: &mut Node, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('/').collect();
    let Some(last) = parts.pop() else {
        return;
    };
    let top_level = parts.is_empty();
    let mut map = node;
    for part in parts {
        let entry = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        map = next;
    }
    if value.is_null() && !top_level {
        map.remove(last);
    } else {
        map.insert(last.to_owned(), value);
    }
}

/// Locations waiting to be written for one user, kept minimal: a location already covered by
/// a waiting ancestor is not added, and a new ancestor replaces its descendants (a
/// multi-path update refuses overlapping paths).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Dirty {
    #[default]
    Clean,
    Paths(BTreeSet<String>),
    /// Every child the node holds: a full resync of the user.
    All,
}

/// Beyond this many locations a user is rewritten whole: its waiting write stays bounded.
const DIRTY_MAX: usize = 32;

impl Dirty {
    pub fn mark(&mut self, path: &str) {
        let paths = match self {
            Self::All => return,
            Self::Clean => {
                *self = Self::Paths(BTreeSet::new());
                let Self::Paths(paths) = self else {
                    return;
                };
                paths
            }
            Self::Paths(paths) => paths,
        };
        let covers = |ancestor: &str, path: &str| {
            path == ancestor
                || path
                    .strip_prefix(ancestor)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        if paths.iter().any(|p| covers(p, path)) {
            return;
        }
        paths.retain(|p| !covers(path, p));
        paths.insert(path.to_owned());
        if paths.len() > DIRTY_MAX {
            *self = Self::All;
        }
    }

    pub fn merge(&mut self, other: Self) {
        match other {
            Self::Clean => {}
            Self::All => *self = Self::All,
            Self::Paths(paths) => paths.iter().for_each(|p| self.mark(p)),
        }
    }

    pub fn is_clean(&self) -> bool {
        *self == Self::Clean
    }

    /// The locations to write, with their values from `node`.
    pub fn locations(&self, node: &Node) -> Vec<(String, Value)> {
        match self {
            Self::Clean => Vec::new(),
            Self::Paths(paths) => paths
                .iter()
                .map(|p| (p.clone(), value_at(node, p)))
                .collect(),
            Self::All => node.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use xsigate_plugin_sdk::serde_json::{self, from_value};

    use super::*;

    fn state(value: Value) -> State {
        from_value(value).unwrap()
    }

    fn run(node: &mut Node, package: &str, event: &str, value: Value) -> Vec<String> {
        let centers = HashMap::from([("sales-cc@acme.example".to_owned(), "cc-uid".to_owned())]);
        let package: Package = from_value(json!(package)).unwrap();
        apply(node, package, event, &state(value), &centers)
    }

    #[test]
    fn services_land_at_their_children() {
        let mut node = Node::new();
        let changed = run(
            &mut node,
            "Do Not Disturb",
            "DoNotDisturbEvent",
            json!({"kind": "do_not_disturb", "active": true, "ring_splash": false}),
        );
        assert_eq!(changed, ["dnd"]);
        run(
            &mut node,
            "Call Forwarding Always",
            "CallForwardingAlwaysEvent",
            json!({"kind": "call_forwarding_always", "active": true, "forward_to": "+12025550199", "ring_splash": false}),
        );
        run(
            &mut node,
            "Voice Mail Message Summary",
            "VoiceMailMessageSummaryEvent",
            json!({"kind": "voice_mail_summary", "new_messages": 2, "old_messages": 1, "new_urgent_messages": 0, "old_urgent_messages": 0}),
        );
        assert_eq!(
            Value::Object(node.clone()),
            json!({
                "dnd": {"active": true, "ring_splash": false},
                "forwarding": {"always": {"active": true, "forward_to": "+12025550199", "ring_splash": false}},
                "voicemail": {"new": 2, "old": 1, "new_urgent": 0, "old_urgent": 0},
            })
        );
        let changed = run(
            &mut node,
            "Do Not Disturb",
            "DoNotDisturbEvent",
            json!({"kind": "unassigned"}),
        );
        assert_eq!(changed, ["dnd"]);
        assert_eq!(node["dnd"], Value::Null);
        assert!(
            node.contains_key("dnd"),
            "kept as null so a resync deletes it"
        );
    }

    #[test]
    fn calls_come_and_go_without_user_ids_or_uris() {
        let mut node = Node::new();
        let received = json!({"kind": "call", "call": {
            "call_id": "callhalf-1:0", "ext_tracking_id": "9:1", "personality": "Terminator",
            "state": "Alerting", "remote_party": {"name": "Bob", "address": "sip:bob@acme.example",
            "user_id": "bob@acme.example", "call_type": "Group"}, "start_time": 5,
            "answer_time": null, "release_time": null, "releasing_party": null}});
        assert_eq!(
            run(
                &mut node,
                "Advanced Call",
                "CallReceivedEvent",
                received.clone()
            ),
            ["calls/callhalf-1:0"]
        );
        let text = serde_json::to_string(&node).unwrap();
        assert!(!text.contains("acme.example"), "{text}");
        assert_eq!(node["calls"]["callhalf-1:0"]["remote"]["name"], "Bob");
        assert_eq!(
            node["calls"]["callhalf-1:0"]["remote"]["number"],
            Value::Null
        );
        run(&mut node, "Advanced Call", "CallReleasedEvent", received);
        assert_eq!(node["calls"], json!({}));
        let all = json!({"kind": "calls", "hook_status": "Off-Hook", "calls": [{"call_id": "a.b",
            "personality": "Originator", "state": "Active", "remote_party": {"address": "tel:+15550100"}}]});
        let changed = run(&mut node, "Advanced Call", "CallSubscriptionEvent", all);
        assert_eq!(changed, ["calls", "hook_status"]);
        assert_eq!(node["calls"]["a_b"]["remote"]["number"], "+15550100");
    }

    #[test]
    fn agents_name_call_centres_by_unique_id_and_queues_track_entries() {
        let mut node = Node::new();
        run(
            &mut node,
            "Call Center Agent",
            "AgentStateEvent",
            json!({"kind": "agent", "state": "Available", "since_ms": 7, "call_centers": [
                {"call_center": "sales-cc@acme.example", "joined": true, "skill_level": 1},
                {"call_center": "unmapped@acme.example", "joined": true, "skill_level": null}]}),
        );
        assert_eq!(
            node["agent"],
            json!({"state": "Available", "since_ms": 7, "call_centers": {"cc-uid": {"joined": true, "skill_level": 1}}})
        );
        let entry = json!({"call_id": "q1", "remote_party": {"name": "N", "address": "tel:+15007003333"},
            "add_time": 9, "acd_name": "Sales", "acd_number": "+15006001025"});
        run(
            &mut node,
            "Call Center Queue",
            "ACDCallAddedEvent",
            json!({"kind": "queued_call", "entry": entry, "call_id": "q1", "position": 1}),
        );
        assert_eq!(node["queue"]["q1"]["position"], 1);
        run(
            &mut node,
            "Call Center Queue",
            "ACDCallAbandonedEvent",
            json!({"kind": "queued_call", "entry": entry, "call_id": "q1", "position": null}),
        );
        assert_eq!(node["queue"], json!({}));
    }

    #[test]
    fn unknown_kinds_change_nothing() {
        let mut node = Node::new();
        let changed = run(
            &mut node,
            "Do Not Disturb",
            "X",
            json!({"kind": "subscription_terminated"}),
        );
        assert!(changed.is_empty() && node.is_empty());
        let changed = run(
            &mut node,
            "Remote Office",
            "X",
            json!({"kind": "something_new", "x": 1}),
        );
        assert!(changed.is_empty());
    }

    #[test]
    fn keys_lose_forbidden_characters() {
        assert_eq!(key("a.b$c#d[e]f/g\u{1}"), "a_b_c_d_e_f_g_");
        assert_eq!(key(""), "_");
        assert_eq!(key(&"é".repeat(500)).len(), 768);
    }

    #[test]
    fn dirty_locations_never_overlap_and_collapse_when_many() {
        let mut dirty = Dirty::default();
        dirty.mark("calls/a");
        dirty.mark("calls/b");
        dirty.mark("dnd");
        dirty.mark("calls");
        dirty.mark("calls/c");
        dirty.mark("callsx");
        assert_eq!(
            dirty,
            Dirty::Paths(["calls", "callsx", "dnd"].map(str::to_owned).into())
        );
        for i in 0..40 {
            dirty.mark(&format!("queue/{i}"));
        }
        assert_eq!(dirty, Dirty::All);
        let mut node = Node::new();
        node.insert("dnd".to_owned(), json!({"active": true}));
        node.insert("voicemail".to_owned(), Value::Null);
        assert_eq!(dirty.locations(&node).len(), 2);
        let paths = Dirty::Paths(["calls/x".to_owned()].into());
        assert_eq!(
            paths.locations(&node),
            [("calls/x".to_owned(), Value::Null)]
        );
    }
}
