//! `srs-login`: call-centre agents are logged in to the provider's Genesys Screen Recording
//! Service (SRS) when they log in to the dialer, kept logged in while their session lives, and
//! logged out (`EndContactCenterSession`) when their last session ends: by logout, expiry or a
//! password change.
//!
//! The Client Login API (reference: `integrations.md` §3): every call carries the `Origin`
//! SRS expects. A login is `POST /api/v2/me` with the agent's Basic credentials and the login
//! configuration (`server`, `peer_server`, `place`, `devices`), asking for CSRF protection with
//! `X-Support-CSRFP: True`. SRS answers a session cookie and the CSRF token, which every later
//! POST carries. `GET /ping` on the cookie within every 60 seconds keeps the session; a 401 means
//! SRS dropped it, and the agent is logged in again. SRS accepts no single sign-on, so the
//! agent's password is kept, sealed by the host, for those logins.
//!
//! A recording-service failure never fails the dialer login: the login answer's report says
//! what happened (`logged_in`, `failed` with a reason, or `pending` while the host waits no
//! longer), and the worker retries with a growing delay.
//!
//! In `browser` mode SRS runs on the agent's own machine, reachable only from the agent's
//! browser: the report gives the browser the configuration and the steps instead.
//!
//! Among instances sharing a store, each agent is kept by one: the holder of the agent's lease
//! (`agent/<provider>/<uniqueId>`), with a record in the store (the sealed password and the
//! profile) from which another instance logs the agent in again if this one dies or hands the
//! agent over. A logout on another instance ends the lease, and its holder logs the agent out.

mod config;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};

use base64::Engine as _;
use xsigate_broadworks::{element_text, user_path};
use xsigate_plugin_sdk::serde_json::{self, Value, json};
use xsigate_plugin_sdk::topics::{
    Failing, OPERATOR_STATUS, ProviderStatus, SESSION_ENDED, SESSION_STARTED, SessionEnded,
    SessionStarted, StatusReport,
};
use xsigate_plugin_sdk::{
    BackgroundWorker, Counter, Error, Event, EventConsumer, Gauge, Host, HttpRequest, HttpResponse,
    LeaseLost, LogLevel, Manifest, Plugin, XsiRequest,
};

pub use config::{AgentProfile, Config, Mode, ProviderSrs};

/// How often the worker looks for pings and retries that are due.
const TICK: Duration = Duration::from_secs(1);
/// Retries of a failed login wait this long, doubling up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How often each provider's SRS version is read again.
const VERSION_EVERY: Duration = Duration::from_secs(600);
/// The sealing context of kept passwords.
const PASSWORD_CONTEXT: &str = "srs-login agent password";
/// Store keys and lease names of kept agents: `agent/<provider>/<uniqueId>`.
const AGENT_PREFIX: &str = "agent/";
/// Agents claimed at most per tick.
const CLAIMS_PER_TICK: u32 = 100;

fn agent_key(provider: &str, unique_id: &str) -> String {
    format!("{AGENT_PREFIX}{provider}/{unique_id}")
}

/// What another instance needs to keep an agent: kept in the store beside the agent's lease.
#[derive(serde::Serialize, serde::Deserialize)]
struct AgentRecord {
    provider: String,
    unique_id: String,
    user_id: String,
    /// Sealed under [`PASSWORD_CONTEXT`], base64.
    sealed_password: String,
    profile: Option<AgentProfile>,
}

pub struct SrsLogin {
    host: Host,
    providers: HashMap<String, ProviderSrs>,
    /// By uniqueId. Held only between awaits, never across one.
    agents: Mutex<HashMap<String, Agent>>,
    versions: Mutex<HashMap<String, (String, Instant)>>,
    metrics: Metrics,
    /// Agents whose leases the worker is to watch; taken by the worker while it runs.
    watch: futures_channel::mpsc::UnboundedSender<String>,
    watched: Mutex<Option<futures_channel::mpsc::UnboundedReceiver<String>>>,
}

