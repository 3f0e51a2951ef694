//! The C ABI between xsigate and a plugin: the only contract the two binaries share.
//!
//! Rules that keep it stable across compilers and allocators:
//!
//! - Every type here is `#[repr(C)]`. Closed sets travel as plain integers (constants in the
//!   small modules below), never as Rust enums, so an unknown value from a newer peer is an
//!   error to report rather than undefined behaviour.
//! - A plugin exports two symbols. [`ABI_VERSION_SYMBOL`] is called before anything else and
//!   must return [`ABI_VERSION`]; only then is [`INIT_SYMBOL`] looked up and called.
//! - Owned bytes cross as [`Buf`], which carries the function that frees it: memory is always
//!   released by the side that allocated it, whatever global allocator each side uses.
//!   Borrowed text crosses as [`Str`], valid only for the call that hands it over.
//! - Asynchronous calls in both directions return `async_ffi::FfiFuture`, a C-ABI future with a
//!   C-ABI waker. The host polls plugin futures on its runtime; plugin code awaits host futures
//!   without linking any runtime.
//! - Any change to a type, a function signature or the meaning of a constant here bumps
//!   [`ABI_VERSION`]. Adding an operation code, attribute or outcome kind is compatible: the
//!   receiving side answers unknown values with an error.
#![allow(
    unsafe_code,
    reason = "this module is the FFI boundary: raw pointers and extern \"C\" functions"
)]

use std::ffi::c_void;

pub use async_ffi::FfiFuture;

/// The version of this ABI. A plugin built against another version is refused at load time.
pub const ABI_VERSION: u32 = 3;

// `FfiFuture`'s layout is part of this ABI; a new async-ffi ABI needs a new `ABI_VERSION`.
const _: () = assert!(async_ffi::ABI_VERSION == 2);

/// `extern "C" fn() -> u32`: the ABI version the plugin was built against.
pub const ABI_VERSION_SYMBOL: &str = "xsigate_plugin_abi_version";
/// [`InitFn`]: creates the plugin instance.
pub const INIT_SYMBOL: &str = "xsigate_plugin_init";

pub type AbiVersionFn = unsafe extern "C" fn() -> u32;

/// Creates the plugin instance. `host` stays valid for the life of the process; `config` is the
/// plugin's `config` table from `providers.toml` as JSON text, valid during the call only.
pub type InitFn = unsafe extern "C" fn(host: *const HostApi, config: Str) -> InitResult;

/// Borrowed bytes (usually UTF-8 text), valid only during the call that passes them.
/// A null `ptr` means "absent", which is not the same as empty.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Str {
    pub ptr: *const u8,
    pub len: usize,
}

impl Str {
    pub const ABSENT: Self = Self {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn new(text: &str) -> Self {
        Self::from_bytes(text.as_bytes())
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    pub fn is_absent(self) -> bool {
        self.ptr.is_null()
    }

    /// # Safety
    /// The bytes must still be alive for `'a`: the caller of the function that received this
    /// `Str` guarantees that for the duration of the call.
    pub unsafe fn as_bytes<'a>(self) -> Option<&'a [u8]> {
        if self.ptr.is_null() {
            None
        } else {
            // SAFETY: non-null, and the sender promises `len` readable bytes for the call.
            Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
        }
    }

    /// # Safety
    /// As for [`Str::as_bytes`]. Bytes that are not UTF-8 read as absent.
    pub unsafe fn as_str<'a>(self) -> Option<&'a str> {
        // SAFETY: forwarded to the caller.
        let bytes = unsafe { self.as_bytes() }?;
        // What the host passes is ASCII nearly always (methods, paths, routes, user ids), and
        // testing for it takes a word at a time where UTF-8 validation goes a byte at a time:
        // 27 instructions against 101 for the strings a request's hooks read, a dozen times.
        if bytes.is_ascii() {
            // SAFETY: ASCII is UTF-8.
            return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).ok()
    }
}

/// Frees a [`Buf`]: `(ptr, len, capacity)` as the allocating side produced them.
pub type FreeFn = unsafe extern "C" fn(ptr: *mut u8, len: usize, capacity: usize);

/// Owned bytes that remember how to free themselves. Dropping a `Buf` calls the allocating
/// side's free function, so ownership can move across the boundary in either direction.
#[repr(C)]
#[derive(Debug)]
pub struct Buf {
    ptr: *mut u8,
    len: usize,
    capacity: usize,
    free: Option<FreeFn>,
}

// SAFETY: a `Buf` owns its bytes exclusively, like the `Vec<u8>` it was made from.
unsafe impl Send for Buf {}
// SAFETY: shared access only reads the bytes.
unsafe impl Sync for Buf {}

/// Frees a `Vec<u8>` with the global allocator of the binary this function was compiled into.
unsafe extern "C" fn free_vec(ptr: *mut u8, len: usize, capacity: usize) {
    // SAFETY: only ever paired with the parts of a `Vec<u8>` leaked by `Buf::from_vec` in this
    // same binary.
    drop(unsafe { Vec::from_raw_parts(ptr, len, capacity) });
}

impl Buf {
    pub const fn empty() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            len: 0,
            capacity: 0,
            free: None,
        }
    }

