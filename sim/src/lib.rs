//! xsi-sim: a BroadWorks XSI simulator for tests, benchmarks and the demo.
//!
//! One simulated application server ([`Platform`]: directory, service state, sessions) is served
//! by one or more simulated XSPs, each on its own loopback port, plus a JSON control API that
//! tests use to observe requests and inject faults. The XSI behaviour lives in [`xsp`], the
//! documents in [`xml`].

pub mod calls;
pub mod directories;
pub mod directory;
pub mod events;
pub mod firebase;
pub mod http;
pub mod search;
pub mod seed;
pub mod srs;
pub mod subscriptions;
pub mod xml;
pub mod xsp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::task::JoinHandle;

use crate::directory::{CallCenter, Directory, Principal, User};
use crate::http::Body;
use crate::seed::Seed;
use crate::subscriptions::{EventPackage, Subject, Subscription};
use crate::xsp::RequestRecord;

/// The simulated application server shared by every XSP.
#[derive(Debug, Default)]
pub struct Platform {
    directory: Mutex<Directory>,
    /// Sessions by (XSP, context path, JSESSIONID): a cookie is only good on the XSP that issued it.
    sessions: Mutex<HashMap<(usize, &'static str, String), Principal>>,
    requests: Mutex<Vec<RequestRecord>>,
    faults: Mutex<HashMap<usize, Fault>>,
    channels: Mutex<events::Channels>,
    subscriptions: Mutex<subscriptions::Subscriptions>,
    calls: Mutex<calls::Calls>,
    event_settings: events::EventSettings,
    acks: Mutex<Vec<Ack>>,
}

/// An `EventResponse` as an XSP received it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ack {
    pub xsp: usize,
    pub event_id: String,
    pub status: String,
    /// Whether the event was pending on a channel of that XSP.
    pub known: bool,
}

