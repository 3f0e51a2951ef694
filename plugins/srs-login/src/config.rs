//! The plugin's configuration, and the login configuration it builds for SRS from it and the
//! agent's BroadWorks profile.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use xsigate_plugin_sdk::Error;
use xsigate_plugin_sdk::serde_json::{Value, json};

/// The `config` table: one entry per service provider whose users are recorded agents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub providers: BTreeMap<String, ProviderSrs>,
}

/// Where the provider's agents are recorded, and how they log in there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSrs {
    #[serde(default)]
    pub mode: Mode,
    /// The Screen Recording Service's base URL. In `server` mode xsigate calls it; in `browser`
    /// mode it is the address the agent's browser reaches its own SRS at
    /// (`http://127.0.0.1:<port>`).
    pub url: String,
    /// The `Origin` SRS expects from the agent desktop; sent on every call.
    pub origin: String,
    /// Recording Web Services in the primary data centre (`server` in the login configuration).
    pub server: String,
    /// Recording Web Services in the backup data centre (`peer_server`); when SRS cannot reach
    /// the primary, xsigate logs the agent in again with the two swapped.
    pub peer_server: Option<String>,
    /// The switch the agent's devices are on.
    pub switch: String,
    /// The agent's place; `{extension}`, `{number}` and `{user}` (the userId's part before
    /// `@`) are filled in from the profile.
    #[serde(default = "default_place")]
    pub place: String,
    /// Which profile field is the agent's DN.
    #[serde(default)]
    pub dn: DnSource,
    /// The name the agent logs in to SRS with.
    #[serde(default)]
    pub login_name: LoginName,
    /// Ask SRS for CSRF protection (`X-Support-CSRFP: True`) and send its token after.
    #[serde(default = "default_true")]
    pub csrf: bool,
    /// How often a logged-in agent's SRS session is pinged; SRS drops sessions not pinged
    /// for 60 seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_seconds: u64,
    /// Limit on each call to SRS.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// xsigate logs the agent in to an SRS it can reach, keeps the session alive and logs out.
    #[default]
    Server,
    /// The SRS runs on the agent's machine, reachable only by its browser: the login report
    /// gives the browser the configuration and the steps to log in itself.
    Browser,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnSource {
    #[default]
    Extension,
    Number,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginName {
    /// The whole BroadWorks userId (`agent@example.com`).
    #[default]
    UserId,
    /// The part before `@`.
    LocalPart,
}

fn default_place() -> String {
    "{extension}".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_keep_alive() -> u64 {
    30
}

fn default_timeout() -> u64 {
    3000
}

/// SRS ends a session that goes this long without a ping.
const SRS_KEEP_ALIVE_LIMIT: u64 = 60;

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        for (id, srs) in &self.providers {
            let at = |key: &str, message: &str| {
                Error::msg(format!("invalid config: providers.{id}.{key}: {message}"))
            };
            for (key, value) in [
                ("url", &srs.url),
                ("origin", &srs.origin),
                ("server", &srs.server),
            ]
            .into_iter()
            .chain(srs.peer_server.as_ref().map(|p| ("peer_server", p)))
            {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(at(key, "must be an http:// or https:// URL"));
                }
            }
            if srs.switch.trim().is_empty() {
                return Err(at("switch", "must not be empty"));
            }
            if srs.place.trim().is_empty() {
                return Err(at("place", "must not be empty"));
            }
            if !(1..SRS_KEEP_ALIVE_LIMIT).contains(&srs.keep_alive_seconds) {
                return Err(at(
                    "keep_alive_seconds",
                    "must be between 1 and 59: SRS drops a session not pinged for 60 seconds",
                ));
            }
            if srs.timeout_ms == 0 {
                return Err(at("timeout_ms", "must be greater than zero"));
            }
        }
        Ok(())
    }
}

impl ProviderSrs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_seconds)
    }

    /// The name the agent logs in to SRS with.
    pub fn login_name<'a>(&self, user_id: &'a str) -> &'a str {
        match self.login_name {
            LoginName::UserId => user_id,
            LoginName::LocalPart => local_part(user_id),
        }
    }

    /// The login configuration (`POST /api/v2/me`): name/value pairs as SRS documents them.
    /// With `peer_first`, the backup data centre is `server` and the primary `peer_server`.
    pub fn login_configuration(&self, agent: &AgentProfile, peer_first: bool) -> Value {
        let (server, peer) = match (&self.peer_server, peer_first) {
            (Some(peer), true) => (peer.as_str(), Some(self.server.as_str())),
            (peer, _) => (self.server.as_str(), peer.as_deref()),
        };
        let mut pairs = vec![json!({ "name": "server", "value": server })];
        if let Some(peer) = peer {
            pairs.push(json!({ "name": "peer_server", "value": peer }));
        }
        pairs.push(json!({ "name": "place", "value": self.place_of(agent) }));
        let dn = match self.dn {
            DnSource::Extension => agent.extension.as_deref().or(agent.number.as_deref()),
            DnSource::Number => agent.number.as_deref().or(agent.extension.as_deref()),
        };
        if let Some(dn) = dn {
            pairs.push(json!({
                "name": "devices",
                "value": [{ "dn": dn, "switch": self.switch }],
            }));
        }
        Value::Array(pairs)
    }

    fn place_of(&self, agent: &AgentProfile) -> String {
        let place = self
            .place
            .replace("{extension}", agent.extension.as_deref().unwrap_or(""))
            .replace("{number}", agent.number.as_deref().unwrap_or(""))
            .replace("{user}", local_part(&agent.user_id));
        if place.trim().is_empty() {
            // A template naming a field the profile lacks: the user part still names a place.
            local_part(&agent.user_id).to_owned()
        } else {
            place
        }
    }
}

