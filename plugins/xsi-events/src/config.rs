//! The plugin's `config` table: per provider, the level its channels are kept at, the packages,
//! and the timing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
pub use xsigate_broadworks::bus::Package;
use xsigate_plugin_sdk::Error;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// By provider id; a provider that lists the plugin but has no entry gets the defaults.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderEvents>,
}

/// Where a provider's events come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelLevel {
    /// One channel set per logged-in user, with the user's own credentials.
    #[default]
    User,
    /// One channel set for the whole service provider (enterprise), with the provider's master
    /// credentials: every user's events, logged in or not ("full BLF").
    ServiceProvider,
    /// One channel set for one group, with the master credentials.
    Group,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEvents {
    #[serde(default)]
    pub level: ChannelLevel,
    /// The service provider (or enterprise) id, for `service_provider` and `group` levels.
    #[serde(default)]
    pub service_provider: Option<String>,
    /// The group id, for the `group` level.
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default = "default_packages")]
    pub packages: Vec<Package>,
    /// How often each channel is heartbeated: half the XSP's `eventTimeout` (30 s by default
    /// on the XSPs whose value is published).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
    /// The channel lifetime asked for; channels are refreshed at half of what the XSP grants.
    #[serde(default = "default_expires")]
    pub channel_expires_seconds: u64,
    /// The subscription lifetime asked for; refreshed at half of what the XSP grants.
    #[serde(default = "default_expires")]
    pub subscription_expires_seconds: u64,
    /// Sent as `applicationId` on channels and subscriptions. Each user's channel set has its
    /// own id, so one application id never makes BroadWorks end a set as `DuplicateChannelSet`.
    #[serde(default = "default_application")]
    pub application_id: String,
    /// A channel on which nothing (not even a heartbeat's echo) arrived for this long is taken
    /// as lost and opened again elsewhere. Default: twice the heartbeat interval plus 5 s.
    #[serde(default)]
    pub silence_seconds: Option<u64>,
}

fn default_packages() -> Vec<Package> {
    Package::DEFAULT.to_vec()
}

fn default_heartbeat() -> u64 {
    15
}

fn default_expires() -> u64 {
    7200
}

fn default_application() -> String {
    "xsigate".to_owned()
}

impl Default for ProviderEvents {
    fn default() -> Self {
        Self {
            level: ChannelLevel::default(),
            service_provider: None,
            group: None,
            packages: default_packages(),
            heartbeat_seconds: default_heartbeat(),
            channel_expires_seconds: default_expires(),
            subscription_expires_seconds: default_expires(),
            application_id: default_application(),
            silence_seconds: None,
        }
    }
}

impl ProviderEvents {
    /// Checks what serde cannot; errors name the key under `providers.<id>`.
    pub fn validate(&self, provider: &str) -> Result<(), Error> {
        let key = |name: &str| format!("providers.{provider}.{name}");
        if self.packages.is_empty() {
            return Err(Error::msg(format!(
                "{}: at least one event package",
                key("packages")
            )));
        }
        if self.heartbeat_seconds == 0 || self.heartbeat_seconds > 3600 {
            return Err(Error::msg(format!(
                "{}: 1 to 3600 seconds",
                key("heartbeat_seconds")
            )));
        }
        for (name, value) in [
            ("channel_expires_seconds", self.channel_expires_seconds),
            (
                "subscription_expires_seconds",
                self.subscription_expires_seconds,
            ),
        ] {
            if value < 2 {
                return Err(Error::msg(format!("{}: at least 2 seconds", key(name))));
            }
        }
        if self
            .silence_seconds
            .is_some_and(|s| s <= self.heartbeat_seconds)
        {
            return Err(Error::msg(format!(
                "{}: longer than heartbeat_seconds, or a channel is dropped between heartbeats",
                key("silence_seconds")
            )));
        }
        if self.application_id.is_empty() {
            return Err(Error::msg(format!("{}: not empty", key("application_id"))));
        }
        match (self.level, &self.service_provider, &self.group) {
            (ChannelLevel::User, None, None) | (ChannelLevel::ServiceProvider, Some(_), None) => {
                Ok(())
            }
            (ChannelLevel::Group, Some(_), Some(_)) => Ok(()),
            (ChannelLevel::User, _, _) => Err(Error::msg(format!(
                "{}: service_provider and group are for the service_provider and group levels",
                key("level")
            ))),
            (ChannelLevel::ServiceProvider, _, _) => Err(Error::msg(format!(
                "{}: the service_provider level needs service_provider (and no group)",
                key("level")
            ))),
            (ChannelLevel::Group, _, _) => Err(Error::msg(format!(
                "{}: the group level needs service_provider and group",
                key("level")
            ))),
        }
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_seconds)
    }

    pub fn silence(&self) -> Duration {
        Duration::from_secs(
            self.silence_seconds
                .unwrap_or(self.heartbeat_seconds * 2 + 5),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProviderEvents, String> {
        let events: ProviderEvents =
            xsigate_plugin_sdk::serde_json::from_str(text).map_err(|e| e.to_string())?;
        events.validate("acme").map_err(|e| e.to_string())?;
        Ok(events)
    }

    #[test]
    fn defaults_are_the_products_packages_at_user_level() {
        let events = parse("{}").unwrap();
        assert_eq!(events.level, ChannelLevel::User);
        assert_eq!(events.packages.len(), 9);
        assert_eq!(events.heartbeat(), Duration::from_secs(15));
        assert_eq!(events.silence(), Duration::from_secs(35));
    }

    #[test]
    fn mistakes_name_their_key() {
        let error = parse(r#"{"packages": ["Do Not Disturbb"]}"#).unwrap_err();
        assert!(error.contains("Do Not Disturbb"), "{error}");
        assert!(parse(r#"{"heartbeat": 5}"#).is_err());
        let error = parse(r#"{"level": "group", "service_provider": "sp"}"#).unwrap_err();
        assert!(error.contains("providers.acme.level"), "{error}");
        let error = parse(r#"{"heartbeat_seconds": 10, "silence_seconds": 10}"#).unwrap_err();
        assert!(error.contains("providers.acme.silence_seconds"), "{error}");
        assert!(
            parse(r#"{"level": "service_provider", "service_provider": "acme", "packages": ["Do Not Disturb"]}"#)
                .is_ok()
        );
    }
}
