//! Reading a request head as strictly as the strictest server behind xsigate would, so that no
//! two parsers on the path can disagree about where a request ends.
//!
//! A request MUST be refused here, before Pingora or an upstream sees it, when:
//! - it has `Transfer-Encoding` and `Content-Length` together, several `Content-Length` fields,
//!   a length that is not a plain decimal number, a transfer coding other than `chunked`, or
//!   `Transfer-Encoding` on HTTP/1.0 (`ambiguous_framing`, RFC 9112 §6.1–6.3);
//! - its target is not origin-form (`/…`, or `*` for `OPTIONS`): xsigate is no forward proxy
//!   (`bad_request`); `CONNECT` is refused (`method_not_allowed`);
//! - its target holds a byte httparse passes and `http`'s URI refuses (`<`, `>`, `` ` `` in the
//!   path, `"`, `<`, `>` in the query), or is longer than a URI may be (`bad_request`): no URI
//!   could be made of it, and Pingora would answer with a bare 400 of its own;
//! - an HTTP/1.1 request has no `Host`, several, or one with user information (`bad_request`);
//! - its header exceeds the configured size or field count (`header_too_large`);
//! - its declared body exceeds the configured size (`payload_too_large`).

use std::mem::MaybeUninit;

use crate::text::any_byte;
use crate::wire::error::ErrorCode;
use crate::wire::headers::content_length;
use crate::wire::layout::{FieldSpan, Span};

/// The most header fields the parser keeps room for; `header_fields` is validated below it.
pub const MAX_HEADER_FIELDS: usize = 256;

/// What the head says, as far as the edge cares: enough to log a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head<'a> {
    /// More bytes are needed.
    Partial,
    /// A complete head that may pass.
    Complete { length: usize, shape: Shape },
    /// A complete head (or a broken one) that must not pass.
    Refused {
        code: ErrorCode,
        method: &'a str,
        path: &'a str,
    },
}

/// What a passed head says about the exchange it opens, for choosing how it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Where the request target (origin-form path and query, or `*`) lies in the head: the lane
    /// is chosen by it, and keeping its place spares a second scan of the head.
    pub target: Span,
    /// The body's declared length, 0 without one; `None` for a chunked body.
    pub body_length: Option<u64>,
    /// The head asks for more than one request and one response: an `Upgrade`, or an `Expect`
    /// that wants an interim answer.
    pub asks_more: bool,
}

/// Where a passed head's parts lie in it, as the check parsed them: the lane takes its request
/// from them rather than parsing the head a second time. Kept with the connection and filled
/// again for each head, so that its fields' room is allocated once.
#[derive(Debug, Default)]
pub struct Layout {
    /// Where the head ends and the body (or the next request) begins.
    pub length: usize,
    pub method: Span,
    pub http10: bool,
    pub fields: Vec<FieldSpan>,
}

/// Limits the head is read against.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub header_bytes: usize,
    pub header_fields: usize,
    pub body_bytes: u64,
}

/// Reads the head at the start of `buf` and decides whether it may pass; `layout` is filled
/// for a head that may.
pub fn check<'b>(buf: &'b [u8], limits: HeadLimits, layout: &mut Layout) -> Head<'b> {
    // Left uninitialised: the parser writes only the fields the head holds, and clearing room
    // for all of them would cost more than reading a typical head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADER_FIELDS];
    let fields = &mut fields[..limits.header_fields.min(MAX_HEADER_FIELDS)];
    let mut request = httparse::Request::new(&mut []);
    let refused = |code| Head::Refused {
        code,
        method: "-",
        path: "-",
    };
    let length = match request.parse_with_uninit_headers(buf, fields) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= limits.header_bytes => {
            return refused(ErrorCode::HeaderTooLarge);
        }
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => return refused(ErrorCode::HeaderTooLarge),
        Err(_) => return refused(ErrorCode::BadRequest),
    };
    let method = request.method.unwrap_or("-");
    let path = request.path.unwrap_or("-");
    let verdict = if length > limits.header_bytes {
        Err(ErrorCode::HeaderTooLarge)
    } else {
        judge(&request, limits, buf)
    };
    match verdict {
        Ok(shape) => {
            layout.length = length;
            layout.method = Span::within(buf, method.as_bytes()).unwrap_or_default();
            layout.http10 = request.version == Some(0);
            layout.fields.clear();
            layout.fields.extend(
                request
                    .headers
                    .iter()
                    .map(|field| FieldSpan::within(buf, field).unwrap_or_default()),
            );
            Head::Complete { length, shape }
        }
        Err(code) => Head::Refused {
            code,
            method,
            // Only the path goes to the log: a query can carry e-mail addresses and numbers.
            path: path.split('?').next().unwrap_or("-"),
        },
    }
}

