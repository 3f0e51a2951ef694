//! The classes of requests: what a request is, as far as its path tells, and the `route`
//! label of the request metrics that dashboards and alerts select on.

use xsigate_broadworks::XsiApp;

/// Request classes, also the `route` label of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    XsiActions,
    XsiEvents,
    /// The streaming XSI-Events channel (`/com.broadsoft.async/…`): long-lived, never retried.
    XsiAsync,
    Gateway,
    /// An applet proxied under `/apps/<name>/…`.
    Applet,
    /// xsigate's own login API (`/api/access/services/…`).
    Access,
    Local,
    Unmatched,
}

impl RouteClass {
    pub const ALL: [Self; 8] = [
        Self::XsiActions,
        Self::XsiEvents,
        Self::XsiAsync,
        Self::Gateway,
        Self::Applet,
        Self::Access,
        Self::Local,
        Self::Unmatched,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::XsiActions => "xsi_actions",
            Self::XsiEvents => "xsi_events",
            Self::XsiAsync => "xsi_async",
            Self::Gateway => "gateway",
            Self::Applet => "applet",
            Self::Access => "access",
            Self::Local => "local",
            Self::Unmatched => "unmatched",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether requests of this class go to the provider's XSPs.
    pub fn is_xsp(self) -> bool {
        self.xsi_app().is_some()
    }

    /// The XSI application of a request of this class.
    pub fn xsi_app(self) -> Option<XsiApp> {
        match self {
            Self::XsiActions => Some(XsiApp::Actions),
            Self::XsiEvents => Some(XsiApp::Events),
            Self::XsiAsync => Some(XsiApp::Async),
            _ => None,
        }
    }

    /// The class of requests to an XSI application.
    pub fn of_xsi_app(app: XsiApp) -> Self {
        match app {
            XsiApp::Actions => Self::XsiActions,
            XsiApp::Events => Self::XsiEvents,
            XsiApp::Async => Self::XsiAsync,
        }
    }
}
