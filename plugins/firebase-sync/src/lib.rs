//! `firebase-sync`: keeps each user's live telephony state in the provider's Firebase Realtime
//! Database, where the user's browser watches it, and gives that browser the custom token to
//! read its own node. Reference: `integrations.md` §1; guide: `docs/firebase.md`.
//!
//! The plugin:
//!
//! - MUST consume the typed events of `xsi.event` and keep `/users/<uniqueId>` (the tree in
//!   [`tree`]) equal to the latest state each event reported, through the REST API: one
//!   multi-path `PATCH` per batch (changes wait `batch_ms` for others, and a database gets
//!   at most one new write per `batch_ms`), `print=silent`;
//! - MUST keep each user's writes in order (a user is in one write at a time, and each write
//!   carries the latest value) and never drop a change: the queue coalesces to the latest
//!   state per user, so it is bounded by the users, not by the events;
//! - MUST retry failed writes with a growing, jittered delay, and rewrite every user a failed
//!   write carried in full (a gap); a user seen for the first time since start is rewritten in
//!   full too, and so is a user `xsi-events` resyncs;
//! - MUST authenticate writes with an OAuth2 access token of the provider's service account
//!   (JWT-bearer grant), cached and refreshed before it expires, or with a legacy database
//!   secret when one is configured;
//! - MUST answer each login (`session.started`) with a Firebase custom token for the user's
//!   uniqueId (RS256, at most an hour), the database URL and the user's path;
//! - MUST keep, in each logged-in user's node under `blf`, the lamps of the users its provider's
//!   busy lamp field policy lets it watch (module `blf`), and delete them when it may no longer;
//! - MUST NOT write a BroadWorks userId, a domain or an XSP detail, nor log a token, a secret
//!   or a database URL that carries one.

mod auth;
mod blf;
mod config;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod queue;
pub mod tree;

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_channel::mpsc;
use futures_util::StreamExt as _;
use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use xsigate_broadworks::bus::{Source, State, XsiEvent};
use xsigate_plugin_sdk::serde_json::{Map, Value, json};
use xsigate_plugin_sdk::topics::{
    ActionOutcome, ActionReport, OPERATOR_ACTION, OPERATOR_STATUS, OperatorAction, SESSION_ENDED,
    SESSION_STARTED, SessionEnded, SessionStarted, StatusReport, UserAction, XSI_EVENT,
};
use xsigate_plugin_sdk::unix_ms;
use xsigate_plugin_sdk::{
    BackgroundWorker, Counter, Error, Event, EventConsumer, Gauge, Histogram, Host, HttpRequest,
    HttpResponse, LogLevel, Plugin,
};

pub use auth::{CUSTOM_TOKEN_AUDIENCE, DATABASE_SCOPES, ServiceAccount};
use blf::{LampWrite, Watching};
pub use config::{BlfPolicy, Config, ProviderFirebase};
use queue::{Batch, Users};

/// Where users' nodes live in each database.
pub const ROOT: &str = "users";
/// How long the worker waits when nothing is due; events wake it sooner.
const IDLE: Duration = Duration::from_secs(1);
/// An access token is refreshed this long before it expires (or at half its life if shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// A granted token is used at most this long, whatever the endpoint says: a lifetime past it
/// (or one that would overflow the clock) is read as this.
const TOKEN_LIFE_MAX: Duration = Duration::from_secs(24 * 3600);

pub struct FirebaseSync {
    host: Host,
    config: Config,
    databases: HashMap<String, Database>,
    users: Mutex<Users>,
    /// uniqueIds by userId (call centres of agents' memberships, watched users): a uniqueId
    /// never changes, so each is asked of the host once.
    unique_ids: Mutex<HashMap<String, String>>,
    /// Logged-in users of providers with BLF, and whose lamps each sees. Locked after
    /// `users` when both are held.
    watching: Mutex<Watching>,
    /// One sender, so the channel holds at most one wake-up: a clone per event would each add
    /// a slot of its own.
    wake: Mutex<mpsc::Sender<()>>,
    /// Taken by the worker while it runs; put back if it stops, for its next start.
    inbox: Mutex<Option<mpsc::Receiver<()>>>,
    metrics: Metrics,
}

