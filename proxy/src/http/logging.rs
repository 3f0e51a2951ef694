//! `logging`: the request's metrics and its one access-log line.

use super::client::Client;
use pingora::Error;

use super::ProxyApp;
use super::context::RequestCtx;
use super::fail_to_proxy::error_code;
use crate::wire::error::ErrorCode;

impl ProxyApp {
    pub(super) async fn log_request(
        &self,
        session: &mut impl Client,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
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
            // A client that leaves (an XSI-Events stream closed by its browser, most often) is
            // how such requests end, not a fault: the request's line is an ordinary one, and the
            // transport's words go to debug.
            Some(e) if error_code(e.esource(), e.etype()).is_none() => {
                tracing::debug!(
                    request_id = %ctx.request_id,
                    error = e.etype().as_str(),
                    "the client closed the connection"
                );
                access_line!(tracing::Level::INFO,);
            }
            Some(e) => access_line!(
                tracing::Level::WARN,
                error = e.etype().as_str(),
                error_source = e.esource().as_str(),
            ),
        }
    }
}
