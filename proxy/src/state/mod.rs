//! What the gateway keeps, and the runtime that keeps it off the request path: the store
//! ([`store`]), the server key and what it seals ([`seal`]), opaque tokens ([`token`]) and
//! the session records ([`session`]).
//!
//! Pingora gives each service its own runtime, and the request path must never wait on the
//! store's disk or on key derivation, so this work has a small runtime of its own that lives
//! as long as the process: logins, sessions, plugins' host calls and event channels share it.
//!
//! Layer: uses nothing else in the crate.

pub mod seal;
pub mod session;
pub mod store;
pub mod token;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use seal::{SealError, Sealer};
use store::{PostgresSettings, PostgresStore, SqliteStore, Store, StoreError};

/// Worker threads of the state runtime.
const THREADS: usize = 2;
/// How often expired store values are deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot start the runtime for logins, sessions and plugins: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The runtime beside the request path, the store and the server key, shared by everything
/// that keeps state.
#[derive(Debug, Clone)]
pub struct Shared {
    pub runtime: tokio::runtime::Handle,
    pub store: Arc<dyn Store>,
    pub sealer: Arc<Sealer>,
    /// Whether other instances share the store (PostgreSQL), so that what this instance keeps
    /// in memory must follow what they write.
    pub clustered: bool,
}

/// Where the state is kept.
#[derive(Debug, Clone)]
pub struct StateSettings {
    pub data_dir: PathBuf,
    pub secret_file: PathBuf,
    /// The shared store; without it, the SQLite file in `data_dir`.
    pub postgres: Option<PostgresSettings>,
}

impl Shared {
    /// Starts the runtime and opens the store and the server key. Call it outside any async
    /// runtime: it blocks while the store opens.
    pub fn start(settings: &StateSettings) -> Result<Self, StateError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name("xsigate-host")
            .on_thread_start(yield_to_proxy_threads)
            .enable_all()
            .build()
            .map_err(StateError::Runtime)?;
        // Lives for the process: plugins and sessions hold handles to it until exit.
        let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
        let store: Arc<dyn Store> = match &settings.postgres {
            Some(postgres) => Arc::new(runtime.block_on(PostgresStore::open(postgres))?),
            None => Arc::new(runtime.block_on(SqliteStore::open(&settings.data_dir))?),
        };
        let sealer = Arc::new(Sealer::from_secret_file(&settings.secret_file)?);
        runtime.spawn(sweep_expired(Arc::clone(&store)));
        Ok(Self {
            runtime: runtime.handle().clone(),
            store,
            sealer,
            clustered: settings.postgres.is_some(),
        })
    }
}

/// Deletes expired values now and then, so that keys written with a time to live and never
/// read again do not pile up.
async fn sweep_expired(store: Arc<dyn Store>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        interval.tick().await;
        if let Err(e) = store.kv_sweep().await {
            tracing::warn!(error = %e, "sweeping expired store values failed");
        }
    }
}

/// How much lower than the proxy's the host threads' CPU priority is (a nice value; each step
/// is about 10% less CPU share under contention).
const HOST_NICENESS: i32 = 5;

/// Lowers the calling thread's CPU priority, so that when logins, plugin calls and store writes
/// compete with proxied traffic for the cores, proxied traffic is served first and a login
/// storm waits instead.
fn yield_to_proxy_threads() {
    #[cfg(target_os = "linux")]
    {
        // On Linux, setpriority(PRIO_PROCESS) given a thread id sets that one thread.
        let thread = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(thread), HOST_NICENESS) {
            tracing::debug!(%error, "cannot lower the host thread's priority");
        }
    }
}
