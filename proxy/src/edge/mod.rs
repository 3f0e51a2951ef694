//! `edge`: client connections before any request reaches the proxy.
//!
//! xsigate reads each HTTP/1.x request head itself, under its own deadlines and limits, and
//! hands Pingora only heads that passed [`framing`]; Pingora then parses the same bytes again
//! and never reads a head of its own (it gets them as a pipelined prefix). Everything refused
//! here is answered in the one error envelope with `Connection: close`, counted in
//! `xsigate_client_refusals_total{code}` and logged on the access line, and never reaches a
//! hook, a plugin or an upstream:
//! - an address holding `connections_per_address` connections, or past its request rate
//!   ([`addresses`]): `429`;
//! - a head that does not arrive within `header_seconds` of its first byte: `408`;
//! - a connection that sends nothing for `idle_seconds` is closed without an answer;
//! - what [`framing`] refuses: smuggling shapes, foreign targets, oversized heads and bodies.
//!
//! HTTP/2 (TLS with ALPN `h2`) passes the connection limit and then goes to Pingora whole: its
//! frames have no such ambiguity, and h2's own settings bound its headers; the proxy takes each
//! h2 request's token from the same [`Addresses`].
//!
//! Each connection is served on the worker thread serving the fewest ([`placement`]), not on
//! the one Pingora picks at random. A plain TCP connection is first moved to the reactor of the
//! runtime that serves it ([`reactor`]): Pingora registers it with the accepting runtime's. The
//! adopted connection is also lighter than Pingora's TCP stream; the lane adopts its upstream
//! connections for that.
//!
//! A head that passed goes to Pingora's proxy, or to the application's [`Lane`] when the lane
//! takes it: a loop of the application's own for its hot requests, which keeps what it wants
//! with the connection (an upstream connection) from one of them to the next.
//!
//! Layer: below [`crate::http`] (it never sees a hook); uses config, wire and metrics.

pub mod addresses;
pub mod framing;
mod head;
mod placement;
mod reactor;

pub use reactor::adopt;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use futures_util::FutureExt as _;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{ALPN, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt as _;

use crate::config::ClientsConfig;
use crate::metrics::{GaugeGuard, Metrics};
use crate::wire::error::{ErrorCode, error_body};
use crate::wire::headers::{REQUEST_ID, new_request_id};
use addresses::Addresses;
use framing::{HeadLimits, Layout, Shape};
use head::{Ending, Refusal};
use placement::Placement;

/// Every code the edge answers with: each has its refusal series from the start, so that a
/// dashboard or an alert on one finds it before the first refusal.
const REFUSALS: [ErrorCode; 8] = [
    ErrorCode::TooManyConnections,
    ErrorCode::TooManyRequests,
    ErrorCode::RequestTimeout,
    ErrorCode::HeaderTooLarge,
    ErrorCode::AmbiguousFraming,
    ErrorCode::BadRequest,
    ErrorCode::MethodNotAllowed,
    ErrorCode::PayloadTooLarge,
];

/// How long writing a refusal and waiting for the client to stop sending may take.
const LINGER: Duration = Duration::from_secs(2);

/// Requests an application serves on a loop of its own instead of Pingora's proxy. The edge
/// asks about each head it passed, and holds what the lane keeps for the connection between
/// requests, whichever way each of them went.
#[async_trait]
pub trait Lane: Send + Sync + 'static {
    /// What the lane keeps with one client connection between its requests.
    type Kept: Send + Sync + 'static;

    /// Whether the lane serves the request with this path (its target up to any query) and
    /// shape.
    fn takes(&self, path: &str, shape: Shape) -> bool;

    /// Serves one request on `stream`, whose head `handoff` holds. Returns the connection when
    /// it may carry another request.
    async fn serve(
        &self,
        stream: Stream,
        handoff: Handoff<'_>,
        kept: &mut Option<Self::Kept>,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream>;
}

/// What the edge hands on with a connection: the head it read and checked, where its parts lie,
/// and what the connection carries from its previous request.
#[derive(Debug)]
pub struct Handoff<'l> {
    head: BytesMut,
    layout: &'l Layout,
    carried: Option<HttpPersistentSettings>,
    idle: Duration,
    shutting_down: bool,
    client_ip: Option<IpAddr>,
    tls: bool,
    shape: Shape,
}

