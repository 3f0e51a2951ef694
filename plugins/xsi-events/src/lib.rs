//! `xsi-events`: keeps BroadWorks XSI-Events alive for the gateway's users and publishes what
//! happens to them, typed, on the host's event bus (reference `xsi.md` §4–5).
//!
//! For each channel set (one per logged-in user, or one per service provider or group with the
//! provider's master credentials) the plugin:
//!
//! - MUST open the channel on one XSP and read its chunked stream, document by document;
//! - MUST heartbeat the channel every `heartbeat_seconds`, and acknowledge every event except
//!   `ChannelTerminatedEvent`, both on the XSP that holds the stream (pinned through the host);
//! - MUST subscribe the configured packages to the set, and refresh channel and subscriptions
//!   at half of the lifetime the XSP granted;
//! - MUST, when a channel is lost (its stream ends, it falls silent past `silence_seconds`, its
//!   heartbeat is refused, or the XSP terminates it), open it again at once, through another
//!   XSP when that one cannot be reached, then back off with jitter; and after any such gap
//!   resync the state through XSI-Actions (and by refreshing subscriptions, which BroadWorks
//!   answers with the targets' current state), so consumers converge;
//! - MUST keep what it needs to resume in the host's store (the user's password sealed by the
//!   host), so an xsigate restart resumes channels and subscriptions without a new login;
//! - MUST delete the subscriptions and the channel when the user's last session ends;
//! - MUST acknowledge events it cannot use with the status BroadWorks defines (400 for an
//!   event it cannot process, 481 for an unknown subscription, 404 for an unknown channel),
//!   count them and documents that are not XML (which have no event id to acknowledge), and go
//!   on with the channel.
//!
//! Events go on the bus as topic `xsi.event` (`xsigate_plugin_sdk::topics::XSI_EVENT`), JSON
//! of `xsigate_broadworks::bus::XsiEvent`: `source` is `event` or `resync`, `state` a [`State`].

mod channel;
mod config;
mod document;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod operator;
mod state;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use futures_channel::mpsc;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use xsigate_plugin_sdk::serde_json::Value;
use xsigate_plugin_sdk::topics::{
    ActionOutcome, ActionReport, OPERATOR_ACTION, OPERATOR_STATUS, OperatorAction, SESSION_ENDED,
    SESSION_STARTED, SessionEnded, SessionStarted, UserAction,
};
use xsigate_plugin_sdk::{
    BackgroundWorker, Counter, Error, Event, EventConsumer, Gauge, Histogram, Host, LeaseGrant,
    LeaseLost, LoginLevel, Manifest, Plugin,
};

pub use config::{ChannelLevel, Config, Package, ProviderEvents};
pub use state::State;

/// Store keys of channel sets: `set/<provider>/<uniqueId>/<channelSetId>`, or
/// `set/<provider>/*/<channelSetId>` for a provider-level set. A set runs under the key without
/// its channel set id, so a user's new set never shares a record with one still closing.
const SET_PREFIX: &str = "set/";
const PROVIDER_SET: &str = "*";
/// How often the worker looks for sets whose instance died or handed them over: a graceful
/// upgrade leaves a set without a channel for about this long.
const CLAIM_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
/// Sets claimed at most per look, so that one tick cannot hold up logins for long.
const CLAIMS_PER_TICK: u32 = 200;
/// Looks at which a login or logout the store could not take is tried again (about 10 s).
const FOLLOW_ATTEMPTS: u32 = 40;

pub struct XsiEvents {
    host: Host,
    config: Config,
    commands: mpsc::UnboundedSender<Command>,
    /// Taken by the worker while it runs; put back if it stops, for its next start.
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    metrics: Metrics,
    /// Channel sets by provider and state, for the `channels` gauge.
    channel_states: Mutex<HashMap<(String, channel::Phase), i64>>,
    /// Users who logged in to a provider kept at a provider level, by provider: BroadWorks
    /// sends no initial state for such subscriptions, so the provider's set reads theirs.
    logged_in: Mutex<HashMap<String, BTreeSet<String>>>,
    /// The kept sets as the operator console sees them, by store key.
    views: Mutex<HashMap<String, operator::SetView>>,
}

