//! The asynchronous host services: every `HostApi::call` lands here and runs as a task on the
//! state runtime (`crate::state::Shared`), whichever runtime polled the plugin.

use std::sync::Arc;
use std::time::Duration;

use async_ffi::FutureExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use xsigate_broadworks::{ASYNC_CONTEXT, XsiApp};
use xsigate_plugin_sdk::abi::{self, Buf, FfiFuture, Reply};
use xsigate_plugin_sdk::calls::{
    Claimable, ClaimableMeta, Delivery, Done, HttpHead, HttpMeta, KeyMeta, LeaseGrant, LeaseLoss,
    LeaseLost, LeaseMeta, PrefixMeta, PublishMeta, SealMeta, SleepMeta, StreamMeta, StreamReadHead,
    UniqueIdMeta, UserIdMeta, UserIdsMeta, XsiCredentials, XsiHead, XsiMeta,
};

use super::bus::{Bus, QueuedEvent, Subscriber};
use super::context::{HostCalls, PluginContext};
use super::metrics::HostMetrics;
use super::streams::{STREAMS_MAX, StreamRead};
use crate::audit::{Audit, AuditAction, AuditResult};
use crate::cluster::{Acquired, Leases, Lost};
use crate::state::seal::{SealKey, Sealer};
use crate::state::store::{LeaseName, Store, StoreError};
use crate::upstream::{Providers, XsiCall, XsiCallError};

/// Default and ceiling of a plugin's HTTP request time.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Larger response bodies are refused: a plugin's HTTP call is an API call, not a download.
/// What an endless or huge answer costs is this much per call in flight, so it stays small.
const HTTP_BODY_MAX: usize = 2 << 20;
/// The same for an XSI answer, where a directory page of a large enterprise runs to megabytes.
const XSI_BODY_MAX: usize = 8 << 20;
/// Longest single `sleep`; a worker that wants longer sleeps again.
const SLEEP_MAX: Duration = Duration::from_secs(24 * 3600);
/// Longest single stream read; a reader that wants to wait longer reads again.
const STREAM_WAIT_MAX: Duration = Duration::from_secs(300);
/// A read returns what has already arrived, up to about this much.
const STREAM_READ_MAX: usize = 1 << 20;

pub(super) struct Services {
    pub runtime: tokio::runtime::Handle,
    pub http: reqwest::Client,
    pub connector: pingora::connectors::TransportConnector,
    pub providers: Arc<Providers>,
    pub store: Arc<dyn Store>,
    pub leases: Arc<Leases>,
    pub sealer: Arc<Sealer>,
    pub bus: Bus,
    pub metrics: HostMetrics,
    pub audit: Audit,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("topics", &self.bus.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Aborts the host task when the plugin drops the future (a hook timed out, a request ended).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn reply(code: u32, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        code,
        meta: Buf::empty(),
        body: Buf::from_vec(body.into()),
    }
}

fn ok(meta: &impl Serialize, body: Vec<u8>) -> Reply {
    match serde_json::to_vec(meta) {
        Ok(meta) => Reply {
            code: abi::reply::OK,
            meta: Buf::from_vec(meta),
            body: Buf::from_vec(body),
        },
        Err(e) => reply(abi::reply::FAILED, format!("cannot write the reply: {e}")),
    }
}

fn parse<T: DeserializeOwned>(meta: &Buf) -> Result<T, Reply> {
    serde_json::from_slice(meta.as_slice())
        .map_err(|e| reply(abi::reply::INVALID, format!("malformed request: {e}")))
}

fn lease_meta(meta: &Buf) -> Result<LeaseMeta, Reply> {
    let lease: LeaseMeta = parse(meta)?;
    if lease.name.is_empty() {
        return Err(reply(abi::reply::INVALID, "empty lease name"));
    }
    Ok(lease)
}

fn service_name(op: u32) -> &'static str {
    match op {
        abi::op::HTTP => "http",
        abi::op::STORE_GET | abi::op::STORE_PUT | abi::op::STORE_DELETE | abi::op::STORE_KEYS => {
            "store"
        }
        abi::op::UNIQUE_ID | abi::op::UNIQUE_IDS | abi::op::USER_ID => "user_ids",
        abi::op::LEASE_ACQUIRE
        | abi::op::LEASE_RELEASE
        | abi::op::LEASE_FINISH
        | abi::op::LEASE_END
        | abi::op::LEASE_LOST
        | abi::op::LEASE_CLAIMABLE => "lease",
        abi::op::SEAL | abi::op::OPEN => "seal",
        abi::op::PUBLISH => "publish",
        abi::op::SLEEP => "timer",
        abi::op::XSI => "xsi",
        abi::op::XSI_STREAM | abi::op::STREAM_READ | abi::op::STREAM_CLOSE => "stream",
        _ => "unknown",
    }
}

