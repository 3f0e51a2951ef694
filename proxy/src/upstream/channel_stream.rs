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
use bytes::{Buf as _, Bytes, BytesMut};
use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::peer::{PeerKind, Upstream};
use super::pool::Tried;
use super::provider::Provider;
use super::retry::{self, Attempt, Failure, Next};
use super::xsi::{StreamError, XsiCall, XsiCallError};
use crate::wire::headers::content_length;

/// What one read asks of the socket at first and while the stream is quiet: events are a few
/// KiB, and a channel set waits on this much. A read that fills it doubles the next one, up to
/// [`READ_MAX`], so a busy channel (a provider-level set under load) drains in few reads.
const READ_SIZE: usize = 2048;
const READ_MAX: usize = 64 * 1024;
/// The longest response head taken.
const HEAD_MAX: usize = 64 * 1024;
/// Headers in a response head.
const HEADERS_MAX: usize = 64;
/// The longest chunk-size line (with its extensions) and all trailer lines together.
const CHUNK_LINE_MAX: usize = 1024;
const TRAILERS_MAX: usize = 16 * 1024;

/// A stream's status line and headers.
#[derive(Debug)]
pub struct StreamHead {
    pub status: http::StatusCode,
    pub headers: Vec<(String, String)>,
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
        loop {
            if let Some((head, body)) = parse_head(&mut buf)? {
                let stream = Self {
                    io,
                    buf,
                    body,
                    read_size: READ_SIZE,
                };
                return Ok((head, stream));
            }
            if buf.len() >= HEAD_MAX {
                return Err(StreamError::Broken("response head too large"));
            }
            buf.reserve(READ_SIZE);
            if io.read_buf(&mut buf).await? == 0 {
                return Err(StreamError::Truncated);
            }
        }
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
                return match self.body {
                    Body::UntilClose => {
                        self.body = Body::Done;
                        Ok(None)
                    }
                    _ => Err(StreamError::Truncated),
                };
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

/// The head at the start of `buf`, taken out of it, and how its body is framed; `None` while
/// it is incomplete. Interim answers (1xx) are skipped.
fn parse_head(buf: &mut BytesMut) -> Result<Option<(StreamHead, Body)>, StreamError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let length = match response.parse(buf) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(StreamError::Broken("too many headers"));
            }
            Err(_) => return Err(StreamError::Broken("malformed response head")),
        };
        let status = response
            .code
            .and_then(|code| http::StatusCode::from_u16(code).ok())
            .ok_or(StreamError::Broken("malformed status"))?;
        if status == http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(StreamError::Broken(
                "101 to a request that asked for no upgrade",
            ));
        }
        if status.is_informational() {
            buf.advance(length);
            continue;
        }
        let body = Body::of(status, response.headers)?;
        let headers = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        buf.advance(length);
        return Ok(Some((StreamHead { status, headers }, body)));
    }
}

/// How much body is left, and in what framing (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Chunked(Chunk),
    Length(u64),
    UntilClose,
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers { read: usize },
}

#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Data(Bytes),
    NeedMore,
    End,
}

impl Body {
    fn of(status: http::StatusCode, headers: &[httparse::Header<'_>]) -> Result<Self, StreamError> {
        if status == http::StatusCode::NO_CONTENT || status == http::StatusCode::NOT_MODIFIED {
            return Ok(Self::Done);
        }
        let named = |name: &'static str| {
            headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let mut codings = named("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
            .peekable();
        if codings.peek().is_some() {
            // Chunked only when it is the last coding; otherwise the body runs to the close.
            return Ok(
                if codings
                    .last()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
                {
                    Self::Chunked(Chunk::Size)
                } else {
                    Self::UntilClose
                },
            );
        }
        let mut lengths = named("content-length").flat_map(|v| v.split(|&b| b == b','));
        let Some(first) = lengths.next() else {
            return Ok(Self::UntilClose);
        };
        let length =
            content_length(first).ok_or(StreamError::Broken("malformed Content-Length"))?;
        if lengths.any(|other| content_length(other) != Some(length)) {
            return Err(StreamError::Broken("conflicting Content-Length"));
        }
        Ok(if length == 0 {
            Self::Done
        } else {
            Self::Length(length)
        })
    }

    /// Takes what `buf` holds of the body.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, StreamError> {
        loop {
            match *self {
                Self::Done => return Ok(Decoded::End),
                Self::UntilClose => {
                    return Ok(if buf.is_empty() {
                        Decoded::NeedMore
                    } else {
                        Decoded::Data(buf.split().freeze())
                    });
                }
                Self::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let (data, left) = take_body(buf, left);
                    *self = if left == 0 {
                        Self::Done
                    } else {
                        Self::Length(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Self::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf, CHUNK_LINE_MAX)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&line)?;
                    *self = Self::Chunked(if size == 0 {
                        Chunk::Trailers { read: 0 }
                    } else {
                        Chunk::Data(size)
                    });
                }
                Self::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let (data, left) = take_body(buf, left);
                    *self = Self::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Decoded::Data(data));
                }
                Self::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(StreamError::Broken("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Self::Chunked(Chunk::Size);
                }
                Self::Chunked(Chunk::Trailers { read }) => {
                    let Some(line) = take_line(buf, TRAILERS_MAX.saturating_sub(read))? else {
                        return Ok(Decoded::NeedMore);
                    };
                    *self = if line.is_empty() {
                        Self::Done
                    } else {
                        Self::Chunked(Chunk::Trailers {
                            read: read + line.len() + 2,
                        })
                    };
                }
            }
        }
    }
}