/// Passwords never format: only the configuration's providers are shown.
impl std::fmt::Debug for XsiEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XsiEvents")
            .field(
                "providers",
                &self.config.providers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

struct Metrics {
    channels: Gauge,
    heartbeats: Counter,
    events: Counter,
    ack_seconds: Histogram,
    ack_failures: Counter,
    reconnects: Counter,
    failovers: Counter,
    subscription_failures: Counter,
    resyncs: Counter,
}

/// What the event consumer asks of the worker.
enum Command {
    Start {
        provider: String,
        unique_id: String,
        user_id: String,
        /// `None` for a single sign-on: the set opens with the master's credentials.
        password: Option<String>,
    },
    Stop {
        provider: String,
        unique_id: String,
    },
    /// An operator's [`OperatorAction`]; the report goes back to the console.
    Operator {
        action: OperatorAction,
        report: futures_channel::oneshot::Sender<ActionReport>,
    },
}

/// Why a set starts, which decides what it does first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A login: a new set, nothing missed yet.
    Login,
    /// Kept in the store from before a restart: events may have been missed.
    Resumed,
    /// An operator's reopen: a new set for a user whose events may have been missed.
    Reopened,
}

/// What is kept to resume a channel set after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SetRecord {
    provider: String,
    /// The user whose credentials open the set; `None` for the provider's master credentials.
    user_id: Option<String>,
    /// The user's password, sealed by the host under [`password_context`]; `None` with a
    /// `user_id` for a single-sign-on user, whose set the master's credentials open.
    sealed_password: Option<String>,
    channel_set_id: String,
    subscriptions: Vec<SubscriptionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SubscriptionRecord {
    id: String,
    package: Package,
    /// Unix seconds when the XSP lets it expire, and the lifetime it granted.
    expires_at: u64,
    granted: u64,
}

/// The key a set runs under: its record's store key without the channel set id.
fn set_key(provider: &str, owner: &str) -> String {
    format!("{SET_PREFIX}{provider}/{owner}")
}

/// Binds a sealed password to its user: a record's password cannot be moved to another user.
fn password_context(provider: &str, user_id: &str) -> String {
    format!("xsi-events password {provider} {user_id}")
}