/// A fault injected into one XSP through the control API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fault {
    /// Answer every request with this status (e.g. 503) instead of serving it.
    pub status: Option<u16>,
    /// Wait this long before answering.
    pub delay_ms: u64,
    /// Answer XSI-Events commands (heartbeats, acknowledgements, subscriptions) with this status
    /// while XSI-Actions still work: an XSP that stops acknowledging.
    pub events_status: Option<u16>,
    /// Answer a request whose `JSESSIONID` this XSP does not know (expired, or issued by
    /// another XSP) with this status, instead of authenticating it afresh from its Basic
    /// credentials as BroadWorks does: a stricter XSP, or an authenticating front end.
    pub stale_session_status: Option<u16>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler cannot leave these maps half-updated, so a poisoned lock is still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Platform {
    pub fn new(directory: Directory, event_settings: events::EventSettings) -> Self {
        Self {
            directory: Mutex::new(directory),
            event_settings,
            ..Self::default()
        }
    }

    pub fn channels(&self) -> MutexGuard<'_, events::Channels> {
        lock(&self.channels)
    }

    pub fn event_settings(&self) -> events::EventSettings {
        self.event_settings
    }

    /// Locks subscriptions. When both are needed, take subscriptions before channels.
    pub fn subscriptions(&self) -> MutexGuard<'_, subscriptions::Subscriptions> {
        lock(&self.subscriptions)
    }

    /// Locks the calls. Take the directory first when both are needed.
    pub fn calls(&self) -> MutexGuard<'_, calls::Calls> {
        lock(&self.calls)
    }

    /// Publishes call events to the call packages' subscribers; `users` are the call halves'
    /// owners, looked up by the caller.
    pub fn publish_calls(&self, changes: &calls::Changes, users: &[User]) {
        for (half, kind) in changes {
            let Some(user) = users
                .iter()
                .find(|u| u.user_id.eq_ignore_ascii_case(&half.user_id))
            else {
                continue;
            };
            let data = xml::call_event(kind, half);
            for package in [
                EventPackage::BasicCall,
                EventPackage::StandardCall,
                EventPackage::AdvancedCall,
            ] {
                self.publish(user.into(), package, &data);
            }
        }
    }

    /// Delivers a `package` event about `subject` to every subscription that wants it.
    pub fn publish(&self, subject: Subject<'_>, package: EventPackage, data: &xml::EventData) {
        let mut subscriptions = self.subscriptions();
        let mut channels = self.channels();
        for subscription in subscriptions.matching(subject, package) {
            deliver(&mut channels, subscription, subject.id, data);
        }
    }

    /// Publishes what changed between two versions of a user: service state, agent state (and
    /// with it the figures of the agent's call centres) and agent monitoring figures.
    pub fn publish_changes(&self, before: &User, after: &User) {
        for package in EventPackage::ALL {
            if let Some(data) = change_event(before, after, package) {
                self.publish(after.into(), package, &data);
            }
        }
        if before.agent_state != after.agent_state {
            let centers: Vec<(CallCenter, xml::EventData)> = {
                let directory = self.directory();
                directory
                    .call_centers_of(&after.user_id)
                    .map(|c| (c.clone(), center_figures_event(&directory, c)))
                    .collect()
            };
            for (center, data) in &centers {
                self.publish(center.into(), EventPackage::CallCenterMonitoring, data);
            }
        }
    }

    /// Publishes a change of a call centre's queue to the queue and monitoring packages.
    pub fn publish_queue_change(&self, center: &CallCenter, queue_event: &xml::EventData) {
        let figures = center_figures_event(&self.directory(), center);
        self.publish(center.into(), EventPackage::CallCenterQueue, queue_event);
        self.publish(center.into(), EventPackage::CallCenterMonitoring, &figures);
    }

    /// The state events a new or refreshed subscription to `target_id` starts with: those of a
    /// user, or of a call centre.
    pub fn initial_events(
        &self,
        target_id: &str,
        packages: &[EventPackage],
    ) -> Vec<xml::EventData> {
        let directory = self.directory();
        if let Some(user) = directory.user(target_id) {
            let calls: Vec<calls::CallHalf> = self
                .calls()
                .of_user(&user.user_id)
                .into_iter()
                .cloned()
                .collect();
            let calls: Vec<&calls::CallHalf> = calls.iter().collect();
            packages
                .iter()
                .filter_map(|p| user_state(&directory, user, *p, &calls))
                .collect()
        } else if let Some(center) = directory.call_center(target_id) {
            packages
                .iter()
                .filter_map(|p| center_state(&directory, center, *p))
                .collect()
        } else {
            Vec::new()
        }
    }

    /// Sends a subscription its initial events about `target_id`.
    pub fn send_initial_events(
        &self,
        subscription_id: &str,
        target_id: &str,
        events: &[xml::EventData],
    ) {
        let mut subscriptions = self.subscriptions();
        let mut channels = self.channels();
        if let Some(subscription) = subscriptions.by_id_mut(subscription_id) {
            for data in events {
                deliver(&mut channels, subscription, target_id, data);
            }
        }
    }

    pub fn record_ack(&self, ack: Ack) {
        lock(&self.acks).push(ack);
    }

    pub fn acks(&self) -> Vec<Ack> {
        lock(&self.acks).clone()
    }

    pub fn directory(&self) -> MutexGuard<'_, Directory> {
        lock(&self.directory)
    }

    pub fn session(&self, xsp: usize, context: &'static str, token: &str) -> Option<Principal> {
        lock(&self.sessions)
            .get(&(xsp, context, token.to_owned()))
            .cloned()
    }

    /// Opens a session and returns its JSESSIONID (32 upper-case hex digits, like Tomcat's).
    pub fn open_session(&self, xsp: usize, context: &'static str, principal: Principal) -> String {
        let token = format!("{:032X}", rand::random::<u128>());
        lock(&self.sessions).insert((xsp, context, token.clone()), principal);
        token
    }

    /// Forgets every session an XSP issued, as its session timeout does; returns how many.
    pub fn expire_sessions(&self, xsp: usize) -> usize {
        let mut sessions = lock(&self.sessions);
        let before = sessions.len();
        sessions.retain(|(issuer, _, _), _| *issuer != xsp);
        before - sessions.len()
    }

    /// Ends every session of a user, as a password change does.
    pub fn close_sessions_of(&self, user_id: &str) {
        lock(&self.sessions).retain(|_, p| !p.user_id().eq_ignore_ascii_case(user_id));
    }

    /// The fault in force on an XSP (none by default).
    pub fn fault(&self, xsp: usize) -> Fault {
        lock(&self.faults).get(&xsp).copied().unwrap_or_default()
    }

    pub fn set_fault(&self, xsp: usize, fault: Fault) {
        lock(&self.faults).insert(xsp, fault);
    }

    pub fn record(&self, record: RequestRecord) {
        lock(&self.requests).push(record);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.requests).clone()
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct Simulator {
    platform: Arc<Platform>,
    xsps: Vec<XspSlot>,
    /// The XSPs' TLS configuration, kept to restart a stopped XSP the same way.
    tls: Option<Arc<rustls::ServerConfig>>,
    control_addr: SocketAddr,
    control_task: Mutex<Option<JoinHandle<()>>>,
    sweeper: JoinHandle<()>,
}

