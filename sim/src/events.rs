//! XSI-Events channels: the long-lived streams, and the commands that keep them alive.
//!
//! A channel belongs to the XSP whose connection carries its stream; heartbeats, updates and
//! deletes sent to another XSP find no such channel (404), as on a real cluster. Channels end by
//! `DELETE` (`ExplicitDelete`), expiry (`Expired`), a newer channel set of the same user and
//! application (`DuplicateChannelSet`), or silence: no heartbeat for `event_timeout`, after which
//! the XSP tears the connection down.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::xml;

/// Documents buffered per channel before a slow reader starts losing them.
const STREAM_BUFFER: usize = 256;

/// Timing rules of the simulated XSPs, from the seed's `[events]` table.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// A requested channel `expires` below this or above `channel_expires_max` is answered with
    /// `channel_expires_max`, as servers substitute their own value rather than refuse.
    pub channel_expires_min: u64,
    pub channel_expires_max: u64,
    /// A channel without a heartbeat for this long is torn down.
    pub event_timeout_seconds: u64,
    /// A channel with an event unacknowledged for this long ends with `NonResponsiveChannel`.
    pub ack_timeout_seconds: u64,
    /// Subscription `expires` range; a request outside it gets `subscription_expires_max`.
    pub subscription_expires_min: u64,
    pub subscription_expires_max: u64,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            channel_expires_min: 3600,
            channel_expires_max: 86400,
            event_timeout_seconds: 30,
            ack_timeout_seconds: 30,
            subscription_expires_min: 3600,
            subscription_expires_max: 86400,
        }
    }
}

impl EventSettings {
    /// The channel `expires` the server grants for a requested one (absent means the minimum).
    pub fn grant(&self, requested: Option<u64>) -> u64 {
        grant(
            requested,
            self.channel_expires_min,
            self.channel_expires_max,
        )
    }

    /// The subscription `expires` the server grants.
    pub fn grant_subscription(&self, requested: Option<u64>) -> u64 {
        grant(
            requested,
            self.subscription_expires_min,
            self.subscription_expires_max,
        )
    }
}

fn grant(requested: Option<u64>, min: u64, max: u64) -> u64 {
    match requested {
        Some(requested) if (min..=max).contains(&requested) => requested,
        None => min,
        Some(_) => max,
    }
}

/// Why a channel ended (`ChannelTerminatedReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TerminationReason {
    ExplicitDelete,
    Expired,
    DuplicateChannelSet,
    NonResponsiveChannel,
}

impl TerminationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExplicitDelete => "ExplicitDelete",
            Self::Expired => "Expired",
            Self::DuplicateChannelSet => "DuplicateChannelSet",
            Self::NonResponsiveChannel => "NonResponsiveChannel",
        }
    }
}

/// One open channel.
#[derive(Debug)]
pub struct Channel {
    pub id: String,
    pub xsp: usize,
    pub channel_set_id: String,
    /// The user id the channel was created for.
    pub owner: String,
    pub application_id: Option<String>,
    pub priority: u32,
    pub weight: u32,
    pub expires_at: Instant,
    pub last_heartbeat: Instant,
    pub heartbeats: u64,
    stream: mpsc::Sender<Bytes>,
}

impl Channel {
    /// Writes one document to the stream; a full or closed stream drops it, as a dead TCP
    /// connection would.
    fn send(&self, document: String) {
        let _ = self.stream.try_send(Bytes::from(document));
    }

    pub fn expires_in(&self, now: Instant) -> u64 {
        self.expires_at.saturating_duration_since(now).as_secs()
    }
}

/// What the control API shows of a channel.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    pub channel_id: String,
    pub xsp: usize,
    pub channel_set_id: String,
    pub owner: String,
    pub expires_in: u64,
    pub heartbeats: u64,
}

/// A channel to create, as the client asked for it.
#[derive(Debug)]
pub struct NewChannel {
    pub xsp: usize,
    pub owner: String,
    pub channel_set_id: String,
    pub application_id: Option<String>,
    pub priority: u32,
    pub weight: u32,
    pub expires: u64,
}