impl XsiEvents {
    /// Users of `provider` who logged in since the last call, for its provider-level set.
    pub(crate) fn take_logged_in(&self, provider: &str) -> BTreeSet<String> {
        lock(&self.logged_in).remove(provider).unwrap_or_default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Plugin for XsiEvents {
    type Config = Config;

    fn init(host: Host, config: Config) -> Result<Self, Error> {
        for (provider, events) in &config.providers {
            events.validate(provider)?;
        }
        host.subscribe(SESSION_STARTED)?;
        host.subscribe(SESSION_ENDED)?;
        host.subscribe(OPERATOR_STATUS)?;
        host.subscribe(OPERATOR_ACTION)?;
        let (commands, inbox) = mpsc::unbounded();
        let metrics = Metrics {
            channels: host.gauge(
                "channels",
                "Channel sets by state: open (a channel is streaming) or connecting.",
                &["provider", "state"],
            )?,
            heartbeats: host.counter(
                "heartbeats_total",
                "Channel heartbeats sent, by result (ok, failed).",
                &["provider", "result"],
            )?,
            events: host.counter(
                "events_total",
                "Events received, by package (unknown and malformed ones too).",
                &["provider", "package"],
            )?,
            ack_seconds: host.histogram(
                "ack_seconds",
                "Time from reading an event off its channel to the XSP's answer to its acknowledgement.",
                &["provider"],
                &[],
            )?,
            ack_failures: host.counter(
                "ack_failures_total",
                "Acknowledgements the XSP did not accept or that got no answer.",
                &["provider"],
            )?,
            reconnects: host.counter(
                "reconnects_total",
                "Channels lost and opened again, by why they were lost.",
                &["provider", "reason"],
            )?,
            failovers: host.counter(
                "failovers_total",
                "Channels opened again on another XSP than the one lost.",
                &["provider"],
            )?,
            subscription_failures: host.counter(
                "subscription_failures_total",
                "Subscriptions that could not be created or refreshed.",
                &["provider", "package"],
            )?,
            resyncs: host.counter(
                "resyncs_total",
                "State resyncs after a gap in a channel set's events.",
                &["provider"],
            )?,
        };
        // Every series a dashboard or alert watches exists from the start, at zero.
        for (provider, events) in &config.providers {
            let provider = provider.as_str();
            for counter in [metrics.ack_failures, metrics.failovers, metrics.resyncs] {
                counter.inc_by(&[provider], 0.0);
            }
            for result in ["ok", "failed"] {
                metrics.heartbeats.inc_by(&[provider, result], 0.0);
            }
            for loss in channel::Loss::ALL {
                metrics.reconnects.inc_by(&[provider, loss.as_str()], 0.0);
            }
            for package in &events.packages {
                metrics
                    .subscription_failures
                    .inc_by(&[provider, package.name()], 0.0);
            }
        }
        Ok(Self {
            host,
            config,
            commands,
            inbox: Mutex::new(Some(inbox)),
            metrics,
            channel_states: Mutex::new(HashMap::new()),
            logged_in: Mutex::new(HashMap::new()),
            views: Mutex::new(HashMap::new()),
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            session_credentials: true,
            ..Manifest::default()
        }
    }
}

impl EventConsumer for XsiEvents {
    async fn on_event(&self, event: Event) -> Result<Option<Value>, Error> {
        let command = match event.topic.as_str() {
            SESSION_STARTED => {
                let started: SessionStarted = event.json()?;
                if started.level != LoginLevel::User {
                    return Ok(None);
                }
                if self.settings(&started.provider).level != ChannelLevel::User {
                    // The provider's set carries this user's events already; what it lacks is
                    // the user's state until the next change.
                    if let Some(credentials) = started.credentials {
                        lock(&self.logged_in)
                            .entry(started.provider)
                            .or_default()
                            .insert(credentials.user_id);
                    }
                    return Ok(None);
                }
                // The manifest declares `session_credentials`, so the host always sends them.
                let credentials = started.credentials.ok_or_else(|| {
                    Error::msg("session.started came without the user's credentials")
                })?;
                Command::Start {
                    provider: started.provider,
                    unique_id: started.unique_id,
                    user_id: credentials.user_id,
                    password: credentials.password,
                }
            }
            SESSION_ENDED => {
                let ended: SessionEnded = event.json()?;
                if !ended.last {
                    return Ok(None);
                }
                Command::Stop {
                    provider: ended.provider,
                    unique_id: ended.unique_id,
                }
            }
            OPERATOR_STATUS => {
                return Ok(Some(xsigate_plugin_sdk::serde_json::to_value(
                    self.status(),
                )?));
            }
            OPERATOR_ACTION => {
                let action: OperatorAction = event.json()?;
                let (report, reported) = futures_channel::oneshot::channel();
                self.commands
                    .unbounded_send(Command::Operator { action, report })
                    .map_err(|_| Error::msg("the xsi-events worker is gone"))?;
                let report = reported.await.unwrap_or(ActionReport {
                    outcome: ActionOutcome::Failed,
                    detail: "the channel-set worker stopped".to_owned(),
                });
                return Ok(Some(xsigate_plugin_sdk::serde_json::to_value(report)?));
            }
            _ => return Ok(None),
        };
        self.commands
            .unbounded_send(command)
            .map_err(|_| Error::msg("the xsi-events worker is gone"))?;
        Ok(None)
    }
}

impl BackgroundWorker for XsiEvents {
    async fn run(&self) -> Result<(), Error> {
        let Some(mut inbox) = lock(&self.inbox).take() else {
            return Err(Error::msg("the xsi-events worker is already running"));
        };
        let result = self.serve(&mut inbox).await;
        *lock(&self.inbox) = Some(inbox);
        result
    }
}

/// The channel sets the worker keeps, by the key they run under.
struct Sets<'a> {
    plugin: &'a XsiEvents,
    /// How to stop each, and which start it was: a set that ended must not take its key's
    /// entry from a newer set that started under the same key while it was closing.
    running: HashMap<String, (futures_channel::oneshot::Sender<Stop>, u64)>,
    futures: FuturesUnordered<futures_util::future::BoxFuture<'a, (String, u64)>>,
    starts: u64,
}

impl<'a> Sets<'a> {
    fn start(&mut self, key: String, record: SetRecord, origin: Origin) {
        let (stop, stopped) = futures_channel::oneshot::channel();
        self.starts += 1;
        let start = self.starts;
        self.running.insert(key.clone(), (stop, start));
        let plugin = self.plugin;
        self.futures.push(
            async move {
                plugin.keep_set(&key, record, origin, stopped).await;
                (key, start)
            }
            .boxed(),
        );
    }

    /// Resumes a set whose lease this instance just claimed: its record is read in the set's
    /// own future, so that many claims at once open their channels side by side.
    fn resume_claimed(&mut self, key: String, ended: bool) {
        let (stop, stopped) = futures_channel::oneshot::channel();
        self.starts += 1;
        let start = self.starts;
        self.running.insert(key.clone(), (stop, start));
        let plugin = self.plugin;
        self.futures.push(
            async move {
                plugin.resume_claimed(&key, ended, stopped).await;
                (key, start)
            }
            .boxed(),
        );
    }

    fn stop(&mut self, key: &str, how: Stop) {
        if let Some((stop, _)) = self.running.remove(key) {
            let _ = stop.send(how);
        }
    }

    fn ended(&mut self, key: &str, start: u64) {
        if self.running.get(key).is_some_and(|(_, s)| *s == start) {
            self.running.remove(key);
        }
    }
}

impl XsiEvents {
    fn settings(&self, provider: &str) -> ProviderEvents {
        self.config
            .providers
            .get(provider)
            .cloned()
            .unwrap_or_default()
    }

    /// Takes the sets the store holds that no instance keeps, starts provider-level sets, then
    /// follows logins and logouts, and claims sets whose instance died or handed them over.
    /// Every channel set runs as one future of this one, under its lease.
    async fn serve(&self, inbox: &mut mpsc::UnboundedReceiver<Command>) -> Result<(), Error> {
        let mut sets = Sets {
            plugin: self,
            running: HashMap::new(),
            futures: FuturesUnordered::new(),
            starts: 0,
        };
        let store = self.host.store();
        let mut kept: Vec<String> = store
            .keys(SET_PREFIX)
            .await?
            .into_iter()
            .filter_map(|key| key.rsplit_once('/').map(|(running, _)| running.to_owned()))
            .collect();
        kept.dedup();
        for running_key in kept {
            self.claim(&mut sets, &running_key).await?;
        }
        for (provider, settings) in &self.config.providers {
            let key = set_key(provider, PROVIDER_SET);
            if settings.level == ChannelLevel::User || sets.running.contains_key(&key) {
                continue;
            }
            let leases = self.host.leases();
            match leases.acquire(&key).await? {
                LeaseGrant { granted: false, .. } => continue,
                LeaseGrant { ended: true, .. } => {
                    leases.finish(&key).await?;
                    if !leases.acquire(&key).await?.granted {
                        continue;
                    }
                }
                LeaseGrant { .. } => {}
            }
            if self.user_record(provider, PROVIDER_SET).await?.is_some() {
                // Kept by an instance that just handed it over: resume it.
                self.claim(&mut sets, &key).await?;
                continue;
            }
            let record = SetRecord {
                provider: provider.clone(),
                user_id: None,
                sealed_password: None,
                channel_set_id: channel::new_set_id(),
                subscriptions: Vec::new(),
            };
            sets.start(key, record, Origin::Login);
        }
        let mut claim_tick = self.host.sleep(CLAIM_INTERVAL).boxed();
        // Logins and logouts the store could not take yet, with the attempts so far.
        let mut retries: Vec<(Command, u32)> = Vec::new();
        loop {
            let next = futures_util::future::poll_fn(|cx| {
                if let Poll::Ready(Some((key, start))) = sets.futures.poll_next_unpin(cx) {
                    return Poll::Ready(Wake::Ended(key, start));
                }
                if claim_tick.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Wake::Claim);
                }
                inbox.poll_next_unpin(cx).map(Wake::Command)
            })
            .await;
            match next {
                Wake::Ended(key, start) => sets.ended(&key, start),
                Wake::Claim => {
                    claim_tick = self.host.sleep(CLAIM_INTERVAL).boxed();
                    for (command, attempt) in std::mem::take(&mut retries) {
                        self.follow(&mut sets, command, attempt, &mut retries).await;
                    }
                    // A store that cannot answer now is asked again at the next tick.
                    if let Ok(claimable) = self
                        .host
                        .leases()
                        .claimable(SET_PREFIX, CLAIMS_PER_TICK)
                        .await
                    {
                        for lease in claimable {
                            if !sets.running.contains_key(&lease.name) {
                                let _ = self.claim(&mut sets, &lease.name).await;
                            }
                        }
                    }
                }
                Wake::Command(None) => return Ok(()),
                Wake::Command(Some(command @ (Command::Start { .. } | Command::Stop { .. }))) => {
                    self.follow(&mut sets, command, 0, &mut retries).await;
                }
                Wake::Command(Some(Command::Operator { action, report })) => {
                    let outcome = match action.action {
                        UserAction::ReopenChannelSet => self.reopen(&mut sets, &action).await,
                        UserAction::Resync => {
                            let plugin = self;
                            sets.futures.push(
                                async move {
                                    let _ = report.send(plugin.resync_user(&action).await);
                                    // Start 0 is no set's: ending it touches nothing.
                                    (String::new(), 0)
                                }
                                .boxed(),
                            );
                            continue;
                        }
                    };
                    let _ = report.send(outcome);
                }
            }
        }
    }

