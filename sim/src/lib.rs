//! xsi-sim: a BroadWorks XSI simulator for tests, benchmarks and the demo.
//!
//! One simulated application server ([`Platform`]: directory, service state, sessions) is served
//! by one or more simulated XSPs, each on its own loopback port, plus a JSON control API that
//! tests use to observe requests and inject faults. The XSI behaviour lives in [`xsp`], the
//! documents in [`xml`].

pub mod calls;
pub mod directory;
pub mod events;
pub mod http;
pub mod search;
pub mod seed;
pub mod subscriptions;
pub mod xml;
pub mod xsp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::task::JoinHandle;

use crate::directory::{Directory, Principal, User};
use crate::http::Body;
use crate::seed::Seed;
use crate::subscriptions::{EventPackage, Subscription};
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
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
                self.publish(user, package, &data);
            }
        }
    }

    /// Delivers a `package` event about `user` to every subscription that wants it.
    pub fn publish(&self, user: &User, package: EventPackage, data: &xml::EventData) {
        let mut subscriptions = self.subscriptions();
        let mut channels = self.channels();
        for subscription in subscriptions.matching(user, package) {
            deliver(&mut channels, subscription, &user.user_id, data);
        }
    }

    /// Publishes the current state of every package that changed between two versions of a user.
    pub fn publish_changes(&self, before: &User, after: &User) {
        for package in EventPackage::ALL {
            let data = current_state(after, package, &[]);
            if data.content != current_state(before, package, &[]).content {
                self.publish(after, package, &data);
            }
        }
    }

    /// Sends a new or refreshed user-level subscription its initial state events.
    pub fn send_initial_events(&self, subscription_id: &str, user: &User) {
        let calls: Vec<calls::CallHalf> = self
            .calls()
            .of_user(&user.user_id)
            .into_iter()
            .cloned()
            .collect();
        let calls: Vec<&calls::CallHalf> = calls.iter().collect();
        let mut subscriptions = self.subscriptions();
        let mut channels = self.channels();
        if let Some(subscription) = subscriptions.by_id_mut(subscription_id) {
            for package in subscription.packages.clone() {
                deliver(
                    &mut channels,
                    subscription,
                    &user.user_id,
                    &current_state(user, package, &calls),
                );
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
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Simulator {
    /// Starts the XSPs and control API named by the seed. Without XSP addresses, two XSPs start
    /// on free loopback ports; without a control address, the control API does too.
    pub async fn start(seed: Seed) -> std::io::Result<Arc<Self>> {
        let tls = seed.tls.as_ref().map(xsp_tls).transpose()?;
        let platform = Arc::new(Platform::new(
            Directory::new(seed.users, seed.admins),
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
            let task = serve_xsp(listener, tls.clone(), Arc::clone(&platform), index);
            xsps.push(XspSlot {
                addr,
                task: Mutex::new(Some(task)),
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
        if let Some(task) = lock(&slot.task).take() {
            task.abort();
        }
        self.platform.channels().drop_xsp(index);
        true
    }

    /// Brings a stopped XSP back on its old address.
    pub async fn start_xsp(&self, index: usize) -> std::io::Result<bool> {
        let Some(slot) = self.xsps.get(index) else {
            return Ok(false);
        };
        if lock(&slot.task).is_some() {
            return Ok(true);
        }
        let listener = http::bind(slot.addr).await?;
        *lock(&slot.task) = Some(serve_xsp(
            listener,
            self.tls.clone(),
            Arc::clone(&self.platform),
            index,
        ));
        Ok(true)
    }

    /// The control API: JSON over HTTP for tests and operators.
    ///
    /// - `GET /requests`: every XSI request seen, with the credentials it carried
    /// - `GET /channels`: open event channels (XSP, set, owner, seconds left, heartbeats)
    /// - `GET /acks`: every `EventResponse` received
    /// - `POST /xsp/<n>/stop`, `POST /xsp/<n>/start`: kill or restore XSP number n (0-based)
    /// - `POST /channels/<id>/cut`: end a channel's stream abruptly, with no termination event
    /// - `PUT /xsp/<n>/fault` with `{"status": 503, "delay_ms": 2000, "events_status": 503}` (any
    ///   may be left out),
    ///   `DELETE /xsp/<n>/fault`: make XSP n answer with an error status or slowly, or stop
    /// - `GET /users/<id>`: a user's profile and service state
    /// - `PUT /users/<id>`: create or replace a user (the JSON shape of `GET`); changed service or
    ///   voice-mail state is published to subscribers as events
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
            ("GET", ["channels"]) => json_response(200, &self.platform.channels().views()),
            ("POST", ["channels", id, "cut"]) => {
                if self.platform.channels().cut(id) {
                    json_response(200, &serde_json::json!({"channel_id": id, "action": "cut"}))
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
            ("GET", ["users", id]) => match self.platform.directory().user(id) {
                Some(user) => json_response(200, user),
                None => json_response(404, &serde_json::json!({"error": "no such user"})),
            },
            ("PUT", ["users", id]) => match serde_json::from_slice::<User>(&body) {
                Ok(user) if user.user_id.eq_ignore_ascii_case(id) => {
                    let before = self.platform.directory().user(id).cloned();
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
    channels.deliver(&subscription.channel_set_id, &event_id, envelope);
}

/// A package's state for a user with these calls, as its events report it; also its initial
/// event.
fn current_state(user: &User, package: EventPackage, calls: &[&calls::CallHalf]) -> xml::EventData {
    match package {
        EventPackage::AdvancedCall | EventPackage::BasicCall | EventPackage::StandardCall => {
            xml::call_subscription_event(calls)
        }
        EventPackage::DoNotDisturb => xml::do_not_disturb_event(&user.do_not_disturb),
        EventPackage::CallForwardingAlways => {
            xml::call_forwarding_always_event(&user.call_forwarding_always)
        }
        EventPackage::RemoteOffice => xml::remote_office_event(&user.remote_office),
        EventPackage::VoiceMailMessageSummary => xml::voice_mail_summary_event(&user.voice_mail),
        EventPackage::CommPilotExpress => xml::comm_pilot_express_event(user.comm_pilot_express),
    }
}

fn serve_xsp(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    platform: Arc<Platform>,
    index: usize,
) -> JoinHandle<()> {
    http::serve(listener, tls, move |request, peer| {
        xsp::handle(Arc::clone(&platform), index, request, peer)
    })
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
