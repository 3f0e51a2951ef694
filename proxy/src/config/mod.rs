//! Loading `providers.toml`.
//!
//! The file is parsed once into a spanned document. Deserialization runs over that document
//! through `serde_path_to_error`, so a type error knows its key path; validation reports key
//! paths too; and both are turned into `file:line:column` by looking the path up in the spans.

mod error;
pub mod password;
mod schema;
mod secret;
mod validate;

use std::path::Path;

pub use error::{ConfigError, KeyPath};
pub use password::AdminPasswordHash;
pub use schema::*;
pub use secret::Secret;

/// The configuration shipped in the repository, used when no `-c` is given: a demo provider on
/// the built-in simulator.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../providers.toml");

/// Where a configuration came from, for messages and for resolving relative paths.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The name shown in messages (the path as given, or `<embedded providers.toml>`).
    pub name: String,
    pub text: &'a str,
    /// Relative paths in the file are resolved against this directory.
    pub base_dir: &'a Path,
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: name.clone(),
        source,
    })?;
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut config = load(&Source {
        name,
        text: &text,
        base_dir,
    })?;
    config.file = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    Ok(config)
}

/// The embedded default, with relative paths taken from the working directory.
pub fn load_embedded() -> Result<Config, ConfigError> {
    load(&Source {
        name: "<embedded providers.toml>".to_owned(),
        text: EMBEDDED_DEFAULT,
        base_dir: Path::new("."),
    })
}

/// Parses and validates configuration text.
pub fn load(source: &Source<'_>) -> Result<Config, ConfigError> {
    let document = toml::de::DeTable::parse(source.text).map_err(|e| {
        invalid(
            source,
            e.span().map_or(0, |s| s.start),
            String::new(),
            e.message().to_owned(),
        )
    })?;

    let deserializer = toml::de::Deserializer::from(document.clone());
    let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = key_path_of(e.path());
        let inner = e.inner();
        // serde's span is the most precise; the key path finds the place when it has none.
        let offset = inner
            .span()
            .or_else(|| path.locate(&document))
            .map_or(0, |s| s.start);
        invalid(source, offset, path.to_string(), inner.message().to_owned())
    })?;

    validate::validate(&mut config, source.base_dir).map_err(|p| {
        let offset = p.path.locate(&document).map_or(0, |s| s.start);
        invalid(source, offset, p.path.to_string(), p.message)
    })?;
    for (i, plugin) in config.plugins.iter_mut().enumerate() {
        let offset = KeyPath::root()
            .key("plugins")
            .index(i)
            .locate(&document)
            .map_or(0, |s| s.start);
        let (line, column) = error::line_column(source.text, offset);
        plugin.origin = format!("{}:{line}:{column}", source.name);
    }
    config.checksum = crate::text::hex(
        ring::digest::digest(&ring::digest::SHA256, source.text.as_bytes()).as_ref(),
    );
    config.text = ConfigText(source.text.to_owned());
    Ok(config)
}

fn invalid(source: &Source<'_>, offset: usize, key: String, message: String) -> ConfigError {
    let (line, column) = error::line_column(source.text, offset);
    ConfigError::Invalid {
        file: source.name.clone(),
        line,
        column,
        key,
        message,
    }
}

fn key_path_of(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment;
    path.iter()
        .fold(KeyPath::root(), |acc, segment| match segment {
            Segment::Seq { index } => acc.index(*index),
            Segment::Map { key } | Segment::Enum { variant: key } => acc.key(key),
            Segment::Unknown => acc,
        })
}

#[cfg(test)]
mod tests;
