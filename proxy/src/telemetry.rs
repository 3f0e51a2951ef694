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

/// The most a library that sees whole messages may log, whatever `XSIGATE_LOG` asks: at debug
/// and trace they print request heads (cookies, `Authorization`, an OAuth callback's `code`)
/// and URLs with their query strings. Each replaces any directive for the same target.
const LIBRARY_CEILINGS: [&str; 12] = [
    "pingora=error",
    "pingora_core=error",
    "pingora_proxy=error",
    "pingora_pool=error",
    "pingora_http=error",
    "hyper=warn",
    "hyper_util=warn",
    "reqwest=warn",
    "h2=warn",
    "rustls=warn",
    "sqlx=warn",
    "lettre=warn",
];

/// Installs the global subscriber. Keep the returned guard alive: dropping it flushes and stops
/// the writer thread.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let mut filter =
        EnvFilter::try_from_env("XSIGATE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    for ceiling in LIBRARY_CEILINGS {
        if let Ok(directive) = ceiling.parse() {
            filter = filter.add_directive(directive);
        }
    }
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
