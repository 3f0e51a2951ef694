//! The services xsigate performs for a plugin.
//!
//! Every asynchronous service is one [`abi::HostApi::call`] with an operation code, a JSON
//! `meta` object and raw bytes; the host runs it on its own runtime and the plugin awaits the
//! C-ABI future it returns. The wrappers here are the only place that knows those encodings.
#![allow(
    unsafe_code,
    reason = "calls through the host's function table; each call states its invariant"
)]

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::abi::{self, Buf, HostApi, Str};
use crate::calls::{
    Claimable, ClaimableMeta, Delivery, HttpHead, HttpMeta, KeyMeta, LeaseGrant, LeaseLoss,
    LeaseLost, LeaseMeta, PrefixMeta, PublishMeta, SealMeta, SleepMeta, StreamMeta, StreamReadHead,
    UniqueIdMeta, UserIdMeta, UserIdsMeta, XsiCredentials, XsiHead, XsiMeta,
};
use crate::error::{Error, ErrorKind};

/// The plugin's handle on the host. Cheap to copy; valid for the life of the process.
#[derive(Clone, Copy)]
pub struct Host {
    api: &'static HostApi,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

/// Log levels of [`Host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn code(self) -> u32 {
        match self {
            Self::Error => abi::level::ERROR,
            Self::Warn => abi::level::WARN,
            Self::Info => abi::level::INFO,
            Self::Debug => abi::level::DEBUG,
            Self::Trace => abi::level::TRACE,
        }
    }
}

impl Host {
    pub(crate) fn new(api: &'static HostApi) -> Self {
        Self { api }
    }

