//! `xsi-sim`: run the simulator from a seed file, or with generated users.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use xsi_sim::Simulator;
use xsi_sim::seed::Seed;

#[derive(Debug, Parser)]
#[command(name = "xsi-sim", version, about = "A BroadWorks XSI simulator")]
struct Cli {
    /// Seed file (TOML): XSP and control addresses, users, administrators.
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,
    /// Generate this many users (user00000@<domain>, password00000, …) instead of a seed's.
    #[arg(long, value_name = "N")]
    generate_users: Option<usize>,
    /// Groups the generated users are spread over.
    #[arg(long, default_value_t = 10)]
    generate_groups: usize,
    /// Domain of generated users.
    #[arg(long, default_value = "sim.xsigate.test")]
    generate_domain: String,
    /// XSP listen address; repeat for several XSPs. Overrides the seed's.
    #[arg(long = "xsp", value_name = "ADDR")]
    xsp: Vec<std::net::SocketAddr>,
    /// Control API listen address. Overrides the seed's.
    #[arg(long, value_name = "ADDR")]
    control: Option<std::net::SocketAddr>,
    /// Also serve a Firebase Realtime Database REST and token-endpoint stand-in here.
    #[arg(long, value_name = "ADDR", requires = "firebase_service_account")]
    firebase: Option<std::net::SocketAddr>,
    /// The service account (JSON key file) whose assertions the stand-in's token endpoint
    /// accepts.
    #[arg(long, value_name = "FILE")]
    firebase_service_account: Option<PathBuf>,
    /// Serve the XSPs over HTTPS with a fresh self-signed certificate (localhost, 127.0.0.1),
    /// whose PEM is written to this file.
    #[arg(long, value_name = "CERT_OUT")]
    tls_self_signed: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut seed = match &cli.seed {
        Some(path) => match Seed::from_file(path) {
            Ok(seed) => seed,
            Err(e) => {
                eprintln!("xsi-sim: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Seed::generated(0, 1, &cli.generate_domain),
    };
    if let Some(users) = cli.generate_users {
        seed.users = Seed::generated(users, cli.generate_groups, &cli.generate_domain).users;
    }
    if !cli.xsp.is_empty() {
        seed.xsp = cli.xsp.clone();
    }
    if cli.control.is_some() {
        seed.control = cli.control;
    }
    if let Some(cert_out) = cli.tls_self_signed {
        seed.tls = Some(xsi_sim::seed::TlsSeed::SelfSigned {
            self_signed_cert_out: cert_out,
        });
    }
    let users = seed.users.len();
    let directories = match seed.directories.as_ref() {
        Some(wanted) => match wanted.settings(&seed.users) {
            Ok(settings) => Some((wanted.address, settings)),
            Err(e) => {
                eprintln!("xsi-sim: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let srs = seed
        .srs
        .as_ref()
        .map(|srs| (srs.address, srs.settings(&seed.users)));
    let simulator = match Simulator::start(seed).await {
        Ok(simulator) => simulator,
        Err(e) => {
            eprintln!("xsi-sim: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(xsps = ?simulator.xsp_addrs(), control = %simulator.control_addr(), users, "xsi-sim serving");
    let _firebase = match (cli.firebase, &cli.firebase_service_account) {
        (Some(addr), Some(path)) => {
            let settings = std::fs::read_to_string(path).map(|service_account| {
                xsi_sim::firebase::FirebaseSettings {
                    service_account,
                    secret: None,
                    token_lifetime: std::time::Duration::from_secs(3600),
                }
            });
            let started = match settings {
                Ok(settings) => xsi_sim::firebase::Firebase::start(settings, addr).await,
                Err(e) => Err(e),
            };
            match started {
                Ok(firebase) => {
                    tracing::info!(url = %firebase.url(), "firebase stand-in serving");
                    Some(firebase)
                }
                Err(e) => {
                    eprintln!("xsi-sim: cannot start the firebase stand-in: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let _srs = match srs {
        Some((addr, settings)) => match xsi_sim::srs::Srs::start(settings, addr).await {
            Ok(srs) => {
                tracing::info!(url = %srs.url(), "screen-recording stand-in serving");
                Some(srs)
            }
            Err(e) => {
                eprintln!("xsi-sim: cannot start the screen-recording stand-in on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let _directories = match &directories {
        Some((addr, settings)) => {
            match xsi_sim::directories::Directories::start(settings.clone(), *addr).await {
                Ok(directories) => {
                    tracing::info!(url = %directories.url(), "company directories serving");
                    Some(directories)
                }
                Err(e) => {
                    eprintln!("xsi-sim: cannot start the company directories on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
