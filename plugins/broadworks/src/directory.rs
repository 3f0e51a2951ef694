//! Reverse lookups: finding the user behind an e-mail address or a phone number.
//!
//! XSI has no directory resource at group or enterprise level: directories are read in the
//! context of a user (`GET …/user/<id>/directories/Enterprise`) [SPEC §3.5.7.7]. A lookup
//! therefore names *anchor users*, one per enterprise to search, and reads each anchor's
//! enterprise directory with the provider's master credentials. Matches are then logged in
//! one by one with the credentials the user gave, and only the accounts those credentials
//! open are ever named to the client.

use xsigate_plugin_sdk::{
    Authentication, Choice, Counter, Error, Host, Login, LoginOption, XsiRequest,
};

use crate::{check_user, encode, is_user_id, rejected, user_path, xml};

/// More matches than this are not tried: each try is a login attempt on the account, and
/// BroadWorks may lock accounts after failures. The user is asked for their user id instead.
pub const MAX_MATCHES: usize = 5;

/// A user found in a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub user_id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub group_id: Option<String>,
    pub number: Option<String>,
    pub extension: Option<String>,
    pub email: Option<String>,
}

impl Entry {
    fn from_fields(fields: Vec<(String, String)>) -> Option<Self> {
        let mut entry = Self::default();
        for (name, value) in fields {
            let slot = match name.as_str() {
                "userId" => {
                    entry.user_id = value;
                    continue;
                }
                "firstName" => &mut entry.first_name,
                "lastName" => &mut entry.last_name,
                "groupId" => &mut entry.group_id,
                "number" => &mut entry.number,
                "extension" => &mut entry.extension,
                "emailAddress" => &mut entry.email,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        is_user_id(&entry.user_id).then_some(entry)
    }

    /// What a choice between accounts shows: the name and the group.
    fn label(&self) -> String {
        let name = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        match (name.is_empty(), self.group_id.as_deref()) {
            (false, Some(group)) => format!("{name} ({group})"),
            (false, None) => name,
            (true, Some(group)) => format!("{} ({group})", self.user_id),
            (true, None) => self.user_id.clone(),
        }
    }
}

/// Checks a lookup plugin's `anchor_users`: at least one, each a user id.
fn check_anchors(anchors: &[String]) -> Result<(), Error> {
    if anchors.is_empty() {
        return Err(Error::msg(
            "anchor_users: name at least one user per enterprise to search the directory of",
        ));
    }
    match anchors.iter().find(|a| !is_user_id(a)) {
        Some(bad) => Err(Error::msg(format!(
            "anchor_users: `{bad}` is not a user id"
        ))),
        None => Ok(()),
    }
}

/// An e-mail address: `local@domain` with a dotted domain and nothing a URL or a directory
/// filter would read specially.
pub fn is_email(text: &str) -> bool {
    text.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.contains('@')
            && text
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '\'' && c != '*')
    })
}

/// A search value matched exactly, ignoring case. BroadWorks reads `*` as a wildcard and a
/// bare `/` as an error, so values with `*` are refused and `/` is escaped [SPEC §3.5.17].
pub fn exact(value: &str) -> Option<String> {
    (!value.contains('*') && !value.contains('\\'))
        .then(|| format!("{}/i", value.replace('/', "\\/")))
}

/// What a lookup plugin holds: its host, the anchor users whose directories it searches, and
/// its `lookups_total`.
#[derive(Debug)]
pub struct Lookup {
    host: Host,
    anchors: Vec<String>,
    metrics: LookupMetrics,
}

impl Lookup {
    /// Checks `anchor_users` and registers the metric; for a plugin's `init`.
    pub fn new(host: Host, anchor_users: Vec<String>) -> Result<Self, Error> {
        check_anchors(&anchor_users)?;
        Ok(Self {
            host,
            anchors: anchor_users,
            metrics: LookupMetrics::register(host)?,
        })
    }