fn result_name(code: u32) -> &'static str {
    match code {
        abi::reply::OK => "ok",
        abi::reply::NOT_FOUND => "not_found",
        abi::reply::TIMEOUT => "timeout",
        abi::reply::INVALID => "invalid",
        abi::reply::UNSUPPORTED => "unsupported",
        _ => "failed",
    }
}

impl HostCalls for Arc<Services> {
    /// Starts `op` for `plugin` on the state runtime and returns a future of its reply.
    fn call(
        &self,
        plugin: &'static PluginContext,
        op: u32,
        meta: Buf,
        body: Buf,
    ) -> FfiFuture<Reply> {
        let services = self;
        if op == abi::op::STREAM_CLOSE {
            let reply = services.stream_close(plugin, &meta);
            services.count(plugin, op, &reply);
            return async move { reply }.into_ffi();
        }
        let this = Arc::clone(services);
        let task = services.runtime.spawn(async move {
            let reply = this.perform(plugin, op, &meta, body).await;
            this.count(plugin, op, &reply);
            reply
        });
        let task = AbortOnDrop(task);
        async move {
            let mut task = task;
            match (&mut task.0).await {
                Ok(reply) => reply,
                Err(_) => reply(abi::reply::FAILED, "the host task ended abnormally"),
            }
        }
        .into_ffi()
    }
}

impl Services {
    fn count(&self, plugin: &PluginContext, op: u32, reply: &Reply) {
        self.metrics
            .host_calls
            .with_label_values(&[&plugin.name, service_name(op), result_name(reply.code)])
            .inc();
    }

    fn count_streams(&self, plugin: &PluginContext) {
        self.metrics
            .streams_open
            .with_label_values(&[&plugin.name])
            .set(i64::try_from(plugin.streams.len()).unwrap_or(i64::MAX));
    }

    /// Closes one of the plugin's streams; false if it had none of that handle.
    fn drop_stream(&self, plugin: &PluginContext, stream: u64) -> bool {
        let dropped = plugin.streams.remove(stream);
        self.count_streams(plugin);
        dropped
    }

    async fn perform(&self, plugin: &PluginContext, op: u32, meta: &Buf, body: Buf) -> Reply {
        // A task is as large as its future's largest arm, and every channel set keeps tasks
        // waiting for hours: on its stream, on its lease (or a sleep). Those run inline; every
        // other call is boxed, so that its larger future (a connect and TLS handshake, a query)
        // is paid for while it runs instead of by every waiting one: 19 KiB a set for the
        // stream read and 9 KiB for the lease's before (heaptrack, bench/events.sh).
        let result = match op {
            abi::op::STREAM_READ => self.stream_read(plugin, meta).await,
            abi::op::LEASE_LOST => self.lease_lost(plugin, meta).await,
            abi::op::SLEEP => Self::sleep(meta).await,
            _ => Box::pin(self.perform_briefly(plugin, op, meta, body)).await,
        };
        result.unwrap_or_else(|reply| reply)
    }

