//! Header rules at the boundary: what goes upstream and what must never come back.

use pingora::http::{RequestHeader, ResponseHeader};

use crate::upstream::answer::AnswerHead;
use crate::wire::fields::{self, Field, Put};

/// Response headers through which upstreams commonly reveal their software or host.
const REVEALING: [&str; 6] = [
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "via",
    "x-served-by",
    "x-backend-server",
];

const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// The `X-Forwarded-*` fields, set the way nginx's `$proxy_add_x_forwarded_for` and `$scheme`
/// set them: the client address is appended to any list the client sent.
pub fn forwarded_fields(
    request: &http::HeaderMap,
    client_ip: Option<std::net::IpAddr>,
    tls: bool,
) -> pingora::Result<[Option<Field>; 2]> {
    let forwarded_for = match client_ip {
        Some(ip) => {
            let list = match request.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(existing) if !existing.trim().is_empty() => {
                    format!("{}, {}", existing.trim(), address_text(ip))
                }
                _ => address_text(ip),
            };
            Some((X_FORWARDED_FOR, fields::value(list)?))
        }
        None => None,
    };
    // Static: a `&str` value would be copied to the heap for each request.
    let scheme = http::HeaderValue::from_static(if tls { "https" } else { "http" });
    Ok([forwarded_for, Some((X_FORWARDED_PROTO, scheme))])
}

/// An address as `X-Forwarded-For` lists it, IPv4's spelled out here: its `Display` goes through
/// the formatter's padding, a cost on every proxied request.
fn address_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// Hop-by-hop fields (RFC 9110 section 7.6.1) besides `Connection` and what it names.
const HOP_BY_HOP: [&str; 8] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Fields a client may not have a proxy drop by naming them in `Connection`: they say who the
/// request is for and from.
const UNDROPPABLE: [&str; 4] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// The fields a request's `Connection` names, to be dropped with it; refused when one of them
/// identifies the request, as Pingora's proxy refuses it.
pub fn connection_nominations(request: &RequestHeader) -> pingora::Result<Vec<http::HeaderName>> {
    let named: Vec<http::HeaderName> = request
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
        .filter_map(|token| http::HeaderName::from_bytes(token).ok())
        .collect();
    if named
        .iter()
        .any(|name| UNDROPPABLE.contains(&name.as_str()))
    {
        return pingora::Error::e_explain(
            pingora::ErrorType::InvalidHTTPHeader,
            "Connection names a field that identifies the request",
        );
    }
    Ok(named)
}

/// Room for the fields the hooks add to a request going upstream (`Host`, the request id, the
/// `X-Forwarded-*` pair, credentials, an assertion, a plugin's), so that none of them grows
/// the map that holds the copy.
const ADDED_UPSTREAM: usize = 8;

/// The request a client's head becomes on a connection of xsigate's own: HTTP/1.1, without
/// `Connection`, the fields it named (`named`, from [`connection_nominations`]) and the standard
/// hop-by-hop ones, with room for what the hooks add. Parts until xsigate's own fields are in
/// ([`UpstreamParts::into_head`]).
///
/// The client's map is copied whole (names, values and their hashes, so nothing is hashed
/// again), given its room at once (a copy has none, and each field added would grow it), and
/// the few hop-by-hop fields a request holds, most none, removed from it.
///
/// Its field names go upstream in the case Pingora writes names it holds no case for (the
/// common ones titled, the rest in lower case), as Envoy and HAProxy send every name by default:
/// names are case-insensitive (RFC 9110 section 5.1), and keeping the client's spelling would
/// copy, grow and hash a second map of names for each request.
pub fn upstream_request<'c>(
    client: &'c RequestHeader,
    named: &[http::HeaderName],
) -> pingora::Result<UpstreamParts<'c>> {
    let hop_by_hop = |name: &http::HeaderName| {
        name == http::header::CONNECTION
            || named.contains(name)
            || HOP_BY_HOP.contains(&name.as_str())
            || name.as_str() == "http2-settings"
    };
    let mut headers = client.headers.clone();
    headers
        .try_reserve(ADDED_UPSTREAM)
        .map_err(too_many_fields)?;
    while let Some(name) = first_present(&headers, hop_by_hop) {
        headers.remove(&name);
    }
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = client.method.clone();
    parts.uri = client.uri.clone();
    parts.version = http::Version::HTTP_11;
    parts.headers = headers;
    Ok(UpstreamParts {
        parts,
        client,
        uri_set: false,
    })
}

