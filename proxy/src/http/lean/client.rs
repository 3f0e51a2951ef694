//! The lane's client session: one request on a client connection, read from the head the edge
//! checked and answered on the same connection, without Pingora's server session.
//!
//! Pingora's parses the head again into a field map and a map of the names' case, keeps a
//! digest and a copy of the connection's addresses for each request, and writes the answer
//! through a body writer for every framing and upgrade. This one parses it into one map whose
//! values are slices of the head, takes the connection's address and TLS from the
//! edge, and frames the answer as the lane's answers can be framed:
//! - by its `Content-Length`, by `chunked` when it has `Transfer-Encoding`, not at all for
//!   `HEAD`, `204` and `304`, and otherwise by closing the connection (RFC 9112 §6.3); an
//!   HTTP/1.0 client, which cannot read chunks, gets a chunked answer that way too;
//! - with `Date` and a `Connection` that says what happens next, as Pingora's does.
//!
//! The connection is kept for another request only when the request asked for it (HTTP/1.1
//! without `close`, HTTP/1.0 with `keep-alive`), the process is not draining, the hooks did not
//! refuse it, the body was read to its end with nothing after it (xsigate does not pipeline),
//! and the answer was written whole in a framing that does not end with the connection.
//!
//! Layer: part of [`crate::http`].

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use pingora::http::{HeaderNameVariant, RequestHeader, ResponseHeader};
use pingora::protocols::Stream;
use pingora::protocols::http::date::get_cached_date;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType, OrErr as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::edge::Handoff;
use crate::http::client::Client;
use crate::upstream::answer;

/// What one read of a request body asks for at most.
const BODY_READ: usize = 16 * 1024;

/// How the answer's body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No answer's head was written yet.
    Unwritten,
    /// By `Content-Length`: this many bytes are still to go.
    Length(u64),
    Chunked,
    /// The body ends when the connection does.
    UntilClose,
    /// The answer is complete.
    Done,
}

/// One request's client side on the lane.
pub struct LaneClient<'a> {
    stream: Stream,
    request: RequestHeader,
    /// Body bytes that came with the head and were not read yet.
    preread: Bytes,
    /// Body bytes still to come off the connection after `preread`.
    unread: u64,
    /// Whether bytes came after the body with its head: a request sent before this one was
    /// answered, which xsigate does not take.
    overread: bool,
    read_timeout: Option<Duration>,
    keepalive: bool,
    client_ip: Option<IpAddr>,
    tls: bool,
    shutdown: &'a ShutdownWatch,
    written: Option<Box<ResponseHeader>>,
    framing: Framing,
}

impl std::fmt::Debug for LaneClient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneClient")
            .field("framing", &self.framing)
            .field("keepalive", &self.keepalive)
            .finish_non_exhaustive()
    }
}

impl<'a> LaneClient<'a> {
    /// The request whose head `handoff` holds, to be answered on `stream`, taken by the places
    /// the edge's check found its parts in; `None` when one of them makes no request or the body
    /// is chunked, which the check and the lane's choice make unexpected.
    pub fn new(stream: Stream, handoff: Handoff<'_>, shutdown: &'a ShutdownWatch) -> Option<Self> {
        let (client_ip, tls, draining) = (
            handoff.client_ip(),
            handoff.is_tls(),
            handoff.shutting_down(),
        );
        let shape = handoff.shape();
        let body_length = shape.body_length?;
        let layout = handoff.layout();
        let wire = handoff.into_head().freeze();
        let length = layout.length;
        let method = http::Method::from_bytes(layout.method.of(&wire)).ok()?;
        let version = if layout.http10 {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        };
        let target = shape.target.of(&wire);
        let keepalive = !draining
            && answer::keeps_connection(
                version,
                layout
                    .fields
                    .iter()
                    .map(|field| (field.name.of(&wire), field.value.of(&wire))),
            );
        let fields = answer::fields_of(&wire, &layout.fields, 0).ok()?;
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = method;
        parts.version = version;
        parts.headers = fields;
        // An origin-form target without a fragment is its URI as it stands; any other is taken
        // as Pingora takes it (a fragment cut, an unusual byte escaped).
        let uri = (!target.contains(&b'#'))
            .then(|| http::Uri::from_maybe_shared(wire.slice_ref(target)).ok())
            .flatten()
            .filter(|uri| uri.scheme().is_none());
        let exact = uri.is_some();
        parts.uri = uri.unwrap_or_default();
        let mut request = RequestHeader::from(parts);
        if !exact {
            request.set_raw_path(target).ok()?;
        }
        let rest = wire.slice(length..);
        let preread_len = usize::try_from(body_length).map_or(rest.len(), |n| n.min(rest.len()));
        Some(Self {
            stream,
            request,
            overread: rest.len() > preread_len,
            preread: rest.slice(..preread_len),
            unread: body_length - preread_len as u64,
            read_timeout: None,
            keepalive,
            client_ip,
            tls,
            shutdown,
            written: None,
            framing: Framing::Unwritten,
        })
    }