    /// Searches the anchors' directories (see [`search`]); a search that fails is counted.
    pub async fn search(
        &self,
        provider: &str,
        criteria: &[(&str, String)],
        or: bool,
    ) -> Result<Vec<Entry>, Error> {
        search(self.host, provider, &self.anchors, criteria, or)
            .await
            .inspect_err(|_| self.metrics.count("failed"))
    }

    /// The users whose profile carries this e-mail address, ignoring case: the directory's
    /// search matches the address, and each match's own copy must be the same address. An
    /// address a search value cannot hold exactly finds nobody.
    pub async fn by_email(&self, provider: &str, address: &str) -> Result<Vec<Entry>, Error> {
        let Some(value) = exact(address) else {
            return Ok(Vec::new());
        };
        let found = self
            .search(provider, &[("emailAddress", value)], false)
            .await?;
        Ok(found
            .into_iter()
            .filter(|e| {
                e.email
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(address))
            })
            .collect())
    }

    /// The one user an identity the gateway already verified belongs to (single sign-on: an
    /// identity provider proved the address). No match and several matches are refusals that
    /// name no account; nothing is tried with a password.
    pub async fn sole_user_by_email(
        &self,
        provider: &str,
        address: &str,
    ) -> Result<Result<Entry, &'static str>, Error> {
        let mut matches = self.by_email(provider, address).await?;
        self.metrics.count(match_count(matches.len()));
        Ok(match matches.len() {
            0 => Err("no BroadWorks user has the verified address"),
            1 => Ok(matches.remove(0)),
            _ => Err("several BroadWorks users have the verified address"),
        })
    }

    /// Logs in the user behind the matches (see [`log_in_match`]).
    pub async fn log_in(
        &self,
        login: &Login,
        matches: Vec<Entry>,
    ) -> Result<Authentication, Error> {
        log_in_match(self.host, login, matches, self.metrics).await
    }
}

/// Searches every anchor's enterprise directory with master credentials; `criteria` are
/// `(parameter, search value)` pairs. Users found through several anchors are listed once.
async fn search(
    host: Host,
    provider: &str,
    anchors: &[String],
    criteria: &[(&str, String)],
    or: bool,
) -> Result<Vec<Entry>, Error> {
    let mut query: Vec<String> = criteria
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect();
    if or {
        query.push("searchCriteriaModeOr=true".to_owned());
    }
    // One more than we would try, to know when there are too many.
    query.push(format!("results={}", MAX_MATCHES + 1));
    let query = query.join("&");
    let mut found: Vec<Entry> = Vec::new();
    for anchor in anchors {
        let path = format!("{}?{query}", user_path(anchor, "directories/Enterprise"));
        let response = host.xsi(XsiRequest::get(provider, &path).master()).await?;
        if response.status != 200 {
            return Err(Error::msg(format!(
                "the directory of anchor user `{anchor}` answered {}",
                response.status
            )));
        }
        let records = xml::records(&response.body).map_err(|e| Error::msg(e.to_string()))?;
        for entry in records.into_iter().filter_map(Entry::from_fields) {
            if !found
                .iter()
                .any(|f| f.user_id.eq_ignore_ascii_case(&entry.user_id))
            {
                found.push(entry);
            }
        }
    }
    Ok(found)
}

/// The `result` label of a lookup that found `found` users.
fn match_count(found: usize) -> &'static str {
    match found {
        0 => "none",
        1 => "one",
        n if n <= MAX_MATCHES => "several",
        _ => "too_many",
    }
}

/// The `result` label values of `lookups_total`.
const LOOKUP_RESULTS: [&str; 5] = ["none", "one", "several", "too_many", "failed"];

/// `xsigate_plugin_<plugin>_lookups_total{result}` of a lookup plugin: how many users each
/// lookup found. Operators give each provider its own plugin entry (its anchor users are its
/// own), so the plugin name tells the provider.
#[derive(Debug, Clone, Copy)]
struct LookupMetrics {
    lookups: Counter,
}

