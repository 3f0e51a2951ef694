//! The names of the headers and the cookie xsigate reads or writes itself. Everything that
//! sends, strips, allows (CORS) or checks one of them uses these constants. Also the one reading
//! of a `Content-Length` value, for requests (the edge) and answers (channel streams) alike.

/// Request id header, set on every request upstream and every response downstream.
pub const REQUEST_ID: &str = "x-request-id";
/// Names the XSP that served a response; sent back by clients to pin a request to that XSP.
pub const XSP_PIN: &str = "x-xsigate-xsp";
/// The header a client echoes its session's CSRF token in.
pub const CSRF_TOKEN: &str = "x-csrf-token";
/// The request header a gateway service or proxied applet receives the identity assertion in.
pub const ASSERTION: &str = "x-xsigate-assertion";
/// [`REQUEST_ID`], [`XSP_PIN`], [`ASSERTION`] and [`CSRF_TOKEN`] as field names made once, for
/// what xsigate inserts or looks up on every request: a name given as text is parsed (and for
/// an insert copied to the heap) each time.
pub const REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);
pub const XSP_PIN_NAME: http::HeaderName = http::HeaderName::from_static(XSP_PIN);
pub const ASSERTION_NAME: http::HeaderName = http::HeaderName::from_static(ASSERTION);
pub const CSRF_TOKEN_NAME: http::HeaderName = http::HeaderName::from_static(CSRF_TOKEN);
/// The cookie that carries the session token.
pub const SESSION_COOKIE: &str = "xsigate_session";
/// The cookie that carries an operator's console session; the console reads no other and the
/// proxy never reads it.
pub const CONSOLE_COOKIE: &str = "xsigate_console";
/// The form field that carries an operator's CSRF token (the JSON API takes [`CSRF_TOKEN`]).
pub const CONSOLE_CSRF_FIELD: &str = "csrf_token";
/// The cookie that names a browser which logged in as a user before (login API only).
pub const DEVICE_COOKIE: &str = "xsigate_device";
/// The cookie that binds a single sign-on to the browser that started it (its callback only).
pub const FLOW_COOKIE: &str = "xsigate_flow";
/// The query parameter a failed single sign-on adds to the provider's `return_url`.
pub const SSO_ERROR: &str = "sso_error";

/// A new request id: 128 random bits in hex, unique enough to find one request in the logs.
pub fn new_request_id() -> String {
    crate::text::hex(&rand::random::<u128>().to_be_bytes())
}

/// A `Content-Length` value: digits only (no sign, no list, no spaces inside), at most 19 of
/// them so that it fits a `u64` (read digit by digit: 19 nines are below `u64::MAX`, and the
/// read is twice as cheap as a UTF-8 check and `str::parse`).
pub fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0, |length, &digit| length * 10 + u64::from(digit - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read as `u64`'s own parser reads the digits, at every length up to the longest taken;
    /// anything but plain digits with spaces around them, or one digit more, is none.
    #[test]
    fn a_content_length_is_its_digits_value() {
        for digits in 1..=19 {
            for lead in b'1'..=b'9' {
                let mut value = vec![lead; 1];
                value.resize(digits, b'9');
                let text = std::str::from_utf8(&value).unwrap();
                assert_eq!(content_length(&value), text.parse().ok(), "{text}");
            }
        }
        assert_eq!(content_length(b" 0042\t"), Some(42));
        assert_eq!(
            content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for refused in [
            &b""[..],
            b" ",
            b"+1",
            b"-1",
            b"1 2",
            b"1,1",
            b"0x1",
            b"1e3",
            b"12345678901234567890",
        ] {
            assert_eq!(content_length(refused), None, "{}", refused.escape_ascii());
        }
    }

    #[test]
    fn request_ids_are_128_random_bits_in_lowercase_hex() {
        let ids: Vec<String> = (0..64).map(|_| new_request_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
        }
        // Every digit position takes more than one value across the ids: no nibble is dropped.
        for position in 0..32 {
            let seen: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[position]).collect();
            assert!(seen.len() > 1, "position {position} is always {seen:?}");
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
