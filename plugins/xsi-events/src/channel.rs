//! One channel set kept alive: its channel, heartbeats, subscriptions and acknowledgements, and
//! what happens when any of them fails.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher as _, Hasher as _};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use xsigate_broadworks::bus::{Source, XsiEvent};
use xsigate_broadworks::{CHANNEL_OPEN, EVENTS, encode, session_cookie, tree, user_path};
use xsigate_plugin_sdk::serde_json;
use xsigate_plugin_sdk::topics::XSI_EVENT;
use xsigate_plugin_sdk::{
    Error, ErrorKind, StreamRead, XsiRequest, XsiResponse, XsiStream, unix_ms,
};

use crate::config::{ChannelLevel, Package, ProviderEvents};
use crate::document::{Document, Envelope, Malformed, Splitter};
use crate::state::{self, ServiceKind, State};
use crate::{SetRecord, SubscriptionRecord, XsiEvents, base64_decode, operator, password_context};

/// `POST` here opens a channel; everything else about it is under [`EVENTS`].
/// Every command but the channel's stream must be answered within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnects after a loss wait 0 s, then from this doubling up to `BACKOFF_MAX`, jittered.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A channel that streamed this long resets the backoff: its loss is news, not a pattern.
const STABLE: Duration = Duration::from_secs(60);
/// How often a provider-level set looks for users who logged in and need their state read.
const LOGIN_POLL: Duration = Duration::from_millis(250);
/// The host names a provider's XSPs `xsp1`, `xsp2`, …; no provider lists more than this.
const XSPS_MAX: usize = 16;
/// A subscription the XSP refused is tried again after this.
const REFUSED_RETRY: Duration = Duration::from_secs(600);

/// Where a channel set is, for the `channels` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Connecting,
    Open,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Open => "open",
        }
    }
}

/// A new channel set id: unique per set, so one set's lifecycle never touches another's.
pub fn new_set_id() -> String {
    format!("xsigate-{:016x}{:016x}", random(), random())
}

/// A random number from the standard library's per-process random hasher keys.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The channel currently streaming.
struct Live {
    xsp: String,
    channel_id: String,
    /// The XSP's `JSESSIONID` for the events application: sent with every command so the XSP
    /// does not open a session per heartbeat.
    cookie: Option<String>,
    expires_at: Instant,
    granted: Duration,
}

/// Why a channel stopped streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// The stream ended or broke.
    Closed,
    /// Nothing arrived for `silence_seconds`.
    Silent,
    /// The XSP no longer knows the channel (heartbeat 404).
    Unknown,
    /// A `ChannelTerminatedEvent`.
    Terminated,
}

impl Loss {
    pub(crate) const ALL: [Self; 4] = [Self::Closed, Self::Silent, Self::Unknown, Self::Terminated];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Silent => "silent",
            Self::Unknown => "unknown_channel",
            Self::Terminated => "terminated",
        }
    }
}

/// A channel just opened: its stream, and what was read past the `Channel` answer.
struct Opened {
    stream: XsiStream,
    splitter: Splitter,
    pending: Vec<Result<Vec<u8>, Malformed>>,
}

/// How a published state came to be known: on the channel (its sequence number and when its
/// bytes were read off the stream), or by reading it again through XSI-Actions.
struct Heard {
    source: Source,
    sequence: Option<u64>,
    received_ms: u64,
}

impl Heard {
    fn resync() -> Self {
        Self {
            source: Source::Resync,
            sequence: None,
            received_ms: unix_ms(),
        }
    }
}

/// What an in-flight acknowledgement came to.
struct Acked {
    sent: Instant,
    accepted: bool,
}

pub struct ChannelSet<'a> {
    plugin: &'a XsiEvents,
    key: String,
    record: SetRecord,
    settings: ProviderEvents,
    password: Option<String>,
    live: Option<Live>,
    phase: Option<Phase>,
    unique_ids: HashMap<String, String>,
    /// Users this set carried events for: what a provider-level resync reads again.
    seen: BTreeSet<String>,
    /// Packages whose subscription the XSP refused, with when to try again.
    refused: HashMap<Package, Instant>,
    /// A subscription ended on the server and must be made again.
    resubscribe: bool,
}