/// What the login configuration needs of the agent's BroadWorks profile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct AgentProfile {
    pub user_id: String,
    pub number: Option<String>,
    pub extension: Option<String>,
}

fn local_part(user_id: &str) -> &str {
    user_id.split_once('@').map_or(user_id, |(user, _)| user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xsigate_plugin_sdk::serde_json;

    fn srs(extra: &str) -> ProviderSrs {
        let text = format!(
            r#"{{"url": "http://127.0.0.1:4999", "origin": "https://dialer.example",
                "server": "https://rws1.example", "switch": "SIP_Switch" {extra}}}"#
        );
        serde_json::from_str(&text).unwrap()
    }

    fn agent() -> AgentProfile {
        AgentProfile {
            user_id: "agent7@acme.example".to_owned(),
            number: Some("2025550107".to_owned()),
            extension: Some("0107".to_owned()),
        }
    }

    #[test]
    fn the_login_configuration_follows_the_documented_pairs() {
        let srs =
            srs(r#", "peer_server": "https://rws2.example", "place": "Place_{user}_{extension}""#);
        assert_eq!(
            srs.login_configuration(&agent(), false),
            json!([
                { "name": "server", "value": "https://rws1.example" },
                { "name": "peer_server", "value": "https://rws2.example" },
                { "name": "place", "value": "Place_agent7_0107" },
                { "name": "devices", "value": [{ "dn": "0107", "switch": "SIP_Switch" }] },
            ])
        );
        assert_eq!(
            srs.login_configuration(&agent(), true)[0],
            json!({ "name": "server", "value": "https://rws2.example" })
        );
        assert_eq!(
            srs.login_configuration(&agent(), true)[1],
            json!({ "name": "peer_server", "value": "https://rws1.example" })
        );
    }

    #[test]
    fn missing_profile_fields_fall_back_and_a_single_data_centre_has_no_peer() {
        let srs = srs(r#", "dn": "number""#);
        let no_extension = AgentProfile {
            extension: None,
            ..agent()
        };
        let pairs = srs.login_configuration(&no_extension, true);
        assert_eq!(pairs[0]["value"], "https://rws1.example");
        assert_eq!(pairs[1], json!({ "name": "place", "value": "agent7" }));
        assert_eq!(pairs[2]["value"][0]["dn"], "2025550107");
        let bare = AgentProfile {
            number: None,
            extension: None,
            ..agent()
        };
        assert_eq!(
            srs.login_configuration(&bare, false)
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(srs.login_name("agent7@acme.example"), "agent7@acme.example");
        let local = self::srs(r#", "login_name": "local_part""#);
        assert_eq!(local.login_name("agent7@acme.example"), "agent7");
    }

    #[test]
    fn bad_settings_are_named_by_their_key() {
        for (extra, message) in [
            (
                r#", "keep_alive_seconds": 60"#,
                "providers.p.keep_alive_seconds: must be between 1 and 59",
            ),
            (
                r#", "keep_alive_seconds": 0"#,
                "providers.p.keep_alive_seconds",
            ),
            (
                r#", "peer_server": "rws2""#,
                "providers.p.peer_server: must be an http",
            ),
            (r#", "timeout_ms": 0"#, "providers.p.timeout_ms"),
            (r#", "place": " ""#, "providers.p.place"),
        ] {
            let config = Config {
                providers: BTreeMap::from([("p".to_owned(), srs(extra))]),
            };
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(message), "{extra}: {error}");
        }
        let mut bad_switch = srs("");
        bad_switch.switch = String::new();
        let config = Config {
            providers: BTreeMap::from([("p".to_owned(), bad_switch)]),
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("providers.p.switch")
        );
        let unknown: Result<ProviderSrs, _> = serde_json::from_str(
            r#"{"url": "http://x", "origin": "http://o", "server": "http://s", "switch": "s", "mode": "desk"}"#,
        );
        assert!(unknown.unwrap_err().to_string().contains("unknown variant"));
    }
}
