//! XSI requests of a login session: the browser holds only xsigate's session cookie, and this
//! plugin makes each of its XSI requests reach the XSP as the user who logged in, on the XSP's
//! own session, for that user's resources only.
//!
//! - **Request filter:** refuses (403) what the session may not reach, before anything is sent:
//!   another user's resources for a user session, resources outside the scope for an
//!   administrator (see [`authorize`]).
//! - **Upstream-request filter:** puts the session's Basic credentials on the request (the XSP
//!   requires them on every request, even with a session cookie) and the XSP's `JSESSIONID`
//!   for the request's web application, which spares the XSP the password check. A
//!   single-sign-on session has no password: the host puts the provider's master credentials
//!   on its requests instead, at this plugin's word, after the request filter held the
//!   session to its own user's resources (and refused it a change of the BroadWorks password).
//! - **Response filter:** keeps a `JSESSIONID` the XSP sets with the session, moving the
//!   session to the XSP that set it (after a failover). When the XSP challenges a request
//!   that carried a cookie, the cookie is forgotten and the request sent once more on the
//!   credentials alone: a re-authentication the user never sees. The host removes
//!   `Set-Cookie` and the Basic challenge from every session response.
//!
//! Requests without a session (plain XSI clients with their own credentials) pass untouched.
//! The plugin never sees master credentials: the host keeps those, and applies them itself.

pub mod authorize;

use base64::Engine as _;
use serde::Deserialize;
use xsigate_broadworks::session_cookie_of;
use xsigate_plugin_sdk::serde_json::json;
use xsigate_plugin_sdk::{
    Answer, Counter, Decision, Error, Host, Manifest, Plugin, Request, RequestFilter, Response,
    ResponseDecision, ResponseFilter, UpstreamRequestFilter,
};

use crate::authorize::{Refusal, authorize};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

#[derive(Debug)]
pub struct XsiSession {
    refused: Counter,
    reauthentications: Counter,
    cookies: Counter,
}

impl Plugin for XsiSession {
    type Config = Config;