    pub(crate) fn api(self) -> &'static HostApi {
        self.api
    }

    async fn call(
        self,
        op: u32,
        meta: &impl Serialize,
        body: Vec<u8>,
    ) -> Result<(Buf, Buf), Error> {
        let meta = serde_json::to_vec(meta)?;
        // SAFETY: `api` is the table the host gave this plugin at init, valid for the process;
        // ownership of both buffers moves to the host.
        let future = unsafe {
            (self.api.call)(
                self.api.context,
                op,
                Buf::from_vec(meta),
                Buf::from_vec(body),
            )
        };
        let reply = future.await;
        let kind = match reply.code {
            abi::reply::OK => return Ok((reply.meta, reply.body)),
            abi::reply::NOT_FOUND => ErrorKind::NotFound,
            abi::reply::TIMEOUT => ErrorKind::Timeout,
            abi::reply::INVALID => ErrorKind::Invalid,
            abi::reply::UNSUPPORTED => ErrorKind::Unsupported,
            _ => ErrorKind::Failed,
        };
        let message = String::from_utf8_lossy(reply.body.as_slice()).into_owned();
        Err(Error::new(kind, message))
    }

    /// Sends an HTTP request with the host's pooled client.
    pub async fn http(self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let meta = HttpMeta {
            method: request.method,
            url: request.url,
            headers: request.headers,
            timeout_ms: request.timeout.map(millis),
        };
        let (meta, body) = self.call(abi::op::HTTP, &meta, request.body).await?;
        let head: HttpHead = serde_json::from_slice(meta.as_slice())?;
        Ok(HttpResponse {
            status: head.status,
            headers: head.headers,
            body: body.to_vec(),
        })
    }

    /// Sends an XSI request to one of the provider's XSPs. The host picks a healthy XSP (or the
    /// pinned one), fails over as the proxy does (a request that reached no XSP, or an
    /// idempotent one that got no answer), and attaches the credentials; the
    /// plugin never learns an XSP address or the master password. The provider must list this
    /// plugin in its `plugins`.
    pub async fn xsi(self, request: XsiRequest) -> Result<XsiResponse, Error> {
        let (meta, body) = self.call(abi::op::XSI, &request.meta, request.body).await?;
        let head: XsiHead = serde_json::from_slice(meta.as_slice())?;
        Ok(XsiResponse {
            status: head.status,
            headers: head.headers,
            body: body.to_vec(),
            xsp: head.xsp,
        })
    }

    /// Sends an XSI request whose answer is a long-lived stream, such as the
    /// `POST /com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel` that opens an
    /// XSI-Events channel. The XSP is chosen as for [`Host::xsi`]; the request's timeout bounds
    /// only the wait for the response head. A 2xx answer's body stays open for
    /// [`XsiStream::read`]; any other answer's body is read whole and comes as the first read.
    pub async fn xsi_stream(self, request: XsiRequest) -> Result<XsiStream, Error> {
        let (meta, body) = self
            .call(abi::op::XSI_STREAM, &request.meta, request.body)
            .await?;
        let head: XsiHead = serde_json::from_slice(meta.as_slice())?;
        Ok(XsiStream {
            host: self,
            status: head.status,
            headers: head.headers,
            xsp: head.xsp,
            handle: head.stream,
            rest: Some(body.to_vec()).filter(|b| !b.is_empty()),
        })
    }

    /// The plugin's own namespace in the host's store.
    pub fn store(self) -> Store {
        Store { host: self }
    }

    /// The plugin's leases on live work, which instances sharing a store share out.
    pub fn leases(self) -> Leases {
        Leases { host: self }
    }

    /// The opaque, stable uniqueId of a BroadWorks userId, created on first use.
    pub async fn unique_id(self, user_id: &str) -> Result<String, Error> {
        let (_, body) = self
            .call(
                abi::op::UNIQUE_ID,
                &UserIdMeta {
                    user_id: user_id.to_owned(),
                },
                Vec::new(),
            )
            .await?;
        text(&body)
    }

    /// The uniqueIds of several userIds, in their order, created on first use: one host call
    /// and one store transaction per [`abi::op::UNIQUE_IDS_MAX`] ids, where [`Host::unique_id`]
    /// per user would cost a commit each.
    pub async fn unique_ids(self, user_ids: &[String]) -> Result<Vec<String>, Error> {
        let mut unique_ids = Vec::with_capacity(user_ids.len());
        for chunk in user_ids.chunks(abi::op::UNIQUE_IDS_MAX) {
            let meta = UserIdsMeta {
                user_ids: chunk.to_vec(),
            };
            let (_, body) = self.call(abi::op::UNIQUE_IDS, &meta, Vec::new()).await?;
            let answered: Vec<String> = serde_json::from_slice(body.as_slice())?;
            if answered.len() != chunk.len() {
                return Err(Error::msg("the host answered another number of uniqueIds"));
            }
            unique_ids.extend(answered);
        }
        Ok(unique_ids)
    }

    /// The userId behind a uniqueId, if the host has seen it.
    pub async fn user_id(self, unique_id: &str) -> Result<Option<String>, Error> {
        let meta = UniqueIdMeta {
            unique_id: unique_id.to_owned(),
        };
        found(self.call(abi::op::USER_ID, &meta, Vec::new()).await)?
            .map(|(_, body)| text(&body))
            .transpose()
    }

    /// Encrypts and authenticates `plaintext` under a key derived from the server secret and
    /// this plugin's name. `context` is bound to the result: [`Host::open`] succeeds only with
    /// the same context (use it to tie a secret to, say, the user it belongs to).
    pub async fn seal(self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let (_, body) = self
            .call(
                abi::op::SEAL,
                &SealMeta {
                    context: context.to_owned(),
                },
                plaintext.to_vec(),
            )
            .await?;
        Ok(body.to_vec())
    }

    /// Reverses [`Host::seal`]; fails (`ErrorKind::Failed`) if the data was altered, sealed by
    /// another plugin or under another context.
    pub async fn open(self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let (_, body) = self
            .call(
                abi::op::OPEN,
                &SealMeta {
                    context: context.to_owned(),
                },
                sealed.to_vec(),
            )
            .await?;
        Ok(body.to_vec())
    }

    /// Publishes on the host's event bus, to every plugin subscribed to `topic`.
    pub async fn publish(self, topic: &str, payload: &[u8]) -> Result<Delivery, Error> {
        let (meta, _) = self
            .call(
                abi::op::PUBLISH,
                &PublishMeta {
                    topic: topic.to_owned(),
                },
                payload.to_vec(),
            )
            .await?;
        Ok(serde_json::from_slice(meta.as_slice())?)
    }

    /// Waits on the host's timer.
    pub async fn sleep(self, duration: Duration) -> Result<(), Error> {
        self.call(
            abi::op::SLEEP,
            &SleepMeta {
                ms: millis(duration),
            },
            Vec::new(),
        )
        .await
        .map(|_| ())
    }

    /// Subscribes this plugin's [`crate::EventConsumer`] to a topic. Only allowed during
    /// [`crate::Plugin::init`].
    pub fn subscribe(self, topic: &str) -> Result<(), Error> {
        // SAFETY: the table is valid for the process; `topic` outlives the call.
        if unsafe { (self.api.subscribe)(self.api.context, Str::new(topic)) } {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Unsupported,
                "subscriptions are made during init, to a non-empty topic",
            ))
        }
    }

    /// Writes a line to the host's log, attributed to this plugin.
    pub fn log(self, level: LogLevel, message: &str) {
        self.log_fields(level, message, &[]);
    }

    /// Writes a line with structured fields.
    pub fn log_fields(self, level: LogLevel, message: &str, fields: &[(&str, &str)]) {
        let flat: Vec<Str> = fields
            .iter()
            .flat_map(|(name, value)| [Str::new(name), Str::new(value)])
            .collect();
        // SAFETY: the table is valid for the process; every `Str` outlives the call.
        unsafe {
            (self.api.log)(
                self.api.context,
                level.code(),
                Str::new(message),
                flat.as_ptr(),
                flat.len(),
            );
        }
    }

    pub fn error(self, message: &str) {
        self.log(LogLevel::Error, message);
    }

    pub fn warn(self, message: &str) {
        self.log(LogLevel::Warn, message);
    }

    pub fn info(self, message: &str) {
        self.log(LogLevel::Info, message);
    }

    pub fn debug(self, message: &str) {
        self.log(LogLevel::Debug, message);
    }

    /// Registers a counter, exported as `xsigate_plugin_<plugin>_<name>`. Only during init.
    pub fn counter(self, name: &str, help: &str, labels: &[&str]) -> Result<Counter, Error> {
        self.register(abi::metric::COUNTER, name, help, labels, &[])
            .map(|metric| Counter { metric })
    }

    /// Registers a gauge. Only during init.
    pub fn gauge(self, name: &str, help: &str, labels: &[&str]) -> Result<Gauge, Error> {
        self.register(abi::metric::GAUGE, name, help, labels, &[])
            .map(|metric| Gauge { metric })
    }

    /// Registers a histogram; empty `buckets` means the host's latency buckets. Only during init.
    pub fn histogram(
        self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<Histogram, Error> {
        self.register(abi::metric::HISTOGRAM, name, help, labels, buckets)
            .map(|metric| Histogram { metric })
    }

    fn register(
        self,
        kind: u32,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<Metric, Error> {
        let labels: Vec<Str> = labels.iter().map(|l| Str::new(l)).collect();
        // SAFETY: the table is valid for the process; every pointer outlives the call.
        let registered = unsafe {
            (self.api.metric_register)(
                self.api.context,
                kind,
                Str::new(name),
                Str::new(help),
                labels.as_ptr(),
                labels.len(),
                buckets.as_ptr(),
                buckets.len(),
            )
        };
        if registered.error.as_slice().is_empty() {
            Ok(Metric {
                host: self,
                id: registered.id,
            })
        } else {
            Err(Error::new(
                ErrorKind::Invalid,
                String::from_utf8_lossy(registered.error.as_slice()),
            ))
        }
    }
}

/// Milliseconds as JSON carries them (`u64`; longer durations saturate).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `NotFound` is an answer, not a failure: it becomes `None`.
fn found<T>(result: Result<T, Error>) -> Result<Option<T>, Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn text(body: &Buf) -> Result<String, Error> {
    body.as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::new(ErrorKind::Failed, "the host answered with non-UTF-8 text"))
}