    /// The calls that are answered without waiting on a peer for long.
    async fn perform_briefly(
        &self,
        plugin: &PluginContext,
        op: u32,
        meta: &Buf,
        body: Buf,
    ) -> Result<Reply, Reply> {
        match op {
            abi::op::HTTP => self.http(meta, body).await,
            abi::op::STORE_GET => self.store_get(plugin, meta).await,
            abi::op::STORE_PUT => self.store_put(plugin, meta, &body).await,
            abi::op::STORE_DELETE => self.store_delete(plugin, meta).await,
            abi::op::STORE_KEYS => self.store_keys(plugin, meta).await,
            abi::op::UNIQUE_ID => self.unique_id(meta).await,
            abi::op::UNIQUE_IDS => self.unique_ids(meta).await,
            abi::op::USER_ID => self.user_id(meta).await,
            abi::op::SEAL | abi::op::OPEN => self.seal(plugin, op, meta, &body),
            abi::op::PUBLISH => Ok(self.publish(meta, &body)),
            abi::op::XSI => self.xsi(plugin, meta, body, false).await,
            abi::op::XSI_STREAM => self.xsi(plugin, meta, body, true).await,
            abi::op::LEASE_ACQUIRE
            | abi::op::LEASE_RELEASE
            | abi::op::LEASE_FINISH
            | abi::op::LEASE_END => self.lease(plugin, op, meta).await,
            abi::op::LEASE_CLAIMABLE => self.lease_claimable(plugin, meta).await,
            other => Err(reply(
                abi::reply::UNSUPPORTED,
                format!("this host has no operation {other}"),
            )),
        }
    }

