//! The state one request carries through the hooks, and small helpers they share.

use std::sync::Arc;
use std::time::Instant;

use pingora::{Error, ErrorType};

use super::cors;
use crate::metrics::GaugeGuard;
use crate::plugin::{Plugin, PluginFailure};
use crate::state::session::BoundSession;
use crate::state::token::DigestedToken;
use crate::upstream::retry::Attempt;
use crate::upstream::{Provider, Tried, Upstream};
use crate::wire::error::ErrorCode;
use crate::wire::route::RouteClass;

/// Where a routed request goes.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// Not decided (yet, or never: local answers and refusals).
    None,
    /// The provider's XSP pool, optionally pinned to one member by the client's pin header.
    /// A session's own XSP is preferred, not pinned: when it fails the session moves on.
    Xsp { pin: Option<usize> },
    /// A gateway service; `upstream_path` is the path and query to send.
    Gateway {
        service: String,
        upstream_path: String,
    },
    /// A proxied applet.
    Applet { name: String, upstream_path: String },
}

/// Per-request state shared by the hooks.
#[derive(Debug)]
pub struct RequestCtx {
    pub(super) request_id: String,
    /// On quanta's clock, cheaper to read than `std`'s (see `plugin::hooks`).
    pub(super) started: quanta::Instant,
    pub(super) route: RouteClass,
    pub(super) provider: Option<Arc<Provider>>,
    pub(super) target: Target,
    /// Index of the XSP currently in use (for XSP targets).
    pub(super) current: Option<usize>,
    pub(super) tried: Tried,
    /// Moves to another resolved address of an upstream during this request.
    pub(super) address_changes: usize,
    pub(super) attempts: u32,
    pub(super) upstream_started: Option<Instant>,
    /// Set once an upstream response header arrived: from then on nothing may be retried.
    pub(super) response_started: bool,
    /// Why xsigate answered instead of an upstream, for the access log.
    pub(super) refused: Option<ErrorCode>,
    /// The plugin that answered or failed this request, for the access log.
    pub(super) plugin: Option<String>,
    /// Set when a plugin failed after routing; `fail_to_proxy` answers with it.
    pub(super) plugin_failure: Option<ErrorCode>,
    /// The login session the request came with.
    pub(super) session: Option<BoundSession>,
    /// The session cookie's token and digest that the client connection presented last: the
    /// lane carries it from one request on a connection to the next.
    pub(super) session_token: Option<DigestedToken>,
    /// The user id in a plain XSI client's credentials (transparent mode), whose failures
    /// the login limiter counts.
    pub(super) credential_user: Option<String>,
    /// Seconds a refused client must wait (`Retry-After`).
    pub(super) retry_after: Option<u64>,
    /// The body that replaces an upstream's error body the client may not see.
    pub(super) body_override: BodyOverride,
    /// The request's `Origin` when it may see the response (CORS).
    pub(super) cors_origin: Option<String>,
    /// The request had an `Origin`: responses vary by it.
    pub(super) has_origin: bool,
    /// A response filter asked for the request to be sent again, and it will be.
    pub(super) retry_requested: bool,
    /// The one retry response filters may ask for was used.
    pub(super) plugin_retried: bool,
    pub(super) _in_flight: GaugeGuard,
    /// Request body bytes passed on so far.
    pub(super) body_bytes: u64,
}

/// Whether xsigate replaces the upstream's response body.
#[derive(Debug, Default)]
pub(super) enum BodyOverride {
    /// The upstream's body passes.
    #[default]
    None,
    /// This goes instead, at the first body chunk.
    Pending(bytes::Bytes),
    /// It went; the upstream's chunks are dropped.
    Sent,
}

/// Records a plugin failure after routing and turns it into the error `fail_to_proxy` answers.
pub(super) fn plugin_failed(
    ctx: &mut RequestCtx,
    plugin: &Plugin,
    failure: &PluginFailure,
) -> Box<Error> {
    ctx.plugin = Some(plugin.name.clone());
    ctx.plugin_failure = Some(failure.error_code());
    Error::explain(ErrorType::InternalError, "a plugin failed")
}

impl RequestCtx {
    pub(super) fn upstream<'a>(&self, provider: &'a Provider) -> Option<&'a Upstream> {
        match &self.target {
            Target::Xsp { .. } => provider.xsps.members.get(self.current?),
            Target::Gateway { service, .. } => provider.gateway.get(service),
            Target::Applet { name, .. } => provider.applets.get(name).map(|a| &a.upstream),
            Target::None => None,
        }
    }

    /// CORS headers for a response to this request.
    pub(super) fn cors_headers(&self) -> Vec<(&'static str, &str)> {
        let mut headers = Vec::new();
        if let Some(origin) = &self.cors_origin {
            headers.extend(cors::response_headers(origin));
        }
        if self.has_origin {
            headers.push(("vary", "Origin"));
        }
        headers
    }

    /// What the retry rule needs to know of this request.
    pub(super) fn attempt(&self, provider: &Provider, idempotent: bool) -> Attempt {
        Attempt {
            idempotent,
            pinned: !matches!(self.target, Target::Xsp { pin: None }),
            stream: self.route == RouteClass::XsiAsync,
            untried_left: provider.xsps.has_untried(self.tried),
        }
    }
}

/// The path and query to send to a gateway service or applet at `base_path`.
pub(super) fn upstream_path(base_path: &str, rest: &str, query: Option<&str>) -> String {
    let mut path = format!("{base_path}{rest}");
    if path.is_empty() {
        path.push('/');
    }
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    path
}