/// An HTTP request for [`Host::http`].
#[derive(Debug, Clone)]
pub struct HttpRequest {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl HttpRequest {
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body, with its content type.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// The whole exchange must finish within this; the host caps it at its own maximum.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The answer to an [`HttpRequest`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// An XSI request for [`Host::xsi`].
#[derive(Debug, Clone)]
pub struct XsiRequest {
    meta: XsiMeta,
    body: Vec<u8>,
}

impl XsiRequest {
    /// `path` is the XSI path and query, e.g. `/com.broadsoft.xsi-actions/v2.0/user/<id>/profile`.
    pub fn new(provider: &str, method: &str, path: &str) -> Self {
        Self {
            meta: XsiMeta {
                provider: provider.to_owned(),
                method: method.to_owned(),
                path: path.to_owned(),
                headers: Vec::new(),
                credentials: XsiCredentials::None,
                xsp: None,
                timeout_ms: None,
            },
            body: Vec::new(),
        }
    }

    pub fn get(provider: &str, path: &str) -> Self {
        Self::new(provider, "GET", path)
    }

    pub fn user(mut self, user: &str, password: &str) -> Self {
        self.meta.credentials = XsiCredentials::User {
            user: user.to_owned(),
            password: password.to_owned(),
        };
        self
    }

    pub fn master(mut self) -> Self {
        self.meta.credentials = XsiCredentials::Master;
        self
    }

