//! Harness for the cross-crate suites: the real `xsigate` binary as a child process, and real
//! HTTP upstreams on loopback that record what they receive.
//!
//! Binaries are found next to the test executable (`target/<profile>/`); build them first with
//! `cargo build --workspace` (the test command in the README does). Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod isolation;
pub mod postgres;
pub mod sso;

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::task::JoinHandle;

/// How long any wait in the harness may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Path of a binary built by this workspace, e.g. `xsigate`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the suites",
        path.display()
    );
    path
}

/// Path of a plugin library built by this workspace from crate `crate_name`.
pub fn plugin_library(crate_name: &str) -> PathBuf {
    binary(&format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    ))
}

/// Loads configuration text as xsigate does, with relative paths taken from `dir`.
pub fn load_config(text: &str, dir: &Path) -> xsigate::config::Config {
    xsigate::config::load(&xsigate::config::Source {
        name: "providers.toml".to_owned(),
        text,
        base_dir: dir,
    })
    .unwrap()
}

/// xsigate's providers, plugin host and host services in this process, for tests of the
/// library API that no route serves. Start it outside any async runtime.
#[derive(Debug)]
pub struct InProcess {
    pub dir: tempfile::TempDir,
    pub metrics: xsigate::metrics::Metrics,
    pub plugins: Arc<xsigate::plugin::Plugins>,
    pub providers: Arc<xsigate::upstream::Providers>,
    pub shared: xsigate::state::Shared,
}

impl InProcess {
    pub fn start(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = load_config(text, dir.path());
        let metrics = xsigate::metrics::Metrics::new().unwrap();
        let plugins = Arc::new(xsigate::plugin::Plugins::load(&config, &metrics).unwrap());
        let providers = Arc::new(xsigate::upstream::Providers::build(&config, &metrics).unwrap());
        providers.resolve_all_blocking();
        std::fs::write(dir.path().join("secret"), [b'k'; 64]).unwrap();
        let shared = xsigate::state::Shared::start(&xsigate::state::StateSettings {
            data_dir: dir.path().to_path_buf(),
            secret_file: dir.path().join("secret"),
            postgres: None,
        })
        .unwrap();
        let audit = xsigate::audit::Audit::new(&metrics);
        let leases = xsigate::cluster::Leases::new(
            Arc::clone(&shared.store),
            Duration::from_secs(15),
            "in-process".to_owned(),
            &metrics,
        )
        .unwrap();
        plugins.start(&shared, &leases, &providers, &audit).unwrap();
        Self {
            dir,
            metrics,
            plugins,
            providers,
            shared,
        }
    }

    /// The plugin chain of a provider.
    pub fn chain(&self, provider: &str) -> &xsigate::plugin::PluginChain {
        self.plugins.chain(self.providers.get(provider).unwrap())
    }
}

/// The repository root (for the shipped providers.toml and friends).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A loopback port nobody listens on right now, and one this process has not been given
/// before: the kernel may hand the same free port to two binds in a row, and a test that asks
/// for a listener's port and then a metrics port before either is bound must get two.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    // Bounded: the ephemeral range holds thousands of ports; give up after 1,000 draws.
    for _ in 0..1000 {
        let port = StdTcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port this process was not given already");
}

/// An HTTP client for tests; it trusts `extra_roots` in addition to nothing else.
pub fn client() -> reqwest::Client {
    client_builder().build().unwrap()
}

pub fn client_builder() -> reqwest::ClientBuilder {
    static CRYPTO: Once = Once::new();
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
}

/// `Authorization: Basic …` for `user:password`.
/// The `name=value` part of a response's first `Set-Cookie`.
pub fn set_cookie_pair(response: &reqwest::Response) -> String {
    let value = response.headers()["set-cookie"].to_str().unwrap();
    value.split(';').next().unwrap().to_owned()
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The address of the connection it came on: requests sharing one shared the connection.
    pub client: SocketAddr,
    pub method: String,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body_len: usize,
}

impl Seen {
    pub fn is_health_probe(&self) -> bool {
        self.headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ua| ua.starts_with("xsigate-health/"))
    }
}

