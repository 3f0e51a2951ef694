//! Command line: `xsigate [run] [-c FILE]`, `xsigate check [-c FILE]`, `xsigate reload -c FILE`,
//! `xsigate hash-password`, `xsigate --version`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "xsigate",
    version,
    about = "A reverse proxy between web dialers and BroadWorks XSI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The configuration file; without it, the embedded default (demo provider) is used.
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Run {
        /// Take over the listeners of the running instance, then let it drain (graceful upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the configuration and exit: 0 when valid, 1 with the first error otherwise.
    Check,
    /// Check the configuration, print what it changes, and have the instance running on it
    /// take it over without dropping traffic (as SIGHUP does); a file that does not check
    /// changes nothing.
    Reload,
    /// Read an operator's password from standard input (one line; piped, never typed on a
    /// terminal, where it would show) and print its argon2id hash for `password_hash`.
    HashPassword,
}