impl LookupMetrics {
    fn register(host: Host) -> Result<Self, Error> {
        let lookups = host.counter(
            "lookups_total",
            "Directory lookups, by result (none, one, several, too_many, failed).",
            &["result"],
        )?;
        // Every series exists from the start, so that rates and dashboards see them.
        for result in LOOKUP_RESULTS {
            lookups.inc_by(&[result], 0.0);
        }
        Ok(Self { lookups })
    }

    fn count(self, result: &str) {
        self.lookups.inc(&[result]);
    }
}

/// Logs in the user behind a lookup: `matches` are the directory's answer. Every match is
/// tried with the given password; none that accepts is a rejection like a wrong password, one
/// is the login, several are a [`Authentication::Choose`] among exactly those. A login that
/// names `params.user_id` (the user's pick from an earlier choice) tries only that match.
async fn log_in_match(
    host: Host,
    login: &Login,
    matches: Vec<Entry>,
    metrics: LookupMetrics,
) -> Result<Authentication, Error> {
    metrics.count(match_count(matches.len()));
    if matches.len() > MAX_MATCHES {
        return Ok(rejected("the lookup found too many users to try"));
    }
    let picked = login
        .params
        .get("user_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let candidates: Vec<Entry> = match &picked {
        Some(pick) => matches
            .into_iter()
            .filter(|m| m.user_id.eq_ignore_ascii_case(pick))
            .collect(),
        None => matches,
    };
    let password = login.password.as_deref().unwrap_or("");
    let mut opened: Vec<(Entry, Authentication)> = Vec::new();
    for entry in candidates {
        let outcome = check_user(host, &login.provider, &entry.user_id, password).await?;
        if matches!(outcome, Authentication::Authenticated { .. }) {
            opened.push((entry, outcome));
        }
    }
    match opened.len() {
        0 => Ok(rejected(
            "no account found by the lookup accepts the credentials",
        )),
        1 => Ok(opened.remove(0).1),
        _ => Ok(Authentication::Choose {
            choices: opened
                .iter()
                .map(|(entry, _)| Choice {
                    user_id: entry.user_id.clone(),
                    label: entry.label(),
                })
                .collect(),
        }),
    }
}

/// The option a lookup method offers for a query it can search by.
pub fn option(method: &str, label: &str) -> LoginOption {
    LoginOption {
        method: method.to_owned(),
        label: label.to_owned(),
        user_id: None,
        details: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_addresses_are_looked_up() {
        assert!(is_email("alice.smith@acme.com"));
        for not in [
            "alice",
            "a@localhost",
            "o'brien@acme.com",
            "*@acme.com",
            "a b@acme.com",
            "a@b@acme.com",
        ] {
            assert!(!is_email(not), "{not}");
        }
    }

    #[test]
    fn exact_values_ignore_case_escape_slashes_and_refuse_wildcards() {
        assert_eq!(exact("Alice@Acme.com").as_deref(), Some("Alice@Acme.com/i"));
        assert_eq!(exact("a/b@x").as_deref(), Some("a\\/b@x/i"));
        assert_eq!(exact("*@acme.com"), None);
        assert_eq!(exact("a\\@x"), None);
    }

    #[test]
    fn entries_need_a_user_id_and_label_themselves_by_name_and_group() {
        let fields = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let entry = Entry::from_fields(fields(&[
            ("userId", "alice@acme.example"),
            ("firstName", "Alice"),
            ("lastName", "Smith"),
            ("groupId", "sales"),
        ]))
        .unwrap();
        assert_eq!(entry.label(), "Alice Smith (sales)");
        assert_eq!(Entry::from_fields(fields(&[("firstName", "Nobody")])), None);
        let bare = Entry::from_fields(fields(&[("userId", "b@x")])).unwrap();
        assert_eq!(bare.label(), "b@x");
    }
}