    async fn http(&self, meta: &Buf, body: Buf) -> Result<Reply, Reply> {
        let request: HttpMeta = parse(meta)?;
        let invalid = |what: &str| reply(abi::reply::INVALID, what.to_owned());
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| invalid("invalid HTTP method"))?;
        let url = reqwest::Url::parse(&request.url).map_err(|_| invalid("invalid URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("only http and https URLs are allowed"));
        }
        let timeout = request
            .timeout_ms
            .map_or(HTTP_TIMEOUT, Duration::from_millis)
            .min(HTTP_TIMEOUT_MAX);
        let mut builder = self.http.request(method, url).timeout(timeout);
        for (name, value) in &request.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("invalid header name"))?;
            let value =
                http::HeaderValue::from_str(value).map_err(|_| invalid("invalid header value"))?;
            builder = builder.header(name, value);
        }
        if !body.as_slice().is_empty() {
            builder = builder.body(body.to_vec());
        }
        let response = builder.send().await.map_err(http_failed)?;
        let status = response.status().as_u16();
        let headers = header_pairs(&response);
        let body = read_body(response, HTTP_BODY_MAX).await?;
        Ok(ok(&HttpHead { status, headers }, body))
    }

    /// An XSI request to one of the provider's XSPs: the pinned one, or healthy ones in turn
    /// while they cannot be reached. Once a request was sent it is never sent again, since it may
    /// have had effects. With `stream`, a 2xx answer's body stays open as one of the plugin's
    /// streams.
    async fn xsi(
        &self,
        plugin: &PluginContext,
        meta: &Buf,
        body: Buf,
        stream: bool,
    ) -> Result<Reply, Reply> {
        let request: XsiMeta = parse(meta)?;
        let invalid = |what: String| reply(abi::reply::INVALID, what);
        let provider = self
            .providers
            .get(&request.provider)
            .filter(|p| p.plugins.contains(&plugin.name))
            .ok_or_else(|| {
                invalid(format!(
                    "provider `{}` does not list this plugin",
                    request.provider
                ))
            })?;
        // The async context carries nothing but the XSI-Events channel.
        let xsi_path = match XsiApp::of_path(&request.path) {
            Some(XsiApp::Actions | XsiApp::Events) => true,
            Some(XsiApp::Async) => request
                .path
                .strip_prefix(ASYNC_CONTEXT)
                .is_some_and(|rest| XsiApp::of_path(rest) == Some(XsiApp::Events)),
            None => false,
        };
        if !xsi_path || request.path.contains("..") || request.path.contains(['#', ' ', '\r', '\n'])
        {
            return Err(invalid("the path must be an XSI path".to_owned()));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| invalid("invalid HTTP method".to_owned()))?;
        let credentials = match &request.credentials {
            XsiCredentials::None => None,
            XsiCredentials::User { user, password } => Some((user.as_str(), password.as_str())),
            XsiCredentials::Master => {
                let master = provider.master.as_ref().ok_or_else(|| {
                    reply(
                        abi::reply::UNSUPPORTED,
                        "the provider has no master credentials",
                    )
                })?;
                Some((master.user.as_str(), master.password.expose()))
            }
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in &request.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("invalid header name".to_owned()))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|_| invalid("invalid header value".to_owned()))?;
            headers.append(name, value);
        }
        let timeout = request
            .timeout_ms
            .map_or(HTTP_TIMEOUT, Duration::from_millis)
            .min(HTTP_TIMEOUT_MAX);
        let pin = match &request.xsp {
            Some(name) => Some(
                provider
                    .xsps
                    .index_of(name)
                    .ok_or_else(|| invalid(format!("the provider has no XSP named `{name}`")))?,
            ),
            None => None,
        };
        let call = XsiCall {
            method,
            path: &request.path,
            headers,
            body: body.to_vec(),
            credentials,
            pin,
            timeout,
        };
        let master_actions = matches!(request.credentials, XsiCredentials::Master)
            && XsiApp::of_path(&request.path) == Some(XsiApp::Actions);
        // What the master's credentials read or changed, answered or not; the channel sets
        // they keep (XSI-Events) are counted by their plugin instead.
        let audit = |status: Option<http::StatusCode>| {
            if master_actions {
                let path = request.path.split('?').next().unwrap_or_default();
                self.audit.record(
                    &format!("plugin:{}", plugin.name),
                    AuditAction::MasterCredentials,
                    &format!("{} {} {path}", provider.id, request.method),
                    status.map_or(AuditResult::Failed, |s| AuditResult::of_status(s.as_u16())),
                );
            }
        };
        if stream {
            let answer = provider.open_channel_stream(&call, &self.connector).await;
            audit(answer.as_ref().ok().map(|(head, _, _)| head.status));
            let (stream_head, body, xsp) = answer.map_err(call_failed)?;
            let mut head = XsiHead {
                status: stream_head.status.as_u16(),
                headers: stream_head.headers,
                xsp: xsp.name.clone(),
                stream: None,
            };
            if !stream_head.status.is_success() {
                // A refusal is read whole, within the call's time: an XSP that trickles an
                // endless error body would otherwise hold the call, and the plugin, for good.
                let body = tokio::time::timeout(call.timeout, body.read_to_end(XSI_BODY_MAX))
                    .await
                    .map_err(|_| {
                        reply(
                            abi::reply::FAILED,
                            "the XSP's refusal did not end within the call's timeout",
                        )
                    })?
                    .map_err(|e| reply(abi::reply::FAILED, e.to_string()))?
                    .ok_or_else(|| body_too_large(XSI_BODY_MAX))?;
                return Ok(ok(&head, body));
            }
            let id = plugin.streams.add(body).ok_or_else(|| {
                reply(
                    abi::reply::FAILED,
                    format!("the plugin holds {STREAMS_MAX} streams already"),
                )
            })?;
            self.count_streams(plugin);
            head.stream = Some(id);
            return Ok(ok(&head, Vec::new()));
        }
        let answer = provider.send_xsi(call).await;
        audit(answer.as_ref().ok().map(|(response, _)| response.status()));
        let (response, xsp) = answer.map_err(call_failed)?;
        let head = XsiHead {
            status: response.status().as_u16(),
            headers: header_pairs(&response),
            xsp: xsp.name.clone(),
            stream: None,
        };
        let body = read_body(response, XSI_BODY_MAX).await?;
        Ok(ok(&head, body))
    }

    /// What has arrived on a stream: at least one chunk, or nothing once `wait_ms` passed, or
    /// the end (the stream is then closed). A read cancelled while it waits loses nothing; one
    /// cancelled after it took bytes loses them, so readers await each read to its end (the
    /// SDK's do).
    async fn stream_read(&self, plugin: &PluginContext, meta: &Buf) -> Result<Reply, Reply> {
        let StreamMeta { stream, wait_ms } = parse(meta)?;
        let open = plugin
            .streams
            .get(stream)
            .ok_or_else(|| reply(abi::reply::NOT_FOUND, "no such stream"))?;
        let wait = Duration::from_millis(wait_ms).min(STREAM_WAIT_MAX);
        match open.read(wait, STREAM_READ_MAX).await {
            StreamRead::Data(bytes) => Ok(ok(&StreamReadHead { end: false }, bytes)),
            StreamRead::Quiet => Ok(ok(&StreamReadHead { end: false }, Vec::new())),
            StreamRead::End => {
                self.drop_stream(plugin, stream);
                Ok(ok(&StreamReadHead { end: true }, Vec::new()))
            }
            StreamRead::Failed(e) => {
                self.drop_stream(plugin, stream);
                Err(reply(abi::reply::FAILED, e.to_string()))
            }
        }
    }

    fn stream_close(&self, plugin: &PluginContext, meta: &Buf) -> Reply {
        let StreamMeta { stream, .. } = match parse(meta) {
            Ok(meta) => meta,
            Err(reply) => return reply,
        };
        if !self.drop_stream(plugin, stream) {
            return reply(abi::reply::NOT_FOUND, "no such stream");
        }
        ok(&Done {}, Vec::new())
    }

    async fn store_get(&self, plugin: &PluginContext, meta: &Buf) -> Result<Reply, Reply> {
        let KeyMeta { key, .. } = parse(meta)?;
        match self.store.kv_get(&plugin.name, &key).await {
            Ok(Some(value)) => Ok(ok(&Done {}, value)),
            Ok(None) => Err(reply(abi::reply::NOT_FOUND, "no such key")),
            Err(e) => Err(store_failed(plugin, &e)),
        }
    }

    async fn store_put(
        &self,
        plugin: &PluginContext,
        meta: &Buf,
        body: &Buf,
    ) -> Result<Reply, Reply> {
        let KeyMeta { key, ttl_ms } = parse(meta)?;
        let ttl = ttl_ms.map(Duration::from_millis);
        self.store
            .kv_put(&plugin.name, &key, body.as_slice(), ttl)
            .await
            .map_err(|e| store_failed(plugin, &e))?;
        Ok(ok(&Done {}, Vec::new()))
    }

    async fn store_delete(&self, plugin: &PluginContext, meta: &Buf) -> Result<Reply, Reply> {
        let KeyMeta { key, .. } = parse(meta)?;
        match self.store.kv_delete(&plugin.name, &key).await {
            Ok(true) => Ok(ok(&Done {}, Vec::new())),
            Ok(false) => Err(reply(abi::reply::NOT_FOUND, "no such key")),
            Err(e) => Err(store_failed(plugin, &e)),
        }
    }

    /// One of the plugin's leases, in its namespace (the plugin's name, as in the store).
    async fn lease(&self, plugin: &PluginContext, op: u32, meta: &Buf) -> Result<Reply, Reply> {
        let LeaseMeta { name, claim } = lease_meta(meta)?;
        let lease = LeaseName {
            namespace: &plugin.name,
            name: &name,
        };
        let failed = |e: StoreError| store_failed(plugin, &e);
        match op {
            abi::op::LEASE_ACQUIRE => {
                let grant = match self.leases.acquire(&lease, claim).await.map_err(failed)? {
                    Acquired::Granted { ended } => LeaseGrant {
                        granted: true,
                        ended,
                    },
                    Acquired::Busy => LeaseGrant {
                        granted: false,
                        ended: false,
                    },
                };
                Ok(ok(&grant, Vec::new()))
            }
            abi::op::LEASE_RELEASE => {
                self.leases.release(&lease).await.map_err(failed)?;
                Ok(ok(&Done {}, Vec::new()))
            }
            abi::op::LEASE_FINISH => {
                self.leases.finish(&lease).await.map_err(failed)?;
                Ok(ok(&Done {}, Vec::new()))
            }
            // `LEASE_END`, the last one `perform_briefly` sends here.
            _ => {
                self.leases.end(&lease).await.map_err(failed)?;
                Ok(ok(&Done {}, Vec::new()))
            }
        }
    }

    /// Waits until the plugin's lease is lost here, and says how.
    async fn lease_lost(&self, plugin: &PluginContext, meta: &Buf) -> Result<Reply, Reply> {
        let LeaseMeta { name, .. } = lease_meta(meta)?;
        let lease = LeaseName {
            namespace: &plugin.name,
            name: &name,
        };
        let reason = match self.leases.lost(&lease).await {
            None => return Err(reply(abi::reply::NOT_FOUND, "not held here")),
            Some(Lost::Taken) => LeaseLost::Taken,
            Some(Lost::Ended) => LeaseLost::Ended,
            Some(Lost::HandedOver) => LeaseLost::HandedOver,
        };
        Ok(ok(&LeaseLoss { reason }, Vec::new()))
    }

    async fn lease_claimable(&self, plugin: &PluginContext, meta: &Buf) -> Result<Reply, Reply> {
        let ClaimableMeta { prefix, limit } = parse(meta)?;
        let found = self
            .leases
            .claimable(&plugin.name, &prefix, limit)
            .await
            .map_err(|e| store_failed(plugin, &e))?;
        let found: Vec<Claimable> = found
            .into_iter()
            .map(|(name, ended)| Claimable { name, ended })
            .collect();
        let body =
            serde_json::to_vec(&found).map_err(|e| reply(abi::reply::FAILED, e.to_string()))?;
        Ok(ok(&Done {}, body))
    }

    async fn store_keys(&self, plugin: &PluginContext, meta: &Buf) -> Result<Reply, Reply> {
        let PrefixMeta { prefix } = parse(meta)?;
        let keys = self
            .store
            .kv_keys(&plugin.name, &prefix)
            .await
            .map_err(|e| store_failed(plugin, &e))?;
        let body =
            serde_json::to_vec(&keys).map_err(|e| reply(abi::reply::FAILED, e.to_string()))?;
        Ok(ok(&Done {}, body))
    }

    async fn unique_id(&self, meta: &Buf) -> Result<Reply, Reply> {
        let UserIdMeta { user_id } = parse(meta)?;
        if user_id.is_empty() {
            return Err(reply(abi::reply::INVALID, "empty user id"));
        }
        let unique_id = self
            .store
            .unique_id(&user_id)
            .await
            .map_err(|e| reply(abi::reply::FAILED, e.to_string()))?;
        Ok(ok(&Done {}, unique_id.into_bytes()))
    }

    async fn unique_ids(&self, meta: &Buf) -> Result<Reply, Reply> {
        let UserIdsMeta { user_ids } = parse(meta)?;
        if user_ids.len() > abi::op::UNIQUE_IDS_MAX {
            return Err(reply(
                abi::reply::INVALID,
                format!("more than {} user ids", abi::op::UNIQUE_IDS_MAX),
            ));
        }
        if user_ids.iter().any(String::is_empty) {
            return Err(reply(abi::reply::INVALID, "empty user id"));
        }
        let unique_ids = self
            .store
            .unique_ids(&user_ids)
            .await
            .map_err(|e| reply(abi::reply::FAILED, e.to_string()))?;
        let body = serde_json::to_vec(&unique_ids)
            .map_err(|e| reply(abi::reply::FAILED, e.to_string()))?;
        Ok(ok(&Done {}, body))
    }

    async fn user_id(&self, meta: &Buf) -> Result<Reply, Reply> {
        let UniqueIdMeta { unique_id } = parse(meta)?;
        match self.store.user_id(&unique_id).await {
            Ok(Some(user_id)) => Ok(ok(&Done {}, user_id.into_bytes())),
            Ok(None) => Err(reply(abi::reply::NOT_FOUND, "no such unique id")),
            Err(e) => Err(reply(abi::reply::FAILED, e.to_string())),
        }
    }

    fn seal(
        &self,
        plugin: &PluginContext,
        op: u32,
        meta: &Buf,
        body: &Buf,
    ) -> Result<Reply, Reply> {
        let SealMeta { context } = parse(meta)?;
        let key = match plugin.seal_key.get() {
            Some(key) => key,
            None => {
                let key: SealKey = self
                    .sealer
                    .key(&plugin.name)
                    .map_err(|e| reply(abi::reply::FAILED, e.to_string()))?;
                plugin.seal_key.get_or_init(|| key)
            }
        };
        let result = if op == abi::op::SEAL {
            key.seal(context.as_bytes(), body.as_slice())
        } else {
            key.open(context.as_bytes(), body.as_slice())
        };
        result
            .map(|bytes| ok(&Done {}, bytes))
            .map_err(|e| reply(abi::reply::FAILED, e.to_string()))
    }

    fn publish(&self, meta: &Buf, body: &Buf) -> Reply {
        let topic = match parse::<PublishMeta>(meta) {
            Ok(PublishMeta { topic }) => topic,
            Err(reply) => return reply,
        };
        let delivery = self.deliver(&topic, body.as_slice());
        ok(&delivery, Vec::new())
    }

    /// Queues an event for every subscriber of `topic`.
    pub fn deliver(&self, topic: &str, payload: &[u8]) -> Delivery {
        let (mut delivered, mut dropped) = (0u32, 0u32);
        for subscriber in self.subscribers(topic) {
            let event = QueuedEvent {
                topic: topic.to_owned(),
                payload: payload.to_vec(),
                report: None,
            };
            if self.enqueue(subscriber, event) {
                delivered += 1;
            } else {
                dropped += 1;
            }
        }
        Delivery { delivered, dropped }
    }

    pub fn subscribers(&self, topic: &str) -> impl Iterator<Item = &Subscriber> {
        self.bus.get(topic).into_iter().flatten()
    }

    /// Queues one event for one subscriber; false (and counted) when its queue is full.
    pub fn enqueue(&self, subscriber: &Subscriber, event: QueuedEvent) -> bool {
        let queued = subscriber.queue.try_send(event).is_ok();
        if !queued {
            self.metrics
                .events_dropped
                .with_label_values(&[&subscriber.plugin.name])
                .inc();
        }
        queued
    }

    async fn sleep(meta: &Buf) -> Result<Reply, Reply> {
        let SleepMeta { ms } = parse(meta)?;
        tokio::time::sleep(Duration::from_millis(ms).min(SLEEP_MAX)).await;
        Ok(ok(&Done {}, Vec::new()))
    }
}

