//! The simulated application server's directory: users, administrators, and the service state
//! that XSI-Actions read and change. One directory is shared by every simulated XSP.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where an administrator may act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "level", deny_unknown_fields)]
pub enum AdminScope {
    System,
    /// An enterprise or service provider administrator.
    ServiceProvider {
        service_provider: String,
    },
    Group {
        service_provider: String,
        group: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub user_id: String,
    pub password: String,
    pub scope: AdminScope,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DoNotDisturb {
    pub active: bool,
    pub ring_splash: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallForwardingAlways {
    pub active: bool,
    pub forward_to_phone_number: Option<String>,
    pub ring_splash: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteOffice {
    pub active: bool,
    pub remote_office_number: Option<String>,
}

/// The CommPilot Express profile in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommPilotExpressProfile {
    #[serde(rename = "Available In Office")]
    AvailableInOffice,
    #[serde(rename = "Available Out Of Office")]
    AvailableOutOfOffice,
    #[serde(rename = "Busy")]
    Busy,
    #[serde(rename = "Unavailable")]
    Unavailable,
}

impl CommPilotExpressProfile {
    pub const ALL: [Self; 4] = [
        Self::AvailableInOffice,
        Self::AvailableOutOfOffice,
        Self::Busy,
        Self::Unavailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::AvailableInOffice => "Available In Office",
            Self::AvailableOutOfOffice => "Available Out Of Office",
            Self::Busy => "Busy",
            Self::Unavailable => "Unavailable",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A call-centre agent's state (`AgentState`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentState {
    #[serde(rename = "Sign-In")]
    SignIn,
    #[serde(rename = "Available")]
    Available,
    #[serde(rename = "Unavailable")]
    Unavailable,
    #[serde(rename = "Wrap-Up")]
    WrapUp,
    #[default]
    #[serde(rename = "Sign-Out")]
    SignOut,
}

impl AgentState {
    pub fn name(self) -> &'static str {
        match self {
            Self::SignIn => "Sign-In",
            Self::Available => "Available",
            Self::Unavailable => "Unavailable",
            Self::WrapUp => "Wrap-Up",
            Self::SignOut => "Sign-Out",
        }
    }

    /// Staffed agents are signed in, in any state.
    pub fn is_staffed(self) -> bool {
        self != Self::SignOut
    }
}

/// What Call Center Agent Monitoring reports of an agent, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentMonitoring {
    pub average_acd_call_time_ms: u64,
    pub average_acd_outgoing_call_time_ms: u64,
}

/// A call centre: a virtual user with agents and a queue of waiting calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallCenter {
    pub user_id: String,
    pub name: String,
    pub number: String,
    pub service_provider: String,
    pub group: String,
    #[serde(default)]
    pub agents: Vec<String>,
    /// Calls waiting, oldest first; filled through the control API.
    #[serde(skip_deserializing, default)]
    pub queue: Vec<QueueEntry>,
}

/// A call waiting in a call centre's queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueEntry {
    pub call_id: String,
    pub ext_tracking_id: String,
    pub name: Option<String>,
    pub address: String,
    /// Epoch milliseconds.
    pub add_time: u64,
}

/// The voice mailbox, as the Voice Mail Message Summary package reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceMail {
    pub new_messages: u32,
    pub old_messages: u32,
}

/// One subscriber with its profile and the state of its services.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub user_id: String,
    pub password: String,
    pub service_provider: String,
    #[serde(default)]
    pub is_enterprise: bool,
    pub group: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub extension: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub do_not_disturb: DoNotDisturb,
    #[serde(default)]
    pub call_forwarding_always: CallForwardingAlways,
    #[serde(default)]
    pub remote_office: RemoteOffice,
    #[serde(default)]
    pub voice_mail: VoiceMail,
    /// No profile when absent.
    #[serde(default)]
    pub comm_pilot_express: Option<CommPilotExpressProfile>,
    /// Meaningful for agents of a call centre.
    #[serde(default)]
    pub agent_state: AgentState,
    /// When the agent entered its state, in epoch milliseconds.
    #[serde(default)]
    pub agent_state_since_ms: u64,
    #[serde(default)]
    pub agent_monitoring: AgentMonitoring,
    /// The Busy Lamp Field service's monitored users, by user id, in order.
    #[serde(default)]
    pub busy_lamp_field: Vec<String>,
}

