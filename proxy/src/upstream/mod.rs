//! Where requests go: service providers and their upstreams (XSPs, gateway services, proxied
//! applets), each upstream's addresses and health, the XSP pool's choice and the retry rule,
//! and the XSI requests the gateway sends itself.
//!
//! - [`provider`]: the providers at run time and the index that routes a request to one;
//!   [`identity`] reads the user ids that routing goes by.
//! - [`peer`]: one upstream host, resolved off the request path; [`pool`]: a provider's XSPs.
//! - [`health`]: an upstream's health; [`probe`]: active probes and DNS refresh; [`retry`]:
//!   when a failed request goes again.
//! - [`xsi`]: requests the gateway itself sends to an XSP, on the same rules as the proxy;
//!   [`channel_stream`]: the XSI-Events channel streams among them, each on a lean connection.
//! - [`answer`]: an upstream's HTTP/1.x answer read off a connection xsigate holds itself
//!   (channel streams, the lean lane's XSI-Actions requests).
//!
//! Layer: above [`crate::config`], [`crate::wire`] and [`crate::metrics`]; uses nothing else
//! in the crate. Which plugins act on a provider's requests is the plugin host's to know
//! ([`crate::plugin::Plugins::chain`]); a provider only names them.

pub mod answer;
pub mod channel_stream;
pub mod health;
pub mod identity;
pub mod peer;
pub mod pool;
pub mod probe;
pub mod provider;
pub mod retry;
pub mod xsi;

pub use channel_stream::{ChannelStream, StreamHead};
pub use peer::{PeerKind, Upstream, UpstreamError};
pub use pool::{Pool, Tried};
pub use provider::{Applet, Master, Provider, Providers, Resolution};
pub use xsi::{StreamError, XsiCall, XsiCallError};
