//! Brute-force protection for logins.
//!
//! Failures are counted per key in the store, so that every instance sharing it sees them and
//! a restart forgets nothing: for an unknown client, one key for the user id and one for the
//! client address; for a browser with a device cookie of the user ([`super::device`]), its
//! device's key alone, so that strangers' failures cannot lock the user out of it. After
//! `free_failures` failures in a row under a key, each further failure locks the key for a
//! time that doubles up to `max_lock`; a success clears the user's count. A locked key is
//! answered with 429 and `Retry-After` before any credential is checked, so a locked account
//! cannot be probed further.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::state::store::{Store, StoreError, millis, unix_ms};

/// Reset requests per user and per client: three an hour, then a doubling wait.
pub const RESET_LIMIT: LimitPolicy = LimitPolicy {
    free_failures: 3,
    first_lock: Duration::from_secs(300),
    max_lock: Duration::from_secs(3600),
    forget_after: Duration::from_secs(3600),
};

/// How strict the limiter is.
#[derive(Debug, Clone, Copy)]
pub struct LimitPolicy {
    /// Failures in a row allowed before a key is locked.
    pub free_failures: u32,
    /// The first lock; each further failure doubles it.
    pub first_lock: Duration,
    pub max_lock: Duration,
    /// A failure this old no longer counts.
    pub forget_after: Duration,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        Self {
            free_failures: 4,
            first_lock: Duration::from_secs(30),
            max_lock: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(3600),
        }
    }
}

/// The store key of a user id (user ids compare case-insensitively in BroadWorks).
pub fn user_key(user_id: &str) -> String {
    format!("user:{}", user_id.to_lowercase())
}

/// The store key of a client address. An IPv6 client usually owns a whole /64, so that is the
/// unit counted.
pub fn client_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => format!("client:{v4}"),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            format!("client:{a:x}:{b:x}:{c:x}:{d:x}::/64")
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoginLimiter {
    store: Arc<dyn Store>,
    policy: LimitPolicy,
    /// What this instance knows without the store, for checks on the request path.
    memory: Arc<RwLock<Memory>>,
}

/// How often an instance sharing its store learns the locks the others made: the longest a
/// lock made elsewhere goes unseen on this instance's request path.
pub const LOCKS_FOLLOWED_EVERY: Duration = Duration::from_secs(1);

/// The live locks this instance knows (key to the end, ms since the epoch) and the keys it
/// counted failures under since their last success.
#[derive(Debug, Default)]
struct Memory {
    locks: HashMap<String, i64>,
    /// Locks this instance made so far, so that a read of the store's locks that began before
    /// one was made does not forget it.
    made: u64,
    failing: HashSet<String>,
}

impl LoginLimiter {
    pub fn new(store: Arc<dyn Store>, policy: LimitPolicy) -> Self {
        Self {
            store,
            policy,
            memory: Arc::default(),
        }
    }

    fn memory(&self) -> std::sync::RwLockReadGuard<'_, Memory> {
        self.memory.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn memory_mut(&self) -> std::sync::RwLockWriteGuard<'_, Memory> {
        self.memory.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Like [`LoginLimiter::retry_after`], from memory alone: no await, for the request path.
    /// It knows the locks this instance made and, with a shared store, those
    /// [`LoginLimiter::follow_locks`] learned.
    pub fn retry_after_now(&self, keys: &[&str]) -> Option<Duration> {
        let now = unix_ms();
        let memory = self.memory();
        keys.iter()
            .filter_map(|key| memory.locks.get(*key))
            .filter(|until| **until > now)
            .max()
            .map(|until| wait(until - now))
    }

    /// Whether no key has a lock or a failure in memory: the request path then has nothing to
    /// look up (no key is even formatted).
    pub fn is_quiet(&self) -> bool {
        let memory = self.memory();
        memory.locks.is_empty() && memory.failing.is_empty()
    }

    /// Whether failures were counted under `key` since its last success.
    pub fn is_failing(&self, key: &str) -> bool {
        self.memory().failing.contains(key)
    }

    /// How long the caller must wait before any of `keys` may try again; `None` when none is
    /// locked.
    pub async fn retry_after(&self, keys: &[&str]) -> Result<Option<Duration>, StoreError> {
        let now = unix_ms();
        let mut longest: Option<i64> = None;
        for key in keys {
            if let Some(until) = self.store.login_locked_until(key).await? {
                longest = Some(longest.map_or(until, |l| l.max(until)));
            }
        }
        Ok(longest.map(|until| wait(until - now)))
    }

