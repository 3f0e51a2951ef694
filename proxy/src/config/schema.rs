//! The `providers.toml` schema.
//!
//! Every table denies unknown keys and every closed set of values is an enum, so a typo is a
//! startup error rather than a silently ignored setting. Cross-field rules (duplicate domains,
//! secret references, URL shapes) live in [`super::validate`], which knows the key path of every
//! value it rejects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::secret::Secret;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// SHA-256 of the file's text, hex: which configuration a running instance serves.
    #[serde(skip)]
    pub checksum: String,
    /// The text it was read from, for what a reload changes.
    #[serde(skip)]
    pub text: ConfigText,
    /// The file, made absolute; `None` for the embedded default.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// A configuration's text. It may hold secrets inline, so `Debug` shows only its length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigText(pub String);

impl std::fmt::Debug for ConfigText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfigText({} bytes)", self.0.len())
    }
}

/// `[server]`: listeners, process settings and timeouts shared by every provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listeners")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Operator accounts of the console; without one, the console does not listen.
    #[serde(default)]
    pub admins: Vec<AdminConfig>,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Key material for sealing replayable credentials; created (0600) on first start if absent.
    pub secret_file: Option<PathBuf>,
    /// Worker threads for the proxy; defaults to the number of cores.
    pub threads: Option<NonZeroUsize>,
    #[serde(default = "default_grace_period")]
    pub grace_period_seconds: u64,
    #[serde(default = "default_graceful_shutdown_timeout")]
    pub graceful_shutdown_timeout_seconds: u64,
    #[serde(default = "default_keepalive_pool")]
    pub upstream_keepalive_pool_size: usize,
    #[serde(default = "default_true")]
    pub access_log: bool,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub sessions: SessionsConfig,
    #[serde(default)]
    pub clients: ClientsConfig,
    #[serde(default)]
    pub store: StoreConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listeners: default_listeners(),
            metrics: MetricsConfig::default(),
            console: ConsoleConfig::default(),
            admins: Vec::new(),
            data_dir: default_data_dir(),
            secret_file: None,
            threads: None,
            grace_period_seconds: default_grace_period(),
            graceful_shutdown_timeout_seconds: default_graceful_shutdown_timeout(),
            upstream_keepalive_pool_size: default_keepalive_pool(),
            access_log: true,
            timeouts: TimeoutsConfig::default(),
            sessions: SessionsConfig::default(),
            clients: ClientsConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

/// `[server.clients]`: what one client connection and one client address may take before a
/// request reaches the proxy. The defaults leave room for a load balancer or a call centre's
/// NAT address carrying thousands of dialers (the request rate is off); on a listener that
/// browsers reach directly, tighten them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsConfig {
    /// Open connections one address may hold; more are answered 429 and closed.
    #[serde(default = "default_connections_per_address")]
    pub connections_per_address: u32,
    /// Sustained requests per second one address may send (a token bucket); 0 turns it off.
    #[serde(default = "default_requests_per_second_per_address")]
    pub requests_per_second_per_address: u32,
    /// Requests one address may send at once above the sustained rate.
    #[serde(default = "default_request_burst_per_address")]
    pub request_burst_per_address: u32,
    /// Time for a request's whole header to arrive, from its first byte (slow-header clients).
    #[serde(default = "default_header_seconds")]
    pub header_seconds: u64,
    /// Time a connection may wait for its next request (its first included).
    #[serde(default = "default_idle_seconds")]
    pub idle_seconds: u64,
    /// Largest request header (request line and fields), in bytes.
    #[serde(default = "default_header_bytes")]
    pub header_bytes: usize,
    /// Most header fields in one request.
    #[serde(default = "default_header_fields")]
    pub header_fields: usize,
    /// Largest request body passed on, in bytes; XSI bodies are small documents.
    #[serde(default = "default_body_bytes")]
    pub body_bytes: u64,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            connections_per_address: default_connections_per_address(),
            requests_per_second_per_address: default_requests_per_second_per_address(),
            request_burst_per_address: default_request_burst_per_address(),
            header_seconds: default_header_seconds(),
            idle_seconds: default_idle_seconds(),
            header_bytes: default_header_bytes(),
            header_fields: default_header_fields(),
            body_bytes: default_body_bytes(),
        }
    }
}

/// `[server.sessions]`: how long a login session lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// A session unused this long ends; its event channels and screen recording stop.
    #[serde(default = "default_session_idle_seconds")]
    pub idle_seconds: u64,
    /// A session ends this long after login, however busy.
    #[serde(default = "default_session_lifetime_seconds")]
    pub lifetime_seconds: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_seconds: default_session_idle_seconds(),
            lifetime_seconds: default_session_lifetime_seconds(),
        }
    }
}

