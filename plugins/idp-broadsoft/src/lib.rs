//! BroadSoft login: the user's own credentials, checked by the provider's XSP, at each level.
//!
//! - A user reads their own profile (`GET …/user/<userId>/profile`); a 200 proves the
//!   credentials, and the answer names the canonical userId.
//! - An administrator says at which level and over which scope they log in (`params.level`:
//!   `group`, `service_provider` or `system`, with `params.service_provider` and
//!   `params.group` as the level needs). The XSP is asked a question only an administrator of
//!   that scope may ask, and answers 403 to anyone else (see
//!   [`xsigate_broadworks::check_admin`]).
//!
//! Either way the host pins the session to the XSP that answered and keeps its session cookie.
//! A wrong password, an unknown user and a scope the administrator does not hold all get the
//! same rejection, so a login attempt never tells which part was wrong.

use serde::Deserialize;
use xsigate_broadworks::{AdminScope, check_admin, check_user, is_user_id, rejected};
use xsigate_plugin_sdk::serde_json::Value;
use xsigate_plugin_sdk::{
    Authentication, Error, Host, IdentityProvider, Login, LoginLevel, LoginOption, LoginQuery,
    Manifest, Plugin, QueryMatch,
};

/// The login method this plugin serves.
pub const METHOD: &str = "broadsoft";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What the login page shows for this method.
    #[serde(default = "default_label")]
    label: String,
    /// The levels offered; an administrator level left out is refused.
    #[serde(default = "default_levels")]
    levels: Vec<LoginLevel>,
}

fn default_label() -> String {
    "BroadSoft login".to_owned()
}

fn default_levels() -> Vec<LoginLevel> {
    LoginLevel::ALL.to_vec()
}

#[derive(Debug)]
pub struct BroadsoftIdp {
    host: Host,
    config: Config,
}

impl Plugin for BroadsoftIdp {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        if config.levels.is_empty() {
            return Err(Error::msg("levels: offer at least one level"));
        }
        Ok(Self { host, config })
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            login_methods: vec![METHOD.to_owned()],
            reverse_lookup: false,
            ..Manifest::default()
        }
    }
}

/// The scope an administrator login claims, from its `params`.
fn claimed_scope(
    level: LoginLevel,
    params: &xsigate_plugin_sdk::serde_json::Map<String, Value>,
) -> Option<AdminScope> {
    let text = |name: &str| {
        params
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 80)
            .map(str::to_owned)
    };
    match level {
        LoginLevel::User => None,
        LoginLevel::Group => Some(AdminScope::Group {
            service_provider: text("service_provider")?,
            group: text("group")?,
        }),
        LoginLevel::ServiceProvider => Some(AdminScope::ServiceProvider(text("service_provider")?)),
        LoginLevel::System => Some(AdminScope::System),
    }
}

impl IdentityProvider for BroadsoftIdp {
    async fn login_options(&self, query: LoginQuery) -> Result<Vec<LoginOption>, Error> {
        // Offered for a user id of the provider's domains, from the query alone: no lookup,
        // so nothing about the account.
        let user = query.query.trim();
        if query.matched != QueryMatch::UserDomain || !is_user_id(user) {
            return Ok(Vec::new());
        }
        let levels: Vec<&str> = self.config.levels.iter().map(|l| l.as_str()).collect();
        let mut details = xsigate_plugin_sdk::serde_json::Map::new();
        details.insert("levels".to_owned(), Value::from(levels));
        Ok(vec![LoginOption {
            method: METHOD.to_owned(),
            label: self.config.label.clone(),
            user_id: Some(user.to_owned()),
            details,
        }])
    }

    async fn authenticate(&self, login: Login) -> Result<Authentication, Error> {
        let level = match login.params.get("level") {
            None => LoginLevel::User,
            Some(value) => match value.as_str().and_then(LoginLevel::parse) {
                Some(level) => level,
                None => return Ok(rejected("unknown login level")),
            },
        };
        if !self.config.levels.contains(&level) {
            return Ok(rejected("this login level is not offered"));
        }
        let user = login.user.trim();
        let password = login.password.as_deref().unwrap_or("");
        if level == LoginLevel::User {
            return check_user(self.host, &login.provider, user, password).await;
        }
        let Some(scope) = claimed_scope(level, &login.params) else {
            return Ok(rejected("an administrator login names no scope"));
        };
        check_admin(self.host, &login.provider, user, password, &scope).await
    }
}

xsigate_plugin_sdk::export_plugin!(BroadsoftIdp => IdentityProvider);

#[cfg(test)]
mod tests {
    use super::*;
    use xsigate_plugin_sdk::serde_json::json;

    #[test]
    fn administrators_name_the_scope_their_level_needs() {
        let params = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            claimed_scope(
                LoginLevel::Group,
                &params(json!({"service_provider": "acme", "group": "sales"}))
            ),
            Some(AdminScope::Group {
                service_provider: "acme".to_owned(),
                group: "sales".to_owned()
            })
        );
        assert_eq!(
            claimed_scope(
                LoginLevel::Group,
                &params(json!({"service_provider": "acme"}))
            ),
            None
        );
        assert_eq!(
            claimed_scope(
                LoginLevel::ServiceProvider,
                &params(json!({"service_provider": " "}))
            ),
            None
        );
        assert_eq!(
            claimed_scope(LoginLevel::System, &params(json!({}))),
            Some(AdminScope::System)
        );
    }
}
