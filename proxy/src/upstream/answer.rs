//! An upstream's HTTP/1.x answer, read by xsigate off a connection it holds itself: the head
//! parsed into one header map, and the body taken in its framing (RFC 9112 §6). Used by the
//! readers that own their connections: XSI-Events channel streams ([`super::channel_stream`])
//! and the lean lane (`http/lean/`), which also takes its client's request fields with
//! [`fields_of`].
//!
//! The map's values are slices of the head as it was read, and it has room for the fields the
//! reader adds: the head is parsed once, each name once, and no value is copied on its way on.
#![allow(
    unsafe_code,
    reason = "field values httparse accepted are taken without checking each byte again; see \
              `parse_head`"
)]

use std::mem::MaybeUninit;

use bytes::{Buf as _, Bytes, BytesMut};
use pingora::protocols::Stream;
use tokio::io::AsyncReadExt as _;

use super::xsi::StreamError;
use crate::wire::headers::content_length;
use crate::wire::layout::FieldSpan;

/// The longest answer head taken.
pub const HEAD_MAX: usize = 64 * 1024;
/// Fields in an answer head.
const FIELDS_MAX: usize = 128;
/// What a read of a head asks for when the buffer has less room.
const HEAD_READ: usize = 2048;
/// The longest chunk-size line (with its extensions) and all trailer lines together.
const CHUNK_LINE_MAX: usize = 1024;
const TRAILERS_MAX: usize = 16 * 1024;

/// A final answer's head.
#[derive(Debug)]
pub struct AnswerHead {
    pub status: http::StatusCode,
    pub version: http::Version,
    /// The reason phrase when it is not the status's own.
    pub reason: Option<String>,
    pub fields: http::HeaderMap,
    /// Whether the answer lets the connection carry another request once its body is read.
    pub keeps_connection: bool,
}

/// Reads off `io` into `buf` until it holds a final answer's head, and takes it as
/// [`parse_head`] does; what follows the head stays in `buf`. The caller bounds the time.
pub async fn read_head(
    io: &mut Stream,
    buf: &mut BytesMut,
    to_head: bool,
    room: usize,
) -> Result<(AnswerHead, Body), StreamError> {
    loop {
        if let Some(read) = parse_head(buf, to_head, room)? {
            return Ok(read);
        }
        if buf.len() >= HEAD_MAX {
            return Err(StreamError::Broken("response head too large"));
        }
        buf.reserve(HEAD_READ);
        if io.read_buf(buf).await? == 0 {
            return Err(StreamError::Truncated);
        }
    }
}