#[derive(Debug)]
struct XspSlot {
    addr: SocketAddr,
    serving: Mutex<Option<Serving>>,
}

/// One XSP serving on its listener.
#[derive(Debug)]
struct Serving {
    task: JoinHandle<()>,
    /// Cleared when the XSP is killed: the abort cuts connections only when the runtime next
    /// polls them, and a request already on one must not be answered meanwhile.
    up: Arc<AtomicBool>,
}

impl Serving {
    fn stop(self) {
        self.up.store(false, Ordering::SeqCst);
        self.task.abort();
    }
}

impl Simulator {
    /// Starts the XSPs and control API named by the seed. Without XSP addresses, two XSPs start
    /// on free loopback ports; without a control address, the control API does too.
    pub async fn start(seed: Seed) -> std::io::Result<Arc<Self>> {
        let tls = seed.tls.as_ref().map(xsp_tls).transpose()?;
        let platform = Arc::new(Platform::new(
            Directory::new(seed.users, seed.admins, seed.call_centers),
            seed.events,
        ));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let addrs = if seed.xsp.is_empty() {
            vec![loopback; 2]
        } else {
            seed.xsp
        };
        let mut xsps = Vec::with_capacity(addrs.len());
        for (index, addr) in addrs.into_iter().enumerate() {
            let listener = http::bind(addr).await?;
            let addr = listener.local_addr()?;
            let serving = serve_xsp(listener, tls.clone(), Arc::clone(&platform), index);
            xsps.push(XspSlot {
                addr,
                serving: Mutex::new(Some(serving)),
            });
        }
        let control_listener = http::bind(seed.control.unwrap_or(loopback)).await?;
        let control_addr = control_listener.local_addr()?;
        let sweeper = tokio::spawn(sweep_channels(Arc::clone(&platform)));
        let simulator = Arc::new(Self {
            platform,
            xsps,
            tls,
            control_addr,
            control_task: Mutex::new(None),
            sweeper,
        });
        // The control API holds a weak reference so that dropping the simulator stops it.
        let weak = Arc::downgrade(&simulator);
        let task = http::serve(control_listener, None, move |request, _| {
            let simulator = weak.upgrade();
            async move {
                Ok(match simulator {
                    Some(simulator) => simulator.control(request).await,
                    None => json_response(503, &serde_json::json!({"error": "simulator stopped"})),
                })
            }
        });
        *lock(&simulator.control_task) = Some(task);
        Ok(simulator)
    }

