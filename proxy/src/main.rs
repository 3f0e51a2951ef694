//! The `xsigate` binary: parse the command line, load the configuration, serve.

use std::process::ExitCode;

use clap::Parser as _;
use xsigate::cli::{Cli, Command};
use xsigate::config::{self, Config, ConfigError};
use xsigate::metrics::Metrics;
use xsigate::plugin::Plugins;
use xsigate::server::{self, RunOptions};
use xsigate::telemetry::LogFormat;

// mimalloc keeps per-thread free lists, which suits Pingora's many short-lived per-request
// allocations far better than glibc's malloc under contention.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: xsigate::allocator::Allocator = xsigate::allocator::Allocator;

#[expect(clippy::print_stdout, reason = "`check` reports its verdict on stdout")]
fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::HashPassword)) {
        return hash_password();
    }
    let loaded = load(&cli);
    let source = source_name(&cli);
    match cli.command.unwrap_or(Command::Run { upgrade: false }) {
        Command::Check => match checked(loaded) {
            Ok(config) => {
                let xsps: usize = config.providers.values().map(|p| p.xsp.len()).sum();
                println!(
                    "{}: ok ({} providers, {xsps} XSPs, {} listeners, {} plugins)",
                    source,
                    config.providers.len(),
                    config.server.listeners.len(),
                    config.plugins.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Reload => match checked(loaded) {
            Ok(config) => reload(&config),
            Err(e) => {
                eprintln!("{e}");
                eprintln!("xsigate reload: nothing changed");
                ExitCode::FAILURE
            }
        },
        Command::HashPassword => hash_password(),
        Command::Run { upgrade } => {
            let config = match loaded {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let _log_guard = xsigate::telemetry::init(cli.log_format);
            let log_format = match cli.log_format {
                LogFormat::Human => "human",
                LogFormat::Json => "json",
            };
            let options = RunOptions {
                upgrade,
                relaunch_args: vec!["--log-format".into(), log_format.into()],
            };
            match server::run(&config, options) {
                Ok(never) => match never {},
                Err(e) => {
                    tracing::error!(error = %e, "xsigate cannot start");
                    eprintln!("xsigate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A loaded configuration, checked as `xsigate check` checks it: each plugin's init validates
/// its own table; nothing is served.
fn checked(loaded: Result<Config, ConfigError>) -> Result<Config, String> {
    let config = loaded.map_err(|e| e.to_string())?;
    let metrics = Metrics::new().map_err(|e| e.to_string())?;
    Plugins::load(&config, &metrics).map_err(|e| e.to_string())?;
    Ok(config)
}

/// `xsigate reload -c FILE`: what changes, then the hand-over.
#[expect(clippy::print_stdout, reason = "what changes is the command's output")]
fn reload(config: &Config) -> ExitCode {
    let plan = match xsigate::reload::request(config) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("xsigate reload: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", plan.changes);
    if plan.is_current() {
        println!(
            "the running instance (pid {}) runs this file already",
            plan.running.pid
        );
        return ExitCode::SUCCESS;
    }
    match plan.perform() {
        Ok(pid) => {
            println!(
                "reloaded: pid {} handed over to pid {pid}",
                plan.running.pid
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xsigate reload: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `xsigate hash-password`: one line of standard input in, its hash out.
#[expect(clippy::print_stdout, reason = "the hash is the command's output")]
fn hash_password() -> ExitCode {
    use std::io::{BufRead as _, IsTerminal as _, Read as _};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "xsigate hash-password: pipe the password in (a terminal would show it), e.g. \
             `read -rs PW && printf '%s' \"$PW\" | xsigate hash-password`"
        );
        return ExitCode::FAILURE;
    }
    let mut line = String::new();
    // Enough for the longest password and its line end; more is refused as too long.
    let limit = config::password::PASSWORD_MAX as u64 + 3;
    if let Err(e) = stdin.lock().take(limit).read_line(&mut line) {
        eprintln!("xsigate hash-password: reading standard input: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    match config::password::hash(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xsigate hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> Result<Config, ConfigError> {
    match &cli.config {
        Some(path) => config::load_file(path),
        None => config::load_embedded(),
    }
}

fn source_name(cli: &Cli) -> String {
    cli.config.as_ref().map_or_else(
        || "<embedded providers.toml>".to_owned(),
        |p| p.display().to_string(),
    )
}
