//! One upstream host (an XSP, a gateway service, a proxied applet): its addresses, its health,
//! and the peers Pingora connects to.
//!
//! Host names are resolved off the request path: once at start and then by the health service,
//! because `HttpPeer::new` with a host name would resolve DNS blocking (and panic on failure) on
//! a proxy worker. A request only clones a peer that was built from a resolved address.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

use super::health::{Health, HealthState};
use crate::config::TimeoutsConfig;
use crate::metrics::UpstreamMetrics;

/// What kind of requests a peer carries; each kind has its own read timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    Request,
    Stream,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("CA file {path} holds no usable PEM certificate")]
    CaEmpty { path: String },
}

/// One upstream host.
#[derive(Debug)]
pub struct Upstream {
    /// Short name used in logs, metrics and pin tokens (`xsp1`, or the gateway service name).
    /// Never the address: operators map names to hosts through the configuration.
    pub name: String,
    host: String,
    port: u16,
    tls: bool,
    /// `Host` header value the upstream expects.
    authority: String,
    /// `authority` as a field value, made once and shared by every request's `Host` (a URL's
    /// host and port always make one).
    host_value: Option<http::HeaderValue>,
    /// Path prefix prepended to forwarded paths (gateway services); empty for XSPs.
    pub base_path: String,
    pub health: Health,
    pub metrics: UpstreamMetrics,
    ca: Option<Arc<CaType>>,
    timeouts: TimeoutsConfig,
    /// Ready-made peers for the current address.
    peers: ArcSwapOption<Peers>,
}

/// Peers for the address in use, one per [`PeerKind`], and the other addresses the host name
/// resolved to: a failed connect moves on to the next one, as nginx does.
#[derive(Debug)]
struct Peers {
    addrs: Vec<SocketAddr>,
    current: usize,
    request: Arc<HttpPeer>,
    stream: Arc<HttpPeer>,
}

impl Upstream {
    pub fn new(
        name: String,
        url: &url::Url,
        ca: Option<Arc<CaType>>,
        timeouts: TimeoutsConfig,
        health: Health,
        metrics: UpstreamMetrics,
    ) -> Self {
        let tls = url.scheme() == "https";
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        Self {
            name,
            host,
            port,
            tls,
            host_value: http::HeaderValue::from_str(&authority).ok(),
            authority,
            base_path: url.path().trim_end_matches('/').to_owned(),
            health,
            metrics,
            ca,
            timeouts,
            peers: ArcSwapOption::empty(),
        }
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// [`Self::authority`] as the value of a `Host` field.
    pub fn host_value(&self) -> Option<http::HeaderValue> {
        self.host_value.clone()
    }

    /// The URL of a path on this upstream, for requests the host makes itself.
    pub fn url(&self, path_and_query: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!(
            "{scheme}://{}{}{path_and_query}",
            self.authority, self.base_path
        )
    }

    /// Whether a URL points at this upstream (used to rewrite `Location`).
    pub fn matches_authority(&self, url: &url::Url) -> bool {
        url.host_str()
            .is_some_and(|h| h.trim_matches(['[', ']']).eq_ignore_ascii_case(&self.host))
            && url.port_or_known_default() == Some(self.port)
    }

    /// Resolves the host with the system resolver, blocking. For start-up only.
    pub fn resolve_blocking(&self) -> bool {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default();
        self.set_addresses(&addrs)
    }

    /// Resolves the host without blocking the runtime.
    pub async fn resolve(&self) -> bool {
        let addrs: Vec<SocketAddr> =
            match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
                Ok(addrs) => addrs.collect(),
                Err(_) => Vec::new(),
            };
        self.set_addresses(&addrs)
    }

    /// Installs peers for the first address; returns whether the upstream has an address now.
    /// A failed lookup keeps the previous address: a DNS outage should not take a working
    /// upstream away.
    fn set_addresses(&self, addrs: &[SocketAddr]) -> bool {
        if addrs.is_empty() {
            return self.peers.load().is_some();
        }
        if self.peers.load().as_ref().is_some_and(|p| p.addrs == addrs) {
            return true;
        }
        self.use_address(addrs.to_vec(), 0);
        true
    }

    fn use_address(&self, addrs: Vec<SocketAddr>, current: usize) {
        let Some(addr) = addrs.get(current).copied() else {
            return;
        };
        self.peers.store(Some(Arc::new(Peers {
            request: Arc::new(self.build_peer(addr, self.timeouts.upstream_read_seconds)),
            stream: Arc::new(self.build_peer(addr, self.timeouts.stream_idle_seconds)),
            addrs,
            current,
        })));
    }

    /// After a failed connect, moves on to the host's next resolved address; returns whether
    /// there was another one to move to.
    pub fn next_address(&self) -> bool {
        let peers = self.peers.load();
        let Some(peers) = peers.as_ref().filter(|p| p.addrs.len() > 1) else {
            return false;
        };
        self.use_address(peers.addrs.clone(), (peers.current + 1) % peers.addrs.len());
        true
    }

    /// How many addresses the host name resolved to.
    pub fn address_count(&self) -> usize {
        self.peers.load().as_ref().map_or(0, |p| p.addrs.len())
    }

