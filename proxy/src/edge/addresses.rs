//! Per-address limits: open connections, and requests per second by a token bucket.
//!
//! An IPv6 client is counted by its /64, the block one subscriber is usually given, so that
//! walking through addresses of one's own block does not escape the limit. An address has an
//! entry only while it holds a connection or its bucket is refilling, so the table stays as
//! small as the set of recently active clients.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ClientsConfig;

/// Shards of the table: connections from different addresses rarely wait on one lock.
const SHARDS: usize = 32;

#[derive(Debug)]
pub struct Addresses {
    shards: Box<[Mutex<HashMap<IpAddr, Entry>>]>,
    connections: u32,
    /// Tokens per second; `None` when the rate is not limited.
    rate: Option<f64>,
    burst: f64,
}

#[derive(Debug)]
struct Entry {
    connections: u32,
    tokens: f64,
    refilled: Instant,
}

impl Addresses {
    pub fn new(limits: &ClientsConfig) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            connections: limits.connections_per_address,
            rate: (limits.requests_per_second_per_address > 0)
                .then(|| f64::from(limits.requests_per_second_per_address)),
            burst: f64::from(limits.request_burst_per_address),
        }
    }

    /// Counts a new connection of `address`, or refuses it when the address holds its limit.
    /// The guard gives the connection back when dropped.
    pub fn connect(&self, address: IpAddr) -> Option<Connection<'_>> {
        let key = key(address);
        let mut shard = self.shard(key);
        let entry = shard.entry(key).or_insert_with(|| Entry {
            connections: 0,
            tokens: self.burst,
            refilled: Instant::now(),
        });
        if entry.connections >= self.connections {
            return None;
        }
        entry.connections += 1;
        Some(Connection {
            addresses: self,
            key,
        })
    }

    /// Takes one request's token for `address`; when none is left, says how long until one is.
    pub fn request(&self, address: IpAddr) -> Result<(), Duration> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let key = key(address);
        let mut shard = self.shard(key);
        let now = Instant::now();
        let entry = shard.entry(key).or_insert_with(|| Entry {
            connections: 0,
            tokens: self.burst,
            refilled: now,
        });
        entry.tokens = self.refill(entry, now, rate);
        entry.refilled = now;
        if entry.tokens >= 1.0 {
            entry.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - entry.tokens) / rate))
        }
    }

    /// Addresses with an entry (for tests and the status of the table).
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn refill(&self, entry: &Entry, now: Instant, rate: f64) -> f64 {
        let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
        (entry.tokens + elapsed * rate).min(self.burst)
    }

    fn release(&self, key: IpAddr) {
        let mut shard = self.shard(key);
        let Some(entry) = shard.get_mut(&key) else {
            return;
        };
        entry.connections = entry.connections.saturating_sub(1);
        if entry.connections > 0 {
            return;
        }
        let full = self
            .rate
            .is_none_or(|rate| self.refill(entry, Instant::now(), rate) >= self.burst);
        if full {
            shard.remove(&key);
        } else if shard.len() > 1024 {
            // Idle addresses whose buckets are still refilling are dropped in passing once the
            // shard grows; they lose at most the rest of one burst's refill.
            let now = Instant::now();
            shard.retain(|_, e| {
                e.connections > 0
                    || self
                        .rate
                        .is_some_and(|r| self.refill(e, now, r) < self.burst)
            });
        }
    }

    fn shard(&self, key: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let index = match key {
            IpAddr::V4(v4) => u32::from(v4) as usize,
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as usize,
        };
        // Fold the high bits in: neighbouring addresses differ in the low ones.
        lock(&self.shards[(index ^ (index >> 7) ^ (index >> 17)) % SHARDS])
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind, which stay usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The key an address is counted under: itself for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6.
fn key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// The `Retry-After` for a wait: whole seconds, rounded up, at least one, so that a client that
/// waits as told finds a token.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One open connection of an address; dropping it gives the connection back.
#[derive(Debug)]
pub struct Connection<'a> {
    addresses: &'a Addresses,
    key: IpAddr,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.addresses.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: u32, rate: u32, burst: u32) -> ClientsConfig {
        ClientsConfig {
            connections_per_address: connections,
            requests_per_second_per_address: rate,
            request_burst_per_address: burst,
            ..ClientsConfig::default()
        }
    }

    #[test]
    fn connections_are_capped_per_address_and_given_back() {
        let addresses = Addresses::new(&limits(2, 0, 1));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = addresses.connect(a).unwrap();
        let _second = addresses.connect(a).unwrap();
        assert!(addresses.connect(a).is_none());
        assert!(addresses.connect(b).is_some());
        drop(first);
        assert!(addresses.connect(a).is_some());
    }

    #[test]
    fn an_ipv6_block_counts_as_one_client_and_mapped_ipv4_as_its_ipv4() {
        let addresses = Addresses::new(&limits(1, 0, 1));
        let _one = addresses
            .connect("2001:db8:1:2::1".parse().unwrap())
            .unwrap();
        assert!(
            addresses
                .connect("2001:db8:1:2::ffff".parse().unwrap())
                .is_none()
        );
        assert!(
            addresses
                .connect("2001:db8:1:3::1".parse().unwrap())
                .is_some()
        );
        let _v4 = addresses.connect("192.0.2.9".parse().unwrap()).unwrap();
        assert!(
            addresses
                .connect("::ffff:192.0.2.9".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn the_bucket_allows_a_burst_then_says_when_the_next_token_comes() {
        let addresses = Addresses::new(&limits(10, 10, 3));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            addresses.request(a).unwrap();
        }
        let wait = addresses.request(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(addresses.request("192.0.2.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn entries_go_once_an_address_is_idle_and_refilled() {
        let addresses = Addresses::new(&limits(10, 0, 1));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        drop(addresses.connect(a).unwrap());
        assert_eq!(addresses.tracked(), 0);

        let limited = Addresses::new(&limits(10, 1000, 1));
        let connection = limited.connect(a).unwrap();
        limited.request(a).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        drop(connection);
        assert_eq!(limited.tracked(), 0, "refilled after 5 ms at 1000/s");
    }
}