/// Tokens, keys and secrets stay out of logs: only providers and counts are shown.
impl std::fmt::Debug for FirebaseSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirebaseSync")
            .field("providers", &self.databases.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One provider's database and how to reach it.
struct Database {
    /// The URL as configured: what browsers are told.
    url: String,
    /// `PATCH` target for multi-path writes (the root's `.json`, with the URL's query and
    /// `print=silent`), without credentials.
    write_url: String,
    account: ServiceAccount,
    credential: Credential,
    custom_token_seconds: u64,
    timeout: Duration,
}

enum Credential {
    /// A legacy database secret, sent as `auth=`.
    Secret(String),
    /// OAuth2 access tokens from `token_url`, cached.
    OAuth {
        token_url: String,
        token: Mutex<Option<AccessToken>>,
    },
}

#[derive(Clone)]
struct AccessToken {
    value: String,
    refresh_at: Instant,
}

struct Metrics {
    writes: Counter,
    batch_locations: Histogram,
    lag: Histogram,
    failures: Counter,
    queue: Gauge,
    resyncs: Counter,
    withheld: Counter,
    custom_tokens: Counter,
    access_tokens: Counter,
    lamp_writes: Counter,
    watchers: Gauge,
    blf_reads: Counter,
}

/// The multi-path PATCH body of a batch, and how many values were withheld from it.
///
/// This is where the plugin's promise is kept that the database never holds a BroadWorks
/// userId, a domain or an XSP detail: browsers read it, and the rules let each read its own
/// node only, but a node must not name other users either. Every user id, e-mail address and
/// SIP URI has an `@`; nothing the tree writes (states, numbers, names, uniqueIds) needs one.
/// A location whose path has one is left out; a value that has one is written as `null`.
fn write_body(batch: &Batch, written_ms: u64) -> (Map<String, Value>, usize) {
    let mut body = Map::new();
    let mut withheld = 0;
    for user in &batch.users {
        let node = format!("{ROOT}/{}", user.unique_id);
        for (path, value) in &user.locations {
            if tree::names_a_user(path) {
                withheld += 1;
                continue;
            }
            let mut value = value.clone();
            withheld += tree::withhold_user_names(&mut value);
            body.insert(format!("{node}/{path}"), value);
        }
        body.insert(format!("{node}/updated_ms"), json!(written_ms));
    }
    (body, withheld)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its map consistent before anything can panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A number in [0, 1) for retry jitter, from the clock's low bits.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

impl Plugin for FirebaseSync {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        config.validate()?;
        let mut databases = HashMap::new();
        for (id, provider) in &config.providers {
            databases.insert(id.clone(), Database::new(id, provider)?);
        }
        host.subscribe(XSI_EVENT)?;
        host.subscribe(SESSION_STARTED)?;
        host.subscribe(SESSION_ENDED)?;
        host.subscribe(OPERATOR_STATUS)?;
        host.subscribe(OPERATOR_ACTION)?;
        let (wake, inbox) = mpsc::channel(1);
        let users = Users::new(config.batch_window());
        let metrics = Metrics {
            writes: host.counter(
                "writes_total",
                "Multi-path writes to the database, by result (ok, failed).",
                &["provider", "result"],
            )?,
            batch_locations: host.histogram(
                "batch_locations",
                "Locations written per multi-path write.",
                &["provider"],
                &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
            )?,
            lag: host.histogram(
                "sync_lag_seconds",
                "From reading a change off its XSI-Events channel to the database accepting the write that carried it.",
                &["provider"],
                &[],
            )?,
            failures: host.counter(
                "failures_total",
                "Failed writes and token requests, by reason (unreachable, unauthorized, rejected, server_error, token).",
                &["provider", "reason"],
            )?,
            queue: host.gauge(
                "queue_users",
                "Users whose latest state waits to be written.",
                &["provider"],
            )?,
            resyncs: host.counter(
                "resyncs_total",
                "Users rewritten in full: first seen since start, after a failed write, or resynced by xsi-events.",
                &["provider"],
            )?,
            withheld: host.counter(
                "withheld_total",
                "Values not written because they named a user, a domain or a SIP URI (nothing the \
                 tree writes should: each one is a bug, and the value is written as null).",
                &["provider"],
            )?,
            custom_tokens: host.counter(
                "custom_tokens_total",
                "Custom tokens minted for browsers at login, by result (ok, failed).",
                &["provider", "result"],
            )?,
            access_tokens: host.counter(
                "access_tokens_total",
                "OAuth2 access tokens obtained for writes, by result (ok, failed).",
                &["provider", "result"],
            )?,
            lamp_writes: host.counter(
                "blf_lamp_writes_total",
                "Lamps written to (or deleted from) watchers' nodes.",
                &["provider"],
            )?,
            watchers: host.gauge(
                "blf_watchers",
                "Logged-in users whose lamps are kept.",
                &["provider"],
            )?,
            blf_reads: host.counter(
                "blf_reads_total",
                "Reads of a watcher's monitored users (BLF list or directory), by result (ok, failed).",
                &["provider", "result"],
            )?,
        };
        Ok(Self {
            host,
            config,
            databases,
            users: Mutex::new(users),
            unique_ids: Mutex::new(HashMap::new()),
            watching: Mutex::new(Watching::default()),
            wake: Mutex::new(wake),
            inbox: Mutex::new(Some(inbox)),
            metrics,
        })
    }
}

impl Database {
    fn new(id: &str, provider: &ProviderFirebase) -> Result<Self, Error> {
        let account = ServiceAccount::from_json(&provider.service_account_json(id)?)
            .map_err(|e| Error::msg(format!("providers.{id}.service_account: {e}")))?;
        let credential = match provider.database_secret(id)? {
            Some(secret) if secret.is_empty() => {
                return Err(Error::msg(format!(
                    "providers.{id}.database_secret: the secret is empty"
                )));
            }
            Some(secret) => Credential::Secret(secret),
            None => Credential::OAuth {
                token_url: provider
                    .token_url
                    .clone()
                    .or_else(|| account.token_uri.clone())
                    .ok_or_else(|| {
                        Error::msg(format!(
                            "providers.{id}.token_url: not set, and the service account has no token_uri"
                        ))
                    })?,
                token: Mutex::new(None),
            },
        };
        let url = provider.database_url.trim().to_owned();
        let (base, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let mut write_url = format!("{}/.json?", base.trim_end_matches('/'));
        if !query.is_empty() {
            write_url.push_str(query);
            write_url.push('&');
        }
        write_url.push_str("print=silent");
        Ok(Self {
            url,
            write_url,
            account,
            credential,
            custom_token_seconds: provider.custom_token_seconds,
            timeout: provider.timeout(),
        })
    }
}

impl EventConsumer for FirebaseSync {
    async fn on_event(&self, event: Event) -> Result<Option<Value>, Error> {
        match event.topic.as_str() {
            SESSION_STARTED => {
                let started: SessionStarted = event.json()?;
                if self.blf_policy(&started.provider).is_some() {
                    lock(&self.watching).session_started(&started.provider, &started.unique_id);
                    self.count_watchers(&started.provider);
                }
                Ok(self.login_report(&started))
            }
            SESSION_ENDED => {
                let ended: SessionEnded = event.json()?;
                let gone = lock(&self.watching).session_ended(&ended.unique_id, ended.last);
                if let Some(gone) = gone {
                    self.count_watchers(&ended.provider);
                    self.write_lamps(vec![gone], unix_ms());
                }
                Ok(None)
            }
            XSI_EVENT => {
                let bus: XsiEvent = event.json()?;
                self.on_change(bus).await;
                Ok(None)
            }
            OPERATOR_STATUS => {
                let report = StatusReport {
                    providers: lock(&self.users).status(unix_ms()),
                };
                Ok(Some(xsigate_plugin_sdk::serde_json::to_value(report)?))
            }
            OPERATOR_ACTION => {
                let action: OperatorAction = event.json()?;
                if action.action != UserAction::Resync {
                    return Ok(None);
                }
                // The user's node is written whole again, with what xsi-events reads now.
                let mut users = lock(&self.users);
                let report = if users.contains(&action.unique_id) {
                    users.resync(&action.unique_id, Instant::now());
                    ActionReport {
                        outcome: ActionOutcome::Done,
                        detail: "the user's node is written whole again".to_owned(),
                    }
                } else {
                    ActionReport {
                        outcome: ActionOutcome::NotFound,
                        detail: "nothing of the user's is kept here".to_owned(),
                    }
                };
                drop(users);
                self.wake();
                Ok(Some(xsigate_plugin_sdk::serde_json::to_value(report)?))
            }
            _ => Ok(None),
        }
    }
}

impl FirebaseSync {
    /// What the browser needs to read its own node: the custom token, where, and until when
    /// the token may be exchanged.
    fn login_report(&self, started: &SessionStarted) -> Option<Value> {
        let database = self.databases.get(&started.provider)?;
        let now_s = unix_ms() / 1000;
        match database.account.custom_token(
            &started.unique_id,
            now_s,
            database.custom_token_seconds,
        ) {
            Ok(token) => {
                self.metrics.custom_tokens.inc(&[&started.provider, "ok"]);
                Some(json!({
                    "database_url": database.url,
                    "path": format!("{ROOT}/{}", started.unique_id),
                    "uid": started.unique_id,
                    "custom_token": token,
                    "expires_at_ms": (now_s + database.custom_token_seconds) * 1000,
                }))
            }
            Err(e) => {
                self.metrics
                    .custom_tokens
                    .inc(&[&started.provider, "failed"]);
                self.host.log_fields(
                    LogLevel::Error,
                    "cannot mint a custom token",
                    &[("provider", &started.provider), ("error", &e.to_string())],
                );
                Some(json!({"state": "failed", "reason": "custom token"}))
            }
        }
    }

    async fn on_change(&self, bus: XsiEvent) {
        if !self.databases.contains_key(&bus.provider) || bus.unique_id.is_empty() {
            return;
        }
        let centers = self.call_centre_ids(&bus.state).await;
        let now = Instant::now();
        let resync = bus.source == Source::Resync;
        let received_ms = bus.received_ms.unwrap_or_else(unix_ms);
        {
            let mut users = lock(&self.users);
            let first = !users.contains(&bus.unique_id);
            users.change(&bus.provider, &bus.unique_id, received_ms, now, |node| {
                tree::apply(node, bus.package, &bus.event, &bus.state, &centers)
            });
            if resync && !first {
                users.resync(&bus.unique_id, now);
            }
            let lamps = lock(&self.watching).node_changed(
                &bus.unique_id,
                users.node(&bus.unique_id),
                received_ms,
            );
            self.apply_lamps(&mut users, lamps, received_ms, now);
        }
        self.wake();
    }

    /// Tells the worker a write may be due.
    fn wake(&self) {
        // A full channel already holds a wake-up for the worker.
        let _ = lock(&self.wake).try_send(());
    }

    /// The provider's BLF policy, unless it has none or is not synced.
    fn blf_policy(&self, provider: &str) -> Option<BlfPolicy> {
        let policy = self.config.providers.get(provider)?.blf;
        (policy != BlfPolicy::Off && self.databases.contains_key(provider)).then_some(policy)
    }

    fn count_watchers(&self, provider: &str) {
        let watchers = lock(&self.watching).watchers(provider);
        #[expect(clippy::cast_precision_loss, reason = "a gauge of users")]
        self.metrics.watchers.set(&[provider], watchers as f64);
    }

    /// Queues lamp writes into their watchers' nodes.
    fn apply_lamps(&self, users: &mut Users, lamps: Vec<LampWrite>, at_ms: u64, now: Instant) {
        for lamp in lamps {
            self.metrics.lamp_writes.inc(&[&lamp.provider]);
            users.change(&lamp.provider, &lamp.watcher, at_ms, now, |node| {
                tree::set_path(node, &lamp.path, lamp.value);
                vec![lamp.path.clone()]
            });
        }
    }

    fn write_lamps(&self, lamps: Vec<LampWrite>, at_ms: u64) {
        if lamps.is_empty() {
            return;
        }
        self.apply_lamps(&mut lock(&self.users), lamps, at_ms, Instant::now());
        self.wake();
    }

    /// Reads each watcher's monitored users when due (at login, then every
    /// `blf_refresh_seconds`), so that the lamps follow list and directory changes.
    async fn keep_lamps(&self) -> Result<(), Error> {
        loop {
            let due = lock(&self.watching).due(Instant::now(), |provider| {
                self.config
                    .providers
                    .get(provider)
                    .map_or(Duration::MAX, ProviderFirebase::blf_refresh)
            });
            for (watcher, provider) in due {
                let Some(policy) = self.blf_policy(&provider) else {
                    continue;
                };
                match self.monitored_users(&provider, policy, &watcher).await {
                    Ok(monitored) => {
                        self.metrics.blf_reads.inc(&[&provider, "ok"]);
                        let lamps = {
                            let users = lock(&self.users);
                            lock(&self.watching).set_monitored(
                                &watcher,
                                monitored,
                                Instant::now(),
                                unix_ms(),
                                |id| users.node(id),
                            )
                        };
                        self.write_lamps(lamps, unix_ms());
                    }
                    Err(e) => {
                        self.metrics.blf_reads.inc(&[&provider, "failed"]);
                        lock(&self.watching).refresh_failed(&watcher, Instant::now());
                        self.host.log_fields(
                            LogLevel::Warn,
                            "cannot read whom a user watches",
                            &[("provider", &provider), ("error", &e.to_string())],
                        );
                    }
                }
            }
            self.host.sleep(Duration::from_secs(1)).await?;
        }
    }

    /// Whom the watcher may watch under the policy, by uniqueId, with display names: read with
    /// the provider's master credentials.
    async fn monitored_users(
        &self,
        provider: &str,
        policy: BlfPolicy,
        watcher: &str,
    ) -> Result<BTreeMap<String, String>, Error> {
        let user_id = self
            .host
            .user_id(watcher)
            .await?
            .ok_or_else(|| Error::msg("the watcher's userId is unknown"))?;
        let records = match policy {
            BlfPolicy::Off => Vec::new(),
            BlfPolicy::List => {
                let path = xsigate_broadworks::user_path(&user_id, "services/BusyLampField");
                let body = self.read_as_master(provider, &path).await?;
                xsigate_broadworks::records_of(&body, "userDetails")
                    .map_err(|e| Error::msg(e.to_string()))?
            }
            BlfPolicy::Group | BlfPolicy::Enterprise => {
                let which = if policy == BlfPolicy::Group {
                    "directories/Group"
                } else {
                    "directories/Enterprise"
                };
                self.directory(provider, &user_id, which).await?
            }
        };
        let mut monitored = BTreeMap::new();
        for fields in records {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            let Some(id) = field("userId") else {
                continue;
            };
            if id.eq_ignore_ascii_case(&user_id) {
                continue;
            }
            let name = [field("firstName"), field("lastName")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            monitored.insert(self.unique_id(id).await?, name);
        }
        Ok(monitored)
    }

    /// An XSI-Actions document read with the provider's master credentials.
    async fn read_as_master(&self, provider: &str, path: &str) -> Result<Vec<u8>, Error> {
        let response = self
            .host
            .xsi(xsigate_plugin_sdk::XsiRequest::get(provider, path).master())
            .await?;
        if response.status != 200 {
            let resource = path.split('?').next().unwrap_or(path);
            let resource = resource.rsplit('/').next().unwrap_or(resource);
            return Err(Error::msg(format!(
                "reading {resource} answered {}",
                response.status
            )));
        }
        Ok(response.body)
    }

    /// Every entry of a user's group or enterprise directory, page by page.
    async fn directory(
        &self,
        provider: &str,
        user_id: &str,
        which: &str,
    ) -> Result<Vec<Vec<(String, String)>>, Error> {
        const PAGE: usize = 1000;
        let mut records = Vec::new();
        loop {
            let path = format!(
                "{}?start={}&results={PAGE}",
                xsigate_broadworks::user_path(user_id, which),
                records.len() + 1
            );
            let body = self.read_as_master(provider, &path).await?;
            let page = xsigate_broadworks::records(&body).map_err(|e| Error::msg(e.to_string()))?;
            let total: usize = xsigate_broadworks::element_text(&body, "totalAvailableRecords")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let empty = page.is_empty();
            records.extend(page);
            if empty || records.len() >= total {
                return Ok(records);
            }
        }
    }

    /// A user's uniqueId, from the cache or the host's store.
    async fn unique_id(&self, user_id: &str) -> Result<String, Error> {
        if let Some(id) = lock(&self.unique_ids).get(user_id) {
            return Ok(id.clone());
        }
        let id = self.host.unique_id(user_id).await?;
        lock(&self.unique_ids).insert(user_id.to_owned(), id.clone());
        Ok(id)
    }

    /// The uniqueIds of the call centres an agent event names, from the host's store (cached:
    /// a uniqueId never changes).
    async fn call_centre_ids(&self, state: &State) -> HashMap<String, String> {
        let State::Agent {
            call_centers: Some(memberships),
            ..
        } = state
        else {
            return HashMap::new();
        };
        let mut ids = HashMap::new();
        for membership in memberships {
            let Ok(unique_id) = self.unique_id(&membership.call_center).await else {
                continue;
            };
            ids.insert(membership.call_center.clone(), unique_id);
        }
        ids
    }

    fn update_depths(&self, users: &Users) {
        for id in self.databases.keys() {
            let depth = users
                .depths()
                .find(|(p, _)| *p == id.as_str())
                .map_or(0, |(_, d)| d);
            #[expect(
                clippy::cast_precision_loss,
                reason = "a gauge; counts stay far below 2^52"
            )]
            self.metrics.queue.set(&[id], depth as f64);
        }
    }

    async fn serve(&self, wake: &mut mpsc::Receiver<()>) -> Result<(), Error> {
        // Writes a stopped worker had in flight are unknown: their users are rewritten whole.
        lock(&self.users).recover(Instant::now());
        let mut writes = FuturesUnordered::new();
        loop {
            let now = Instant::now();
            // The queue gauge is set here, not per event: the worker wakes within a window of
            // any change anyway.
            let due = {
                let mut users = lock(&self.users);
                while let Some(batch) =
                    users.take_batch(now, self.config.batch_paths, self.config.writes_in_flight)
                {
                    writes.push(self.write(batch));
                }
                self.update_depths(&users);
                users.next_due(self.config.writes_in_flight)
            };
            let wait = due.map_or(IDLE, |at| at.saturating_duration_since(now).min(IDLE));
            let written = async {
                match writes.next().await {
                    Some(done) => done,
                    None => std::future::pending().await,
                }
            };
            let woken = async {
                if wake.next().await.is_none() {
                    // The plugin holds the sender while it lives; without it, only the timer.
                    std::future::pending::<()>().await;
                }
            };
            let timer = self.host.sleep(wait);
            match select(pin!(written), select(pin!(woken), pin!(timer))).await {
                Either::Left(((batch, ok), _)) => {
                    lock(&self.users).finish(batch, ok, Instant::now(), jitter());
                }
                Either::Right((Either::Right((slept, _)), _)) => slept?,
                Either::Right((Either::Left(_), _)) => {}
            }
        }
    }

    /// Sends one batch; gives it back with whether the database took it.
    async fn write(&self, batch: Batch) -> (Batch, bool) {
        let provider = batch.provider.clone();
        let Some(database) = self.databases.get(&provider) else {
            return (batch, true);
        };
        let (body, withheld) = write_body(&batch, unix_ms());
        if withheld > 0 {
            #[expect(clippy::cast_precision_loss, reason = "a count of values in one write")]
            self.metrics.withheld.inc_by(&[&provider], withheld as f64);
            self.host.log_fields(
                LogLevel::Error,
                "values naming a user were withheld from the database",
                &[("provider", &provider), ("count", &withheld.to_string())],
            );
        }
        let result = self.send(&provider, database, &Value::Object(body)).await;
        let written = matches!(result, Ok(()));
        let ok = match result {
            Ok(()) => true,
            Err(Failure::Rejected(status)) => {
                // The database refused the data itself: sending it again cannot help, and
                // the next change of these users writes their latest state anyway.
                self.metrics.failures.inc(&[&provider, "rejected"]);
                self.host.log_fields(
                    LogLevel::Error,
                    "the database refused a write",
                    &[("provider", &provider), ("status", &status.to_string())],
                );
                true
            }
            Err(failure) => {
                self.metrics.failures.inc(&[&provider, failure.reason()]);
                self.host.log_fields(
                    LogLevel::Warn,
                    "a database write failed; retrying",
                    &[("provider", &provider), ("reason", failure.reason())],
                );
                false
            }
        };
        self.metrics
            .writes
            .inc(&[&provider, if ok { "ok" } else { "failed" }]);
        if written {
            let done_ms = unix_ms();
            #[expect(clippy::cast_precision_loss, reason = "small counts and durations")]
            {
                self.metrics
                    .batch_locations
                    .observe(&[&provider], batch.locations() as f64);
                for user in &batch.users {
                    if let Some(since) = user.since_ms {
                        self.metrics
                            .lag
                            .observe(&[&provider], done_ms.saturating_sub(since) as f64 / 1000.0);
                    }
                }
            }
            let full = batch.users.iter().filter(|u| u.full).count();
            if full > 0 {
                #[expect(clippy::cast_precision_loss, reason = "small counts")]
                self.metrics.resyncs.inc_by(&[&provider], full as f64);
            }
        }
        (batch, ok)
    }

    async fn send(&self, provider: &str, database: &Database, body: &Value) -> Result<(), Failure> {
        let url = match &database.credential {
            Credential::Secret(secret) => format!(
                "{}&auth={}",
                database.write_url,
                utf8_percent_encode(secret, NON_ALPHANUMERIC)
            ),
            Credential::OAuth { .. } => database.write_url.clone(),
        };
        let mut request = HttpRequest::new("PATCH", &url)
            .json(body)
            .map_err(|_| Failure::Rejected(0))?
            .timeout(database.timeout);
        if let Credential::OAuth { .. } = &database.credential {
            let token = self.access_token(provider, database).await?;
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let response = self
            .host
            .http(request)
            .await
            .map_err(|_| Failure::Unreachable)?;
        match response.status {
            200..=299 => Ok(()),
            401 | 403 => {
                if let Credential::OAuth { token, .. } = &database.credential {
                    *lock(token) = None;
                }
                Err(Failure::Unauthorized)
            }
            400 | 413 => Err(Failure::Rejected(response.status)),
            _ => Err(Failure::ServerError),
        }
    }

    /// A valid access token for the provider's database: the cached one until its refresh
    /// time, else a new one from the JWT-bearer grant.
    async fn access_token(&self, provider: &str, database: &Database) -> Result<String, Failure> {
        let Credential::OAuth { token_url, token } = &database.credential else {
            return Err(Failure::Token);
        };
        let cached = lock(token).clone();
        if let Some(cached) = cached.filter(|t| Instant::now() < t.refresh_at) {
            return Ok(cached.value);
        }
        let result = self.fetch_token(database, token_url).await;
        self.metrics
            .access_tokens
            .inc(&[provider, if result.is_ok() { "ok" } else { "failed" }]);
        let fresh = result.map_err(|reason| {
            self.host.log_fields(
                LogLevel::Warn,
                "cannot obtain an access token for the database",
                &[("provider", provider), ("reason", reason)],
            );
            Failure::Token
        })?;
        let value = fresh.value.clone();
        *lock(token) = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(
        &self,
        database: &Database,
        token_url: &str,
    ) -> Result<AccessToken, &'static str> {
        let started = Instant::now();
        let assertion = database
            .account
            .token_assertion(token_url, unix_ms() / 1000)
            .map_err(|_| "signing failed")?;
        let form = format!(
            "grant_type={}&assertion={}",
            utf8_percent_encode(
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
                NON_ALPHANUMERIC
            ),
            utf8_percent_encode(&assertion, NON_ALPHANUMERIC)
        );
        let response = self
            .host
            .http(
                HttpRequest::post(token_url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form)
                    .timeout(database.timeout),
            )
            .await
            .map_err(|_| "token endpoint unreachable")?;
        granted_token(&response, started)
    }
}

/// The access token a token endpoint's answer grants, refreshed a margin before it expires.
fn granted_token(response: &HttpResponse, asked: Instant) -> Result<AccessToken, &'static str> {
    #[derive(Deserialize)]
    struct Granted {
        access_token: String,
        expires_in: u64,
    }
    if !response.is_success() {
        return Err("token endpoint refused the assertion");
    }
    let granted: Granted = response.json().map_err(|_| "unreadable token answer")?;
    if granted.access_token.is_empty() {
        return Err("empty access token");
    }
    let life = Duration::from_secs(granted.expires_in.min(TOKEN_LIFE_MAX.as_secs()));
    let margin = REFRESH_MARGIN.min(life / 2);
    Ok(AccessToken {
        value: granted.access_token,
        refresh_at: asked + life.saturating_sub(margin),
    })
}

/// Why a write did not land.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Unreachable,
    Unauthorized,
    Rejected(u16),
    ServerError,
    Token,
}