impl<'a> ChannelSet<'a> {
    pub async fn new(
        plugin: &'a XsiEvents,
        key: String,
        record: SetRecord,
        settings: ProviderEvents,
    ) -> Result<Self, Error> {
        let password = match (&record.sealed_password, &record.user_id) {
            (Some(sealed), Some(user_id)) => {
                let sealed = base64_decode(sealed)
                    .ok_or_else(|| Error::msg("the kept password is not base64"))?;
                let context = password_context(&record.provider, user_id);
                let opened = plugin.host.open(&context, &sealed).await?;
                Some(
                    String::from_utf8(opened)
                        .map_err(|_| Error::msg("the kept password is not UTF-8"))?,
                )
            }
            _ => None,
        };
        Ok(Self {
            plugin,
            key,
            record,
            settings,
            password,
            live: None,
            phase: None,
            unique_ids: HashMap::new(),
            seen: BTreeSet::new(),
            refused: HashMap::new(),
            resubscribe: false,
        })
    }

    fn provider(&self) -> &str {
        &self.record.provider
    }

    fn set_phase(&mut self, phase: Option<Phase>) {
        if self.phase != phase {
            self.plugin
                .channel_phase(&self.record.provider, self.phase, phase);
            self.phase = phase;
            self.note(|view| view.phase = phase);
        }
    }

    /// Changes what the operator console sees of this set.
    fn note(&self, change: impl FnOnce(&mut operator::SetView)) {
        let record = &self.record;
        self.plugin.view(
            &self.key,
            &record.provider,
            record.user_id.as_deref(),
            change,
        );
    }