/// A channel was asked for in a channel set that another user's channels hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetOfAnother;

/// Every open channel of the platform, by channel id.
#[derive(Debug, Default)]
pub struct Channels {
    open: HashMap<String, Channel>,
    /// Events sent and not yet acknowledged: event id to (channel id, when sent).
    pending: HashMap<String, (String, Instant)>,
    /// Every channel the platform terminated, oldest first.
    terminated: Vec<Termination>,
}

/// A channel the platform terminated, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Termination {
    pub channel_id: String,
    pub channel_set_id: String,
    pub owner: String,
    pub reason: &'static str,
}

impl Channels {
    /// Opens a channel and returns its id with the receiving end of its stream, whose first
    /// document is the `Channel` answer. Channel sets of the same user and application under
    /// another set id end with `DuplicateChannelSet`. A channel set belongs to the user who
    /// made it: a channel in another user's set is refused.
    pub fn open(
        &mut self,
        new: NewChannel,
    ) -> Result<(String, mpsc::Receiver<Bytes>), SetOfAnother> {
        if self
            .in_set(&new.channel_set_id)
            .any(|c| !c.owner.eq_ignore_ascii_case(&new.owner))
        {
            return Err(SetOfAnother);
        }
        if let Some(application) = &new.application_id {
            let duplicates: Vec<String> = self
                .open
                .values()
                .filter(|c| {
                    c.owner.eq_ignore_ascii_case(&new.owner)
                        && c.application_id.as_ref() == Some(application)
                        && c.channel_set_id != new.channel_set_id
                })
                .map(|c| c.id.clone())
                .collect();
            for id in duplicates {
                self.terminate(&id, TerminationReason::DuplicateChannelSet);
            }
        }
        let id = xml::new_id();
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let now = Instant::now();
        let channel = Channel {
            id: id.clone(),
            xsp: new.xsp,
            channel_set_id: new.channel_set_id,
            owner: new.owner,
            application_id: new.application_id,
            priority: new.priority,
            weight: new.weight,
            expires_at: now + Duration::from_secs(new.expires),
            last_heartbeat: now,
            heartbeats: 0,
            stream: sender,
        };
        channel.send(xml::channel_opened(&id, new.expires));
        self.open.insert(id.clone(), channel);
        Ok((id, receiver))
    }

    /// The channel `id` as seen from XSP `xsp`: a channel on another XSP is not found there.
    pub fn on_xsp(&mut self, id: &str, xsp: usize) -> Option<&mut Channel> {
        self.open.get_mut(id).filter(|c| c.xsp == xsp)
    }

    pub fn heartbeat(&mut self, id: &str, xsp: usize) -> bool {
        let Some(channel) = self.on_xsp(id, xsp) else {
            return false;
        };
        channel.last_heartbeat = Instant::now();
        channel.heartbeats += 1;
        channel.send(xml::channel_heartbeat());
        true
    }

    /// Sends `ChannelTerminatedEvent` and closes the stream.
    pub fn terminate(&mut self, id: &str, reason: TerminationReason) {
        if let Some(channel) = self.open.remove(id) {
            channel.send(xml::channel_terminated(id, reason.as_str()));
            self.terminated.push(Termination {
                channel_id: channel.id,
                channel_set_id: channel.channel_set_id,
                owner: channel.owner,
                reason: reason.as_str(),
            });
        }
        self.pending.retain(|_, (channel, _)| channel != id);
    }

    /// Sends an event of `owner`'s subscription on the preferred channel of `owner`'s set
    /// (lowest priority value, then highest weight) and waits for its acknowledgement. `render`
    /// gets the channel id. Without such a channel the event is lost, as BroadWorks drops it.
    pub fn deliver(
        &mut self,
        channel_set_id: &str,
        owner: &str,
        event_id: &str,
        render: impl FnOnce(&str) -> String,
    ) -> bool {
        let Some(channel) = self
            .open
            .values()
            .filter(|c| c.channel_set_id == channel_set_id && c.owner.eq_ignore_ascii_case(owner))
            .min_by_key(|c| (c.priority, std::cmp::Reverse(c.weight), c.id.clone()))
        else {
            return false;
        };
        channel.send(render(&channel.id));
        self.pending
            .insert(event_id.to_owned(), (channel.id.clone(), Instant::now()));
        true
    }

