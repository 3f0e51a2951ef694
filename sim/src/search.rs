//! Directory searches (`…/directories/Enterprise` and `…/directories/Group`) with BroadWorks'
//! search-criteria syntax: `john*` starts with, `*john*` contains, `*john` ends with, no `*`
//! equals; a trailing `/i` ignores case; a literal `/` is written `\/` and a bare one is an
//! error. Criteria combine with AND unless `searchCriteriaModeOr=true`. Paging is `start`
//! (1-based) and `results` (1..=1000).

use crate::directory::User;

/// Results per page when the request does not say, and the most a page may hold.
pub const DEFAULT_RESULTS: usize = 100;
pub const MAX_RESULTS: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SearchError {
    #[error("[Error 4000] `{0}`: an unescaped `/` is only allowed as the trailing `/i`")]
    Slash(String),
    #[error("[Error 4000] `{0}` must be a whole number")]
    NotANumber(&'static str),
    #[error("[Error 4000] `start` must be 1 or more")]
    StartZero,
    #[error("[Error 4000] `results` must be between 1 and 1000")]
    ResultsRange,
    #[error("[Error 4000] `sortColumn` must be lastName, firstName or department")]
    SortColumn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Equals,
    StartsWith,
    EndsWith,
    Contains,
}

/// One search value, e.g. `smi*/i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    mode: Mode,
    ignore_case: bool,
}