    pub fn from_vec(bytes: Vec<u8>) -> Self {
        if bytes.capacity() == 0 {
            return Self::empty();
        }
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Self {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            capacity: bytes.capacity(),
            free: Some(free_vec),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: `ptr` and `len` describe the live bytes this `Buf` owns.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }

    /// A copy in this side's allocator; the `Buf` is then freed by its own side.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }

    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_slice()).ok()
    }
}

impl Default for Buf {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Vec<u8>> for Buf {
    fn from(bytes: Vec<u8>) -> Self {
        Self::from_vec(bytes)
    }
}

impl From<String> for Buf {
    fn from(text: String) -> Self {
        Self::from_vec(text.into_bytes())
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(free) = self.free.take() {
            // SAFETY: `free` came with these parts from the side that allocated them.
            unsafe { free(self.ptr, self.len, self.capacity) };
        }
    }
}

/// Operation codes of [`HostApi::call`]. `meta` and the reply's `meta` are JSON objects whose
/// fields the SDK documents per operation; `body` is raw bytes.
pub mod op {
    /// An HTTP request made by the host's pooled client.
    pub const HTTP: u32 = 1;
    pub const STORE_GET: u32 = 2;
    pub const STORE_PUT: u32 = 3;
    pub const STORE_DELETE: u32 = 4;
    /// The opaque uniqueId of a userId, created on first use.
    pub const UNIQUE_ID: u32 = 5;
    /// The userId behind a uniqueId.
    pub const USER_ID: u32 = 6;
    /// Authenticated encryption under the server key, bound to a context string.
    pub const SEAL: u32 = 7;
    pub const OPEN: u32 = 8;
    /// Publish on the host's event bus.
    pub const PUBLISH: u32 = 9;
    /// A timer.
    pub const SLEEP: u32 = 10;
    /// An XSI request to one of a provider's XSPs, chosen (or pinned) by the host, with the
    /// user's or the provider's master credentials attached by the host.
    pub const XSI: u32 = 11;
    /// An XSI request whose response body is a long-lived stream (an XSI-Events channel): as
    /// [`XSI`], but a 2xx answer's body is left open for [`STREAM_READ`] and its reply `meta`
    /// carries a `stream` handle.
    pub const XSI_STREAM: u32 = 12;
    /// The next bytes of an open stream, waiting at most `wait_ms`; `meta.end` is true once the
    /// stream has ended (the handle is then gone).
    pub const STREAM_READ: u32 = 13;
    /// Closes an open stream. Performed before the call returns, so the returned future may be
    /// dropped at once (as a stream's `Drop` does).
    pub const STREAM_CLOSE: u32 = 14;
    /// The plugin's store keys that start with `meta.prefix`, as a JSON array in `body`.
    pub const STORE_KEYS: u32 = 15;
    /// The uniqueIds of `meta.user_ids` (at most [`UNIQUE_IDS_MAX`]), created on first use in
    /// one store transaction, as a JSON array in `body` in the same order.
    pub const UNIQUE_IDS: u32 = 16;
    /// Takes one of the plugin's leases on live work (`meta`: [`crate::calls::LeaseMeta`]); the
    /// answer's `meta` is a [`crate::calls::LeaseGrant`]. The host renews what it grants.
    pub const LEASE_ACQUIRE: u32 = 17;
    /// Hands a lease over: another instance may take it at once.
    pub const LEASE_RELEASE: u32 = 18;
    /// Forgets a lease whose work is over.
    pub const LEASE_FINISH: u32 = 19;
    /// Asks the holder of a lease, wherever it runs, to end its work.
    pub const LEASE_END: u32 = 20;
    /// Waits until this instance loses a lease; the answer's `meta` is a
    /// [`crate::calls::LeaseLoss`], `NOT_FOUND` when the lease is not held here.
    pub const LEASE_LOST: u32 = 21;
    /// The plugin's leases nobody holds (`meta`: [`crate::calls::ClaimableMeta`]), as a JSON
    /// array of [`crate::calls::Claimable`] in `body`; empty while this instance holds its share.
    pub const LEASE_CLAIMABLE: u32 = 22;