/// `[server.store]`: where sessions, uniqueIds, login failure counts, reset tokens and plugins'
/// data are kept. Without `url`, an SQLite file in `data_dir`, for one instance; with a
/// `postgres://user@host:port/database` URL, a PostgreSQL database that several instances
/// share (they must then share `secret_file` too).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub url: Option<url::Url>,
    /// The database password, by reference; none for `trust` or certificate authentication.
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Present only so that an inline password gets a precise error instead of "unknown field".
    #[serde(default, rename = "password")]
    pub inline_password: Option<IgnoredAny>,
    /// Filled in by validation from `password_env` or `password_file`.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// How the connection to PostgreSQL is protected.
    #[serde(default)]
    pub tls: StoreTls,
    /// PEM bundle trusted for the database's certificate, besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Connections to PostgreSQL this instance opens at most.
    #[serde(default = "default_store_connections")]
    pub max_connections: u32,
    /// How long live work (a channel set, an agent login) stays a dead instance's before
    /// another takes it over; each instance renews its leases every third of this.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            password_env: None,
            password_file: None,
            inline_password: None,
            password: None,
            tls: StoreTls::default(),
            ca_file: None,
            max_connections: default_store_connections(),
            lease_seconds: default_lease_seconds(),
        }
    }
}

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreTls {
    /// Plain TCP: for a database on this machine, or on a private network trusted as such.
    Off,
    /// TLS, with the database's certificate checked against the trusted roots and its name
    /// against the URL's host, as PostgreSQL's `sslmode=verify-full` does.
    #[default]
    VerifyFull,
}

fn default_store_connections() -> u32 {
    16
}

fn default_lease_seconds() -> u64 {
    15
}

/// One `[[server.listeners]]` entry: plain HTTP, or TLS when `tls` is present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub tls: Option<TlsListenerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Offer HTTP/2 through ALPN next to HTTP/1.1.
    #[serde(default = "default_true")]
    pub http2: bool,
}

/// `[server.metrics]`: the Prometheus listener, kept apart from client traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "default_metrics_address")]
    pub address: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            address: default_metrics_address(),
        }
    }
}

/// `[server.console]`: the operator console's listener, apart from client traffic and from
/// the metrics listener (which needs no login).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    #[serde(default = "default_console_address")]
    pub address: SocketAddr,
    /// An operator's session ends after this long without a request.
    #[serde(default = "default_console_idle")]
    pub idle_seconds: u64,
    /// And after this long in any case.
    #[serde(default = "default_console_lifetime")]
    pub lifetime_seconds: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            address: default_console_address(),
            idle_seconds: default_console_idle(),
            lifetime_seconds: default_console_lifetime(),
        }
    }
}

/// `[[server.admins]]`: one operator of the console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub user: String,
    /// argon2id in PHC form, from `xsigate hash-password`.
    pub password_hash: super::password::AdminPasswordHash,
}

/// `[server.timeouts]`. Units are in the key names so that a bare number is never ambiguous.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    #[serde(default = "default_upstream_read_seconds")]
    pub upstream_read_seconds: u64,
    #[serde(default = "default_downstream_read_seconds")]
    pub downstream_read_seconds: u64,
    /// Idle limit on long-lived XSI-Events streams, in both directions. BroadWorks sends a
    /// heartbeat document on the stream well inside this, so only a dead stream hits it.
    #[serde(default = "default_stream_idle_seconds")]
    pub stream_idle_seconds: u64,
    /// How long an unused upstream connection stays in the pool.
    #[serde(default = "default_upstream_idle_seconds")]
    pub upstream_idle_seconds: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: default_connect_ms(),
            upstream_read_seconds: default_upstream_read_seconds(),
            downstream_read_seconds: default_downstream_read_seconds(),
            stream_idle_seconds: default_stream_idle_seconds(),
            upstream_idle_seconds: default_upstream_idle_seconds(),
        }
    }
}

/// One `[[plugins]]` entry. The free-form `config` table is handed to the plugin's init, which
/// validates it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    /// The shared library (`.so`), relative to the configuration file.
    pub path: PathBuf,
    /// Time limit of each hook call (background workers have none).
    #[serde(default = "default_plugin_call_timeout_ms")]
    pub call_timeout_ms: u64,
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// `file:line:column` of this entry, filled in by the loader for plugin startup errors.
    #[serde(skip)]
    pub origin: String,
}

fn default_plugin_call_timeout_ms() -> u64 {
    5_000
}

/// `[providers.<id>]`: one service provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// User-id domains (`user@<domain>`) that belong to this provider.
    pub domains: Vec<String>,
    /// Domains of users' e-mail addresses that identify this provider on the login page when
    /// they are not user-id domains (`alice@acme.com` for `alice@acme.bw.example`).
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// Phone-number prefixes (digits, with an optional leading `+`) that identify this
    /// provider; the longest matching prefix of any provider wins.
    #[serde(default)]
    pub number_prefixes: Vec<String>,
    /// XSP base URLs (scheme, host and optional port only).
    pub xsp: Vec<url::Url>,
    /// PEM bundle trusted for this provider's HTTPS upstreams instead of the system roots.
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    /// Gateway services: `/api/dialer/services/gateway/<name>/*` goes to the URL given here.
    #[serde(default)]
    pub gateway: BTreeMap<String, url::Url>,
    #[serde(default)]
    pub applets: BTreeMap<String, AppletConfig>,
    pub master: Option<MasterCredentials>,
    /// Where this provider's password-reset mail is sent from.
    pub smtp: Option<SmtpConfig>,
    /// The page that completes a password reset; the mail links to it with the single-use
    /// token in the fragment (`<reset_url>#token=…`), which browsers never send to a server.
    /// Needs `master` and `smtp`.
    pub reset_url: Option<url::Url>,
    #[serde(default)]
    pub cors_origins: Vec<url::Url>,
    /// Single sign-on: needed by a provider whose plugins log in by redirect.
    pub sso: Option<SsoConfig>,
    /// Names of `[[plugins]]` entries this provider uses.
    #[serde(default)]
    pub plugins: Vec<String>,
}