    /// Follows a login (opens the user's set here, unless another instance keeps it) or a
    /// logout (closes it, wherever it runs). One the store cannot take now is tried again at
    /// the next claims, for a while: the worker and the other sets go on meanwhile.
    async fn follow(
        &self,
        sets: &mut Sets<'_>,
        command: Command,
        attempt: u32,
        retries: &mut Vec<(Command, u32)>,
    ) {
        let result = match &command {
            Command::Start {
                provider,
                unique_id,
                user_id,
                password,
            } => {
                self.start_user_set(sets, provider, unique_id, user_id, password.as_deref())
                    .await
            }
            Command::Stop {
                provider,
                unique_id,
            } => self.stop_user_set(sets, provider, unique_id).await,
            Command::Operator { .. } => Ok(()),
        };
        if let Err(e) = result {
            if attempt < FOLLOW_ATTEMPTS {
                retries.push((command, attempt + 1));
            } else {
                self.host.warn(&format!(
                    "xsi-events: a login or logout could not be followed: {e}"
                ));
            }
        }
    }

    async fn start_user_set(
        &self,
        sets: &mut Sets<'_>,
        provider: &str,
        unique_id: &str,
        user_id: &str,
        password: Option<&str>,
    ) -> Result<(), Error> {
        let key = set_key(provider, unique_id);
        if sets.running.contains_key(&key) {
            return Ok(());
        }
        let leases = self.host.leases();
        let grant = leases.acquire(&key).await?;
        if !grant.granted {
            // Another instance keeps the user's set.
            return Ok(());
        }
        if grant.ended {
            // The user logged out and in again before the set's last holder closed it: close
            // that one, then open a new set.
            if let Some((record_key, record)) = self.user_record(provider, unique_id).await? {
                let settings = self.settings(provider);
                if let Ok(mut old) =
                    channel::ChannelSet::new(self, record_key, record, settings).await
                {
                    old.close().await;
                }
            }
            leases.finish(&key).await?;
            if !leases.acquire(&key).await?.granted {
                return Ok(());
            }
        }
        let sealed_password = match password {
            Some(password) => {
                let context = password_context(provider, user_id);
                let sealed = self.host.seal(&context, password.as_bytes()).await?;
                Some(base64_encode(&sealed))
            }
            None => None,
        };
        let record = SetRecord {
            provider: provider.to_owned(),
            user_id: Some(user_id.to_owned()),
            sealed_password,
            channel_set_id: channel::new_set_id(),
            subscriptions: Vec::new(),
        };
        sets.start(key, record, Origin::Login);
        Ok(())
    }

