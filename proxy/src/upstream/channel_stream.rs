//! XSI-Events channel streams: a response that lasts hours, read on a connection of its own.
//!
//! Not on the provider's reqwest client, which serves every other call the host makes. hyper
//! keeps, for each connection, a read buffer of at least 8 KiB that grows with a long body, an
//! 8 KiB buffer for request heads, and a dispatch channel whose first block is about 10 KiB:
//! 38 of the 62 KiB a channel set cost (heaptrack, `XSIGATE_BENCH_HEAP` in bench/events.sh).
//! A channel needs none of it: one request written once, then a chunked body read as it comes.
//! Here a set costs its socket (a TLS session on `https`) and a read buffer of [`READ_SIZE`];
//! the plugin's read reads it (`plugin/streams.rs`).
//!
//! The connection is Pingora's, made from the XSP's stream peer: the address resolved off the
//! request path, the connect timeouts, TLS with the provider's CA and the configured host name,
//! as for proxied requests. The failover rule is [`super::retry`]'s, as for every host call.

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::answer::{self, AnswerHead, Body, Decoded};
use super::peer::{PeerKind, Upstream};
use super::pool::Tried;
use super::provider::Provider;
use super::retry::{self, Attempt, Failure, Next};
use super::xsi::{StreamError, XsiCall, XsiCallError};

/// What one read asks of the socket at first and while the stream is quiet: events are a few
/// KiB, and a channel set waits on this much. A read that fills it doubles the next one, up to
/// [`READ_MAX`], so a busy channel (a provider-level set under load) drains in few reads.
const READ_SIZE: usize = 2048;
const READ_MAX: usize = 64 * 1024;

/// A stream's status line and headers.
#[derive(Debug)]
pub struct StreamHead {
    pub status: http::StatusCode,
    pub headers: Vec<(String, String)>,
}

impl From<AnswerHead> for StreamHead {
    fn from(head: AnswerHead) -> Self {
        let headers = head
            .fields
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        Self {
            status: head.status,
            headers,
        }
    }
}

/// The body of a channel stream, as the XSP sends it.
#[derive(Debug)]
pub struct ChannelStream {
    io: Stream,
    buf: BytesMut,
    body: Body,
    /// What the next read asks for (from [`READ_SIZE`] to [`READ_MAX`]).
    read_size: usize,
}

impl ChannelStream {
    /// Reads the answer's head off `io`, where a request went; the body is what follows.
    pub(crate) async fn read_head(mut io: Stream) -> Result<(StreamHead, Self), StreamError> {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let (head, body) = answer::read_head(&mut io, &mut buf, false, 0).await?;
        let stream = Self {
            io,
            buf,
            body,
            read_size: READ_SIZE,
        };
        Ok((StreamHead::from(head), stream))
    }

    /// The next piece of the body as it arrived; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StreamError> {
        loop {
            match self.body.decode(&mut self.buf)? {
                Decoded::Data(bytes) => return Ok(Some(bytes)),
                Decoded::End => return Ok(None),
                Decoded::NeedMore => {}
            }
            self.buf.reserve(self.read_size);
            let room = self.buf.capacity() - self.buf.len();
            let read = self.io.read_buf(&mut self.buf).await?;
            self.read_size = if read >= room {
                (self.read_size * 2).min(READ_MAX)
            } else if read < self.read_size / 4 {
                (self.read_size / 2).max(READ_SIZE)
            } else {
                self.read_size
            };
            if read == 0 {
                return self.body.closed().map(|()| None);
            }
        }
    }

    /// The whole body, at most `max` bytes (`None` past that): for an answer that is not a
    /// stream (an error status).
    pub async fn read_to_end(mut self, max: usize) -> Result<Option<Vec<u8>>, StreamError> {
        let mut bytes = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            if bytes.len() + chunk.len() > max {
                return Ok(None);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }
}