    /// Counts a failure under every key; returns the lock it caused, if any.
    pub async fn failed(&self, keys: &[&str]) -> Result<Option<Duration>, StoreError> {
        let now = unix_ms();
        let mut longest = None;
        for key in keys {
            self.memory_mut().failing.insert((*key).to_owned());
            let failures = self
                .store
                .login_failed(key, now, millis(self.policy.forget_after))
                .await?;
            let Some(over) = failures.checked_sub(self.policy.free_failures + 1) else {
                continue;
            };
            let lock = self
                .policy
                .first_lock
                .saturating_mul(2u32.saturating_pow(over))
                .min(self.policy.max_lock);
            let until = now.saturating_add(millis(lock));
            self.store.login_lock(key, until).await?;
            let mut memory = self.memory_mut();
            memory.locks.insert((*key).to_owned(), until);
            memory.made += 1;
            longest = Some(longest.map_or(lock, |l: Duration| l.max(lock)));
        }
        Ok(longest)
    }

    /// Forgets failure counts too old to matter that hold no lock. Keys of a limiter with a
    /// shorter memory are swept by its own call, so each limiter passes its own policy.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let now = unix_ms();
        {
            // Failures this old are forgotten by the store too; a success then clears nothing.
            let mut memory = self.memory_mut();
            memory.locks.retain(|_, until| *until > now);
            memory.failing.clear();
        }
        self.store
            .login_failures_sweep(unix_ms(), millis(self.policy.forget_after))
            .await
    }

    /// Makes the store's live locks this instance's, every [`LOCKS_FOLLOWED_EVERY`], for the
    /// life of the process: with instances sharing the store, the request path's checks from
    /// memory then refuse a user id locked on another instance too, instead of letting one
    /// more guess reach the XSP, and forget a lock cleared elsewhere.
    pub async fn follow_locks(self) {
        let mut interval = tokio::time::interval(LOCKS_FOLLOWED_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let made = self.memory().made;
            let now = unix_ms();
            let locks = match self.store.login_locks(now).await {
                Ok(locks) => locks,
                Err(e) => {
                    tracing::debug!(error = %e, "reading the live login locks failed");
                    continue;
                }
            };
            let mut memory = self.memory_mut();
            if memory.made != made {
                // A lock made during the read may be missing from it: merge, and replace next
                // time.
                for (key, until) in locks {
                    let known = memory.locks.entry(key).or_insert(until);
                    *known = (*known).max(until);
                }
            } else {
                memory.locks = locks.into_iter().collect();
            }
            memory.locks.retain(|_, until| *until > now);
        }
    }

    /// Clears the failures under `key` (the user's, after a successful login; a client
    /// address keeps its count, since one client may be trying many users).
    pub async fn succeeded(&self, key: &str) -> Result<(), StoreError> {
        {
            let mut memory = self.memory_mut();
            memory.failing.remove(key);
            memory.locks.remove(key);
        }
        self.store.login_succeeded(key).await
    }
}

/// A wait in whole seconds, at least one, as `Retry-After` carries it.
fn wait(ms: i64) -> Duration {
    let ms = u64::try_from(ms.max(0)).unwrap_or(0);
    Duration::from_secs(ms.div_ceil(1000).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::SqliteStore;

    fn policy() -> LimitPolicy {
        LimitPolicy {
            free_failures: 2,
            first_lock: Duration::from_secs(10),
            max_lock: Duration::from_secs(40),
            forget_after: Duration::from_secs(3600),
        }
    }

    #[test]
    fn failures_beyond_the_free_ones_lock_for_doubling_times_and_success_clears() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
            let limiter = LoginLimiter::new(store, policy());
            let user = user_key("Alice@Acme.example");
            let keys = [user.as_str(), "client:127.0.0.1"];

            assert_eq!(limiter.retry_after(&keys).await.unwrap(), None);
            assert_eq!(limiter.failed(&keys).await.unwrap(), None);
            assert_eq!(limiter.failed(&keys).await.unwrap(), None);
            assert_eq!(
                limiter.failed(&keys).await.unwrap(),
                Some(Duration::from_secs(10))
            );
            let wait = limiter
                .retry_after(&[user.as_str()])
                .await
                .unwrap()
                .unwrap();
            assert!(wait <= Duration::from_secs(10) && wait >= Duration::from_secs(9));
            assert_eq!(
                limiter.failed(&keys).await.unwrap(),
                Some(Duration::from_secs(20))
            );
            assert_eq!(
                limiter.failed(&keys).await.unwrap(),
                Some(Duration::from_secs(40))
            );
            assert_eq!(
                limiter.failed(&keys).await.unwrap(),
                Some(Duration::from_secs(40))
            );
            // The key is the lower-cased user id.
            assert!(
                limiter
                    .retry_after(&[user_key("alice@acme.example").as_str()])
                    .await
                    .unwrap()
                    .is_some()
            );

            limiter.succeeded(&user).await.unwrap();
            assert_eq!(limiter.retry_after(&[user.as_str()]).await.unwrap(), None);
            assert!(
                limiter
                    .retry_after(&["client:127.0.0.1"])
                    .await
                    .unwrap()
                    .is_some()
            );
        });
    }

    #[test]
    fn client_keys_count_ipv6_clients_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        assert_eq!(client_key("192.0.2.7".parse().unwrap()), "client:192.0.2.7");
    }
}
