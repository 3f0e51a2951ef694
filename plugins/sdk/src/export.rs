//! The glue behind [`crate::export_plugin!`]: C entry points that turn raw ABI calls into
//! calls of the plugin's traits, catching every panic on the way.
//!
//! Panics never cross the boundary: `init` runs under `catch_unwind`, and every hook future is
//! polled under it. A panic becomes an [`abi::outcome::PANICKED`] outcome carrying the message
//! and location, which the host logs and counts; the plugin's panic hook keeps the default
//! "thread panicked" report off stderr.
#![allow(
    unsafe_code,
    reason = "C entry points: the host calls them with the pointers the ABI describes"
)]

use std::cell::RefCell;
use std::ffi::c_void;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::task::Poll;

use async_ffi::FutureExt as _;
use serde::Serialize;

use crate::abi::{self, Buf, FfiFuture, HostApi, InitResult, Outcome, PluginApi, Str};
use crate::error::Error;
use crate::exchange::{Request, Response};
use crate::hooks::{
    BackgroundWorker, Decision, Event, EventConsumer, IdentityProvider, Login, LoginQuery,
    MetadataRequest, Plugin, RequestFilter, ResponseDecision, ResponseFilter,
    UpstreamRequestFilter,
};
use crate::host::Host;

/// The plugin instance with its host handle. Leaked at init: plugins are never unloaded.
struct Instance<P> {
    host: Host,
    plugin: P,
}

thread_local! {
    /// The last panic on this thread, as "message (at file:line:column)".
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            let report = match info.location() {
                Some(at) => format!("{message} (at {}:{}:{})", at.file(), at.line(), at.column()),
                None => message,
            };
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(report));
        }));
    });
}

fn take_panic() -> String {
    LAST_PANIC
        .with(|last| last.borrow_mut().take())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn init_failed(message: String) -> InitResult {
    InitResult {
        ok: false,
        error: Buf::from(message),
        manifest: Buf::empty(),
        plugin: PluginApi::empty(),
    }
}

/// Builds the instance. Called by the `xsigate_plugin_init` that `export_plugin!` generates.
///
/// # Safety
/// `host` must be the host's table, valid for the process; `config` must be valid for the call.
pub unsafe fn init<P: Plugin>(host: *const HostApi, config: Str, api: PluginApi) -> InitResult {
    install_panic_hook();
    // SAFETY: forwarded to our caller.
    match catch_unwind(AssertUnwindSafe(|| unsafe {
        init_instance::<P>(host, config, api)
    })) {
        Ok(Ok(result)) => result,
        Ok(Err(message)) => init_failed(message),
        Err(_) => init_failed(format!("init panicked: {}", take_panic())),
    }
}

/// # Safety
/// As for [`init`].
unsafe fn init_instance<P: Plugin>(
    host: *const HostApi,
    config: Str,
    mut api: PluginApi,
) -> Result<InitResult, String> {
    // SAFETY: the host's table lives for the process (our caller's contract).
    let Some(table) = (unsafe { host.as_ref() }) else {
        return Err("the host passed no function table".to_owned());
    };
    if table.abi_version != abi::ABI_VERSION {
        return Err(format!(
            "the host speaks plugin ABI {}, this plugin ABI {}",
            table.abi_version,
            abi::ABI_VERSION
        ));
    }
    let host = Host::new(table);
    // SAFETY: valid for this call (our caller's contract).
    let text = unsafe { config.as_str() }.unwrap_or("{}");
    let config = parse_config::<P::Config>(text)?;
    let plugin = P::init(host, config).map_err(|e| e.to_string())?;
    let manifest = serde_json::to_vec(&plugin.manifest()).map_err(|e| e.to_string())?;
    let instance: &'static Instance<P> = Box::leak(Box::new(Instance { host, plugin }));
    api.instance = std::ptr::from_ref(instance).cast();
    Ok(InitResult {
        ok: true,
        error: Buf::empty(),
        manifest: Buf::from_vec(manifest),
        plugin: api,
    })
}

/// Deserializes the `config` table, naming the key at fault. The JSON text is the host's
/// rendering of the operator's TOML, so JSON line and column would only mislead.
fn parse_config<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let inner = e.inner().to_string();
        let message = inner
            .rfind(" at line ")
            .map_or(inner.as_str(), |cut| &inner[..cut]);
        let path = e.path().to_string();
        // An unknown key's path is the key itself, which the message already names.
        if path == "." || message.starts_with("unknown field") {
            format!("invalid config: {message}")
        } else {
            format!("invalid config: {path}: {message}")
        }
    })
}

/// # Safety
/// `instance` must be the pointer `init::<P>` returned.
unsafe fn instance<P: Plugin>(instance: *const c_void) -> &'static Instance<P> {
    // SAFETY: our caller's contract; the instance is leaked, so `'static` holds.
    unsafe { &*instance.cast::<Instance<P>>() }
}

