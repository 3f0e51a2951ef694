//! A loaded plugin and its hooks: every call is guarded the same way ([`Plugin::invoke`]):
//! counted, timed, limited in time, and any error, panic or ABI violation becomes a
//! [`PluginFailure`] that fails only the request (or event) at hand.
#![allow(
    unsafe_code,
    reason = "calls the plugin's C hooks with the handles the ABI describes"
)]

use std::ffi::c_void;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt as _;
use prometheus::{Histogram, IntCounter};
use xsigate_plugin_sdk::abi::{self, Buf, FfiFuture, Outcome, PluginApi};
use xsigate_plugin_sdk::{
    Authentication, Login, LoginOption, LoginQuery, Manifest, MetadataRequest, SignInMetadata,
};

use super::context::PluginContext;
use super::exchange::Exchange;
use crate::wire::error::ErrorCode;

/// Background workers are started again after a failure, waiting this long at first and
/// doubling up to the maximum.
const WORKER_BACKOFF: Duration = Duration::from_secs(1);
const WORKER_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A plugin hook, as named in metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    RequestFilter,
    UpstreamRequestFilter,
    ResponseFilter,
    LoginOptions,
    Authenticate,
    SignInMetadata,
    OnEvent,
    Worker,
}

impl Hook {
    pub(super) const ALL: [Self; 8] = [
        Self::RequestFilter,
        Self::UpstreamRequestFilter,
        Self::ResponseFilter,
        Self::LoginOptions,
        Self::Authenticate,
        Self::SignInMetadata,
        Self::OnEvent,
        Self::Worker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestFilter => "request_filter",
            Self::UpstreamRequestFilter => "upstream_request_filter",
            Self::ResponseFilter => "response_filter",
            Self::LoginOptions => "login_options",
            Self::Authenticate => "authenticate",
            Self::SignInMetadata => "sign_in_metadata",
            Self::OnEvent => "on_event",
            Self::Worker => "worker",
        }
    }
}

/// Why a plugin call failed. The request it served fails with [`PluginFailure::error_code`];
/// the details go to the log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginFailure {
    /// The hook returned an error.
    Error(String),
    /// The hook panicked (the message and location are logged).
    Panicked(String),
    /// The hook did not finish within the plugin's `call_timeout_ms`.
    TimedOut,
    /// The hook answered something the ABI does not allow.
    Protocol(String),
}

impl PluginFailure {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Error(_) => ErrorCode::PluginFailed,
            Self::TimedOut => ErrorCode::PluginTimeout,
            Self::Panicked(_) | Self::Protocol(_) => ErrorCode::Internal,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Error(_) => "error",
            Self::Panicked(_) => "panic",
            Self::TimedOut => "timeout",
            Self::Protocol(_) => "protocol",
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::Error(m) | Self::Panicked(m) | Self::Protocol(m) => m,
            Self::TimedOut => "the hook did not finish in time",
        }
    }
}

/// A response a request filter wrote, checked against HTTP's rules.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: Bytes,
}

impl Answer {
    fn from_outcome(outcome: &Outcome) -> Result<Self, String> {
        if !(200..=599).contains(&outcome.status) {
            return Err(format!("answered with status {}", outcome.status));
        }
        let pairs: Vec<(String, String)> = if outcome.headers.as_slice().is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(outcome.headers.as_slice())
                .map_err(|e| format!("answered with malformed headers: {e}"))?
        };
        let mut headers = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("answered with an invalid header name {name:?}"))?;
            let value = http::HeaderValue::from_str(&value)
                .map_err(|_| format!("answered with an invalid value for {name}"))?;
            // The host frames the answer itself.
            if ![
                http::header::CONTENT_LENGTH,
                http::header::TRANSFER_ENCODING,
                http::header::CONNECTION,
            ]
            .contains(&name)
            {
                headers.push((name, value));
            }
        }
        Ok(Self {
            status: outcome.status,
            headers,
            body: Bytes::from(outcome.body.to_vec()),
        })
    }
}

#[derive(Debug)]
pub(super) struct HookMetrics {
    pub(super) calls: IntCounter,
    pub(super) errors: IntCounter,
    pub(super) duration: Histogram,
}

/// A loaded plugin.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    pub manifest: Manifest,
    pub(super) api: PluginApi,
    pub(super) context: &'static PluginContext,
    pub(super) call_timeout: Duration,
    /// Indexed like [`Hook::ALL`]; resolved once so a call records with no label lookup.
    pub(super) hooks: Vec<HookMetrics>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Awaits `future` for at most `limit`; `None` when the time ran out. The timer is made only