/// A real HTTP/1.1 upstream on loopback. It answers `200` with a JSON body naming itself, plus
/// headers that reveal it (`Server`, `X-Powered-By`) so tests can check they never leak.
/// Query parameters steer it: `delay_ms=N` waits first, `status=N` answers that status,
/// `redirect=1` answers 302 to its own absolute URL, `drop=1` closes the connection unanswered,
/// `html=1` answers an HTML page naming its address and name, `empty=1` an empty text body.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    tls: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: Option<JoinHandle<()>>,
}

impl Upstream {
    pub async fn start(name: &str) -> Self {
        Self::start_at(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on a given address, e.g. to bring a stopped upstream back on its port.
    pub async fn start_at(name: &str, addr: SocketAddr) -> Self {
        Self::start_with(name, addr, None).await
    }

    /// An HTTPS upstream on a free loopback port, serving `tls`'s certificate.
    pub async fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(name, SocketAddr::from(([127, 0, 0, 1], 0)), Some(tls)).await
    }

    async fn start_with(
        name: &str,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let tls_scheme = tls.is_some();
        let listener = xsi_sim::http::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (record, own_name) = (Arc::clone(&seen), name.to_owned());
        let task = xsi_sim::http::serve(listener, tls, move |request, client| {
            answer(request, client, own_name.clone(), addr, Arc::clone(&record))
        });
        Self {
            name: name.to_owned(),
            addr,
            tls: tls_scheme,
            seen,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Proxied requests received so far; xsigate's own health probes are left out.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !r.is_health_probe())
            .cloned()
            .collect()
    }

    pub fn request_count(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !r.is_health_probe())
            .count()
    }

    /// Health probes received so far.
    pub fn probe_count(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.is_health_probe())
            .count()
    }

    /// Stops listening and cuts every open connection, like a killed process.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    request: Request<Incoming>,
    client: SocketAddr,
    name: String,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<xsi_sim::http::Body>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    seen.lock().unwrap().push(Seen {
        client,
        method: parts.method.to_string(),
        path_and_query: path_and_query.clone(),
        headers: parts.headers.clone(),
        body_len: body.len(),
    });
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    if let Some(ms) = param("delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if param("drop").is_some() {
        return Err(std::io::Error::other("dropping the connection on purpose"));
    }
    let status = param("status")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200u16);
    let body = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": path_and_query,
    })
    .to_string();
    let mut response = Response::builder()
        .status(status)
        .header("server", "BW HTTP Server")
        .header("x-powered-by", "Servlet/3.0")
        .header(
            "set-cookie",
            format!(
                "JSESSIONID=ABC123; Path=/com.broadsoft.xsi-actions; Domain={}; HttpOnly",
                addr.ip()
            ),
        );
    if param("redirect").is_some() {
        response = response.status(302).header(
            "location",
            format!("http://{addr}/com.broadsoft.xsi-actions/v2.0/user/x/profile"),
        );
    }
    if param("html").is_some() {
        // An error page of a web server in front of the XSP, naming its host and software.
        let page = format!(
            "<html><body><h1>{status}</h1><p>Apache Tomcat at {addr} ({name})</p></body></html>"
        );
        let response = response.header("content-type", "text/html");
        return Ok(response.body(xsi_sim::http::Body::full(page)).unwrap());
    }
    if param("empty").is_some() {
        let response = response.header("content-type", "text/plain");
        return Ok(response
            .body(xsi_sim::http::Body::full(String::new()))
            .unwrap());
    }
    let response = response.header("content-type", "application/json");
    Ok(response.body(xsi_sim::http::Body::full(body)).unwrap())
}

/// A running `xsigate run` child process with its own data directory and ports.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
}

impl Gateway {
    /// Starts xsigate with `[server]` settings for tests followed by `rest` (providers and any
    /// further `[server.*]` tables), and waits until it answers `/healthz`.
    pub async fn start(rest: &str) -> Self {
        Self::start_with_args(rest, &[]).await
    }

