//! XSI on login sessions through the real xsigate with the xsi-session plugin, in front of the
//! XSI simulator with two XSPs: isolation between users, paths and headers that try to
//! mislead, XSP session expiry and failover, CORS and CSRF, and the identity assertions of
//! gateway services and applets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use xsi_sim::xsp::AuthKind;
use xsigate_tests::isolation::{
    ACTIONS, SessionOf, dnd_document, every_session_on_its_own, path_user,
};
use xsigate_tests::{
    Gateway, Upstream, client, plugin_library, provider_for_simulator, set_cookie_pair,
};
const DIALER: &str = "https://dialer.acme.example";

fn user_id(i: usize) -> String {
    format!("user{i}@acme.example")
}

async fn simulator(users: usize) -> Arc<xsi_sim::Simulator> {
    let mut seed = String::new();
    for i in 0..users {
        let group = if i % 2 == 0 { "sales" } else { "support" };
        seed.push_str(&format!(
            "[[users]]\nuser_id = \"{}\"\npassword = \"pw-{i}\"\nservice_provider = \"acme\"\ngroup = \"{group}\"\n",
            user_id(i)
        ));
    }
    xsi_sim::Simulator::start(toml::from_str(&seed).unwrap())
        .await
        .unwrap()
}

/// xsigate with idp-broadsoft and xsi-session for provider acme, and `extra` provider keys.
async fn gateway(sim: &xsi_sim::Simulator, extra: &str) -> Gateway {
    let plugins = format!(
        "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n[[plugins]]\nname = \"session\"\npath = \"{}\"\n",
        plugin_library("xsigate-idp-broadsoft").display(),
        plugin_library("xsigate-xsi-session").display()
    );
    let provider = provider_for_simulator(
        "acme",
        &["acme.example"],
        sim,
        &format!("plugins = [\"broadsoft\", \"session\"]\ncors_origins = [\"{DIALER}\"]\n{extra}"),
    );
    let mut gateway = Gateway::start(&format!("{plugins}{provider}")).await;
    gateway.wait_for("/readyz", 200).await;
    gateway
}

/// A logged-in browser: its session cookie and CSRF token.
type Browser = SessionOf;

