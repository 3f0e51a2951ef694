//! The request filter in process, over an in-memory connection (`Session::new_h1` on a tokio
//! duplex stream): what it answers itself and where it routes, with no network and no upstream.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use pingora::proxy::{ProxyHttp as _, Session};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::context::{RequestCtx, Target};
use super::{ProxyApp, ProxySettings};
use crate::access::{LoginApi, SessionPolicy, Sessions, Signer};
use crate::metrics::Metrics;
use crate::plugin::Plugins;
use crate::state::{Shared, StateSettings};
use crate::upstream::Providers;
use crate::wire::error::ErrorCode;

const CONFIG: &str = r#"
[providers.acme]
domains = ["acme.example"]
xsp = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
cors_origins = ["https://dialer.acme.example"]
[providers.beta]
domains = ["beta.example"]
xsp = ["http://127.0.0.1:3"]
"#;

/// The proxy application on `CONFIG`, with no plugins. Built outside any async runtime.
fn app(dir: &std::path::Path) -> ProxyApp {
    let config = crate::config::load(&crate::config::Source {
        name: "providers.toml".to_owned(),
        text: CONFIG,
        base_dir: dir,
    })
    .unwrap();
    let metrics = Metrics::new().unwrap();
    let plugins = Arc::new(Plugins::load(&config, &metrics).unwrap());
    let providers = Arc::new(Providers::build(&config, &metrics).unwrap());
    std::fs::write(dir.join("secret"), [b'k'; 64]).unwrap();
    let shared = Shared::start(&StateSettings {
        data_dir: dir.to_path_buf(),
        secret_file: dir.join("secret"),
        postgres: None,
    })
    .unwrap();
    let sessions = Arc::new(Sessions::new(&shared, SessionPolicy::default()).unwrap());
    let signer = Arc::new(Signer::new(&shared.sealer).unwrap());
    let login_api = Arc::new(
        LoginApi::new(
            Arc::clone(&providers),
            Arc::clone(&plugins),
            shared,
            Arc::clone(&sessions),
            Arc::clone(&signer),
            HashMap::new(),
            &metrics,
            &crate::audit::Audit::new(&metrics),
        )
        .unwrap(),
    );
    ProxyApp {
        providers,
        plugins,
        sessions,
        signer,
        login_api,
        metrics,
        settings: ProxySettings {
            access_log: false,
            downstream_read_timeout: std::time::Duration::from_secs(5),
            body_bytes: 1024 * 1024,
            stream_idle_timeout: std::time::Duration::from_secs(5),
        },
        addresses: Arc::new(crate::edge::addresses::Addresses::new(
            &config.server.clients,
        )),
    }
}

/// What the request filter made of one request: whether it answered, the context, and the
/// response head it wrote (empty when it answered nothing).
struct Filtered {
    answered: bool,
    ctx: RequestCtx,
    response: String,
}

fn filter(request: &str) -> Filtered {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(request.as_bytes()).await.unwrap();
        let mut session = Session::new_h1(Box::new(server));
        assert!(session.read_request().await.unwrap());
        let mut ctx = app.new_ctx();
        let answered = app.request_filter(&mut session, &mut ctx).await.unwrap();
        drop(session);
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        Filtered {
            answered,
            ctx,
            response: String::from_utf8_lossy(&written).into_owned(),
        }
    })
}

fn basic(user: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
    format!("Basic {encoded}")
}

#[test]
fn a_path_that_could_be_read_two_ways_is_refused_before_routing() {
    let filtered = filter(
        "GET /com.broadsoft.xsi-actions/v2.0/user/a%40acme.example/../b HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(filtered.answered);
    assert_eq!(filtered.ctx.refused, Some(ErrorCode::AmbiguousPath));
    assert!(filtered.ctx.provider.is_none());
    assert!(
        filtered.response.starts_with("HTTP/1.1 400"),
        "{}",
        filtered.response
    );
    assert!(filtered.response.contains("\"ambiguous_path\""));
}

#[test]
fn a_plain_xsi_client_is_routed_by_its_credentials_to_the_pool() {
    let filtered = filter(&format!(
        "GET /com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/profile HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        basic("alice@acme.example")
    ));
    assert!(!filtered.answered, "{}", filtered.response);
    assert!(filtered.response.is_empty());
    assert_eq!(filtered.ctx.provider.as_ref().unwrap().id, "acme");
    assert!(matches!(filtered.ctx.target, Target::Xsp { pin: None }));
}

#[test]
fn a_pin_is_kept_and_one_naming_no_xsp_is_refused() {
    let pinned = filter(&format!(
        "PUT /com.broadsoft.xsi-events/v2.0/channel/c1/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nX-Xsigate-Xsp: xsp2\r\nContent-Length: 0\r\n\r\n",
        basic("alice@acme.example")
    ));
    assert!(!pinned.answered);
    assert!(matches!(pinned.ctx.target, Target::Xsp { pin: Some(1) }));
    let unknown = filter(&format!(
        "GET /com.broadsoft.xsi-actions/v2.0/versions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nX-Xsigate-Xsp: xsp9\r\n\r\n",
        basic("alice@acme.example")
    ));
    assert!(unknown.answered);
    assert_eq!(unknown.ctx.refused, Some(ErrorCode::InvalidPin));
}

#[test]
fn credentials_and_path_of_different_providers_are_refused() {
    let filtered = filter(&format!(
        "GET /com.broadsoft.xsi-actions/v2.0/user/bob@beta.example/profile HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        basic("alice@acme.example")
    ));
    assert!(filtered.answered);
    assert_eq!(filtered.ctx.refused, Some(ErrorCode::ConflictingProvider));
    assert!(filtered.response.starts_with("HTTP/1.1 400"));
}

#[test]
fn a_cookie_naming_no_session_reaches_nothing() {
    let filtered = filter(
        "GET /com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/profile HTTP/1.1\r\nHost: x\r\nCookie: xsigate_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n\r\n",
    );
    assert!(filtered.answered);
    assert_eq!(filtered.ctx.refused, Some(ErrorCode::NotLoggedIn));
    assert!(filtered.response.starts_with("HTTP/1.1 401"));
}

#[test]
fn a_preflight_of_a_listed_origin_is_answered_here_with_the_pin_allowed() {
    let filtered = filter(
        "OPTIONS /com.broadsoft.xsi-events/v2.0/channel/c1/heartbeat HTTP/1.1\r\nHost: x\r\nOrigin: https://dialer.acme.example\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: x-xsigate-xsp\r\n\r\n",
    );
    assert!(filtered.answered);
    let response = filtered.response.to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 204"), "{response}");
    let allowed = response
        .lines()
        .find_map(|l| l.strip_prefix("access-control-allow-headers: "))
        .unwrap();
    assert!(
        allowed.split(", ").any(|h| h == "x-xsigate-xsp"),
        "{allowed}"
    );
    let other = filter(
        "OPTIONS /com.broadsoft.xsi-actions/v2.0/versions HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\n\r\n",
    );
    assert_eq!(other.ctx.refused, Some(ErrorCode::OriginNotAllowed));
}