impl<'l> Handoff<'l> {
    /// The head's bytes, and any that came after it on the connection.
    pub fn into_head(self) -> BytesMut {
        self.head
    }

    /// Where the head's parts lie in its bytes, as the edge's check parsed them.
    pub fn layout(&self) -> &'l Layout {
        self.layout
    }

    /// Whether the process was draining when the head came: its answer closes the connection.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The client's address, when the connection is over IP.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// What the edge's check of the head found.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Sets up the session of the request: it parses the edge's head instead of reading one.
    pub fn apply_to(self, session: &mut ServerSession) {
        match self.carried {
            Some(settings) => settings.apply_to_session(session),
            None => session.set_keepalive(Some(self.idle.as_secs())),
        }
        if self.shutting_down {
            session.set_keepalive(None);
        }
        session.set_pipelined_prefix(self.head);
    }
}

/// Wraps Pingora's HTTP application (`HttpProxy`) with xsigate's connection handling.
pub struct Edge<A, L> {
    app: Arc<A>,
    lane: L,
    addresses: Arc<Addresses>,
    placement: Placement,
    head: HeadLimits,
    header_time: Duration,
    idle: Duration,
    metrics: Metrics,
    access_log: bool,
}

impl<A, L> std::fmt::Debug for Edge<A, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("addresses", &self.addresses)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl<A, L> Edge<A, L> {
    /// `addresses` is shared with the proxy, which takes HTTP/2 requests' tokens from it.
    pub fn new(
        app: A,
        lane: L,
        limits: &ClientsConfig,
        addresses: Arc<Addresses>,
        metrics: &Metrics,
        access_log: bool,
    ) -> Self {
        for code in REFUSALS {
            metrics.client_refusals.with_label_values(&[code.as_str()]);
        }
        Self {
            app: Arc::new(app),
            lane,
            addresses,
            placement: Placement::default(),
            head: HeadLimits {
                header_bytes: limits.header_bytes,
                header_fields: limits.header_fields,
                body_bytes: limits.body_bytes,
            },
            header_time: Duration::from_secs(limits.header_seconds),
            idle: Duration::from_secs(limits.idle_seconds),
            metrics: metrics.clone(),
            access_log,
        }
    }
}

#[async_trait]
impl<A, L> ServerApp for Edge<A, L>
where
    A: HttpServerApp + Send + Sync + 'static,
    L: Lane,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // On a task of its own: the task Pingora spawned for the connection also holds its TLS
        // handshake's future, about 9 KiB, for as long as this call runs. Returning frees it,
        // and an idle connection costs only what it holds itself. The task runs on the thread
        // serving the fewest connections, not on the one Pingora picked at random.
        self.placement
            .spawn(Arc::clone(self).serve(stream, shutdown.clone()));
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

