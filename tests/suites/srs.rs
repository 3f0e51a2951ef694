//! Screen recording through the real xsigate with the srs-login plugin, against the SRS
//! stand-in and the XSI simulator: login with configuration, CSRF after opt-in, keep-alive,
//! cookie logout, the peer data centre, an unreachable SRS that never blocks the dialer login,
//! logout when the session expires, and browser-assisted mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xsi_sim::srs::{Srs, SrsFault, SrsSession, SrsSettings};
use xsigate_tests::{Gateway, client, plugin_library, provider_for_simulator, set_cookie_pair};

const DESKTOP: &str = "https://desktop.acme.example";
const RWS1: &str = "https://rws1.acme.example";
const RWS2: &str = "https://rws2.acme.example";
const AGENT: &str = "agent1@acme.example";
const PASSWORD: &str = "pw-agent1";
const WAIT: Duration = Duration::from_secs(15);

async fn simulator() -> Arc<xsi_sim::Simulator> {
    let seed = format!(
        "[[users]]\nuser_id = \"{AGENT}\"\npassword = \"{PASSWORD}\"\nservice_provider = \"acme\"\n\
         group = \"desk\"\nnumber = \"2025550101\"\nextension = \"0101\"\n"
    );
    xsi_sim::Simulator::start(toml::from_str(&seed).unwrap())
        .await
        .unwrap()
}