/// Agents' sealed passwords and SRS cookies stay out of logs: only counts are shown.
impl std::fmt::Debug for SrsLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrsLogin")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("agents", &lock(&self.agents).len())
            .finish_non_exhaustive()
    }
}

struct Metrics {
    logins: Counter,
    logouts: Counter,
    keep_alive_failures: Counter,
    agents: Gauge,
    version: Gauge,
}

/// An agent with a live dialer session on a provider that records.
struct Agent {
    provider: String,
    user_id: String,
    sealed_password: Vec<u8>,
    profile: Option<AgentProfile>,
    /// The SRS session, once logged in.
    srs: Option<SrsSession>,
    /// When the next ping (logged in) or login attempt (not) is due.
    due: Instant,
    retry_delay: Duration,
    /// Why the last login failed, and since when the logins fail (ms since the epoch).
    failing: Option<(LoginFailure, u64)>,
    /// Bumped on every change made across an await, so a stale result is dropped.
    generation: u64,
}

impl Agent {
    /// Takes a login's outcome: ping from now on, or try again after a growing delay.
    fn settle(&mut self, result: Result<SrsSession, LoginFailure>, srs: &ProviderSrs) {
        let now = Instant::now();
        match result {
            Ok(session) => {
                self.srs = Some(session);
                self.due = now + srs.keep_alive();
                self.retry_delay = RETRY_FIRST;
                self.failing = None;
            }
            Err(failure) => {
                let since_ms = self
                    .failing
                    .map_or_else(xsigate_plugin_sdk::unix_ms, |(_, since)| since);
                self.failing = Some((failure, since_ms));
                self.srs = None;
                self.due = now + self.retry_delay;
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
            }
        }
    }
}

#[derive(Clone)]
struct SrsSession {
    cookie: String,
    csrf: Option<String>,
    rws: Rws,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rws {
    Primary,
    Peer,
}

impl Rws {
    fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Peer => "peer",
        }
    }
}

/// Why a login to SRS did not succeed; the names are the report's and the metric's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginFailure {
    /// SRS did not answer (down, unreachable, too slow).
    Unreachable,
    /// SRS refused the agent's credentials.
    Rejected,
    /// SRS could reach no Recording Web Services.
    RwsUnavailable,
    /// Anything else SRS answered.
    Refused,
}

impl LoginFailure {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Rejected => "rejected",
            Self::RwsUnavailable => "rws_unavailable",
            Self::Refused => "refused",
        }
    }
}

/// The report's reason, and the login metric's result, for a single-sign-on session.
const UNAVAILABLE_TO_SINGLE_SIGN_ON: &str = "single_sign_on";

/// A login, with the credentials the manifest's `session_credentials` brings.
struct Started {
    unique_id: String,
    provider: String,
    user_id: String,
    /// `None` for a single sign-on, which gives no password to log the agent in with.
    password: Option<String>,
}

impl TryFrom<SessionStarted> for Started {
    type Error = Error;

