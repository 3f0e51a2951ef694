//! Who a transparent-mode request claims to be, as far as routing needs to know.
//!
//! Plain XSI clients send their own `Authorization` on every request. xsigate reads only the
//! user id from it, to pick the provider; the password is never decoded into a string, logged or
//! checked here (the XSP checks it).

use std::borrow::Cow;

use base64::DecodeSliceError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Decoded credentials up to this long are decoded without an allocation.
const SHORT_CREDENTIALS: usize = 192;

/// The user id carried by an `Authorization` header: `Basic base64(user:password)` or
/// BroadWorks' `BroadWorksSIP basic="base64(user:password)",sipUser="…"`.
pub fn authorization_user_id(header: &[u8]) -> Option<String> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, params) = header.split_once(' ')?;
    let encoded = if scheme.eq_ignore_ascii_case("basic") {
        params.trim()
    } else if scheme.eq_ignore_ascii_case("broadworkssip") {
        params
            .split(',')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("basic"))?
            .1
            .trim()
            .trim_matches('"')
    } else {
        return None;
    };
    // Decoded on the stack: credentials are short, and each transparent request carries them.
    let mut short = [0u8; SHORT_CREDENTIALS];
    let decoded = match STANDARD.decode_slice(encoded, &mut short) {
        Ok(length) => Cow::Borrowed(short.get(..length)?),
        Err(DecodeSliceError::OutputSliceTooSmall) => Cow::Owned(STANDARD.decode(encoded).ok()?),
        Err(DecodeSliceError::DecodeError(_)) => return None,
    };
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = std::str::from_utf8(decoded.get(..colon)?).ok()?;
    (!user.is_empty()).then(|| user.to_owned())
}

/// The routing domain of a user id: what follows the last `@`, lower-cased. BroadWorks admin ids
/// may carry the domain twice (`admin@acme.example@acme.example`); the last one is the domain.
/// Borrowed when it is lower case already, as nearly every one is: routing asks on each request.
pub fn user_domain(user_id: &str) -> Option<Cow<'_, str>> {
    let (_, domain) = user_id.rsplit_once('@')?;
    if domain.is_empty() {
        return None;
    }
    Some(if domain.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(domain.to_ascii_lowercase())
    } else {
        Cow::Borrowed(domain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[test]
    fn reads_user_of_basic_credentials() {
        assert_eq!(
            authorization_user_id(basic("alice@acme.example:pw").as_bytes()).as_deref(),
            Some("alice@acme.example")
        );
        assert_eq!(
            authorization_user_id(basic("a@b:p:w").as_bytes()).as_deref(),
            Some("a@b")
        );
        assert_eq!(authorization_user_id(b"basic   YTpi").as_deref(), Some("a"));
        // Longer than what is decoded on the stack: decoded all the same.
        let long = format!("carol@acme.example:{}", "p".repeat(SHORT_CREDENTIALS * 2));
        assert_eq!(
            authorization_user_id(basic(&long).as_bytes()).as_deref(),
            Some("carol@acme.example")
        );
        let short = format!("carol@acme.example:{}", "p".repeat(SHORT_CREDENTIALS - 19));
        assert_eq!(
            basic(&short).len(),
            "Basic ".len() + SHORT_CREDENTIALS.div_ceil(3) * 4
        );
        assert_eq!(
            authorization_user_id(basic(&short).as_bytes()).as_deref(),
            Some("carol@acme.example")
        );
    }

    #[test]
    fn reads_user_of_broadworks_sip_credentials() {
        let header = format!(
            "BroadWorksSIP basic=\"{}\",sipUser=\"eHl6\"",
            STANDARD.encode("bob@x.example:sip")
        );
        assert_eq!(
            authorization_user_id(header.as_bytes()).as_deref(),
            Some("bob@x.example")
        );
    }

    #[test]
    fn rejects_what_carries_no_user() {
        for header in ["Bearer abc", "Basic !!!", "Basic", "", "Basic OnB3"] {
            assert_eq!(authorization_user_id(header.as_bytes()), None, "{header}");
        }
    }

    #[test]
    fn domain_is_after_the_last_at() {
        assert_eq!(
            user_domain("admin@Acme.Example@acme.example").as_deref(),
            Some("acme.example")
        );
        assert_eq!(user_domain("5551234"), None);
        assert_eq!(user_domain("x@"), None);
        assert!(matches!(
            user_domain("a@acme.example"),
            Some(Cow::Borrowed("acme.example"))
        ));
    }
}