    /// Writes the record to the store; a failure is logged, and retried at the next change.
    pub async fn save(&self) {
        let subscriptions = self.record.subscriptions.len();
        self.note(|view| view.subscriptions = subscriptions);
        let saved = match serde_json::to_vec(&self.record) {
            Ok(bytes) => self.plugin.host.store().put(&self.key, &bytes, None).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = saved {
            self.plugin
                .host
                .warn(&format!("xsi-events: keeping a channel set failed: {e}"));
        }
    }

    /// A request with the set's credentials, to whichever XSP the host picks.
    fn unpinned(&self, method: &str, path: &str) -> XsiRequest {
        let request = XsiRequest::new(self.provider(), method, path).timeout(COMMAND_TIMEOUT);
        match (&self.record.user_id, &self.password) {
            (Some(user), Some(password)) => request.user(user, password),
            _ => request.master(),
        }
    }

    /// A request with the set's credentials; pinned to the live channel's XSP, with its cookie,
    /// when there is one.
    fn request(&self, method: &str, path: &str) -> XsiRequest {
        let mut request = self.unpinned(method, path);
        if let Some(live) = &self.live {
            request = request.xsp(&live.xsp);
            if let Some(cookie) = &live.cookie {
                request = request.header("cookie", cookie);
            }
        }
        request
    }

    async fn send(&mut self, request: XsiRequest) -> Result<XsiResponse, Error> {
        let response = self.plugin.host.xsi(request).await?;
        self.keep_cookie(&response.headers);
        Ok(response)
    }

    fn keep_cookie(&mut self, headers: &[(String, String)]) {
        if let (Some(live), Some(cookie)) = (self.live.as_mut(), session_cookie(headers)) {
            live.cookie = Some(cookie);
        }
    }

    /// The subscription target under [`EVENTS`].
    fn target(&self) -> String {
        match (&self.record.user_id, self.settings.level) {
            (Some(user), _) => format!("user/{}", encode(user)),
            (None, ChannelLevel::Group) => format!(
                "serviceprovider/{}/group/{}",
                encode(
                    self.settings
                        .service_provider
                        .as_deref()
                        .unwrap_or_default()
                ),
                encode(self.settings.group.as_deref().unwrap_or_default())
            ),
            (None, _) => format!(
                "serviceprovider/{}",
                encode(
                    self.settings
                        .service_provider
                        .as_deref()
                        .unwrap_or_default()
                )
            ),
        }
    }

    /// Keeps a channel streaming, forever: the caller ends this by dropping it. `gap` says
    /// events may have been missed already (a resumed set), so the first channel resyncs.
    pub async fn keep(&mut self, mut gap: bool) {
        let mut delay = Duration::ZERO;
        let mut previous_xsp: Option<String> = None;
        loop {
            if delay > Duration::ZERO {
                let jittered = delay.mul_f64(0.5 + (random() % 1000) as f64 / 1000.0);
                if self.plugin.host.sleep(jittered).await.is_err() {
                    return;
                }
            }
            self.set_phase(Some(Phase::Connecting));
            let mut opened = match self.connect().await {
                Ok(opened) => opened,
                Err(e) => {
                    // The first failure in a row is news for the operator; retries are not.
                    let message = format!(
                        "xsi-events: a channel could not be opened for provider {}: {e}",
                        self.provider()
                    );
                    if delay.is_zero() {
                        self.plugin.host.warn(&message);
                    } else {
                        self.plugin.host.debug(&message);
                    }
                    let reason = e.to_string();
                    self.note(|view| {
                        if view.failure.is_none() {
                            view.failure = Some((reason, unix_ms()));
                        }
                    });
                    delay = backoff(delay);
                    continue;
                }
            };
            let xsp = opened.stream.xsp.clone();
            if previous_xsp.as_ref().is_some_and(|p| *p != xsp) {
                self.plugin.metrics.failovers.inc(&[self.provider()]);
            }
            previous_xsp = Some(xsp);
            self.note(|view| view.failure = None);
            self.set_phase(Some(Phase::Open));
            if gap {
                Box::pin(self.drop_stale_channels()).await;
            }
            Box::pin(self.subscribe(gap)).await;
            if gap {
                Box::pin(self.resync()).await;
            }
            let since = Instant::now();
            let loss = self.serve(&mut opened).await;
            self.plugin
                .metrics
                .reconnects
                .inc(&[self.provider(), loss.as_str()]);
            self.plugin.host.debug(&format!(
                "xsi-events: a channel of provider {} was lost ({})",
                self.provider(),
                loss.as_str()
            ));
            self.live = None;
            gap = true;
            // The first reopen after a stable channel is immediate: failover must be quick.
            delay = if since.elapsed() >= STABLE {
                Duration::ZERO
            } else {
                backoff(delay)
            };
        }
    }

    /// Opens a channel on whichever XSP the host reaches, and reads the `Channel` answer.
    async fn connect(&mut self) -> Result<Opened, Error> {
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Channel xmlns="http://schema.broadsoft.com/xsi"><channelSetId>{}</channelSetId><priority>1</priority><weight>50</weight><expires>{}</expires><applicationId>{}</applicationId></Channel>"#,
            xml_text(&self.record.channel_set_id),
            self.settings.channel_expires_seconds,
            xml_text(&self.settings.application_id),
        );
        self.live = None;
        let request = self
            .request("POST", CHANNEL_OPEN)
            .header("content-type", "text/xml; charset=UTF-8")
            .body(body);
        let mut stream = self.plugin.host.xsi_stream(request).await?;
        if !stream.is_success() {
            return Err(Error::msg(format!(
                "the XSP answered {} to a new channel",
                stream.status
            )));
        }
        let cookie = session_cookie(&stream.headers);
        let mut splitter = Splitter::default();
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(Error::msg("the channel answer did not arrive"));
            }
            let StreamRead::Data(bytes) = stream.read(wait).await? else {
                continue;
            };
            // Only the first document is the channel's; anything after it waits for `serve`.
            let mut documents = splitter.push(&bytes).into_iter();
            let Some(first) = documents.next() else {
                continue;
            };
            let pending = documents.collect();
            let Ok(Document::Channel {
                channel_id,
                expires,
            }) = first.and_then(|d| Document::read(&d))
            else {
                return Err(Error::msg("the channel answer is not a Channel"));
            };
            let granted = Duration::from_secs(expires);
            self.live = Some(Live {
                xsp: stream.xsp.clone(),
                channel_id,
                cookie,
                expires_at: Instant::now() + granted,
                granted,
            });
            return Ok(Opened {
                stream,
                splitter,
                pending,
            });
        }
    }

    /// Reads the live channel until it is lost, heartbeating, refreshing and acknowledging.
    ///
    /// A set waits in this loop's read for hours, and a future is as large as the largest
    /// state it can be in: what runs now and then (handling an event, a heartbeat, a resync)
    /// is boxed while it runs, so that every waiting set does not carry room for it.
    async fn serve(&mut self, opened: &mut Opened) -> Loss {
        let heartbeat = self.settings.heartbeat();
        let silence = self.settings.silence();
        let mut next_heartbeat = Instant::now() + heartbeat;
        let mut last_heard = Instant::now();
        let mut acks: FuturesUnordered<BoxFuture<'static, Acked>> = FuturesUnordered::new();
        let mut documents = std::mem::take(&mut opened.pending);
        let mut read_ms = unix_ms();
        loop {
            let read: Vec<_> = std::mem::take(&mut documents)
                .into_iter()
                .map(|document| document.and_then(|d| Document::read(&d)))
                .collect();
            self.learn_unique_ids(&read).await;
            for document in read {
                if let Some(loss) = Box::pin(self.handle(document, read_ms, &mut acks)).await {
                    return loss;
                }
            }
            let now = Instant::now();
            if now >= next_heartbeat {
                next_heartbeat = now + heartbeat;
                if let Some(loss) = Box::pin(self.heartbeat()).await {
                    return loss;
                }
            }
            if let Some(live) = &self.live {
                if live.expires_at.saturating_duration_since(now) < live.granted / 2 {
                    Box::pin(self.refresh_channel()).await;
                }
            }
            if self.resubscribe {
                self.resubscribe = false;
                Box::pin(self.subscribe(false)).await;
            }
            if self.record.user_id.is_none() {
                let logged_in = self.plugin.take_logged_in(self.provider());
                if !logged_in.is_empty() {
                    self.seen.extend(logged_in.iter().cloned());
                    Box::pin(self.resync_users(logged_in.into_iter().collect())).await;
                }
            }
            let due = self.due_subscriptions();
            if !due.is_empty() {
                Box::pin(self.refresh_subscriptions(due)).await;
            }
            if now.saturating_duration_since(last_heard) >= silence {
                return Loss::Silent;
            }
            let mut wait = next_heartbeat
                .min(last_heard + silence)
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10));
            if self.record.user_id.is_none() {
                // A provider's one set also looks for logins to read state for, soon enough
                // for the user's first look.
                wait = wait.min(LOGIN_POLL);
            }
            let read = {
                let read = std::pin::pin!(opened.stream.read(wait));
                // Acknowledgements run as host tasks already; polling them here only notes
                // their results. The read is never dropped half-way.
                drive(read, &mut acks, |acked| self.note_ack(&acked)).await
            };
            match read {
                Ok(StreamRead::Data(bytes)) => {
                    last_heard = Instant::now();
                    read_ms = unix_ms();
                    documents = opened.splitter.push(&bytes);
                }
                Ok(StreamRead::Idle) => {}
                Ok(StreamRead::End) | Err(_) => return Loss::Closed,
            }
        }
    }

    fn note_ack(&self, acked: &Acked) {
        let provider = self.provider();
        self.plugin
            .metrics
            .ack_seconds
            .observe(&[provider], acked.sent.elapsed().as_secs_f64());
        if !acked.accepted {
            self.plugin.metrics.ack_failures.inc(&[provider]);
        }
    }

    /// Looks up, in one host call, the uniqueIds of the users that the events of one read
    /// are about and this set has not met yet. A provider-level set meets thousands of users
    /// at once after a start; asked one by one, each would hold up every event behind it.
    async fn learn_unique_ids(&mut self, documents: &[Result<Document, Malformed>]) {
        let mut unknown: Vec<String> = documents
            .iter()
            .filter_map(|document| match document {
                // Only events `handle` will take: a user id in one that is refused gets no
                // uniqueId made for it.
                Ok(Document::Event(envelope)) if self.addressed_here(envelope).is_ok() => {
                    envelope.target_id.as_ref().or(self.record.user_id.as_ref())
                }
                _ => None,
            })
            .filter(|user_id| !user_id.is_empty() && !self.unique_ids.contains_key(*user_id))
            .cloned()
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return;
        }
        match self.plugin.host.unique_ids(&unknown).await {
            Ok(unique_ids) => self.unique_ids.extend(unknown.into_iter().zip(unique_ids)),
            // Each event then asks for its own user's, and says what failed.
            Err(e) => self.plugin.host.debug(&format!(
                "xsi-events: uniqueIds of {} users could not be read at once: {e}",
                unknown.len()
            )),
        }
    }

    /// Handles one document read off the channel at `read_ms`; `Some` when it ends the channel.
    async fn handle(
        &mut self,
        document: Result<Document, Malformed>,
        read_ms: u64,
        acks: &mut FuturesUnordered<BoxFuture<'static, Acked>>,
    ) -> Option<Loss> {
        let (plugin, provider) = (self.plugin, self.provider().to_owned());
        let count = |package: &str| plugin.metrics.events.inc(&[&provider, package]);
        let envelope = match document {
            Err(_) => {
                // Without an eventID there is nothing to acknowledge.
                count("malformed");
                return None;
            }
            Ok(Document::Channel { .. } | Document::HeartBeat) => return None,
            Ok(Document::Terminated { reason }) => {
                plugin.host.debug(&format!(
                    "xsi-events: a channel of provider {provider} was terminated ({reason})"
                ));
                return Some(Loss::Terminated);
            }
            Ok(Document::Unknown { event_id }) => {
                count("unknown");
                if let Some(event_id) = event_id {
                    acks.push(self.acknowledge(&event_id, 400));
                }
                return None;
            }
            Ok(Document::Event(envelope)) => envelope,
        };
        let package = match self.addressed_here(&envelope) {
            Ok(package) => package,
            Err(refusal) => {
                count("unknown");
                acks.push(self.acknowledge(&envelope.event_id, refusal));
                return None;
            }
        };
        let Some(state) = state::of_event(&envelope.event_type, &envelope.data) else {
            count("unknown");
            acks.push(self.acknowledge(&envelope.event_id, 400));
            return None;
        };
        count(package.name());
        acks.push(self.acknowledge(&envelope.event_id, 200));
        if state == State::SubscriptionTerminated {
            self.record
                .subscriptions
                .retain(|s| s.id != envelope.subscription_id);
            self.resubscribe = true;
        }
        self.publish(&envelope, package, read_ms, &state).await;
        None
    }

    /// The package of an event sent on this set's live channel (or naming none) under one of
    /// its subscriptions; otherwise the status its acknowledgement refuses it with.
    fn addressed_here(&self, envelope: &Envelope) -> Result<Package, u16> {
        let live_channel = self.live.as_ref().map(|l| l.channel_id.as_str());
        if envelope
            .channel_id
            .as_deref()
            .is_some_and(|c| Some(c) != live_channel)
        {
            return Err(404);
        }
        self.record
            .subscriptions
            .iter()
            .find(|s| s.id == envelope.subscription_id)
            .map(|s| s.package)
            .ok_or(481)
    }

    /// An `EventResponse`, sent on the channel's XSP as a host task of its own.
    fn acknowledge(&self, event_id: &str, status: u16) -> BoxFuture<'static, Acked> {
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Unknown channel",
            481 => "Unknown subscription",
            _ => "Error",
        };
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><EventResponse xmlns="http://schema.broadsoft.com/xsi"><eventID>{}</eventID><statusCode>{status}</statusCode><reason>{reason}</reason></EventResponse>"#,
            xml_text(event_id)
        );
        let request = self
            .request("POST", &format!("{EVENTS}/channel/eventresponse"))
            .header("content-type", "text/xml; charset=UTF-8")
            .body(body);
        let host = self.plugin.host;
        let sent = Instant::now();
        async move {
            let accepted = host
                .xsi(request)
                .await
                .is_ok_and(|response| response.is_success());
            Acked { sent, accepted }
        }
        .boxed()
    }

    /// Puts one event on the bus, with both ids of the user it is about.
    async fn publish(
        &mut self,
        envelope: &Envelope,
        package: Package,
        read_ms: u64,
        state: &State,
    ) {
        let user_id = envelope
            .target_id
            .clone()
            .or_else(|| self.record.user_id.clone())
            .unwrap_or_default();
        let heard = Heard {
            source: Source::Event,
            sequence: envelope.sequence,
            received_ms: read_ms,
        };
        self.publish_state(&user_id, package, &envelope.event_type, heard, state)
            .await;
    }

    async fn publish_state(
        &mut self,
        user_id: &str,
        package: Package,
        event: &str,
        heard: Heard,
        state: &State,
    ) {
        if user_id.is_empty() {
            return;
        }
        let unique_id = match self.unique_ids.get(user_id) {
            Some(id) => id.clone(),
            None => match self.plugin.host.unique_id(user_id).await {
                Ok(id) => {
                    self.unique_ids.insert(user_id.to_owned(), id.clone());
                    id
                }
                Err(e) => {
                    self.plugin
                        .host
                        .warn(&format!("xsi-events: no uniqueId for an event's user: {e}"));
                    return;
                }
            },
        };
        self.seen.insert(user_id.to_owned());
        let published = XsiEvent {
            provider: self.provider().to_owned(),
            user_id: user_id.to_owned(),
            unique_id,
            package,
            event: event.to_owned(),
            source: heard.source,
            sequence: heard.sequence,
            received_ms: Some(heard.received_ms),
            state: state.clone(),
        };
        let payload = match serde_json::to_vec(&published) {
            Ok(payload) => payload,
            Err(e) => {
                self.plugin
                    .host
                    .warn(&format!("xsi-events: an event could not be written: {e}"));
                return;
            }
        };
        if let Err(e) = self.plugin.host.publish(XSI_EVENT, &payload).await {
            self.plugin
                .host
                .warn(&format!("xsi-events: publishing an event failed: {e}"));
        }
    }

    /// `Some` when the XSP no longer knows the channel.
    async fn heartbeat(&mut self) -> Option<Loss> {
        let Some(channel_id) = self.live.as_ref().map(|l| l.channel_id.clone()) else {
            return Some(Loss::Closed);
        };
        let request = self.request(
            "PUT",
            &format!("{EVENTS}/channel/{}/heartbeat", encode(&channel_id)),
        );
        let sent = self.send(request).await;
        let provider = self.provider().to_owned();
        let result = if sent.as_ref().is_ok_and(XsiResponse::is_success) {
            "ok"
        } else {
            "failed"
        };
        self.plugin.metrics.heartbeats.inc(&[&provider, result]);
        match sent {
            Ok(response) if response.status == 404 => Some(Loss::Unknown),
            _ => None,
        }
    }

    async fn refresh_channel(&mut self) {
        let Some(channel_id) = self.live.as_ref().map(|l| l.channel_id.clone()) else {
            return;
        };
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Channel xmlns="http://schema.broadsoft.com/xsi"><expires>{}</expires></Channel>"#,
            self.settings.channel_expires_seconds
        );
        let request = self
            .request("PUT", &format!("{EVENTS}/channel/{}", encode(&channel_id)))
            .header("content-type", "text/xml; charset=UTF-8")
            .body(body);
        let granted = match self.send(request).await {
            Ok(response) if response.is_success() => granted_expires(&response.body),
            _ => None,
        };
        if let Some(live) = self.live.as_mut() {
            // Without a new lifetime, try again in a quarter of the old one rather than at once.
            let granted = granted.map(Duration::from_secs);
            live.granted = granted.unwrap_or(live.granted);
            live.expires_at = Instant::now() + granted.unwrap_or_else(|| live.granted * 3 / 4);
        }
    }

    /// Deletes the set's channels other than the live one: left by a crashed instance or a
    /// connection that broke on our side only, they would go on taking the set's events (the XSP
    /// prefers no channel of a set over another of equal priority and weight) until their
    /// heartbeats lapse. A channel is deleted only on the XSP holding it, which is not known
    /// here, so each XSP is asked in turn.
    async fn drop_stale_channels(&mut self) {
        let Some(live_id) = self.live.as_ref().map(|l| l.channel_id.clone()) else {
            return;
        };
        let request = self.request(
            "GET",
            &format!(
                "{EVENTS}/channelset/{}",
                encode(&self.record.channel_set_id)
            ),
        );
        let Ok(response) = self.send(request).await else {
            return;
        };
        let Some(set) = response
            .is_success()
            .then(|| tree(&response.body).ok())
            .flatten()
        else {
            return;
        };
        let stale: Vec<String> = set
            .all("channel")
            .filter_map(|c| c.text_of("channelId"))
            .filter(|id| *id != live_id)
            .map(str::to_owned)
            .collect();
        for channel_id in stale {
            for n in 1..=XSPS_MAX {
                let request = self
                    .unpinned(
                        "DELETE",
                        &format!("{EVENTS}/channel/{}", encode(&channel_id)),
                    )
                    .xsp(&format!("xsp{n}"));
                match self.plugin.host.xsi(request).await {
                    Ok(response) if response.is_success() => break,
                    // No XSP of that name: every one was asked.
                    Err(e) if e.kind() == ErrorKind::Invalid => break,
                    _ => {}
                }
            }
        }
    }

    /// Makes sure every configured package has a subscription on this set: creates what is
    /// missing and, with `refresh_all`, refreshes the rest (after a restart or a gap they may be
    /// gone, and a refresh has the XSP send the targets' current state again).
    async fn subscribe(&mut self, refresh_all: bool) {
        let mut changed = false;
        for package in self.settings.packages.clone() {
            if self
                .refused
                .get(&package)
                .is_some_and(|until| Instant::now() < *until)
            {
                continue;
            }
            let existing = self
                .record
                .subscriptions
                .iter()
                .find(|s| s.package == package)
                .map(|s| s.id.clone());
            let kept = match existing {
                Some(id) if refresh_all => self.refresh_subscription(&id).await,
                Some(_) => true,
                None => false,
            };
            if !kept {
                changed |= self.create_subscription(package).await;
            } else {
                changed |= refresh_all;
            }
        }
        if changed {
            self.save().await;
        }
    }

    async fn create_subscription(&mut self, package: Package) -> bool {
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Subscription xmlns="http://schema.broadsoft.com/xsi"><event>{}</event><expires>{}</expires><channelSetId>{}</channelSetId><applicationId>{}</applicationId></Subscription>"#,
            package.name(),
            self.settings.subscription_expires_seconds,
            xml_text(&self.record.channel_set_id),
            xml_text(&self.settings.application_id),
        );
        let request = self
            .request("POST", &format!("{EVENTS}/{}", self.target()))
            .header("content-type", "text/xml; charset=UTF-8")
            .body(body);
        let response = self.send(request).await;
        let granted = response
            .as_ref()
            .ok()
            .filter(|r| r.is_success())
            .and_then(|r| {
                let root = tree(&r.body).ok()?;
                Some((
                    root.text_of("subscriptionId")?.to_owned(),
                    root.text_of("expires")?.parse::<u64>().ok()?,
                ))
            });
        self.record.subscriptions.retain(|s| s.package != package);
        let Some((id, expires)) = granted else {
            self.plugin
                .metrics
                .subscription_failures
                .inc(&[self.provider(), package.name()]);
            // A 4xx is the XSP's considered answer (an unknown or unassigned package): asking
            // again at once would get the same. Other failures are retried at the next channel.
            if response.is_ok_and(|r| (400..500).contains(&r.status)) {
                self.refused.insert(package, Instant::now() + REFUSED_RETRY);
                self.note(|view| {
                    if !view.refused.iter().any(|(p, _)| *p == package.name()) {
                        view.refused.push((package.name(), unix_ms()));
                    }
                });
            }
            return false;
        };
        self.refused.remove(&package);
        self.note(|view| view.refused.retain(|(p, _)| *p != package.name()));
        self.record.subscriptions.push(SubscriptionRecord {
            id,
            package,
            expires_at: unix_now().saturating_add(expires),
            granted: expires,
        });
        true
    }

    /// Extends a subscription; false when the XSP no longer has it.
    async fn refresh_subscription(&mut self, id: &str) -> bool {
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Subscription xmlns="http://schema.broadsoft.com/xsi"><expires>{}</expires></Subscription>"#,
            self.settings.subscription_expires_seconds
        );
        let request = self
            .request("PUT", &format!("{EVENTS}/subscription/{}", encode(id)))
            .header("content-type", "text/xml; charset=UTF-8")
            .body(body);
        let response = self.send(request).await;
        let granted = match &response {
            Ok(r) if r.is_success() => granted_expires(&r.body),
            _ => None,
        };
        let Some(subscription) = self.record.subscriptions.iter_mut().find(|s| s.id == id) else {
            return false;
        };
        match granted {
            Some(expires) => {
                subscription.expires_at = unix_now().saturating_add(expires);
                subscription.granted = expires;
                true
            }
            None => {
                let package = subscription.package;
                self.plugin
                    .metrics
                    .subscription_failures
                    .inc(&[&self.record.provider, package.name()]);
                // Gone (404, 403) means make it again; anything else, try again later.
                !response.is_ok_and(|r| matches!(r.status, 403 | 404))
            }
        }
    }

    /// The subscriptions past half their granted lifetime.
    fn due_subscriptions(&self) -> Vec<String> {
        let now = unix_now();
        self.record
            .subscriptions
            .iter()
            .filter(|s| s.expires_at.saturating_sub(now) < s.granted / 2)
            .map(|s| s.id.clone())
            .collect()
    }

    /// Refreshes the `due` subscriptions; one that is gone is made again.
    async fn refresh_subscriptions(&mut self, due: Vec<String>) {
        let mut gone = false;
        for id in due {
            if !self.refresh_subscription(&id).await {
                self.record.subscriptions.retain(|s| s.id != id);
                gone = true;
            }
        }
        if gone {
            self.subscribe(false).await;
        } else {
            self.save().await;
        }
    }

    /// Reads the state the set's users may have changed while no channel carried their events,
    /// and publishes it: service settings and calls through XSI-Actions; packages XSI-Actions
    /// cannot read (voice mail, call centres) come again as the initial events that refreshing
    /// their subscriptions produces.
    async fn resync(&mut self) {
        self.plugin.metrics.resyncs.inc(&[self.provider()]);
        let users: Vec<String> = match &self.record.user_id {
            Some(user) => vec![user.clone()],
            None => self.seen.iter().cloned().collect(),
        };
        self.resync_users(users).await;
    }

    /// Reads and publishes the state of `users`, as [`Self::resync`] does.
    pub(crate) async fn resync_users(&mut self, users: Vec<String>) {
        let packages = self.settings.packages.clone();
        for user in users {
            let mut calls_done = false;
            for package in &packages {
                let service = match package {
                    Package::DoNotDisturb => Some((ServiceKind::DoNotDisturb, "DoNotDisturb")),
                    Package::CallForwardingAlways => {
                        Some((ServiceKind::CallForwardingAlways, "CallForwardingAlways"))
                    }
                    Package::RemoteOffice => Some((ServiceKind::RemoteOffice, "RemoteOffice")),
                    Package::CommPilotExpress => {
                        Some((ServiceKind::CommPilotExpress, "CommPilotExpress"))
                    }
                    _ => None,
                };
                if let Some((kind, resource)) = service {
                    let path = user_path(&user, &format!("services/{resource}"));
                    if let Some(root) = self.read_actions(&path).await {
                        let state = state::service(kind, &root);
                        self.publish_state(&user, *package, "resync", Heard::resync(), &state)
                            .await;
                    }
                } else if *package == Package::CallCenterAgent {
                    let path = user_path(&user, "services/CallCenter");
                    if let Some(root) = self.read_actions(&path).await {
                        let state = state::call_center_service(&root);
                        self.publish_state(&user, *package, "resync", Heard::resync(), &state)
                            .await;
                    }
                } else if package.is_call() && !calls_done {
                    calls_done = true;
                    if let Some(state) = self.read_calls(&user).await {
                        self.publish_state(&user, *package, "resync", Heard::resync(), &state)
                            .await;
                    }
                }
            }
        }
    }

    /// The XSI-Actions answer at `path` as a tree, read with the set's credentials (on any XSP:
    /// Actions are not bound to the channel's).
    async fn read_actions(&self, path: &str) -> Option<xsigate_broadworks::Node> {
        let response = self
            .plugin
            .host
            .xsi(self.unpinned("GET", path))
            .await
            .ok()?;
        response
            .is_success()
            .then(|| tree(&response.body).ok())
            .flatten()
    }

    async fn read_calls(&self, user: &str) -> Option<State> {
        let list = self.read_actions(&user_path(user, "calls")).await?;
        let mut calls = Vec::new();
        for id in list.all("call").filter_map(|c| c.text_of("callId")) {
            if let Some(call) = self
                .read_actions(&user_path(user, &format!("calls/{}", encode(id))))
                .await
                .as_ref()
                .and_then(state::call)
            {
                calls.push(call);
            }
        }
        let hook = if calls.is_empty() {
            "On-Hook"
        } else {
            "Off-Hook"
        };
        Some(State::Calls {
            hook_status: Some(hook.to_owned()),
            calls,
        })
    }

    /// Leaves the set to another instance: closes only this instance's channel and keeps the
    /// subscriptions and the record, from which the next holder of the set's lease resumes it.
    pub async fn leave(&mut self) {
        if let Some(channel_id) = self.live.as_ref().map(|l| l.channel_id.clone()) {
            let request = self.request(
                "DELETE",
                &format!("{EVENTS}/channel/{}", encode(&channel_id)),
            );
            let _ = self.send(request).await;
        }
        self.live = None;
        self.set_phase(None);
    }

    /// Ends the set for good: its subscriptions and channel on the XSP, its record in the store.
    pub async fn close(&mut self) {
        for subscription in std::mem::take(&mut self.record.subscriptions) {
            let request = self.request(
                "DELETE",
                &format!("{EVENTS}/subscription/{}", encode(&subscription.id)),
            );
            let _ = self.send(request).await;
        }
        if let Some(channel_id) = self.live.as_ref().map(|l| l.channel_id.clone()) {
            let request = self.request(
                "DELETE",
                &format!("{EVENTS}/channel/{}", encode(&channel_id)),
            );
            let _ = self.send(request).await;
        }
        self.live = None;
        self.set_phase(None);
        if let Err(e) = self.plugin.host.store().delete(&self.key).await {
            self.plugin
                .host
                .warn(&format!("xsi-events: forgetting a channel set failed: {e}"));
        }
    }
}

/// The next reconnect delay after `delay`: the first step, then doubling up to the maximum.
fn backoff(delay: Duration) -> Duration {
    (delay * 2).clamp(BACKOFF_FIRST, BACKOFF_MAX)
}

/// The `expires` of a `Channel` or `Subscription` answer.
fn granted_expires(body: &[u8]) -> Option<u64> {
    tree(body).ok()?.text_of("expires")?.parse().ok()
}

/// Text escaped for an XML element.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Polls `read` to its end, noting every acknowledgement that completes meanwhile.
async fn drive<F: Future + Unpin>(
    mut read: F,
    acks: &mut FuturesUnordered<BoxFuture<'static, Acked>>,
    note: impl Fn(Acked),
) -> F::Output {
    futures_util::future::poll_fn(|cx| {
        while let std::task::Poll::Ready(Some(acked)) = acks.poll_next_unpin(cx) {
            note(acked);
        }
        read.poll_unpin(cx)
    })
    .await
}