    fn try_from(started: SessionStarted) -> Result<Self, Error> {
        let credentials = started
            .credentials
            .ok_or_else(|| Error::msg("session.started came without the user's credentials"))?;
        Ok(Self {
            unique_id: started.unique_id,
            provider: started.provider,
            user_id: credentials.user_id,
            password: credentials.password,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Plugin for SrsLogin {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        config.validate()?;
        host.subscribe(SESSION_STARTED)?;
        host.subscribe(SESSION_ENDED)?;
        host.subscribe(OPERATOR_STATUS)?;
        let metrics = Metrics {
            logins: host.counter(
                "logins_total",
                "Agent logins to the Screen Recording Service, by result",
                &["provider", "result"],
            )?,
            logouts: host.counter(
                "logouts_total",
                "Agent logouts from the Screen Recording Service, by result",
                &["provider", "result"],
            )?,
            keep_alive_failures: host.counter(
                "keep_alive_failures_total",
                "Pings the Screen Recording Service did not answer or refused",
                &["provider"],
            )?,
            agents: host.gauge(
                "agents",
                "Agents logged in to the Screen Recording Service",
                &["provider"],
            )?,
            version: host.gauge(
                "version_info",
                "The Screen Recording Service's version (1 for the version it last reported)",
                &["provider", "version"],
            )?,
        };
        for (id, srs) in &config.providers {
            if srs.mode == Mode::Server {
                for result in [
                    "logged_in",
                    "unreachable",
                    "rejected",
                    "rws_unavailable",
                    "refused",
                    UNAVAILABLE_TO_SINGLE_SIGN_ON,
                ] {
                    metrics.logins.inc_by(&[id, result], 0.0);
                }
                for result in ["logged_out", "failed"] {
                    metrics.logouts.inc_by(&[id, result], 0.0);
                }
                metrics.keep_alive_failures.inc_by(&[id], 0.0);
                metrics.agents.set(&[id], 0.0);
            }
        }
        let (watch, watched) = futures_channel::mpsc::unbounded();
        Ok(Self {
            host,
            providers: config.providers.into_iter().collect(),
            agents: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            metrics,
            watch,
            watched: Mutex::new(Some(watched)),
        })
    }

    fn manifest(&self) -> Manifest {
        // The agent's password: SRS takes nothing but Basic credentials.
        Manifest {
            session_credentials: true,
            ..Manifest::default()
        }
    }
}

impl EventConsumer for SrsLogin {
    async fn on_event(&self, event: Event) -> Result<Option<Value>, Error> {
        match event.topic.as_str() {
            SESSION_STARTED => {
                let started: SessionStarted = event.json()?;
                self.started(started.try_into()?).await
            }
            SESSION_ENDED => {
                let ended: SessionEnded = event.json()?;
                self.ended(ended).await;
                Ok(None)
            }
            OPERATOR_STATUS => Ok(Some(serde_json::to_value(self.status())?)),
            _ => Ok(None),
        }
    }
}

impl BackgroundWorker for SrsLogin {
    async fn run(&self) -> Result<(), Error> {
        let Some(mut watched) = lock(&self.watched).take() else {
            return Err(Error::msg("the srs-login worker is already running"));
        };
        let result = self.serve(&mut watched).await;
        *lock(&self.watched) = Some(watched);
        result
    }
}

/// What wakes the worker.
enum Wake {
    Tick,
    Watch(Option<String>),
    Lost(String, Option<LeaseLost>),
}

impl SrsLogin {
    /// Pings, retries and claims every tick; hears when an agent's lease is lost.
    async fn serve(
        &self,
        watched: &mut futures_channel::mpsc::UnboundedReceiver<String>,
    ) -> Result<(), Error> {
        let mut losses: FuturesUnordered<BoxFuture<'static, (String, Option<LeaseLost>)>> =
            FuturesUnordered::new();
        let mut tick = self.host.sleep(TICK).boxed();
        loop {
            let wake = futures_util::future::poll_fn(|cx| {
                if let Poll::Ready(Some((name, lost))) = losses.poll_next_unpin(cx) {
                    return Poll::Ready(Wake::Lost(name, lost));
                }
                if let Poll::Ready(name) = watched.poll_next_unpin(cx) {
                    return Poll::Ready(Wake::Watch(name));
                }
                tick.poll_unpin(cx).map(|_| Wake::Tick)
            })
            .await;
            match wake {
                Wake::Watch(None) => return Ok(()),
                Wake::Watch(Some(name)) => losses.push(self.lost(name)),
                Wake::Lost(name, lost) => self.lease_lost(&name, lost).await,
                Wake::Tick => {
                    tick = self.host.sleep(TICK).boxed();
                    self.read_versions().await;
                    let now = Instant::now();
                    let due: Vec<(String, u64)> = lock(&self.agents)
                        .iter()
                        .filter(|(_, agent)| agent.due <= now)
                        .map(|(id, agent)| (id.clone(), agent.generation))
                        .collect();
                    for (unique_id, generation) in due {
                        self.keep_up(&unique_id, generation).await;
                    }
                    // A store that cannot answer now is asked again at the next tick.
                    if let Ok(claimed) = self.claim().await {
                        for name in claimed {
                            losses.push(self.lost(name));
                        }
                    }
                }
            }
        }
    }

    /// Waits until this instance loses an agent's lease.
    fn lost(&self, name: String) -> BoxFuture<'static, (String, Option<LeaseLost>)> {
        let leases = self.host.leases();
        async move {
            let lost = leases.lost(&name).await.ok().flatten();
            (name, lost)
        }
        .boxed()
    }

    /// An agent's lease went: ended (a logout elsewhere), the agent is logged out; taken or
    /// handed over, the agent is left to its new holder.
    async fn lease_lost(&self, name: &str, lost: Option<LeaseLost>) {
        let Some(unique_id) = name.rsplit('/').next() else {
            return;
        };
        match lost {
            Some(LeaseLost::Ended) => self.log_agent_out(unique_id).await,
            Some(LeaseLost::Taken | LeaseLost::HandedOver) => {
                if let Some(agent) = lock(&self.agents).remove(unique_id) {
                    self.count_agents(&agent.provider);
                }
            }
            // Not held (finished meanwhile), or the host could not say.
            None => {}
        }
    }

    /// Takes the agents nobody keeps (their instance died or handed them over), to log them in
    /// again here; returns the leases claimed.
    async fn claim(&self) -> Result<Vec<String>, Error> {
        let leases = self.host.leases();
        let store = self.host.store();
        let mut claimed = Vec::new();
        for lease in leases.claimable(AGENT_PREFIX, CLAIMS_PER_TICK).await? {
            let grant = leases.claim(&lease.name).await?;
            if !grant.granted {
                continue;
            }
            let record = store
                .get(&lease.name)
                .await?
                .and_then(|bytes| serde_json::from_slice::<AgentRecord>(&bytes).ok());
            let (Some(record), false) = (record, grant.ended) else {
                // Logged out meanwhile, or nothing to keep: the SRS session lapses by itself.
                store.delete(&lease.name).await?;
                leases.finish(&lease.name).await?;
                continue;
            };
            let Some(sealed_password) = base64_decode(&record.sealed_password) else {
                store.delete(&lease.name).await?;
                leases.finish(&lease.name).await?;
                continue;
            };
            lock(&self.agents).insert(
                record.unique_id,
                Agent {
                    provider: record.provider,
                    user_id: record.user_id,
                    sealed_password,
                    profile: record.profile,
                    srs: None,
                    due: Instant::now(),
                    retry_delay: RETRY_FIRST,
                    failing: None,
                    generation: 0,
                },
            );
            claimed.push(lease.name);
        }
        Ok(claimed)
    }
}

impl SrsLogin {
    /// Agents by provider, logged in to SRS or not, and those whose logins fail.
    fn status(&self) -> StatusReport {
        let mut providers: BTreeMap<String, ProviderStatus> = self
            .providers
            .keys()
            .map(|p| (p.clone(), ProviderStatus::default()))
            .collect();
        for agent in lock(&self.agents).values() {
            let status = providers.entry(agent.provider.clone()).or_default();
            let state = if agent.srs.is_some() {
                "agents_logged_in"
            } else {
                "agents_waiting"
            };
            *status.counts.entry(state.to_owned()).or_default() += 1;
            if let Some((failure, since_ms)) = agent.failing {
                status.failing.push(Failing {
                    user: agent.user_id.clone(),
                    reason: format!("screen-recording login {}", failure.as_str()),
                    since_ms,
                });
            }
        }
        for status in providers.values_mut() {
            for state in ["agents_logged_in", "agents_waiting"] {
                status.counts.entry(state.to_owned()).or_default();
            }
        }
        StatusReport { providers }
    }

    fn srs(&self, provider: &str) -> Option<&ProviderSrs> {
        self.providers.get(provider)
    }

    async fn started(&self, started: Started) -> Result<Option<Value>, Error> {
        let Some(srs) = self.srs(&started.provider) else {
            return Ok(None);
        };
        let existing = lock(&self.agents)
            .get(&started.unique_id)
            .map(|a| a.srs.is_some());
        if existing == Some(true) {
            // Another session of an agent already recorded: nothing more to do.
            return Ok(Some(json!({ "state": "logged_in" })));
        }
        let Some(password) = started.password.as_deref() else {
            // SRS takes nothing but the agent's own Basic credentials, in either mode, and a
            // single sign-on has none: say so rather than leave the agent unrecorded silently.
            self.metrics
                .logins
                .inc(&[&started.provider, UNAVAILABLE_TO_SINGLE_SIGN_ON]);
            return Ok(Some(json!({
                "state": "unavailable",
                "reason": UNAVAILABLE_TO_SINGLE_SIGN_ON,
            })));
        };
        let profile = self
            .profile(&started.provider, &started.user_id, password)
            .await;
        if srs.mode == Mode::Browser {
            return Ok(Some(browser_steps(srs, &started, profile.as_ref())));
        }
        // One instance keeps each agent: the holder of its lease.
        let name = agent_key(&started.provider, &started.unique_id);
        let leases = self.host.leases();
        let mut grant = leases.acquire(&name).await?;
        if grant.granted && grant.ended {
            // A logout no instance acted on yet: this login starts afresh.
            leases.finish(&name).await?;
            grant = leases.acquire(&name).await?;
        }
        if !grant.granted {
            // Another instance keeps the agent (another browser of the agent's).
            return Ok(Some(json!({ "state": "pending" })));
        }
        let sealed = self
            .host
            .seal(PASSWORD_CONTEXT, password.as_bytes())
            .await?;
        let record = AgentRecord {
            provider: started.provider.clone(),
            unique_id: started.unique_id.clone(),
            user_id: started.user_id.clone(),
            sealed_password: base64::engine::general_purpose::STANDARD.encode(&sealed),
            profile: profile.clone(),
        };
        self.host
            .store()
            .put(&name, &serde_json::to_vec(&record)?, None)
            .await?;
        let _ = self.watch.unbounded_send(name);
        // The agent is known before SRS is called: should this hook be cut short (its time
        // limit, a slow SRS), the worker retries the login.
        let generation = {
            let mut agents = lock(&self.agents);
            let agent = agents
                .entry(started.unique_id.clone())
                .or_insert_with(|| Agent {
                    provider: started.provider.clone(),
                    user_id: started.user_id.clone(),
                    sealed_password: Vec::new(),
                    profile: None,
                    srs: None,
                    due: Instant::now() + RETRY_FIRST,
                    retry_delay: RETRY_FIRST,
                    failing: None,
                    generation: 0,
                });
            agent.sealed_password = sealed;
            agent.profile.clone_from(&profile);
            agent.generation += 1;
            agent.generation
        };
        let result = match &profile {
            Some(profile) => self.log_in(srs, &started.provider, profile, password).await,
            None => Err(LoginFailure::Unreachable),
        };
        let report = match &result {
            Ok(session) => json!({ "state": "logged_in", "rws": session.rws.as_str() }),
            Err(failure) => {
                json!({ "state": "failed", "reason": failure.as_str(), "retrying": true })
            }
        };
        self.update(&started.unique_id, generation, |agent| {
            agent.settle(result, srs);
        });
        self.count_agents(&started.provider);
        Ok(Some(report))
    }

    async fn ended(&self, ended: SessionEnded) {
        if !ended.last {
            return;
        }
        if lock(&self.agents).contains_key(&ended.unique_id) {
            self.log_agent_out(&ended.unique_id).await;
        } else if self
            .srs(&ended.provider)
            .is_some_and(|srs| srs.mode == Mode::Server)
        {
            // Kept by another instance (or by none yet): its holder logs the agent out.
            let name = agent_key(&ended.provider, &ended.unique_id);
            if let Err(e) = self.host.leases().end(&name).await {
                self.host.log_fields(
                    LogLevel::Warn,
                    "screen recording logout could not be passed on",
                    &[("provider", &ended.provider), ("error", &e.to_string())],
                );
            }
        }
    }

    /// Logs a kept agent out of SRS and forgets it, here and in the store.
    async fn log_agent_out(&self, unique_id: &str) {
        let Some(agent) = lock(&self.agents).remove(unique_id) else {
            return;
        };
        let name = agent_key(&agent.provider, unique_id);
        let _ = self.host.store().delete(&name).await;
        let _ = self.host.leases().finish(&name).await;
        let Some(srs) = self.srs(&agent.provider) else {
            return;
        };
        if let Some(session) = &agent.srs {
            let result = self.log_out(srs, session).await;
            let label = if result.is_ok() {
                "logged_out"
            } else {
                "failed"
            };
            self.metrics.logouts.inc(&[&agent.provider, label]);
            if let Err(failure) = result {
                self.host.log_fields(
                    LogLevel::Warn,
                    "screen recording logout failed",
                    &[("provider", &agent.provider), ("reason", failure.as_str())],
                );
            }
        }
        self.count_agents(&agent.provider);
    }

    /// Pings a logged-in agent's session, or retries the login of one that is not.
    async fn keep_up(&self, unique_id: &str, generation: u64) {
        let Some((provider, user_id, sealed, profile, session)) =
            lock(&self.agents).get(unique_id).map(|a| {
                (
                    a.provider.clone(),
                    a.user_id.clone(),
                    a.sealed_password.clone(),
                    a.profile.clone(),
                    a.srs.clone(),
                )
            })
        else {
            return;
        };
        let Some(srs) = self.srs(&provider) else {
            return;
        };
        if let Some(session) = &session {
            match self.ping(srs, session).await {
                Ok(true) => {
                    self.update(unique_id, generation, |agent| {
                        agent.due = Instant::now() + srs.keep_alive();
                    });
                    return;
                }
                // SRS dropped the session: log in again below, now.
                Ok(false) => {}
                // Unanswered: try again soon, on the same session.
                Err(_) => {
                    self.metrics.keep_alive_failures.inc(&[&provider]);
                    self.update(unique_id, generation, |agent| {
                        agent.due = Instant::now() + RETRY_FIRST;
                    });
                    return;
                }
            }
            self.metrics.keep_alive_failures.inc(&[&provider]);
        }
        let password = match self.host.open(PASSWORD_CONTEXT, &sealed).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => return,
        };
        let profile = match profile {
            Some(profile) => Some(profile),
            None => self.profile(&provider, &user_id, &password).await,
        };
        let result = match &profile {
            Some(profile) => self.log_in(srs, &provider, profile, &password).await,
            None => Err(LoginFailure::Unreachable),
        };
        self.update(unique_id, generation, |agent| {
            agent.profile = profile;
            agent.settle(result, srs);
        });
        self.count_agents(&provider);
    }

    /// Applies a change to an agent unless the agent changed (logged out, logged in afresh)
    /// while the result was awaited.
    fn update(&self, unique_id: &str, generation: u64, change: impl FnOnce(&mut Agent)) {
        if let Some(agent) = lock(&self.agents)
            .get_mut(unique_id)
            .filter(|a| a.generation == generation)
        {
            change(agent);
            agent.generation += 1;
        }
    }

    fn count_agents(&self, provider: &str) {
        let count = lock(&self.agents)
            .values()
            .filter(|a| a.provider == provider && a.srs.is_some())
            .count();
        self.metrics.agents.set(&[provider], count as f64);
    }

    /// The agent's number and extension, from the profile the agent may read.
    async fn profile(&self, provider: &str, user_id: &str, password: &str) -> Option<AgentProfile> {
        let request =
            XsiRequest::get(provider, &user_path(user_id, "profile")).user(user_id, password);
        let response = self.host.xsi(request).await.ok()?;
        if response.status != 200 {
            return None;
        }
        Some(AgentProfile {
            user_id: user_id.to_owned(),
            number: element_text(&response.body, "number"),
            extension: element_text(&response.body, "extension"),
        })
    }

    /// Logs the agent in with its configuration; when SRS cannot reach the primary Recording Web
    /// Services, once more with the peer data centre first.
    async fn log_in(
        &self,
        srs: &ProviderSrs,
        provider: &str,
        profile: &AgentProfile,
        password: &str,
    ) -> Result<SrsSession, LoginFailure> {
        let mut result = self.log_in_to(srs, profile, password, Rws::Primary).await;
        if result.as_ref().err() == Some(&LoginFailure::RwsUnavailable) && srs.peer_server.is_some()
        {
            result = self.log_in_to(srs, profile, password, Rws::Peer).await;
        }
        let label = match &result {
            Ok(_) => "logged_in",
            Err(failure) => failure.as_str(),
        };
        self.metrics.logins.inc(&[provider, label]);
        if let Err(failure) = &result {
            self.host.log_fields(
                LogLevel::Warn,
                "screen recording login failed",
                &[("provider", provider), ("reason", failure.as_str())],
            );
        }
        result
    }

    async fn log_in_to(
        &self,
        srs: &ProviderSrs,
        profile: &AgentProfile,
        password: &str,
        rws: Rws,
    ) -> Result<SrsSession, LoginFailure> {
        // The preflight a browser would make: SRS answers it only for the origin it expects,
        // so a misconfigured origin shows here, before any credential is sent.
        let mut headers = "authorization, content-type".to_owned();
        if srs.csrf {
            headers.push_str(", x-support-csrfp");
        }
        let preflight = self
            .request(srs, "OPTIONS", "/api/v2/me")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", &headers);
        let allowed = self.send(preflight).await?;
        if !allowed.is_success()
            || allowed.header("access-control-allow-origin") != Some(&srs.origin)
        {
            return Err(LoginFailure::Refused);
        }
        let configuration = srs.login_configuration(profile, rws == Rws::Peer);
        let credentials = format!("{}:{password}", srs.login_name(&profile.user_id));
        let mut request = self
            .request(srs, "POST", "/api/v2/me")
            .header(
                "authorization",
                &format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials)
                ),
            )
            .json(&configuration)
            .map_err(|_| LoginFailure::Refused)?;
        if srs.csrf {
            request = request.header("x-support-csrfp", "True");
        }
        let response = self.send(request).await?;
        session_of(&response, srs.csrf, rws)
    }

    /// Whether SRS still holds the session; `Err` when it did not answer.
    async fn ping(&self, srs: &ProviderSrs, session: &SrsSession) -> Result<bool, LoginFailure> {
        let request = self
            .request(srs, "GET", "/ping")
            .header("cookie", &session.cookie);
        match self.send(request).await?.status {
            200..=299 => Ok(true),
            401 | 403 => Ok(false),
            _ => Err(LoginFailure::Unreachable),
        }
    }

    /// Sends a call to SRS; no answer in time is `Unreachable`.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, LoginFailure> {
        self.host
            .http(request)
            .await
            .map_err(|_| LoginFailure::Unreachable)
    }

    async fn log_out(&self, srs: &ProviderSrs, session: &SrsSession) -> Result<(), LoginFailure> {
        let mut request = self
            .request(srs, "POST", "/api/v2/me")
            .header("cookie", &session.cookie)
            .json(&json!({ "operationName": "EndContactCenterSession" }))
            .map_err(|_| LoginFailure::Refused)?;
        if let Some(token) = &session.csrf {
            request = request.header("x-csrf-token", token);
        }
        let response = self.send(request).await?;
        match response.status {
            200..=299 => Ok(()),
            // The session is already gone: the agent is logged out either way.
            401 => Ok(()),
            _ => Err(LoginFailure::Refused),
        }
    }

    /// Reads each server-mode provider's SRS version, now and then, into the version metric.
    async fn read_versions(&self) {
        for (id, srs) in self
            .providers
            .iter()
            .filter(|(_, s)| s.mode == Mode::Server)
        {
            let fresh = lock(&self.versions)
                .get(id)
                .is_some_and(|(_, at)| at.elapsed() < VERSION_EVERY);
            if fresh {
                continue;
            }
            let Ok(response) = self.host.http(self.request(srs, "GET", "/version")).await else {
                continue;
            };
            let Some(version) = version_of(&response) else {
                continue;
            };
            let previous =
                lock(&self.versions).insert(id.clone(), (version.clone(), Instant::now()));
            if let Some((old, _)) = previous.filter(|(old, _)| *old != version) {
                self.metrics.version.set(&[id, &old], 0.0);
            }
            self.metrics.version.set(&[id, &version], 1.0);
        }
    }

    fn request(&self, srs: &ProviderSrs, method: &str, path: &str) -> HttpRequest {
        HttpRequest::new(method, &format!("{}{path}", srs.url.trim_end_matches('/')))
            .header("origin", &srs.origin)
            .timeout(srs.timeout())
    }
}

