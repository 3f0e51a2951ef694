//! Requests the gateway itself sends to a provider's XSPs (password resets, plugins' host
//! calls; XSI-Events channels are [`super::channel_stream`]'s): the same XSP choice and
//! failover rule as proxied requests.

use super::peer::Upstream;
use super::pool::Tried;
use super::provider::Provider;
use super::retry::{self, Attempt, Failure, Next};

/// A request the host itself sends to one of the provider's XSPs.
#[derive(Debug)]
pub struct XsiCall<'a> {
    pub method: reqwest::Method,
    /// The XSI path and query.
    pub path: &'a str,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// Basic credentials: a user's, or the master's.
    pub credentials: Option<(&'a str, &'a str)>,
    /// Only this XSP (an index into `xsps`), without failover.
    pub pin: Option<usize>,
    /// For the whole exchange; for a channel stream
    /// ([`Provider::open_channel_stream`]), for the response head only (its body stays open).
    pub timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum XsiCallError {
    #[error("no XSP of the provider could be reached")]
    Unreachable,
    #[error("the XSP sent no response head in time")]
    HeadTimeout,
    #[error("cannot build the provider's XSI client: {0}")]
    Client(String),
    /// The request reached an XSP and failed there (a timeout, a broken answer). Its message
    /// carries no URL.
    #[error("{0}")]
    Http(reqwest::Error),
    /// A channel stream reached an XSP and failed there ([`super::channel_stream`]).
    #[error("{0}")]
    Stream(StreamError),
}

/// Why a channel stream (or the head before it) could not be read
/// ([`super::channel_stream`]). Its messages name no address.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading the XSP's stream failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the XSP's answer is not valid HTTP/1.1: {0}")]
    Broken(&'static str),
    #[error("the XSP closed the stream in the middle of its body")]
    Truncated,
}

impl Provider {
    /// The XSP a host call tries next: its pin once, or the next healthy XSP not yet tried.
    pub(super) fn next_xsp(&self, pin: Option<usize>, tried: Tried) -> Option<(usize, &Upstream)> {
        let index = match pin {
            Some(index) if !tried.contains(index) => Some(index),
            Some(_) => None,
            None => self.xsps.select(tried),
        }?;
        self.xsps.members.get(index).map(|xsp| (index, xsp))
    }

    /// Sends `call` to the pinned XSP, or to the healthy XSPs in turn as [`retry::next`]
    /// allows. Returns the response and the XSP that gave it.
    pub async fn send_xsi(
        &self,
        call: XsiCall<'_>,
    ) -> Result<(reqwest::Response, &Upstream), XsiCallError> {
        let client = self
            .xsi_client
            .get_or_init(|| {
                self.client_builder()
                    .and_then(|b| {
                        Ok(b.user_agent(concat!("xsigate/", env!("CARGO_PKG_VERSION")))
                            .build()?)
                    })
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| XsiCallError::Client(e.clone()))?;
        let mut tried = Tried::default();
        loop {
            let Some((index, xsp)) = self.next_xsp(call.pin, tried) else {
                return Err(XsiCallError::Unreachable);
            };
            tried.add(index);
            let mut builder = client
                .request(call.method.clone(), xsp.url(call.path))
                .headers(call.headers.clone())
                .timeout(call.timeout);
            if let Some((user, password)) = call.credentials {
                builder = builder.basic_auth(user, Some(password));
            }
            if !call.body.is_empty() {
                builder = builder.body(call.body.clone());
            }
            let e = match builder.send().await {
                Ok(response) => {
                    xsp.health.record_response();
                    return Ok((response, xsp));
                }
                Err(e) => e,
            };
            let failure = if e.is_connect() {
                xsp.metrics.connect_failures.inc();
                xsp.mark_failure(&self.id);
                Failure::NotConnected
            } else if e.is_timeout() {
                Failure::TimedOut
            } else {
                // The client's pool resends on connections it finds closed before sending.
                Failure::NoAnswer {
                    stale_connection: false,
                }
            };
            let attempt = Attempt {
                idempotent: call.method.is_idempotent(),
                pinned: call.pin.is_some(),
                stream: false,
                untried_left: self.xsps.has_untried(tried),
            };
            match retry::next(attempt, failure) {
                Next::Another => {
                    tracing::debug!(provider = %self.id, xsp = %xsp.name, "XSI request failed at an XSP; trying another");
                }
                Next::Same => tried.remove(index),
                Next::GiveUp if failure == Failure::NotConnected => {
                    return Err(XsiCallError::Unreachable);
                }
                Next::GiveUp => return Err(XsiCallError::Http(e.without_url())),
            }
        }
    }
}