/// A CRLF-ended line taken from the front of `buf`, without its CRLF; `None` while incomplete.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, StreamError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > max {
            Err(StreamError::Broken("chunk line too long"))
        } else {
            Ok(None)
        };
    };
    if end > max {
        return Err(StreamError::Broken("chunk line too long"));
    }
    let line = buf.split_to(end);
    buf.advance(2);
    Ok(Some(line))
}

/// A chunk size: hexadecimal digits, then optional whitespace and `;` extensions (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, StreamError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || !(rest.is_empty() || rest[0] == b';') {
        return Err(StreamError::Broken("malformed chunk size"));
    }
    line[..digits].iter().try_fold(0u64, |size, &digit| {
        let value = u64::from(char::from(digit).to_digit(16).unwrap_or(0));
        size.checked_mul(16)
            .and_then(|size| size.checked_add(value))
            .ok_or(StreamError::Broken("chunk size too large"))
    })
}

/// Up to `left` bytes from the front of `buf`, and how many are left after them.
fn take_body(buf: &mut BytesMut, left: u64) -> (Bytes, u64) {
    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
    (buf.split_to(take).freeze(), left - take as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body decoded from `wire` fed `step` bytes at a time, as a network would split it.
    fn decode_in_steps(mut body: Body, wire: &[u8], step: usize) -> Result<Vec<u8>, StreamError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match body.decode(&mut buf)? {
                Decoded::Data(bytes) => out.extend_from_slice(&bytes),
                Decoded::End => return Ok(out),
                Decoded::NeedMore if fed == wire.len() => return Err(StreamError::Truncated),
                Decoded::NeedMore => {
                    let next = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
    }

    const CHUNKED: &[u8] =
        b"5\r\n<Even\r\n19;name=value\r\nt>abcdefghijklmnopqrstuvw\r\n0\r\nTrailer: x\r\n\r\n";

    #[test]
    fn a_chunked_body_decodes_however_the_network_splits_it() {
        for step in 1..=CHUNKED.len() {
            let body = decode_in_steps(Body::Chunked(Chunk::Size), CHUNKED, step).unwrap();
            assert_eq!(body, b"<Event>abcdefghijklmnopqrstuvw", "step {step}");
        }
    }

    #[test]
    fn broken_chunked_bodies_are_refused() {
        for wire in [
            &b"g\r\nabc\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"5 x\r\nabcde\r\n0\r\n\r\n",
            b"3\r\nabcXY0\r\n\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            assert!(
                matches!(
                    decode_in_steps(Body::Chunked(Chunk::Size), wire, 64),
                    Err(StreamError::Broken(_))
                ),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let endless_size_line = vec![b'1'; CHUNK_LINE_MAX + 8];
        assert!(matches!(
            decode_in_steps(Body::Chunked(Chunk::Size), &endless_size_line, 64),
            Err(StreamError::Broken("chunk line too long"))
        ));
        let mut endless_trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            endless_trailers.extend_from_slice(b"X-Padding: 0123456789\r\n");
        }
        assert!(matches!(
            decode_in_steps(Body::Chunked(Chunk::Size), &endless_trailers, 512),
            Err(StreamError::Broken("chunk line too long"))
        ));
    }

    #[test]
    fn a_body_cut_short_is_truncated_not_ended() {
        assert!(matches!(
            decode_in_steps(Body::Chunked(Chunk::Size), b"5\r\nab", 1),
            Err(StreamError::Truncated)
        ));
        assert!(matches!(
            decode_in_steps(Body::Length(10), b"abc", 1),
            Err(StreamError::Truncated)
        ));
        assert_eq!(
            decode_in_steps(Body::Length(3), b"abcdef", 2).unwrap(),
            b"abc"
        );
    }

    fn head(wire: &[u8]) -> Result<Option<(StreamHead, Body)>, StreamError> {
        parse_head(&mut BytesMut::from(wire))
    }

    #[test]
    fn the_head_says_how_the_body_is_framed() {
        let framing = |wire: &[u8]| head(wire).unwrap().unwrap().1;
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Body::Chunked(Chunk::Size)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n"
            ),
            Body::Chunked(Chunk::Size)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Body::UntilClose
        );
        assert_eq!(
            framing(b"HTTP/1.1 401 No\r\nContent-Length: 12\r\n\r\n"),
            Body::Length(12)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Body::Done
        );
        assert_eq!(framing(b"HTTP/1.1 204 No Content\r\n\r\n"), Body::Done);
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\n\r\n"), Body::UntilClose);
        let (interim_skipped, _) =
            head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: b\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(interim_skipped.status, http::StatusCode::OK);
        assert_eq!(
            interim_skipped.headers,
            vec![("x-a".to_owned(), "b".to_owned())]
        );
        assert!(head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
    }

    #[test]
    fn broken_heads_are_refused() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SMTP 220 hello\r\n\r\n",
        ] {
            assert!(
                matches!(head(wire), Err(StreamError::Broken(_))),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=HEADERS_MAX {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            head(&many),
            Err(StreamError::Broken("too many headers"))
        ));
    }
}
