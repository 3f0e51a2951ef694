//! The request path: Pingora's `ProxyHttp` hooks for xsigate. Each hook delegates to a file of
//! its own, in the order Pingora calls them:
//!
//! 1. [`request_filter`] classifies the path, answers local endpoints, preflights and the
//!    login API, finds the provider, the session and the target (XSP pool, gateway service,
//!    applet), refuses what cannot be routed, and runs the request-filter plugins.
//! 2. [`request_body_filter`] cuts off a chunked body past `body_bytes`.
//! 3. [`upstream_peer`] picks an upstream (the pinned XSP, the session's, or the next healthy
//!    untried one) and decides after `fail_to_connect` / `error_while_proxy` whether it goes
//!    again, by [`crate::upstream::retry`].
//! 4. [`upstream_request`] sets what the upstream receives, then runs upstream-request plugins.
//! 5. [`response_filter`] removes what would reveal the upstream, runs response plugins, and
//!    keeps a session's XSP cookies; `response_body_filter` puts xsigate's error in place of an
//!    XSP error page that is not an XSI document.
//! 6. [`fail_to_proxy`] answers failures with the error envelope, naming no upstream.
//! 7. [`logging`] records metrics and the one access-log line.
//!
//! [`lean`] calls the same hooks in the same order for XSI-Actions requests on a loop of its
//! own, without Pingora's per-request proxy machinery, connection pool and server session;
//! everything else goes through Pingora's `ProxyHttp`. The hooks take the request's client side
//! as a [`client::Client`], which Pingora's session and the lane's both are.
//!
//! Beside the hooks: [`route`] (what a path is, and whether it means one thing),
//! [`channel_sets`] (a session's channel joins only its user's sets), [`headers`]
//! (forwarding and scrubbing), [`cors`], [`respond`] (writing xsigate's own answers),
//! [`context`] (the per-request state) and [`local`] (the metrics listener's endpoints).
//!
//! Layer: the top of the request path; uses every layer below it.

mod channel_sets;
pub mod client;
pub mod context;
pub mod cors;
pub mod fail_to_proxy;
pub mod headers;
pub mod lean;
pub mod local;
mod logging;
mod request_body_filter;
mod request_filter;
pub mod respond;
mod response_filter;
pub mod route;
#[cfg(test)]
mod tests;
mod upstream_peer;
mod upstream_request;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, Result};

use crate::access::{LoginApi, Sessions, Signer};
use crate::edge::addresses::Addresses;
use crate::metrics::GaugeGuard;
use crate::metrics::Metrics;
use crate::plugin::Plugins;
use crate::upstream::{Providers, Tried};
use crate::wire::headers::new_request_id;
use crate::wire::route::RouteClass;
use context::{BodyOverride, RequestCtx, Target};

/// Settings of the request path that do not belong to a provider.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub access_log: bool,
    pub downstream_read_timeout: Duration,
    pub stream_idle_timeout: Duration,
    /// Largest request body passed on (`[server.clients] body_bytes`).
    pub body_bytes: u64,
}

/// The xsigate proxy application: what Pingora's HTTP proxy service runs, and what the
/// [`lean`] lane runs beside it. Built by `server::run` from the parts the rest of the gateway
/// made.
#[derive(Debug, Clone)]
pub struct ProxyApp {
    pub providers: Arc<Providers>,
    /// Which plugins act on each provider's requests.
    pub plugins: Arc<Plugins>,
    /// Resumes the sessions of proxied requests and keeps their XSP state.
    pub sessions: Arc<Sessions>,
    /// Signs identity assertions for gateway services and applets.
    pub signer: Arc<Signer>,
    pub login_api: Arc<LoginApi>,
    pub metrics: Metrics,
    pub settings: ProxySettings,
    /// Per-address request rate for HTTP/2 requests (HTTP/1.x ones are counted at the edge).
    pub addresses: Arc<Addresses>,
}

#[async_trait]
impl ProxyHttp for ProxyApp {
    type CTX = RequestCtx;

    /// None: xsigate never compresses, and Pingora's default registers a disabled compression
    /// module that every request still builds and calls through.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            request_id: new_request_id(),
            started: quanta::Instant::now(),
            route: RouteClass::Unmatched,
            provider: None,
            target: Target::None,
            current: None,
            tried: Tried::default(),
            address_changes: 0,
            attempts: 0,
            upstream_started: None,
            response_started: false,
            refused: None,
            plugin: None,
            plugin_failure: None,
            session: None,
            session_token: None,
            credential_user: None,
            retry_after: None,
            body_override: BodyOverride::None,
            cors_origin: None,
            has_origin: false,
            retry_requested: false,
            plugin_retried: false,
            _in_flight: GaugeGuard::new(&self.metrics.requests_in_flight),
            body_bytes: 0,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // Pingora's own line names the peer address; `logging` writes one that names the XSP.
        true
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        // Retries are counted in xsigate_upstream_retries_total and logged at debug in `logging`.
        true
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.route_request(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.count_request_body(body.as_ref(), ctx)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let peer = self.choose_peer(session, ctx).await?;
        Ok(Box::new(HttpPeer::clone(&peer)))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(session, peer, ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        self.proxy_failed(peer, session, e, ctx, client_reused)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.prepare_upstream_request(session, upstream_request, ctx)
            .await
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.upstream_answered(session, upstream_response, ctx)
            .await
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.prepare_response(session, response, ctx).await
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        Self::replace_body(body, ctx);
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.answer_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.log_request(session, e, ctx).await;
    }
}
