//! The request path: Pingora's `ProxyHttp` hooks for xsigate, in the order Pingora calls them.
//!
//! 1. `request_filter` classifies the path, answers local endpoints, finds the provider and
//!    the target (XSP pool or gateway service), refuses what cannot be routed, and runs the
//!    provider's request-filter plugins, which may answer themselves.
//! 2. `upstream_peer` picks an upstream: the pinned XSP, or the next healthy untried one.
//! 3. `fail_to_connect` / `error_while_proxy` decide whether another XSP may be tried.
//! 4. `upstream_request_filter` sets `Host`, `X-Forwarded-*`, the request id, and the
//!    gateway path, then runs upstream-request plugins.
//! 5. `response_filter` removes what would reveal the upstream, then runs response plugins.
//! 6. `fail_to_proxy` answers failures with a JSON error that names no upstream.
//! 7. `logging` records metrics and the access log line.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, OrErr, Result};

use crate::access::{self, Access, AccessEndpoint, AccessRequest};
use crate::assertion::{self, Claims};
use crate::cors;
use crate::headers::{self, REQUEST_ID, XSP_PIN};
use crate::identity::authorization_user_id;
use crate::metrics::Metrics;
use crate::plugin::{Exchange, Plugin, PluginFailure};
use crate::provider::{Provider, Providers, Resolution};
use crate::respond::{self, ErrorCode};
use crate::route::{self, Route, RouteClass};
use crate::session::{BoundSession, CSRF_HEADER, Sessions, XsiApp};
use crate::upstream::{PeerKind, Tried, Upstream};

/// Settings of the request path that do not belong to a provider.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub access_log: bool,
    pub downstream_read_timeout: Duration,
    pub stream_idle_timeout: Duration,
}

/// The xsigate proxy application.
#[derive(Debug)]
pub struct Gateway {
    providers: Arc<Providers>,
    access: Arc<Access>,
    metrics: Metrics,
    settings: ProxySettings,
}

impl Gateway {
    pub fn new(
        providers: Arc<Providers>,
        access: Arc<Access>,
        metrics: Metrics,
        settings: ProxySettings,
    ) -> Self {
        Self {
            providers,
            access,
            metrics,
            settings,
        }
    }
}

/// How long the identity assertion on a proxied gateway or applet request is valid.
const ASSERTION_LIFETIME_SECONDS: u64 = 60;

/// Where a routed request goes.
#[derive(Debug, Clone)]
enum Target {
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
    request_id: String,
    started: Instant,
    route: RouteClass,
    provider: Option<Arc<Provider>>,
    target: Target,
    /// Index of the XSP currently in use (for XSP targets).
    current: Option<usize>,
    tried: Tried,
    /// Moves to another resolved address of an upstream during this request.
    address_changes: usize,
    attempts: u32,
    upstream_started: Option<Instant>,
    /// Set once an upstream response header arrived: from then on nothing may be retried.
    response_started: bool,
    /// Why xsigate answered instead of an upstream, for the access log.
    refused: Option<ErrorCode>,
    /// The plugin that answered or failed this request, for the access log.
    plugin: Option<String>,
    /// Set when a plugin failed after routing; `fail_to_proxy` answers with it.
    plugin_failure: Option<ErrorCode>,
    /// The login session the request came with.
    session: Option<BoundSession>,
    /// The request's `Origin` when it may see the response (CORS).
    cors_origin: Option<String>,
    /// The request had an `Origin`: responses vary by it.
    has_origin: bool,
    /// A response filter asked for the request to be sent again, and it will be.
    retry_requested: bool,
    /// The one retry response filters may ask for was used.
    plugin_retried: bool,
    _in_flight: GaugeGuard,
    /// Counts this client connection while it lives; see `persist_connection_context`.
    connection: Option<GaugeGuard>,
}

