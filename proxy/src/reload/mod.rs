//! Reload: a new configuration taken over without dropping traffic, keeping sessions and live
//! state (both are in the store). `xsigate reload -c FILE` checks the file, prints what
//! changes, and asks the running instance (SIGHUP); the instance checks the file itself, starts
//! a new process on it with `--upgrade`, and once that process waits for the listening sockets
//! hands them over (Pingora's graceful upgrade, SIGQUIT to itself) and drains. A file that does
//! not check changes nothing: the command prints why with file, line and key, and an instance
//! sent SIGHUP logs it and keeps serving.
//!
//! Uses: [`crate::config`].

mod changes;
mod handover;
mod request;
mod running;

pub use changes::Changes;
pub use handover::ReloadService;
pub use request::{Plan, ReloadError, request};
pub use running::Running;
