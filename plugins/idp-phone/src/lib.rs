//! Phone login: the user types their phone number or extension and their BroadWorks password.
//!
//! Numbers are written differently on different resources (`+19008005006` in a directory,
//! `9008005006` on a profile), so a number is searched by its last digits and then compared
//! digit by digit; an extension must match exactly. The search runs in the enterprise
//! directories of the configured anchor users with the provider's master credentials, and
//! each user found is logged in with the given password (see
//! [`xsigate_broadworks::directory`]). A number nobody has and a wrong password get the same
//! rejection.

use serde::Deserialize;
use xsigate_broadworks::directory::{Lookup, option};
use xsigate_broadworks::rejected;
use xsigate_plugin_sdk::{
    Authentication, Error, Host, IdentityProvider, Login, LoginOption, LoginQuery, Manifest,
    Plugin, phone_number,
};

/// The login method this plugin serves.
pub const METHOD: &str = "phone";
/// Numbers that share this many trailing digits are the same number written with and
/// without country or trunk prefixes; fewer digits are an extension, not a number.
const SIGNIFICANT_DIGITS: usize = 7;
/// A national number: the most trailing digits a search needs.
const NATIONAL_DIGITS: usize = 10;

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
    "Phone number or extension".to_owned()
}

#[derive(Debug)]
pub struct PhoneIdp {
    label: String,
    lookup: Lookup,
}

impl Plugin for PhoneIdp {
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

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// Whether a directory's number is the typed one: the same digits, or one ends with the other
/// and the shorter still has enough digits to be a whole number.
fn same_number(listed: &str, typed: &str) -> bool {
    let (listed, typed) = (digits(listed), digits(typed));
    let (short, long) = if listed.len() <= typed.len() {
        (&listed, &typed)
    } else {
        (&typed, &listed)
    };
    !short.is_empty()
        && (short == long || (short.len() >= SIGNIFICANT_DIGITS && long.ends_with(short.as_str())))
}

impl IdentityProvider for PhoneIdp {
    async fn login_options(&self, query: LoginQuery) -> Result<Vec<LoginOption>, Error> {
        Ok(match phone_number(&query.query) {
            Some(_) => vec![option(METHOD, &self.label)],
            None => Vec::new(),
        })
    }

    async fn authenticate(&self, login: Login) -> Result<Authentication, Error> {
        let Some(number) = phone_number(&login.user) else {
            return Ok(rejected("not a phone number or extension"));
        };
        let typed = digits(&number);
        let mut criteria = vec![("extension", typed.clone())];
        if typed.len() >= SIGNIFICANT_DIGITS {
            let tail = &typed[typed.len().saturating_sub(NATIONAL_DIGITS)..];
            criteria.push(("number", format!("*{tail}")));
        }
        let found = self.lookup.search(&login.provider, &criteria, true).await?;
        let matches = found
            .into_iter()
            .filter(|e| {
                e.extension.as_deref() == Some(typed.as_str())
                    || e.number.as_deref().is_some_and(|n| same_number(n, &typed))
            })
            .collect();
        self.lookup.log_in(&login, matches).await
    }
}

xsigate_plugin_sdk::export_plugin!(PhoneIdp => IdentityProvider);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_with_and_without_prefixes_but_not_by_a_few_digits() {
        assert!(same_number("+12025550101", "2025550101"));
        assert!(same_number("2025550101", "+1 202 555 0101"));
        assert!(same_number("5550101", "2025550101"));
        assert!(!same_number("+12025550101", "0101"));
        assert!(!same_number("+12025550101", "2025550102"));
        assert!(!same_number("", "5550101"));
    }
}
