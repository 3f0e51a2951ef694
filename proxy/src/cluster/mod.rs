//! Live work shared out among the instances on one store: each channel set, agent login or
//! writer is guarded by a lease that exactly one live instance holds.
//!
//! - A lease has a time to live; one heartbeat per instance (every third of it) renews all the
//!   instance's leases in one statement, so a dead instance's leases are free after the TTL and
//!   another instance takes them over.
//! - A lease renewal that does not come back means this instance may already have lost its
//!   leases to another; once the TTL has passed without one, every lease is given up (its
//!   work stops here) rather than run twice.
//! - A graceful stop hands every lease over at once; the others take them at their next claim.
//! - Work is spread: a claim is refused to an instance that holds its share (the work in the
//!   namespace over the live instances, rounded up), and an instance holding well over its share
//!   hands the excess over, a few sets moving rather than all.
//! - Ending work is a request to the holder: [`Leases::end`] marks the lease, the holder hears
//!   it at its next renewal (or at once if it is this instance) and ends the work; a lease whose
//!   holder died is ended by whoever takes it next.
//!
//! With the embedded SQLite store there is one instance, which holds every lease; the same code
//! runs.
//!
//! Layer: uses `state` and `metrics`.

mod handover;
mod leases;

pub use handover::HandoverService;
pub use leases::{Acquired, Leases, Lost};
