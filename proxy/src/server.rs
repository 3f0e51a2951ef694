//! Assembling the Pingora server from a validated configuration.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{DEFAULT_L4_WRITE_BUFFER_SIZE, L4BufferSettings, ListenerConfig};
use pingora::server::Server;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::access::mail::{MailError, Mailer};
use crate::access::{AccessError, LoginApi, ResetChannel, SessionPolicy, Sessions, Signer};
use crate::audit::Audit;
use crate::cluster::{HandoverService, Leases};
use crate::config::Config;
use crate::config::{StoreConfig, StoreTls};
use crate::edge::Edge;
use crate::edge::addresses::Addresses;
use crate::http::lean::LeanLane;
use crate::http::local::LocalEndpoints;
use crate::http::{ProxyApp, ProxySettings};
use crate::metrics::{Metrics, MetricsError};
use crate::operator::{Console, ConsoleParts};
use crate::plugin::{Plugins, PluginsError};
use crate::reload::{ReloadService, Running};
use crate::state::seal::SealError;
use crate::state::store::{PostgresSettings, PostgresTls};
use crate::state::{Shared, StateError, StateSettings};
use crate::upstream::probe::HealthService;
use crate::upstream::{Providers, UpstreamError};
use pingora::connectors::{ConnectorOptions, TransportConnector};

/// The largest TLS record: the read buffer of a TLS client connection.
const TLS_RECORD: usize = 16 * 1024;

/// Why the gateway could not start. Each names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create secret_file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read or create the instance file {path}: {source}")]
    InstanceFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Plugins(#[from] PluginsError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("provider `{provider}`: {source}")]
    Mail { provider: String, source: MailError },
    #[error("TLS listener {address}: {reason}")]
    Tls { address: String, reason: String },
    #[error("cannot start the server: {0}")]
    Server(String),
}

/// Options from the command line that shape the process rather than the gateway.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take over the listeners of a running instance (Pingora graceful upgrade).
    pub upgrade: bool,
    /// What a reload starts the next process with besides `run -c FILE --upgrade`.
    pub relaunch_args: Vec<std::ffi::OsString>,
}

/// The shared store `[server.store]` names, if it names one.
fn postgres_settings(store: &StoreConfig) -> Option<PostgresSettings> {
    Some(PostgresSettings {
        url: store.url.as_ref()?.to_string(),
        password: store.password.as_ref().map(|p| p.expose().to_owned()),
        tls: match store.tls {
            StoreTls::Off => PostgresTls::Off,
            StoreTls::VerifyFull => PostgresTls::VerifyFull {
                ca_file: store.ca_file.clone(),
            },
        },
        max_connections: store.max_connections,
    })
}

