//! The busy lamp field: which users each logged-in user (a watcher) may watch, and the lamps it
//! sees, kept in the watcher's own node as `blf/<monitored uniqueId>`.
//!
//! Why the watcher's node: the shipped rules already let a browser read its own node and
//! nothing of anyone else's, so no rule has to look anything up per read, and a user dropped
//! from a watcher's list is simply deleted from that node (the watcher can no longer read the
//! lamp). The price is one write per watcher of a user whose lamp changes, and only when the
//! lamp changes (a call's progress, not every event): at the benches' rates that is a few
//! locations per event, batched with everything else firebase-sync writes.
//!
//! A lamp carries a state, since when, and a display name: never a userId, a number or
//! anything else of the monitored user.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use xsigate_plugin_sdk::serde_json::{Value, json};

use crate::tree::Node;

/// Where the lamps live in a watcher's node.
pub const LAMPS: &str = "blf";

/// What a lamp shows, in order of precedence: a line in use outweighs a held call, which
/// outweighs a ringing one; Do Not Disturb shows only on a free line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LampState {
    Busy,
    Held,
    Ringing,
    DoNotDisturb,
    Idle,
}

impl LampState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Held => "held",
            Self::Ringing => "ringing",
            Self::DoNotDisturb => "dnd",
            Self::Idle => "idle",
        }
    }

    /// The lamp of a user's node as firebase-sync keeps it (`calls`, `dnd`).
    pub fn of(node: Option<&Node>) -> Self {
        let Some(node) = node else {
            return Self::Idle;
        };
        let (mut busy, mut held, mut ringing) = (false, false, false);
        if let Some(calls) = node.get("calls").and_then(Value::as_object) {
            for call in calls.values() {
                let state = call.get("state").and_then(Value::as_str).unwrap_or("");
                let personality = call.get("personality").and_then(Value::as_str);
                match (state, personality) {
                    ("Released" | "Detached", _) => {}
                    ("Alerting", Some("Terminator")) => ringing = true,
                    ("Held", _) => held = true,
                    _ => busy = true,
                }
            }
        }
        let dnd = node
            .get("dnd")
            .and_then(|d| d.get("active"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if busy {
            Self::Busy
        } else if held {
            Self::Held
        } else if ringing {
            Self::Ringing
        } else if dnd {
            Self::DoNotDisturb
        } else {
            Self::Idle
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lamp {
    state: LampState,
    since_ms: u64,
}

/// A logged-in user of a provider with BLF, and whom it watches.
#[derive(Debug)]
struct Watcher {
    provider: String,
    sessions: usize,
    /// Monitored users' uniqueIds and display names.
    monitored: BTreeMap<String, String>,
    /// When its monitored users were last read; `None` until the first read.
    refreshed_at: Option<Instant>,
}

/// One location of a watcher's node to write: a lamp, or `null` to delete.
#[derive(Debug, PartialEq)]
pub struct LampWrite {
    pub watcher: String,
    pub provider: String,
    pub path: String,
    pub value: Value,
}

/// Watchers, whom each watches, and the lamps they see.
#[derive(Debug, Default)]
pub struct Watching {
    watchers: HashMap<String, Watcher>,
    watched_by: HashMap<String, HashSet<String>>,
    lamps: HashMap<String, Lamp>,
}

impl Watching {
    /// A session of `watcher` started.
    pub fn session_started(&mut self, provider: &str, watcher: &str) {
        let entry = self
            .watchers
            .entry(watcher.to_owned())
            .or_insert_with(|| Watcher {
                provider: provider.to_owned(),
                sessions: 0,
                monitored: BTreeMap::new(),
                refreshed_at: None,
            });
        entry.sessions += 1;
    }

    /// A session of `watcher` ended. After its last one it watches nobody: its lamps are
    /// deleted (the answer), so that nothing stays behind in its node.
    pub fn session_ended(&mut self, watcher: &str, last: bool) -> Option<LampWrite> {
        let entry = self.watchers.get_mut(watcher)?;
        entry.sessions = entry.sessions.saturating_sub(1);
        if !last && entry.sessions > 0 {
            return None;
        }
        let gone = self.watchers.remove(watcher)?;
        for monitored in gone.monitored.keys() {
            self.unwatch(monitored, watcher);
        }
        Some(LampWrite {
            watcher: watcher.to_owned(),
            provider: gone.provider,
            path: LAMPS.to_owned(),
            value: Value::Null,
        })
    }

    /// Watchers whose monitored users are due to be read again.
    pub fn due(
        &self,
        now: Instant,
        every: impl Fn(&str) -> std::time::Duration,
    ) -> Vec<(String, String)> {
        self.watchers
            .iter()
            .filter(|(_, w)| {
                w.refreshed_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= every(&w.provider))
            })
            .map(|(id, w)| (id.clone(), w.provider.clone()))
            .collect()
    }

    /// A read of the watcher's monitored users failed: try again after the interval.
    pub fn refresh_failed(&mut self, watcher: &str, now: Instant) {
        if let Some(entry) = self.watchers.get_mut(watcher) {
            entry.refreshed_at = Some(now);
        }
    }

    /// The watcher's monitored users are now `monitored` (uniqueId → display name): answers the
    /// lamps to write for those added or renamed, and deletions for those removed. `node_of`
    /// gives a monitored user's node, for the lamp of someone not seen changing yet.
    pub fn set_monitored<'a>(
        &mut self,
        watcher: &str,
        monitored: BTreeMap<String, String>,
        now: Instant,
        now_ms: u64,
        node_of: impl Fn(&str) -> Option<&'a Node>,
    ) -> Vec<LampWrite> {
        let Some(entry) = self.watchers.get_mut(watcher) else {
            return Vec::new();
        };
        entry.refreshed_at = Some(now);
        let provider = entry.provider.clone();
        let before = std::mem::take(&mut entry.monitored);
        let mut writes = Vec::new();
        for gone in before.keys().filter(|id| !monitored.contains_key(*id)) {
            self.unwatch(gone, watcher);
            writes.push(LampWrite {
                watcher: watcher.to_owned(),
                provider: provider.clone(),
                path: format!("{LAMPS}/{gone}"),
                value: Value::Null,
            });
        }
        for (id, name) in &monitored {
            if before.get(id) == Some(name) {
                continue;
            }
            self.watched_by
                .entry(id.clone())
                .or_default()
                .insert(watcher.to_owned());
            let lamp = *self.lamps.entry(id.clone()).or_insert_with(|| Lamp {
                state: LampState::of(node_of(id)),
                since_ms: now_ms,
            });
            writes.push(LampWrite {
                watcher: watcher.to_owned(),
                provider: provider.clone(),
                path: format!("{LAMPS}/{id}"),
                value: lamp_value(lamp, name),
            });
        }
        if let Some(entry) = self.watchers.get_mut(watcher) {
            entry.monitored = monitored;
        }
        writes
    }

    /// A user's node changed: when its lamp changed too, the writes to each watcher of it.
    pub fn node_changed(
        &mut self,
        unique_id: &str,
        node: Option<&Node>,
        at_ms: u64,
    ) -> Vec<LampWrite> {
        let Some(watchers) = self.watched_by.get(unique_id) else {
            return Vec::new();
        };
        let state = LampState::of(node);
        let lamp = self.lamps.entry(unique_id.to_owned()).or_insert(Lamp {
            state,
            since_ms: at_ms,
        });
        if lamp.state == state {
            return Vec::new();
        }
        *lamp = Lamp {
            state,
            since_ms: at_ms,
        };
        let lamp = *lamp;
        watchers
            .iter()
            .filter_map(|watcher| {
                let entry = self.watchers.get(watcher)?;
                let name = entry.monitored.get(unique_id)?;
                Some(LampWrite {
                    watcher: watcher.clone(),
                    provider: entry.provider.clone(),
                    path: format!("{LAMPS}/{unique_id}"),
                    value: lamp_value(lamp, name),
                })
            })
            .collect()
    }

    pub fn watchers(&self, provider: &str) -> usize {
        self.watchers
            .values()
            .filter(|w| w.provider == provider)
            .count()
    }

    fn unwatch(&mut self, monitored: &str, watcher: &str) {
        if let Some(set) = self.watched_by.get_mut(monitored) {
            set.remove(watcher);
            if set.is_empty() {
                self.watched_by.remove(monitored);
                self.lamps.remove(monitored);
            }
        }
    }
}

fn lamp_value(lamp: Lamp, name: &str) -> Value {
    json!({"state": lamp.state.as_str(), "since_ms": lamp.since_ms, "name": name})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn node(value: Value) -> Node {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn a_lamp_follows_a_call_and_dnd_shows_on_a_free_line() {
        let call = |state: &str, personality: &str| {
            node(json!({"calls": {"c1": {"state": state, "personality": personality}}}))
        };
        assert_eq!(LampState::of(None), LampState::Idle);
        assert_eq!(
            LampState::of(Some(&call("Alerting", "Terminator"))),
            LampState::Ringing
        );
        assert_eq!(
            LampState::of(Some(&call("Alerting", "Originator"))),
            LampState::Busy
        );
        assert_eq!(
            LampState::of(Some(&call("Active", "Terminator"))),
            LampState::Busy
        );
        assert_eq!(
            LampState::of(Some(&call("Held", "Originator"))),
            LampState::Held
        );
        assert_eq!(
            LampState::of(Some(&call("Released", "Originator"))),
            LampState::Idle
        );
        let dnd = node(json!({"dnd": {"active": true}, "calls": {}}));
        assert_eq!(LampState::of(Some(&dnd)), LampState::DoNotDisturb);
        let dnd_ringing = node(
            json!({"dnd": {"active": true}, "calls": {"c": {"state": "Alerting", "personality": "Terminator"}}}),
        );
        assert_eq!(LampState::of(Some(&dnd_ringing)), LampState::Ringing);
    }

    #[test]
    fn watchers_get_lamps_of_whom_they_watch_and_lose_them_when_dropped() {
        let mut watching = Watching::default();
        let now = Instant::now();
        watching.session_started("acme", "w1");
        watching.session_started("acme", "w2");
        let names = |ids: &[&str]| -> BTreeMap<String, String> {
            ids.iter()
                .map(|id| ((*id).to_owned(), format!("Name {id}")))
                .collect()
        };
        let writes = watching.set_monitored("w1", names(&["m1", "m2"]), now, 5, |_| None);
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].path, "blf/m1");
        assert_eq!(
            writes[0].value,
            json!({"state": "idle", "since_ms": 5, "name": "Name m1"})
        );
        watching.set_monitored("w2", names(&["m1"]), now, 5, |_| None);

        let ringing =
            node(json!({"calls": {"c": {"state": "Alerting", "personality": "Terminator"}}}));
        let mut writes = watching.node_changed("m1", Some(&ringing), 9);
        writes.sort_by(|a, b| a.watcher.cmp(&b.watcher));
        assert_eq!(
            writes
                .iter()
                .map(|w| (w.watcher.as_str(), w.value["state"].as_str().unwrap()))
                .collect::<Vec<_>>(),
            [("w1", "ringing"), ("w2", "ringing")]
        );
        assert!(
            watching.node_changed("m1", Some(&ringing), 10).is_empty(),
            "no change, no write"
        );
        assert!(
            watching.node_changed("m9", Some(&ringing), 10).is_empty(),
            "nobody watches m9"
        );

        // Dropped from w1's list: deleted from w1's node, and w1 gets no more of m1's lamps.
        let writes = watching.set_monitored("w1", names(&["m2"]), now, 11, |_| None);
        assert_eq!(
            writes,
            [LampWrite {
                watcher: "w1".to_owned(),
                provider: "acme".to_owned(),
                path: "blf/m1".to_owned(),
                value: Value::Null,
            }]
        );
        let writes = watching.node_changed("m1", None, 12);
        assert_eq!(
            writes
                .iter()
                .map(|w| w.watcher.as_str())
                .collect::<Vec<_>>(),
            ["w2"]
        );

        // A second session keeps the watcher; the last one deletes its lamps.
        watching.session_started("acme", "w2");
        assert_eq!(watching.session_ended("w2", false), None);
        let gone = watching.session_ended("w2", true).unwrap();
        assert_eq!(
            (gone.path.as_str(), gone.value.clone()),
            ("blf", Value::Null)
        );
        assert!(watching.node_changed("m1", Some(&ringing), 13).is_empty());
        assert_eq!(watching.watchers("acme"), 1);
    }
}