fn judge(
    request: &httparse::Request<'_, '_>,
    limits: HeadLimits,
    buf: &[u8],
) -> Result<Shape, ErrorCode> {
    let http10 = request.version == Some(0);
    let method = request.method.unwrap_or_default();
    let target = request.path.unwrap_or_default();
    if method == "CONNECT" {
        return Err(ErrorCode::MethodNotAllowed);
    }
    let origin_form = target.starts_with('/') && !target.starts_with("//");
    if !(origin_form || (target == "*" && method == "OPTIONS")) || !makes_a_uri(target.as_bytes()) {
        return Err(ErrorCode::BadRequest);
    }

    let mut hosts = 0;
    let mut lengths = 0;
    let mut length: Option<u64> = None;
    let mut codings = 0;
    let mut chunked = false;
    let mut asks_more = false;
    for field in request.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if field.value.contains(&b'@') || field.value.is_empty() {
                return Err(ErrorCode::BadRequest);
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = Some(content_length(field.value).ok_or(ErrorCode::AmbiguousFraming)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings += 1;
            chunked = trim(field.value).eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("expect") {
            asks_more = true;
        }
    }
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(ErrorCode::BadRequest);
    }
    if lengths > 1 || (codings > 0 && (lengths > 0 || http10 || codings > 1 || !chunked)) {
        return Err(ErrorCode::AmbiguousFraming);
    }
    if length.is_some_and(|length| length > limits.body_bytes) {
        return Err(ErrorCode::PayloadTooLarge);
    }
    Ok(Shape {
        target: Span::within(buf, target.as_bytes()).unwrap_or_default(),
        body_length: if codings > 0 {
            None
        } else {
            Some(length.unwrap_or(0))
        },
        asks_more,
    })
}

/// The longest target `http` makes a URI of.
const URI_MAX: usize = u16::MAX as usize - 1;

