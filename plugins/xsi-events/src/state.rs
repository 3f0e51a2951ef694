//! Typed values of every event package this plugin subscribes (reference `xsi.md` §5), read
//! from an event's `eventData` or from the XSI-Actions document that holds the same state.
//!
//! What goes on the bus is JSON of [`State`] (declared in `xsigate_broadworks::bus`, which
//! consumers such as Firebase sync share): they match on `kind` and never see XML. Numbers are normalised the way both sources agree: `tel:` prefixes are
//! dropped, absent message counts are zero (the schema's counts are PositiveInt, so zero is
//! written by leaving the element out).

use xsigate_broadworks::Node;
pub use xsigate_broadworks::bus::{Call, Figure, Membership, Party, QueueEntry, State};

/// A number as BroadWorks writes it in events (`tel:+1…`) or answers (`+1…`), as one form.
fn number(text: Option<&str>) -> Option<String> {
    text.map(|t| t.strip_prefix("tel:").unwrap_or(t).to_owned())
}

fn flag(node: &Node, name: &str) -> bool {
    node.text_of(name) == Some("true")
}

fn parsed<T: std::str::FromStr>(node: &Node, name: &str) -> Option<T> {
    node.text_of(name).and_then(|t| t.parse().ok())
}

fn text(node: &Node, name: &str) -> Option<String> {
    node.text_of(name).map(str::to_owned)
}

fn party(node: &Node) -> Party {
    Party {
        name: text(node, "name"),
        address: number(node.text_of("address")),
        user_id: text(node, "userId"),
        call_type: text(node, "callType"),
    }
}

/// A `call` (or `Call`) element.
pub fn call(node: &Node) -> Option<Call> {
    Some(Call {
        call_id: node.text_of("callId")?.to_owned(),
        ext_tracking_id: text(node, "extTrackingId"),
        personality: text(node, "personality"),
        state: text(node, "state"),
        remote_party: node.child("remoteParty").map(party),
        start_time: parsed(node, "startTime"),
        answer_time: parsed(node, "answerTime"),
        release_time: parsed(node, "releaseTime"),
        releasing_party: text(node, "releasingParty"),
    })
}

fn queue_entry(node: &Node) -> Option<QueueEntry> {
    Some(QueueEntry {
        call_id: node.text_of("callId")?.to_owned(),
        ext_tracking_id: text(node, "extTrackingId"),
        remote_party: node.child("remoteParty").map(party),
        add_time: parsed(node, "addTime"),
        remove_time: parsed(node, "removeTime"),
        acd_name: text(node, "acdName"),
        acd_number: number(node.text_of("acdNumber")),
    })
}

