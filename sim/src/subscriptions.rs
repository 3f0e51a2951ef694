//! XSI-Events subscriptions: who wants which packages for which target, delivered on which
//! channel set. Subscriptions outlive their channels (they belong to the channel set) and end by
//! `DELETE` or expiry, which sends `SubscriptionTerminatedEvent`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::directory::User;

/// The event packages this simulator generates events for, by their exact BroadWorks names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventPackage {
    AdvancedCall,
    BasicCall,
    StandardCall,
    DoNotDisturb,
    CallForwardingAlways,
    RemoteOffice,
    VoiceMailMessageSummary,
    CommPilotExpress,
    CallCenterQueue,
    CallCenterMonitoring,
    CallCenterAgent,
    CallCenterAgentMonitoring,
}

impl EventPackage {
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
}

/// Who an event is about: a user, or a call centre (a virtual user).
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub id: &'a str,
    pub service_provider: &'a str,
    pub group: &'a str,
}

impl<'a> From<&'a User> for Subject<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            id: &user.user_id,
            service_provider: &user.service_provider,
            group: &user.group,
        }
    }
}

impl<'a> From<&'a crate::directory::CallCenter> for Subject<'a> {
    fn from(center: &'a crate::directory::CallCenter) -> Self {
        Self {
            id: &center.user_id,
            service_provider: &center.service_provider,
            group: &center.group,
        }
    }
}

/// What a subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(String),
    Group {
        service_provider: String,
        group: String,
    },
    ServiceProvider(String),
    System,
}

impl Target {
    pub fn covers(&self, subject: Subject<'_>) -> bool {
        match self {
            Self::User(id) => id.eq_ignore_ascii_case(subject.id),
            Self::Group {
                service_provider,
                group,
            } => service_provider == subject.service_provider && group == subject.group,
            Self::ServiceProvider(sp) => sp == subject.service_provider,
            Self::System => true,
        }
    }

    /// `targetIdType` as BroadWorks reports it (enterprises report as `ServiceProvider`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::User(_) => "User",
            Self::Group { .. } => "Group",
            Self::ServiceProvider(_) => "ServiceProvider",
            Self::System => "System",
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Self::User(id) | Self::ServiceProvider(id) => Some(id),
            Self::Group { group, .. } => Some(group),
            Self::System => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    /// The subscriber (the authenticated user or administrator).
    pub owner: String,
    pub target: Target,
    pub packages: Vec<EventPackage>,
    pub channel_set_id: String,
    pub application_id: String,
    pub expires_at: Instant,
    /// The last `sequenceNumber` used; numbering is per subscription.
    pub sequence: u64,
}

/// What the control API shows of a subscription.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    pub subscription_id: String,
    pub owner: String,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub packages: Vec<&'static str>,
    pub channel_set_id: String,
    pub expires_in: u64,
    pub events_sent: u64,
}

#[derive(Debug, Default)]
pub struct Subscriptions {
    by_id: HashMap<String, Subscription>,
}

impl Subscriptions {
    pub fn add(&mut self, subscription: Subscription) {
        self.by_id.insert(subscription.id.clone(), subscription);
    }

    /// A subscription as its owner sees it (others' subscriptions are not there for them).
    pub fn owned(&mut self, id: &str, owner: &str) -> Option<&mut Subscription> {
        self.by_id
            .get_mut(id)
            .filter(|s| s.owner.eq_ignore_ascii_case(owner))
    }

    /// Subscriptions of `owner`, oldest id order, for queries.
    pub fn of_owner<'a>(&'a self, owner: &'a str) -> impl Iterator<Item = &'a Subscription> + 'a {
        let mut owned: Vec<&Subscription> = self
            .by_id
            .values()
            .filter(|s| s.owner.eq_ignore_ascii_case(owner))
            .collect();
        owned.sort_by(|a, b| a.id.cmp(&b.id));
        owned.into_iter()
    }

    pub fn by_id_mut(&mut self, id: &str) -> Option<&mut Subscription> {
        self.by_id.get_mut(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<Subscription> {
        self.by_id.remove(id)
    }

    /// Subscriptions that want `package` events about `subject`.
    pub fn matching<'a>(
        &'a mut self,
        subject: Subject<'a>,
        package: EventPackage,
    ) -> impl Iterator<Item = &'a mut Subscription> + 'a {
        self.by_id
            .values_mut()
            .filter(move |s| s.packages.contains(&package) && s.target.covers(subject))
    }

    /// Removes and returns what has expired.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Subscription> {
        let ids: Vec<String> = self
            .by_id
            .values()
            .filter(|s| s.expires_at <= now)
            .map(|s| s.id.clone())
            .collect();
        ids.iter().filter_map(|id| self.by_id.remove(id)).collect()
    }

    pub fn views(&self) -> Vec<SubscriptionView> {
        let now = Instant::now();
        let mut views: Vec<SubscriptionView> = self
            .by_id
            .values()
            .map(|s| SubscriptionView {
                subscription_id: s.id.clone(),
                owner: s.owner.clone(),
                target_type: s.target.type_name(),
                target_id: s.target.id().map(str::to_owned),
                packages: s.packages.iter().map(|p| p.name()).collect(),
                channel_set_id: s.channel_set_id.clone(),
                expires_in: s.expires_at.saturating_duration_since(now).as_secs(),
                events_sent: s.sequence,
            })
            .collect();
        views.sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
        views
    }
}

/// Seconds from now as an instant, saturating far in the future for "never expires".
pub fn expiry(seconds: u64) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(seconds))
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}
