//! Logging: human-readable on a terminal, JSON lines for collectors.
//!
//! Log lines are written by a background thread so that a slow terminal or pipe never stalls a
//! proxy worker. No line carries a credential, cookie, `Authorization` value or query string:
//! the proxy logs paths, names and error kinds only.

use std::io::IsTerminal as _;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Pingora's own log lines can name peer addresses; xsigate logs proxy failures itself, by
/// upstream name, so Pingora is kept to errors.
const DEFAULT_FILTER: &str = "info,pingora=error,pingora_core=error,pingora_proxy=error";

/// Installs the global subscriber. Keep the returned guard alive: dropping it flushes and stops
/// the writer thread.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter =
        EnvFilter::try_from_env("XSIGATE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("xsigate: logging was already initialised: {e}");
    }
    guard
}