impl Failure {
    fn reason(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Unauthorized => "unauthorized",
            Self::Rejected(_) => "rejected",
            Self::ServerError => "server_error",
            Self::Token => "token",
        }
    }
}

impl BackgroundWorker for FirebaseSync {
    async fn run(&self) -> Result<(), Error> {
        let Some(mut inbox) = lock(&self.inbox).take() else {
            return Err(Error::msg("the firebase-sync worker is already running"));
        };
        let result = match select(pin!(self.serve(&mut inbox)), pin!(self.keep_lamps())).await {
            Either::Left((result, _)) | Either::Right((result, _)) => result,
        };
        *lock(&self.inbox) = Some(inbox);
        result
    }
}

xsigate_plugin_sdk::export_plugin!(FirebaseSync => EventConsumer, BackgroundWorker);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use xsigate_broadworks::bus::Package;
    use xsigate_plugin_sdk::serde_json::from_value;

    use super::*;
    use crate::queue::UserWrite;

    fn token_answer(body: &str) -> HttpResponse {
        HttpResponse {
            status: 200,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_token_endpoints_lifetime_is_capped_and_cannot_overflow_the_clock() {
        let asked = Instant::now();
        let huge = format!(r#"{{"access_token":"t","expires_in":{}}}"#, u64::MAX);
        let token = granted_token(&token_answer(&huge), asked).unwrap();
        assert!(token.refresh_at <= asked + TOKEN_LIFE_MAX);
        let normal = granted_token(
            &token_answer(r#"{"access_token":"t","expires_in":3600}"#),
            asked,
        )
        .unwrap();
        assert_eq!(
            normal.refresh_at,
            asked + Duration::from_secs(3600) - REFRESH_MARGIN
        );
        for refused in [
            r#"{"access_token":"","expires_in":3600}"#,
            "{",
            r#"{"expires_in":1}"#,
        ] {
            assert!(
                granted_token(&token_answer(refused), asked).is_err(),
                "{refused}"
            );
        }
    }

    fn batch(locations: Vec<(String, Value)>) -> Batch {
        Batch {
            provider: "acme".to_owned(),
            users: vec![UserWrite {
                unique_id: "u1".to_owned(),
                locations,
                full: true,
                since_ms: None,
            }],
        }
    }

    #[test]
    fn a_call_from_a_colleague_is_written_without_their_user_id_or_uri() {
        // What xsi-events publishes for a call from another user: their userId and SIP URI.
        let state: State = from_value(json!({
            "kind": "call",
            "call": {
                "call_id": "callhalf-1:0",
                "state": "Alerting",
                "personality": "Terminator",
                "remote_party": {
                    "name": "Bob",
                    "address": "sip:bob@acme.example",
                    "user_id": "bob@acme.example",
                    "call_type": "Group",
                },
            },
        }))
        .unwrap();
        let mut node = tree::Node::new();
        let changed = tree::apply(
            &mut node,
            Package::AdvancedCall,
            "CallReceivedEvent",
            &state,
            &HashMap::new(),
        );
        let locations = changed
            .into_iter()
            .map(|path| {
                let value = node["calls"]["callhalf-1:0"].clone();
                (path, value)
            })
            .collect();
        let (body, withheld) = write_body(&batch(locations), 1);
        assert_eq!(withheld, 0, "the tree itself names nobody");
        let text = Value::Object(body).to_string();
        assert!(!text.contains('@'), "{text}");
        assert!(text.contains("Bob"), "{text}");
    }

    #[test]
    fn values_and_paths_that_name_a_user_are_withheld_where_the_write_is_made() {
        let (body, withheld) = write_body(
            &batch(vec![
                (
                    "calls/c1".to_owned(),
                    json!({"remote": {"name": "bob@acme.example", "number": "+12025550101"}}),
                ),
                ("monitoring/x@acme.example".to_owned(), json!({"value": 1})),
                (
                    "agent".to_owned(),
                    json!({"call_centers": {"cc@acme.example": {}}}),
                ),
                ("dnd".to_owned(), json!({"active": true})),
            ]),
            7,
        );
        assert_eq!(withheld, 3);
        assert_eq!(
            Value::Object(body),
            json!({
                "users/u1/calls/c1": {"remote": {"name": null, "number": "+12025550101"}},
                "users/u1/agent": {"call_centers": {}},
                "users/u1/dnd": {"active": true},
                "users/u1/updated_ms": 7,
            })
        );
    }
}