    /// The most user ids one [`UNIQUE_IDS`] call may carry.
    pub const UNIQUE_IDS_MAX: usize = 1000;
}

/// The `code` of a [`Reply`].
pub mod reply {
    pub const OK: u32 = 0;
    pub const NOT_FOUND: u32 = 1;
    pub const TIMEOUT: u32 = 2;
    /// The operation was attempted and failed; `body` says why.
    pub const FAILED: u32 = 3;
    /// The request was malformed; `body` says why.
    pub const INVALID: u32 = 4;
    /// This host does not offer the operation (or not at this time).
    pub const UNSUPPORTED: u32 = 5;
}

/// The answer to a [`HostApi::call`].
#[repr(C)]
#[derive(Debug, Default)]
pub struct Reply {
    pub code: u32,
    pub meta: Buf,
    pub body: Buf,
}

/// The `kind` of an [`Outcome`].
pub mod outcome {
    /// Go on. `body` holds the hook's JSON result for hooks that return one.
    pub const OK: u32 = 0;
    /// Answer the client with `status`, `headers` (JSON `[[name, value], ...]`) and `body`.
    pub const RESPOND: u32 = 1;
    /// The hook failed; `body` says why. The host fails the request (502).
    pub const ERROR: u32 = 2;
    /// The hook panicked; `body` holds the panic message. The host fails the request (500).
    pub const PANICKED: u32 = 3;
    /// From a response filter: discard this response and send the request upstream again,
    /// once (the host refuses a second retry and a request whose body it no longer holds).
    pub const RETRY: u32 = 4;
}

/// What a plugin hook returns.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Outcome {
    pub kind: u32,
    pub status: u16,
    pub headers: Buf,
    pub body: Buf,
}

/// Attributes of the exchange a filter sees, read with [`HostApi::attribute`].
pub mod attr {
    pub const METHOD: u32 = 1;
    /// The path without the query.
    pub const PATH: u32 = 2;
    /// The query without `?`; absent when the request has none.
    pub const QUERY: u32 = 3;
    /// The id xsigate gave the request (also sent upstream and to the client).
    pub const REQUEST_ID: u32 = 4;
    /// The service provider the request was routed to.
    pub const PROVIDER: u32 = 5;
    /// The client's IP address.
    pub const CLIENT_ADDR: u32 = 6;
    /// The request's route: `xsi_actions`, `xsi_events`, `xsi_async`, `gateway`, `applet`.
    pub const ROUTE: u32 = 7;
    /// The name of the upstream the request goes to (`xsp1`, a gateway service); absent before
    /// one is chosen, so in request filters.
    pub const UPSTREAM: u32 = 8;
    /// The BroadWorks userId of the login session the request came with; absent for requests
    /// without one. The session attributes below are absent whenever this is.
    pub const SESSION_USER: u32 = 9;
    /// The session's level: `user`, `group`, `service_provider` or `system`.
    pub const SESSION_LEVEL: u32 = 10;
    /// The service provider (or enterprise) of an administrator session's scope.
    pub const SESSION_SERVICE_PROVIDER: u32 = 11;
    /// The group of a group administrator session.
    pub const SESSION_GROUP: u32 = 12;
    /// The XSP the session is pinned to. Writable: the XSP that now holds its cookies.
    pub const SESSION_XSP: u32 = 13;
    /// The password the user logged in with. Shown only to plugins whose manifest declares
    /// `session_credentials`.
    pub const SESSION_PASSWORD: u32 = 14;
    /// The XSP's session cookie (`JSESSIONID=…`) for the request's XSI web application. Shown
    /// only to plugins declaring `session_credentials`. Writable by them; writing "absent"
    /// forgets it. The host keeps what is written with the session.
    pub const SESSION_XSP_COOKIE: u32 = 15;
    /// How the session's requests authenticate to the XSP: `password` (the user's own) or
    /// `master` (a single sign-on, where the user typed no BroadWorks password). Shown only to
    /// plugins declaring `session_credentials`. Writing `master` in an upstream-request filter
    /// asks the host to put the provider's master credentials on that request once every
    /// filter has run; the plugin never sees them, and the host refuses the write for a
    /// session that has a password.
    pub const SESSION_CREDENTIALS: u32 = 16;
}

