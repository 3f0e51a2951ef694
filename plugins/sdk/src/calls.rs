//! The JSON of every host call ([`crate::abi::HostApi::call`]): the `meta` object a plugin sends
//! with each operation, and the `meta` object the host answers with. Bodies travel beside it
//! as raw bytes.
//!
//! The host decodes and encodes with these same types, so neither side can change a field
//! without the other seeing it at compile time. Request metas refuse unknown fields: a plugin
//! built against a newer SDK fails loudly on an older host instead of losing what it asked for.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `op::HTTP`: an HTTP request with the host's client. Body: the request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMeta {
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The answer to `op::HTTP`. Body: the response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpHead {
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// `op::XSI` and `op::XSI_STREAM`: a request to one of a provider's XSPs. Body: the request
/// body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XsiMeta {
    pub provider: String,
    pub method: String,
    /// The XSI path and query.
    pub path: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub credentials: XsiCredentials,
    /// Only this XSP (`xsp1`, …), without failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xsp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Whose credentials the host attaches to an XSI request.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum XsiCredentials {
    /// None: for requests the XSP answers without (or with a session cookie in the headers).
    #[default]
    None,
    /// A user's own credentials, as they logged in with.
    User { user: String, password: String },
    /// The provider's master (administrator) credentials from `providers.toml`.
    Master,
}

impl fmt::Debug for XsiCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::User { user, .. } => write!(f, "User({user}, <redacted>)"),
            Self::Master => f.write_str("Master"),
        }
    }
}

/// The answer to `op::XSI` (body: the response body) and `op::XSI_STREAM` (body: a non-2xx
/// answer's whole body; a 2xx answer's body stays open as `stream`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct XsiHead {
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The XSP that answered.
    pub xsp: String,
    /// The handle of the open stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<u64>,
}

/// `op::STREAM_READ` and `op::STREAM_CLOSE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMeta {
    pub stream: u64,
    /// How long a read may wait for data (ignored by close).
    #[serde(default)]
    pub wait_ms: u64,
}

/// The answer to `op::STREAM_READ`. Body: what arrived (empty: nothing within the wait).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamReadHead {
    /// The stream ended; the host closed it.
    pub end: bool,
}

/// `op::STORE_GET`, `op::STORE_PUT` (body: the value) and `op::STORE_DELETE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMeta {
    pub key: String,
    /// For a put: the value disappears after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// `op::STORE_KEYS`. The answer's body is a JSON array of the keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixMeta {
    pub prefix: String,
}

/// `op::UNIQUE_ID`. The answer's body is the uniqueId as text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserIdMeta {
    pub user_id: String,
}

/// `op::UNIQUE_IDS`. The answer's body is a JSON array of the uniqueIds, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserIdsMeta {
    pub user_ids: Vec<String>,
}

/// `op::USER_ID`. The answer's body is the userId as text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniqueIdMeta {
    pub unique_id: String,
}

/// `op::SEAL` and `op::OPEN`. Body: the plaintext or the sealed bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealMeta {
    /// Bound to the sealed bytes: opening needs the same context.
    pub context: String,
}

/// `op::PUBLISH`. Body: the event's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishMeta {
    pub topic: String,
}

/// The answer to `op::PUBLISH`: what the event reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Subscribers whose queue took the event.
    pub delivered: u32,
    /// Subscribers whose queue was full; the event was dropped for them (and counted).
    pub dropped: u32,
}

/// `op::SLEEP`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepMeta {
    pub ms: u64,
}

/// `op::LEASE_ACQUIRE`, `op::LEASE_RELEASE`, `op::LEASE_FINISH`, `op::LEASE_END` and
/// `op::LEASE_LOST`: one of the plugin's leases, by the name of the work it guards.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseMeta {
    pub name: String,
    /// For an acquire: the work was found unowned (not asked of this instance), so the host
    /// grants it only while this instance holds less than its share.
    #[serde(default)]
    pub claim: bool,
}

/// The answer to `op::LEASE_ACQUIRE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// False: another instance holds it, or this one holds its share.
    pub granted: bool,
    /// The lease's work was asked to end before its last holder could: the taker ends it.
    pub ended: bool,
}

/// Why a lease stopped being this instance's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseLost {
    /// Another instance holds it: stop the work here without undoing it.
    Taken,
    /// Its work was asked to end: end it, then finish the lease.
    Ended,
    /// Handed over (a graceful stop, or evening out the instances' shares): stop the work here
    /// without undoing it; another instance resumes it.
    HandedOver,
}

/// The answer to `op::LEASE_LOST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseLoss {
    pub reason: LeaseLost,
}

/// `op::LEASE_CLAIMABLE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimableMeta {
    pub prefix: String,
    pub limit: u32,
}

/// One lease in the answer to `op::LEASE_CLAIMABLE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimable {
    pub name: String,
    /// Its work was asked to end: whoever takes it ends it.
    pub ended: bool,
}

/// The answer of an operation that reports nothing beyond success.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Done {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_metas_refuse_fields_they_do_not_know() {
        let error = serde_json::from_str::<KeyMeta>(r#"{"key":"a","ttl":5}"#).unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
    }

    #[test]
    fn absent_options_are_left_out_and_read_back_as_none() {
        let meta = XsiMeta {
            provider: "acme".to_owned(),
            method: "GET".to_owned(),
            path: "/com.broadsoft.xsi-actions/v2.0/versions".to_owned(),
            headers: Vec::new(),
            credentials: XsiCredentials::Master,
            xsp: None,
            timeout_ms: None,
        };
        let text = serde_json::to_string(&meta).unwrap();
        assert!(
            !text.contains("xsp") && !text.contains("timeout_ms"),
            "{text}"
        );
        assert!(
            text.contains(r#""credentials":{"kind":"master"}"#),
            "{text}"
        );
        let back: XsiMeta = serde_json::from_str(&text).unwrap();
        assert_eq!(back.credentials, XsiCredentials::Master);
        assert_eq!(back.xsp, None);
    }

    #[test]
    fn user_credentials_never_format_their_password() {
        let credentials = XsiCredentials::User {
            user: "alice@acme.example".to_owned(),
            password: "secret-pw".to_owned(),
        };
        assert!(!format!("{credentials:?}").contains("secret-pw"));
    }
}
