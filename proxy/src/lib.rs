//! xsigate: a Pingora reverse proxy between web dialers and BroadWorks XSI.
//!
//! The crate is layered; a module uses only the layers below it (`tests/layers.rs` enforces
//! this, and `ARCHITECTURE.md` draws it):
//!
//! 1. [`config`] and [`wire`]: the configuration, and the names and shapes xsigate promises
//!    the outside (error envelope, headers, request classes); [`text`]: bytes spelled in hex
//!    and scanned; [`allocator`]: the process's allocator. They use nothing else.
//! 2. [`metrics`] and [`telemetry`]: what the gateway counts and logs.
//! 3. [`edge`]: client connections before HTTP: per-address limits, the request head read
//!    under deadlines, framing that no two parsers could read differently.
//! 4. [`audit`]: the audit trail of master-credential use, resets and operators' acts;
//!    [`state`]: the store, the server key, tokens and session records, and the runtime that
//!    keeps them off the request path; [`cluster`]: leases on live work, shared out among the
//!    instances on one store.
//! 5. [`upstream`]: providers, upstreams, health, the XSP pool and the retry rule.
//! 6. [`plugin`]: the plugin host (loading, the ABI, hook chains, host calls, the event bus).
//! 7. [`access`]: the login API and the session authority; [`operator`]: the operator
//!    console (its listener, operators' sessions, the status page and actions).
//! 8. [`http`]: the Pingora hooks of the request path.
//! 9. [`server`] and [`cli`]: assembling and starting it all; [`reload`]: taking a new
//!    configuration over without dropping traffic.

pub mod access;
pub mod allocator;
pub mod audit;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod edge;
pub mod http;
pub mod metrics;
pub mod operator;
pub mod plugin;
pub mod reload;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod text;
pub mod upstream;
pub mod wire;
