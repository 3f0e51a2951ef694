//! Users' nodes as the database should hold them, and which of them wait to be written.
//!
//! The queue holds users, not events: a user is in it at most once, with the locations that
//! changed, and a write always sends the latest value of each. So however fast events arrive
//! and however long the database is away, the queue never grows past one entry per user and
//! never drops a change (it coalesces to the latest state). A user is in at most one write at a
//! time, which keeps each user's writes in order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use xsigate_plugin_sdk::serde_json::Value;
use xsigate_plugin_sdk::topics::{Failing, ProviderStatus};

use crate::tree::{Dirty, Node};

/// One user's node and its waiting changes.
#[derive(Debug)]
struct User {
    provider: String,
    node: Node,
    dirty: Dirty,
    /// When the oldest change not yet written was read off its channel (ms since the epoch).
    since_ms: Option<u64>,
    /// Not before this: the batching window.
    ready_at: Instant,
    queued: bool,
    writing: bool,
}

/// A multi-path write for several users of one provider.
#[derive(Debug)]
pub struct Batch {
    pub provider: String,
    pub users: Vec<UserWrite>,
}

#[derive(Debug)]
pub struct UserWrite {
    pub unique_id: String,
    pub locations: Vec<(String, Value)>,
    /// The user was rewritten whole.
    pub full: bool,
    pub since_ms: Option<u64>,
}

impl Batch {
    pub fn locations(&self) -> usize {
        self.users.iter().map(|u| u.locations.len()).sum()
    }
}

/// Every user's node, and the queue of those waiting, per provider in the order they changed.
#[derive(Debug)]
pub struct Users {
    /// A change waits this long for others, and a database gets at most one new write per
    /// window: writes carry many users each, far below Firebase's write-rate limit.
    window: Duration,
    users: HashMap<String, User>,
    waiting: HashMap<String, VecDeque<String>>,
    /// Per provider: writes in flight, and when writing may resume after a failure.
    providers: HashMap<String, ProviderState>,
}

#[derive(Debug, Default)]
struct ProviderState {
    writing: usize,
    failures: u32,
    /// When the current run of failed writes began (ms since the epoch).
    failing_since_ms: Option<u64>,
    retry_at: Option<Instant>,
    /// The end of the window that began with the last write started.
    next_write_at: Option<Instant>,
}

/// A failing database is retried after this, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);