/// A failed HTTP exchange. The message may reach the host's log through the plugin's own
/// error, so it must not carry the URL (an XSP's address, or a token in a query).
fn http_failed(error: reqwest::Error) -> Reply {
    let error = error.without_url();
    let code = if error.is_timeout() {
        abi::reply::TIMEOUT
    } else {
        abi::reply::FAILED
    };
    reply(code, error.to_string())
}

/// What a plugin hears of an XSI call that got no answer to hand over.
fn call_failed(error: XsiCallError) -> Reply {
    match error {
        XsiCallError::Http(e) => http_failed(e),
        XsiCallError::HeadTimeout => reply(abi::reply::TIMEOUT, error.to_string()),
        _ => reply(abi::reply::FAILED, error.to_string()),
    }
}

fn body_too_large(max: usize) -> Reply {
    reply(
        abi::reply::FAILED,
        format!("response body larger than {max} bytes"),
    )
}

/// Reads a response's body, at most `max` bytes: one that says it is longer is refused unread,
/// and the buffer doubles but never past `max`, so an answer without end costs `max` once.
async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, Reply> {
    let too_large = || body_too_large(max);
    if response
        .content_length()
        .is_some_and(|length| length > max as u64)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http_failed)? {
        let needed = bytes.len() + chunk.len();
        if needed > max {
            return Err(too_large());
        }
        if needed > bytes.capacity() {
            let grown = needed.max(bytes.capacity() * 2).min(max);
            bytes.reserve_exact(grown - bytes.len());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn header_pairs(response: &reqwest::Response) -> Vec<(String, String)> {
    response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The store's error can name the database file; the plugin gets the kind, the log the detail.
fn store_failed(plugin: &PluginContext, error: &StoreError) -> Reply {
    tracing::warn!(plugin = %plugin.name, error = %error, "plugin store operation failed");
    reply(abi::reply::FAILED, "the store failed; see the host log")
}