impl<A, L> Edge<A, L>
where
    A: HttpServerApp + Send + Sync + 'static,
    L: Lane,
{
    /// Serves one client connection until it ends: its address's limits first, then HTTP/1.x
    /// here and HTTP/2 on Pingora.
    ///
    /// `shutdown` is the connection's own receiver, for its whole life: a clone for each request
    /// would count in and out of the channel that every connection on every thread shares.
    /// `self` is owned so that this future is the connection's task whole, not wrapped in one
    /// more that holds the edge beside it.
    async fn serve(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) {
        let _open = GaugeGuard::new(&self.metrics.downstream_connections);
        let address = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _held = match address {
            Some(ip) => match self.addresses.connect(ip) {
                Some(held) => Some(held),
                None => {
                    self.refuse(stream, Refusal::new(ErrorCode::TooManyConnections))
                        .await;
                    return;
                }
            },
            None => None,
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // An h2 connection is served whole and never handed back for reuse.
            let _ = Box::pin(ServerApp::process_new(&self.app, stream, &shutdown)).await;
            return;
        }
        let tls = stream.get_ssl_digest().is_some();
        self.serve_http1(adopt(stream), address, tls, shutdown)
            .await;
    }

    /// Serves one HTTP/1.x connection: each request head read and checked here, then handed to
    /// the lane or the proxy, until either side closes.
    async fn serve_http1(
        &self,
        mut stream: Stream,
        address: Option<IpAddr>,
        tls: bool,
        shutdown: ShutdownWatch,
    ) {
        let mut carried: Option<HttpPersistentSettings> = None;
        let mut kept: Option<L::Kept> = None;
        // One timer for the connection's life, moved on for each head (see `head::read`).
        let mut timer = std::pin::pin!(tokio::time::sleep(self.idle));
        // One wait for the shutdown for the connection's life too, on a second receiver: a new
        // `changed()` for each head registered a waiter under the channel's lock whenever the
        // read waited, and took it out under the lock again.
        let mut notice = shutdown.clone();
        let mut stopping = std::pin::pin!(
            async move {
                let _ = notice.changed().await;
            }
            .fuse()
        );
        let mut layout = Layout::default();
        loop {
            let mut head = BytesMut::new();
            let limits = head::Limits {
                head: self.head,
                header_time: self.header_time,
                idle: self.idle,
            };
            let shape = match head::read(
                &mut stream,
                &mut head,
                &mut layout,
                limits,
                timer.as_mut(),
                stopping.as_mut(),
                &shutdown,
            )
            .await
            {
                Ending::Complete(shape) => shape,
                Ending::Closed => return,
                Ending::Refused(refusal) => return self.refuse(stream, refusal).await,
            };
            if let Some(ip) = address
                && let Err(wait) = self.addresses.request(ip)
            {
                let mut refusal = Refusal::new(ErrorCode::TooManyRequests);
                refusal.retry_after = Some(addresses::retry_after_seconds(wait));
                return self.refuse(stream, refusal).await;
            }
            let laned = self.lane.takes(shape.target.path(&head), shape);
            let handoff = Handoff {
                head,
                layout: &layout,
                carried: carried.take(),
                idle: self.idle,
                shutting_down: *shutdown.borrow(),
                client_ip: address,
                tls,
                shape,
            };
            // Both are async-trait methods: a request's future, large, comes boxed, and an idle
            // connection waiting for its head above carries no room for it.
            let reused = if laned {
                self.lane.serve(stream, handoff, &mut kept, &shutdown).await
            } else {
                let mut session = ServerSession::new_http1(stream);
                handoff.apply_to(&mut session);
                self.app.process_new_http(session, &shutdown).await
            };
            let Some(reused) = reused else {
                return;
            };
            (stream, carried) = reused.consume();
        }
    }

    /// Answers a refusal in the error envelope, closes, and lets the client's unread bytes
    /// drain for a moment so that its TCP stack delivers the answer instead of a reset.
    async fn refuse(&self, mut stream: Stream, refusal: Refusal) {
        let request_id = new_request_id();
        let code = refusal.code;
        self.metrics
            .client_refusals
            .with_label_values(&[code.as_str()])
            .inc();
        if self.access_log {
            tracing::info!(
                target: "xsigate::access",
                request_id = %request_id,
                method = refusal.method,
                path = refusal.path,
                status = code.status(),
                provider = "-",
                route = "edge",
                upstream = "-",
                attempts = 0,
                refused = code.as_str(),
                plugin = "-",
                duration_ms = 0.0,
            );
        }
        let body = error_body(code, &request_id);
        let status = code.status();
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let retry_after = refusal
            .retry_after
            .map(|s| format!("Retry-After: {s}\r\n"))
            .unwrap_or_default();
        let answer = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\n{REQUEST_ID}: {request_id}\r\n{retry_after}\
             Connection: close\r\n\r\n",
            body.len()
        );
        let written = async {
            stream.write_all(answer.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.flush().await?;
            stream.shutdown().await
        };
        if tokio::time::timeout(LINGER, written).await.is_ok() {
            head::drain(&mut stream, LINGER).await;
        }
    }
}