/// `[providers.<id>.sso]`: where a redirect login (single sign-on) comes back to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoConfig {
    /// The gateway's address as browsers reach it (scheme, host, port). Identity providers
    /// send the browser back to `<public_url>/api/access/services/idp/<method>/callback`,
    /// which is the redirect URI to register with them.
    pub public_url: url::Url,
    /// The dialer page a redirect login ends on, with the session cookie set (or with
    /// `?sso_error=<code>`); its origin must be one of `cors_origins`.
    pub return_url: url::Url,
}

/// Active health checking of a provider's XSPs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Probed with GET; any answer below 500 (a 401 included) means the XSP is serving.
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive failures (probes or proxied connects) that mark an XSP down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Consecutive successful probes that mark a down XSP up again.
    #[serde(default = "default_rise")]
    pub rise: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval_ms: default_health_interval_ms(),
            timeout_ms: default_health_timeout_ms(),
            fall: default_fall(),
            rise: default_rise(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppletConfig {
    pub url: url::Url,
    #[serde(default)]
    pub mode: AppletMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppletMode {
    /// `/apps/<name>/*` is proxied to the applet.
    #[default]
    Proxy,
    /// The browser is sent to the applet with a short-lived signed token.
    Redirect,
}

/// Master (administrator) credentials. The password is only ever a reference.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterCredentials {
    pub user: String,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Present only so that an inline password gets a precise error instead of "unknown field".
    #[serde(default, rename = "password")]
    pub inline_password: Option<IgnoredAny>,
    /// Filled in by validation from `password_env` or `password_file`.
    #[serde(skip)]
    pub password: Secret,
}

/// `[providers.<id>.smtp]`: an SMTP relay for the provider's mail.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 25 without TLS, 587 with STARTTLS, 465 with TLS.
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The sender, e.g. `"Acme Dialer <noreply@acme.example>"`.
    pub from: String,
    /// Login at the relay; needs `password_env` or `password_file`.
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Present only so that an inline password gets a precise error instead of "unknown field".
    #[serde(default, rename = "password")]
    pub inline_password: Option<IgnoredAny>,
    /// Filled in by validation when `user` is set.
    #[serde(skip)]
    pub password: Option<Secret>,
    #[serde(default = "default_smtp_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_smtp_timeout_ms() -> u64 {
    10_000
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain SMTP: only to a relay on this machine.
    None,
    /// Upgrade with STARTTLS, which the relay must offer.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

fn default_true() -> bool {
    true
}
fn default_listeners() -> Vec<ListenerConfig> {
    vec![ListenerConfig {
        address: SocketAddr::from(([127, 0, 0, 1], 8080)),
        tls: None,
    }]
}
fn default_metrics_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_console_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9465))
}
fn default_console_idle() -> u64 {
    15 * 60
}
fn default_console_lifetime() -> u64 {
    8 * 3600
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_grace_period() -> u64 {
    30
}
fn default_graceful_shutdown_timeout() -> u64 {
    5
}
fn default_keepalive_pool() -> usize {
    1024
}
fn default_connect_ms() -> u64 {
    2_000
}
fn default_upstream_read_seconds() -> u64 {
    60
}
fn default_downstream_read_seconds() -> u64 {
    60
}
fn default_session_idle_seconds() -> u64 {
    30 * 60
}

fn default_session_lifetime_seconds() -> u64 {
    12 * 3600
}

fn default_connections_per_address() -> u32 {
    10_000
}
fn default_requests_per_second_per_address() -> u32 {
    0
}
fn default_request_burst_per_address() -> u32 {
    2000
}
fn default_header_seconds() -> u64 {
    10
}
fn default_idle_seconds() -> u64 {
    60
}
fn default_header_bytes() -> usize {
    32 * 1024
}
fn default_header_fields() -> usize {
    100
}
fn default_body_bytes() -> u64 {
    1024 * 1024
}
fn default_stream_idle_seconds() -> u64 {
    180
}
fn default_upstream_idle_seconds() -> u64 {
    60
}
fn default_health_path() -> String {
    format!("{}/versions", xsigate_broadworks::ACTIONS)
}
fn default_health_interval_ms() -> u64 {
    2_000
}
fn default_health_timeout_ms() -> u64 {
    1_000
}
fn default_fall() -> u32 {
    2
}
fn default_rise() -> u32 {
    2
}