async fn log_in(gateway: &Gateway, user: &str, password: &str) -> Browser {
    let response = client()
        .post(gateway.url("/api/access/services/idp/broadsoft"))
        .json(&json!({ "user": user, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login of {user}");
    let cookie = set_cookie_pair(&response);
    let body: Value = response.json().await.unwrap();
    Browser {
        user_id: user.to_owned(),
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_session_reaches_its_own_resources_and_nobody_elses() {
    const USERS: usize = 10;
    const OPERATIONS: usize = 30;
    let sim = simulator(USERS).await;
    let gateway = Arc::new(gateway(&sim, "").await);
    let mut browsers = Vec::new();
    for i in 0..USERS {
        browsers.push(log_in(&gateway, &user_id(i), &format!("pw-{i}")).await);
    }
    let exercise = every_session_on_its_own(&gateway, browsers, OPERATIONS).await;
    let seed = exercise.seed;

    // The XSPs saw each user's own credentials on each user's own resources, and nothing else:
    // one request per login and one per own access; no refused attempt reached them.
    // xsigate's health probes (`GET …/versions`, no credentials) are not user traffic.
    let records = user_requests(&sim);
    for record in &records {
        let auth_user = record
            .auth_user
            .as_deref()
            .unwrap_or("-")
            .to_ascii_lowercase();
        assert_eq!(
            path_user(&record.path).as_deref(),
            Some(auth_user.as_str()),
            "{record:?}"
        );
        assert_ne!(record.auth, AuthKind::Rejected, "{record:?}");
    }
    assert_eq!(records.len(), USERS + exercise.own_accesses, "seed {seed}");
    exercise.check_final_states(&sim);
}

/// One client connection that carries one user's session cookie and then another's (a shared
/// browser, a dialer that switches users): each request is its own cookie's, whatever the
/// connection presented before. xsigate keeps the last cookie's digest with the connection;
/// had it answered the second user with the first's, B's cookie would read A's profile here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_switches_session_cookies_is_each_cookies_user() {
    let sim = simulator(2).await;
    let gateway = gateway(&sim, "").await;
    let (a, b) = (user_id(0), user_id(1));
    let alice = log_in(&gateway, &a, "pw-0").await;
    let bob = log_in(&gateway, &b, "pw-1").await;
    let address = gateway.url("").trim_start_matches("http://").to_owned();
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    let steps = [
        (&alice, &a, 200),
        (&bob, &a, 403),
        (&bob, &b, 200),
        (&alice, &b, 403),
        (&alice, &a, 200),
    ];
    for (browser, owner, expected) in steps {
        let request = format!(
            "GET {ACTIONS}/user/{owner}/profile HTTP/1.1\r\nHost: acme.example\r\nCookie: {}\r\n\r\n",
            browser.cookie
        );
        connection.write_all(request.as_bytes()).await.unwrap();
        let status = read_answer(&mut connection).await;
        assert_eq!(
            status, expected,
            "{} reading {owner}'s profile",
            browser.user_id
        );
    }
    for record in user_requests(&sim) {
        let auth_user = record.auth_user.as_deref().unwrap_or("-");
        assert_eq!(
            path_user(&record.path).as_deref(),
            Some(auth_user),
            "{record:?}"
        );
    }
}

/// Reads one answer with a `Content-Length` body from `connection`; its status.
async fn read_answer(connection: &mut tokio::net::TcpStream) -> u16 {
    let mut received = Vec::new();
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        read_more(connection, &mut received).await;
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while received.len() < head_end + length {
        read_more(connection, &mut received).await;
    }
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Appends what `connection` sends next to `received`, within 5 s.
async fn read_more(connection: &mut tokio::net::TcpStream, received: &mut Vec<u8>) {
    let mut buffer = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), connection.read(&mut buffer))
        .await
        .expect("the answer within 5 s")
        .unwrap();
    assert!(n > 0, "the connection closed mid-answer");
    received.extend_from_slice(&buffer[..n]);
}

/// What the XSPs saw of users, without xsigate's health probes (`GET …/versions`).
fn user_requests(sim: &xsi_sim::Simulator) -> Vec<xsi_sim::xsp::RequestRecord> {
    sim.platform()
        .requests()
        .into_iter()
        .filter(|r| !r.path.ends_with("/versions"))
        .collect()
}

/// Sends one raw HTTP/1.1 request and returns the status of the first response (0 when the
/// connection closed without one).
async fn raw_status(gateway: &Gateway, request: &[u8]) -> u16 {
    let address = gateway.url("").trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    let line = String::from_utf8_lossy(&received);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_and_headers_that_could_mislead_are_refused_before_the_xsp() {
    let sim = simulator(2).await;
    let gateway = gateway(&sim, "").await;
    let alice = log_in(&gateway, &user_id(0), "pw-0").await;
    let bob = log_in(&gateway, &user_id(1), "pw-1").await;
    let me = "user0@acme.example";
    let other = "user1@acme.example";
    let before = user_requests(&sim).len();

    let get = |target: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: gw\r\nCookie: {}\r\n\r\n",
            alice.cookie
        )
        .into_bytes()
    };
    let put = |target: &str, extra: &str, body: &str| {
        format!(
            "PUT {target} HTTP/1.1\r\nHost: gw\r\nCookie: {}\r\nX-CSRF-Token: {}\r\n{extra}\r\n{body}",
            alice.cookie, alice.csrf
        )
        .into_bytes()
    };
    let sim_xsp = sim.xsp_addrs()[0];
    let attempts: Vec<(&str, u16, Vec<u8>)> = vec![
        ("dot-dot segment", 400, get(&format!("{ACTIONS}/user/{me}/../{other}/profile"))),
        ("encoded dot-dot", 400, get(&format!("{ACTIONS}/user/{me}/%2e%2e/{other}/profile"))),
        ("upper-case encoded dot-dot", 400, get(&format!("{ACTIONS}/user/{me}/%2E%2E/{other}/profile"))),
        ("dot-dot with encoded slash", 400, get(&format!("{ACTIONS}/user/{me}/..%2f{other}/profile"))),
        ("encoded slashes in the user", 400, get(&format!("{ACTIONS}/user/{me}%2f..%2f{other}/profile"))),
        ("Tomcat path parameter", 400, get(&format!("{ACTIONS}/user/{me}/..;/{other}/profile"))),
        ("path parameter on the user", 400, get(&format!("{ACTIONS}/user/{me};x=1/../{other}/profile"))),
        ("empty segment", 400, get(&format!("{ACTIONS}/user//{other}/profile"))),
        ("encoded backslashes", 400, get(&format!("{ACTIONS}/user/{me}%5c..%5c{other}/profile"))),
        ("encoded at sign of another user", 403, get(&format!("{ACTIONS}/user/user1%40acme.example/profile"))),
        ("another user in upper case", 403, get(&format!("{ACTIONS}/user/USER1@ACME.EXAMPLE/profile"))),
        ("resource name in upper case", 403, get(&format!("{ACTIONS}/USER/{other}/profile"))),
        ("encoded NUL", 400, get(&format!("{ACTIONS}/user/{other}%00/profile"))),
        ("double-encoded dot-dot", 400, get(&format!("{ACTIONS}/user/%252e%252e/{other}/profile"))),
        ("dot segment", 400, get(&format!("{ACTIONS}/./user/{other}/profile"))),
        ("plain other user", 403, get(&format!("{ACTIONS}/user/{other}/profile"))),
        ("climbing out of the own tree", 400, get(&format!("{ACTIONS}/user/{me}/../../v2.0/user/{other}/profile"))),
        ("overlong UTF-8 dots", 400, get(&format!("{ACTIONS}/user/{me}/%c0%ae%c0%ae/{other}/profile"))),
        ("IIS-style escapes", 400, get(&format!("{ACTIONS}/user/{me}/%u002e%u002e/{other}/profile"))),
        ("service-provider subscription", 403, get("/com.broadsoft.xsi-events/v2.0/serviceprovider/acme")),
        ("system resource", 403, get(&format!("{ACTIONS}/system/profile"))),
        ("absolute-form target at the XSP", 400, get(&format!("http://{sim_xsp}{ACTIONS}/user/{other}/profile"))),
        ("subscription for another user", 403, put(&format!("/com.broadsoft.xsi-events/v2.0/user/{other}"), "Content-Length: 0\r\n", "")),
        ("write to another user", 403, put(&format!("{ACTIONS}/user/{other}/services/DoNotDisturb"), "Content-Length: 2\r\n", "<a")),
        ("write without the CSRF token", 403, format!("PUT {ACTIONS}/user/{me}/services/DoNotDisturb HTTP/1.1\r\nHost: gw\r\nCookie: {}\r\nContent-Length: 0\r\n\r\n", alice.cookie).into_bytes()),
        ("write with another session's CSRF token", 403, format!("PUT {ACTIONS}/user/{me}/services/DoNotDisturb HTTP/1.1\r\nHost: gw\r\nCookie: {}\r\nX-CSRF-Token: {}\r\nContent-Length: 0\r\n\r\n", alice.cookie, bob.csrf).into_bytes()),
        ("Content-Length and chunked together", 400, put(&format!("{ACTIONS}/user/{other}/services/DoNotDisturb"), "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
        ("two different Content-Lengths", 400, put(&format!("{ACTIONS}/user/{me}/services/DoNotDisturb"), "Content-Length: 0\r\nContent-Length: 40\r\n", "")),
        ("space in the path", 400, get(&format!("{ACTIONS}/user/{other} /profile"))),
        ("forged session token", 401, format!("GET {ACTIONS}/user/{me}/profile HTTP/1.1\r\nHost: gw\r\nCookie: xsigate_session={}\r\n\r\n", "A".repeat(43)).into_bytes()),
    ];
    assert!(attempts.len() >= 20);
    // 400: a path or a length read two ways; 403: another user, or outside the session's scope,
    // or a write without the session's CSRF token; 401: no live session.
    for (what, expected, request) in &attempts {
        let status = raw_status(&gateway, request).await;
        assert_eq!(status, *expected, "{what}");
    }
    let seen = user_requests(&sim);
    assert_eq!(
        seen.len(),
        before,
        "refused attempts reached an XSP: {:?}",
        &seen[before..]
    );

    // Credentials and XSP cookies a client sends are never what reaches the XSP.
    let foreign_credentials = alice
        .get(&gateway, &format!("{ACTIONS}/user/{me}/profile"))
        .header("authorization", xsigate_tests::basic(other, "pw-1"))
        .header("cookie", "JSESSIONID=FOREIGN")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign_credentials.status(), 200);
    let last = user_requests(&sim).pop().unwrap();
    assert_eq!(last.auth_user.as_deref(), Some(me));
    assert!(foreign_credentials.headers().get("set-cookie").is_none());
    assert!(
        foreign_credentials
            .headers()
            .get("www-authenticate")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_xsp_session_is_renewed_and_a_failed_xsp_hands_the_session_over() {
    let sim = simulator(1).await;
    let gateway = gateway(&sim, "").await;
    let alice = log_in(&gateway, &user_id(0), "pw-0").await;
    let control = format!("http://{}", sim.control_addr());
    let profile = format!("{ACTIONS}/user/{}/profile", user_id(0));
    let fetch = || async {
        let response = alice.get(&gateway, &profile).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("set-cookie").is_none());
        let pin = response.headers()["x-xsigate-xsp"]
            .to_str()
            .unwrap()
            .to_owned();
        let record = user_requests(&sim).pop().unwrap();
        (pin, record.xsp, record.auth)
    };
    let xsp_index = |pin: &str| pin.trim_start_matches("xsp").parse::<usize>().unwrap() - 1;

    // The login's XSP session serves the first request: no password check.
    let (pin, xsp, auth) = fetch().await;
    assert_eq!((xsp, auth), (xsp_index(&pin), AuthKind::Cookie));

    // The XSP forgets it (its session timeout): BroadWorks re-authenticates from the Basic
    // credentials, and the new cookie is kept for the next request.
    client()
        .delete(format!("{control}/xsp/{xsp}/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(fetch().await.2, AuthKind::Basic);
    assert_eq!(fetch().await.2, AuthKind::Cookie);

    // A strict XSP challenges the stale cookie instead: xsigate retries once without it.
    client()
        .put(format!("{control}/xsp/{xsp}/fault"))
        .json(&json!({ "stale_session_status": 401 }))
        .send()
        .await
        .unwrap();
    client()
        .delete(format!("{control}/xsp/{xsp}/sessions"))
        .send()
        .await
        .unwrap();
    let before = user_requests(&sim).len();
    assert_eq!(fetch().await.2, AuthKind::Basic);
    let retried: Vec<AuthKind> = user_requests(&sim)[before..]
        .iter()
        .map(|r| r.auth)
        .collect();
    assert_eq!(retried, [AuthKind::Rejected, AuthKind::Basic]);
    assert_eq!(fetch().await.2, AuthKind::Cookie);
    let metric = "xsigate_plugin_session_reauthentications_total";
    assert_eq!(gateway.metric(metric).await, Some(1.0));

    // The XSP holding the session dies: the session continues on the other one and stays there.
    assert!(sim.stop_xsp(xsp));
    let (moved, other, auth) = fetch().await;
    assert_ne!(other, xsp);
    assert_eq!(xsp_index(&moved), other);
    assert_eq!(auth, AuthKind::Basic);
    let (again, on, auth) = fetch().await;
    assert_eq!((again, on, auth), (moved, other, AuthKind::Cookie));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_of_listed_origins_get_cors_and_writes_need_the_csrf_token() {
    let sim = simulator(1).await;
    let gateway = gateway(&sim, "").await;
    let alice = log_in(&gateway, &user_id(0), "pw-0").await;
    let dnd = format!("{ACTIONS}/user/{}/services/DoNotDisturb", user_id(0));
    let preflight = |origin: &str| {
        client()
            .request(reqwest::Method::OPTIONS, gateway.url(&dnd))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header(
                "access-control-request-headers",
                "content-type, x-csrf-token",
            )
            .send()
    };
    let before = user_requests(&sim).len();
    let allowed = preflight(DIALER).await.unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], DIALER);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PUT")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-csrf-token")
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_eq!(
        user_requests(&sim).len(),
        before,
        "preflights stay at xsigate"
    );

    // The request itself: CORS headers for the listed origin only.
    for (origin, listed) in [
        (DIALER, true),
        ("https://evil.example", false),
        ("https://dialer.acme.example:8443", false),
    ] {
        let response = alice
            .get(&gateway, &dnd)
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["vary"], "Origin");
        assert_eq!(
            response
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            listed.then_some(origin),
            "{origin}"
        );
    }
    // The login API answers the dialer's origin too.
    let session = alice
        .get(&gateway, "/api/access/services/session")
        .header("origin", DIALER)
        .send()
        .await
        .unwrap();
    assert_eq!(session.headers()["access-control-allow-origin"], DIALER);
    let body: Value = session.json().await.unwrap();
    assert_eq!(body["user_id"], user_id(0));

    // Writes need the session's CSRF token; reads do not.
    let write = |csrf: Option<&str>| {
        let mut request = client()
            .put(gateway.url(&dnd))
            .header("cookie", &alice.cookie)
            .body(dnd_document(true));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    for csrf in [
        None,
        Some("wrong"),
        Some(alice.cookie.trim_start_matches("xsigate_session=")),
    ] {
        let response = write(csrf).await.unwrap();
        assert_eq!(response.status(), 403, "{csrf:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "csrf_token_invalid");
    }
    assert_eq!(write(Some(&alice.csrf)).await.unwrap().status(), 200);
    assert!(
        sim.platform()
            .directory()
            .user(&user_id(0))
            .unwrap()
            .do_not_disturb
            .active
    );

    // A logged-out session reaches nothing.
    let logout = client()
        .post(gateway.url("/api/access/services/logout"))
        .header("cookie", &alice.cookie)
        .header("x-csrf-token", &alice.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    let after = alice.get(&gateway, &dnd).send().await.unwrap();
    assert_eq!(after.status(), 401);
}

/// The comma-separated header names of a CORS header, lower-cased.
fn header_list(response: &reqwest::Response, name: &str) -> Vec<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// A dialer on another origin pins XSI-Events channel commands to the XSP holding the channel
/// and reads which XSP answered: the preflight must allow the pin header and the response must
/// expose it, as a browser enforces both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_dialer_sends_the_xsp_pin_and_reads_which_xsp_answered() {
    let sim = simulator(1).await;
    let gateway = gateway(&sim, "").await;
    let alice = log_in(&gateway, &user_id(0), "pw-0").await;
    let dnd = format!("{ACTIONS}/user/{}/services/DoNotDisturb", user_id(0));
    let requested = ["x-xsigate-xsp", "x-csrf-token", "content-type"];

    let preflight = client()
        .request(reqwest::Method::OPTIONS, gateway.url(&dnd))
        .header("origin", DIALER)
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", requested.join(", "))
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let allowed = header_list(&preflight, "access-control-allow-headers");
    for name in requested {
        assert!(
            allowed.iter().any(|a| a == name),
            "{name} missing from {allowed:?}"
        );
    }

    for pin in ["xsp2", "xsp1"] {
        let response = alice
            .get(&gateway, &dnd)
            .header("origin", DIALER)
            .header("x-xsigate-xsp", pin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-xsigate-xsp"], pin);
        assert_eq!(response.headers()["access-control-allow-origin"], DIALER);
        let exposed = header_list(&response, "access-control-expose-headers");
        for name in ["x-xsigate-xsp", "x-request-id"] {
            assert!(
                exposed.iter().any(|e| e == name),
                "{name} missing from {exposed:?}"
            );
        }
        let served_by = user_requests(&sim).last().unwrap().xsp;
        assert_eq!(
            format!("xsp{}", served_by + 1),
            pin,
            "the pin reached its XSP"
        );
    }
}

/// Verifies an assertion with the published JWK Set, as a gateway service would, with an
/// implementation independent of xsigate's (jsonwebtoken's EdDSA).
fn verify(token: &str, jwks: &Value, audience: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let header = jsonwebtoken::decode_header(token)?;
    let jwk = set
        .find(header.kid.as_deref().unwrap_or(""))
        .expect("the key named by kid");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["xsigate"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).map(|data| data.claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_services_and_applets_get_assertions_that_verify_with_the_published_key() {
    let sim = simulator(1).await;
    let service = Upstream::start("history").await;
    let applet = Upstream::start("crm").await;
    let extra = format!(
        "gateway = {{ history = \"{}/v1\" }}\n[providers.acme.applets]\ncrm = {{ url = \"{}/crm\" }}\nwiki = {{ url = \"https://wiki.acme.example/start\", mode = \"redirect\" }}\n",
        service.url(),
        applet.url()
    );
    let gateway = gateway(&sim, &extra).await;
    let alice = log_in(&gateway, &user_id(0), "pw-0").await;
    let jwks: Value = client()
        .get(gateway.url("/api/access/services/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session: Value = alice
        .get(&gateway, "/api/access/services/session")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let unique_id = session["unique_id"].as_str().unwrap();

    let response = client()
        .post(gateway.url("/api/dialer/services/gateway/history/calls?limit=5"))
        .header("cookie", &alice.cookie)
        .header("x-csrf-token", &alice.csrf)
        .header("authorization", xsigate_tests::basic(&user_id(0), "pw-0"))
        .header("x-xsigate-assertion", "forged")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = service.requests().pop().unwrap();
    assert_eq!(seen.path_and_query, "/v1/calls?limit=5");
    for private in ["authorization", "cookie", "x-csrf-token"] {
        assert!(
            seen.headers.get(private).is_none(),
            "{private} reached the service"
        );
    }
    let token = seen.headers["x-xsigate-assertion"].to_str().unwrap();
    let claims = verify(token, &jwks, "history").unwrap();
    assert_eq!(claims["sub"], unique_id);
    assert_eq!(claims["user_id"], user_id(0));
    assert_eq!(claims["provider"], "acme");
    assert_eq!(claims["level"], "user");
    assert!(verify(token, &jwks, "crm").is_err(), "another audience");
    // Any change to the claims breaks the signature.
    let (head, rest) = token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut forged: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    forged["user_id"] = json!("user9@acme.example");
    let forged_payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        forged.to_string(),
    );
    assert!(
        verify(
            &format!("{head}.{forged_payload}.{signature}"),
            &jwks,
            "history"
        )
        .is_err()
    );

    // A proxied applet is a third party: it learns the uniqueId only.
    let response = alice
        .get(&gateway, "/apps/crm/index.html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = applet.requests().pop().unwrap();
    assert_eq!(seen.path_and_query, "/crm/index.html");
    let claims = verify(
        seen.headers["x-xsigate-assertion"].to_str().unwrap(),
        &jwks,
        "crm",
    )
    .unwrap();
    assert_eq!(claims["sub"], unique_id);
    assert!(claims.get("user_id").is_none());

    // A redirect-mode applet gets a short-lived token in its URL.
    let redirect = client_no_redirect()
        .get(gateway.url("/api/access/services/applets/wiki"))
        .header("cookie", &alice.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 302);
    let location = url::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.host_str(), Some("wiki.acme.example"));
    let pairs: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(location.path(), "/start");
    let claims = verify(&pairs["xsigate_token"], &jwks, "wiki").unwrap();
    assert_eq!(claims["sub"], unique_id);
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 60);
    for (path, status) in [
        ("/api/access/services/applets/crm", 404),
        ("/api/access/services/applets/none", 404),
        ("/apps/wiki/", 404),
    ] {
        let response = client_no_redirect()
            .get(gateway.url(path))
            .header("cookie", &alice.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
}

fn client_no_redirect() -> reqwest::Client {
    xsigate_tests::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Users' authentications the XSPs refused (health probes, which carry none, left out).
fn rejected(sim: &xsi_sim::Simulator) -> usize {
    user_requests(sim)
        .iter()
        .filter(|r| r.status == 401)
        .count()
}

/// A simulator with one user, a gateway, and two sessions of that user that both work.
async fn two_sessions_of_one_user() -> (Arc<xsi_sim::Simulator>, Gateway, Browser, Browser) {
    let sim = simulator(1).await;
    let gateway = gateway(&sim, "").await;
    let first = log_in(&gateway, &user_id(0), "pw-0").await;
    let second = log_in(&gateway, &user_id(0), "pw-0").await;
    let profile = format!("{ACTIONS}/user/{}/profile", user_id(0));
    for browser in [&first, &second] {
        let response = browser.get(&gateway, &profile).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    (sim, gateway, first, second)
}

/// A password changed through one session ends every session holding the old one before the
/// client hears of it: no later request replays the old password, which on a real XSP spends
/// the user's BroadWorks lockout budget. The new password logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_through_a_session_ends_the_sessions_holding_the_old_one() {
    let (sim, gateway, first, second) = two_sessions_of_one_user().await;
    let profile = format!("{ACTIONS}/user/{}/profile", user_id(0));
    let change = first
        .put(
            &gateway,
            &format!("{ACTIONS}/user/{}/profile/Password/Portal", user_id(0)),
            "<PortalPassword xmlns=\"http://schema.broadsoft.com/xsi\"><oldPassword>pw-0</oldPassword><newPassword>pw-new</newPassword></PortalPassword>".to_owned(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 200);
    let refused_before = rejected(&sim);
    for browser in [&first, &second] {
        let response = browser.get(&gateway, &profile).send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_logged_in");
    }
    assert_eq!(
        rejected(&sim),
        refused_before,
        "the old password never reached the XSP again"
    );
    let renewed = log_in(&gateway, &user_id(0), "pw-new").await;
    assert_eq!(
        renewed
            .get(&gateway, &profile)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The password changed elsewhere (an administrator, the BroadWorks portal) and the XSP forgot
/// its sessions: the first request that the XSP refuses ends every session holding the old
/// password, so no other request, of this session or another, replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_the_xsp_refuses_is_never_replayed() {
    let (sim, gateway, first, second) = two_sessions_of_one_user().await;
    let profile = format!("{ACTIONS}/user/{}/profile", user_id(0));
    xsigate_tests::change_user(&sim, &user_id(0), |user| {
        user["password"] = "changed-elsewhere".into();
    })
    .await;
    for xsp in 0..2 {
        client()
            .delete(format!("http://{}/xsp/{xsp}/sessions", sim.control_addr()))
            .send()
            .await
            .unwrap();
    }
    let refused = first.get(&gateway, &profile).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let refused_once = rejected(&sim);
    assert!(refused_once > 0);
    for browser in [&first, &second, &first] {
        let response = browser.get(&gateway, &profile).send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_logged_in");
    }
    assert_eq!(
        rejected(&sim),
        refused_once,
        "the refused password was replayed"
    );
}

fn channel_document(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Channel xmlns=\"http://schema.broadsoft.com/xsi\">{inner}<priority>1</priority><weight>100</weight><expires>3600</expires></Channel>"
    )
}

const CHANNEL_OPEN: &str = "/com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel";

/// Opens a channel through `browser`'s session; the status, and the first bytes of the stream
/// (or of the refusal).
async fn open_channel(gateway: &Gateway, browser: &Browser, body: String) -> (u16, String) {
    let mut response = client()
        .post(gateway.url(CHANNEL_OPEN))
        .header("cookie", &browser.cookie)
        .header("x-csrf-token", &browser.csrf)
        .header("content-type", "application/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let first = tokio::time::timeout(xsigate_tests::WAIT, response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&first).into_owned())
}

/// A channel set is its user's: another user's session naming it is refused by xsigate itself
/// (`channel_set_not_owned`), so nothing of it reaches the XSP; so is a body naming two sets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cannot_open_a_channel_in_another_users_channel_set() {
    let sim = simulator(2).await;
    let gateway = gateway(&sim, "").await;
    let owner = log_in(&gateway, &user_id(0), "pw-0").await;
    let intruder = log_in(&gateway, &user_id(1), "pw-1").await;

    let (status, opened) = open_channel(
        &gateway,
        &owner,
        channel_document("<channelSetId>owners-set</channelSetId>"),
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    assert!(opened.contains("<channelId>"), "{opened}");

    let (status, refused) = open_channel(
        &gateway,
        &intruder,
        channel_document("<channelSetId>owners-set</channelSetId>"),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert!(refused.contains("channel_set_not_owned"), "{refused}");
    let (status, refused) = open_channel(
        &gateway,
        &intruder,
        channel_document("<channelSetId>own</channelSetId><channelSetId>owners-set</channelSetId>"),
    )
    .await;
    assert_eq!(status, 400, "{refused}");

    let in_set: Vec<_> = sim
        .platform()
        .channels()
        .views()
        .into_iter()
        .filter(|c| c.channel_set_id == "owners-set")
        .map(|c| c.owner)
        .collect();
    assert_eq!(
        in_set,
        [user_id(0)],
        "only the owner's channel reached the XSP"
    );

    // The intruder's own set is theirs; the owner's next channel in its set still opens.
    let (status, _) = open_channel(
        &gateway,
        &intruder,
        channel_document("<channelSetId>intruders-set</channelSetId>"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = open_channel(
        &gateway,
        &owner,
        channel_document("<channelSetId>owners-set</channelSetId>"),
    )
    .await;
    assert_eq!(status, 200);
}

/// A browser that leaves its XSI-Events stream ends that request the ordinary way: one access
/// line at INFO with the stream's status and duration, and no warning (the transport's words are
/// at debug).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_its_event_stream_is_an_ordinary_access_line_not_a_warning() {
    let sim = simulator(1).await;
    let gateway = gateway(&sim, "").await;
    let browser = log_in(&gateway, &user_id(0), "pw-0").await;
    let (status, opened) = open_channel(
        &gateway,
        &browser,
        channel_document("<channelSetId>leaving</channelSetId>"),
    )
    .await;
    assert_eq!(status, 200, "{opened}");
    // `open_channel` dropped the response: the client is gone.
    let logs = gateway
        .wait_log(|logs| {
            logs.lines()
                .any(|l| l.contains("xsigate::access") && l.contains(CHANNEL_OPEN))
        })
        .await;
    let line = logs
        .lines()
        .find(|l| l.contains("xsigate::access") && l.contains(CHANNEL_OPEN))
        .unwrap();
    assert!(
        line.contains(" INFO ") && line.contains("status=200"),
        "{line}"
    );
    assert!(!logs.contains(" WARN "), "{logs}");
}