    /// Whether the request's body has been read to its end.
    pub fn is_body_done(&self) -> bool {
        self.preread.is_empty() && self.unread == 0
    }

    /// Ends the answer: the last chunk of a chunked body, then everything written sent.
    pub async fn finish_response(&mut self) -> Result<()> {
        if self.framing == Framing::Chunked {
            self.write(b"0\r\n\r\n").await?;
            self.framing = Framing::Done;
        }
        self.stream
            .flush()
            .await
            .or_err(ErrorType::WriteError, "writing the answer")
            .map_err(|e| e.into_down())
    }

    /// The connection: `Ok` when it may carry another request, `Err` when it is to be shut
    /// down.
    pub fn into_reusable(self) -> std::result::Result<Stream, Stream> {
        if self.keepalive && self.framing.is_whole() && self.is_body_done() && !self.overread {
            Ok(self.stream)
        } else {
            Err(self.stream)
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .await
            .or_err(ErrorType::WriteError, "writing the answer")
            .map_err(|e| e.into_down())
    }

    /// How `header`'s body goes to this client, with the fields that say so set: a coding
    /// the client cannot read is taken off.
    fn frame(&self, header: &mut ResponseHeader) -> Result<Framing> {
        let framing = Framing::of(&self.request, header).ok_or_else(|| {
            Error::explain(ErrorType::InvalidHTTPHeader, "an answer's length").into_up()
        })?;
        if framing == Framing::UntilClose
            && header.headers.contains_key(http::header::TRANSFER_ENCODING)
        {
            header.remove_header(&http::header::TRANSFER_ENCODING);
        }
        Ok(framing)
    }
}

impl Framing {
    /// How `answer`'s body goes to the client that sent `request` (RFC 9112 §6.3): none after
    /// `HEAD`, `204` and `304`; in chunks when the answer has a transfer coding and the client
    /// speaks HTTP/1.1; by its `Content-Length`; otherwise until the connection closes.
    /// `None` for a length that is not one.
    fn of(request: &RequestHeader, answer: &ResponseHeader) -> Option<Self> {
        let status = answer.status;
        if status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED
            || request.method == http::Method::HEAD
        {
            return Some(Self::Length(0));
        }
        if answer.headers.contains_key(http::header::TRANSFER_ENCODING) {
            return Some(if request.version == http::Version::HTTP_11 {
                Self::Chunked
            } else {
                Self::UntilClose
            });
        }
        match answer.headers.get(http::header::CONTENT_LENGTH) {
            Some(value) => crate::wire::headers::content_length(value.as_bytes()).map(Self::Length),
            None => Some(Self::UntilClose),
        }
    }

    /// Whether the answer went whole, in a framing the connection outlives.
    fn is_whole(self) -> bool {
        matches!(self, Self::Done | Self::Length(0))
    }
}

impl Client for LaneClient<'_> {
    fn req_header(&self) -> &RequestHeader {
        &self.request
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.request
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    fn is_tls(&self) -> bool {
        self.tls
    }

    fn is_http2(&self) -> bool {
        false
    }

    fn set_read_timeout(&mut self, timeout: Duration) {
        self.read_timeout = Some(timeout);
    }

    fn set_keepalive(&mut self, seconds: Option<u64>) {
        // The edge keeps the connection's idle time; only whether it is kept is decided here.
        self.keepalive &= seconds.is_some();
    }

    fn is_process_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        if !self.preread.is_empty() {
            return Ok(Some(std::mem::take(&mut self.preread)));
        }
        if self.unread == 0 {
            return Ok(None);
        }
        let want = usize::try_from(self.unread).map_or(BODY_READ, |n| n.min(BODY_READ));
        let mut chunk = BytesMut::with_capacity(want);
        let mut body = (&mut self.stream).take(want as u64);
        let read = body.read_buf(&mut chunk);
        let read = match self.read_timeout {
            Some(limit) => tokio::time::timeout(limit, read).await.map_err(|_| {
                Error::explain(ErrorType::ReadTimedout, "reading the request's body").into_down()
            })?,
            None => read.await,
        };
        match read {
            Ok(0) => Err(Error::explain(
                ErrorType::ConnectionClosed,
                "the client closed the connection before its body's end",
            )
            .into_down()),
            Ok(n) => {
                self.unread -= n as u64;
                Ok(Some(chunk.freeze()))
            }
            Err(e) => Err(
                Error::because(ErrorType::ReadError, "reading the request's body", e).into_down(),
            ),
        }
    }

    fn enable_retry_buffering(&mut self) {
        // The lane holds every body whole.
    }

    fn retry_buffer_truncated(&self) -> bool {
        false
    }