/// A request going upstream while xsigate's own fields go into it (`upstream_request.rs`):
/// Pingora's head on the proxy's path; on the lane, the parts [`upstream_request`] copied,
/// whose map takes the fields directly. Pingora's methods parse each name again, and a head
/// has no other way to its map than being taken apart and put together (`wire::fields`).
pub trait Outgoing {
    fn fields(&self) -> &http::HeaderMap;
    fn remove(&mut self, name: &http::HeaderName);
    fn set_uri(&mut self, uri: http::Uri);
    /// Puts each of `fields` in place of any field of its name.
    fn put(&mut self, fields: impl IntoIterator<Item = Field>) -> pingora::Result<()>;
}

impl Outgoing for RequestHeader {
    fn fields(&self) -> &http::HeaderMap {
        &self.headers
    }

    fn remove(&mut self, name: &http::HeaderName) {
        self.remove_header(name);
    }

    fn set_uri(&mut self, uri: http::Uri) {
        RequestHeader::set_uri(self, uri);
    }

    fn put(&mut self, fields: impl IntoIterator<Item = Field>) -> pingora::Result<()> {
        fields::put_request(self, Put::Replace, fields)
    }
}

/// The parts of a request going upstream, copied from `client`'s head ([`upstream_request`]).
#[derive(Debug)]
pub struct UpstreamParts<'c> {
    parts: http::request::Parts,
    client: &'c RequestHeader,
    uri_set: bool,
}

impl UpstreamParts<'_> {
    /// The head the parts make. A target the URI does not reproduce byte for byte
    /// (absolute-form, say) goes as the client sent it, unless a hook set another.
    pub fn into_head(self) -> pingora::Result<RequestHeader> {
        let mut request = RequestHeader::from(self.parts);
        if !self.uri_set && request.raw_path() != self.client.raw_path() {
            request.set_raw_path(self.client.raw_path())?;
        }
        Ok(request)
    }
}

impl Outgoing for UpstreamParts<'_> {
    fn fields(&self) -> &http::HeaderMap {
        &self.parts.headers
    }

    fn remove(&mut self, name: &http::HeaderName) {
        self.parts.headers.remove(name);
    }

    fn set_uri(&mut self, uri: http::Uri) {
        self.parts.uri = uri;
        self.uri_set = true;
    }

    fn put(&mut self, fields: impl IntoIterator<Item = Field>) -> pingora::Result<()> {
        fields::put_into(&mut self.parts.headers, Put::Replace, fields)
    }
}

/// Room for the fields xsigate adds to an answer (the pin, the request id, CORS's), so that none
/// of them grows the map that holds it.
pub const ADDED_DOWNSTREAM: usize = 8;

/// A message whose fields would overflow a header map (`http` holds at most 32,768).
fn too_many_fields(_: http::header::MaxSizeReached) -> Box<pingora::Error> {
    pingora::Error::explain(
        pingora::ErrorType::InvalidHTTPHeader,
        "too many header fields",
    )
}

/// An upstream's answer as the lane passes it on: the head xsigate read (parsed with
/// [`ADDED_DOWNSTREAM`] fields of room), moved into Pingora's form without a copy. It has no map
/// of the names' case, so they go out as [`upstream_request`]'s do.
pub fn downstream_response(answer: AnswerHead) -> pingora::Result<Box<ResponseHeader>> {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = answer.status;
    parts.version = answer.version;
    parts.headers = answer.fields;
    let mut response = Box::new(ResponseHeader::from(parts));
    response.set_reason_phrase(answer.reason.as_deref())?;
    Ok(response)
}

/// The first name among `headers` that `picked` picks, for a hygiene rule to remove until
/// there is none. Most messages hold none of the fields a rule removes, and the rest one or two:
/// a pass over the few fields present costs less than looking up, in both of Pingora's maps,
/// every name the rule lists, and leaves nothing to collect.
pub(super) fn first_present(
    headers: &http::HeaderMap,
    picked: impl Fn(&http::HeaderName) -> bool,
) -> Option<http::HeaderName> {
    headers.keys().find(|name| picked(name)).cloned()
}

/// Removes what would reveal the upstream, and turns absolute `Location` / `Content-Location`
/// URLs that point at an upstream into origin-relative ones, so the client stays on xsigate.
pub fn scrub_response(response: &mut ResponseHeader, is_upstream: impl Fn(&url::Url) -> bool) {
    let revealing = |name: &http::HeaderName| REVEALING.contains(&name.as_str());
    while let Some(name) = first_present(&response.headers, revealing) {
        response.remove_header(&name);
    }
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        let Some(value) = response.headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(url) = url::Url::parse(value) else {
            continue;
        };
        if is_upstream(&url) {
            let mut relative = url.path().to_owned();
            if let Some(query) = url.query() {
                relative.push('?');
                relative.push_str(query);
            }
            // A URL's path and query are valid header text, so this insert cannot fail.
            let _ = response.insert_header(name, relative);
        }
    }
    // Copied only in the rare case there is something to rewrite.
    let set_cookies = || response.headers.get_all(http::header::SET_COOKIE).iter();
    if set_cookies().any(|c| has_domain_attribute(c.as_bytes())) {
        let cookies: Vec<_> = set_cookies().cloned().collect();
        response.remove_header(&http::header::SET_COOKIE);
        for cookie in cookies {
            let cleaned = strip_domain_attribute(cookie.to_str().unwrap_or_default());
            let _ = response.append_header(http::header::SET_COOKIE, cleaned);
        }
    }
}

