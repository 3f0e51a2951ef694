//! The login API, `/api/access/services/…`, and the session authority behind it.
//!
//! - [`api`]: the request the proxy hands over and the dispatch; [`endpoint`]: which endpoint
//!   a path names. One file per endpoint group: [`ztp`], [`login`], [`redirect`] (single
//!   sign-on: its start, callback and result), [`reset`], [`session_endpoints`] (`session`,
//!   `logout`, `applets/<name>`). [`sweep`]: housekeeping.
//! - [`sessions`]: creating, resuming, caching and ending sessions, for the API and the proxy.
//! - [`limit`]: brute-force limits, with [`device`] cookies so that strangers' failures never
//!   lock a user out of a browser they used before; [`assertion`]: signed identity assertions for gateway
//!   services and applets; [`mail`]: reset links by SMTP.
//!
//! Every handler runs on the state runtime ([`crate::state`]), never on a proxy thread, so that
//! a storm of logins (identity-provider calls, store writes, sealing) cannot slow proxied
//! traffic. Answers are JSON. Nothing here reveals whether an account exists: options come from
//! configuration and the shape of the query, and every failed login gets the same answer.
//!
//! Layer: above [`crate::config`], [`crate::wire`], [`crate::metrics`], [`crate::state`],
//! [`crate::upstream`] and [`crate::plugin`].

pub mod api;
pub mod assertion;
pub mod device;
pub mod endpoint;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod limit;
mod login;
pub mod mail;
mod redirect;
mod reset;
mod session_endpoints;
pub mod sessions;
mod sweep;
mod ztp;

pub use api::{AccessError, AccessReply, AccessRequest, LoginApi, ResetChannel};
pub use assertion::{Claims, Signer};
pub use endpoint::{BODY_LIMIT, Endpoint, cookie, is_form, is_json};
pub use sessions::{SessionPolicy, Sessions};
