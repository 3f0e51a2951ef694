//! The health of an upstream: what probes ([`super::probe`]) and proxied connects say of it.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

/// Health of an upstream as seen by active probes and by proxied connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HealthState {
    /// Not probed yet: used, but not counted as ready.
    Unknown = 0,
    Up = 1,
    Down = 2,
}

#[derive(Debug)]
pub struct Health {
    state: AtomicU8,
    /// The last answered probe's round trip, in microseconds; 0 before the first.
    probe_micros: AtomicU32,
    failures: AtomicU32,
    successes: AtomicU32,
    fall: u32,
    rise: u32,
}

impl Health {
    pub fn new(fall: u32, rise: u32) -> Self {
        Self {
            state: AtomicU8::new(HealthState::Unknown as u8),
            probe_micros: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            fall: fall.max(1),
            rise: rise.max(1),
        }
    }

    pub fn state(&self) -> HealthState {
        match self.state.load(Ordering::Relaxed) {
            1 => HealthState::Up,
            2 => HealthState::Down,
            _ => HealthState::Unknown,
        }
    }

    /// Notes how long an answered probe took.
    pub fn record_probe_time(&self, took: std::time::Duration) {
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX).max(1);
        self.probe_micros.store(micros, Ordering::Relaxed);
    }

    /// The last answered probe's round trip, if any was answered.
    pub fn probe_time(&self) -> Option<std::time::Duration> {
        match self.probe_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(std::time::Duration::from_micros(u64::from(micros))),
        }
    }

    /// Records a failed probe or connect; returns the new state when it changed.
    pub fn record_failure(&self) -> Option<HealthState> {
        self.successes.store(0, Ordering::Relaxed);
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= self.fall {
            self.transition(HealthState::Down)
        } else {
            None
        }
    }

    /// Records a passing probe; returns the new state when it changed. A down upstream needs
    /// `rise` passes in a row, an unknown one comes up at once.
    pub fn record_success(&self) -> Option<HealthState> {
        self.failures.store(0, Ordering::Relaxed);
        let successes = self
            .successes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if self.state() != HealthState::Down || successes >= self.rise {
            self.transition(HealthState::Up)
        } else {
            None
        }
    }

    /// A proxied response arrived: a connect-failure streak is broken, but only probes bring a
    /// down upstream back.
    pub fn record_response(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    fn transition(&self, to: HealthState) -> Option<HealthState> {
        let previous = self.state.swap(to as u8, Ordering::Relaxed);
        (previous != to as u8).then_some(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_falls_and_rises_with_thresholds() {
        let health = Health::new(2, 2);
        assert_eq!(health.state(), HealthState::Unknown);
        assert_eq!(health.record_failure(), None);
        assert_eq!(health.record_failure(), Some(HealthState::Down));
        assert_eq!(health.record_success(), None);
        assert_eq!(health.record_success(), Some(HealthState::Up));
        assert_eq!(health.record_success(), None);
    }
}