    /// Sends to this XSP only (a name from an earlier [`XsiResponse::xsp`]), without failover.
    pub fn xsp(mut self, name: &str) -> Self {
        self.meta.xsp = Some(name.to_owned());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.meta.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.meta.timeout_ms = Some(millis(timeout));
        self
    }
}

/// The answer to an [`XsiRequest`].
#[derive(Debug, Clone)]
pub struct XsiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The name of the XSP that answered (`xsp1`, ...), to pin later requests to it.
    pub xsp: String,
}

impl XsiResponse {
    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// An XSI answer whose body is read as it arrives ([`Host::xsi_stream`]). Dropping it closes
/// the connection.
pub struct XsiStream {
    host: Host,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The XSP holding the stream: commands about it must be pinned there.
    pub xsp: String,
    handle: Option<u64>,
    /// A non-2xx answer's whole body, not yet read.
    rest: Option<Vec<u8>>,
}

impl fmt::Debug for XsiStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XsiStream")
            .field("status", &self.status)
            .field("xsp", &self.xsp)
            .field("open", &self.handle.is_some())
            .finish_non_exhaustive()
    }
}

/// What one [`XsiStream::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRead {
    /// Bytes, in order: one or more chunks, which need not end on a document boundary.
    Data(Vec<u8>),
    /// Nothing arrived within the wait.
    Idle,
    /// The stream has ended.
    End,
}

impl XsiStream {
    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Waits at most `wait` for more of the body. Await every read to its end: a read dropped
    /// half-way may lose the bytes it had taken.
    pub async fn read(&mut self, wait: Duration) -> Result<StreamRead, Error> {
        if let Some(rest) = self.rest.take() {
            return Ok(StreamRead::Data(rest));
        }
        let Some(handle) = self.handle else {
            return Ok(StreamRead::End);
        };
        let meta = StreamMeta {
            stream: handle,
            wait_ms: millis(wait),
        };
        let read = self
            .host
            .call(abi::op::STREAM_READ, &meta, Vec::new())
            .await;
        let (meta, body) = match read {
            Ok(reply) => reply,
            Err(e) => {
                self.handle = None;
                return Err(e);
            }
        };
        let head: StreamReadHead = serde_json::from_slice(meta.as_slice())?;
        if head.end {
            self.handle = None;
            return Ok(StreamRead::End);
        }
        let body = body.to_vec();
        Ok(if body.is_empty() {
            StreamRead::Idle
        } else {
            StreamRead::Data(body)
        })
    }
}

impl Drop for XsiStream {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let close = StreamMeta {
                stream: handle,
                wait_ms: 0,
            };
            let Ok(meta) = serde_json::to_vec(&close) else {
                return;
            };
            // SAFETY: the table is valid for the process; ownership of both buffers moves to
            // the host, which closes the stream before returning, so the future is dropped
            // unpolled.
            drop(unsafe {
                (self.host.api.call)(
                    self.host.api.context,
                    abi::op::STREAM_CLOSE,
                    Buf::from_vec(meta),
                    Buf::empty(),
                )
            });
        }
    }
}

/// The plugin's namespace in the host's key-value store. Keys of other plugins are invisible.
#[derive(Debug, Clone, Copy)]
pub struct Store {
    host: Host,
}

impl Store {
    pub async fn get(self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let reply = self
            .host
            .call(abi::op::STORE_GET, &key_meta(key, None), Vec::new())
            .await;
        Ok(found(reply)?.map(|(_, body)| body.to_vec()))
    }

    /// Stores a value, replacing any; with a time to live it disappears after that.
    pub async fn put(self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error> {
        let meta = key_meta(key, ttl.map(millis));
        self.host
            .call(abi::op::STORE_PUT, &meta, value.to_vec())
            .await
            .map(|_| ())
    }

    /// Every live key that starts with `prefix`, in order.
    pub async fn keys(self, prefix: &str) -> Result<Vec<String>, Error> {
        let (_, body) = self
            .host
            .call(
                abi::op::STORE_KEYS,
                &PrefixMeta {
                    prefix: prefix.to_owned(),
                },
                Vec::new(),
            )
            .await?;
        Ok(serde_json::from_slice(body.as_slice())?)
    }

    /// Removes a key; true if it was there.
    pub async fn delete(self, key: &str) -> Result<bool, Error> {
        let reply = self
            .host
            .call(abi::op::STORE_DELETE, &key_meta(key, None), Vec::new())
            .await;
        Ok(found(reply)?.is_some())
    }
}

/// Leases on the plugin's live work (a channel set, an agent login): among the instances that
/// share a store, exactly one live instance holds each. The host renews what this instance holds
/// until it stops; a lease of a dead instance is free after its time to live.
#[derive(Debug, Clone, Copy)]
pub struct Leases {
    host: Host,
}

impl Leases {
    /// Takes the lease for work asked of this instance (a login). False: another live instance
    /// holds it. With `ended`: its work was asked to end before its last holder could.
    pub async fn acquire(self, name: &str) -> Result<LeaseGrant, Error> {
        self.take(name, false).await
    }