    pub fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    pub fn xsp_addrs(&self) -> Vec<SocketAddr> {
        self.xsps.iter().map(|x| x.addr).collect()
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// Kills one XSP: its listener closes and every open connection is cut.
    pub fn stop_xsp(&self, index: usize) -> bool {
        let Some(slot) = self.xsps.get(index) else {
            return false;
        };
        if let Some(serving) = lock(&slot.serving).take() {
            serving.stop();
        }
        self.platform.channels().drop_xsp(index);
        true
    }

    /// Brings a stopped XSP back on its old address.
    pub async fn start_xsp(&self, index: usize) -> std::io::Result<bool> {
        let Some(slot) = self.xsps.get(index) else {
            return Ok(false);
        };
        if lock(&slot.serving).is_some() {
            return Ok(true);
        }
        let listener = http::bind(slot.addr).await?;
        *lock(&slot.serving) = Some(serve_xsp(
            listener,
            self.tls.clone(),
            Arc::clone(&self.platform),
            index,
        ));
        Ok(true)
    }

    /// The control API: JSON over HTTP for tests and operators.
    ///
    /// - `GET /requests`: every XSI request seen, with the credentials it carried;
    ///   `GET /requests/by-user`: how many each user id sent
    /// - `GET /channels`: open event channels (XSP, set, owner, seconds left, heartbeats)
    /// - `GET /acks`: every `EventResponse` received
    /// - `POST /xsp/<n>/stop`, `POST /xsp/<n>/start`: kill or restore XSP number n (0-based)
    /// - `POST /channels/<id>/cut`: end a channel's stream abruptly, with no termination event
    /// - `DELETE /xsp/<n>/sessions`: XSP n forgets every `JSESSIONID` it issued (a session
    ///   timeout)
    /// - `PUT /xsp/<n>/fault` with `{"status": 503, "delay_ms": 2000, "events_status": 503,
    ///   "stale_session_status": 401}` (any may be left out),
    ///   `DELETE /xsp/<n>/fault`: make XSP n answer with an error status or slowly, or stop
    /// - `GET /users/<id>`: a user's profile and service state
    /// - `PUT /users/<id>`: create or replace a user (the JSON shape of `GET`); changed service or
    ///   voice-mail state is published to subscribers as events
    /// - `GET /callcenters/<id>`: a call centre and its queue
    /// - `POST /callcenters/<id>/queue` with `{"address": "+15550100", "name": "…"}`: a call joins
    ///   the queue; `DELETE /callcenters/<id>/queue/<callId>`: it is abandoned
    /// - `GET /subscriptions`: every subscription (owner, target, packages, set, events sent)
    async fn control(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let segments: Vec<&str> = parts
            .uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        match (parts.method.as_str(), segments.as_slice()) {
            ("GET", ["requests"]) => json_response(200, &self.platform.requests()),
            ("GET", ["requests", "by-user"]) => {
                let mut counts = std::collections::BTreeMap::<String, usize>::new();
                for record in self.platform.requests() {
                    let user = record
                        .auth_user
                        .unwrap_or_else(|| "-".to_owned())
                        .to_ascii_lowercase();
                    *counts.entry(user).or_default() += 1;
                }
                json_response(200, &counts)
            }
            ("GET", ["channels"]) => json_response(200, &self.platform.channels().views()),
            ("GET", ["channels", "terminated"]) => {
                json_response(200, &self.platform.channels().terminations())
            }
            ("POST", ["channels", id, "cut"]) => {
                if self.platform.channels().cut(id) {
                    json_response(200, &serde_json::json!({"channel_id": id, "action": "cut"}))
                } else {
                    json_response(404, &serde_json::json!({"error": "no such channel"}))
                }
            }
            ("POST", ["channels", id, "inject"]) => {
                let event_id = parts.uri.query().and_then(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "event_id")
                        .map(|(_, v)| v.into_owned())
                });
                let document = String::from_utf8_lossy(&body).into_owned();
                if self
                    .platform
                    .channels()
                    .inject(id, document, event_id.as_deref())
                {
                    json_response(
                        200,
                        &serde_json::json!({"channel_id": id, "action": "inject"}),
                    )
                } else {
                    json_response(404, &serde_json::json!({"error": "no such channel"}))
                }
            }
            ("GET", ["subscriptions"]) => {
                json_response(200, &self.platform.subscriptions().views())
            }
            ("GET", ["acks"]) => json_response(200, &self.platform.acks()),
            ("POST", ["xsp", n, action]) => {
                let Ok(index) = n.parse::<usize>() else {
                    return json_response(
                        400,
                        &serde_json::json!({"error": "XSP index is a number"}),
                    );
                };
                let done = match *action {
                    "stop" => Ok(self.stop_xsp(index)),
                    "start" => self.start_xsp(index).await,
                    _ => {
                        return json_response(404, &serde_json::json!({"error": "unknown action"}));
                    }
                };
                match done {
                    Ok(true) => {
                        json_response(200, &serde_json::json!({"xsp": index, "action": action}))
                    }
                    Ok(false) => json_response(404, &serde_json::json!({"error": "no such XSP"})),
                    Err(e) => json_response(500, &serde_json::json!({"error": e.to_string()})),
                }
            }
            ("DELETE", ["xsp", n, "sessions"]) => {
                let Some(index) = n.parse::<usize>().ok().filter(|i| *i < self.xsps.len()) else {
                    return json_response(404, &serde_json::json!({"error": "no such XSP"}));
                };
                let expired = self.platform.expire_sessions(index);
                json_response(200, &serde_json::json!({"xsp": index, "expired": expired}))
            }
            ("PUT" | "DELETE", ["xsp", n, "fault"]) => {
                let Some(index) = n.parse::<usize>().ok().filter(|i| *i < self.xsps.len()) else {
                    return json_response(404, &serde_json::json!({"error": "no such XSP"}));
                };
                let fault = if parts.method == ::http::Method::DELETE {
                    Fault::default()
                } else {
                    match serde_json::from_slice::<Fault>(&body) {
                        Ok(fault) => fault,
                        Err(e) => {
                            return json_response(
                                400,
                                &serde_json::json!({"error": e.to_string()}),
                            );
                        }
                    }
                };
                self.platform.set_fault(index, fault);
                json_response(200, &fault)
            }
            ("GET", ["callcenters", id]) => match self.platform.directory().call_center(id) {
                Some(center) => json_response(200, center),
                None => json_response(404, &serde_json::json!({"error": "no such call centre"})),
            },
            ("POST", ["callcenters", id, "queue"]) => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Caller {
                    address: String,
                    name: Option<String>,
                }
                let caller = match serde_json::from_slice::<Caller>(&body) {
                    Ok(caller) => caller,
                    Err(e) => {
                        return json_response(400, &serde_json::json!({"error": e.to_string()}));
                    }
                };
                let (call_id, ext_tracking_id) = self.platform.calls().new_ids();
                let changed = {
                    let mut directory = self.platform.directory();
                    directory.call_center_mut(id).map(|center| {
                        let entry = directory::QueueEntry {
                            call_id: call_id.clone(),
                            ext_tracking_id,
                            name: caller.name,
                            address: caller.address,
                            add_time: calls::now_ms(),
                        };
                        center.queue.push(entry.clone());
                        let event = xml::acd_call_added_event(center, &entry, center.queue.len());
                        (center.clone(), event)
                    })
                };
                match changed {
                    Some((center, event)) => {
                        self.platform.publish_queue_change(&center, &event);
                        json_response(200, &serde_json::json!({"call_id": call_id}))
                    }
                    None => {
                        json_response(404, &serde_json::json!({"error": "no such call centre"}))
                    }
                }
            }
            ("DELETE", ["callcenters", id, "queue", call_id]) => {
                let changed = {
                    let mut directory = self.platform.directory();
                    directory.call_center_mut(id).and_then(|center| {
                        let position = center.queue.iter().position(|e| e.call_id == *call_id)?;
                        let entry = center.queue.remove(position);
                        let event = xml::acd_call_abandoned_event(center, &entry, calls::now_ms());
                        Some((center.clone(), event))
                    })
                };
                match changed {
                    Some((center, event)) => {
                        self.platform.publish_queue_change(&center, &event);
                        json_response(
                            200,
                            &serde_json::json!({"call_id": call_id, "action": "abandoned"}),
                        )
                    }
                    None => json_response(
                        404,
                        &serde_json::json!({"error": "no such call centre or queued call"}),
                    ),
                }
            }
            ("GET", ["users", id]) => match self.platform.directory().user(id) {
                Some(user) => json_response(200, user),
                None => json_response(404, &serde_json::json!({"error": "no such user"})),
            },
            ("PUT", ["users", id]) => match serde_json::from_slice::<User>(&body) {
                Ok(mut user) if user.user_id.eq_ignore_ascii_case(id) => {
                    let before = self.platform.directory().user(id).cloned();
                    // A new agent state starts now unless the caller says when.
                    if let Some(before) = &before {
                        if before.agent_state != user.agent_state
                            && before.agent_state_since_ms == user.agent_state_since_ms
                        {
                            user.agent_state_since_ms = calls::now_ms();
                        }
                    }
                    self.platform.directory().upsert_user(user.clone());
                    if let Some(before) = before {
                        self.platform.publish_changes(&before, &user);
                    }
                    json_response(200, &serde_json::json!({"user_id": id}))
                }
                Ok(_) => json_response(
                    400,
                    &serde_json::json!({"error": "user_id differs from the path"}),
                ),
                Err(e) => json_response(400, &serde_json::json!({"error": e.to_string()})),
            },
            _ => json_response(
                404,
                &serde_json::json!({"error": "no such control endpoint"}),
            ),
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for index in 0..self.xsps.len() {
            self.stop_xsp(index);
        }
        if let Some(task) = lock(&self.control_task).take() {
            task.abort();
        }
        self.sweeper.abort();
    }
}