impl Provider {
    /// Opens an XSI-Events channel stream with `call` on a connection of its own, at the pinned
    /// XSP or at the healthy XSPs in turn as [`retry::next`] allows (a stream is never sent
    /// twice to one that received it). Returns the head, the body and the XSP that answered.
    pub async fn open_channel_stream(
        &self,
        call: &XsiCall<'_>,
        connector: &TransportConnector,
    ) -> Result<(StreamHead, ChannelStream, &Upstream), XsiCallError> {
        let mut tried = Tried::default();
        loop {
            let Some((index, xsp)) = self.next_xsp(call.pin, tried) else {
                return Err(XsiCallError::Unreachable);
            };
            tried.add(index);
            let attempt = tokio::time::timeout(call.timeout, open(call, xsp, connector)).await;
            let (failure, error) = match attempt {
                Err(_) => return Err(XsiCallError::HeadTimeout),
                Ok(Ok((head, stream))) => {
                    xsp.health.record_response();
                    return Ok((head, stream, xsp));
                }
                Ok(Err(Opening::NotConnected)) => {
                    xsp.metrics.connect_failures.inc();
                    xsp.mark_failure(&self.id);
                    (Failure::NotConnected, None)
                }
                Ok(Err(Opening::NoAnswer(e))) => (
                    Failure::NoAnswer {
                        stale_connection: false,
                    },
                    Some(e),
                ),
                Ok(Err(Opening::Refused(e))) => return Err(XsiCallError::Stream(e)),
            };
            let attempt = Attempt {
                idempotent: call.method.is_idempotent(),
                pinned: call.pin.is_some(),
                stream: true,
                untried_left: self.xsps.has_untried(tried),
            };
            match (retry::next(attempt, failure), error) {
                (Next::Another, _) => {
                    tracing::debug!(provider = %self.id, xsp = %xsp.name, "channel stream failed at an XSP; trying another");
                }
                (Next::Same, _) => tried.remove(index),
                (Next::GiveUp, Some(e)) => return Err(XsiCallError::Stream(e)),
                (Next::GiveUp, None) => return Err(XsiCallError::Unreachable),
            }
        }
    }
}

/// How one attempt at a stream failed.
enum Opening {
    /// Nothing reached the XSP.
    NotConnected,
    /// The request went out and no valid head came back.
    NoAnswer(StreamError),
    /// Not to be sent anywhere (the call itself cannot be written).
    Refused(StreamError),
}

/// One attempt: connect, send the request, read the answer's head.
async fn open(
    call: &XsiCall<'_>,
    xsp: &Upstream,
    connector: &TransportConnector,
) -> Result<(StreamHead, ChannelStream), Opening> {
    let request = request_head(call, xsp).map_err(Opening::Refused)?;
    let peer = xsp.peer(PeerKind::Stream).ok_or(Opening::NotConnected)?;
    let mut io = connector
        .new_stream(&*peer)
        .await
        .map_err(|_| Opening::NotConnected)?;
    let sent: std::io::Result<()> = async {
        io.write_all(&request).await?;
        io.write_all(&call.body).await?;
        io.flush().await
    }
    .await;
    sent.map_err(|e| Opening::NoAnswer(e.into()))?;
    ChannelStream::read_head(io)
        .await
        .map_err(Opening::NoAnswer)
}

/// The request line and headers. The host sets `Host`, `User-Agent`, `Authorization` and
/// `Content-Length`; the call's own headers come after them.
fn request_head(call: &XsiCall<'_>, xsp: &Upstream) -> Result<Vec<u8>, StreamError> {
    let mut head = Vec::with_capacity(256 + call.path.len());
    head.extend_from_slice(call.method.as_str().as_bytes());
    head.push(b' ');
    for &byte in xsp.base_path.as_bytes().iter().chain(call.path.as_bytes()) {
        // What a URL parser would escape: the request line is space-separated.
        if byte.is_ascii_graphic() {
            head.push(byte);
        } else {
            head.extend_from_slice(format!("%{byte:02X}").as_bytes());
        }
    }
    head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    head.extend_from_slice(xsp.authority().as_bytes());
    head.extend_from_slice(
        concat!("\r\nUser-Agent: xsigate/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    if let Some((user, password)) = call.credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        head.extend_from_slice(b"\r\nAuthorization: Basic ");
        head.extend_from_slice(token.as_bytes());
    }
    head.extend_from_slice(format!("\r\nContent-Length: {}", call.body.len()).as_bytes());
    for (name, value) in &call.headers {
        if [
            http::header::HOST,
            http::header::CONTENT_LENGTH,
            http::header::TRANSFER_ENCODING,
            http::header::CONNECTION,
        ]
        .contains(name)
        {
            return Err(StreamError::Broken("the call sets a header the host owns"));
        }
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
    }
    head.extend_from_slice(b"\r\n\r\n");
    Ok(head)
}