/// when the first poll leaves the hook waiting: most hooks finish on it, and then need neither
/// a clock read nor a timer entry.
async fn within<F: Future + Unpin>(limit: Duration, mut future: F) -> Option<F::Output> {
    let mut timer = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = Pin::new(&mut future).poll(cx) {
            return Poll::Ready(Some(output));
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

fn text(buf: &Buf) -> String {
    String::from_utf8_lossy(buf.as_slice()).into_owned()
}

impl Plugin {
    fn metrics(&self, hook: Hook) -> Option<&HookMetrics> {
        self.hooks.get(hook as usize)
    }

    /// Awaits a hook's future under the plugin's time limit, catching panics, and records it.
    async fn invoke(
        &self,
        hook: Hook,
        future: FfiFuture<Outcome>,
        limit: Option<Duration>,
    ) -> Result<Outcome, PluginFailure> {
        let metrics = self.metrics(hook);
        if let Some(m) = metrics {
            m.calls.inc();
        }
        // quanta's clock reads the TSC where it is invariant: the two reads of each hook of
        // each request cost 18 ns instead of the 46 of `std`'s clock through the vDSO.
        let started = quanta::Instant::now();
        // The SDK turns panics into outcomes; this catches plugins built without it, whose
        // panics async-ffi re-raises on the host side.
        let guarded = AssertUnwindSafe(future).catch_unwind();
        let result = match limit {
            Some(limit) => within(limit, guarded).await.ok_or(()),
            None => Ok(guarded.await),
        };
        if let Some(m) = metrics {
            m.duration.observe(started.elapsed().as_secs_f64());
        }
        let failure = match result {
            Err(_) => PluginFailure::TimedOut,
            Ok(Err(_)) => PluginFailure::Panicked("its future panicked across the ABI".to_owned()),
            Ok(Ok(outcome)) => match outcome.kind {
                abi::outcome::OK | abi::outcome::RESPOND | abi::outcome::RETRY => {
                    return Ok(outcome);
                }
                abi::outcome::ERROR => PluginFailure::Error(text(&outcome.body)),
                abi::outcome::PANICKED => PluginFailure::Panicked(text(&outcome.body)),
                other => PluginFailure::Protocol(format!("unknown outcome kind {other}")),
            },
        };
        Err(self.failed(hook, failure))
    }

    fn failed(&self, hook: Hook, failure: PluginFailure) -> PluginFailure {
        if let Some(m) = self.metrics(hook) {
            m.errors.inc();
        }
        tracing::error!(
            plugin = %self.name,
            hook = hook.as_str(),
            failure = failure.kind(),
            message = failure.message(),
            "plugin hook failed"
        );
        failure
    }

    /// Runs the request filter; `Some` when the plugin answered the request itself.
    pub async fn request_filter(
        &self,
        exchange: &mut Exchange<'_>,
    ) -> Result<Option<Answer>, PluginFailure> {
        let Some(hook) = self.api.request_filter else {
            return Ok(None);
        };
        exchange.show_session_credentials(self.manifest.session_credentials);
        let future = {
            let handle = std::ptr::from_mut(exchange).cast::<c_void>();
            // SAFETY: `handle` is the exchange, borrowed mutably until the future is awaited
            // or dropped inside this function; `instance` is the plugin's own pointer.
            unsafe { hook(self.api.instance, handle) }
        };
        let outcome = self
            .invoke(Hook::RequestFilter, future, Some(self.call_timeout))
            .await?;
        match outcome.kind {
            abi::outcome::RESPOND => {}
            abi::outcome::RETRY => {
                return Err(self.failed(
                    Hook::RequestFilter,
                    PluginFailure::Protocol(
                        "only a response filter may ask for a retry".to_owned(),
                    ),
                ));
            }
            _ => return Ok(None),
        }
        Answer::from_outcome(&outcome)
            .map(Some)
            .map_err(|m| self.failed(Hook::RequestFilter, PluginFailure::Protocol(m)))
    }

    pub async fn upstream_request_filter(
        &self,
        exchange: &mut Exchange<'_>,
    ) -> Result<(), PluginFailure> {
        let retry = self
            .filter(
                Hook::UpstreamRequestFilter,
                self.api.upstream_request_filter,
                exchange,
            )
            .await?;
        if retry {
            return Err(self.failed(
                Hook::UpstreamRequestFilter,
                PluginFailure::Protocol("only a response filter may ask for a retry".to_owned()),
            ));
        }
        Ok(())
    }

    /// Runs the response filter; true when the plugin asks for the request to be sent again.
    pub async fn response_filter(
        &self,
        exchange: &mut Exchange<'_>,
    ) -> Result<bool, PluginFailure> {
        self.filter(Hook::ResponseFilter, self.api.response_filter, exchange)
            .await
    }

    /// Runs a filter that cannot answer; true when it asked for a retry.
    async fn filter(
        &self,
        hook: Hook,
        function: Option<abi::FilterFn>,
        exchange: &mut Exchange<'_>,
    ) -> Result<bool, PluginFailure> {
        let Some(function) = function else {
            return Ok(false);
        };
        exchange.show_session_credentials(self.manifest.session_credentials);
        let future = {
            let handle = std::ptr::from_mut(exchange).cast::<c_void>();
            // SAFETY: as in `request_filter`.
            unsafe { function(self.api.instance, handle) }
        };
        let outcome = self.invoke(hook, future, Some(self.call_timeout)).await?;
        if outcome.kind == abi::outcome::RESPOND {
            return Err(self.failed(
                hook,
                PluginFailure::Protocol("only a request filter may answer".to_owned()),
            ));
        }
        Ok(outcome.kind == abi::outcome::RETRY)
    }

    /// Calls a JSON hook and decodes its result.
    async fn json_hook<T: serde::de::DeserializeOwned>(
        &self,
        hook: Hook,
        function: Option<abi::JsonHookFn>,
        input: &impl serde::Serialize,
    ) -> Result<T, PluginFailure> {
        let Some(function) = function else {
            return Err(PluginFailure::Protocol(format!(
                "does not implement {}",
                hook.as_str()
            )));
        };
        let input = serde_json::to_vec(input)
            .map_err(|e| self.failed(hook, PluginFailure::Protocol(e.to_string())))?;
        // SAFETY: `instance` is the plugin's own pointer; the buffer's ownership moves to it.
        let future = unsafe { function(self.api.instance, Buf::from_vec(input)) };
        let outcome = self.invoke(hook, future, Some(self.call_timeout)).await?;
        serde_json::from_slice(outcome.body.as_slice()).map_err(|e| {
            self.failed(
                hook,
                PluginFailure::Protocol(format!("returned a malformed {}: {e}", hook.as_str())),
            )
        })
    }

    pub async fn login_options(
        &self,
        query: &LoginQuery,
    ) -> Result<Vec<LoginOption>, PluginFailure> {
        self.json_hook(Hook::LoginOptions, self.api.login_options, query)
            .await
    }

    pub async fn authenticate(&self, login: &Login) -> Result<Authentication, PluginFailure> {
        self.json_hook(Hook::Authenticate, self.api.authenticate, login)
            .await
    }

    pub async fn sign_in_metadata(
        &self,
        request: &MetadataRequest,
    ) -> Result<Option<SignInMetadata>, PluginFailure> {
        self.json_hook(Hook::SignInMetadata, self.api.sign_in_metadata, request)
            .await
    }

    pub fn is_identity_provider(&self) -> bool {
        self.api.login_options.is_some() && self.api.authenticate.is_some()
    }

    /// Hands an event to the plugin; returns its report, if it wrote one. A failure is counted
    /// and logged by `invoke`; the caller only decides what the publisher hears.
    pub(super) async fn deliver(
        &self,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<Option<serde_json::Value>, PluginFailure> {
        let Some(function) = self.api.on_event else {
            return Ok(None);
        };
        // SAFETY: `instance` is the plugin's own pointer; the buffers move to it.
        let future =
            unsafe { function(self.api.instance, Buf::from(topic), Buf::from_vec(payload)) };
        let outcome = self
            .invoke(Hook::OnEvent, future, Some(self.call_timeout))
            .await?;
        let body = outcome.body.as_slice();
        if body.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(body).map(Some).map_err(|e| {
            self.failed(
                Hook::OnEvent,
                PluginFailure::Protocol(format!("returned a malformed report: {e}")),
            )
        })
    }

    /// Runs the background worker until it ends normally, starting it again after failures.
    pub(super) async fn supervise_worker(self: Arc<Self>, restarts: IntCounter) {
        let Some(function) = self.api.run_worker else {
            return;
        };
        let mut backoff = WORKER_BACKOFF;
        loop {
            let started = Instant::now();
            // SAFETY: `instance` is the plugin's own pointer.
            let future = unsafe { function(self.api.instance) };
            if self.invoke(Hook::Worker, future, None).await.is_ok() {
                tracing::info!(plugin = %self.name, "plugin worker finished");
                return;
            }
            // A worker that ran for a while before failing starts over from a short delay.
            if started.elapsed() > WORKER_BACKOFF_MAX {
                backoff = WORKER_BACKOFF;
            }
            restarts.inc();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(WORKER_BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounded whatever `within` does: a limit that never fires fails here, not by hanging.
    async fn bounded<T>(future: impl Future<Output = T>) -> Result<T, tokio::time::error::Elapsed> {
        tokio::time::timeout(Duration::from_secs(5), future).await
    }

    #[tokio::test]
    async fn a_hook_is_awaited_within_its_time_limit_only() {
        let ready = within(Duration::from_secs(1), std::future::ready(7));
        assert_eq!(bounded(ready).await, Ok(Some(7)));
        let waits = within(
            Duration::from_secs(2),
            Box::pin(tokio::time::sleep(Duration::from_millis(5))),
        );
        assert_eq!(bounded(waits).await, Ok(Some(())));
        let hangs = within(Duration::from_millis(20), std::future::pending::<()>());
        assert_eq!(
            bounded(hangs).await,
            Ok(None),
            "the limit ends a hook that waits"
        );
    }
}