/// A few times per second: ends expired subscriptions (with `SubscriptionTerminatedEvent`) and
/// channels, and drops silent ones.
async fn sweep_channels(platform: Arc<Platform>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tick.tick().await;
        let now = std::time::Instant::now();
        let settings = platform.event_settings();
        let mut subscriptions = platform.subscriptions();
        let mut channels = platform.channels();
        for mut expired in subscriptions.take_expired(now) {
            let target = expired.target.id().unwrap_or(&expired.owner).to_owned();
            deliver(
                &mut channels,
                &mut expired,
                &target,
                &xml::subscription_terminated_event(),
            );
        }
        channels.sweep(&settings, now);
    }
}

/// Sends one event of a subscription on its channel set.
fn deliver(
    channels: &mut events::Channels,
    subscription: &mut Subscription,
    target_id: &str,
    data: &xml::EventData,
) {
    subscription.sequence += 1;
    let event_id = xml::new_id();
    let envelope = |channel_id: &str| {
        xml::subscription_event(
            &xml::Envelope {
                event_id: &event_id,
                sequence: subscription.sequence,
                owner: &subscription.owner,
                application_id: &subscription.application_id,
                subscription_id: &subscription.id,
                channel_id,
                target_id,
            },
            data,
        )
    };
    channels.deliver(
        &subscription.channel_set_id,
        &subscription.owner,
        &event_id,
        envelope,
    );
}

