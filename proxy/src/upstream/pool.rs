//! A provider's XSPs as one pool: round-robin over the healthy ones, and the set of those a
//! request has tried.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::health::HealthState;
use super::peer::Upstream;

/// Upstreams tried for one request, as a bit set over pool indices.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried(u64);

impl Tried {
    pub fn add(&mut self, index: usize) {
        if let Some(bit) = 1u64.checked_shl(index as u32) {
            self.0 |= bit;
        }
    }

    pub fn remove(&mut self, index: usize) {
        if let Some(bit) = 1u64.checked_shl(index as u32) {
            self.0 &= !bit;
        }
    }

    pub fn contains(self, index: usize) -> bool {
        1u64.checked_shl(index as u32)
            .is_some_and(|bit| self.0 & bit != 0)
    }
}

/// A provider's XSPs with round-robin selection over the healthy ones.
#[derive(Debug)]
pub struct Pool {
    pub members: Vec<Upstream>,
    cursor: AtomicUsize,
}

impl Pool {
    pub fn new(members: Vec<Upstream>) -> Self {
        Self {
            members,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next member to try: an untried member that is not down, else any untried member (a
    /// health check may lag behind a recovery, and a down member beats no answer).
    pub fn select(&self, tried: Tried) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let candidates = || {
            (0..n)
                .map(|i| (start + i) % n)
                .filter(|i| !tried.contains(*i))
        };
        candidates()
            .find(|i| {
                self.members
                    .get(*i)
                    .is_some_and(|m| m.health.state() != HealthState::Down)
            })
            .or_else(|| candidates().next())
    }

    /// Whether a member exists and is not known to be down.
    pub fn is_usable(&self, index: usize) -> bool {
        self.members
            .get(index)
            .is_some_and(|m| m.health.state() != HealthState::Down)
    }

    /// Whether some member has not been tried yet.
    pub fn has_untried(&self, tried: Tried) -> bool {
        (0..self.members.len()).any(|i| !tried.contains(i))
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    pub fn any_up(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.health.state() == HealthState::Up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::peer::tests::upstream;

    #[test]
    fn selection_skips_tried_and_down_members() {
        let pool = Pool::new(vec![upstream("a"), upstream("b"), upstream("c")]);
        pool.members[1].health.record_failure();
        pool.members[1].health.record_failure();
        let mut tried = Tried::default();
        for _ in 0..10 {
            let first = pool.select(tried).unwrap();
            assert_ne!(
                first, 1,
                "a down member is chosen only when nothing else is left"
            );
        }
        tried.add(0);
        tried.add(2);
        assert_eq!(pool.select(tried), Some(1));
        tried.add(1);
        assert_eq!(pool.select(tried), None);
        assert!(!pool.has_untried(tried));
    }
}
