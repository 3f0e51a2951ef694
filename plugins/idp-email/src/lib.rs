//! E-mail login: the user types the e-mail address on their BroadWorks profile and their
//! BroadWorks password.
//!
//! The address is searched, ignoring case, in the enterprise directories of the configured
//! anchor users with the provider's master credentials; each user found is then logged in
//! with the given password (see [`xsigate_broadworks::directory`]). An address nobody has and
//! a wrong password get the same rejection.

use serde::Deserialize;
use xsigate_broadworks::directory::{Lookup, option};
use xsigate_broadworks::{is_user_id, rejected};
use xsigate_plugin_sdk::{
    Authentication, Error, Host, IdentityProvider, Login, LoginOption, LoginQuery, Manifest, Plugin,
};

/// The login method this plugin serves.
pub const METHOD: &str = "email";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// One user per enterprise whose directory is searched (XSI reads directories only in a
    /// user's context); the master credentials must cover them.
    anchor_users: Vec<String>,
    /// What the login page shows for this method.
    #[serde(default = "default_label")]
    label: String,
}

fn default_label() -> String {
    "E-mail address".to_owned()
}

#[derive(Debug)]
pub struct EmailIdp {
    label: String,
    lookup: Lookup,
}

impl Plugin for EmailIdp {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        Ok(Self {
            label: config.label,
            lookup: Lookup::new(host, config.anchor_users)?,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            login_methods: vec![METHOD.to_owned()],
            reverse_lookup: true,
            ..Manifest::default()
        }
    }
}

/// An e-mail address has the shape of a user id (`local@domain`).
fn is_email(text: &str) -> bool {
    is_user_id(text) && text.rsplit_once('@').is_some_and(|(_, d)| d.contains('.'))
}

impl IdentityProvider for EmailIdp {
    async fn login_options(&self, query: LoginQuery) -> Result<Vec<LoginOption>, Error> {
        Ok(if is_email(query.query.trim()) {
            vec![option(METHOD, &self.label)]
        } else {
            Vec::new()
        })
    }

    async fn authenticate(&self, login: Login) -> Result<Authentication, Error> {
        let address = login.user.trim();
        if !is_email(address) {
            return Ok(rejected("not an e-mail address"));
        }
        let matches = self.lookup.by_email(&login.provider, address).await?;
        self.lookup.log_in(&login, matches).await
    }
}

xsigate_plugin_sdk::export_plugin!(EmailIdp => IdentityProvider);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e_mail_addresses_have_a_dotted_domain() {
        assert!(is_email("Alice.Smith@acme.com"));
        assert!(!is_email("alice@localhost"));
        assert!(!is_email("2025550101"));
        assert!(!is_email("a b@acme.com"));
    }
}
