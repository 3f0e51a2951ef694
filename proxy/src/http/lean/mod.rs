//! The lean lane: XSI-Actions requests served on a loop of xsigate's own instead of Pingora's
//! `ProxyHttp` machinery, on the same hooks in the same order (the files beside this one), so
//! that routing, sessions, plugins, retries, header rules, errors, metrics and the access log
//! are one implementation whichever way a request goes.
//!
//! What it leaves out is what a request/response exchange with a small body does not need:
//! the two task channels and the duplex of `proxy_h1` (the body is held whole, then the answer
//! is streamed back on the same task), the copy of the session into a box, and the connection
//! pool (an upstream connection stays with the client connection that used it, so the next
//! request on it finds it without a lock, a pool entry, an idle-watcher task or a wake-up of
//! another thread), and Pingora's time limit on each upstream read and write (the connection
//! keeps one timer of its own, `UpstreamTimer`). Nor does it take Pingora's client session: the
//! request's head goes out as Pingora writes it (`http_req_header_to_wire`), and the answer is
//! read by [`crate::upstream::answer`], which parses its head once into the map the client gets
//! (Pingora's parsed it into two, the fields and their names' case, to be copied into a third)
//! and takes its body in its framing. Nor Pingora's server session: the client's request is
//! read and answered by [`client::LaneClient`], which the hooks see through the same
//! [`Client`](super::client::Client) trait as Pingora's session.
//!
//! It takes only what fits that ([`LeanLane::takes`]): XSI-Actions paths, bodies declared
//! whole and at most [`HELD_BODY_BYTES`], no `Upgrade`, no `Expect`. Everything else, XSI-Events
//! channels (hours long) and chunked uploads among them, stays on `ProxyHttp`.
//!
//! Layer: part of [`crate::http`]; implements [`crate::edge::Lane`].

mod client;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use pingora::apps::ReusedHttpStream;
use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use pingora::proxy::ProxyHttp as _;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::{HttpPeer, Peer as _};
use pingora::{Error, ErrorType, OrErr as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::{Instant, Sleep};

use super::ProxyApp;
use super::client::Client as _;
use super::context::RequestCtx;
use super::headers;
use super::route::{self, Route};
use crate::edge::framing::Shape;
use crate::edge::{self, Handoff, Lane};
use crate::state::token::DigestedToken;
use crate::upstream::StreamError;
use crate::upstream::answer::{self, Body, Decoded};
use crate::wire::route::RouteClass;
use client::LaneClient;

/// The largest request body the lane takes: it is held whole so that a retry can send it again,
/// as much as Pingora's retry buffer holds.
pub const HELD_BODY_BYTES: u64 = 64 * 1024;

/// Attempts at one request, as Pingora's proxy allows (`max_retries`); the retry rule ends it
/// long before.
const MAX_ATTEMPTS: usize = 16;

/// How long an upstream connection is kept idle when its peer sets no idle timeout.
const KEPT_IDLE: Duration = Duration::from_secs(60);

/// What one read of an upstream's answer asks for: a head and a small body come in one.
const READ_SIZE: usize = 8 * 1024;

/// Serves the requests [`LeanLane::takes`] on xsigate's own loop.
pub struct LeanLane {
    app: ProxyApp,
    connector: TransportConnector,
    kept: KeptBudget,
}

/// How many upstream connections client connections keep, idle or carrying their next request,
/// across all upstreams: the `upstream_keepalive_pool_size` that bounds Pingora's pool bounds
/// these too, so that many idle browsers cannot hold as many idle connections open at an XSP.
#[derive(Debug, Clone)]
struct KeptBudget {
    held: Arc<AtomicUsize>,
    max: usize,
}

impl KeptBudget {
    fn take(&self) -> Option<KeptSlot> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .ok()
            .map(|_| KeptSlot(Arc::clone(&self.held)))
    }
}

/// One kept connection's place in the [`KeptBudget`], given back when it is dropped.
#[derive(Debug)]
struct KeptSlot(Arc<AtomicUsize>);

impl Drop for KeptSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for LeanLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanLane").finish_non_exhaustive()
    }
}

/// What a client connection keeps from its last request for its next.
#[derive(Debug, Default)]
pub struct KeptWithClient {
    upstream: Option<KeptUpstream>,
    /// Its session cookie's token and digest (see [`DigestedToken`]).
    session_token: Option<DigestedToken>,
}

/// The upstream connection a client connection keeps from its last request.
pub struct KeptUpstream {
    /// Which peer it is connected to (`Peer::reuse_hash`: address, TLS and its settings).
    peer: u64,
    stream: Stream,
    /// When the request that used it last started upstream: earlier than its answer's end, so
    /// its idle time is if anything overestimated, and it is let go early rather than late.
    idle_since: Instant,
    idle_timeout: Duration,
    slot: KeptSlot,
    timer: UpstreamTimer,
}

