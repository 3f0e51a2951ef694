//! Views of the message a filter hook works on. The bytes stay in the host; reads borrow them
//! and writes go through the host, so a no-op filter copies nothing.
#![allow(
    unsafe_code,
    reason = "reads and writes through the host's exchange handle; see `Exchange`"
)]

use std::ffi::c_void;
use std::fmt;

use crate::abi::{self, HostApi, Str};
use crate::error::{Error, ErrorKind};
use crate::hooks::LoginLevel;

/// The host's handle for one filter call. The host keeps the message alive and unmoved until
/// the hook's future completes, and only this view changes it meanwhile; `&mut self` on the
/// writers ends every borrow a reader handed out before the bytes can change.
struct Exchange {
    api: &'static HostApi,
    handle: *mut c_void,
}

// SAFETY: the host's message is owned by the task that polls the hook's future, and the view
// moves with that future; the host functions are thread-safe.
unsafe impl Send for Exchange {}
// SAFETY: readers take `&self` and the host's reads do not mutate.
unsafe impl Sync for Exchange {}

impl Exchange {
    fn attribute(&self, attr: u32) -> Option<&str> {
        // SAFETY: `handle` is live for the hook (see the type's comment); the returned bytes
        // live as long as the message is unchanged, which `&self` guarantees.
        unsafe { (self.api.attribute)(self.handle, attr).as_str() }
    }

    fn header(&self, name: &str, index: usize) -> Option<&str> {
        // SAFETY: as in `attribute`; `name` outlives the call.
        unsafe { (self.api.header)(self.handle, Str::new(name), index).as_str() }
    }

    fn header_values<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        (0..).map_while(move |i| {
            // SAFETY: as in `attribute`.
            let value = unsafe { (self.api.header)(self.handle, Str::new(name), i) };
            // SAFETY: as in `attribute`.
            (!value.is_absent()).then(|| unsafe { value.as_str() }.unwrap_or(""))
        })
    }

    fn set_header(&mut self, name: &str, value: &str, append: bool) -> Result<(), Error> {
        // SAFETY: `handle` is live; `name` and `value` outlive the call.
        let ok =
            unsafe { (self.api.set_header)(self.handle, Str::new(name), Str::new(value), append) };
        if ok {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Invalid,
                format!("header `{name}` was refused: not valid HTTP, or not writable here"),
            ))
        }
    }

    fn remove_header(&mut self, name: &str) {
        // SAFETY: `handle` is live; `name` outlives the call.
        unsafe { (self.api.remove_header)(self.handle, Str::new(name)) };
    }

    fn set_attribute(&mut self, attr: u32, value: Option<&str>) -> Result<(), Error> {
        let value = value.map_or(Str::ABSENT, Str::new);
        // SAFETY: `handle` is live; `value` outlives the call.
        if unsafe { (self.api.set_attribute)(self.handle, attr, value) } {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Invalid,
                format!("attribute {attr} is not writable here"),
            ))
        }
    }

    fn session(&self) -> Option<SessionInfo<'_>> {
        let user_id = self.attribute(abi::attr::SESSION_USER)?;
        Some(SessionInfo {
            user_id,
            level: self
                .attribute(abi::attr::SESSION_LEVEL)
                .and_then(LoginLevel::parse)
                .unwrap_or_default(),
            service_provider: self.attribute(abi::attr::SESSION_SERVICE_PROVIDER),
            group: self.attribute(abi::attr::SESSION_GROUP),
            xsp: self.attribute(abi::attr::SESSION_XSP),
        })
    }
}

/// The login session a request came with, as the host resolved it from the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo<'a> {
    /// The BroadWorks userId that logged in.
    pub user_id: &'a str,
    pub level: LoginLevel,
    /// The service provider (or enterprise) an administrator acts in.
    pub service_provider: Option<&'a str>,
    /// The group a group administrator acts in.
    pub group: Option<&'a str>,
    /// The XSP the session is pinned to.
    pub xsp: Option<&'a str>,
}