/// The final answer's head at the start of `buf`, taken out of it, and how its body is framed;
/// `None` while it is incomplete. Interim answers (1xx) are skipped; a `101` is refused, since
/// no reader here asks for an upgrade. `to_head`: the request was a `HEAD`, whose answer has no
/// body whatever its fields say. `room`: fields the reader will add.
pub fn parse_head(
    buf: &mut BytesMut,
    to_head: bool,
    room: usize,
) -> Result<Option<(AnswerHead, Body)>, StreamError> {
    loop {
        // Where each field's name and value are in the head, to take them as slices of it once
        // it is frozen: the parser's fields borrow `buf`.
        // As many as the head holds: an array of the most a head may hold would be zeroed
        // (2 KiB) for every answer.
        let mut spans = Vec::new();
        let (length, status, version, reason, body, keeps) =
            {
                let mut slots = [const { MaybeUninit::uninit() }; FIELDS_MAX];
                let mut response = httparse::Response::new(&mut []);
                let length = match httparse::ParserConfig::default()
                    .parse_response_with_uninit_headers(&mut response, buf, &mut slots)
                {
                    Ok(httparse::Status::Complete(length)) => length,
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(StreamError::Broken("too many headers"));
                    }
                    Err(_) => return Err(StreamError::Broken("malformed response head")),
                };
                if length > HEAD_MAX {
                    return Err(StreamError::Broken("response head too large"));
                }
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
                let version = match response.version {
                    Some(1) => http::Version::HTTP_11,
                    _ => http::Version::HTTP_10,
                };
                let reason = response
                    .reason
                    .filter(|reason| Some(*reason) != status.canonical_reason())
                    .map(str::to_owned);
                let body = if to_head {
                    Body::Done
                } else {
                    Body::of(status, response.headers)?
                };
                spans.reserve_exact(response.headers.len());
                for field in response.headers.iter() {
                    spans.push(
                        FieldSpan::within(buf, field)
                            .ok_or(StreamError::Broken("response head too large"))?,
                    );
                }
                let keeps = keeps_connection(
                    version,
                    response
                        .headers
                        .iter()
                        .map(|f| (f.name.as_bytes(), f.value)),
                );
                (length, status, version, reason, body, keeps)
            };
        let wire = buf.split_to(length).freeze();
        let mut fields = fields_of(&wire, &spans, room)?;
        if fields.contains_key(http::header::TRANSFER_ENCODING) {
            // The codings frame the body; a length beside them is not to be passed on
            // (RFC 9112 §6.3).
            fields.remove(http::header::CONTENT_LENGTH);
        }
        let keeps_connection = body != Body::UntilClose && keeps;
        let head = AnswerHead {
            status,
            version,
            reason,
            fields,
            keeps_connection,
        };
        return Ok(Some((head, body)));
    }
}

/// The names nearly every message holds, as servers and browsers spell them, most frequent
/// first: a name is looked for here byte for byte before it is parsed, which lowers and checks
/// each of its bytes (the inject profile's seven names cost 740 instructions less this way).
const SPELLED: [(&[u8], http::HeaderName); 16] = {
    use http::header::*;
    [
        (b"Host", HOST),
        (b"Cookie", COOKIE),
        (b"Content-Type", CONTENT_TYPE),
        (b"Content-Length", CONTENT_LENGTH),
        (b"Date", DATE),
        (b"Server", SERVER),
        (b"Connection", CONNECTION),
        (b"Set-Cookie", SET_COOKIE),
        (b"User-Agent", USER_AGENT),
        (b"Accept", ACCEPT),
        (b"Accept-Encoding", ACCEPT_ENCODING),
        (b"Accept-Language", ACCEPT_LANGUAGE),
        (b"Cache-Control", CACHE_CONTROL),
        (b"Transfer-Encoding", TRANSFER_ENCODING),
        (b"Authorization", AUTHORIZATION),
        (b"Origin", ORIGIN),
    ]
};

/// The fields httparse parsed out of `wire`, by place, as a map with room for `room` more:
/// each name parsed once (or found in `SPELLED`), each value a slice of `wire`.
pub fn fields_of(
    wire: &Bytes,
    spans: &[FieldSpan],
    room: usize,
) -> Result<http::HeaderMap, StreamError> {
    let mut fields = http::HeaderMap::try_with_capacity(spans.len() + room)
        .map_err(|_| StreamError::Broken("too many headers"))?;
    for span in spans {
        let name = span.name.of(wire);
        let name = match SPELLED.iter().find(|(spelled, _)| *spelled == name) {
            Some((_, known)) => known.clone(),
            None => http::HeaderName::from_bytes(name)
                .map_err(|_| StreamError::Broken("malformed header name"))?,
        };
        let value = span.value.range();
        if value.end > wire.len() {
            return Err(StreamError::Broken("a field outside its head"));
        }
        // SAFETY: `http` asks of a value only that each byte be a tab or visible (32 and up,
        // not 127); httparse refused the head otherwise (a request's values as an answer's),
        // so checking again would cost a pass over every value of every message. A unit test
        // holds httparse to it: `httparse_refuses_every_byte_a_header_value_may_not_hold`.
        let value = unsafe { http::HeaderValue::from_maybe_shared_unchecked(wire.slice(value)) };
        fields
            .try_append(name, value)
            .map_err(|_| StreamError::Broken("too many headers"))?;
    }
    Ok(fields)
}