/// Whether an answer is an error, whose body [`error_body_passes`] judges.
pub fn is_error(status: http::StatusCode) -> bool {
    status.as_u16() >= 400
}

/// Whether an XSP's error answer may reach the client as it is: XSI errors are `ErrorInfo`
/// documents (XML, or JSON where asked for). Anything else, an HTML error page of the server in
/// front of BroadWorks say, may name hosts and software, and is replaced.
pub fn error_body_passes(status: http::StatusCode, content_type: Option<&str>) -> bool {
    if !is_error(status) {
        return true;
    }
    let Some(media) = content_type.and_then(|value| value.split(';').next()) else {
        return false;
    };
    let media = media.trim().to_ascii_lowercase();
    matches!(
        media.as_str(),
        "application/xml" | "text/xml" | "application/json"
    ) || media.ends_with("+xml")
        || media.ends_with("+json")
}

fn has_domain_attribute(cookie: &[u8]) -> bool {
    cookie
        .windows(7)
        .any(|w| w.eq_ignore_ascii_case(b"domain="))
}

/// Drops the `Domain` attribute of a `Set-Cookie` value: it would name the upstream's host, and
/// without it the browser scopes the cookie to xsigate's own host.
fn strip_domain_attribute(cookie: &str) -> String {
    cookie
        .split(';')
        .filter(|part| {
            let name = part.trim().split('=').next().unwrap_or_default();
            !name.eq_ignore_ascii_case("domain")
        })
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::answer;
    use crate::wire::fields::{self, Put};

    #[test]
    fn addresses_are_spelled_as_display_spells_them() {
        for octet in 0..=255u8 {
            for ip in [
                std::net::Ipv4Addr::new(octet, 0, 10, 255),
                std::net::Ipv4Addr::new(9, octet, 100, octet),
                std::net::Ipv4Addr::new(255, 99, octet, 1),
            ] {
                let ip = std::net::IpAddr::V4(ip);
                assert_eq!(address_text(ip), ip.to_string());
            }
        }
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(address_text(v6), "2001:db8::1");
    }

    #[test]
    fn only_xsi_error_documents_pass() {
        let error = http::StatusCode::INTERNAL_SERVER_ERROR;
        for passes in [
            Some("application/xml;charset=UTF-8"),
            Some("text/xml"),
            Some("application/json"),
            Some("application/problem+json"),
        ] {
            assert!(error_body_passes(error, passes), "{passes:?}");
        }
        for replaced in [Some("text/html"), Some("text/plain"), None, Some("xml")] {
            assert!(!error_body_passes(error, replaced), "{replaced:?}");
        }
        assert!(error_body_passes(http::StatusCode::OK, Some("text/html")));
    }

    #[test]
    fn hop_by_hop_fields_stay_on_their_hop() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request
            .insert_header("connection", "keep-alive, X-Trace")
            .unwrap();
        request.insert_header("x-trace", "1").unwrap();
        request.insert_header("keep-alive", "timeout=5").unwrap();
        request.insert_header("te", "trailers").unwrap();
        request.insert_header("accept", "application/xml").unwrap();
        let named = connection_nominations(&request).unwrap();
        let upstream = upstream_request(&request, &named)
            .unwrap()
            .into_head()
            .unwrap();
        let left: Vec<_> = upstream.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
        assert_eq!(upstream.version, http::Version::HTTP_11);

        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request
            .insert_header("connection", "close, X-Forwarded-For")
            .unwrap();
        assert!(connection_nominations(&request).is_err());
    }

    #[test]
    fn the_upstream_copy_keeps_the_target_and_has_room() {
        // Not UTF-8: the URI holds a lossy rendering, the wire the client's bytes.
        let target = b"/com.broadsoft.xsi-actions/v2.0/user/\xffa/profile?x=%41";
        let mut client = RequestHeader::build("GET", target, None).unwrap();
        client.insert_header("Accept", "application/xml").unwrap();
        client.insert_header("X-Trace", "1").unwrap();
        let upstream = upstream_request(&client, &[]).unwrap().into_head().unwrap();
        assert_eq!(upstream.raw_path(), target);
        assert!(!upstream.raw_path_is_utf8());
        assert_eq!(upstream.headers["x-trace"], "1");
        assert!(upstream.headers.capacity() >= upstream.headers.len() + ADDED_UPSTREAM);

        let client = RequestHeader::build("GET", b"/a/b?c=%41", None).unwrap();
        let upstream = upstream_request(&client, &[]).unwrap().into_head().unwrap();
        assert_eq!(upstream.raw_path(), b"/a/b?c=%41");
    }

    #[test]
    fn the_passed_on_answer_keeps_its_fields_and_reason_and_has_room() {
        let read = |wire: &[u8]| {
            let mut buf = bytes::BytesMut::from(wire);
            let (head, _) = answer::parse_head(&mut buf, false, ADDED_DOWNSTREAM)
                .unwrap()
                .unwrap();
            downstream_response(head).unwrap()
        };
        let answer = read(
            b"HTTP/1.1 503 Busy Here\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
              X-BroadWorks-Thing: 1\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(answer.status, 503);
        assert_eq!(answer.get_reason_phrase(), Some("Busy Here"));
        let cookies: Vec<_> = answer.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(answer.headers["x-broadworks-thing"], "1");
        assert!(answer.headers.capacity() >= answer.headers.len() + ADDED_DOWNSTREAM);

        let plain = read(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(plain.get_reason_phrase(), Some("OK"));
    }

    #[test]
    fn forwarded_for_appends_like_nginx() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        let fields = forwarded_fields(&request.headers, Some([10, 0, 0, 9].into()), false).unwrap();
        fields::put_request(&mut request, Put::Replace, fields.into_iter().flatten()).unwrap();
        assert_eq!(request.headers["x-forwarded-for"], "10.0.0.9");
        assert_eq!(request.headers["x-forwarded-proto"], "http");
        request.insert_header("x-forwarded-for", "1.2.3.4").unwrap();
        let fields = forwarded_fields(&request.headers, Some([10, 0, 0, 9].into()), true).unwrap();
        fields::put_request(&mut request, Put::Replace, fields.into_iter().flatten()).unwrap();
        assert_eq!(request.headers["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(request.headers["x-forwarded-proto"], "https");
    }

    /// Each scrub happens for its field alone, and the answer's other fields stay.
    #[test]
    fn each_scrub_happens_alone() {
        let upstream = |url: &url::Url| url.host_str() == Some("xsp1.internal");
        let scrubbed = |name: &str, value: &str| {
            let mut response = ResponseHeader::build(200, None).unwrap();
            response.insert_header("content-type", "text/xml").unwrap();
            response.append_header(name.to_owned(), value).unwrap();
            scrub_response(&mut response, upstream);
            assert_eq!(response.headers["content-type"], "text/xml");
            response
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(scrubbed("x-backend-server", "xsp1").is_empty());
        assert_eq!(scrubbed("location", "http://xsp1.internal/a"), ["/a"]);
        assert_eq!(
            scrubbed("content-location", "http://xsp1.internal/b?c"),
            ["/b?c"]
        );
        assert_eq!(scrubbed("set-cookie", "a=1; Domain=xsp1.internal"), ["a=1"]);
        assert_eq!(scrubbed("set-cookie", "a=1; Path=/"), ["a=1; Path=/"]);
    }

    #[test]
    fn scrub_hides_the_upstream() {
        let mut response = ResponseHeader::build(302, None).unwrap();
        response.insert_header("server", "BW HTTP Server").unwrap();
        response.insert_header("x-powered-by", "Tomcat").unwrap();
        response
            .insert_header(
                "location",
                "http://xsp1.internal:8080/com.broadsoft.xsi-actions/v2.0/user/a?x=1",
            )
            .unwrap();
        response
            .insert_header("content-location", "https://elsewhere.example/x")
            .unwrap();
        response
            .append_header(
                "set-cookie",
                "JSESSIONID=1; Path=/com.broadsoft.xsi-actions; Domain=xsp1.internal; HttpOnly",
            )
            .unwrap();
        response.append_header("set-cookie", "other=2").unwrap();
        scrub_response(&mut response, |url| url.host_str() == Some("xsp1.internal"));
        assert!(response.headers.get("server").is_none());
        assert!(response.headers.get("x-powered-by").is_none());
        assert_eq!(
            response.headers["location"],
            "/com.broadsoft.xsi-actions/v2.0/user/a?x=1"
        );
        assert_eq!(
            response.headers["content-location"],
            "https://elsewhere.example/x"
        );
        let cookies: Vec<_> = response
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            cookies,
            [
                "JSESSIONID=1; Path=/com.broadsoft.xsi-actions; HttpOnly",
                "other=2"
            ]
        );
    }
}