macro_rules! request_readers {
    () => {
        /// The request method, e.g. `GET`.
        pub fn method(&self) -> &str {
            self.exchange.attribute(abi::attr::METHOD).unwrap_or("")
        }

        /// The request path, without the query.
        pub fn path(&self) -> &str {
            self.exchange.attribute(abi::attr::PATH).unwrap_or("/")
        }

        /// The query string without `?`.
        pub fn query(&self) -> Option<&str> {
            self.exchange.attribute(abi::attr::QUERY)
        }

        /// The id xsigate gave this request; it appears in the host's access log.
        pub fn request_id(&self) -> &str {
            self.exchange.attribute(abi::attr::REQUEST_ID).unwrap_or("")
        }

        /// The service provider the request was routed to.
        pub fn provider(&self) -> &str {
            self.exchange.attribute(abi::attr::PROVIDER).unwrap_or("")
        }

        /// The client's IP address.
        pub fn client_addr(&self) -> Option<&str> {
            self.exchange.attribute(abi::attr::CLIENT_ADDR)
        }

        /// The route: `xsi_actions`, `xsi_events`, `xsi_async`, `gateway` or `applet`.
        pub fn route(&self) -> &str {
            self.exchange.attribute(abi::attr::ROUTE).unwrap_or("")
        }

        /// The upstream the request goes to (`xsp1`, a gateway service); `None` in request
        /// filters, which run before one is chosen.
        pub fn upstream(&self) -> Option<&str> {
            self.exchange.attribute(abi::attr::UPSTREAM)
        }

        /// The login session the request came with (by its session cookie), if any.
        pub fn session(&self) -> Option<SessionInfo<'_>> {
            self.exchange.session()
        }

        /// The userId of the login session the request came with, if any: one read from the
        /// host, where [`Self::session`] makes five.
        pub fn session_user(&self) -> Option<&str> {
            self.exchange.attribute(abi::attr::SESSION_USER)
        }

        /// The password the session's user logged in with. Only for plugins whose manifest
        /// declares [`crate::Manifest::session_credentials`]; `None` for the others.
        pub fn session_password(&self) -> Option<&str> {
            self.exchange.attribute(abi::attr::SESSION_PASSWORD)
        }

        /// Whether the session acts through the provider's master credentials (a single
        /// sign-on: there is no [`Self::session_password`]). Only for plugins declaring
        /// `session_credentials`.
        pub fn session_on_master(&self) -> bool {
            self.exchange.attribute(abi::attr::SESSION_CREDENTIALS) == Some("master")
        }

        /// The XSP's session cookie (`JSESSIONID=…`) the session holds for this request's XSI
        /// web application. Only for plugins declaring `session_credentials`.
        pub fn xsp_cookie(&self) -> Option<&str> {
            self.exchange.attribute(abi::attr::SESSION_XSP_COOKIE)
        }

        /// Keeps (or with `None` forgets) the XSP's session cookie for this request's XSI web
        /// application with the session. Only for plugins declaring `session_credentials`.
        pub fn set_xsp_cookie(&mut self, cookie: Option<&str>) -> Result<(), Error> {
            self.exchange
                .set_attribute(abi::attr::SESSION_XSP_COOKIE, cookie)
        }

        /// Pins the session to another XSP (the one that now holds its cookies).
        pub fn set_session_xsp(&mut self, xsp: &str) -> Result<(), Error> {
            self.exchange
                .set_attribute(abi::attr::SESSION_XSP, Some(xsp))
        }
    };
}

macro_rules! header_access {
    () => {
        /// The first value of a header (case-insensitive name), if present and UTF-8.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.exchange.header(name, 0)
        }

        /// Every value of a header, in order (a value that is not UTF-8 as `""`).
        pub fn headers(&self, name: &str) -> Vec<&str> {
            self.exchange.header_values(name).collect()
        }

        /// Every value of a header, in order, as [`Self::headers`] has them, each read from the
        /// host as the iterator reaches it: nothing is collected, and a hook that finds what
        /// it looks for stops reading.
        pub fn header_values<'a, 'n>(
            &'a self,
            name: &'n str,
        ) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
            self.exchange.header_values(name)
        }

        /// Replaces every value of a header.
        pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
            self.exchange.set_header(name, value, false)
        }

        /// Adds a value to a header.
        pub fn append_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
            self.exchange.set_header(name, value, true)
        }

        pub fn remove_header(&mut self, name: &str) {
            self.exchange.remove_header(name);
        }
    };
}

/// A request: the client's in [`crate::RequestFilter`], the one about to go upstream in
/// [`crate::UpstreamRequestFilter`].
pub struct Request {
    exchange: Exchange,
}

impl Request {
    /// # Safety
    /// `handle` must be an exchange handle the host passed to the running hook.
    pub(crate) unsafe fn from_raw(api: &'static HostApi, handle: *mut c_void) -> Self {
        Self {
            exchange: Exchange { api, handle },
        }
    }

    request_readers!();
    header_access!();

    /// Asks the host to authenticate this upstream request with the provider's master
    /// credentials, which the plugin never sees. Only in an upstream-request filter of a plugin
    /// declaring `session_credentials`, for a session [on master](Self::session_on_master).
    pub fn use_master_credentials(&mut self) -> Result<(), Error> {
        self.exchange
            .set_attribute(abi::attr::SESSION_CREDENTIALS, Some("master"))
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

/// The upstream's response on its way to the client, in [`crate::ResponseFilter`]. The request
/// readers describe the request it answers.
pub struct Response {
    exchange: Exchange,
}

impl Response {
    /// # Safety
    /// As for [`Request::from_raw`].
    pub(crate) unsafe fn from_raw(api: &'static HostApi, handle: *mut c_void) -> Self {
        Self {
            exchange: Exchange { api, handle },
        }
    }

    request_readers!();
    header_access!();

    pub fn status(&self) -> u16 {
        // SAFETY: `handle` is live for the hook.
        unsafe { (self.exchange.api.status)(self.exchange.handle) }
    }

    pub fn set_status(&mut self, status: u16) -> Result<(), Error> {
        // SAFETY: `handle` is live for the hook.
        if unsafe { (self.exchange.api.set_status)(self.exchange.handle, status) } {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Invalid,
                format!("status {status} was refused"),
            ))
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status())
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}