/// Starts serving; returns only on a start-up failure.
pub fn run(config: &Config, options: RunOptions) -> Result<std::convert::Infallible, StartupError> {
    // One TLS provider for the whole process: Pingora's connectors and the health checker's
    // client both use the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Requests and plugin hooks are timed on quanta's clock, which calibrates itself on its
    // first read (about a millisecond, at most 200): here rather than in the first request.
    let _ = quanta::Instant::now();

    let data_dir = prepare_data_dir(&config.server.data_dir)?;
    let secret_file = config
        .server
        .secret_file
        .clone()
        .unwrap_or_else(|| data_dir.join("secret"));
    ensure_secret_file(&secret_file)?;

    let metrics = Metrics::new()?;
    let plugins = Arc::new(Plugins::load(config, &metrics)?);
    let providers = Arc::new(Providers::build(config, &metrics)?);
    providers.resolve_all_blocking();
    let shared = Shared::start(&StateSettings {
        data_dir: data_dir.clone(),
        secret_file,
        postgres: postgres_settings(&config.server.store),
    })?;
    let audit = Audit::new(&metrics);
    let leases = Leases::new(
        Arc::clone(&shared.store),
        Duration::from_secs(config.server.store.lease_seconds),
        instance_slot(&data_dir)?,
        &metrics,
    )?;
    // An upgrade's predecessor hands its work over itself; otherwise a previous process that
    // is gone died holding its work.
    let crashed = (!options.upgrade)
        .then(|| ProcessHolder::read(&data_dir))
        .flatten()
        .filter(|previous| !previous.is_running());
    ProcessHolder {
        holder: leases.holder().to_owned(),
        pid: std::process::id(),
    }
    .write(&data_dir)?;
    leases.start(&shared.runtime, crashed.as_ref().map(|c| c.holder.as_str()));
    plugins.start(&shared, &leases, &providers, &audit)?;
    let sessions = Arc::new(Sessions::new(
        &shared,
        SessionPolicy {
            idle: Duration::from_secs(config.server.sessions.idle_seconds),
            absolute: Duration::from_secs(config.server.sessions.lifetime_seconds),
        },
    )?);
    let signer = Arc::new(Signer::new(&shared.sealer)?);
    let login_api = Arc::new(LoginApi::new(
        Arc::clone(&providers),
        Arc::clone(&plugins),
        shared.clone(),
        Arc::clone(&sessions),
        Arc::clone(&signer),
        reset_channels(config)?,
        &metrics,
        &audit,
    )?);
    shared.runtime.spawn(Arc::clone(&login_api).sweep());
    let shared_runtime = shared.runtime.clone();

    let server_conf = ServerConf {
        threads: config.server.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        ),
        work_stealing: false,
        grace_period_seconds: Some(config.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout_seconds),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool_size,
        pid_file: data_dir.join("xsigate.pid").display().to_string(),
        upgrade_sock: data_dir.join("upgrade.sock").display().to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    let settings = ProxySettings {
        access_log: config.server.access_log,
        downstream_read_timeout: Duration::from_secs(
            config.server.timeouts.downstream_read_seconds,
        ),
        stream_idle_timeout: Duration::from_secs(config.server.timeouts.stream_idle_seconds),
        body_bytes: config.server.clients.body_bytes,
    };
    let addresses = Arc::new(Addresses::new(&config.server.clients));
    let console = Console::new(
        config,
        ConsoleParts {
            providers: Arc::clone(&providers),
            plugins: Arc::clone(&plugins),
            sessions: Arc::clone(&sessions),
            login_api: Arc::clone(&login_api),
            shared,
            audit,
        },
    );
    let app = ProxyApp {
        providers: Arc::clone(&providers),
        plugins,
        sessions,
        signer,
        login_api,
        metrics: metrics.clone(),
        settings,
        addresses: Arc::clone(&addresses),
    };
    let connector = TransportConnector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    let lane = LeanLane::new(
        app.clone(),
        connector,
        config.server.upstream_keepalive_pool_size,
    );
    let edge = Edge::new(
        pingora::proxy::http_proxy(&server.configuration, app),
        lane,
        &config.server.clients,
        addresses,
        &metrics,
        config.server.access_log,
    );
    let mut proxy = Service::new("xsigate".to_owned(), edge);
    for listener in &config.server.listeners {
        let address = listener.address.to_string();
        let endpoint = ListenerConfig::tcp(&address);
        let endpoint = match &listener.tls {
            // Pingora's default 64 KiB read buffer per connection is most of what an idle client
            // costs; the edge and Pingora read heads into buffers of their own, so plain
            // connections read straight from the socket.
            None => endpoint.l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)),
            Some(tls) => {
                let tls_error = |reason: String| StartupError::Tls {
                    address: address.clone(),
                    reason,
                };
                let mut settings =
                    TlsSettings::intermediate(&path_str(&tls.cert_file), &path_str(&tls.key_file))
                        .map_err(|e| tls_error(e.to_string()))?;
                if tls.http2 {
                    settings.enable_h2();
                }
                // One TLS record is 16 KiB; reading it whole saves the TLS layer small reads.
                endpoint.tls(settings).l4_buffer(L4BufferSettings::new(
                    TLS_RECORD,
                    DEFAULT_L4_WRITE_BUFFER_SIZE,
                ))
            }
        };
        proxy.add_listener(endpoint);
    }

    let mut local = Service::new(
        "xsigate metrics".to_owned(),
        LocalEndpoints {
            metrics,
            providers: Arc::clone(&providers),
        },
    );
    local.add_tcp(&config.server.metrics.address.to_string());

    let health = background_service("xsigate health", HealthService::new(providers));
    let handover = background_service(
        "xsigate lease handover",
        HandoverService {
            leases,
            runtime: shared_runtime,
        },
    );
    let reload = background_service(
        "xsigate reload",
        ReloadService {
            file: config.file.clone(),
            text: config.text.0.clone(),
            upgrade_socket: data_dir.join("upgrade.sock"),
            args: options.relaunch_args,
        },
    );

    server.add_service(proxy);
    server.add_service(local);
    if let Some(console) = console {
        let mut console = Service::new("xsigate console".to_owned(), console);
        console.add_tcp(&config.server.console.address.to_string());
        server.add_service(console);
    }
    server.add_service(health);
    server.add_service(handover);
    server.add_service(reload);
    if let Some(file) = &config.file {
        let running = Running {
            pid: std::process::id(),
            file: file.clone(),
            checksum: config.checksum.clone(),
        };
        if let Err(e) = running.write(&data_dir, &config.text.0) {
            tracing::warn!(error = %e, "cannot note the running configuration; `xsigate reload` will not find this instance");
        }
    }
    tracing::info!(
        listeners = ?config.server.listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
        metrics = %config.server.metrics.address,
        console = %config.server.console.address,
        operators = config.server.admins.len(),
        providers = config.providers.len(),
        "xsigate starting"
    );
    server.run_forever()
}