    async fn write_response_header(
        &mut self,
        mut header: Box<ResponseHeader>,
        end: bool,
    ) -> Result<()> {
        if self.written.is_some() {
            // As Pingora's: a second head is not written.
            return Ok(());
        }
        let framing = self.frame(&mut header)?;
        if framing == Framing::UntilClose {
            self.keepalive = false;
        }
        let version = match header.version {
            http::Version::HTTP_10 => "HTTP/1.0 ",
            http::Version::HTTP_11 => "HTTP/1.1 ",
            _ => {
                return Err(
                    Error::explain(ErrorType::WriteError, "an answer's version").into_down()
                );
            }
        };
        let mut wire = BytesMut::with_capacity(512);
        wire.put_slice(version.as_bytes());
        wire.put_slice(header.status.as_str().as_bytes());
        wire.put_u8(b' ');
        wire.put_slice(header.get_reason_phrase().unwrap_or_default().as_bytes());
        wire.put_slice(b"\r\n");
        // `Date` and `Connection` are the lane's to say: any the answer holds are passed over,
        // and the lane's written after the fields (cheaper than replacing them in the map for a
        // head written once).
        header.map(|name, value| {
            let name = match name {
                HeaderNameVariant::Case(name) => name.as_slice(),
                HeaderNameVariant::Titled(name) => name.as_bytes(),
            };
            if !(name.eq_ignore_ascii_case(b"date") || name.eq_ignore_ascii_case(b"connection")) {
                wire.put_slice(name);
                wire.put_slice(b": ");
                wire.put_slice(value.as_bytes());
                wire.put_slice(b"\r\n");
            }
            Ok(())
        })?;
        wire.put_slice(b"Date: ");
        wire.put_slice(get_cached_date().as_bytes());
        wire.put_slice(if self.keepalive {
            b"\r\nConnection: keep-alive\r\n\r\n"
        } else {
            b"\r\nConnection: close\r\n\r\n"
        });
        self.write(&wire).await?;
        self.framing = framing;
        self.written = Some(header);
        if end || framing == Framing::Length(0) {
            self.finish_response().await?;
        }
        Ok(())
    }

    async fn write_response_body(&mut self, body: Bytes, end: bool) -> Result<()> {
        match self.framing {
            Framing::Unwritten | Framing::Done => {}
            Framing::Length(left) => {
                // As Pingora's: what goes past the declared length is not sent.
                let take = usize::try_from(left).map_or(body.len(), |n| n.min(body.len()));
                self.write(&body[..take]).await?;
                self.framing = Framing::Length(left - take as u64);
            }
            Framing::Chunked if body.is_empty() => {}
            Framing::Chunked => {
                let mut size = BytesMut::with_capacity(20);
                write!(size, "{:x}\r\n", body.len())
                    .or_err(ErrorType::WriteError, "a chunk's size")?;
                self.write(&size).await?;
                self.write(&body).await?;
                self.write(b"\r\n").await?;
            }
            Framing::UntilClose => self.write(&body).await?,
        }
        if end {
            self.finish_response().await?;
        }
        Ok(())
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.written.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, version: http::Version) -> RequestHeader {
        let mut request = RequestHeader::build_no_case(method, b"/", None).unwrap();
        request.set_version(version);
        request
    }

    fn answer(status: u16, fields: &[(&str, &str)]) -> ResponseHeader {
        let mut answer = ResponseHeader::build_no_case(status, None).unwrap();
        for (name, value) in fields {
            answer.append_header(name.to_string(), *value).unwrap();
        }
        answer
    }

    #[test]
    fn answers_are_framed_as_the_client_can_read_them() {
        const HTTP_10: http::Version = http::Version::HTTP_10;
        const HTTP_11: http::Version = http::Version::HTTP_11;
        let length = [("content-length", "10")];
        let coded = [("transfer-encoding", "chunked")];
        for (method, version, status, fields, framing) in [
            ("GET", HTTP_11, 200, &length[..], Some(Framing::Length(10))),
            ("GET", HTTP_10, 200, &length[..], Some(Framing::Length(10))),
            ("GET", HTTP_11, 200, &coded[..], Some(Framing::Chunked)),
            // An HTTP/1.0 client cannot read chunks.
            ("GET", HTTP_10, 200, &coded[..], Some(Framing::UntilClose)),
            ("GET", HTTP_11, 200, &[][..], Some(Framing::UntilClose)),
            ("HEAD", HTTP_11, 200, &length[..], Some(Framing::Length(0))),
            ("HEAD", HTTP_11, 200, &coded[..], Some(Framing::Length(0))),
            ("GET", HTTP_11, 204, &[][..], Some(Framing::Length(0))),
            ("GET", HTTP_11, 304, &length[..], Some(Framing::Length(0))),
            ("GET", HTTP_11, 200, &[("content-length", "ten")][..], None),
        ] {
            let framed = Framing::of(&request(method, version), &answer(status, fields));
            assert_eq!(framed, framing, "{method} {version:?} {status} {fields:?}");
        }
    }

    #[test]
    fn only_an_answer_that_went_whole_leaves_the_connection_usable() {
        assert!(Framing::Done.is_whole());
        assert!(Framing::Length(0).is_whole());
        for unfinished in [
            Framing::Unwritten,
            Framing::Length(1),
            Framing::Chunked,
            Framing::UntilClose,
        ] {
            assert!(!unfinished.is_whole(), "{unfinished:?}");
        }
    }
}
