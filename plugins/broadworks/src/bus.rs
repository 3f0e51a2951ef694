//! The `xsi.event` topic of the host's bus (`xsigate_plugin_sdk::topics::XSI_EVENT`): what a
//! user's BroadWorks state became, as the `xsi-events` plugin publishes it and consumers (the
//! Firebase sync, …) read it. Both sides use these types, so a field cannot change on one side
//! alone. Consumers match on `state.kind` and never see XML.
//!
//! An event names its user by userId and uniqueId. A consumer that stores or forwards state
//! outside the gateway writes the uniqueId only; [`Party::user_id`] is for consumers inside it.

use serde::{Deserialize, Serialize};

/// One event on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XsiEvent {
    pub provider: String,
    /// The BroadWorks userId the state belongs to.
    pub user_id: String,
    /// The opaque id the gateway gives that user.
    pub unique_id: String,
    pub package: Package,
    /// The XSI event type (`DoNotDisturbEvent`, `CallReceivedEvent`, …); for a resync, the
    /// document it was read from.
    pub event: String,
    pub source: Source,
    /// The channel's event sequence number, when the event came on a channel.
    #[serde(default)]
    pub sequence: Option<u64>,
    /// When the publisher read it off the channel, ms since the epoch.
    #[serde(default)]
    pub received_ms: Option<u64>,
    pub state: State,
}

/// Where an event's state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An event on an XSI-Events channel.
    Event,
    /// Read through XSI-Actions after a gap (a reconnect, a restart): the whole state, which a
    /// consumer should take as such.
    Resync,
}

/// An event package, by its exact BroadWorks name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Package {
    #[serde(rename = "Advanced Call")]
    AdvancedCall,
    #[serde(rename = "Basic Call")]
    BasicCall,
    #[serde(rename = "Standard Call")]
    StandardCall,
    #[serde(rename = "Do Not Disturb")]
    DoNotDisturb,
    #[serde(rename = "Call Forwarding Always")]
    CallForwardingAlways,
    #[serde(rename = "Remote Office")]
    RemoteOffice,
    #[serde(rename = "Voice Mail Message Summary")]
    VoiceMailMessageSummary,
    #[serde(rename = "CommPilot Express")]
    CommPilotExpress,
    #[serde(rename = "Call Center Queue")]
    CallCenterQueue,
    #[serde(rename = "Call Center Monitoring")]
    CallCenterMonitoring,
    #[serde(rename = "Call Center Agent")]
    CallCenterAgent,
    #[serde(rename = "Call Center Agent Monitoring")]
    CallCenterAgentMonitoring,
}

impl Package {
    pub const ALL: [Self; 12] = [
        Self::AdvancedCall,
        Self::BasicCall,
        Self::StandardCall,
        Self::DoNotDisturb,
        Self::CallForwardingAlways,
        Self::RemoteOffice,
        Self::VoiceMailMessageSummary,
        Self::CommPilotExpress,
        Self::CallCenterQueue,
        Self::CallCenterMonitoring,
        Self::CallCenterAgent,
        Self::CallCenterAgentMonitoring,
    ];

    /// The product's default set (design §2): Advanced Call, DND, the call-centre packages,
    /// voice mail, forwarding, remote office and CommPilot Express.
    pub const DEFAULT: [Self; 9] = [
        Self::AdvancedCall,
        Self::DoNotDisturb,
        Self::CallCenterQueue,
        Self::CallCenterAgentMonitoring,
        Self::VoiceMailMessageSummary,
        Self::CallForwardingAlways,
        Self::RemoteOffice,
        Self::CallCenterMonitoring,
        Self::CommPilotExpress,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::AdvancedCall => "Advanced Call",
            Self::BasicCall => "Basic Call",
            Self::StandardCall => "Standard Call",
            Self::DoNotDisturb => "Do Not Disturb",
            Self::CallForwardingAlways => "Call Forwarding Always",
            Self::RemoteOffice => "Remote Office",
            Self::VoiceMailMessageSummary => "Voice Mail Message Summary",
            Self::CommPilotExpress => "CommPilot Express",
            Self::CallCenterQueue => "Call Center Queue",
            Self::CallCenterMonitoring => "Call Center Monitoring",
            Self::CallCenterAgent => "Call Center Agent",
            Self::CallCenterAgentMonitoring => "Call Center Agent Monitoring",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The call packages, whose state XSI-Actions gives as the user's call list.
    pub fn is_call(self) -> bool {
        matches!(
            self,
            Self::AdvancedCall | Self::BasicCall | Self::StandardCall
        )
    }
}

/// The state an event or a resync reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum State {
    DoNotDisturb {
        active: bool,
        ring_splash: bool,
    },
    CallForwardingAlways {
        active: bool,
        forward_to: Option<String>,
        ring_splash: bool,
    },
    RemoteOffice {
        active: bool,
        number: Option<String>,
    },
    /// The CommPilot Express profile in force; `None` when none is set.
    CommPilotExpress {
        profile: Option<String>,
    },
    VoiceMailSummary {
        new_messages: u32,
        old_messages: u32,
        new_urgent_messages: u32,
        old_urgent_messages: u32,
    },
    /// Every call of the user: a call package's initial event, or a resync.
    Calls {
        hook_status: Option<String>,
        calls: Vec<Call>,
    },
    /// One call changed; the event type says how (`CallReceivedEvent`, `CallReleasedEvent`, …).
    Call {
        call: Call,
    },
    HookStatus {
        hook_status: String,
    },
    /// Every call waiting in a call centre's queue (`ACDSubscriptionEvent`).
    Queue {
        entries: Vec<QueueEntry>,
    },
    /// One queued call changed (`ACDCallAddedEvent`, `ACDCallAbandonedEvent`, …).
    QueuedCall {
        entry: Option<QueueEntry>,
        call_id: Option<String>,
        position: Option<u32>,
    },
    /// A call-centre agent's state, with the call centres joined when the event lists them.
    Agent {
        state: Option<String>,
        since_ms: Option<u64>,
        call_centers: Option<Vec<Membership>>,
    },
    /// Call Center Monitoring or Call Center Agent Monitoring figures, by their XSI names.
    Monitoring {
        figures: Vec<Figure>,
    },
    /// The service was unassigned from the user.
    Unassigned,
    /// The subscription ended on the server.
    SubscriptionTerminated,
    /// A kind this build does not know (a newer publisher's): consumers skip it. Never
    /// published.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub call_id: String,
    pub ext_tracking_id: Option<String>,
    pub personality: Option<String>,
    pub state: Option<String>,
    pub remote_party: Option<Party>,
    pub start_time: Option<u64>,
    pub answer_time: Option<u64>,
    pub release_time: Option<u64>,
    pub releasing_party: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub name: Option<String>,
    pub address: Option<String>,
    pub user_id: Option<String>,
    pub call_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub call_id: String,
    pub ext_tracking_id: Option<String>,
    pub remote_party: Option<Party>,
    pub add_time: Option<u64>,
    pub remove_time: Option<u64>,
    pub acd_name: Option<String>,
    pub acd_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub call_center: String,
    pub joined: bool,
    pub skill_level: Option<u32>,
}

/// A monitoring figure: a count, or a statistic with its severity against a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: u64,
    pub severity: Option<u32>,
    pub threshold: Option<u64>,
}