/// Levels of [`HostApi::log`].
pub mod level {
    pub const ERROR: u32 = 1;
    pub const WARN: u32 = 2;
    pub const INFO: u32 = 3;
    pub const DEBUG: u32 = 4;
    pub const TRACE: u32 = 5;
}

/// Kinds of [`HostApi::metric_register`].
pub mod metric {
    pub const COUNTER: u32 = 1;
    pub const GAUGE: u32 = 2;
    pub const HISTOGRAM: u32 = 3;
}

/// The result of [`HostApi::metric_register`]: an id, or an error message in `error`.
#[repr(C)]
#[derive(Debug)]
pub struct MetricId {
    pub id: u64,
    pub error: Buf,
}

/// What the host offers a plugin. One table per plugin, valid for the life of the process.
///
/// `context` identifies the plugin to the host and is passed back on every call. `exchange`
/// arguments are the handles the host passes to filter hooks; they are valid until the hook's
/// future completes or is dropped.
#[repr(C)]
#[derive(Debug)]
pub struct HostApi {
    pub abi_version: u32,
    pub context: *const c_void,
    /// Starts an asynchronous operation (an [`op`] code).
    pub call: unsafe extern "C" fn(
        context: *const c_void,
        op: u32,
        meta: Buf,
        body: Buf,
    ) -> FfiFuture<Reply>,
    /// Writes a line to the host's log. `fields` holds name, value, name, value, ...
    pub log: unsafe extern "C" fn(
        context: *const c_void,
        level: u32,
        message: Str,
        fields: *const Str,
        field_count: usize,
    ),
    /// Registers a metric under the plugin's name; only during init.
    pub metric_register: unsafe extern "C" fn(
        context: *const c_void,
        kind: u32,
        name: Str,
        help: Str,
        labels: *const Str,
        label_count: usize,
        buckets: *const f64,
        bucket_count: usize,
    ) -> MetricId,
    /// Adds to a counter, sets a gauge or observes a histogram value. Label values must match the
    /// registered label names in number; a mismatch is dropped and logged by the host.
    pub metric_record: unsafe extern "C" fn(
        context: *const c_void,
        id: u64,
        labels: *const Str,
        label_count: usize,
        value: f64,
    ),
    /// Subscribes the plugin's `on_event` hook to a topic; only during init.
    pub subscribe: unsafe extern "C" fn(context: *const c_void, topic: Str) -> bool,
    /// An [`attr`] of the exchange; absent when it has none.
    pub attribute: unsafe extern "C" fn(exchange: *mut c_void, attr: u32) -> Str,
    /// The `index`-th value of a header of the message the hook filters; absent past the end.
    pub header: unsafe extern "C" fn(exchange: *mut c_void, name: Str, index: usize) -> Str,
    /// Sets (or with `append`, adds) a header. False when the name or value is not valid HTTP or
    /// the message cannot be changed by this hook.
    pub set_header:
        unsafe extern "C" fn(exchange: *mut c_void, name: Str, value: Str, append: bool) -> bool,
    pub remove_header: unsafe extern "C" fn(exchange: *mut c_void, name: Str),
    /// The response status, or 0 for a request.
    pub status: unsafe extern "C" fn(exchange: *mut c_void) -> u16,
    /// Changes the response status; false for a request or an invalid status.
    pub set_status: unsafe extern "C" fn(exchange: *mut c_void, status: u16) -> bool,
    /// Writes a writable [`attr`] (absent `value` removes it); false when the attribute is not
    /// writable, not visible to this plugin, or the exchange has no session.
    pub set_attribute: unsafe extern "C" fn(exchange: *mut c_void, attr: u32, value: Str) -> bool,
}