/// Everyone the application server knows, by user id (BroadWorks user ids are case-insensitive).
#[derive(Debug, Clone, Default)]
pub struct Directory {
    users: BTreeMap<String, User>,
    admins: BTreeMap<String, Admin>,
    call_centers: BTreeMap<String, CallCenter>,
}

/// Who authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User(String),
    Admin { user_id: String, scope: AdminScope },
}

impl Principal {
    pub fn user_id(&self) -> &str {
        match self {
            Self::User(id) | Self::Admin { user_id: id, .. } => id,
        }
    }
}

fn key(user_id: &str) -> String {
    user_id.to_ascii_lowercase()
}

impl Directory {
    pub fn new(users: Vec<User>, admins: Vec<Admin>, call_centers: Vec<CallCenter>) -> Self {
        Self {
            users: users.into_iter().map(|u| (key(&u.user_id), u)).collect(),
            admins: admins.into_iter().map(|a| (key(&a.user_id), a)).collect(),
            call_centers: call_centers
                .into_iter()
                .map(|c| (key(&c.user_id), c))
                .collect(),
        }
    }

    pub fn call_center(&self, user_id: &str) -> Option<&CallCenter> {
        self.call_centers.get(&key(user_id))
    }

    pub fn call_center_mut(&mut self, user_id: &str) -> Option<&mut CallCenter> {
        self.call_centers.get_mut(&key(user_id))
    }

    /// The call centres an agent serves.
    pub fn call_centers_of<'a>(
        &'a self,
        agent: &'a str,
    ) -> impl Iterator<Item = &'a CallCenter> + 'a {
        self.call_centers
            .values()
            .filter(move |c| c.agents.iter().any(|a| a.eq_ignore_ascii_case(agent)))
    }

    /// Whether `principal` may watch a call centre: its agents, and administrators in scope.
    pub fn may_watch_call_center(principal: &Principal, center: &CallCenter) -> bool {
        match principal {
            Principal::User(id) => center.agents.iter().any(|a| a.eq_ignore_ascii_case(id)),
            Principal::Admin { scope, .. } => match scope {
                AdminScope::System => true,
                AdminScope::ServiceProvider { service_provider } => {
                    *service_provider == center.service_provider
                }
                AdminScope::Group {
                    service_provider,
                    group,
                } => *service_provider == center.service_provider && *group == center.group,
            },
        }
    }

    pub fn user(&self, user_id: &str) -> Option<&User> {
        self.users.get(&key(user_id))
    }

    pub fn user_mut(&mut self, user_id: &str) -> Option<&mut User> {
        self.users.get_mut(&key(user_id))
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn upsert_user(&mut self, user: User) {
        self.users.insert(key(&user.user_id), user);
    }

    /// Checks a user id and password the way the XSP's internal authentication does.
    pub fn authenticate(&self, user_id: &str, password: &str) -> Option<Principal> {
        if let Some(user) = self.user(user_id) {
            return (user.password == password).then(|| Principal::User(user.user_id.clone()));
        }
        let admin = self.admins.get(&key(user_id))?;
        (admin.password == password).then(|| Principal::Admin {
            user_id: admin.user_id.clone(),
            scope: admin.scope.clone(),
        })
    }

    /// Whether `principal` may act on `user`'s resources: a user on its own, an admin in scope.
    pub fn may_access(principal: &Principal, user: &User) -> bool {
        match principal {
            Principal::User(id) => id.eq_ignore_ascii_case(&user.user_id),
            Principal::Admin { scope, .. } => match scope {
                AdminScope::System => true,
                AdminScope::ServiceProvider { service_provider } => {
                    *service_provider == user.service_provider
                }
                AdminScope::Group {
                    service_provider,
                    group,
                } => *service_provider == user.service_provider && *group == user.group,
            },
        }
    }
}