impl Users {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            users: HashMap::new(),
            waiting: HashMap::new(),
            providers: HashMap::new(),
        }
    }

    /// Applies `change` to a user's node; the locations it returns wait for the next write,
    /// a window from now. A user seen for the first time since start is rewritten whole: the
    /// database may hold what an earlier run wrote before it stopped.
    pub fn change(
        &mut self,
        provider: &str,
        unique_id: &str,
        received_ms: u64,
        now: Instant,
        change: impl FnOnce(&mut Node) -> Vec<String>,
    ) {
        let window = self.window;
        let user = self
            .users
            .entry(unique_id.to_owned())
            .or_insert_with(|| User {
                provider: provider.to_owned(),
                node: Node::new(),
                dirty: Dirty::All,
                since_ms: None,
                ready_at: now + window,
                queued: false,
                writing: false,
            });
        if user.provider != provider {
            // A uniqueId belongs to one userId, which belongs to one provider; a second
            // provider claiming it is a configuration mistake, not a reason to mix trees.
            return;
        }
        let changed = change(&mut user.node);
        if changed.is_empty() {
            return;
        }
        for path in &changed {
            user.dirty.mark(path);
        }
        if user.since_ms.is_none() {
            user.since_ms = Some(received_ms);
        }
        if !user.queued && !user.writing {
            user.ready_at = now + window;
            user.queued = true;
            self.waiting
                .entry(user.provider.clone())
                .or_default()
                .push_back(unique_id.to_owned());
        }
    }

    /// Marks a user for a full rewrite (after a gap in what reached it).
    pub fn resync(&mut self, unique_id: &str, now: Instant) {
        let Some(user) = self.users.get_mut(unique_id) else {
            return;
        };
        user.dirty = Dirty::All;
        if !user.queued && !user.writing {
            user.ready_at = now;
            user.queued = true;
            self.waiting
                .entry(user.provider.clone())
                .or_default()
                .push_back(unique_id.to_owned());
        }
    }

    /// The next write that may start now: the users of one provider whose window has passed,
    /// oldest change first, up to `max_locations`; none while the provider is backing off or
    /// has `max_writing` writes in flight.
    pub fn take_batch(
        &mut self,
        now: Instant,
        max_locations: usize,
        max_writing: usize,
    ) -> Option<Batch> {
        let provider = self.waiting.iter().find_map(|(provider, queue)| {
            let state = self.providers.get(provider);
            let blocked = state.is_some_and(|s| {
                s.writing >= max_writing
                    || s.retry_at.is_some_and(|at| at > now)
                    || s.next_write_at.is_some_and(|at| at > now)
            });
            let ready = queue
                .front()
                .and_then(|id| self.users.get(id))
                .is_some_and(|u| u.ready_at <= now);
            (ready && !blocked).then(|| provider.clone())
        })?;
        let queue = self.waiting.get_mut(&provider)?;
        let mut batch = Batch {
            provider: provider.clone(),
            users: Vec::new(),
        };
        let mut locations = 0;
        while let Some(id) = queue.front() {
            let Some(user) = self.users.get_mut(id) else {
                queue.pop_front();
                continue;
            };
            if user.ready_at > now {
                break;
            }
            let full = user.dirty == Dirty::All;
            let user_locations = user.dirty.locations(&user.node);
            if !batch.users.is_empty() && locations + user_locations.len() > max_locations {
                break;
            }
            locations += user_locations.len();
            user.queued = false;
            user.writing = true;
            batch.users.push(UserWrite {
                unique_id: id.clone(),
                locations: user_locations,
                full,
                since_ms: user.since_ms.take(),
            });
            user.dirty = Dirty::Clean;
            queue.pop_front();
        }
        if queue.is_empty() {
            self.waiting.remove(&provider);
        }
        if batch.users.is_empty() {
            return None;
        }
        let state = self.providers.entry(provider).or_default();
        state.writing += 1;
        state.next_write_at = Some(now + self.window);
        Some(batch)
    }

    /// A write ended. A failed one puts its users back for a full rewrite (the database may or
    /// may not have applied it; rewriting the latest state is right either way) and makes the
    /// provider back off; `jitter` in [0, 1) spreads the retries of several instances.
    pub fn finish(&mut self, batch: Batch, ok: bool, now: Instant, jitter: f64) {
        let state = self.providers.entry(batch.provider.clone()).or_default();
        state.writing = state.writing.saturating_sub(1);
        if ok {
            state.failures = 0;
            state.failing_since_ms = None;
            state.retry_at = None;
        } else {
            state.failures = state.failures.saturating_add(1);
            state
                .failing_since_ms
                .get_or_insert_with(xsigate_plugin_sdk::unix_ms);
            let doubled = RETRY_FIRST.saturating_mul(1 << (state.failures - 1).min(16));
            let wait = doubled
                .min(RETRY_MAX)
                .mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 2.0);
            state.retry_at = Some(now + wait);
        }
        for write in batch.users {
            let Some(user) = self.users.get_mut(&write.unique_id) else {
                continue;
            };
            user.writing = false;
            if !ok {
                user.dirty = Dirty::All;
                user.since_ms = match (user.since_ms, write.since_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if !user.dirty.is_clean() && !user.queued {
                user.ready_at = now;
                user.queued = true;
                self.waiting
                    .entry(user.provider.clone())
                    .or_default()
                    .push_back(write.unique_id);
            }
        }
    }

    /// When the worker must look again for a write to start: the earliest window end or
    /// retry among providers with users waiting. Providers with `max_writing` writes in flight
    /// are left out: the end of one of those is what lets them write.
    pub fn next_due(&self, max_writing: usize) -> Option<Instant> {
        self.waiting
            .iter()
            .filter_map(|(provider, queue)| {
                let state = self.providers.get(provider);
                if state.is_some_and(|s| s.writing >= max_writing) {
                    return None;
                }
                let ready = self.users.get(queue.front()?)?.ready_at;
                let after = [
                    state.and_then(|s| s.retry_at),
                    state.and_then(|s| s.next_write_at),
                ];
                Some(after.into_iter().flatten().fold(ready, Instant::max))
            })
            .min()
    }

    /// What the operator console shows per provider: users kept, waiting and being written,
    /// the lag of the oldest change not yet written, and a failing database.
    pub fn status(&self, now_ms: u64) -> BTreeMap<String, ProviderStatus> {
        let mut providers: BTreeMap<String, ProviderStatus> = BTreeMap::new();
        for user in self.users.values() {
            let status = providers.entry(user.provider.clone()).or_default();
            *status.counts.entry("users".to_owned()).or_default() += 1;
            *status.counts.entry("queued".to_owned()).or_default() += u64::from(user.queued);
            *status.counts.entry("writing".to_owned()).or_default() += u64::from(user.writing);
            let lag = user
                .since_ms
                .map_or(0, |since| now_ms.saturating_sub(since));
            let oldest = status.counts.entry("lag_ms".to_owned()).or_default();
            *oldest = (*oldest).max(lag);
        }
        for (provider, state) in &self.providers {
            if let Some(since_ms) = state.failing_since_ms {
                providers
                    .entry(provider.clone())
                    .or_default()
                    .failing
                    .push(Failing {
                        user: "*".to_owned(),
                        reason: format!(
                            "database writes are failing ({} in a row)",
                            state.failures
                        ),
                        since_ms,
                    });
            }
        }
        providers
    }

    /// Users waiting to be written, by provider.
    pub fn depths(&self) -> impl Iterator<Item = (&str, usize)> {
        self.waiting.iter().map(|(p, q)| (p.as_str(), q.len()))
    }

    /// Forgets every write in flight, as failed ones without backing off: for a worker that
    /// starts again after its predecessor stopped mid-write.
    pub fn recover(&mut self, now: Instant) {
        for state in self.providers.values_mut() {
            state.writing = 0;
        }
        for (id, user) in &mut self.users {
            if user.writing {
                user.writing = false;
                user.dirty = Dirty::All;
                if !user.queued {
                    user.ready_at = now;
                    user.queued = true;
                    self.waiting
                        .entry(user.provider.clone())
                        .or_default()
                        .push_back(id.clone());
                }
            }
        }
    }

    pub fn contains(&self, unique_id: &str) -> bool {
        self.users.contains_key(unique_id)
    }

    /// A user's node as the database should hold it.
    pub fn node(&self, unique_id: &str) -> Option<&Node> {
        self.users.get(unique_id).map(|user| &user.node)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use xsigate_plugin_sdk::serde_json::json;

    use super::*;

    const WINDOW: Duration = Duration::from_millis(25);

    fn dnd(users: &mut Users, id: &str, active: bool, ms: u64, now: Instant) {
        users.change("acme", id, ms, now, |node| {
            node.insert("dnd".to_owned(), json!({"active": active}));
            vec!["dnd".to_owned()]
        });
    }

    #[test]
    fn changes_wait_for_the_window_and_coalesce_to_the_latest() {
        let mut users = Users::new(WINDOW);
        let t0 = Instant::now();
        dnd(&mut users, "u1", true, 1, t0);
        assert!(users.take_batch(t0, 100, 4).is_none(), "inside the window");
        assert_eq!(users.next_due(4), Some(t0 + WINDOW));
        dnd(&mut users, "u1", false, 2, t0 + Duration::from_millis(5));
        let batch = users.take_batch(t0 + WINDOW, 100, 4).unwrap();
        assert_eq!(batch.users.len(), 1);
        let write = &batch.users[0];
        assert!(write.full, "first sight of a user since start");
        assert_eq!(
            write.locations,
            [("dnd".to_owned(), json!({"active": false}))]
        );
        assert_eq!(write.since_ms, Some(1));
        users.finish(batch, true, t0 + WINDOW, 0.0);
        dnd(&mut users, "u1", true, 3, t0 + WINDOW);
        let batch = users.take_batch(t0 + WINDOW * 2, 100, 4).unwrap();
        assert!(!batch.users[0].full);
        assert_eq!(users.depths().count(), 0);
    }

    #[test]
    fn a_user_is_in_one_write_at_a_time() {
        let mut users = Users::new(WINDOW);
        let t0 = Instant::now();
        dnd(&mut users, "u1", true, 1, t0);
        let first = users.take_batch(t0 + WINDOW, 100, 4).unwrap();
        dnd(&mut users, "u1", false, 2, t0 + WINDOW);
        assert!(users.take_batch(t0 + WINDOW * 3, 100, 4).is_none());
        users.finish(first, true, t0 + WINDOW * 3, 0.0);
        let second = users.take_batch(t0 + WINDOW * 3, 100, 4).unwrap();
        assert_eq!(second.users[0].locations[0].1, json!({"active": false}));
        assert_eq!(second.users[0].since_ms, Some(2));
    }

    #[test]
    fn a_failed_write_backs_off_then_rewrites_its_users_whole() {
        let mut users = Users::new(WINDOW);
        let t0 = Instant::now();
        dnd(&mut users, "u1", true, 1, t0);
        let batch = users.take_batch(t0 + WINDOW, 100, 4).unwrap();
        users.finish(batch, true, t0 + WINDOW, 0.0);
        users.change("acme", "u1", 5, t0 + WINDOW, |node| {
            node.insert("voicemail".to_owned(), json!({"new": 1}));
            vec!["voicemail".to_owned()]
        });
        let batch = users.take_batch(t0 + WINDOW * 2, 100, 4).unwrap();
        assert!(!batch.users[0].full);
        let failed_at = t0 + WINDOW * 2;
        users.finish(batch, false, failed_at, 0.0);
        assert!(users.take_batch(failed_at, 100, 4).is_none(), "backing off");
        assert_eq!(users.next_due(4), Some(failed_at + RETRY_FIRST));
        let retry = users.take_batch(failed_at + RETRY_FIRST, 100, 4).unwrap();
        assert!(retry.users[0].full);
        assert_eq!(retry.users[0].locations.len(), 2, "dnd and voicemail");
        assert_eq!(retry.users[0].since_ms, Some(5));
        users.finish(retry, false, failed_at + RETRY_FIRST, 0.0);
        assert_eq!(
            users.next_due(4),
            Some(failed_at + RETRY_FIRST + RETRY_FIRST * 2),
            "doubling"
        );
    }

    #[test]
    fn batches_are_bounded_one_per_window_and_in_flight_writes_limited() {
        let mut users = Users::new(WINDOW);
        let t0 = Instant::now();
        for i in 0..10 {
            dnd(&mut users, &format!("u{i}"), true, i, t0);
        }
        let now = t0 + WINDOW;
        let a = users.take_batch(now, 4, 2).unwrap();
        assert!(
            users.take_batch(now, 4, 2).is_none(),
            "one new write per window"
        );
        assert_eq!(users.next_due(2), Some(now + WINDOW));
        let later = now + WINDOW;
        let b = users.take_batch(later, 4, 2).unwrap();
        assert_eq!((a.locations(), b.locations()), (4, 4));
        let last = later + WINDOW;
        assert!(users.take_batch(last, 4, 2).is_none(), "two in flight");
        assert_eq!(
            users.next_due(2),
            None,
            "the end of a write is what is awaited"
        );
        assert_eq!(users.next_due(3), Some(last));
        assert_eq!(users.depths().collect::<Vec<_>>(), [("acme", 2)]);
        users.finish(a, true, last, 0.0);
        let c = users.take_batch(last, 4, 2).unwrap();
        assert_eq!(c.users[0].unique_id, "u8", "oldest first");
    }

    #[test]
    fn resync_and_recovery_requeue_at_once() {
        let mut users = Users::new(WINDOW);
        let t0 = Instant::now();
        let at = |n: u32| t0 + WINDOW * n;
        dnd(&mut users, "u1", true, 1, t0);
        let lost = users.take_batch(at(1), 100, 1).unwrap();
        drop(lost);
        users.recover(at(1));
        let batch = users.take_batch(at(2), 100, 1).unwrap();
        assert!(batch.users[0].full);
        users.finish(batch, true, at(2), 0.0);
        users.resync("u1", at(2));
        assert!(users.take_batch(at(3), 100, 4).unwrap().users[0].full);
        users.resync("nobody", t0);
        assert!(!users.contains("nobody"));
    }
}