// SAFETY: the table is immutable and its functions are thread-safe; `context` is owned by the
// host for the life of the process.
unsafe impl Send for HostApi {}
// SAFETY: as above.
unsafe impl Sync for HostApi {}

/// A filter hook: `exchange` is the host's handle for the message being filtered.
pub type FilterFn =
    unsafe extern "C" fn(instance: *const c_void, exchange: *mut c_void) -> FfiFuture<Outcome>;
/// A hook that takes a JSON document and returns one in the outcome's `body`.
pub type JsonHookFn =
    unsafe extern "C" fn(instance: *const c_void, input: Buf) -> FfiFuture<Outcome>;
pub type EventFn =
    unsafe extern "C" fn(instance: *const c_void, topic: Buf, payload: Buf) -> FfiFuture<Outcome>;
pub type WorkerFn = unsafe extern "C" fn(instance: *const c_void) -> FfiFuture<Outcome>;

/// The plugin's side of the contract: its instance and the hooks it implements (null when not).
#[repr(C)]
#[derive(Debug)]
pub struct PluginApi {
    pub instance: *const c_void,
    pub request_filter: Option<FilterFn>,
    pub upstream_request_filter: Option<FilterFn>,
    pub response_filter: Option<FilterFn>,
    pub login_options: Option<JsonHookFn>,
    pub authenticate: Option<JsonHookFn>,
    pub sign_in_metadata: Option<JsonHookFn>,
    pub on_event: Option<EventFn>,
    pub run_worker: Option<WorkerFn>,
}

impl PluginApi {
    pub const fn empty() -> Self {
        Self {
            instance: std::ptr::null(),
            request_filter: None,
            upstream_request_filter: None,
            response_filter: None,
            login_options: None,
            authenticate: None,
            sign_in_metadata: None,
            on_event: None,
            run_worker: None,
        }
    }
}

// SAFETY: the instance is immutable shared state that the plugin declares `Send + Sync`.
unsafe impl Send for PluginApi {}
// SAFETY: as above.
unsafe impl Sync for PluginApi {}

/// What [`InitFn`] returns. On failure `ok` is false and `error` says why; on success
/// `manifest` is a JSON object describing the plugin (see the SDK's `Manifest`).
#[repr(C)]
#[derive(Debug)]
pub struct InitResult {
    pub ok: bool,
    pub error: Buf,
    pub manifest: Buf,
    pub plugin: PluginApi,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ASCII, other UTF-8 and bytes that are not UTF-8 each read as they should.
    #[test]
    fn a_str_reads_as_text_only_when_it_is_utf8() {
        let read = |bytes: &[u8]| {
            // SAFETY: `bytes` outlives the read.
            unsafe { Str::from_bytes(bytes).as_str() }.map(str::to_owned)
        };
        assert_eq!(read(b"xsi_actions").as_deref(), Some("xsi_actions"));
        assert_eq!(read(b"").as_deref(), Some(""));
        assert_eq!(
            read("Zoë Ångström".as_bytes()).as_deref(),
            Some("Zoë Ångström")
        );
        assert_eq!(read(b"alice\xff@bench.example"), None);
        assert_eq!(read(b"caf\xc3"), None);
        // SAFETY: an absent `Str` holds no pointer to read.
        assert_eq!(unsafe { Str::ABSENT.as_str() }, None);
    }
}