    fn init(host: Host, _config: Config) -> Result<Self, Error> {
        let refused = host.counter(
            "refused_total",
            "Session requests refused before reaching the XSP, by reason (other_user, \
             out_of_scope, unknown_resource, password_change).",
            &["reason"],
        )?;
        let reauthentications = host.counter(
            "reauthentications_total",
            "Requests sent again on the credentials alone after the XSP challenged the \
             session cookie they carried.",
            &[],
        )?;
        let cookies = host.counter(
            "xsp_cookies_kept_total",
            "XSP session cookies kept with login sessions (new or renewed by the XSP).",
            &[],
        )?;
        for refusal in Refusal::ALL {
            refused.inc_by(&[refusal.as_str()], 0.0);
        }
        reauthentications.inc_by(&[], 0.0);
        cookies.inc_by(&[], 0.0);
        Ok(Self {
            refused,
            reauthentications,
            cookies,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            session_credentials: true,
            ..Manifest::default()
        }
    }
}

/// `Basic <base64 of user:password>`, made on each of a session's requests in one buffer: the
/// credentials laid out after the room for their encoding, then encoded into it (base64's
/// `encode_string` goes through a chunked encoder that costs twice as much for a short value).
fn basic_authorization(user: &str, password: &str) -> Result<String, Error> {
    const PREFIX: &[u8] = b"Basic ";
    let plain = user.len() + 1 + password.len();
    let too_long = || Error::msg("the session's credentials are too long to send");
    let encoded = base64::encoded_len(plain, true).ok_or_else(too_long)?;
    let mut value = Vec::with_capacity(PREFIX.len() + encoded + plain);
    value.extend_from_slice(PREFIX);
    value.resize(PREFIX.len() + encoded, 0);
    value.extend_from_slice(user.as_bytes());
    value.push(b':');
    value.extend_from_slice(password.as_bytes());
    let (room, credentials) = value.split_at_mut(PREFIX.len() + encoded);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(credentials, &mut room[PREFIX.len()..])
        .map_err(|_| too_long())?;
    value.truncate(PREFIX.len() + written);
    String::from_utf8(value).map_err(|_| Error::msg("base64 wrote a byte that is not text"))
}

/// Whether the request is an XSI request of a login session: the only ones this plugin acts on.
fn session_xsi(route: &str) -> bool {
    matches!(route, "xsi_actions" | "xsi_events" | "xsi_async")
}

impl RequestFilter for XsiSession {
    async fn request_filter(&self, request: &mut Request) -> Result<Decision, Error> {
        if !session_xsi(request.route()) {
            return Ok(Decision::Continue);
        }
        let Some(session) = request.session() else {
            return Ok(Decision::Continue);
        };
        let refused = authorize(request.path(), &session).and_then(|()| {
            let sets_password =
                xsigate_broadworks::password_change_user(request.method(), request.path())
                    .is_some();
            if sets_password && request.session_on_master() {
                Err(Refusal::PasswordChange)
            } else {
                Ok(())
            }
        });
        match refused {
            Ok(()) => Ok(Decision::Continue),
            Err(refusal) => {
                self.refused.inc(&[refusal.as_str()]);
                let answer = Answer::new(403).json(&json!({
                    "error": {
                        "status": 403,
                        "code": "forbidden",
                        "message": "this session may not reach this resource",
                        "request_id": request.request_id(),
                    }
                }))?;
                Ok(Decision::Answer(answer))
            }
        }
    }
}

impl UpstreamRequestFilter for XsiSession {
    async fn upstream_request_filter(&self, request: &mut Request) -> Result<(), Error> {
        if !session_xsi(request.route()) {
            return Ok(());
        }
        let Some(user) = request.session_user() else {
            return Ok(());
        };
        if let Some(password) = request.session_password() {
            let authorization = basic_authorization(user, password)?;
            request.set_header("authorization", &authorization)?;
        } else if request.session_on_master() {
            // A single sign-on: the request filter held the session to its own user's
            // resources, so the master's wider reach never serves anyone else.
            request.use_master_credentials()?;
        } else {
            return Err(Error::msg("the host showed no session credentials"));
        }
        let cookie = request.xsp_cookie().map(str::to_owned);
        if let Some(cookie) = cookie {
            request.set_header("cookie", &cookie)?;
        }
        Ok(())
    }
}

impl ResponseFilter for XsiSession {
    async fn response_filter(&self, response: &mut Response) -> Result<ResponseDecision, Error> {
        if !session_xsi(response.route()) || response.session_user().is_none() {
            return Ok(ResponseDecision::Forward);
        }
        if let Some(cookie) = session_cookie_of(response.header_values("set-cookie")) {
            response.set_xsp_cookie(Some(&cookie))?;
            if let Some(upstream) = response.upstream().map(str::to_owned) {
                response.set_session_xsp(&upstream)?;
            }
            self.cookies.inc(&[]);
        }
        if response.status() == 401 && response.xsp_cookie().is_some() {
            // The XSP no longer knows its session: once more on the credentials alone. A
            // challenge of that retry carries no cookie, so it is never retried again.
            response.set_xsp_cookie(None)?;
            self.reauthentications.inc(&[]);
            return Ok(ResponseDecision::Retry);
        }
        Ok(ResponseDecision::Forward)
    }
}

xsigate_plugin_sdk::export_plugin!(XsiSession => RequestFilter, UpstreamRequestFilter, ResponseFilter);

#[cfg(test)]
mod tests {
    use super::basic_authorization;

    #[test]
    fn basic_credentials_are_rfc_7617s() {
        // RFC 7617 section 2's example.
        assert_eq!(
            basic_authorization("Aladdin", "open sesame").unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_authorization("a", "").unwrap(), "Basic YTo=");
    }

    /// Every length of credentials leaves its own remainder and padding: each is written as
    /// base64's own `encode` writes it, non-ASCII passwords included.
    #[test]
    fn basic_credentials_of_every_length_are_base64s() {
        use base64::Engine as _;
        for user_len in 0..7 {
            for password_len in 0..7 {
                let user = "u".repeat(user_len);
                let password = "é".repeat(password_len);
                let expected = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                );
                assert_eq!(basic_authorization(&user, &password).unwrap(), expected);
            }
        }
    }
}