/// Increments a gauge while it lives.
#[derive(Debug)]
struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Records a plugin failure after routing and turns it into the error `fail_to_proxy` answers.
fn plugin_failed(ctx: &mut RequestCtx, plugin: &Plugin, failure: &PluginFailure) -> Box<Error> {
    ctx.plugin = Some(plugin.name.clone());
    ctx.plugin_failure = Some(failure.error_code());
    Error::explain(ErrorType::InternalError, "a plugin failed")
}

fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl RequestCtx {
    fn upstream<'a>(&self, provider: &'a Provider) -> Option<&'a Upstream> {
        match &self.target {
            Target::Xsp { .. } => provider.xsps.members.get(self.current?),
            Target::Gateway { service, .. } => provider.gateway.get(service),
            Target::Applet { name, .. } => provider.applets.get(name).map(|a| &a.upstream),
            Target::None => None,
        }
    }

    /// CORS headers for a response to this request.
    fn cors_headers(&self) -> Vec<(&'static str, &str)> {
        let mut headers = Vec::new();
        if let Some(origin) = &self.cors_origin {
            headers.extend(cors::response_headers(origin));
        }
        if self.has_origin {
            headers.push(("vary", "Origin"));
        }
        headers
    }
}

/// The path and query to send to a gateway service or applet at `base_path`.
fn upstream_path(base_path: &str, rest: &str, query: Option<&str>) -> String {
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

impl Gateway {
    /// The provider of a request without a session (a plain XSI client sending its own
    /// credentials): the one the user ids it carries name.
    fn transparent_provider(&self, session: &Session) -> Result<Arc<Provider>, ErrorCode> {
        let request = session.req_header();
        let credential_user = request
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| authorization_user_id(v.as_bytes()));
        let path_user = route::path_user_id(request.uri.path());
        match self
            .providers
            .resolve(credential_user.as_deref(), path_user.as_deref())
        {
            Resolution::Found(provider) => Ok(Arc::clone(provider)),
            Resolution::NoIdentity => Err(ErrorCode::MissingCredentials),
            Resolution::Unknown => Err(ErrorCode::UnknownProvider),
            Resolution::Conflict => Err(ErrorCode::ConflictingProvider),
        }
    }

    /// The session a proxied request's cookie names, checked for its CSRF token. `None` when
    /// the request has no session cookie.
    async fn proxied_session(
        &self,
        session: &Session,
    ) -> Result<Option<Arc<crate::session::Session>>, ErrorCode> {
        let request = session.req_header();
        let Some(token) =
            access::session_token(request.headers.get_all(http::header::COOKIE).iter())
        else {
            return Ok(None);
        };
        let resumed = self
            .access
            .resume_proxied(&token)
            .await
            .map_err(|()| ErrorCode::Internal)?
            .ok_or(ErrorCode::NotLoggedIn)?;
        // Another site can make a browser send the cookie, but cannot read the CSRF token.
        if !request.method.is_safe() {
            let presented = request
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !Sessions::csrf_matches(&resumed, presented) {
                return Err(ErrorCode::CsrfTokenInvalid);
            }
        }
        Ok(Some(resumed))
    }

    /// Where a routed request goes at its provider.
    fn target(
        session: &Session,
        provider: &Provider,
        route: Route<'_>,
    ) -> Result<Target, ErrorCode> {
        let request = session.req_header();
        let query = request.uri.query();
        Ok(match route {
            Route::Gateway { service, rest } => {
                let upstream = provider
                    .gateway
                    .get(service)
                    .ok_or(ErrorCode::UnknownService)?;
                Target::Gateway {
                    service: service.to_owned(),
                    upstream_path: upstream_path(&upstream.base_path, rest, query),
                }
            }
            Route::Applet { name, rest } => {
                let applet = provider
                    .applets
                    .get(name)
                    .filter(|a| a.mode == crate::config::AppletMode::Proxy)
                    .ok_or(ErrorCode::UnknownApplet)?;
                Target::Applet {
                    name: name.to_owned(),
                    upstream_path: upstream_path(&applet.upstream.base_path, rest, query),
                }
            }
            _ => {
                let pin = match request.headers.get(XSP_PIN) {
                    None => None,
                    Some(value) => {
                        let name = value.to_str().map_err(|_| ErrorCode::InvalidPin)?;
                        Some(provider.xsps.index_of(name).ok_or(ErrorCode::InvalidPin)?)
                    }
                };
                Target::Xsp { pin }
            }
        })
    }

    /// Finds the provider, session and target of a proxied request.
    async fn route(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        route: Route<'_>,
    ) -> Result<(), ErrorCode> {
        route::check_path(session.req_header().uri.path()).map_err(|_| ErrorCode::AmbiguousPath)?;
        let provider = match self.proxied_session(session).await? {
            Some(resumed) => {
                let provider = self
                    .providers
                    .get(&resumed.provider)
                    .cloned()
                    .ok_or(ErrorCode::NotLoggedIn)?;
                let app = match ctx.route {
                    RouteClass::XsiActions => Some(XsiApp::Actions),
                    RouteClass::XsiEvents | RouteClass::XsiAsync => Some(XsiApp::Events),
                    _ => None,
                };
                // A session's XSI requests carry credentials only a plugin puts on them.
                if app.is_some() && !provider.plugins.acts_for_sessions() {
                    return Err(ErrorCode::SessionsNotServed);
                }
                ctx.session = Some(BoundSession::new(resumed, app));
                provider
            }
            // Gateway services and applets learn who the user is from xsigate, so they need a
            // session; plain XSI clients send their own credentials.
            None if ctx.route.is_xsp() => self.transparent_provider(session)?,
            None => return Err(ErrorCode::NotLoggedIn),
        };
        ctx.target = Self::target(session, &provider, route)?;
        ctx.cors_origin = ctx
            .cors_origin
            .take()
            .filter(|origin| cors::allowed_for(&provider, origin));
        ctx.provider = Some(provider);
        Ok(())
    }

    /// Answers a CORS preflight: allowed for an origin some provider lists.
    async fn preflight(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(origin) = ctx.cors_origin.clone() else {
            return self.refuse(session, ctx, ErrorCode::OriginNotAllowed).await;
        };
        let mut headers = cors::preflight_headers(&origin).to_vec();
        headers.push(("vary", "Origin"));
        respond::empty(session, 204, &ctx.request_id, &headers).await?;
        Ok(true)
    }

    /// Runs the provider's request-filter plugins in order. True when the request was
    /// answered: by a plugin, or with an error because one failed.
    async fn request_plugins(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Providers without request plugins pay nothing here, not even an `Arc` clone.
        let Some(provider) = ctx
            .provider
            .as_ref()
            .filter(|p| !p.plugins.request.is_empty())
            .cloned()
        else {
            return Ok(false);
        };
        let client = client_ip(session);
        let mut decided = None;
        {
            let mut exchange = Exchange::request(
                session.req_header_mut(),
                &ctx.request_id,
                &provider.id,
                client,
            )
            .routed(ctx.route.as_str(), None)
            .with_session(ctx.session.as_mut());
            for plugin in &provider.plugins.request {
                if let Some(decision) = plugin.request_filter(&mut exchange).await.transpose() {
                    decided = Some((plugin, decision));
                    break;
                }
            }
        }
        match decided {
            None => Ok(false),
            Some((plugin, Ok(answer))) => {
                ctx.plugin = Some(plugin.name.clone());
                let cors = ctx.cors_headers();
                respond::plugin_answer(session, &answer, &ctx.request_id, &cors).await?;
                Ok(true)
            }
            Some((plugin, Err(failure))) => {
                let code = failure.error_code();
                ctx.plugin = Some(plugin.name.clone());
                self.refuse(session, ctx, code).await
            }
        }
    }

    /// Answers a login API request: reads its (small) body and hands it to [`Access`].
    async fn access(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        endpoint: AccessEndpoint,
    ) -> Result<bool> {
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > access::BODY_LIMIT {
                // The rest of the body stays unread, so the connection cannot be reused.
                session.set_keepalive(None);
                return self.refuse(session, ctx, ErrorCode::PayloadTooLarge).await;
            }
            body.extend_from_slice(&chunk);
        }
        let client = client_ip(session);
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let header = session.req_header();
        let request = AccessRequest {
            endpoint,
            method: header.method.clone(),
            body: body.into(),
            session_token: access::session_token(
                header.headers.get_all(http::header::COOKIE).iter(),
            ),
            csrf: header
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            client,
            tls,
            request_id: ctx.request_id.clone(),
        };
        let reply = self.access.serve(request).await;
        ctx.refused = reply.error;
        let mut extra: Vec<(&'static str, &str)> = reply
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        extra.extend(ctx.cors_headers());
        respond::json(session, reply.status, reply.body, &ctx.request_id, &extra).await?;
        Ok(true)
    }

    /// Runs the provider's response plugins in order, after scrubbing and before xsigate's own
    /// headers, so that no plugin can remove the pin or the request id.
    async fn response_plugins(
        &self,
        session: &Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(provider) = ctx
            .provider
            .as_ref()
            .filter(|p| !p.plugins.response.is_empty())
            .cloned()
        else {
            return Ok(());
        };
        let client = client_ip(session);
        let upstream = ctx.upstream(&provider).map(|u| u.name.as_str());
        let mut retry = false;
        for plugin in &provider.plugins.response {
            let mut exchange = Exchange::response(
                session.req_header(),
                response,
                &ctx.request_id,
                &provider.id,
                client,
            )
            .routed(ctx.route.as_str(), upstream)
            .with_session(ctx.session.as_mut());
            match plugin.response_filter(&mut exchange).await {
                Ok(asked) => retry |= asked,
                Err(failure) => return Err(plugin_failed(ctx, plugin, &failure)),
            }
        }
        // One retry per request, and only while the body it would resend is still held.
        if retry && !ctx.plugin_retried && !session.as_ref().retry_buffer_truncated() {
            ctx.plugin_retried = true;
            ctx.retry_requested = true;
            return Error::e_explain(
                ErrorType::Custom("plugin retry"),
                "a response filter asked for the request to be sent again",
            );
        }
        Ok(())
    }

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        code: ErrorCode,
    ) -> Result<bool> {
        ctx.refused = Some(code);
        let cors = ctx.cors_headers();
        respond::error(session, code, &ctx.request_id, &cors).await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            request_id: new_request_id(),
            started: Instant::now(),
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
            cors_origin: None,
            has_origin: false,
            retry_requested: false,
            plugin_retried: false,
            _in_flight: GaugeGuard::new(&self.metrics.requests_in_flight),
            connection: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if ctx.connection.is_none() && !session.is_http2() {
            ctx.connection = Some(GaugeGuard::new(&self.metrics.downstream_connections));
        }
        session.set_read_timeout(Some(self.settings.downstream_read_timeout));

        let path = session.req_header().uri.path().to_owned();
        let route = route::classify(&path);
        ctx.route = route.class();
        if let Some(origin) = cors::origin(session.req_header()) {
            ctx.has_origin = true;
            ctx.cors_origin =
                cors::allowed_anywhere(&self.providers, origin).then(|| origin.to_owned());
        }
        if cors::is_preflight(session.req_header()) {
            return self.preflight(session, ctx).await;
        }
        match route {
            Route::Healthz | Route::Readyz => {
                let (status, body) = match route {
                    Route::Healthz => (200, respond::LIVE),
                    _ => respond::readiness(self.providers.ready()),
                };
                let body = bytes::Bytes::from_static(body);
                respond::json(session, status, body, &ctx.request_id, &[]).await?;
                return Ok(true);
            }
            Route::Unmatched => return self.refuse(session, ctx, ErrorCode::NotFound).await,
            Route::Access(endpoint) => return self.access(session, ctx, endpoint.into()).await,
            Route::Xsp(_) | Route::Gateway { .. } | Route::Applet { .. } => {}
        }
        if let Err(code) = self.route(session, ctx, route).await {
            return self.refuse(session, ctx, code).await;
        }
        if self.request_plugins(session, ctx).await? {
            return Ok(true);
        }
        if ctx.route == RouteClass::XsiAsync {
            // The channel request body is small and sent at once; afterwards the connection
            // carries a response stream for hours, with nothing more to read from the client.
            session.set_read_timeout(Some(self.settings.stream_idle_timeout));
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(provider) = ctx.provider.clone() else {
            return Error::e_explain(ErrorType::InternalError, "upstream_peer without a provider");
        };
        let kind = if ctx.route == RouteClass::XsiAsync {
            PeerKind::Stream
        } else {
            PeerKind::Request
        };
        let upstream = match &ctx.target {
            Target::Xsp { pin } => {
                // A session goes back to the XSP holding its cookies while that one is up.
                let preferred = ctx
                    .session
                    .as_ref()
                    .and_then(|bound| bound.xsp.as_deref())
                    .and_then(|name| provider.xsps.index_of(name))
                    .filter(|i| !ctx.tried.contains(*i) && provider.xsps.is_usable(*i));
                let index = match pin {
                    Some(pinned) if !ctx.tried.contains(*pinned) => Some(*pinned),
                    Some(_) => None,
                    None => preferred.or_else(|| provider.xsps.select(ctx.tried)),
                };
                let Some(index) = index else {
                    return Error::e_explain(ErrorType::ConnectNoRoute, "every XSP was tried");
                };
                ctx.tried.add(index);
                ctx.current = Some(index);
                provider.xsps.members.get(index)
            }
            Target::Gateway { service, .. } => provider.gateway.get(service),
            Target::Applet { name, .. } => provider.applets.get(name).map(|a| &a.upstream),
            Target::None => None,
        };
        let Some(upstream) = upstream else {
            return Error::e_explain(ErrorType::InternalError, "no upstream for target");
        };
        ctx.attempts += 1;
        if ctx.attempts > 1 {
            provider.metrics.retries.inc();
        }
        ctx.upstream_started = Some(Instant::now());
        match upstream.peer(kind) {
            Some(peer) => Ok(peer),
            None => Error::e_explain(
                ErrorType::ConnectNoRoute,
                "upstream host has no address yet",
            ),
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(provider) = ctx.provider.clone() else {
            return e;
        };
        let mut other_address = false;
        if let Some(upstream) = ctx.upstream(&provider) {
            upstream.metrics.connect_failures.inc();
            upstream.mark_failure(&provider.id);
            // Each of the host's other addresses gets one try within this request.
            if ctx.address_changes + 1 < upstream.address_count() && upstream.next_address() {
                ctx.address_changes += 1;
                other_address = true;
                if let Some(current) = ctx.current {
                    ctx.tried.remove(current);
                }
            }
        }
        // Nothing reached the upstream, so any request may go elsewhere; a pinned request only to
        // another address of its own XSP, since its channel lives on that XSP.
        let failover =
            matches!(ctx.target, Target::Xsp { pin: None }) && provider.xsps.has_untried(ctx.tried);
        e.set_retry(failover || other_address);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.retry_requested) {
            // Asked for by a response filter (the XSP's session expired): the same XSP again.
            if let Some(current) = ctx.current {
                ctx.tried.remove(current);
            }
            ctx.response_started = false;
            e.set_retry(true);
            return e;
        }
        // An idempotent request whose response has not started may be sent again, to another XSP
        // when it is not pinned: the XSP may have died with the request in flight. A request that
        // is not idempotent, or whose body no longer fits the retry buffer, may have had effects.
        let idempotent = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        let retry = if !idempotent || ctx.response_started || ctx.route == RouteClass::XsiAsync {
            false
        } else {
            match (&ctx.target, &ctx.provider) {
                (Target::Xsp { pin: None }, Some(provider)) => {
                    provider.xsps.has_untried(ctx.tried) || client_reused
                }
                // The same upstream again, only when the failure was a stale pooled connection.
                _ => client_reused,
            }
        };
        if retry && client_reused {
            // A stale pooled connection says nothing about the XSP: it may be chosen again.
            if let Some(current) = ctx.current {
                ctx.tried.remove(current);
            }
        }
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(provider) = ctx.provider.clone() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "upstream request without a provider",
            );
        };
        let Some(upstream) = ctx.upstream(&provider) else {
            return Error::e_explain(
                ErrorType::InternalError,
                "upstream request without an upstream",
            );
        };
        upstream_request.insert_header(http::header::HOST, upstream.authority())?;
        if let Target::Gateway { upstream_path, .. } | Target::Applet { upstream_path, .. } =
            &ctx.target
        {
            let uri = upstream_path
                .parse::<http::Uri>()
                .or_err(ErrorType::InvalidHTTPHeader, "gateway path")?;
            upstream_request.set_uri(uri);
        }
        upstream_request.remove_header(XSP_PIN);
        // Only xsigate speaks for a user; nothing a client sends may pass for it.
        upstream_request.remove_header(assertion::HEADER);
        if let Some(bound) = &ctx.session {
            // The browser's cookies and credentials are xsigate's; what the upstream needs, a
            // plugin or the assertion supplies.
            upstream_request.remove_header(&http::header::COOKIE);
            upstream_request.remove_header(&http::header::AUTHORIZATION);
            upstream_request.remove_header(CSRF_HEADER);
            let session = &bound.session;
            let audience = match &ctx.target {
                Target::Gateway { service, .. } => {
                    Some((service.as_str(), Some(session.user_id.as_str())))
                }
                // Applets are third parties: they learn the opaque uniqueId only.
                Target::Applet { name, .. } => Some((name.as_str(), None)),
                Target::Xsp { .. } | Target::None => None,
            };
            if let (Some((audience, user_id)), Some(unique_id)) = (audience, &session.unique_id) {
                let token = self.access.signer().sign(&Claims {
                    audience,
                    subject: unique_id,
                    provider: &session.provider,
                    level: session.level.as_str(),
                    user_id,
                    lifetime_seconds: ASSERTION_LIFETIME_SECONDS,
                });
                upstream_request.insert_header(assertion::HEADER, token)?;
            }
        }
        upstream_request.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        let client_ip = client_ip(session);
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        headers::forward_client(upstream_request, client_ip, tls)?;
        // Plugins may run again when the request is retried on another XSP.
        for plugin in &provider.plugins.upstream_request {
            let mut exchange =
                Exchange::request(upstream_request, &ctx.request_id, &provider.id, client_ip)
                    .routed(ctx.route.as_str(), Some(&upstream.name))
                    .with_session(ctx.session.as_mut());
            if let Err(failure) = plugin.upstream_request_filter(&mut exchange).await {
                return Err(plugin_failed(ctx, plugin, &failure));
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.response_started = true;
        if let Some(provider) = &ctx.provider {
            if let Some(started) = ctx.upstream_started {
                provider
                    .metrics
                    .record_upstream(ctx.route, started.elapsed().as_secs_f64());
            }
            if let Some(upstream) = ctx.upstream(provider) {
                upstream.health.record_response();
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(provider) = &ctx.provider {
            headers::scrub_response(response, |url| {
                provider.upstreams().any(|u| u.matches_authority(url))
            });
        }
        self.response_plugins(session, response, ctx).await?;
        if let Some(bound) = ctx.session.as_mut() {
            // The XSP's cookies stay with the session, and its Basic challenge would make a
            // browser prompt for a password the gateway already holds.
            response.remove_header(&http::header::SET_COOKIE);
            response.remove_header(&http::header::WWW_AUTHENTICATE);
            if std::mem::take(&mut bound.changed) {
                let valid_xsp = bound.xsp.as_deref().is_none_or(|name| {
                    ctx.provider
                        .as_ref()
                        .is_some_and(|p| p.xsps.index_of(name).is_some())
                });
                if valid_xsp {
                    self.access.keep_xsp_state(bound);
                }
            }
        }
        for (name, value) in ctx.cors_headers() {
            response.insert_header(name, value)?;
        }
        if let Some(provider) = &ctx.provider {
            if let (Target::Xsp { .. }, Some(xsp)) = (&ctx.target, ctx.upstream(provider)) {
                response.insert_header(XSP_PIN, xsp.name.as_str())?;
            }
        }
        response.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        if session.is_process_shutting_down() {
            // Draining for a stop or an upgrade: this connection ends after this response, and
            // `Connection: close` sends the client's next request to the new process.
            session.set_keepalive(None);
        }
        Ok(())
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

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match (e.esource(), e.etype()) {
            _ if ctx.plugin_failure.is_some() => ctx.plugin_failure,
            (_, ErrorType::HTTPStatus(status)) if *status >= 500 => Some(ErrorCode::Internal),
            (_, ErrorType::HTTPStatus(_)) => Some(ErrorCode::BadRequest),
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Some(ErrorCode::UpstreamTimeout),
            (ErrorSource::Upstream, _) => Some(ErrorCode::UpstreamUnavailable),
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => None,
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => Some(ErrorCode::BadRequest),
            (ErrorSource::Downstream, _) => Some(ErrorCode::BadRequest),
            (ErrorSource::Internal | ErrorSource::Unset, _) => {
                // Connect failures raised by upstream_peer itself (every XSP tried, no address).
                if matches!(e.etype(), ErrorType::ConnectNoRoute) {
                    Some(ErrorCode::UpstreamUnavailable)
                } else {
                    Some(ErrorCode::Internal)
                }
            }
        };
        let mut status = 0;
        if let Some(code) = code {
            ctx.refused = Some(code);
            // Once a response has started downstream, a second one cannot be written.
            if session.response_written().is_none() {
                // The connection is closed after a failure; `Connection: close` tells the client
                // not to send its next request on it.
                session.set_keepalive(None);
                status = code.status();
                let cors = ctx.cors_headers();
                if respond::error(session, code, &ctx.request_id, &cors)
                    .await
                    .is_err()
                {
                    status = 0;
                }
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        let metrics = ctx
            .provider
            .as_ref()
            .map_or(&self.providers.unrouted, |p| &p.metrics);
        metrics.record_request(ctx.route, status, elapsed.as_secs_f64());

        if !self.settings.access_log && e.is_none() {
            return;
        }
        let request = session.req_header();
        let provider = ctx.provider.as_ref().map_or("-", |p| p.id.as_str());
        let upstream = ctx
            .provider
            .as_ref()
            .and_then(|p| ctx.upstream(p))
            .map_or("-", |u| u.name.as_str());
        let refused = ctx.refused.map_or("-", ErrorCode::as_str);
        let plugin = ctx.plugin.as_deref().unwrap_or("-");
        // Path only: query strings can carry directory searches for e-mail addresses and numbers.
        let path = request.uri.path();
        // One line shape for both outcomes; only the level and the error fields differ.
        macro_rules! access_line {
            ($level:expr, $($error:tt)*) => {
                tracing::event!(
                    target: "xsigate::access",
                    $level,
                    request_id = %ctx.request_id,
                    method = %request.method,
                    path,
                    status,
                    provider,
                    route = ctx.route.as_str(),
                    upstream,
                    attempts = ctx.attempts,
                    refused,
                    plugin,
                    $($error)*
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                )
            };
        }
        match e {
            None => access_line!(tracing::Level::INFO,),
            Some(e) => access_line!(
                tracing::Level::WARN,
                error = e.etype().as_str(),
                error_source = e.esource().as_str(),
            ),
        }
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        // The connection guard must outlive this request; Pingora keeps what we return until the
        // next request on the connection, and drops it when the connection closes.
        ctx.connection
            .as_ref()
            .map(|g| Box::new(GaugeGuard::new(&g.0)) as Box<dyn std::any::Any + Send + Sync>)
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        previous: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(guard) = previous.downcast::<GaugeGuard>() {
            ctx.connection = Some(*guard);
        }
    }
}