/// Polls a hook future with every poll under `catch_unwind`.
fn guarded(future: impl Future<Output = Outcome> + Send + 'static) -> FfiFuture<Outcome> {
    async move {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(move |cx| {
            match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                Ok(poll) => poll,
                Err(_) => Poll::Ready(Outcome {
                    kind: abi::outcome::PANICKED,
                    body: Buf::from(take_panic()),
                    ..Outcome::default()
                }),
            }
        })
        .await
    }
    .into_ffi()
}

fn failed(error: &Error) -> Outcome {
    Outcome {
        kind: abi::outcome::ERROR,
        body: Buf::from(error.to_string()),
        ..Outcome::default()
    }
}

fn done() -> Outcome {
    Outcome::default()
}

fn json<T: Serialize>(value: &T) -> Outcome {
    match serde_json::to_vec(value) {
        Ok(body) => Outcome {
            body: Buf::from_vec(body),
            ..Outcome::default()
        },
        Err(e) => failed(&Error::from(e)),
    }
}

fn unit(result: Result<(), Error>) -> Outcome {
    result.map_or_else(|e| failed(&e), |()| done())
}

/// # Safety
/// `instance` as for [`instance`]; `exchange` must be the host's live exchange handle.
pub unsafe extern "C" fn request_filter<P: RequestFilter>(
    instance: *const c_void,
    exchange: *mut c_void,
) -> FfiFuture<Outcome> {
    // SAFETY: the host calls with the pointers it received and holds.
    let instance = unsafe { self::instance::<P>(instance) };
    // SAFETY: as above.
    let mut request = unsafe { Request::from_raw(instance.host.api(), exchange) };
    guarded(async move {
        match instance.plugin.request_filter(&mut request).await {
            Ok(Decision::Continue) => done(),
            Ok(Decision::Answer(answer)) => {
                let headers = serde_json::to_vec(&answer.headers).unwrap_or_default();
                Outcome {
                    kind: abi::outcome::RESPOND,
                    status: answer.status,
                    headers: Buf::from_vec(headers),
                    body: Buf::from_vec(answer.body),
                }
            }
            Err(e) => failed(&e),
        }
    })
}

/// # Safety
/// As for [`request_filter`].
pub unsafe extern "C" fn upstream_request_filter<P: UpstreamRequestFilter>(
    instance: *const c_void,
    exchange: *mut c_void,
) -> FfiFuture<Outcome> {
    // SAFETY: the host calls with the pointers it received and holds.
    let instance = unsafe { self::instance::<P>(instance) };
    // SAFETY: as above.
    let mut request = unsafe { Request::from_raw(instance.host.api(), exchange) };
    guarded(async move { unit(instance.plugin.upstream_request_filter(&mut request).await) })
}

/// # Safety
/// As for [`request_filter`].
pub unsafe extern "C" fn response_filter<P: ResponseFilter>(
    instance: *const c_void,
    exchange: *mut c_void,
) -> FfiFuture<Outcome> {
    // SAFETY: the host calls with the pointers it received and holds.
    let instance = unsafe { self::instance::<P>(instance) };
    // SAFETY: as above.
    let mut response = unsafe { Response::from_raw(instance.host.api(), exchange) };
    guarded(async move {
        match instance.plugin.response_filter(&mut response).await {
            Ok(ResponseDecision::Forward) => done(),
            Ok(ResponseDecision::Retry) => Outcome {
                kind: abi::outcome::RETRY,
                ..Outcome::default()
            },
            Err(e) => failed(&e),
        }
    })
}

/// # Safety
/// As for [`instance`].
pub unsafe extern "C" fn login_options<P: IdentityProvider>(
    instance: *const c_void,
    input: Buf,
) -> FfiFuture<Outcome> {
    // SAFETY: the host calls with the pointer it received.
    let instance = unsafe { self::instance::<P>(instance) };
    guarded(async move {
        let query: LoginQuery = match serde_json::from_slice(input.as_slice()) {
            Ok(query) => query,
            Err(e) => return failed(&Error::from(e)),
        };
        match instance.plugin.login_options(query).await {
            Ok(options) => json(&options),
            Err(e) => failed(&e),
        }
    })
}

/// # Safety
/// As for [`instance`].
pub unsafe extern "C" fn authenticate<P: IdentityProvider>(
    instance: *const c_void,
    input: Buf,
) -> FfiFuture<Outcome> {
    // SAFETY: the host calls with the pointer it received.
    let instance = unsafe { self::instance::<P>(instance) };
    guarded(async move {
        let login: Login = match serde_json::from_slice(input.as_slice()) {
            Ok(login) => login,
            Err(e) => return failed(&Error::from(e)),
        };
        match instance.plugin.authenticate(login).await {
            Ok(authentication) => json(&authentication),
            Err(e) => failed(&e),
        }
    })
}

