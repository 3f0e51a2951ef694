//! Configuration errors that point at the offending place in the file.

use std::fmt;
use std::io;
use std::ops::Range;

/// A path to a value inside the document, e.g. `providers.acme.xsp[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub fn root() -> Self {
        Self::default()
    }

    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_owned()));
        next
    }

    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// The byte range of the value at this path in a parsed document, or of the deepest
    /// ancestor that exists there (so that a missing key points at its table).
    pub fn locate(&self, root: &toml::Spanned<toml::de::DeTable<'_>>) -> Option<Range<usize>> {
        let mut span = root.span();
        let mut table = Some(root.get_ref());
        let mut value: Option<&toml::de::DeValue<'_>> = None;
        for segment in &self.0 {
            let next = match (segment, table, value) {
                (Segment::Key(key), Some(t), _) => t.get(key.as_str()),
                (Segment::Index(i), _, Some(toml::de::DeValue::Array(items))) => items.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = next.span();
            value = Some(next.get_ref());
            table = next.get_ref().as_table();
        }
        Some(span)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Why a configuration was rejected. Every variant names the file; `Invalid` also names the
/// line, column and key path so an operator can go straight to the mistake.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the configuration: {source}")]
    Read { file: String, source: io::Error },
    #[error("{}", render_invalid(file, *line, *column, key, message))]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        /// Empty for syntax errors, which belong to no key.
        key: String,
        message: String,
    },
}

fn render_invalid(file: &str, line: usize, column: usize, key: &str, message: &str) -> String {
    if key.is_empty() {
        format!("{file}:{line}:{column}: {message}")
    } else {
        format!("{file}:{line}:{column}: {key}: {message}")
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 8), (2, 3));
    }

    #[test]
    fn key_path_renders_like_toml() {
        let path = KeyPath::root()
            .key("providers")
            .key("acme")
            .key("xsp")
            .index(1);
        assert_eq!(path.to_string(), "providers.acme.xsp[1]");
    }
}