    async fn stop_user_set(
        &self,
        sets: &mut Sets<'_>,
        provider: &str,
        unique_id: &str,
    ) -> Result<(), Error> {
        let key = set_key(provider, unique_id);
        if sets.running.contains_key(&key) {
            sets.stop(&key, Stop::ForGood);
            return Ok(());
        }
        // The set runs on another instance (or on none): its holder closes it.
        self.host.leases().end(&key).await
    }

    /// Takes the lease of a kept set nobody keeps, and resumes the set (or, if its user logged
    /// out meanwhile, closes it for good).
    async fn claim(&self, sets: &mut Sets<'_>, running_key: &str) -> Result<(), Error> {
        let grant = self.host.leases().claim(running_key).await?;
        if grant.granted {
            sets.resume_claimed(running_key.to_owned(), grant.ended);
        }
        Ok(())
    }

    async fn resume_claimed(
        &self,
        running_key: &str,
        ended: bool,
        stopped: futures_channel::oneshot::Receiver<Stop>,
    ) {
        let leases = self.host.leases();
        let record = match self.kept_record(running_key).await {
            Ok(record) => record,
            Err(e) => {
                // Handed over again, so that another instance (or this one's next claim) tries.
                self.host.warn(&format!(
                    "xsi-events: a claimed channel set could not be read: {e}"
                ));
                let _ = leases.release(running_key).await;
                return;
            }
        };
        match record {
            Some((_, record)) if !ended => {
                self.keep_set(running_key, record, Origin::Resumed, stopped)
                    .await;
            }
            Some((key, record)) => {
                // Boxed: a future holds room for its largest branch, and the one above is the
                // set kept for hours.
                Box::pin(async {
                    let settings = self.settings(&record.provider);
                    if let Ok(mut set) = channel::ChannelSet::new(self, key, record, settings).await
                    {
                        set.close().await;
                    }
                })
                .await;
                let _ = leases.finish(running_key).await;
            }
            None => {
                let _ = leases.finish(running_key).await;
            }
        }
    }

