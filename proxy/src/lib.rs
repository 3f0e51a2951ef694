//! xsigate: a Pingora reverse proxy between web dialers and BroadWorks XSI.
pub mod config;
