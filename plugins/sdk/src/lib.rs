//! The xsigate plugin SDK.
//!
//! A plugin is a `cdylib` that xsigate loads at start from a path named in `providers.toml`.
//! This crate is everything a plugin author needs:
//!
//! - [`Plugin`]: construction from the plugin's `config` table, with a [`Host`] handle;
//! - one trait per capability: [`IdentityProvider`], [`RequestFilter`],
//!   [`UpstreamRequestFilter`], [`ResponseFilter`], [`EventConsumer`], [`BackgroundWorker`];
//! - [`Host`]: the services the host performs for the plugin (HTTP, XSI requests to a
//!   provider's XSPs, store, sealing, events, timers, metrics, logging), awaited from ordinary
//!   `async` code;
//! - [`export_plugin!`]: the two C symbols xsigate looks for.
//!
//! The SDK links no async runtime and no HTTP client: all I/O is done by the host, which polls
//! the plugin's futures on its own runtime. [`abi`] is the raw contract underneath.
//!
//! ```no_run
//! use xsigate_plugin_sdk::{Decision, Error, Host, Plugin, Request, RequestFilter};
//!
//! pub struct Tagger { host: Host }
//!
//! impl Plugin for Tagger {
//!     type Config = serde_json::Value;
//!     fn init(host: Host, _config: Self::Config) -> Result<Self, Error> {
//!         Ok(Self { host })
//!     }
//! }
//!
//! impl RequestFilter for Tagger {
//!     async fn request_filter(&self, request: &mut Request) -> Result<Decision, Error> {
//!         request.set_header("x-tagged", "1")?;
//!         Ok(Decision::Continue)
//!     }
//! }
//!
//! xsigate_plugin_sdk::export_plugin!(Tagger => RequestFilter);
//! ```

pub mod abi;
pub mod calls;
mod error;
mod exchange;
#[doc(hidden)]
pub mod export;
mod hooks;
mod host;
pub mod secret;
pub mod topics;

pub use calls::{Claimable, Delivery, LeaseGrant, LeaseLost, XsiCredentials};
pub use error::{Error, ErrorKind};
pub use exchange::{Request, Response, SessionInfo};
pub use hooks::{
    Answer, Authentication, BackgroundWorker, Choice, Decision, Event, EventConsumer, FlowStage,
    Grant, IdentityProvider, Login, LoginLevel, LoginOption, LoginQuery, Manifest, MetadataRequest,
    Plugin, QueryMatch, RedirectFlow, RequestFilter, ResponseDecision, ResponseFilter,
    SignInMetadata, UpstreamRequestFilter, phone_number,
};
pub use host::{
    Counter, Gauge, Histogram, Host, HttpRequest, HttpResponse, Leases, LogLevel, Store,
    StreamRead, XsiRequest, XsiResponse, XsiStream,
};
pub use serde_json;

/// Now, in milliseconds since the Unix epoch: the time the host's reports and topics speak in.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