    /// An `EventResponse` for `event_id` arrived at XSP `xsp`; it counts only on the XSP that
    /// holds the event's channel.
    pub fn acknowledge(&mut self, xsp: usize, event_id: &str) -> bool {
        let on_this_xsp = self
            .pending
            .get(event_id)
            .and_then(|(channel, _)| self.open.get(channel))
            .is_some_and(|c| c.xsp == xsp);
        if on_this_xsp {
            self.pending.remove(event_id);
        }
        on_this_xsp
    }

    /// Every channel of a set, on any XSP.
    pub fn in_set<'a>(&'a self, channel_set_id: &'a str) -> impl Iterator<Item = &'a Channel> + 'a {
        self.open
            .values()
            .filter(move |c| c.channel_set_id == channel_set_id)
    }

    /// Ends what has expired or stopped acknowledging, and drops what went silent.
    pub fn sweep(&mut self, settings: &EventSettings, now: Instant) {
        let ack_timeout = Duration::from_secs(settings.ack_timeout_seconds);
        let mut unresponsive: Vec<String> = self
            .pending
            .values()
            .filter(|(_, sent)| now.saturating_duration_since(*sent) >= ack_timeout)
            .map(|(channel, _)| channel.clone())
            .collect();
        unresponsive.sort();
        unresponsive.dedup();
        for id in unresponsive {
            self.terminate(&id, TerminationReason::NonResponsiveChannel);
        }
        let expired: Vec<String> = self
            .open
            .values()
            .filter(|c| c.expires_at <= now)
            .map(|c| c.id.clone())
            .collect();
        for id in expired {
            self.terminate(&id, TerminationReason::Expired);
        }
        let timeout = Duration::from_secs(settings.event_timeout_seconds);
        self.open
            .retain(|_, c| now.saturating_duration_since(c.last_heartbeat) < timeout);
        let open = &self.open;
        self.pending
            .retain(|_, (channel, _)| open.contains_key(channel));
    }

    /// Writes `document` on a channel's stream as it is, as a server with a bug or a newer
    /// release might; with `event_id` it waits for an acknowledgement like any event.
    pub fn inject(&mut self, id: &str, document: String, event_id: Option<&str>) -> bool {
        let Some(channel) = self.open.get(id) else {
            return false;
        };
        channel.send(document);
        if let Some(event_id) = event_id {
            self.pending
                .insert(event_id.to_owned(), (id.to_owned(), Instant::now()));
        }
        true
    }

    /// Ends a channel's stream abruptly, as a broken connection does: no termination event.
    pub fn cut(&mut self, id: &str) -> bool {
        let cut = self.open.remove(id).is_some();
        self.pending.retain(|_, (channel, _)| channel != id);
        cut
    }

    /// Drops every channel of a killed XSP: their connections are gone.
    pub fn drop_xsp(&mut self, xsp: usize) {
        self.open.retain(|_, c| c.xsp != xsp);
        let open = &self.open;
        self.pending
            .retain(|_, (channel, _)| open.contains_key(channel));
    }

    /// The channels terminated so far, oldest first.
    pub fn terminations(&self) -> Vec<Termination> {
        self.terminated.clone()
    }

    pub fn views(&self) -> Vec<ChannelView> {
        let now = Instant::now();
        let mut views: Vec<ChannelView> = self
            .open
            .values()
            .map(|c| ChannelView {
                channel_id: c.id.clone(),
                xsp: c.xsp,
                channel_set_id: c.channel_set_id.clone(),
                owner: c.owner.clone(),
                expires_in: c.expires_in(now),
                heartbeats: c.heartbeats,
            })
            .collect();
        views.sort_by(|a, b| a.channel_id.cmp(&b.channel_id));
        views
    }
}
