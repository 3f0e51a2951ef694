//! Fields put into Pingora's heads under names made once.
//!
//! Pingora's `insert_header` and `append_header` take a name as text and parse it again,
//! copying any name outside the standard ones to the heap on the way: five times a request on
//! the lane for xsigate's own fields. A head that keeps no map of its names' case (every head
//! the lane builds) is taken apart and put together again instead, its fields going straight
//! into `http`'s map; a request only when its URI reproduces its target byte for byte, which is
//! all that putting it together keeps. Any other head goes through Pingora's methods, which
//! keep its map of names' case in step. (A single field, a plugin's, costs less through them:
//! taking a head apart moves it three times.)

use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{ErrorType, OrErr as _, Result};

/// A field as it goes into a head: its name made once, its value checked.
pub type Field = (HeaderName, HeaderValue);

/// What a field does to any field of its name already in the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Replace,
    Append,
}

/// A field's value from text (borrowed, and copied; or owned, and kept), refused as Pingora's
/// `insert_header` refuses one.
pub fn value<T>(text: T) -> Result<HeaderValue>
where
    HeaderValue: TryFrom<T, Error = http::header::InvalidHeaderValue>,
{
    HeaderValue::try_from(text).or_err(ErrorType::InvalidHTTPHeader, "invalid value while insert")
}

/// Puts `fields` into `request`.
pub fn put_request(
    request: &mut RequestHeader,
    put: Put,
    fields: impl IntoIterator<Item = Field>,
) -> Result<()> {
    let from_uri = request
        .uri
        .path_and_query()
        .map(|target| target.as_str().as_bytes())
        .or_else(|| request.uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default();
    if request.has_case() || request.raw_path() != from_uri {
        for (name, value) in fields {
            match put {
                Put::Replace => request.insert_header(name, value)?,
                Put::Append => _ = request.append_header(name, value)?,
            }
        }
        return Ok(());
    }
    let end_stream = request.send_end_stream();
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(request, empty));
    let put_all = put_into(&mut parts.headers, put, fields);
    *request = RequestHeader::from(parts);
    if let Some(end_stream) = end_stream {
        request.set_send_end_stream(end_stream);
    }
    put_all
}

/// Puts `fields` into `response`; its reason phrase is kept.
pub fn put_response(
    response: &mut ResponseHeader,
    put: Put,
    fields: impl IntoIterator<Item = Field>,
) -> Result<()> {
    if response.has_case() {
        for (name, value) in fields {
            match put {
                Put::Replace => response.insert_header(name, value)?,
                Put::Append => _ = response.append_header(name, value)?,
            }
        }
        return Ok(());
    }
    // Only a phrase other than the status's own is held apart (and copied here).
    let reason = response
        .get_reason_phrase()
        .filter(|&phrase| Some(phrase) != response.status.canonical_reason())
        .map(str::to_owned);
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(response, empty));
    let put_all = put_into(&mut parts.headers, put, fields);
    *response = ResponseHeader::from(parts);
    response.set_reason_phrase(reason.as_deref())?;
    put_all
}

/// Puts `fields` into a map of a message not yet a head.
pub fn put_into(
    headers: &mut HeaderMap,
    put: Put,
    fields: impl IntoIterator<Item = Field>,
) -> Result<()> {
    for (name, value) in fields {
        let put = match put {
            Put::Replace => headers.try_insert(name, value).map(drop),
            Put::Append => headers.try_append(name, value).map(drop),
        };
        // `http` holds at most 32,768 fields.
        put.or_err(ErrorType::InvalidHTTPHeader, "too many header fields")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::headers::{REQUEST_ID_NAME, XSP_PIN_NAME};

    /// A request as the lane builds one: from parts, so without a map of its names' case.
    fn built(target: &str) -> RequestHeader {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = http::Method::POST;
        parts.uri = target.parse().unwrap();
        parts.version = http::Version::HTTP_11;
        RequestHeader::from(parts)
    }

    /// Taken apart and put together, a head keeps all it had: its other fields (each value of
    /// a repeated one), its method, target, version and reason phrase; a head that keeps its
    /// names' case keeps it, and a target its URI does not reproduce goes out as it came.
    #[test]
    fn put_fields_leave_the_rest_of_a_head_as_it_was() {
        let mut request = built("/a%20b?x=1");
        request.append_header("cookie", "a=1").unwrap();
        request.append_header("cookie", "b=2").unwrap();
        request.append_header("x-request-id", "forged").unwrap();
        let fields = [
            (http::header::HOST, value("xsp.example:8080").unwrap()),
            (REQUEST_ID_NAME, value("f00d").unwrap()),
        ];
        put_request(&mut request, Put::Replace, fields).unwrap();
        put_request(
            &mut request,
            Put::Append,
            [(http::header::COOKIE, value("c=3").unwrap())],
        )
        .unwrap();
        assert!(!request.has_case());
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(request.raw_path(), b"/a%20b?x=1");
        assert_eq!(request.version, http::Version::HTTP_11);
        let cookies: Vec<_> = request.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2", "c=3"]);
        let ids: Vec<_> = request.headers.get_all("x-request-id").iter().collect();
        assert_eq!(ids, ["f00d"]);
        assert_eq!(request.headers["host"], "xsp.example:8080");

        let mut absolute = built("/a?b");
        absolute.set_raw_path(b"http://xsp.example/a?b").unwrap();
        put_request(
            &mut absolute,
            Put::Replace,
            [(REQUEST_ID_NAME, value("1").unwrap())],
        )
        .unwrap();
        assert_eq!(absolute.raw_path(), b"http://xsp.example/a?b");
        assert_eq!(absolute.headers["x-request-id"], "1");

        let mut cased = RequestHeader::build("GET", b"/", None).unwrap();
        cased.insert_header("X-Client-Thing", "1").unwrap();
        put_request(
            &mut cased,
            Put::Replace,
            [(REQUEST_ID_NAME, value("2").unwrap())],
        )
        .unwrap();
        let mut wire = bytes::BytesMut::new();
        cased.header_to_h1_wire(&mut wire);
        assert!(wire.windows(14).any(|w| w == b"X-Client-Thing"));
        assert_eq!(cased.headers["x-request-id"], "2");

        for (status, reason) in [(503, Some("Busy Here")), (200, Some("OK"))] {
            let mut parts = http::Response::new(()).into_parts().0;
            parts.status = http::StatusCode::from_u16(status).unwrap();
            let mut response = ResponseHeader::from(parts);
            response.set_reason_phrase(reason).unwrap();
            response.append_header("set-cookie", "a=1").unwrap();
            let fields = [(XSP_PIN_NAME, value("xsp1").unwrap())];
            put_response(&mut response, Put::Replace, fields).unwrap();
            let cookie = [(http::header::SET_COOKIE, value("b=2").unwrap())];
            put_response(&mut response, Put::Append, cookie).unwrap();
            assert_eq!(response.status, status);
            assert_eq!(response.get_reason_phrase(), reason);
            let cookies: Vec<_> = response.headers.get_all("set-cookie").iter().collect();
            assert_eq!(cookies, ["a=1", "b=2"]);
            assert_eq!(response.headers["x-xsigate-xsp"], "xsp1");
        }
    }
}