/// The mail relay and link page of each provider that offers password reset.
fn reset_channels(config: &Config) -> Result<HashMap<String, ResetChannel>, StartupError> {
    let mut channels = HashMap::new();
    for (id, provider) in &config.providers {
        let (Some(url), Some(smtp)) = (&provider.reset_url, &provider.smtp) else {
            continue;
        };
        let mailer = Mailer::new(smtp).map_err(|source| StartupError::Mail {
            provider: id.clone(),
            source,
        })?;
        channels.insert(
            id.clone(),
            ResetChannel {
                mailer,
                url: url.clone(),
            },
        );
    }
    Ok(channels)
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Creates the data directory and returns it absolute: Pingora needs absolute paths for the pid
/// file and upgrade socket, which live there.
fn prepare_data_dir(path: &Path) -> Result<PathBuf, StartupError> {
    let error = |source| StartupError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(error)?;
    std::fs::canonicalize(path).map_err(error)
}

/// File in `data_dir` naming this instance among those sharing a store.
const INSTANCE_FILE: &str = "instance";

/// This instance's name among those sharing a store: made once and kept in `data_dir`, so that
/// a restart or an upgrade is the same instance (and two instances need two data directories).
fn instance_slot(data_dir: &Path) -> Result<String, StartupError> {
    let path = data_dir.join(INSTANCE_FILE);
    let error = |source| StartupError::InstanceFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(slot) if !slot.trim().is_empty() => return Ok(slot.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let slot = format!("{:032x}", rand::random::<u128>());
    std::fs::write(&path, &slot).map_err(error)?;
    Ok(slot)
}

/// File in `data_dir` naming the process that holds this instance's leases.
const HOLDER_FILE: &str = "holder";

/// The process holding this instance's leases: its holder id and pid.
struct ProcessHolder {
    holder: String,
    pid: u32,
}

impl ProcessHolder {
    fn read(data_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(data_dir.join(HOLDER_FILE)).ok()?;
        let (holder, pid) = text.trim().split_once(' ')?;
        Some(Self {
            holder: holder.to_owned(),
            pid: pid.parse().ok()?,
        })
    }

    fn write(&self, data_dir: &Path) -> Result<(), StartupError> {
        let path = data_dir.join(HOLDER_FILE);
        std::fs::write(&path, format!("{} {}\n", self.holder, self.pid))
            .map_err(|source| StartupError::InstanceFile { path, source })
    }

    /// Whether the process still runs. This process is not its predecessor even with the same
    /// pid (a container's first process is always 1); another process that reused the pid
    /// counts as running, and its leases wait out their TTL as before.
    fn is_running(&self) -> bool {
        self.pid != std::process::id() && Path::new("/proc").join(self.pid.to_string()).exists()
    }
}

/// Creates the server secret (32 random bytes, hex, mode 0600) unless it exists.
fn ensure_secret_file(path: &Path) -> Result<(), StartupError> {
    use std::os::unix::fs::OpenOptionsExt as _;

    let error = |source| StartupError::SecretFile {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        return std::fs::metadata(path).map(|_| ()).map_err(error);
    }
    let secret: [u8; 32] = rand::random();
    let hex = crate::text::hex(&secret);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    file.write_all(hex.as_bytes()).map_err(error)?;
    tracing::info!(path = %path.display(), "created a new server secret");
    Ok(())
}