/// # Safety
/// As for [`instance`].
pub unsafe extern "C" fn sign_in_metadata<P: IdentityProvider>(
    instance: *const c_void,
    input: Buf,
) -> FfiFuture<Outcome> {
    // SAFETY: the host calls with the pointer it received.
    let instance = unsafe { self::instance::<P>(instance) };
    guarded(async move {
        let request: MetadataRequest = match serde_json::from_slice(input.as_slice()) {
            Ok(request) => request,
            Err(e) => return failed(&Error::from(e)),
        };
        match instance.plugin.sign_in_metadata(request).await {
            Ok(document) => json(&document),
            Err(e) => failed(&e),
        }
    })
}

/// # Safety
/// As for [`instance`].
pub unsafe extern "C" fn on_event<P: EventConsumer>(
    instance: *const c_void,
    topic: Buf,
    payload: Buf,
) -> FfiFuture<Outcome> {
    // SAFETY: the host calls with the pointer it received.
    let instance = unsafe { self::instance::<P>(instance) };
    let event = Event {
        topic: String::from_utf8_lossy(topic.as_slice()).into_owned(),
        payload: payload.to_vec(),
    };
    guarded(async move {
        match instance.plugin.on_event(event).await {
            Ok(Some(report)) => json(&report),
            Ok(None) => done(),
            Err(e) => failed(&e),
        }
    })
}

/// # Safety
/// As for [`instance`].
pub unsafe extern "C" fn run_worker<P: BackgroundWorker>(
    instance: *const c_void,
) -> FfiFuture<Outcome> {
    // SAFETY: the host calls with the pointer it received.
    let instance = unsafe { self::instance::<P>(instance) };
    guarded(async move { unit(instance.plugin.run().await) })
}

/// Exports a plugin type and the capabilities it implements:
///
/// ```ignore
/// xsigate_plugin_sdk::export_plugin!(MyIdp => IdentityProvider, BackgroundWorker);
/// ```
///
/// Capabilities: `RequestFilter`, `UpstreamRequestFilter`, `ResponseFilter`,
/// `IdentityProvider`, `EventConsumer`, `BackgroundWorker`. Naming one the type does not
/// implement is a compile error. Use it once per crate (`crate-type = ["cdylib"]`).
#[macro_export]
macro_rules! export_plugin {
    (@hook $api:ident, $plugin:ty, RequestFilter) => {
        $api.request_filter = Some($crate::export::request_filter::<$plugin>);
    };
    (@hook $api:ident, $plugin:ty, UpstreamRequestFilter) => {
        $api.upstream_request_filter = Some($crate::export::upstream_request_filter::<$plugin>);
    };
    (@hook $api:ident, $plugin:ty, ResponseFilter) => {
        $api.response_filter = Some($crate::export::response_filter::<$plugin>);
    };
    (@hook $api:ident, $plugin:ty, IdentityProvider) => {
        $api.login_options = Some($crate::export::login_options::<$plugin>);
        $api.authenticate = Some($crate::export::authenticate::<$plugin>);
        $api.sign_in_metadata = Some($crate::export::sign_in_metadata::<$plugin>);
    };
    (@hook $api:ident, $plugin:ty, EventConsumer) => {
        $api.on_event = Some($crate::export::on_event::<$plugin>);
    };
    (@hook $api:ident, $plugin:ty, BackgroundWorker) => {
        $api.run_worker = Some($crate::export::run_worker::<$plugin>);
    };
    ($plugin:ty => $($hook:ident),+ $(,)?) => {
        // Under `cfg(fuzzing)` several plugins link into one fuzz binary as plain libraries, where
        // their entry points would collide; nothing loads them there.
        /// The plugin ABI this library was built against; xsigate checks it first.
        #[cfg(not(fuzzing))]
        #[unsafe(no_mangle)]
        pub extern "C" fn xsigate_plugin_abi_version() -> u32 {
            $crate::abi::ABI_VERSION
        }

        /// Builds the plugin from its configuration; see `xsigate_plugin_sdk::abi::InitFn`.
        ///
        /// # Safety
        /// Called by xsigate only, with its function table and the config text.
        #[cfg(not(fuzzing))]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn xsigate_plugin_init(
            host: *const $crate::abi::HostApi,
            config: $crate::abi::Str,
        ) -> $crate::abi::InitResult {
            let mut api = $crate::abi::PluginApi::empty();
            $( $crate::export_plugin!(@hook api, $plugin, $hook); )+
            // SAFETY: xsigate passes its table and the config text as the ABI requires.
            unsafe { $crate::export::init::<$plugin>(host, config, api) }
        }
    };
}
