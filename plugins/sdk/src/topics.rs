//! The topics of the host's event bus and the payloads of those the host publishes. A
//! publisher serializes and a consumer deserializes these same types.
//!
//! Events name users by their opaque uniqueId. Only plugins whose manifest declares
//! `session_credentials` receive a [`SessionStarted`] with the user's credentials, which they
//! need to act for the user elsewhere (an event channel, a recording service).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::LoginLevel;

/// A user logged in: [`SessionStarted`]. The login answer carries the consumers' reports on
/// it under `reports.<plugin>`.
pub const SESSION_STARTED: &str = "session.started";
/// One of a user's sessions ended: [`SessionEnded`].
pub const SESSION_ENDED: &str = "session.ended";
/// A user's live state changed on BroadWorks, published by the `xsi-events` plugin; its
/// payload is `xsigate_broadworks::bus::XsiEvent`.
pub const XSI_EVENT: &str = "xsi.event";
/// The operator console asks what a plugin keeps: no payload; a consumer reports a
/// [`StatusReport`].
pub const OPERATOR_STATUS: &str = "operator.status";
/// An operator acts on one user's live state: [`OperatorAction`]; a consumer that can act
/// reports an [`ActionReport`], the others report nothing.
pub const OPERATOR_ACTION: &str = "operator.action";

/// The payload of [`SESSION_STARTED`]. Its `Debug` shows no password: [`UserCredentials`]'
/// own leaves it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStarted {
    pub unique_id: String,
    pub provider: String,
    pub level: LoginLevel,
    /// Present for consumers that declare `session_credentials`, absent for the others.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<UserCredentials>,
}

/// A user's BroadWorks userId and the password they logged in with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCredentials {
    pub user_id: String,
    /// `None` for a single sign-on: the user typed no BroadWorks password, and requests for
    /// them go with the provider's master credentials (`XsiRequest::master`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCredentials")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// The payload of [`SESSION_ENDED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnded {
    pub unique_id: String,
    pub provider: String,
    pub reason: SessionEndReason,
    /// No other session of the user is live: event channels and screen recording for them
    /// should stop.
    pub last: bool,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    Logout,
    Expired,
    /// The password changed (a reset): the sessions held the old one.
    PasswordChanged,
    /// An operator ended the user's sessions from the console.
    Operator,
}

/// A plugin's answer to [`OPERATOR_STATUS`], per service provider. Counts are what the plugin
/// keeps right now (`open`, `connecting`, `queued`, …); `failing` names what needs an
/// operator's eye. Only user ids and reasons: never a credential or an upstream address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub providers: std::collections::BTreeMap<String, ProviderStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStatus {
    pub counts: std::collections::BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<Failing>,
}

/// One thing of a user's that does not work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failing {
    /// The BroadWorks user id, or `*` for something of the whole provider.
    pub user: String,
    pub reason: String,
    /// Since when, in milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// The payload of [`OPERATOR_ACTION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAction {
    pub action: UserAction,
    pub provider: String,
    pub unique_id: String,
    pub user_id: String,
}

/// What an operator can do to one user's live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAction {
    /// Close the user's channel set and open a new one, then read their state again.
    ReopenChannelSet,
    /// Read the user's state again and publish it, leaving channels as they are.
    Resync,
}

impl UserAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReopenChannelSet => "reopen_channel_set",
            Self::Resync => "resync",
        }
    }
}

/// What a plugin did about an [`OperatorAction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    pub outcome: ActionOutcome,
    /// For the operator: what was done, or why not.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    Done,
    /// The plugin keeps nothing of this user's to act on.
    NotFound,
    Failed,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn credentials_ride_at_the_top_level_and_only_when_given() {
        let mut started = SessionStarted {
            unique_id: "u1".to_owned(),
            provider: "acme".to_owned(),
            level: LoginLevel::User,
            credentials: None,
        };
        let plain = serde_json::to_value(&started).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"unique_id": "u1", "provider": "acme", "level": "user"})
        );
        started.credentials = Some(UserCredentials {
            user_id: "alice@acme.example".to_owned(),
            password: Some("secret-pw".to_owned()),
        });
        let with = serde_json::to_value(&started).unwrap();
        assert_eq!(with["user_id"], "alice@acme.example");
        assert_eq!(with["password"], "secret-pw");
        let back: SessionStarted = serde_json::from_value(with).unwrap();
        assert_eq!(back, started);
        assert!(!format!("{back:?}").contains("secret-pw"));
        let read: SessionStarted = serde_json::from_value(plain).unwrap();
        assert_eq!(read.credentials, None);
        started.credentials = Some(UserCredentials {
            user_id: "alice@acme.example".to_owned(),
            password: None,
        });
        let single_sign_on = serde_json::to_value(&started).unwrap();
        assert_eq!(single_sign_on.get("password"), None);
        let back: SessionStarted = serde_json::from_value(single_sign_on).unwrap();
        assert_eq!(back, started);
    }

    #[test]
    fn end_reasons_are_snake_case() {
        let ended = SessionEnded {
            unique_id: "u1".to_owned(),
            provider: "acme".to_owned(),
            reason: SessionEndReason::PasswordChanged,
            last: true,
        };
        assert_eq!(
            serde_json::to_value(&ended).unwrap()["reason"],
            "password_changed"
        );
    }
}