fn agent(info: Option<&Node>, joins: Option<&Node>) -> State {
    let call_centers = joins.map(|joins| {
        joins
            .child("joinInfos")
            .map(|infos| {
                infos
                    .all("joinInfo")
                    .filter_map(|join| {
                        Some(Membership {
                            call_center: join.text_of("acdUserId")?.to_owned(),
                            joined: join.child("joined").is_some(),
                            skill_level: parsed(join, "skillLevel"),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    State::Agent {
        state: info.and_then(|i| text(i, "state")),
        since_ms: info
            .and_then(|i| i.child("stateTimestamp"))
            .and_then(|t| parsed(t, "value")),
        call_centers,
    }
}

/// An agent's state and call centres as XSI-Actions reads them (`services/CallCenter`): what
/// the Call Center Agent package's initial event says, for targets that get none.
pub fn call_center_service(root: &Node) -> State {
    let call_centers = root
        .child("callCenterList")
        .map(|list| {
            list.all("callCenterDetails")
                .filter_map(|details| {
                    Some(Membership {
                        call_center: details.text_of("serviceUserId")?.to_owned(),
                        joined: details.text_of("available") == Some("true"),
                        skill_level: parsed(details, "skillLevel"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    State::Agent {
        state: text(root, "agentACDState"),
        since_ms: None,
        call_centers: Some(call_centers),
    }
}

fn figures(status: &Node) -> Vec<Figure> {
    status
        .children
        .iter()
        .filter_map(|figure| {
            let (value, severity, threshold) = if figure.children.is_empty() {
                (figure.text.parse().ok()?, None, None)
            } else {
                (
                    parsed(figure, "value")?,
                    parsed(figure, "severity"),
                    parsed(figure, "threshold"),
                )
            };
            Some(Figure {
                name: figure.name.clone(),
                value,
                severity,
                threshold,
            })
        })
        .collect()
}

/// The service states whose fields read the same in an event's `info` and in the XSI-Actions
/// answer for the service.
pub fn service(kind: ServiceKind, fields: &Node) -> State {
    match kind {
        ServiceKind::DoNotDisturb => State::DoNotDisturb {
            active: flag(fields, "active"),
            ring_splash: flag(fields, "ringSplash"),
        },
        ServiceKind::CallForwardingAlways => State::CallForwardingAlways {
            active: flag(fields, "active"),
            forward_to: number(fields.text_of("forwardToPhoneNumber")),
            ring_splash: flag(fields, "ringSplash"),
        },
        ServiceKind::RemoteOffice => State::RemoteOffice {
            active: flag(fields, "active"),
            number: number(fields.text_of("remoteOfficeNumber")),
        },
        ServiceKind::CommPilotExpress => State::CommPilotExpress {
            profile: text(fields, "profile"),
        },
    }
}

/// The services [`service`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    DoNotDisturb,
    CallForwardingAlways,
    RemoteOffice,
    CommPilotExpress,
}

/// The typed value of an event's `eventData`, by its `xsi:type`; `None` for a type this plugin
/// does not know (or one that lacks what its type requires).
pub fn of_event(event_type: &str, data: &Node) -> Option<State> {
    let info = || data.child("info");
    let service_event = |kind| {
        if data.child("unassigned").is_some() {
            Some(State::Unassigned)
        } else {
            Some(service(kind, info()?))
        }
    };
    match event_type {
        "DoNotDisturbEvent" => service_event(ServiceKind::DoNotDisturb),
        "CallForwardingAlwaysEvent" => service_event(ServiceKind::CallForwardingAlways),
        "RemoteOfficeEvent" => service_event(ServiceKind::RemoteOffice),
        "CommPilotExpressEvent" => service_event(ServiceKind::CommPilotExpress),
        "VoiceMailMessageSummaryEvent" => {
            let summary = data.child("messageSummary");
            let count = |name| summary.and_then(|s| parsed(s, name)).unwrap_or(0);
            Some(State::VoiceMailSummary {
                new_messages: count("newMessages"),
                old_messages: count("oldMessages"),
                new_urgent_messages: count("newUrgentMessages"),
                old_urgent_messages: count("oldUrgentMessages"),
            })
        }
        "CallSubscriptionEvent" | "CallSubscriptionResyncEvent" => Some(State::Calls {
            hook_status: text(data, "hookStatus"),
            calls: data
                .child("calls")
                .map(|calls| calls.all("call").filter_map(call).collect())
                .unwrap_or_default(),
        }),
        "HookStatusEvent" => Some(State::HookStatus {
            hook_status: text(data, "hookStatus")?,
        }),
        "ACDSubscriptionEvent" | "ACDSubscriptionResyncEvent" => Some(State::Queue {
            entries: data
                .child("queueEntries")
                .map(|entries| entries.all("queueEntry").filter_map(queue_entry).collect())
                .unwrap_or_default(),
        }),
        "AgentStateEvent" => Some(agent(data.child("agentStateInfo"), None)),
        "AgentSubscriptionEvent" => Some(agent(data.child("stateInfo"), data.child("joinData"))),
        "CallCenterMonitoringEvent"
        | "CallCenterAgentMonitoringEvent"
        | "CallCenterAgentMonitoringSubscriptionEvent" => Some(State::Monitoring {
            figures: figures(data.child("monitoringStatus")?),
        }),
        "SubscriptionTerminatedEvent" => Some(State::SubscriptionTerminated),
        acd if acd.starts_with("ACD") => {
            let entry = data.child("queueEntry").and_then(queue_entry);
            Some(State::QueuedCall {
                call_id: entry
                    .as_ref()
                    .map(|e| e.call_id.clone())
                    .or_else(|| text(data, "callId")),
                position: parsed(data, "position"),
                entry,
            })
        }
        other if other.starts_with("Call") || other.starts_with("Conference") => {
            Some(State::Call {
                call: call(data.child("call")?)?,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xsigate_broadworks::tree;

    fn data(kind: &str, content: &str) -> Node {
        let xml = format!(
            r#"<xsi:eventData xmlns:xsi="http://schema.broadsoft.com/xsi" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xsi1:type="xsi:{kind}">{content}</xsi:eventData>"#
        );
        tree(xml.as_bytes()).unwrap()
    }

    #[test]
    fn service_events_and_answers_read_alike() {
        let event = of_event(
            "CallForwardingAlwaysEvent",
            &data(
                "CallForwardingAlwaysEvent",
                "<xsi:info><xsi:active>true</xsi:active><xsi:forwardToPhoneNumber>tel:1020</xsi:forwardToPhoneNumber><xsi:ringSplash>true</xsi:ringSplash></xsi:info>",
            ),
        );
        let answer = tree(br#"<CallForwardingAlways xmlns="http://schema.broadsoft.com/xsi"><active>true</active><forwardToPhoneNumber>1020</forwardToPhoneNumber><ringSplash>true</ringSplash></CallForwardingAlways>"#).unwrap();
        assert_eq!(
            event,
            Some(service(ServiceKind::CallForwardingAlways, &answer))
        );
        assert_eq!(
            of_event(
                "DoNotDisturbEvent",
                &data("DoNotDisturbEvent", "<xsi:unassigned/>")
            ),
            Some(State::Unassigned)
        );
        assert_eq!(
            of_event(
                "CommPilotExpressEvent",
                &data(
                    "CommPilotExpressEvent",
                    r#"<xsi:info><xsi:profile xsi1:nil="true"/></xsi:info>"#
                )
            ),
            Some(State::CommPilotExpress { profile: None })
        );
        assert_eq!(
            of_event(
                "VoiceMailMessageSummaryEvent",
                &data(
                    "VoiceMailMessageSummaryEvent",
                    "<xsi:messageSummary><xsi:newMessages>2</xsi:newMessages></xsi:messageSummary>"
                )
            ),
            Some(State::VoiceMailSummary {
                new_messages: 2,
                old_messages: 0,
                new_urgent_messages: 0,
                old_urgent_messages: 0
            })
        );
    }

    #[test]
    fn call_centre_events_are_typed() {
        let added = of_event("ACDCallAddedEvent", &data("ACDCallAddedEvent", "<xsi:queueEntry><xsi:callId>callhalf-1:0</xsi:callId><xsi:extTrackingId>9:1</xsi:extTrackingId><xsi:remoteParty><xsi:name>N</xsi:name><xsi:address>tel:+15007003333</xsi:address><xsi:callType>Network</xsi:callType></xsi:remoteParty><xsi:addTime>1271711961291</xsi:addTime><xsi:acdName>Sales</xsi:acdName><xsi:acdNumber>tel:+15006001025</xsi:acdNumber></xsi:queueEntry><xsi:position>1</xsi:position>")).unwrap();
        let State::QueuedCall {
            entry: Some(entry),
            call_id,
            position,
        } = added
        else {
            panic!("{added:?}");
        };
        assert_eq!(
            (call_id.as_deref(), position),
            (Some("callhalf-1:0"), Some(1))
        );
        assert_eq!(entry.acd_number.as_deref(), Some("+15006001025"));
        assert_eq!(
            entry.remote_party.unwrap().address.as_deref(),
            Some("+15007003333")
        );
        let monitoring = of_event("CallCenterMonitoringEvent", &data("CallCenterMonitoringEvent", "<xsi:monitoringStatus><xsi:averageHandlingTime><xsi:value>3633</xsi:value><xsi:severity>1</xsi:severity><xsi:prevSeverity>0</xsi:prevSeverity><xsi:threshold>3600</xsi:threshold></xsi:averageHandlingTime><xsi:numAgentsAssigned>3</xsi:numAgentsAssigned></xsi:monitoringStatus>")).unwrap();
        assert_eq!(
            monitoring,
            State::Monitoring {
                figures: vec![
                    Figure {
                        name: "averageHandlingTime".to_owned(),
                        value: 3633,
                        severity: Some(1),
                        threshold: Some(3600)
                    },
                    Figure {
                        name: "numAgentsAssigned".to_owned(),
                        value: 3,
                        severity: None,
                        threshold: None
                    },
                ]
            }
        );
        let agent = of_event("AgentSubscriptionEvent", &data("AgentSubscriptionEvent", "<xsi:joinData><xsi:joinInfos><xsi:joinInfo><xsi:acdUserId>cc@x</xsi:acdUserId><xsi:joined/><xsi:skillLevel>12</xsi:skillLevel></xsi:joinInfo></xsi:joinInfos></xsi:joinData><xsi:stateInfo><xsi:state>Available</xsi:state><xsi:stateTimestamp><xsi:value>17</xsi:value></xsi:stateTimestamp></xsi:stateInfo>")).unwrap();
        assert_eq!(
            agent,
            State::Agent {
                state: Some("Available".to_owned()),
                since_ms: Some(17),
                call_centers: Some(vec![Membership {
                    call_center: "cc@x".to_owned(),
                    joined: true,
                    skill_level: Some(12)
                }]),
            }
        );
    }

    #[test]
    fn calls_and_unknown_types() {
        let received = of_event("CallReceivedEvent", &data("CallReceivedEvent", "<xsi:call><xsi:callId>callhalf-12215:0</xsi:callId><xsi:extTrackingId>108:1</xsi:extTrackingId><xsi:personality>Terminator</xsi:personality><xsi:state>Alerting</xsi:state><xsi:remoteParty><xsi:name>S</xsi:name><xsi:address>tel:1011</xsi:address><xsi:userId>s@x</xsi:userId><xsi:callType>Group</xsi:callType></xsi:remoteParty><xsi:startTime>1271273072015</xsi:startTime></xsi:call>")).unwrap();
        let State::Call { call } = received else {
            panic!("{received:?}");
        };
        assert_eq!(call.call_id, "callhalf-12215:0");
        assert_eq!(call.state.as_deref(), Some("Alerting"));
        assert_eq!(call.start_time, Some(1_271_273_072_015));
        assert_eq!(
            of_event(
                "CallSubscriptionEvent",
                &data(
                    "CallSubscriptionEvent",
                    "<xsi:hookStatus>On-Hook</xsi:hookStatus>"
                )
            ),
            Some(State::Calls {
                hook_status: Some("On-Hook".to_owned()),
                calls: vec![]
            })
        );
        assert_eq!(
            of_event("MeetMeConferenceEvent", &data("MeetMeConferenceEvent", "")),
            None
        );
        assert_eq!(
            of_event("CallReceivedEvent", &data("CallReceivedEvent", "")),
            None,
            "a call event without its call"
        );
        assert_eq!(
            of_event("DoNotDisturbEvent", &data("DoNotDisturbEvent", "")),
            None
        );
    }

    #[test]
    fn the_call_center_service_gives_an_agents_state_and_centres() {
        let root = tree(
            br#"<CallCenter xmlns="http://schema.broadsoft.com/xsi"><agentACDState>Available</agentACDState><callCenterList><callCenterDetails><serviceUserId>cc@acme.example</serviceUserId><available>true</available><phoneNumber>2025550300</phoneNumber><skillLevel>3</skillLevel></callCenterDetails><callCenterDetails><available>false</available></callCenterDetails></callCenterList></CallCenter>"#,
        )
        .unwrap();
        let State::Agent {
            state,
            since_ms,
            call_centers,
        } = call_center_service(&root)
        else {
            panic!("not an agent state");
        };
        assert_eq!(state.as_deref(), Some("Available"));
        assert_eq!(since_ms, None);
        let centers = call_centers.unwrap();
        assert_eq!(
            centers.len(),
            1,
            "an entry without serviceUserId names nobody"
        );
        assert_eq!(centers[0].call_center, "cc@acme.example");
        assert!(centers[0].joined);
        assert_eq!(centers[0].skill_level, Some(3));
    }
}