    /// The record kept under a running key, and its store key; unreadable ones are dropped.
    async fn kept_record(&self, running_key: &str) -> Result<Option<(String, SetRecord)>, Error> {
        let store = self.host.store();
        for key in store.keys(&format!("{running_key}/")).await? {
            let Some(bytes) = store.get(&key).await? else {
                continue;
            };
            match xsigate_plugin_sdk::serde_json::from_slice::<SetRecord>(&bytes) {
                Ok(record) => return Ok(Some((key, record))),
                Err(e) => {
                    self.host.warn(&format!(
                        "xsi-events: a kept channel set is unreadable ({e}); dropped"
                    ));
                    store.delete(&key).await?;
                }
            }
        }
        Ok(None)
    }

    /// Keeps one channel set while this instance holds its lease: until it is stopped here or
    /// asked to end elsewhere (then it is deleted on the XSP and in the store, and the lease
    /// finished), or the lease goes to another instance (then only this instance's channel is
    /// closed, and the next holder resumes the set).
    async fn keep_set(
        &self,
        running_key: &str,
        record: SetRecord,
        origin: Origin,
        stopped: futures_channel::oneshot::Receiver<Stop>,
    ) {
        let settings = self.settings(&record.provider);
        let leases = self.host.leases();
        let key = format!("{running_key}/{}", record.channel_set_id);
        // What runs only at the start and the end is boxed: every set waits in `keep` for
        // hours, and its future holds room for its largest state.
        let opening = Box::pin(channel::ChannelSet::new(
            self,
            key.clone(),
            record,
            settings,
        ));
        let mut set = match opening.await {
            Ok(set) => set,
            Err(e) => {
                self.host.warn(&format!(
                    "xsi-events: a channel set cannot be kept and is dropped: {e}"
                ));
                let _ = self.host.store().delete(&key).await;
                let _ = leases.finish(running_key).await;
                return;
            }
        };
        if origin != Origin::Resumed {
            Box::pin(set.save()).await;
        }
        let end = {
            let keep = std::pin::pin!(set.keep(origin != Origin::Login));
            let lost = std::pin::pin!(async {
                match leases.lost(running_key).await {
                    Ok(Some(LeaseLost::Ended)) => Stop::ForGood,
                    Ok(Some(LeaseLost::Taken | LeaseLost::HandedOver)) => Stop::HandedOn,
                    // Not held (or the host cannot say): nothing to hear, keep going.
                    Ok(None) | Err(_) => futures_util::future::pending().await,
                }
            });
            // Either drops the keeping future wherever it waits; what follows cleans up.
            let ending = futures_util::future::select(stopped, lost);
            match futures_util::future::select(keep, ending).await {
                futures_util::future::Either::Left(((), _)) => Stop::ForGood,
                futures_util::future::Either::Right((ended, _)) => match ended {
                    futures_util::future::Either::Left((stop, _)) => stop.unwrap_or(Stop::ForGood),
                    futures_util::future::Either::Right((stop, _)) => stop,
                },
            }
        };
        match end {
            Stop::HandedOn => Box::pin(set.leave()).await,
            Stop::Replaced => Box::pin(set.close()).await,
            Stop::ForGood => {
                Box::pin(set.close()).await;
                let _ = leases.finish(running_key).await;
            }
        }
        self.forget_view(&key);
    }