    pub async fn start_with_args(rest: &str, args: &[&str]) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::start_at(addr, rest, args).await
    }

    /// Starts xsigate listening on `addr`: for configurations that name the gateway's own
    /// address (a single sign-on's `public_url`).
    pub async fn start_at(addr: SocketAddr, rest: &str, args: &[&str]) -> Self {
        Self::start_logging(addr, rest, args, None).await
    }

    /// As [`Gateway::start`], with more keys of the `[server]` table itself (`server_keys`,
    /// TOML lines such as `upstream_keepalive_pool_size = 1`).
    pub async fn start_with_server_keys(server_keys: &str, rest: &str) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::launch(addr, server_keys, rest, &[], None).await
    }

    /// As [`Gateway::start_at`], logging what `log_filter` (an `XSIGATE_LOG` filter such as
    /// `trace`) lets through instead of the default.
    pub async fn start_logging(
        addr: SocketAddr,
        rest: &str,
        args: &[&str],
        log_filter: Option<&str>,
    ) -> Self {
        Self::launch(addr, "", rest, args, log_filter).await
    }

    async fn launch(
        addr: SocketAddr,
        server_keys: &str,
        rest: &str,
        args: &[&str],
        log_filter: Option<&str>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = format!(
            "[server]\ndata_dir = \"data\"\nthreads = 2\ngrace_period_seconds = 2\ngraceful_shutdown_timeout_seconds = 1\n\
             {server_keys}\n[[server.listeners]]\naddress = \"{addr}\"\n[server.metrics]\naddress = \"{metrics_addr}\"\n{rest}"
        );
        let config_path = dir.path().join("providers.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("xsigate.log")).unwrap();
        let mut command = Command::new(binary("xsigate"));
        command
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(filter) = log_filter {
            command.env("XSIGATE_LOG", filter);
        }
        let child = command.spawn().unwrap();
        let mut gateway = Self {
            child,
            dir,
            addr,
            metrics_addr,
        };
        gateway.wait_for("/healthz", 200).await;
        gateway
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The gateway process's resident memory, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Graceful upgrade: starts a new process with `--upgrade` on the same configuration, sends
    /// the running one SIGQUIT so that it hands its listening sockets over, and waits (bounded)
    /// until it has exited. The new process then serves.
    pub async fn upgrade(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("xsigate.log"))
            .unwrap();
        let new = Command::new(binary("xsigate"))
            .arg("run")
            .arg("-c")
            .arg(self.dir.path().join("providers.toml"))
            .arg("--upgrade")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // The new process waits on the upgrade socket; give it a moment to get there.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (code, _, stderr) = run_command(
            Command::new("kill")
                .arg("-QUIT")
                .arg(self.child.id().to_string()),
        );
        assert_eq!(code, 0, "{stderr}");
        let mut old = std::mem::replace(&mut self.child, new);
        let deadline = Instant::now() + WAIT;
        while old.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the old process never exited:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A crash: SIGKILL, nothing handed over; waits until the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A crash and a restart: kills the process and starts a new one on the same configuration
    /// and data directory, waiting until it answers `/healthz`.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("xsigate.log"))
            .unwrap();
        self.child = Command::new(binary("xsigate"))
            .arg("run")
            .arg("-c")
            .arg(self.dir.path().join("providers.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.wait_for("/healthz", 200).await;
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of the process serving now, as it noted itself in its data directory (after a
    /// reload, not this harness's child).
    pub fn running_pid(&self) -> Option<u32> {
        let json = std::fs::read(self.dir.path().join("data/running.json")).ok()?;
        let running: serde_json::Value = serde_json::from_slice(&json).ok()?;
        running["pid"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok())
    }

    /// The configuration file the process runs.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("providers.toml")
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("xsigate.log")).unwrap_or_default()
    }

    /// Waits until the log satisfies `condition` (lines are written after the response, by a
    /// background thread) and returns it.
    pub async fn wait_log(&self, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let logs = self.logs();
            if condition(&logs) {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "the log never met the condition:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `path` on the proxy listener answers `status`.
    pub async fn wait_for(&mut self, path: &str, status: u16) {
        let client = client();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("xsigate exited with {exit} during start:\n{}", self.logs());
            }
            if let Ok(response) = client.get(self.url(path)).send().await {
                if response.status().as_u16() == status {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{path} never answered {status}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The current value of a metric series, e.g. `xsigate_xsp_up{provider="a",xsp="xsp1"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = client()
            .get(self.metrics_url())
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let wanted = parse_series(series)?;
        text.lines().find_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let (name, mut labels) = parse_series(head)?;
            // The host labels every plugin metric with its plugin; a series named without
            // that label means the plugin its name already says.
            if !wanted.1.contains_key("plugin") {
                labels.remove("plugin");
            }
            (name == wanted.0 && labels == wanted.1)
                .then(|| value.trim().parse().ok())
                .flatten()
        })
    }

    /// Polls until `condition` holds on the metrics text.
    pub async fn wait_metric(&self, series: &str, condition: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = self.metric(series).await {
                if condition(value) {
                    return value;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{series} never met the condition:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A reload hands over to a process the running one started, not this one's child.
        if let Some(pid) = self.running_pid().filter(|pid| *pid != self.child.id()) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Proxied requests from 4 clients, kept up across a hand-over of the listeners (an upgrade, a
/// reload) until [`ProxiedLoad::finish`].
#[derive(Debug)]
pub struct ProxiedLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: tokio::task::JoinSet<(usize, usize, Vec<String>)>,
}

/// What a [`ProxiedLoad`] saw: requests sent, retried once on a new connection, and failed.
#[derive(Debug)]
pub struct LoadOutcome {
    pub sent: usize,
    pub retried: usize,
    pub failures: Vec<String>,
}

impl ProxiedLoad {
    /// GETs `url` with `authorization`, at most `per_client` times per client.
    pub fn start(url: &str, authorization: &str, per_client: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = tokio::task::JoinSet::new();
        let http = client();
        // A retry goes out on a new connection, as a browser's does: a pooled one may be one
        // the draining process is closing.
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        for _ in 0..4 {
            let (http, fresh, url, auth, stop) = (
                http.clone(),
                fresh.clone(),
                url.to_owned(),
                authorization.to_owned(),
                Arc::clone(&stop),
            );
            clients.spawn(async move {
                let (mut sent, mut retried, mut failures) = (0, 0, Vec::new());
                while sent < per_client && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sent += 1;
                    // A keep-alive connection closed by the draining process just as a request
                    // goes out is the one race HTTP/1.1 leaves to clients; browsers send such
                    // an idempotent request once more, and so does this client.
                    let mut outcome = http.get(&url).header("authorization", &auth).send().await;
                    if outcome.is_err() {
                        retried += 1;
                        outcome = fresh.get(&url).header("authorization", &auth).send().await;
                    }
                    match outcome {
                        Ok(response) if response.status() == 200 => {}
                        Ok(response) => failures.push(format!("status {}", response.status())),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                (sent, retried, failures)
            });
        }
        Self { stop, clients }
    }

    /// Stops the clients and adds up what they saw.
    pub async fn finish(mut self) -> LoadOutcome {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut outcome = LoadOutcome {
            sent: 0,
            retried: 0,
            failures: Vec::new(),
        };
        while let Some(result) = self.clients.join_next().await {
            let (sent, retried, failures) = result.unwrap();
            outcome.sent += sent;
            outcome.retried += retried;
            outcome.failures.extend(failures);
        }
        outcome
    }
}

/// What `tests/browser/console.mjs` reported after driving the operator console in Chromium.
#[derive(Debug)]
pub struct ConsoleRun {
    pub success: bool,
    pub report: serde_json::Value,
    pub output: String,
}

/// Drives the operator console at `console_url` in Chromium (`tests/browser/console.mjs`):
/// signs `operator` in, calls `add_session` once the status page is up (it must give the
/// gateway one more session for the page to show by itself), ends `user`'s sessions with the
/// page's button, and tries an action without the CSRF token. Screenshots go to `out`.
pub fn drive_console(
    console_url: &str,
    (operator, password): (&str, &str),
    user: &str,
    out: &Path,
    add_session: impl FnOnce(),
) -> ConsoleRun {
    use std::io::{BufRead as _, Read as _, Write as _};
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let mut driver = Command::new("node")
        .arg(repo_root().join("tests/browser/console.mjs"))
        .env("CONSOLE_URL", console_url)
        .env("OPERATOR", operator)
        .env("OPERATOR_PASSWORD", password)
        .env("USER", user)
        .env("OUT", out)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node and npm's puppeteer-core: the test command installs them");
    let mut lines = std::io::BufReader::new(driver.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let watching = line == "watching";
        seen.push(line);
        if watching {
            add_session();
            let mut stdin = driver.stdin.take().unwrap();
            let _ = writeln!(stdin, "changed");
            break;
        }
    }
    seen.extend(lines.map_while(Result::ok));
    let status = driver.wait().unwrap();
    let mut stderr = String::new();
    let _ = driver.stderr.take().unwrap().read_to_string(&mut stderr);
    let report = seen
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or(serde_json::Value::Null);
    ConsoleRun {
        success: status.success() && report.get("error").is_none() && !report.is_null(),
        report,
        output: format!("{}\n{stderr}", seen.join("\n")),
    }
}

/// What a console run must show: the sign-in, the page refreshed by itself to one session
/// more, the user's sessions ended by the button, the token-less POST refused.
pub fn assert_console_run(run: &ConsoleRun) {
    let report = &run.report;
    assert!(run.success, "{report:#}\n{}", run.output);
    assert_eq!(report["redirected_to"], "/login");
    assert_eq!(report["signed_in_at"], "/");
    let before = report["sessions_before"].as_u64().unwrap_or(u64::MAX - 1);
    assert_eq!(
        report["sessions_live"],
        before + 1,
        "the page showed the new session by itself"
    );
    assert_eq!(report["refreshed"], true);
    assert!(
        report["notice"]
            .as_str()
            .unwrap_or_default()
            .contains("session(s) ended"),
        "{report}"
    );
    assert_eq!(report["without_csrf"]["status"], 403);
    assert_eq!(
        report["without_csrf"]["body"]["error"]["code"],
        "csrf_token_invalid"
    );
    assert!(
        report["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "end_sessions"),
        "{report}"
    );
    assert_eq!(report["console_errors"], serde_json::json!([]), "{report}");
}

/// A series as the exposition format writes it, `name{label="value",…}`: its name and
/// labels (values as written, escapes kept).
fn parse_series(text: &str) -> Option<(&str, std::collections::BTreeMap<&str, &str>)> {
    let Some((name, rest)) = text.split_once('{') else {
        return Some((text.trim(), std::collections::BTreeMap::new()));
    };
    let mut labels = std::collections::BTreeMap::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (label, after) = rest.split_once("=\"")?;
        let mut end = 0;
        let bytes = after.as_bytes();
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        labels.insert(label.trim_start_matches(','), after.get(..end)?);
        rest = after.get(end + 1..)?;
    }
    Some((name, labels))
}

/// A `[providers.<id>]` table for tests: fast health checks, the given domains and upstreams.
pub fn provider(id: &str, domains: &[&str], xsps: &[&Upstream], extra: &str) -> String {
    let urls: Vec<String> = xsps.iter().map(|u| u.url()).collect();
    provider_urls(id, domains, &urls, extra)
}

/// A provider in front of the simulator's XSPs.
pub fn provider_for_simulator(
    id: &str,
    domains: &[&str],
    sim: &xsi_sim::Simulator,
    extra: &str,
) -> String {
    let urls: Vec<String> = sim
        .xsp_addrs()
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    provider_urls(id, domains, &urls, extra)
}

pub fn provider_urls(id: &str, domains: &[&str], urls: &[String], extra: &str) -> String {
    let domains: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
    let xsps: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[providers.{id}]\ndomains = [{}]\nxsp = [{}]\nhealth_check = {{ interval_ms = 200, timeout_ms = 500, fall = 1, rise = 1 }}\n{extra}\n",
        domains.join(", "),
        xsps.join(", ")
    )
}

/// A browser's login session: its cookie, CSRF token and the login answer.
#[derive(Debug)]
pub struct Login {
    pub cookie: String,
    pub csrf: String,
    pub answer: serde_json::Value,
}

/// Reads one answer, head and `Content-Length` body, from a raw connection the gateway keeps
/// open after it; bounded by [`WAIT`]. Returns the bytes read.
pub async fn read_kept_answer(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let whole = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length = head.lines().find_map(|line| {
                    let value = line.strip_prefix("content-length:")?;
                    value.trim().parse::<usize>().ok()
                });
                if length.is_some_and(|n| raw.len() >= end + 4 + n) {
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        whole.is_ok(),
        "no whole answer within {WAIT:?}: {:?}",
        String::from_utf8_lossy(&raw)
    );
    raw
}

/// Logs `user` in with the BroadSoft method (the `broadsoft` identity plugin); the answer must
/// be 200.
pub async fn log_in(gateway: &Gateway, user: &str, password: &str) -> Login {
    let response = client()
        .post(gateway.url("/api/access/services/idp/broadsoft"))
        .json(&serde_json::json!({ "user": user, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = set_cookie_pair(&response);
    let answer: serde_json::Value = response.json().await.unwrap();
    Login {
        cookie,
        csrf: answer["csrf_token"].as_str().unwrap().to_owned(),
        answer,
    }
}

/// A GET on the simulator's control API, as JSON.
pub async fn sim_get(sim: &xsi_sim::Simulator, path: &str) -> serde_json::Value {
    client()
        .get(format!("http://{}{path}", sim.control_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Changes a user through the simulator's control API, as an operator or a phone would.
pub async fn change_user(
    sim: &xsi_sim::Simulator,
    user: &str,
    change: impl FnOnce(&mut serde_json::Value),
) {
    let mut state = sim_get(sim, &format!("/users/{user}")).await;
    change(&mut state);
    let response = client()
        .put(format!("http://{}/users/{user}", sim.control_addr()))
        .json(&state)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// Runs a command that ends by itself (`xsigate check`, `promtool`); returns (exit code, stdout, stderr).
pub fn run_command(command: &mut Command) -> (i32, String, String) {
    let output = command.stdin(Stdio::null()).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A real SMTP server on loopback (aiosmtpd, Debian package `python3-aiosmtpd`) that prints
/// every message it accepts; the test command installs it.
#[derive(Debug)]
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    output: tempfile::NamedTempFile,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let port = free_port();
        let output = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("aiosmtpd")
            .args(["-n", "-l", &format!("127.0.0.1:{port}")])
            // Python buffers a redirected stdout; messages must reach the file as they arrive.
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(output.reopen().unwrap())
            .stderr(output.reopen().unwrap())
            .spawn()
            .expect("aiosmtpd (Debian package `python3-aiosmtpd`) must be installed; the test command installs it");
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the SMTP server never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            port,
            output,
        }
    }

    /// Everything the server printed: each accepted message, headers and body.
    pub fn received(&self) -> String {
        std::fs::read_to_string(self.output.path()).unwrap_or_default()
    }

    /// Waits until a received message satisfies `condition`.
    pub async fn wait_for(&self, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let received = self.received();
            if condition(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "no such message arrived:\n{received}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_read_into_its_name_and_labels() {
        let (name, labels) = parse_series(
            r#"xsigate_plugin_events_channels{plugin="events",provider="acme",state="open"}"#,
        )
        .unwrap();
        assert_eq!(name, "xsigate_plugin_events_channels");
        assert_eq!(labels.len(), 3);
        assert_eq!(labels["state"], "open");
        let (_, labels) = parse_series(r#"m{reason="a \"quoted\", value",x="y"}"#).unwrap();
        assert_eq!(labels["reason"], r#"a \"quoted\", value"#);
        assert_eq!(labels["x"], "y");
        assert_eq!(parse_series("xsigate_sessions_active").unwrap().1.len(), 0);
    }
}
