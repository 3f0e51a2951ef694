//! BroadSoft login: the user's own credentials, checked by the provider's XSP.
//!
//! A user logs in by reading their own profile (`GET …/user/<userId>/profile`) through the host,
//! which picks the XSP and attaches the credentials. A 200 proves the credentials; the answer
//! carries the canonical userId, the XSP that answered (later requests are pinned to it) and
//! the XSP's session cookie. A wrong password and an unknown user get the same rejection, so
//! a login attempt never tells whether an account exists.
//!
//! Administrator levels (group, service provider, system) need a scope check the XSI
//! reference does not define yet; they are refused with an error until it does.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use xsigate_plugin_sdk::serde_json::{Map, Value, json};
use xsigate_plugin_sdk::{
    Authentication, Error, Host, IdentityProvider, Login, LoginOption, LoginQuery, Manifest,
    Plugin, XsiRequest,
};

/// The login method this plugin serves.
pub const METHOD: &str = "broadsoft";
/// The XSI context whose session cookie the login keeps.
const CONTEXT: &str = "xsi-actions";
/// Characters a userId keeps in a path segment; everything else is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'@')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'+');
/// BroadWorks user ids are at most this long.
const USER_ID_MAX: usize = 161;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What the login page shows for this method.
    #[serde(default = "default_label")]
    label: String,
}

fn default_label() -> String {
    "BroadSoft login".to_owned()
}

#[derive(Debug)]
pub struct BroadsoftIdp {
    host: Host,
    config: Config,
}

impl Plugin for BroadsoftIdp {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        Ok(Self { host, config })
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            login_methods: vec![METHOD.to_owned()],
        }
    }
}

/// Whether `text` has the shape of a BroadWorks userId (`user@domain`).
pub fn is_user_id(text: &str) -> bool {
    let Some((user, domain)) = text.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && !domain.is_empty()
        && text.len() <= USER_ID_MAX
        && !text.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/')
}

/// The `<userId>` of a profile document (within `<details>`).
pub fn profile_user_id(xml: &[u8]) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut in_user_id = false;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(e) if e.local_name().as_ref() == "userId" => in_user_id = true,
            Event::Text(t) if in_user_id => {
                let text = t.xml10_content().trim().to_owned();
                return (!text.is_empty()).then_some(text);
            }
            Event::End(_) => in_user_id = false,
            Event::Eof => return None,
            _ => {}
        }
        buf.clear();
    }
}

/// The `name=value` part of the first `Set-Cookie` for `JSESSIONID`.
fn session_cookie(headers: &[(String, String)]) -> Option<String> {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, value)| value.split(';').next())
        .map(str::trim)
        .find(|pair| pair.starts_with("JSESSIONID="))
        .map(str::to_owned)
}

fn rejected() -> Authentication {
    // One reason for every refusal: which part was wrong is not the client's to know.
    Authentication::Rejected {
        reason: "the XSP refused the credentials".to_owned(),
    }
}

impl IdentityProvider for BroadsoftIdp {
    async fn login_options(&self, query: LoginQuery) -> Result<Vec<LoginOption>, Error> {
        // Offered from the shape of the query alone: no lookup, so nothing about the account.
        if !is_user_id(query.query.trim()) {
            return Ok(Vec::new());
        }
        Ok(vec![LoginOption {
            method: METHOD.to_owned(),
            label: self.config.label.clone(),
            user_id: Some(query.query.trim().to_owned()),
        }])
    }

    async fn authenticate(&self, login: Login) -> Result<Authentication, Error> {
        let level = login
            .params
            .get("level")
            .and_then(Value::as_str)
            .unwrap_or("user");
        if level != "user" {
            return Err(Error::msg(format!(
                "BroadSoft login at level `{level}` is not supported yet"
            )));
        }
        let user = login.user.trim();
        let password = login.password.as_deref().unwrap_or("");
        if !is_user_id(user) || password.is_empty() {
            return Ok(rejected());
        }
        let path = format!(
            "/com.broadsoft.xsi-actions/v2.0/user/{}/profile",
            utf8_percent_encode(user, SEGMENT)
        );
        let response = self
            .host
            .xsi(XsiRequest::get(&login.provider, &path).user(user, password))
            .await?;
        match response.status {
            200 => {
                let user_id = profile_user_id(&response.body)
                    .ok_or_else(|| Error::msg("the XSP's profile has no userId"))?;
                let mut cookies = Map::new();
                if let Some(cookie) = session_cookie(&response.headers) {
                    cookies.insert(CONTEXT.to_owned(), Value::from(cookie));
                }
                let attributes = json!({
                    "level": "user",
                    "xsp": response.xsp,
                    "xsp_cookies": cookies,
                });
                Ok(Authentication::Authenticated {
                    user_id,
                    attributes: attributes.as_object().cloned().unwrap_or_default(),
                })
            }
            401 | 403 | 404 => Ok(rejected()),
            status => Err(Error::msg(format!(
                "the XSP answered the login with {status}"
            ))),
        }
    }
}

xsigate_plugin_sdk::export_plugin!(BroadsoftIdp => IdentityProvider);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_have_a_user_a_domain_and_nothing_that_breaks_a_path() {
        assert!(is_user_id("alice@acme.example"));
        assert!(is_user_id("alice+cti@acme.example"));
        for bad in [
            "alice",
            "@acme.example",
            "alice@",
            "al ice@acme.example",
            "a/b@acme.example",
            "2025550101",
        ] {
            assert!(!is_user_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_profile_names_its_user() {
        let xml = br#"<?xml version="1.0" encoding="ISO-8859-1"?><Profile xmlns="http://schema.broadsoft.com/xsi"><details><userId>Alice@Acme.example</userId><firstName>A</firstName></details></Profile>"#;
        assert_eq!(profile_user_id(xml).as_deref(), Some("Alice@Acme.example"));
        assert_eq!(profile_user_id(b"<Profile/>"), None);
        assert_eq!(profile_user_id(b"not xml <<"), None);
    }

    #[test]
    fn the_session_cookie_is_taken_without_its_attributes() {
        let headers = vec![
            ("content-type".to_owned(), "text/xml".to_owned()),
            (
                "set-cookie".to_owned(),
                "JSESSIONID=abc123; Path=/com.broadsoft.xsi-actions; HttpOnly".to_owned(),
            ),
        ];
        assert_eq!(
            session_cookie(&headers).as_deref(),
            Some("JSESSIONID=abc123")
        );
        assert_eq!(session_cookie(&[]), None);
    }
}
