//! The event bus between the host and the plugins: topic -> subscribers, each consumer with a
//! bounded queue of its own, and the session events the host publishes.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use xsigate_plugin_sdk::topics::{self, SessionEnded, SessionStarted};

use super::hooks::Plugin;

/// Events waiting for one consumer; beyond this new events for it are dropped and counted.
pub(super) const EVENT_QUEUE: usize = 1024;

/// An event on its way to a consumer.
pub(super) struct QueuedEvent {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Where the consumer's report goes, for events whose publisher waits for one.
    pub report: Option<oneshot::Sender<Option<serde_json::Value>>>,
}

/// A consumer plugin and the queue its events wait in.
pub(super) struct Subscriber {
    pub plugin: Arc<Plugin>,
    pub queue: mpsc::Sender<QueuedEvent>,
}

/// Topic -> subscribers. Fixed at start: subscriptions are made during init.
pub(super) type Bus = HashMap<String, Vec<Subscriber>>;

/// A login session's start or end, as [`Plugins::publish_session`] announces it.
#[derive(Debug)]
pub enum SessionEvent {
    /// With the user's credentials: only subscribers that declare `session_credentials` get
    /// them.
    Started(SessionStarted),
    Ended(SessionEnded),
}

impl SessionEvent {
    pub(super) fn topic(&self) -> &'static str {
        match self {
            Self::Started(_) => topics::SESSION_STARTED,
            Self::Ended(_) => topics::SESSION_ENDED,
        }
    }

    /// The payload one subscriber gets.
    pub(super) fn payload_for(&self, plugin: &Plugin) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Self::Started(started) if !plugin.manifest.session_credentials => {
                serde_json::to_vec(&SessionStarted {
                    credentials: None,
                    ..started.clone()
                })
            }
            Self::Started(started) => serde_json::to_vec(started),
            Self::Ended(ended) => serde_json::to_vec(ended),
        }
    }
}