impl Pattern {
    pub fn parse(raw: &str) -> Result<Self, SearchError> {
        let (body, ignore_case) = match raw.strip_suffix("/i") {
            Some(body) if !body.ends_with('\\') => (body, true),
            _ => (raw, false),
        };
        let mut text = String::with_capacity(body.len());
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'/') => {
                    text.push('/');
                    chars.next();
                }
                '/' => return Err(SearchError::Slash(raw.to_owned())),
                c => text.push(c),
            }
        }
        let leading = text.starts_with('*');
        let trailing = text.len() > usize::from(leading) && text.ends_with('*');
        let mode = match (leading, trailing) {
            (true, true) => Mode::Contains,
            (true, false) => Mode::EndsWith,
            (false, true) => Mode::StartsWith,
            (false, false) => Mode::Equals,
        };
        let text = text.trim_matches('*').to_owned();
        let text = if ignore_case {
            text.to_lowercase()
        } else {
            text
        };
        Ok(Self {
            text,
            mode,
            ignore_case,
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        let lowered;
        let value = if self.ignore_case {
            lowered = value.to_lowercase();
            lowered.as_str()
        } else {
            value
        };
        match self.mode {
            Mode::Equals => value == self.text,
            Mode::StartsWith => value.starts_with(&self.text),
            Mode::EndsWith => value.ends_with(&self.text),
            Mode::Contains => value.contains(&self.text),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    UserId,
    FirstName,
    LastName,
    Name,
    GroupId,
    Number,
    Extension,
    EmailAddress,
    MobileNo,
    Department,
}

impl Field {
    fn from_param(name: &str) -> Option<Self> {
        Some(match name {
            "userId" => Self::UserId,
            "firstName" => Self::FirstName,
            "lastName" => Self::LastName,
            "name" => Self::Name,
            "groupId" => Self::GroupId,
            "number" => Self::Number,
            "extension" => Self::Extension,
            "emailAddress" => Self::EmailAddress,
            "mobileNo" => Self::MobileNo,
            "department" => Self::Department,
            _ => return None,
        })
    }

    fn matches(self, pattern: &Pattern, user: &User) -> bool {
        let field = |value: Option<&str>| value.is_some_and(|v| pattern.matches(v));
        match self {
            Self::UserId => pattern.matches(&user.user_id),
            Self::FirstName => field(user.first_name.as_deref()),
            Self::LastName => field(user.last_name.as_deref()),
            Self::Name => {
                let first = user.first_name.as_deref().unwrap_or_default();
                let last = user.last_name.as_deref().unwrap_or_default();
                [
                    format!("{first} {last}"),
                    format!("{last} {first}"),
                    format!("{last}, {first}"),
                ]
                .iter()
                .any(|n| pattern.matches(n))
            }
            // Group ids take no wildcards: only an exact value matches.
            Self::GroupId => pattern.mode == Mode::Equals && pattern.matches(&user.group),
            Self::Number => field(user.number.as_deref()),
            Self::Extension => field(user.extension.as_deref()),
            Self::EmailAddress => field(user.email.as_deref()),
            Self::MobileNo => field(user.mobile.as_deref()),
            Self::Department => field(user.department.as_deref()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortColumn {
    LastName,
    FirstName,
    Department,
}

/// A parsed directory query.
#[derive(Debug)]
pub struct Query {
    criteria: Vec<(Field, Pattern)>,
    any: bool,
    sort: SortColumn,
    start: usize,
    results: usize,
}

/// One page of matches.
#[derive(Debug)]
pub struct Page<'a> {
    pub start: usize,
    pub total: usize,
    pub users: Vec<&'a User>,
}

impl Query {
    /// Parses the query string's parameters; unknown parameters are ignored and only the first
    /// of a repeated one counts, as BroadWorks does.
    pub fn parse(params: &[(String, String)]) -> Result<Self, SearchError> {
        let first = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let number = |name: &'static str, default: usize| -> Result<usize, SearchError> {
            first(name).map_or(Ok(default), |v| {
                v.parse().map_err(|_| SearchError::NotANumber(name))
            })
        };
        let mut criteria = Vec::new();
        for (name, value) in params {
            if let Some(field) = Field::from_param(name) {
                if !criteria.iter().any(|(f, _)| *f == field) {
                    criteria.push((field, Pattern::parse(value)?));
                }
            }
        }
        let start = number("start", 1)?;
        if start == 0 {
            return Err(SearchError::StartZero);
        }
        let results = number("results", DEFAULT_RESULTS)?;
        if !(1..=MAX_RESULTS).contains(&results) {
            return Err(SearchError::ResultsRange);
        }
        let sort = match first("sortColumn") {
            None | Some("lastName") => SortColumn::LastName,
            Some("firstName") => SortColumn::FirstName,
            Some("department") => SortColumn::Department,
            Some(_) => return Err(SearchError::SortColumn),
        };
        Ok(Self {
            criteria,
            any: first("searchCriteriaModeOr") == Some("true"),
            sort,
            start,
            results,
        })
    }

    pub fn run<'a>(&self, candidates: impl Iterator<Item = &'a User>) -> Page<'a> {
        let mut matches: Vec<&User> = candidates
            .filter(|user| {
                let mut hits = self
                    .criteria
                    .iter()
                    .map(|(field, pattern)| field.matches(pattern, user));
                if self.criteria.is_empty() {
                    true
                } else if self.any {
                    hits.any(|hit| hit)
                } else {
                    hits.all(|hit| hit)
                }
            })
            .collect();
        let key = |user: &User| -> (String, String) {
            let pick = |v: &Option<String>| v.clone().unwrap_or_default().to_lowercase();
            let primary = match self.sort {
                SortColumn::LastName => pick(&user.last_name),
                SortColumn::FirstName => pick(&user.first_name),
                SortColumn::Department => pick(&user.department),
            };
            (primary, user.user_id.to_lowercase())
        };
        matches.sort_by_cached_key(|user| key(user));
        let total = matches.len();
        let users = matches
            .into_iter()
            .skip(self.start - 1)
            .take(self.results)
            .collect();
        Page {
            start: self.start,
            total,
            users,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_the_wildcard_rules() {
        let cases = [
            ("john", "john", true),
            ("john", "johnny", false),
            ("john*", "johnny", true),
            ("*son", "johnson", true),
            ("*hns*", "johnson", true),
            ("*hns*", "JOHNSON", false),
            ("*hns*/i", "JOHNSON", true),
            ("John/i", "JOHN", true),
            ("a\\/b", "a/b", true),
            ("a\\/b/i", "A/B", true),
            ("*", "anything", true),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(
                Pattern::parse(pattern).unwrap().matches(value),
                expected,
                "{pattern} ~ {value}"
            );
        }
        assert!(matches!(Pattern::parse("a/b"), Err(SearchError::Slash(_))));
    }

    #[test]
    fn paging_parameters_are_checked() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            Query::parse(&params(&[("start", "0")])).unwrap_err(),
            SearchError::StartZero
        );
        assert_eq!(
            Query::parse(&params(&[("results", "1001")])).unwrap_err(),
            SearchError::ResultsRange
        );
        assert_eq!(
            Query::parse(&params(&[("results", "x")])).unwrap_err(),
            SearchError::NotANumber("results")
        );
        assert!(Query::parse(&params(&[("unknown", "x"), ("start", "2")])).is_ok());
    }
}