/// What SRS's answer to a login means: the agent's session (its cookies, and the CSRF token
/// when the service protects with one), or why there is none.
fn session_of(response: &HttpResponse, csrf: bool, rws: Rws) -> Result<SrsSession, LoginFailure> {
    match response.status {
        200..=299 => {}
        401 | 403 => return Err(LoginFailure::Rejected),
        502..=504 => return Err(LoginFailure::RwsUnavailable),
        _ => return Err(LoginFailure::Refused),
    }
    let cookie = cookies(response).ok_or(LoginFailure::Refused)?;
    Ok(SrsSession {
        cookie,
        csrf: csrf
            .then(|| response.header("x-csrf-token").map(str::to_owned))
            .flatten(),
        rws,
    })
}

/// The version a successful `/version` answer reports, when it is a short string.
fn version_of(response: &HttpResponse) -> Option<String> {
    let version = response
        .json::<Value>()
        .ok()
        .and_then(|v| v.get("version")?.as_str().map(str::to_owned));
    version.filter(|v| response.is_success() && v.len() <= 64)
}

/// The `name=value` pairs of every cookie SRS set, as one `Cookie` header.
fn cookies(response: &HttpResponse) -> Option<String> {
    let pairs: Vec<&str> = response
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, value)| value.split(';').next())
        .map(str::trim)
        .filter(|pair| pair.contains('='))
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("; "))
}

