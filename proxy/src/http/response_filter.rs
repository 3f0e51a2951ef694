//! `upstream_response_filter` and `response_filter`: what the client receives. Whatever would
//! reveal the upstream is removed, the response plugins run, a session keeps the XSP's cookies
//! (the browser never sees them), and xsigate's own headers go on last, where no plugin can
//! remove them.

use super::client::Client;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

use super::ProxyApp;
use super::context::{BodyOverride, RequestCtx, Target, plugin_failed};
use super::headers;
use crate::plugin::Exchange;
use crate::wire::error::{ErrorCode, error_body_with_status};
use crate::wire::fields::{self, Put};
use crate::wire::headers::{REQUEST_ID_NAME, XSP_PIN_NAME};

impl ProxyApp {
    pub(super) async fn upstream_answered(
        &self,
        session: &mut impl Client,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.response_started = true;
        if let Some(user) = &ctx.credential_user {
            self.login_api.transparent_answered(
                user,
                session.client_ip(),
                upstream_response.status.as_u16(),
            );
        }
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

    pub(super) async fn prepare_response(
        &self,
        session: &mut impl Client,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(provider) = &ctx.provider {
            headers::scrub_response(response, |url| {
                provider.upstreams().any(|u| u.matches_authority(url))
            });
        }
        self.response_plugins(session, response, ctx).await?;
        Self::hide_error_page(session, response, ctx)?;
        let stale_password = self
            .end_sessions_holding_a_stale_password(session, response, ctx)
            .await;
        if let Some(bound) = ctx.session.as_mut() {
            // The XSP's cookies stay with the session, and its Basic challenge would make a
            // browser prompt for a password the gateway already holds.
            response.remove_header(&http::header::SET_COOKIE);
            response.remove_header(&http::header::WWW_AUTHENTICATE);
            // A session just ended for a password change is not kept again.
            if std::mem::take(&mut bound.changed) && !stale_password {
                let valid_xsp = bound.xsp.as_deref().is_none_or(|name| {
                    ctx.provider
                        .as_ref()
                        .is_some_and(|p| p.xsps.index_of(name).is_some())
                });
                if valid_xsp {
                    self.sessions.keep_xsp_state(bound);
                }
            }
        }
        for (name, value) in ctx.cors_headers() {
            response.insert_header(name, value)?;
        }
        let pin = match (&ctx.provider, &ctx.target) {
            (Some(provider), Target::Xsp { .. }) => ctx
                .upstream(provider)
                .map(|xsp| fields::value(&xsp.name).map(|name| (XSP_PIN_NAME, name)))
                .transpose()?,
            _ => None,
        };
        let request_id = (REQUEST_ID_NAME, fields::value(&ctx.request_id)?);
        fields::put_response(response, Put::Replace, pin.into_iter().chain([request_id]))?;
        if session.is_process_shutting_down() {
            // Draining for a stop or an upgrade: this connection ends after this response, and
            // `Connection: close` sends the client's next request to the new process.
            session.set_keepalive(None);
        }
        Ok(())
    }

    /// Runs the provider's response plugins in order, after scrubbing and before xsigate's own
    /// headers, so that no plugin can remove the pin or the request id.
    /// An XSP error whose body is not an XSI document (an HTML page of a server in front of
    /// BroadWorks, naming its host, say) gets xsigate's error envelope instead, with its status.
    fn hide_error_page(
        session: &impl Client,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Most answers are no errors, and their fields need not be looked up.
        if !ctx.route.is_xsp()
            || !headers::is_error(response.status)
            || session.req_header().method == http::Method::HEAD
        {
            return Ok(());
        }
        let content_type = response
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        // An empty body hides nothing, and Pingora sends no body chunk to replace.
        let empty = response
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        if empty || headers::error_body_passes(response.status, content_type) {
            return Ok(());
        }
        let body = error_body_with_status(
            ErrorCode::UpstreamError,
            response.status.as_u16(),
            &ctx.request_id,
        );
        response.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        response.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        response.remove_header(&http::header::TRANSFER_ENCODING);
        response.remove_header(&http::header::CONTENT_ENCODING);
        ctx.body_override = BodyOverride::Pending(body);
        Ok(())
    }

    /// Puts the replacement body in place of the upstream's first chunk and drops the rest.
    pub(super) fn replace_body(body: &mut Option<bytes::Bytes>, ctx: &mut RequestCtx) {
        match std::mem::take(&mut ctx.body_override) {
            BodyOverride::None => {}
            BodyOverride::Pending(replacement) => {
                *body = Some(replacement);
                ctx.body_override = BodyOverride::Sent;
            }
            BodyOverride::Sent => {
                *body = None;
                ctx.body_override = BodyOverride::Sent;
            }
        }
    }

    /// A password change that went through the gateway, or an XSP refusing the password a
    /// session holds, ends the sessions holding that password before the client hears of it,
    /// so that no later request replays it; true when it did.
    async fn end_sessions_holding_a_stale_password(
        &self,
        session: &impl Client,
        response: &ResponseHeader,
        ctx: &RequestCtx,
    ) -> bool {
        if ctx.provider.is_none() {
            return false;
        }
        let request = session.req_header();
        let changed =
            xsigate_broadworks::password_change_user(request.method.as_str(), request.uri.path())
                .filter(|_| response.status.is_success());
        // The XSP refused a session's password (the last try of a session request carries no
        // stale cookie): it changed elsewhere, or the account is locked. Replaying it would
        // spend, or extend, the user's BroadWorks lockout.
        let refused = ctx
            .session
            .as_ref()
            .filter(|_| response.status == http::StatusCode::UNAUTHORIZED && ctx.route.is_xsp())
            .map(|bound| bound.session.user_id.clone());
        let Some(user_id) = changed.or(refused) else {
            return false;
        };
        if let Err(e) = self
            .login_api
            .end_sessions_holding_an_old_password(user_id)
            .await
        {
            tracing::error!(error = %e, "ending the sessions holding an old password failed");
        }
        true
    }

    pub(super) async fn response_plugins(
        &self,
        session: &impl Client,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(provider) = ctx
            .provider
            .as_ref()
            .filter(|p| !self.plugins.chain(p).response.is_empty())
            .cloned()
        else {
            return Ok(());
        };
        let client = session.client_ip();
        let upstream = ctx.upstream(&provider).map(|u| u.name.as_str());
        let mut retry = false;
        for plugin in &self.plugins.chain(&provider).response {
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
        if retry && !ctx.plugin_retried && !session.retry_buffer_truncated() {
            ctx.plugin_retried = true;
            ctx.retry_requested = true;
            return Error::e_explain(
                ErrorType::Custom("plugin retry"),
                "a response filter asked for the request to be sent again",
            );
        }
        Ok(())
    }
}
