//! `upstream_peer`, `fail_to_connect` and `error_while_proxy`: which upstream a request goes to,
//! and whether it goes again after a failure ([`crate::upstream::retry`] decides).

use std::sync::Arc;
use std::time::Instant;

use super::client::Client;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::ProxyApp;
use super::context::{RequestCtx, Target};
use crate::upstream::PeerKind;
use crate::upstream::retry::{self, Failure, Next};
use crate::wire::route::RouteClass;

impl ProxyApp {
    pub(super) async fn choose_peer(
        &self,
        _session: &mut impl Client,
        ctx: &mut RequestCtx,
    ) -> Result<Arc<HttpPeer>> {
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

    pub(super) fn connect_failed(
        &self,
        _session: &mut impl Client,
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
        // A pinned request may still go to another address of its own XSP, since its channel
        // lives on that XSP.
        let failover = retry::next(ctx.attempt(&provider, false), Failure::NotConnected);
        e.set_retry(failover == Next::Another || other_address);
        e
    }

    pub(super) fn proxy_failed(
        &self,
        _peer: &HttpPeer,
        session: &mut impl Client,
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
        let Some(provider) = ctx.provider.clone() else {
            return e;
        };
        // A request whose body no longer fits the retry buffer cannot be sent again as it was.
        let idempotent =
            session.req_header().method.is_idempotent() && !session.retry_buffer_truncated();
        let failure = if ctx.response_started {
            Failure::AnswerStarted
        } else {
            Failure::NoAnswer {
                stale_connection: client_reused,
            }
        };
        let next = retry::next(ctx.attempt(&provider, idempotent), failure);
        if next == Next::Same {
            // A stale pooled connection says nothing about the XSP: it may be chosen again.
            if let Some(current) = ctx.current {
                ctx.tried.remove(current);
            }
        }
        let retry = next != Next::GiveUp;
        e.set_retry(retry);
        e
    }
}
