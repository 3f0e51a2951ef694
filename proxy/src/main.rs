//! The `xsigate` binary: parse the command line, load the configuration, serve.

use std::process::ExitCode;

use clap::Parser as _;
use xsigate::cli::{Cli, Command};
use xsigate::config::{self, Config, ConfigError};
use xsigate::metrics::Metrics;
use xsigate::plugin::Plugins;
use xsigate::server::{self, RunOptions};

// mimalloc keeps per-thread free lists, which suits Pingora's many short-lived per-request
// allocations far better than glibc's malloc under contention.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[expect(clippy::print_stdout, reason = "`check` reports its verdict on stdout")]
fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::HashPassword)) {
        return hash_password();
    }
    let loaded = load(&cli);
    let source = source_name(&cli);
    match cli.command.unwrap_or(Command::Run { upgrade: false }) {
        Command::Check => match loaded.map_err(|e| e.to_string()).and_then(|config| {
            // Loading runs each plugin's init, which validates its config; nothing is served.
            let metrics = Metrics::new().map_err(|e| e.to_string())?;
            Plugins::load(&config, &metrics).map_err(|e| e.to_string())?;
            Ok(config)
        }) {
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
            match server::run(&config, RunOptions { upgrade }) {
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
