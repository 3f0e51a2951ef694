//! xsigate: a Pingora reverse proxy between web dialers and BroadWorks XSI.
//!
//! Reading order follows a request: [`config`] is loaded by [`cli`]/`main`, [`server`] builds the
//! Pingora services, and [`proxy`] is the request path, which uses [`route`] and [`identity`] to
//! pick a [`provider`], [`upstream`] to pick an XSP, [`headers`] at the boundary, [`respond`] for
//! answers of its own and [`metrics`] for what it counts. [`health`] probes XSPs in the background.

pub mod access;
pub mod assertion;
pub mod cli;
pub mod config;
pub mod cors;
pub mod headers;
pub mod health;
pub mod host;
pub mod identity;
pub mod limit;
pub mod mail;
pub mod metrics;
pub mod plugin;
pub mod provider;
pub mod proxy;
pub mod respond;
pub mod route;
pub mod seal;
pub mod server;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod upstream;