    fn build_peer(&self, addr: SocketAddr, read_timeout_seconds: u64) -> HttpPeer {
        // SNI and certificate verification use the configured host name, never the address.
        let mut peer = HttpPeer::new(addr, self.tls, self.host.clone());
        let options = &mut peer.options;
        options.connection_timeout = Some(Duration::from_millis(self.timeouts.connect_ms));
        options.total_connection_timeout = Some(Duration::from_millis(
            self.timeouts.connect_ms.saturating_mul(2),
        ));
        options.read_timeout = Some(Duration::from_secs(read_timeout_seconds));
        options.write_timeout = Some(Duration::from_secs(self.timeouts.upstream_read_seconds));
        options.idle_timeout = Some(Duration::from_secs(self.timeouts.upstream_idle_seconds));
        options.verify_cert = true;
        options.verify_hostname = true;
        options.ca.clone_from(&self.ca);
        peer
    }

    /// A peer for one request, or `None` while the host has never resolved. Shared: the lean
    /// lane and channel streams only read it, and Pingora's proxy takes a copy of its own.
    pub fn peer(&self, kind: PeerKind) -> Option<Arc<HttpPeer>> {
        let peers = self.peers.load();
        let peers = peers.as_ref()?;
        let peer = match kind {
            PeerKind::Request => &peers.request,
            PeerKind::Stream => &peers.stream,
        };
        Some(Arc::clone(peer))
    }

    /// A probe or a proxied connect failed.
    pub fn mark_failure(&self, provider: &str) {
        if let Some(state) = self.health.record_failure() {
            self.report_transition(provider, state);
        }
    }

    /// A probe passed.
    pub fn mark_success(&self, provider: &str) {
        if let Some(state) = self.health.record_success() {
            self.report_transition(provider, state);
        }
    }

    fn report_transition(&self, provider: &str, state: HealthState) {
        if let Some(up) = &self.metrics.up {
            up.set(i64::from(state == HealthState::Up));
        }
        if state == HealthState::Down {
            tracing::warn!(provider, upstream = %self.name, "upstream marked down");
        } else {
            tracing::info!(provider, upstream = %self.name, "upstream marked up");
        }
    }

    pub fn url_for(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.authority)
    }
}

/// Loads a PEM bundle into the form Pingora's connector takes as a per-peer trust store.
pub fn load_ca(path: &std::path::Path) -> Result<Arc<CaType>, UpstreamError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let display = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| UpstreamError::CaFile {
        path: display.clone(),
        source,
    })?;
    let certs: Vec<WrappedX509> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .map(|der| WrappedX509::new(der.to_vec(), pingora::utils::tls::parse_x509))
        .collect();
    if certs.is_empty() {
        return Err(UpstreamError::CaEmpty { path: display });
    }
    Ok(Arc::from(certs.into_boxed_slice()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::upstream) fn upstream(name: &str) -> Upstream {
        let metrics = crate::metrics::Metrics::new().unwrap();
        Upstream::new(
            name.to_owned(),
            &url::Url::parse("http://127.0.0.1:9").unwrap(),
            None,
            TimeoutsConfig::default(),
            Health::new(2, 2),
            metrics.for_upstream("p", name, true),
        )
    }

    #[test]
    fn a_failed_connect_moves_on_to_the_next_resolved_address() {
        let up = upstream("xsp1");
        let first = SocketAddr::from(([127, 0, 0, 1], 1001));
        let second = SocketAddr::from(([127, 0, 0, 2], 1002));
        let address = |up: &Upstream| up.peer(PeerKind::Request).unwrap()._address.clone();
        assert!(up.set_addresses(&[first, second]));
        assert_eq!(up.address_count(), 2);
        assert_eq!(address(&up), first.into());
        assert!(up.next_address());
        assert_eq!(address(&up), second.into());
        assert_eq!(up.peer(PeerKind::Stream).unwrap()._address, second.into());
        assert!(up.next_address());
        assert_eq!(address(&up), first.into());
        // The same lookup answer again keeps the address in use.
        assert!(up.next_address());
        assert!(up.set_addresses(&[first, second]));
        assert_eq!(address(&up), second.into());
        // A failed lookup keeps what worked before.
        assert!(up.set_addresses(&[]));
        assert_eq!(address(&up), second.into());

        let single = upstream("xsp2");
        assert!(single.set_addresses(&[first]));
        assert!(!single.next_address());
    }

    #[test]
    fn peers_use_the_resolved_address_and_host_name_for_sni() {
        let up = Upstream::new(
            "xsp1".to_owned(),
            &url::Url::parse("https://localhost:8443").unwrap(),
            None,
            TimeoutsConfig::default(),
            Health::new(1, 1),
            crate::metrics::Metrics::new()
                .unwrap()
                .for_upstream("p", "xsp1", true),
        );
        assert!(up.resolve_blocking());
        let peer = up.peer(PeerKind::Request).unwrap();
        assert_eq!(peer.sni, "localhost");
        assert!(peer.options.verify_cert);
        assert_eq!(up.authority(), "localhost:8443");
    }
}
