//! `upstream_request_filter`: what the upstream receives. `Host`, the gateway path, the request
//! id and `X-Forwarded-*`; never the client's pin, cookies, credentials or CSRF token on a
//! session, nor an assertion the client forged; a fresh identity assertion for gateway
//! services and applets; then the upstream-request plugins.

use std::sync::Arc;

use super::client::Client;
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, OrErr, Result};

use super::ProxyApp;
use super::context::{RequestCtx, Target, plugin_failed};
use super::headers::{self, Outgoing};
use crate::access::Claims;
use crate::plugin::Exchange;
use crate::upstream::{Provider, Upstream};
use crate::wire::fields;
use crate::wire::headers::{ASSERTION, ASSERTION_NAME, CSRF_TOKEN, REQUEST_ID_NAME, XSP_PIN};

/// How long the identity assertion on a proxied gateway or applet request is valid.
const ASSERTION_LIFETIME_SECONDS: u64 = 60;

impl ProxyApp {
    /// The whole filter on a head of Pingora's (the proxy's path).
    pub(super) async fn prepare_upstream_request(
        &self,
        session: &mut impl Client,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.put_own_fields(session, upstream_request, ctx)?;
        self.upstream_request_plugins(session, upstream_request, ctx)
            .await
    }

    /// xsigate's part: the target, the fields withheld and xsigate's own.
    pub(super) fn put_own_fields(
        &self,
        session: &impl Client,
        upstream_request: &mut impl Outgoing,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let provider = routed_provider(ctx)?;
        let upstream = routed_upstream(ctx, provider)?;
        if let Target::Gateway { upstream_path, .. } | Target::Applet { upstream_path, .. } =
            &ctx.target
        {
            let uri = upstream_path
                .parse::<http::Uri>()
                .or_err(ErrorType::InvalidHTTPHeader, "gateway path")?;
            upstream_request.set_uri(uri);
        }
        // Only xsigate speaks for a user; nothing a client sends may pass for it. On a session,
        // the browser's cookies and credentials are xsigate's; what the upstream needs, a
        // plugin or the assertion supplies.
        let on_session = ctx.session.is_some();
        let withheld = |name: &http::HeaderName| {
            name.as_str() == XSP_PIN
                || name.as_str() == ASSERTION
                || (on_session
                    && (name == http::header::COOKIE
                        || name == http::header::AUTHORIZATION
                        || name.as_str() == CSRF_TOKEN))
        };
        while let Some(name) = headers::first_present(upstream_request.fields(), withheld) {
            upstream_request.remove(&name);
        }
        let mut assertion = None;
        if let Some(bound) = &ctx.session {
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
                let token = self.signer.sign(&Claims {
                    audience,
                    subject: unique_id,
                    provider: &session.provider,
                    level: session.level.as_str(),
                    user_id,
                    lifetime_seconds: ASSERTION_LIFETIME_SECONDS,
                });
                assertion = Some((ASSERTION_NAME, fields::value(token)?));
            }
        }
        let client_ip = session.client_ip();
        let tls = session.is_tls();
        let forwarded = headers::forwarded_fields(upstream_request.fields(), client_ip, tls)?;
        let host = match upstream.host_value() {
            Some(host) => host,
            None => fields::value(upstream.authority())?,
        };
        let own = [
            Some((http::header::HOST, host)),
            assertion,
            Some((REQUEST_ID_NAME, fields::value(&ctx.request_id)?)),
        ];
        upstream_request.put(own.into_iter().chain(forwarded).flatten())?;
        if let Some(bound) = ctx.session.as_mut() {
            bound.master_credentials = false;
        }
        Ok(())
    }

    /// The upstream-request plugins, then the master's credentials if one asked for them.
    /// Plugins may run again when the request is retried on another XSP.
    pub(super) async fn upstream_request_plugins(
        &self,
        session: &impl Client,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_ip = session.client_ip();
        // Held apart from `ctx`, whose session the plugins borrow.
        let provider = Arc::clone(routed_provider(ctx)?);
        let upstream = routed_upstream(ctx, &provider)?;
        for plugin in &self.plugins.chain(&provider).upstream_request {
            let mut exchange =
                Exchange::request(upstream_request, &ctx.request_id, &provider.id, client_ip)
                    .routed(ctx.route.as_str(), Some(&upstream.name))
                    .with_session(ctx.session.as_mut());
            if let Err(failure) = plugin.upstream_request_filter(&mut exchange).await {
                return Err(plugin_failed(ctx, plugin, &failure));
            }
        }
        if ctx.session.as_ref().is_some_and(|b| b.master_credentials) {
            // A single-sign-on session: the plugin that authorized the request asked for the
            // master's credentials, which no plugin sees.
            let Some(master) = &provider.master else {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "a single-sign-on session on a provider without master credentials",
                );
            };
            upstream_request.insert_header(http::header::AUTHORIZATION, master.authorization())?;
        }
        Ok(())
    }
}

/// The provider the request was routed to; none is an error of xsigate's own.
fn routed_provider(ctx: &RequestCtx) -> Result<&Arc<Provider>> {
    ctx.provider.as_ref().ok_or_else(|| {
        Error::explain(
            ErrorType::InternalError,
            "upstream request without a provider",
        )
    })
}

/// The upstream of `provider` the request was routed to; none is an error of xsigate's own.
fn routed_upstream<'p>(ctx: &RequestCtx, provider: &'p Provider) -> Result<&'p Upstream> {
    ctx.upstream(provider).ok_or_else(|| {
        Error::explain(
            ErrorType::InternalError,
            "upstream request without an upstream",
        )
    })
}