    /// The kept record of `unique_id`'s own set at `provider`, and its store key.
    async fn user_record(
        &self,
        provider: &str,
        unique_id: &str,
    ) -> Result<Option<(String, SetRecord)>, Error> {
        let store = self.host.store();
        let prefix = format!("{}/", set_key(provider, unique_id));
        for key in store.keys(&prefix).await? {
            if let Some(bytes) = store.get(&key).await? {
                if let Ok(record) = xsigate_plugin_sdk::serde_json::from_slice(&bytes) {
                    return Ok(Some((key, record)));
                }
            }
        }
        Ok(None)
    }

    /// Closes the user's set and opens a new one under a new channel set id, which then reads
    /// their state again: what an operator does to a set that the XSP keeps in a bad way.
    async fn reopen(&self, sets: &mut Sets<'_>, action: &OperatorAction) -> ActionReport {
        let running_key = set_key(&action.provider, &action.unique_id);
        let report = |outcome, detail: &str| ActionReport {
            outcome,
            detail: detail.to_owned(),
        };
        match self.user_record(&action.provider, &action.unique_id).await {
            Ok(Some((_, record))) if sets.running.contains_key(&running_key) => {
                sets.stop(&running_key, Stop::Replaced);
                let fresh = SetRecord {
                    channel_set_id: channel::new_set_id(),
                    subscriptions: Vec::new(),
                    ..record
                };
                sets.start(running_key, fresh, Origin::Reopened);
                report(
                    ActionOutcome::Done,
                    "the channel set was closed and a new one is opening",
                )
            }
            Ok(_) if self.settings(&action.provider).level != ChannelLevel::User => report(
                ActionOutcome::NotFound,
                "the user's events ride the provider's channel set",
            ),
            Ok(_) => report(ActionOutcome::NotFound, "the user has no channel set here"),
            Err(e) => report(ActionOutcome::Failed, &e.to_string()),
        }
    }

    /// Reads the user's state again through XSI-Actions and publishes it, with the kept
    /// credentials of their set (or of the provider's set), leaving every channel as it is.
    async fn resync_user(&self, action: &OperatorAction) -> ActionReport {
        let found = match self.user_record(&action.provider, &action.unique_id).await {
            Ok(Some(found)) => Some(found),
            Ok(None) if self.settings(&action.provider).level != ChannelLevel::User => self
                .user_record(&action.provider, PROVIDER_SET)
                .await
                .ok()
                .flatten(),
            Ok(None) => None,
            Err(e) => {
                return ActionReport {
                    outcome: ActionOutcome::Failed,
                    detail: e.to_string(),
                };
            }
        };
        let Some((key, record)) = found else {
            return ActionReport {
                outcome: ActionOutcome::NotFound,
                detail: "the user has no channel set here".to_owned(),
            };
        };
        let settings = self.settings(&action.provider);
        match channel::ChannelSet::new(self, key, record, settings).await {
            Ok(mut reader) => {
                reader.resync_users(vec![action.user_id.clone()]).await;
                self.metrics.resyncs.inc(&[&action.provider]);
                ActionReport {
                    outcome: ActionOutcome::Done,
                    detail: "the user's state was read again and published".to_owned(),
                }
            }
            Err(e) => ActionReport {
                outcome: ActionOutcome::Failed,
                detail: e.to_string(),
            },
        }
    }

    fn channel_phase(
        &self,
        provider: &str,
        from: Option<channel::Phase>,
        to: Option<channel::Phase>,
    ) {
        let mut states = lock(&self.channel_states);
        for (phase, delta) in [(from, -1), (to, 1)] {
            if let Some(phase) = phase {
                let count = states.entry((provider.to_owned(), phase)).or_insert(0);
                *count += delta;
                self.metrics
                    .channels
                    .set(&[provider, phase.as_str()], *count as f64);
            }
        }
    }
}

/// How a kept set ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Its user's last session ended: deleted on the XSP and in the store, the lease finished.
    ForGood,
    /// An operator's reopen: deleted, while a new set goes on under the same lease.
    Replaced,
    /// The lease went to another instance: only this instance's channel is closed.
    HandedOn,
}

enum Wake {
    Ended(String, u64),
    Command(Option<Command>),
    /// Time to look for sets nobody keeps.
    Claim,
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

xsigate_plugin_sdk::export_plugin!(XsiEvents => EventConsumer, BackgroundWorker);