/// An SRS stand-in that knows the agent, with a 4-second keep-alive period.
async fn srs() -> Arc<Srs> {
    Srs::start(
        SrsSettings {
            origin: DESKTOP.to_owned(),
            agents: HashMap::from([(AGENT.to_owned(), PASSWORD.to_owned())]),
            keep_alive: Duration::from_secs(4),
            version: "8.5.500.07".to_owned(),
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap()
}

/// xsigate with idp-broadsoft and srs-login for provider acme; `server` goes before the
/// plugins, `srs` into the plugin's provider table.
async fn gateway(sim: &xsi_sim::Simulator, srs_url: &str, server: &str, srs: &str) -> Gateway {
    let config = format!(
        "{server}\n[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
         [[plugins]]\nname = \"srs\"\npath = \"{}\"\n\
         [plugins.config.providers.acme]\nurl = \"{srs_url}\"\norigin = \"{DESKTOP}\"\n\
         server = \"{RWS1}\"\npeer_server = \"{RWS2}\"\nswitch = \"SIP_Switch\"\n\
         place = \"Place_{{extension}}\"\nkeep_alive_seconds = 1\ntimeout_ms = 1000\n{srs}\n{}",
        plugin_library("xsigate-idp-broadsoft").display(),
        plugin_library("xsigate-srs-login").display(),
        provider_for_simulator(
            "acme",
            &["acme.example"],
            sim,
            "plugins = [\"broadsoft\", \"srs\"]"
        ),
    );
    let mut gateway = Gateway::start(&config).await;
    gateway.wait_for("/readyz", 200).await;
    gateway
}

struct Login {
    cookie: String,
    csrf: String,
    answer: Value,
}

async fn log_in(gateway: &Gateway) -> Login {
    let started = Instant::now();
    let response = client()
        .post(gateway.url("/api/access/services/idp/broadsoft"))
        .json(&json!({ "user": AGENT, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = set_cookie_pair(&response);
    let answer: Value = response.json().await.unwrap();
    // The report waits a bounded time for the recording service, never longer.
    assert!(started.elapsed() < Duration::from_secs(6), "{answer}");
    Login {
        cookie,
        csrf: answer["csrf_token"].as_str().unwrap().to_owned(),
        answer,
    }
}

async fn log_out(gateway: &Gateway, login: &Login) {
    let response = client()
        .post(gateway.url("/api/access/services/logout"))
        .header("cookie", &login.cookie)
        .header("x-csrf-token", &login.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Waits until the agent's newest SRS session satisfies `condition`.
async fn wait_session(
    srs: &Srs,
    what: &str,
    condition: impl Fn(&SrsSession) -> bool,
) -> SrsSession {
    let deadline = Instant::now() + WAIT;
    loop {
        let sessions = srs.sessions();
        if let Some(session) = sessions.iter().rev().find(|s| condition(s)) {
            return session.clone();
        }
        assert!(Instant::now() < deadline, "{what}: sessions {sessions:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn expected_configuration(server: &str, peer: &str) -> Value {
    json!([
        { "name": "server", "value": server },
        { "name": "peer_server", "value": peer },
        { "name": "place", "value": "Place_0101" },
        { "name": "devices", "value": [{ "dn": "0101", "switch": "SIP_Switch" }] },
    ])
}

#[tokio::test]
async fn agents_log_in_with_configuration_stay_alive_and_log_out_on_their_cookie() {
    let sim = simulator().await;
    let srs = srs().await;
    let gateway = gateway(&sim, &srs.url(), "", "").await;

    let login = log_in(&gateway).await;
    assert_eq!(
        login.answer["reports"]["srs"],
        json!({ "state": "logged_in", "rws": "primary" })
    );
    let session = wait_session(&srs, "logged in", |s| s.active).await;
    assert_eq!(session.agent, AGENT);
    assert_eq!(
        session.configuration,
        Some(expected_configuration(RWS1, RWS2))
    );
    assert!(session.csrf_protected, "xsigate opts in to CSRF protection");
    let requests = srs.requests();
    let login_calls: Vec<_> = requests.iter().filter(|r| r.path == "/api/v2/me").collect();
    assert_eq!(
        login_calls[0].method, "OPTIONS",
        "preflight first: {requests:?}"
    );
    assert_eq!(login_calls[0].status, 200);
    assert_eq!(login_calls[1].method, "POST");
    assert_eq!(login_calls[1].basic_user.as_deref(), Some(AGENT));
    assert!(login_calls[1].opt_in_csrf);
    assert!(
        requests
            .iter()
            .all(|r| r.origin.as_deref() == Some(DESKTOP)),
        "every call carries the expected Origin: {requests:?}"
    );

    // Pinged every second on its cookie, the session outlives SRS's 4-second keep-alive limit.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let session = wait_session(&srs, "kept alive", |s| s.active && s.pings >= 3).await;
    assert!(!session.ended);
    let pings: Vec<_> = srs
        .requests()
        .into_iter()
        .filter(|r| r.path == "/ping")
        .collect();
    assert!(
        pings
            .iter()
            .all(|r| r.cookie && r.basic_user.is_none() && r.status == 200),
        "pings ride on the cookie alone: {pings:?}"
    );

    log_out(&gateway, &login).await;
    let ended = wait_session(&srs, "logged out", |s| s.ended).await;
    assert_eq!(ended.agent, AGENT);
    let logout = srs
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST" && r.path == "/api/v2/me")
        .unwrap();
    assert!(
        logout.cookie && logout.csrf_token && logout.basic_user.is_none(),
        "{logout:?}"
    );
    assert_eq!(logout.status, 200);

    // SRS requires the CSRF token it issued on every POST of a session that opted in.
    let direct = client();
    let opened = direct
        .get(format!("{}/api/v2/me", srs.url()))
        .header("origin", DESKTOP)
        .basic_auth(AGENT, Some(PASSWORD))
        .header("x-support-csrfp", "True")
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    assert_eq!(opened.headers()["x-csrf-header"], "X-CSRF-Token");
    let token = opened.headers()["x-csrf-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = set_cookie_pair(&opened);
    let end = |token: Option<&str>| {
        let mut request = direct
            .post(format!("{}/api/v2/me", srs.url()))
            .header("origin", DESKTOP)
            .header("cookie", &cookie)
            .json(&json!({ "operationName": "EndContactCenterSession" }));
        if let Some(token) = token {
            request = request.header("x-csrf-token", token);
        }
        request.send()
    };
    assert_eq!(end(None).await.unwrap().status(), 403);
    assert_eq!(end(Some("forged")).await.unwrap().status(), 403);
    assert_eq!(end(Some(&token)).await.unwrap().status(), 200);

    let series = |name: &str, result: &str| {
        format!("xsigate_plugin_srs_{name}{{provider=\"acme\",result=\"{result}\"}}")
    };
    assert_eq!(
        gateway.metric(&series("logins_total", "logged_in")).await,
        Some(1.0)
    );
    assert_eq!(
        gateway.metric(&series("logouts_total", "logged_out")).await,
        Some(1.0)
    );
    gateway
        .wait_metric(
            "xsigate_plugin_srs_version_info{provider=\"acme\",version=\"8.5.500.07\"}",
            |v| v == 1.0,
        )
        .await;
    let logs = gateway.logs();
    assert!(!logs.contains(PASSWORD), "no password in the log");
    assert!(!logs.contains("SRSSESSIONID"), "no SRS cookie in the log");
}

#[tokio::test]
async fn a_dropped_session_is_logged_in_again_and_a_second_dialer_session_keeps_recording() {
    let sim = simulator().await;
    let srs = srs().await;
    let gateway = gateway(&sim, &srs.url(), "", "").await;

    let first = log_in(&gateway).await;
    wait_session(&srs, "logged in", |s| s.active).await;
    // An outage longer than the keep-alive period: SRS drops the session and answers its
    // next ping with 401, and the agent is logged in again.
    srs.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    srs.restart().await.unwrap();
    wait_session(&srs, "logged in again", |s| s.active && s.pings >= 1).await;
    let sessions = srs.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(
        srs.requests()
            .iter()
            .any(|r| r.path == "/ping" && r.status == 401),
        "the stale session was refused"
    );

    // Two dialer sessions: ending one keeps the recording; ending the last logs out.
    let second = log_in(&gateway).await;
    assert_eq!(second.answer["reports"]["srs"]["state"], "logged_in");
    log_out(&gateway, &first).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        srs.sessions().iter().all(|s| !s.ended),
        "{:?}",
        srs.sessions()
    );
    log_out(&gateway, &second).await;
    wait_session(&srs, "logged out at the last session", |s| s.ended).await;
}

#[tokio::test]
async fn a_primary_data_centre_failure_logs_in_through_the_peer_server() {
    let sim = simulator().await;
    let srs = srs().await;
    srs.set_fault(SrsFault {
        rws_down: vec![RWS1.to_owned()],
        ..SrsFault::default()
    });
    let gateway = gateway(&sim, &srs.url(), "", "").await;

    let login = log_in(&gateway).await;
    assert_eq!(
        login.answer["reports"]["srs"],
        json!({ "state": "logged_in", "rws": "peer" })
    );
    let session = wait_session(&srs, "logged in", |s| s.active).await;
    assert_eq!(
        session.configuration,
        Some(expected_configuration(RWS2, RWS1))
    );
    let failed = srs
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.status == 503)
        .count();
    assert_eq!(failed, 1, "the primary was tried once");
}

#[tokio::test]
async fn an_unreachable_srs_never_blocks_the_dialer_login_and_is_retried() {
    let sim = simulator().await;
    let srs = srs().await;
    let gateway = gateway(&sim, &srs.url(), "", "").await;
    srs.stop();

    let login = log_in(&gateway).await;
    assert_eq!(
        login.answer["reports"]["srs"],
        json!({ "state": "failed", "reason": "unreachable", "retrying": true })
    );
    let session = client()
        .get(gateway.url("/api/access/services/session"))
        .header("cookie", &login.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200, "the dialer session is open");
    gateway
        .wait_metric(
            "xsigate_plugin_srs_logins_total{provider=\"acme\",result=\"unreachable\"}",
            |v| v >= 1.0,
        )
        .await;

    srs.restart().await.unwrap();
    let session = wait_session(&srs, "logged in once SRS is back", |s| s.active).await;
    assert_eq!(
        session.configuration,
        Some(expected_configuration(RWS1, RWS2))
    );
    gateway
        .wait_metric("xsigate_plugin_srs_agents{provider=\"acme\"}", |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn an_expired_session_logs_the_agent_out() {
    let sim = simulator().await;
    let srs = srs().await;
    let gateway = gateway(&sim, &srs.url(), "[server.sessions]\nidle_seconds = 2", "").await;

    let _login = log_in(&gateway).await;
    wait_session(&srs, "logged in", |s| s.active).await;
    // No request renews the dialer session: it expires, and the recording ends with it.
    let ended = wait_session(&srs, "logged out at expiry", |s| s.ended).await;
    assert_eq!(ended.agent, AGENT);
    gateway
        .wait_metric(
            "xsigate_plugin_srs_logouts_total{provider=\"acme\",result=\"logged_out\"}",
            |v| v == 1.0,
        )
        .await;
}

#[tokio::test]
async fn browser_mode_gives_the_browser_its_configuration_and_steps() {
    let sim = simulator().await;
    let srs = srs().await;
    // The agent's own SRS, which only its browser may call.
    let local = srs.url();
    let gateway = gateway(&sim, &local, "", "mode = \"browser\"").await;

    let login = log_in(&gateway).await;
    let report = &login.answer["reports"]["srs"];
    assert_eq!(report["state"], "browser");
    assert_eq!(report["srs_url"], local.as_str());
    assert_eq!(report["login_name"], AGENT);
    assert_eq!(report["configuration"][2]["value"], "Place_0101");
    assert_eq!(report["configuration"][3]["value"][0]["dn"], "0101");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["/api/v2/me", "/api/v2/me", "/ping", "/api/v2/me"]);
    assert!(
        !report.to_string().contains(PASSWORD),
        "the password is never sent back"
    );
    assert!(srs.requests().is_empty(), "xsigate itself calls no SRS");
}