/// What the agent's browser needs to log in to the SRS on its own machine: the login
/// configuration and the calls to make, in order. The password is the one the agent just typed;
/// it is never sent back.
fn browser_steps(srs: &ProviderSrs, started: &Started, profile: Option<&AgentProfile>) -> Value {
    let fallback = AgentProfile {
        user_id: started.user_id.clone(),
        number: None,
        extension: None,
    };
    let configuration = srs.login_configuration(profile.unwrap_or(&fallback), false);
    json!({
        "state": "browser",
        "srs_url": srs.url,
        "login_name": srs.login_name(&started.user_id),
        "configuration": configuration,
        "keep_alive_seconds": srs.keep_alive_seconds,
        "steps": [
            { "method": "OPTIONS", "path": "/api/v2/me" },
            {
                "method": "POST",
                "path": "/api/v2/me",
                "headers": { "Authorization": "Basic <login_name:password>", "X-Support-CSRFP": "True" },
                "body": "configuration",
                "keep": ["session cookie", "X-CSRF-TOKEN"],
            },
            { "method": "GET", "path": "/ping", "every_seconds": srs.keep_alive_seconds },
            {
                "method": "POST",
                "path": "/api/v2/me",
                "headers": { "X-CSRF-Token": "<X-CSRF-TOKEN>" },
                "body": { "operationName": "EndContactCenterSession" },
                "when": "logout",
            },
        ],
    })
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

xsigate_plugin_sdk::export_plugin!(SrsLogin => EventConsumer, BackgroundWorker);
