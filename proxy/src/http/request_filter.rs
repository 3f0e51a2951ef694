//! `request_filter`: classify the path, answer what xsigate answers itself (health, preflights,
//! the login API), find the provider, the session and the target, refuse what cannot be
//! routed, and run the provider's request-filter plugins, which may answer themselves.

use std::sync::Arc;

use super::client::Client;
use pingora::Result;

use super::ProxyApp;
use super::context::{RequestCtx, Target, upstream_path};
use super::cors;
use super::respond;
use super::route::{self, Admission, Route};
use crate::access::{AccessRequest, BODY_LIMIT, Endpoint, Sessions, cookie, is_form, is_json};
use crate::config::AppletMode;
use crate::edge::addresses::retry_after_seconds;
use crate::plugin::Exchange;
use crate::state::session::{BoundSession, Session as LoginSession};
use crate::state::token::DigestedToken;
use crate::upstream::identity::authorization_user_id;
use crate::upstream::{Provider, Resolution};
use crate::wire::error::{self, ErrorCode};
use crate::wire::headers::{
    CSRF_TOKEN_NAME, DEVICE_COOKIE, FLOW_COOKIE, SESSION_COOKIE, XSP_PIN_NAME,
};
use crate::wire::route::RouteClass;

impl ProxyApp {
    pub(super) async fn route_request(
        &self,
        session: &mut impl Client,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        session.set_read_timeout(self.settings.downstream_read_timeout);
        if session.is_http2()
            && let Some(ip) = session.client_ip()
            && let Err(wait) = self.addresses.request(ip)
        {
            ctx.retry_after = Some(retry_after_seconds(wait));
            return self.refuse(session, ctx, ErrorCode::TooManyRequests).await;
        }

        // The URI shares the head's bytes: a copy of it costs a reference count, where the path
        // copied would cost an allocation.
        let uri = session.req_header().uri.clone();
        let route = route::classify(uri.path());
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
                    Route::Healthz => (200, error::LIVE),
                    _ => error::readiness(self.providers.ready()),
                };
                let body = bytes::Bytes::from_static(body);
                respond::json(session, status, body, &ctx.request_id, &[]).await?;
                return Ok(true);
            }
            Route::Unmatched => return self.refuse(session, ctx, ErrorCode::NotFound).await,
            Route::Access(endpoint) => return self.access(session, ctx, endpoint).await,
            Route::Xsp(_) | Route::Gateway { .. } | Route::Applet { .. } => {}
        }
        if let Err(code) = self.route(session, ctx, route).await {
            return self.refuse(session, ctx, code).await;
        }
        if let Err(code) = self.own_channel_set(session, ctx).await? {
            return self.refuse(session, ctx, code).await;
        }
        if self.request_plugins(session, ctx).await? {
            return Ok(true);
        }
        if ctx.route == RouteClass::XsiAsync {
            // The channel request body is small and sent at once; afterwards the connection
            // carries a response stream for hours, with nothing more to read from the client.
            session.set_read_timeout(self.settings.stream_idle_timeout);
        }
        Ok(false)
    }

    /// Finds the provider, session and target of a proxied request.
    async fn route(
        &self,
        session: &impl Client,
        ctx: &mut RequestCtx,
        route: Route<'_>,
    ) -> Result<(), ErrorCode> {
        route::check_path(session.req_header().uri.path()).map_err(|_| ErrorCode::AmbiguousPath)?;
        let resumed = match self
            .proxied_session(session, &mut ctx.session_token)
            .await?
        {
            Some(resumed) => {
                let provider = self
                    .providers
                    .get(&resumed.provider)
                    .cloned()
                    .ok_or(ErrorCode::NotLoggedIn)?;
                Some((resumed, provider))
            }
            None => None,
        };
        let serves_sessions = resumed
            .as_ref()
            .map(|(_, provider)| self.plugins.chain(provider).acts_for_sessions());
        let provider = match (route::admit(ctx.route, serves_sessions)?, resumed) {
            (Admission::Session, Some((resumed, provider))) => {
                ctx.session = Some(BoundSession::new(resumed, ctx.route.xsi_app()));
                provider
            }
            // `admit` answers `Session` only for a request that has one.
            (Admission::Session, None) => return Err(ErrorCode::NotLoggedIn),
            (Admission::Transparent, _) => {
                let (provider, credential_user) = self.transparent_provider(session)?;
                if let Some(user) = credential_user {
                    self.admit_transparent(session, ctx, user)?;
                }
                provider
            }
        };
        ctx.target = Self::target(session, &provider, &route)?;
        ctx.cors_origin = ctx
            .cors_origin
            .take()
            .filter(|origin| cors::allowed_for(&provider, origin));
        ctx.provider = Some(provider);
        Ok(())
    }

    /// Where a routed request goes at its provider.
    fn target(
        session: &impl Client,
        provider: &Provider,
        route: &Route<'_>,
    ) -> Result<Target, ErrorCode> {
        let request = session.req_header();
        let query = request.uri.query();
        Ok(match *route {
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
                    .filter(|a| a.mode == AppletMode::Proxy)
                    .ok_or(ErrorCode::UnknownApplet)?;
                Target::Applet {
                    name: name.to_owned(),
                    upstream_path: upstream_path(&applet.upstream.base_path, rest, query),
                }
            }
            _ => {
                let pin = match request.headers.get(XSP_PIN_NAME) {
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

    /// The session a proxied request's cookie names, checked for its CSRF token. `None` when
    /// the request has no session cookie. `last_token`: the token the connection presented
    /// last, with its digest.
    async fn proxied_session(
        &self,
        session: &impl Client,
        last_token: &mut Option<DigestedToken>,
    ) -> Result<Option<Arc<LoginSession>>, ErrorCode> {
        let request = session.req_header();
        let Some(token) = cookie(
            request.headers.get_all(http::header::COOKIE).iter(),
            SESSION_COOKIE,
        ) else {
            return Ok(None);
        };
        let hashed = DigestedToken::digest(last_token, token).ok_or(ErrorCode::NotLoggedIn)?;
        let resumed = self
            .sessions
            .resume_proxied(token, hashed)
            .await?
            .ok_or(ErrorCode::NotLoggedIn)?;
        // Another site can make a browser send the cookie, but cannot read the CSRF token.
        if !request.method.is_safe() {
            let presented = request
                .headers
                .get(CSRF_TOKEN_NAME)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !Sessions::csrf_matches(&resumed, presented) {
                return Err(ErrorCode::CsrfTokenInvalid);
            }
        }
        Ok(Some(resumed))
    }

    /// The provider of a request without a session (a plain XSI client sending its own
    /// credentials): the one the user ids it carries name, and the user id of its credentials.
    fn transparent_provider(
        &self,
        session: &impl Client,
    ) -> Result<(Arc<Provider>, Option<String>), ErrorCode> {
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
            Resolution::Found(provider) => Ok((Arc::clone(provider), credential_user)),
            Resolution::NoIdentity => Err(ErrorCode::MissingCredentials),
            Resolution::Unknown => Err(ErrorCode::UnknownProvider),
            Resolution::Conflict => Err(ErrorCode::ConflictingProvider),
        }
    }

    /// A plain XSI client's credentials are refused before the XSP while their user id or the
    /// client's address is locked, as at the login API.
    fn admit_transparent(
        &self,
        session: &impl Client,
        ctx: &mut RequestCtx,
        user: String,
    ) -> Result<(), ErrorCode> {
        if let Some(wait) = self.login_api.transparent_wait(&user, session.client_ip()) {
            ctx.retry_after = Some(wait.as_secs());
            return Err(ErrorCode::TooManyAttempts);
        }
        ctx.credential_user = Some(user);
        Ok(())
    }

    /// Answers a CORS preflight: allowed for an origin some provider lists.
    async fn preflight(&self, session: &mut impl Client, ctx: &mut RequestCtx) -> Result<bool> {
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
    async fn request_plugins(
        &self,
        session: &mut impl Client,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // Providers without request plugins pay nothing here, not even an `Arc` clone.
        let Some(provider) = ctx
            .provider
            .as_ref()
            .filter(|p| !self.plugins.chain(p).request.is_empty())
            .cloned()
        else {
            return Ok(false);
        };
        let client = session.client_ip();
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
            for plugin in &self.plugins.chain(&provider).request {
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

    /// Answers a login API request: reads its (small) body and hands it to [`LoginApi`](crate::access::LoginApi).
    async fn access(
        &self,
        session: &mut impl Client,
        ctx: &mut RequestCtx,
        endpoint: Endpoint,
    ) -> Result<bool> {
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > BODY_LIMIT {
                // The rest of the body stays unread, so the connection cannot be reused.
                session.set_keepalive(None);
                return self.refuse(session, ctx, ErrorCode::PayloadTooLarge).await;
            }
            body.extend_from_slice(&chunk);
        }
        let client = session.client_ip();
        let tls = session.is_tls();
        let header = session.req_header();
        let content_type = header
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let request = AccessRequest {
            endpoint,
            method: header.method.clone(),
            body: body.into(),
            query: header.uri.query().map(str::to_owned),
            session_token: cookie(
                header.headers.get_all(http::header::COOKIE).iter(),
                SESSION_COOKIE,
            )
            .map(str::to_owned),
            device_cookie: cookie(
                header.headers.get_all(http::header::COOKIE).iter(),
                DEVICE_COOKIE,
            )
            .map(str::to_owned),
            flow_cookie: cookie(
                header.headers.get_all(http::header::COOKIE).iter(),
                FLOW_COOKIE,
            )
            .map(str::to_owned),
            csrf: header
                .headers
                .get(CSRF_TOKEN_NAME)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            client,
            tls,
            json: is_json(content_type),
            form: is_form(content_type),
            request_id: ctx.request_id.clone(),
        };
        let reply = self.login_api.serve(request).await;
        ctx.refused = reply.error;
        // An answer about a user is for the dialer origins of that user's provider only.
        if let Some(provider) = &reply.provider {
            let readable = self.providers.get(provider);
            ctx.cors_origin = ctx
                .cors_origin
                .take()
                .filter(|origin| readable.is_some_and(|p| cors::allowed_for(p, origin)));
        }
        let mut extra: Vec<(&'static str, &str)> = reply
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        extra.extend(ctx.cors_headers());
        respond::json(session, reply.status, reply.body, &ctx.request_id, &extra).await?;
        Ok(true)
    }

    pub(super) async fn refuse(
        &self,
        session: &mut impl Client,
        ctx: &mut RequestCtx,
        code: ErrorCode,
    ) -> Result<bool> {
        ctx.refused = Some(code);
        let retry_after = ctx.retry_after.map(|seconds| seconds.to_string());
        let mut extra = ctx.cors_headers();
        if let Some(seconds) = &retry_after {
            extra.push(("retry-after", seconds.as_str()));
        }
        respond::error(session, code, &ctx.request_id, &extra).await?;
        Ok(true)
    }
}