/// Whether `http` makes a URI of `target`, as far as its bytes decide: httparse passes some
/// that `http` refuses (the WHATWG URL standard's path and query sets, as `http` 1.x applies
/// them). A fragment is not looked at, as `http` cuts it off first; bytes past 127 are left to
/// the UTF-8 check that comes with the URI. One vectorised pass for a target without any of
/// the four bytes, which is nearly every target.
fn makes_a_uri(target: &[u8]) -> bool {
    if target.len() > URI_MAX {
        return false;
    }
    if !any_byte(target, |b| matches!(b, b'<' | b'>' | b'`' | b'"')) {
        return true;
    }
    let target = &target[..target
        .iter()
        .position(|&b| b == b'#')
        .unwrap_or(target.len())];
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(at) => (&target[..at], &target[at + 1..]),
        None => (target, &[][..]),
    };
    !any_byte(path, |b| matches!(b, b'<' | b'>' | b'`'))
        && !any_byte(query, |b| matches!(b, b'"' | b'<' | b'>'))
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        header_bytes: 4096,
        header_fields: 16,
        body_bytes: 1024,
    };

    /// The check of a head on a connection of its own.
    fn checked(head: &[u8]) -> Head<'_> {
        check(head, LIMITS, &mut Layout::default())
    }

    fn code(head: &[u8]) -> Option<ErrorCode> {
        match checked(head) {
            Head::Refused { code, .. } => Some(code),
            Head::Complete { .. } => None,
            Head::Partial => panic!("partial: {}", head.escape_ascii()),
        }
    }

    /// Each ASCII byte in a target's path, its query and its fragment: a target the edge passes
    /// is one `http` makes a URI of, and one it refuses as a bad request is one `http` refuses
    /// (bytes httparse refuses never reach this rule). Bytes past 127 are left to UTF-8.
    #[test]
    fn a_target_passes_only_when_http_makes_a_uri_of_it() {
        for byte in 0..0x80u8 {
            let at = char::from(byte);
            for target in [
                format!("/a{at}b?q=1"),
                format!("/a?q{at}1"),
                format!("/a?q=1#f{at}"),
                format!("/a#f{at}?q"),
            ] {
                let head = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
                let parsed = httparse::Request::new(&mut [httparse::EMPTY_HEADER; 4])
                    .parse(head.as_bytes())
                    .is_ok_and(|status| status.is_complete());
                if !parsed {
                    continue;
                }
                let uri = http::uri::PathAndQuery::try_from(target.as_str()).is_ok();
                let verdict = code(head.as_bytes());
                assert_eq!(
                    verdict.is_none(),
                    uri,
                    "{target:?}: the edge said {verdict:?}, `http` made a URI: {uri}"
                );
                assert!(uri || verdict == Some(ErrorCode::BadRequest), "{target:?}");
            }
        }
        for length in [URI_MAX, URI_MAX + 1] {
            let target = format!("/{}", "a".repeat(length - 1));
            let uri = http::uri::PathAndQuery::try_from(target.as_str()).is_ok();
            assert_eq!(makes_a_uri(target.as_bytes()), uri, "{length} bytes");
        }
    }

    #[test]
    fn plain_requests_pass_and_partial_heads_wait() {
        assert_eq!(code(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(code(b"GET /a HTTP/1.0\r\n\r\n"), None);
        assert_eq!(code(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(
            code(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"),
            None
        );
        assert_eq!(
            code(b"PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked \r\n\r\n"),
            None
        );
        assert_eq!(checked(b"GET /a HTTP/1.1\r\nHost: x\r\n"), Head::Partial);
        let head = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b";
        let shape = Shape {
            target: Span::within(head, &head[4..6]).unwrap(),
            body_length: Some(0),
            asks_more: false,
        };
        assert_eq!(checked(head), Head::Complete { length: 28, shape });
    }

    #[test]
    fn a_passed_head_tells_its_body_and_whether_it_asks_for_more() {
        let shape = |head: &[u8]| match checked(head) {
            Head::Complete { shape, .. } => shape,
            other => panic!("{other:?}"),
        };
        let plain = shape(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(plain.body_length, Some(12));
        assert!(!plain.asks_more);
        let chunked = shape(b"PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(chunked.body_length, None);
        for asking in [
            &b"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
            b"PUT /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        ] {
            assert!(shape(asking).asks_more, "{}", asking.escape_ascii());
        }
        // Empty lines before the request line are allowed (RFC 9112 section 2.2).
        for head in [
            &b"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"\r\n\nGET /a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(shape(head).target.text(head), "/a/b?c=d");
        }
    }

    /// The lane takes a passed head by the check's layout alone: it must say what the parser
    /// read, for any spacing the parser allows, and be refilled whole for the next head on the
    /// connection.
    #[test]
    fn a_passed_heads_layout_places_its_method_version_and_fields() {
        let mut layout = Layout::default();
        let first = b"\r\nPATCH /a HTTP/1.0\r\nHost:x\r\nX-Empty:\r\nAccept:  a/b ,c \r\n\r\nrest";
        assert!(matches!(
            check(first, LIMITS, &mut layout),
            Head::Complete { length: 59, .. }
        ));
        assert_eq!(layout.length, 59);
        assert_eq!(layout.method.of(first), b"PATCH");
        assert!(layout.http10);
        let fields: Vec<_> = layout
            .fields
            .iter()
            .map(|field| (field.name.text(first), field.value.text(first)))
            .collect();
        assert_eq!(
            fields,
            [("Host", "x"), ("X-Empty", ""), ("Accept", "a/b ,c")]
        );

        let second = b"GET / HTTP/1.1\r\nhost: y\r\n\r\n";
        assert!(matches!(
            check(second, LIMITS, &mut layout),
            Head::Complete { .. }
        ));
        assert_eq!((layout.length, layout.http10), (second.len(), false));
        assert_eq!(layout.method.of(second), b"GET");
        assert_eq!(layout.fields.len(), 1);
        assert_eq!(layout.fields[0].value.of(second), b"y");
    }

    #[test]
    fn every_smuggling_shape_is_ambiguous_framing() {
        for head in [
            &b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                code(head),
                Some(ErrorCode::AmbiguousFraming),
                "{}",
                head.escape_ascii()
            );
        }
    }

    #[test]
    fn targets_hosts_methods_and_sizes_are_refused_with_their_codes() {
        let cases: [(&[u8], ErrorCode); 10] = [
            (
                b"GET http://evil/a HTTP/1.1\r\nHost: evil\r\n\r\n",
                ErrorCode::BadRequest,
            ),
            (
                b"GET //evil/a HTTP/1.1\r\nHost: x\r\n\r\n",
                ErrorCode::BadRequest,
            ),
            (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCode::BadRequest),
            (
                b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n",
                ErrorCode::MethodNotAllowed,
            ),
            (b"GET /a HTTP/1.1\r\n\r\n", ErrorCode::BadRequest),
            (
                b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
                ErrorCode::BadRequest,
            ),
            (
                b"GET /a HTTP/1.1\r\nHost: u@x\r\n\r\n",
                ErrorCode::BadRequest,
            ),
            (
                b"GET /a HTTP/1.1\r\nBad Name: x\r\n\r\n",
                ErrorCode::BadRequest,
            ),
            (
                b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n",
                ErrorCode::PayloadTooLarge,
            ),
            (b"GET /a HTTP/2.0\r\nHost: x\r\n\r\n", ErrorCode::BadRequest),
        ];
        for (head, expected) in cases {
            assert_eq!(code(head), Some(expected), "{}", head.escape_ascii());
        }
    }

    #[test]
    fn oversized_heads_are_refused_whole_or_partial() {
        let mut many = b"GET /a HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..LIMITS.header_fields {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(code(&many), Some(ErrorCode::HeaderTooLarge));

        let mut long = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
        long.resize(LIMITS.header_bytes, b'a');
        assert_eq!(code(&long), Some(ErrorCode::HeaderTooLarge));
    }

    #[test]
    fn a_refusal_names_the_path_without_its_query() {
        let head = b"GET /a/b?user=alice@x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n";
        assert_eq!(
            checked(head),
            Head::Refused {
                code: ErrorCode::BadRequest,
                method: "GET",
                path: "/a/b",
            }
        );
    }
}
