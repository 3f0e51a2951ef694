//! Live work shared out among the instances on one store: each channel set or screen-recording
//! agent is guarded by a lease that exactly one live instance holds (docs/cluster.md).
//!
//! - A lease has a time to live; one heartbeat per instance (every third of it) renews all the
//!   instance's leases in one statement, so a dead instance's leases are free after the TTL and
//!   another instance takes them over.
//! - While the store cannot be reached the work goes on (nobody can take it over meanwhile),
//!   and once it is back nobody claims for one TTL, so that every live holder renews first;
//!   what the renewal then says was taken (a partition let another instance in) stops here.
//! - A graceful stop or upgrade releases every lease in the store at once; the work goes on here
//!   until another instance (or the upgraded process) has taken it, so that it never pauses.
//! - Work is spread: a claim beyond the claimer's share (the work in the namespace over the live
//!   instances, rounded up) waits until the work has been unowned for a second, and an instance
//!   that stays well over its share hands the excess over, a few sets moving rather than all.
//!   Instances are counted by their data directory, so an upgrade's two processes are one.
//! - Ending work is a request to the holder: [`Leases::end`] marks the lease, the holder hears
//!   it at its next renewal (or at once if it is this instance) and ends the work; a lease whose
//!   holder died is ended by whoever takes it next.
//!
//! With the embedded SQLite store there is one instance, which holds every lease; the same code
//! runs (an upgrade's old and new process share the file).
//!
//! Layer: uses `state` and `metrics`.

mod handover;
mod leases;

pub use handover::HandoverService;
pub use leases::{Acquired, Leases, Lost};
