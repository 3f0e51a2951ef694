//! The one error type of plugin code, for host calls and hooks alike.

use std::fmt;

/// What went wrong, as far as the host or the plugin can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store has no such key, or the map no such id.
    NotFound,
    /// A host call ran out of time.
    Timeout,
    /// A host call was attempted and failed (connection refused, bad sealed data, ...).
    Failed,
    /// A host call was malformed (bad URL, header, metric name, ...).
    Invalid,
    /// The host does not offer this call, or not at this time (e.g. subscribing after init).
    Unsupported,
    /// The plugin's own logic failed.
    Plugin,
}

/// An error with a message meant for operators: it reaches the host's log, never a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A failure of the plugin's own logic.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Plugin, message.to_string())
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::new(ErrorKind::Invalid, e.to_string())
    }
}