/// A user's state for a package, as its initial event reports it (none for call-centre packages).
fn user_state(
    directory: &Directory,
    user: &User,
    package: EventPackage,
    calls: &[&calls::CallHalf],
) -> Option<xml::EventData> {
    match package {
        EventPackage::AdvancedCall | EventPackage::BasicCall | EventPackage::StandardCall => {
            Some(xml::call_subscription_event(calls))
        }
        EventPackage::CallCenterAgent => Some(xml::agent_subscription_event(
            user,
            directory.call_centers_of(&user.user_id),
        )),
        EventPackage::CallCenterAgentMonitoring => {
            Some(xml::agent_monitoring_event(&user.agent_monitoring, true))
        }
        EventPackage::CallCenterQueue | EventPackage::CallCenterMonitoring => None,
        service => service_state(user, service),
    }
}

/// The state of a service package; `None` for the packages that are not services.
fn service_state(user: &User, package: EventPackage) -> Option<xml::EventData> {
    Some(match package {
        EventPackage::DoNotDisturb => xml::do_not_disturb_event(&user.do_not_disturb),
        EventPackage::CallForwardingAlways => {
            xml::call_forwarding_always_event(&user.call_forwarding_always)
        }
        EventPackage::RemoteOffice => xml::remote_office_event(&user.remote_office),
        EventPackage::VoiceMailMessageSummary => xml::voice_mail_summary_event(&user.voice_mail),
        EventPackage::CommPilotExpress => xml::comm_pilot_express_event(user.comm_pilot_express),
        _ => return None,
    })
}