impl std::fmt::Debug for KeptUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptUpstream")
            .field("idle_since", &self.idle_since)
            .finish_non_exhaustive()
    }
}

impl KeptUpstream {
    /// The kept connection when it is to `peer`, has not been idle past its timeout, and is
    /// still open. Nothing watches it while it is idle, so it is tested here, as Pingora's pool
    /// tests a connection it hands out: a request sent on a connection the upstream closed
    /// meanwhile would fail, and one that is not idempotent could not go again.
    /// Its place in the budget comes with it: a connection in use stays kept.
    /// `now`: when the attempt started, a clock read the request made already.
    /// `peer`: the peer's `reuse_hash`, which hashes all its settings and is worth reading once.
    fn take_for(
        kept: &mut Option<Self>,
        peer: u64,
        now: Instant,
    ) -> Option<(Stream, KeptSlot, UpstreamTimer)> {
        let mut held = kept.take()?;
        if held.peer != peer || now.saturating_duration_since(held.idle_since) >= held.idle_timeout
        {
            return None;
        }
        let mut byte = [0u8; 1];
        // An idle connection has nothing to read: ready means closed, broken, or talking out
        // of turn, and none of those carries a request.
        let ready = tokio::task::unconstrained(held.stream.read(&mut byte)).now_or_never();
        ready
            .is_none()
            .then_some((held.stream, held.slot, held.timer))
    }
}

/// One attempt's upstream side: the connection, its timer, and the peer it is to.
struct Attempt<'a> {
    stream: &'a mut Stream,
    timer: &'a mut UpstreamTimer,
    peer: &'a HttpPeer,
}

/// The time limits of one upstream connection's writes and reads (the peer's `write_timeout`
/// and `read_timeout`), kept by the lane itself: one tokio timer for the
/// connection's life, moved on before each wait, which is an atomic store. Pingora's limit
/// on each operation makes and drops an entry in a timer table that every thread shares, and
/// reads the clock to check on the thread that ticks it, each time.
struct UpstreamTimer(Pin<Box<Sleep>>);

impl UpstreamTimer {
    fn new() -> Self {
        // Unarmed until the first wait sets its deadline.
        Self(Box::pin(tokio::time::sleep(Duration::ZERO)))
    }

    /// `operation`, unless `limit` passes first: then an error of `kind`, as Pingora's would be.
    /// Either error is the upstream's. The limit is set when the first poll leaves the operation
    /// waiting: most writes, and the reads of a body that came with its head, finish on it and
    /// need no clock read.
    async fn within<T>(
        &mut self,
        limit: Option<Duration>,
        kind: ErrorType,
        what: &'static str,
        operation: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(limit) = limit else {
            return operation.await.map_err(|e| e.into_up());
        };
        let mut operation = std::pin::pin!(operation);
        let mut armed = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = operation.as_mut().poll(cx) {
                return Poll::Ready(done);
            }
            if !armed {
                armed = true;
                self.0.as_mut().reset(Instant::now() + limit);
            }
            self.0
                .as_mut()
                .poll(cx)
                .map(|()| Error::e_explain(kind.clone(), format!("{what}, timeout: {limit:?}")))
        })
        .await
        .map_err(|e| e.into_up())
    }
}

impl LeanLane {
    /// `kept_max`: the upstream connections client connections may keep at once.
    pub fn new(app: ProxyApp, connector: TransportConnector, kept_max: usize) -> Self {
        Self {
            app,
            connector,
            kept: KeptBudget {
                held: Arc::default(),
                max: kept_max,
            },
        }
    }

    /// One request after its head: the hooks in Pingora's order, then the connection's fate.
    /// Returns whether the connection may carry another request, as far as the hooks and the
    /// upstream are concerned.
    async fn exchange(&self, session: &mut LaneClient<'_>, kept: &mut KeptWithClient) -> bool {
        let mut ctx = self.app.new_ctx();
        ctx.session_token = kept.session_token.take();
        let (reuse, error) = match self.app.route_request(session, &mut ctx).await {
            Ok(true) => (true, None),
            Ok(false) => self.proxy(session, &mut ctx, &mut kept.upstream).await,
            Err(e) => (false, Some(e)),
        };
        kept.session_token = ctx.session_token.take();
        let mut reuse = reuse;
        if let Some(e) = &error {
            let answered = self.app.answer_failure(session, e, &mut ctx).await;
            reuse = answered.can_reuse_downstream;
        }
        self.app
            .log_request(session, error.as_deref(), &mut ctx)
            .await;
        reuse
    }