    /// Takes the lease for work found unowned (see [`Leases::claimable`]); refused while this
    /// instance holds its share, so that the work spreads over the instances.
    pub async fn claim(self, name: &str) -> Result<LeaseGrant, Error> {
        self.take(name, true).await
    }

    async fn take(self, name: &str, claim: bool) -> Result<LeaseGrant, Error> {
        let meta = LeaseMeta {
            name: name.to_owned(),
            claim,
        };
        let (meta, _) = self
            .host
            .call(abi::op::LEASE_ACQUIRE, &meta, Vec::new())
            .await?;
        Ok(serde_json::from_slice(meta.as_slice())?)
    }

    /// Hands a lease over: another instance may take it, and resume its work, at once.
    pub async fn release(self, name: &str) -> Result<(), Error> {
        self.simple(abi::op::LEASE_RELEASE, name).await
    }

    /// Forgets a lease whose work is over (after it was undone, say).
    pub async fn finish(self, name: &str) -> Result<(), Error> {
        self.simple(abi::op::LEASE_FINISH, name).await
    }

    /// Asks whoever holds the lease, here or on another instance, to end its work: that holder's
    /// [`Leases::lost`] answers [`LeaseLost::Ended`].
    pub async fn end(self, name: &str) -> Result<(), Error> {
        self.simple(abi::op::LEASE_END, name).await
    }

    /// Waits until this instance loses the lease, and says why; `None` if it does not hold it.
    pub async fn lost(self, name: &str) -> Result<Option<LeaseLost>, Error> {
        let meta = LeaseMeta {
            name: name.to_owned(),
            claim: false,
        };
        let reply = self.host.call(abi::op::LEASE_LOST, &meta, Vec::new()).await;
        found(reply)?
            .map(|(meta, _)| Ok(serde_json::from_slice::<LeaseLoss>(meta.as_slice())?.reason))
            .transpose()
    }

    /// Leases under `prefix` that no instance holds (their holder died or handed them over),
    /// at most `limit`; none while this instance holds its share.
    pub async fn claimable(self, prefix: &str, limit: u32) -> Result<Vec<Claimable>, Error> {
        let meta = ClaimableMeta {
            prefix: prefix.to_owned(),
            limit,
        };
        let (_, body) = self
            .host
            .call(abi::op::LEASE_CLAIMABLE, &meta, Vec::new())
            .await?;
        Ok(serde_json::from_slice(body.as_slice())?)
    }

    async fn simple(self, op: u32, name: &str) -> Result<(), Error> {
        let meta = LeaseMeta {
            name: name.to_owned(),
            claim: false,
        };
        self.host.call(op, &meta, Vec::new()).await.map(|_| ())
    }
}

fn key_meta(key: &str, ttl_ms: Option<u64>) -> KeyMeta {
    KeyMeta {
        key: key.to_owned(),
        ttl_ms,
    }
}

#[derive(Debug, Clone, Copy)]
struct Metric {
    host: Host,
    id: u64,
}

impl Metric {
    fn record(self, labels: &[&str], value: f64) {
        let labels: Vec<Str> = labels.iter().map(|l| Str::new(l)).collect();
        // SAFETY: the table is valid for the process; the label `Str`s outlive the call.
        unsafe {
            (self.host.api.metric_record)(
                self.host.api.context,
                self.id,
                labels.as_ptr(),
                labels.len(),
                value,
            );
        }
    }
}

/// A registered counter.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    metric: Metric,
}

impl Counter {
    pub fn inc(self, labels: &[&str]) {
        self.metric.record(labels, 1.0);
    }

    pub fn inc_by(self, labels: &[&str], value: f64) {
        self.metric.record(labels, value);
    }
}

/// A registered gauge.
#[derive(Debug, Clone, Copy)]
pub struct Gauge {
    metric: Metric,
}

impl Gauge {
    pub fn set(self, labels: &[&str], value: f64) {
        self.metric.record(labels, value);
    }
}

/// A registered histogram.
#[derive(Debug, Clone, Copy)]
pub struct Histogram {
    metric: Metric,
}

impl Histogram {
    pub fn observe(self, labels: &[&str], value: f64) {
        self.metric.record(labels, value);
    }
}