/// The event a change between two versions of a user causes in `package`, if any.
fn change_event(before: &User, after: &User, package: EventPackage) -> Option<xml::EventData> {
    match package {
        EventPackage::CallCenterAgent => {
            (before.agent_state != after.agent_state).then(|| xml::agent_state_event(after))
        }
        EventPackage::CallCenterAgentMonitoring => (before.agent_monitoring
            != after.agent_monitoring)
            .then(|| xml::agent_monitoring_event(&after.agent_monitoring, false)),
        _ => {
            let now = service_state(after, package)?;
            (service_state(before, package)?.content != now.content).then_some(now)
        }
    }
}

/// A call centre's state for a package, as its initial event reports it.
fn center_state(
    directory: &Directory,
    center: &CallCenter,
    package: EventPackage,
) -> Option<xml::EventData> {
    match package {
        EventPackage::CallCenterQueue => Some(xml::acd_subscription_event(center)),
        EventPackage::CallCenterMonitoring => Some(center_figures_event(directory, center)),
        _ => None,
    }
}

/// Call Center Monitoring's figures from the queue and the agents' states.
fn center_figures_event(directory: &Directory, center: &CallCenter) -> xml::EventData {
    let now = calls::now_ms();
    let agents: Vec<&User> = center
        .agents
        .iter()
        .filter_map(|a| directory.user(a))
        .collect();
    let count = |f: &dyn Fn(&User) -> bool| agents.iter().filter(|a| f(a)).count() as u64;
    xml::call_center_monitoring_event(&xml::CallCenterFigures {
        calls_in_queue: center.queue.len() as u64,
        longest_wait_seconds: center
            .queue
            .first()
            .map_or(0, |e| now.saturating_sub(e.add_time) / 1000),
        agents_assigned: agents.len() as u64,
        agents_staffed: count(&|a| a.agent_state.is_staffed()),
        staffed_idle: count(&|a| a.agent_state == directory::AgentState::Available),
        staffed_unavailable: count(&|a| a.agent_state == directory::AgentState::Unavailable),
    })
}

fn serve_xsp(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    platform: Arc<Platform>,
    index: usize,
) -> Serving {
    let up = Arc::new(AtomicBool::new(true));
    let serving = Arc::clone(&up);
    let task = http::serve(listener, tls, move |request, peer| {
        let (platform, up) = (Arc::clone(&platform), Arc::clone(&serving));
        async move {
            // A killed XSP answers nothing: the connection just ends.
            if !up.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("the XSP was stopped"));
            }
            xsp::handle(platform, index, request, peer).await
        }
    });
    Serving { task, up }
}

/// The XSPs' TLS configuration from the seed: given PEM files, or a fresh self-signed
/// certificate whose PEM is written out for clients to trust.
fn xsp_tls(seed: &seed::TlsSeed) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let (cert, key) = match seed {
        seed::TlsSeed::Files {
            cert_file,
            key_file,
        } => (std::fs::read(cert_file)?, std::fs::read(key_file)?),
        seed::TlsSeed::SelfSigned {
            self_signed_cert_out,
        } => {
            let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            let certified =
                rcgen::generate_simple_self_signed(names).map_err(std::io::Error::other)?;
            std::fs::write(self_signed_cert_out, certified.cert.pem())?;
            (
                certified.cert.pem().into_bytes(),
                certified.signing_key.serialize_pem().into_bytes(),
            )
        }
    };
    http::tls_config(&cert, &key).map_err(std::io::Error::other)
}

fn json_response(status: u16, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(::http::header::CONTENT_TYPE, "application/json")
        .body(Body::full(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