    /// Sends the request upstream until it is answered or the retry rule gives up; true when
    /// the client connection may carry another request.
    async fn proxy(
        &self,
        session: &mut LaneClient<'_>,
        ctx: &mut RequestCtx,
        kept: &mut Option<KeptUpstream>,
    ) -> (bool, Option<Box<Error>>) {
        // Refused once, before any attempt: no XSP would take it.
        let named = match headers::connection_nominations(session.req_header()) {
            Ok(named) => named,
            Err(e) => return (false, Some(e.into_down())),
        };
        let body = match self.read_body(session, ctx).await {
            Ok(body) => body,
            Err(e) => return (false, Some(e)),
        };
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let peer = match self.app.choose_peer(session, ctx).await {
                Ok(peer) => peer,
                Err(e) => return (false, Some(e)),
            };
            // A new connection's place is taken before its answer reaches the client, so that
            // which client connection keeps one follows the order its clients were answered in.
            // The attempt's start, read by `choose_peer` for the upstream's latency, serves as
            // the kept connection's clock too.
            let started = ctx
                .upstream_started
                .map_or_else(Instant::now, Instant::from_std);
            let peer_hash = peer.reuse_hash();
            let (mut stream, slot, mut timer, reused) =
                match KeptUpstream::take_for(kept, peer_hash, started) {
                    Some((stream, slot, timer)) => (stream, Some(slot), timer, true),
                    // Boxed: connecting (TLS included) is a future of 8 KiB, and held inline it
                    // would make every request's future that large, to be allocated and copied
                    // for the few requests that need a new connection.
                    None => match Box::pin(self.connector.new_stream(&*peer)).await {
                        // Adopted as a client's connection is: it is read and written on each
                        // request it carries, and Pingora's stream times every read that waits.
                        Ok(stream) => (
                            edge::adopt(stream),
                            self.kept.take(),
                            UpstreamTimer::new(),
                            false,
                        ),
                        Err(e) => {
                            let e = self.app.connect_failed(session, &peer, ctx, e.into_up());
                            let retry = e.retry();
                            last = Some(e);
                            if retry {
                                continue;
                            }
                            break;
                        }
                    },
                };
            let mut attempt = Attempt {
                stream: &mut stream,
                timer: &mut timer,
                peer: &peer,
            };
            match self
                .send(session, &mut attempt, &named, body.clone(), ctx)
                .await
            {
                Ok(reusable) => {
                    if reusable && let Some(slot) = slot {
                        *kept = Some(KeptUpstream {
                            peer: peer_hash,
                            stream,
                            idle_since: started,
                            idle_timeout: peer.idle_timeout().unwrap_or(KEPT_IDLE),
                            slot,
                            timer,
                        });
                    }
                    return (true, None);
                }
                Err(e) => {
                    let e = self.app.proxy_failed(&peer, session, e, ctx, reused);
                    let retry = e.retry();
                    last = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        (false, last)
    }

    /// The whole request body, through the body filter as it arrives.
    async fn read_body(&self, session: &mut LaneClient<'_>, ctx: &mut RequestCtx) -> Result<Bytes> {
        // Most requests have none, and asking for it would time a read that never waits.
        if session.is_body_done() {
            return Ok(Bytes::new());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_request_body().await? {
            self.app.count_request_body(Some(&chunk), ctx)?;
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// One attempt: the request to the upstream, its answer to the client. Returns whether the
    /// connection may carry another request: the answer said so, and its body ended where its
    /// framing said, with nothing after it.
    async fn send(
        &self,
        session: &mut LaneClient<'_>,
        attempt: &mut Attempt<'_>,
        named: &[http::HeaderName],
        body: Bytes,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let mut parts = headers::upstream_request(session.req_header(), named)?;
        self.app.put_own_fields(session, &mut parts, ctx)?;
        let mut request = parts.into_head()?;
        self.app
            .upstream_request_plugins(session, &mut request, ctx)
            .await?;
        let Attempt {
            stream,
            timer,
            peer,
        } = attempt;
        let (read_limit, write_limit) = (peer.options.read_timeout, peer.options.write_timeout);
        let head = http_req_header_to_wire(&request).ok_or_else(|| {
            Error::explain(
                ErrorType::InvalidHTTPHeader,
                "a request line that cannot be written",
            )
            .into_up()
        })?;
        let write = async {
            stream
                .write_all(&head)
                .await
                .or_err(ErrorType::WriteError, "writing the request's head")?;
            if !body.is_empty() {
                stream
                    .write_all(&body)
                    .await
                    .or_err(ErrorType::WriteError, "writing the request's body")?;
            }
            stream
                .flush()
                .await
                .or_err(ErrorType::WriteError, "writing the request")
        };
        timer
            .within(
                write_limit,
                ErrorType::WriteTimedout,
                "writing the request",
                write,
            )
            .await?;

        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let to_head = request.method == http::Method::HEAD;
        // One limit for the whole head, as for a client's: an upstream that trickles it a byte
        // at a time gets no more time than one that sends it at once.
        let read_head = async {
            answer::read_head(stream, &mut buf, to_head, headers::ADDED_DOWNSTREAM)
                .await
                .map_err(answer_failed)
        };
        let (answer, mut framing) = timer
            .within(
                read_limit,
                ErrorType::ReadTimedout,
                "reading the answer's head",
                read_head,
            )
            .await?;
        let keeps_connection = answer.keeps_connection;
        let mut response = headers::downstream_response(answer).map_err(|e| e.into_up())?;
        self.app
            .upstream_answered(session, &mut response, ctx)
            .await?;
        self.app
            .prepare_response(session, &mut response, ctx)
            .await?;
        session.write_response_header(response, false).await?;
        loop {
            let chunk = match framing.decode(&mut buf).map_err(answer_failed)? {
                Decoded::Data(chunk) => chunk,
                Decoded::End => break,
                Decoded::NeedMore => {
                    let read = read_more(stream, &mut buf);
                    let ended = timer
                        .within(
                            read_limit,
                            ErrorType::ReadTimedout,
                            "reading the answer's body",
                            read,
                        )
                        .await?;
                    if ended {
                        framing.closed().map_err(answer_failed)?;
                    }
                    continue;
                }
            };
            let end = framing == Body::Done;
            let mut chunk = Some(chunk);
            ProxyApp::replace_body(&mut chunk, ctx);
            if let Some(chunk) = chunk.filter(|c| !c.is_empty()) {
                session.write_response_body(chunk, end).await?;
            }
        }
        session.finish_response().await?;
        Ok(keeps_connection && buf.is_empty())
    }
}

/// Reads what the upstream sent next into `buf`; true when it closed the connection instead.
async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> Result<bool> {
    buf.reserve(READ_SIZE);
    let read = stream
        .read_buf(buf)
        .await
        .or_err(ErrorType::ReadError, "reading the answer")?;
    Ok(read == 0)
}

/// An answer the lane cannot pass on, as the error of the upstream's that it is.
fn answer_failed(e: StreamError) -> Box<Error> {
    let e = match e {
        StreamError::Broken(what) => Error::explain(ErrorType::InvalidHTTPHeader, what),
        StreamError::Truncated => Error::explain(
            ErrorType::ConnectionClosed,
            "the upstream closed the connection before its answer's end",
        ),
        StreamError::Io(e) => Error::because(ErrorType::ReadError, "reading the answer", e),
    };
    e.into_up()
}

#[async_trait]
impl Lane for LeanLane {
    type Kept = KeptWithClient;

    fn takes(&self, path: &str, shape: Shape) -> bool {
        !shape.asks_more
            && shape.body_length.is_some_and(|n| n <= HELD_BODY_BYTES)
            && matches!(route::classify(path), Route::Xsp(RouteClass::XsiActions))
    }

    async fn serve(
        &self,
        stream: Stream,
        handoff: Handoff<'_>,
        kept: &mut Option<KeptWithClient>,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let kept = kept.get_or_insert_default();
        // The edge checked this head; it parses. The session is held here, once, and lent to
        // the exchange: a future holds an argument it takes by value twice.
        let mut session = LaneClient::new(stream, handoff, shutdown)?;
        if !self.exchange(&mut session, kept).await {
            return None;
        }
        session.finish_response().await.ok()?;
        match session.into_reusable() {
            Ok(stream) => Some(ReusedHttpStream::new(stream, None)),
            Err(mut stream) => {
                // As Pingora ends a connection it does not keep: the client reads to the end
                // of the answer, then sees the connection close.
                let _ = stream.shutdown().await;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ends any wait here, so that a broken limit fails the test instead of hanging it.
    async fn bounded<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), future)
            .await
            .expect("bounded")
    }

    #[tokio::test]
    async fn an_upstream_operation_is_limited_from_its_own_start() {
        const LIMIT: Option<Duration> = Some(Duration::from_millis(200));
        let mut timer = UpstreamTimer::new();
        let kind = ErrorType::ReadTimedout;
        let ready = timer.within(LIMIT, kind.clone(), "ready", std::future::ready(Ok(1)));
        assert_eq!(bounded(ready).await.ok(), Some(1));
        // Well into the first limit, an operation that waits longer than what is left of it
        // still has a limit of its own.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let waits = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(2)
        };
        let waited = bounded(timer.within(LIMIT, kind.clone(), "waits", waits)).await;
        assert_eq!(waited.ok(), Some(2));
        let hangs = std::future::pending::<Result<()>>();
        let ended = bounded(timer.within(LIMIT, kind.clone(), "hangs", hangs)).await;
        assert_eq!(ended.map_err(|e| e.etype().clone()), Err(kind));
        let unlimited = timer.within(None, ErrorType::WriteTimedout, "free", async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            Ok(3)
        });
        assert_eq!(bounded(unlimited).await.ok(), Some(3));
    }
}