/// Whether a message's `Connection` keeps the connection: an HTTP/1.1 message unless it says
/// `close`, an HTTP/1.0 one only when it says `keep-alive` and has no `Transfer-Encoding`
/// (RFC 9112 §6.1, §9.3). Read off the parsed fields, which are few, before any map is built.
pub fn keeps_connection<'h>(
    version: http::Version,
    fields: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
) -> bool {
    let (mut close, mut keep_alive, mut coded) = (false, false, false);
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            coded = true;
        }
    }
    if version == http::Version::HTTP_11 {
        !close
    } else {
        keep_alive && !coded
    }
}

/// How much body is left, and in what framing (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Chunked(Chunk),
    Length(u64),
    UntilClose,
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers { read: usize },
}

/// What [`Body::decode`] took from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
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
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, StreamError> {
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

    /// The connection closed: the end of a body that runs to the close, a truncation of any
    /// other.
    pub fn closed(&mut self) -> Result<(), StreamError> {
        match self {
            Self::UntilClose | Self::Done => {
                *self = Self::Done;
                Ok(())
            }
            _ => Err(StreamError::Truncated),
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

    /// A name found by its spelling is the name parsing it would make: the table cannot put
    /// a field under another name, and a name spelled otherwise is parsed as before.
    #[test]
    fn a_spelled_name_is_the_name_it_parses_to() {
        for (spelled, name) in &SPELLED {
            assert_eq!(
                http::HeaderName::from_bytes(spelled).ok().as_ref(),
                Some(name)
            );
        }
        let head =
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nCONTENT-TYPE: a/b\r\nSet-Cookie: c\r\n\r\nx";
        let mut buf = BytesMut::from(&head[..]);
        let (answer, _) = parse_head(&mut buf, false, 0).unwrap().unwrap();
        let names: Vec<_> = answer.fields.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, ["content-length", "content-type", "set-cookie"]);
    }

    /// Each byte at places in a field value that httparse's byte-by-byte and its vectorised
    /// scans (16 and 32 bytes at a time) reach: an answer that holds one `http` refuses in a
    /// value is refused by httparse, and one it takes is parsed into a map that holds the value
    /// as sent.
    #[test]
    fn httparse_refuses_every_byte_a_header_value_may_not_hold() {
        for byte in 0..=u8::MAX {
            for at in [1, 15, 16, 31, 32, 47, 63, 70] {
                let mut value = vec![b'v'; 72];
                value[at] = byte;
                let mut head = b"HTTP/1.1 200 OK\r\nx-probe: ".to_vec();
                head.extend_from_slice(&value);
                head.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
                let allowed = http::HeaderValue::from_bytes(&value).is_ok();
                match parse_head(&mut BytesMut::from(&head[..]), false, 0) {
                    Ok(Some((answer, _))) => {
                        assert!(
                            allowed,
                            "httparse took {byte:#04x} at {at}, `http` refuses it"
                        );
                        let parsed = answer.fields.get("x-probe").map(|v| v.as_bytes());
                        assert_eq!(parsed, Some(&value[..]), "{byte:#04x} at {at}");
                    }
                    Ok(None) => panic!("{byte:#04x} at {at}: a whole head read as partial"),
                    Err(_) => assert!(!allowed, "{byte:#04x} at {at} refused, `http` takes it"),
                }
                assert_eq!(
                    request_field(&value).as_deref(),
                    allowed.then_some(&value[..]),
                    "a request's field, {byte:#04x} at {at}"
                );
            }
        }
    }

    /// The value of `x-probe: value` in a request head, as [`fields_of`] takes it; `None` when
    /// httparse refuses the head.
    fn request_field(value: &[u8]) -> Option<Vec<u8>> {
        let mut head = b"GET / HTTP/1.1\r\nhost: a\r\nx-probe: ".to_vec();
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n\r\n");
        let wire = Bytes::from(head);
        let mut parsed = [httparse::EMPTY_HEADER; 4];
        let mut request = httparse::Request::new(&mut parsed);
        match request.parse(&wire) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => panic!("a whole request head read as partial"),
            Err(_) => return None,
        }
        let spans: Vec<_> = request
            .headers
            .iter()
            .map(|field| FieldSpan::within(&wire, field).expect("a field of the head"))
            .collect();
        let fields = fields_of(&wire, &spans, 0).expect("fields");
        fields.get("x-probe").map(|v| v.as_bytes().to_vec())
    }

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

    fn head(wire: &[u8]) -> Result<Option<(AnswerHead, Body)>, StreamError> {
        parse_head(&mut BytesMut::from(wire), false, 0)
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
        assert_eq!(interim_skipped.fields.len(), 1);
        assert_eq!(interim_skipped.fields["x-a"], "b");
        assert!(head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
    }

    #[test]
    fn the_head_says_whether_the_connection_carries_another_request() {
        let keeps = |wire: &[u8]| head(wire).unwrap().unwrap().0.keeps_connection;
        assert!(keeps(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"));
        assert!(keeps(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!keeps(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(
            !keeps(b"HTTP/1.1 200 OK\r\n\r\n"),
            "its body runs to the close"
        );
        assert!(!keeps(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"));
        assert!(keeps(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!keeps(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
    }

    #[test]
    fn the_fields_are_the_heads_own_with_room_and_no_length_beside_a_coding() {
        let mut wire = BytesMut::from(
            &b"HTTP/1.1 503 Busy Here\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 9\r\n\
               Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        );
        let (answer, body) = parse_head(&mut wire, false, 5).unwrap().unwrap();
        assert_eq!(body, Body::Chunked(Chunk::Size));
        assert_eq!(answer.reason.as_deref(), Some("Busy Here"));
        let values: Vec<_> = answer.fields.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(!answer.fields.contains_key("content-length"));
        assert!(answer.fields.capacity() >= answer.fields.len() + 5);
        assert_eq!(&wire[..], b"0\r\n\r\n", "the body stays in the buffer");

        let (to_close, body) =
            head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 9\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(body, Body::UntilClose);
        assert!(!to_close.fields.contains_key("content-length"));

        let ok = head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(ok.0.reason, None, "the status's own reason is not kept");
    }

    #[test]
    fn an_answer_to_head_has_no_body_whatever_its_fields_say() {
        let mut wire = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 352\r\n\r\n"[..]);
        let (answer, body) = parse_head(&mut wire, true, 0).unwrap().unwrap();
        assert_eq!(body, Body::Done);
        assert!(answer.keeps_connection);
        assert_eq!(answer.fields["content-length"], "352");
    }

    #[test]
    fn a_close_ends_only_a_body_that_runs_to_it() {
        let mut until_close = Body::UntilClose;
        assert!(until_close.closed().is_ok());
        assert_eq!(until_close, Body::Done);
        assert!(matches!(
            Body::Length(3).closed(),
            Err(StreamError::Truncated)
        ));
        assert!(matches!(
            Body::Chunked(Chunk::Data(1)).closed(),
            Err(StreamError::Truncated)
        ));
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
        for i in 0..=FIELDS_MAX {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            head(&many),
            Err(StreamError::Broken("too many headers"))
        ));
    }

    #[test]
    fn a_head_past_the_longest_is_refused_even_when_it_came_whole() {
        let with_value = |len: usize| {
            let mut wire = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
            wire.resize(wire.len() + len, b'a');
            wire.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            wire
        };
        let fits = with_value(HEAD_MAX - 64);
        assert!(fits.len() <= HEAD_MAX);
        assert!(matches!(head(&fits), Ok(Some(_))));
        let over = with_value(HEAD_MAX);
        assert!(matches!(
            head(&over),
            Err(StreamError::Broken("response head too large"))
        ));
    }
}
