//! What must never cross the boundary: upstream addresses, upstream software, credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use xsigate_tests::{
    Gateway, Upstream, basic, client, plugin_library, provider, provider_for_simulator,
    set_cookie_pair,
};

const PROFILE: &str = "/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/profile";

/// Everything a client can see of a response, as text.
async fn visible(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let mut text = String::new();
    for (name, value) in response.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            value.to_str().unwrap_or("<binary>")
        ));
    }
    text.push('\n');
    text.push_str(&response.text().await.unwrap_or_default());
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_reveals_an_upstream() {
    let mut xsp = Upstream::start("xsp").await;
    let config = format!(
        "[server.timeouts]\nupstream_read_seconds = 1\n{}",
        provider("acme", &["acme.example"], &[&xsp], "")
    );
    let gateway = Gateway::start(&config).await;
    let http = client();
    let auth = basic("alice@acme.example", "pw");
    let port = xsp.addr.port().to_string();

    let mut seen = Vec::new();
    for query in ["", "?redirect=1", "?status=500", "?delay_ms=3000"] {
        let response = http
            .get(gateway.url(&format!("{PROFILE}{query}")))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        seen.push(visible(response).await);
    }
    xsp.stop();
    let response = http
        .get(gateway.url(PROFILE))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    seen.push(visible(response).await);

    let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 302, 500, 504, 502]);
    for (status, text) in &seen {
        assert!(
            !text.contains(&port),
            "{status} reveals the upstream port:\n{text}"
        );
        for revealing in [
            "BW HTTP Server",
            "Servlet",
            "Domain=",
            "x-powered-by",
            "server:",
        ] {
            assert!(
                !text.contains(revealing),
                "{status} reveals `{revealing}`:\n{text}"
            );
        }
    }
    for (status, text) in &seen[3..] {
        assert!(
            text.contains("connection: close"),
            "{status}: xsigate closes after a failure and says so:\n{text}"
        );
    }
    let redirect = &seen[1].1;
    assert!(
        redirect.contains("location: /com.broadsoft.xsi-actions/v2.0/user/x/profile"),
        "{redirect}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_credentials_and_no_upstream_address() {
    let mut xsp = Upstream::start("xsp").await;
    let password_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password_file.path(), "master-secret-9417\n").unwrap();
    let extra = format!(
        "master = {{ user = \"admin@acme.example\", password_file = \"{}\" }}",
        password_file.path().display()
    );
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], &extra)).await;
    let http = client();
    let auth = basic("alice@acme.example", "user-secret-5521");
    for path in [
        PROFILE.to_owned(),
        format!("{PROFILE}?status=401"),
        "/nowhere".to_owned(),
    ] {
        http.get(gateway.url(&path))
            .header("authorization", &auth)
            .header("cookie", "JSESSIONID=cookie-secret-3388")
            .send()
            .await
            .unwrap();
    }
    xsp.stop();
    http.get(gateway.url(PROFILE))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    let metrics = client()
        .get(gateway.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logs = gateway
        .wait_log(|logs| logs.matches("xsigate::access").count() >= 4)
        .await;
    for secret in [
        "user-secret-5521",
        "master-secret-9417",
        "cookie-secret-3388",
        &auth[6..],
    ] {
        assert!(!logs.contains(secret), "the log holds a secret:\n{logs}");
        assert!(!metrics.contains(secret), "the metrics hold a secret");
    }
    assert!(
        !logs.contains(&xsp.addr.port().to_string()),
        "the log names the upstream address:\n{logs}"
    );
    assert!(
        logs.contains("upstream=\"xsp1\"") || logs.contains("upstream=xsp1"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_not_5xx() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let garbage: [&[u8]; 4] = [
        b"GARBAGE\r\n\r\n",
        b"GET /com.broadsoft.xsi-actions/v2.0 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /com.broadsoft.xsi-actions/v2.0/user/%ZZ/profile HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ];
    for request in garbage {
        let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(xsigate_tests::WAIT, stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        let status: u16 = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(
            (400..500).contains(&status) || answer.is_empty(),
            "{:?} got {answer:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(
        xsp.request_count(),
        0,
        "no malformed request reached the XSP"
    );
}

/// HTTPS upstreams are verified: an untrusted certificate or a name mismatch is a clean 502, and
/// the provider's `ca_file` is what makes a private CA trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_certificates_are_verified() {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let tls = xsi_sim::http::tls_config(
        certified.cert.pem().as_bytes(),
        certified.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let xsp = Upstream::start_tls("tls-xsp", tls).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();

    let cases = [
        ("system roots only", String::new(), 502),
        (
            "another CA",
            format!("ca_file = \"{}\"", other_ca.display()),
            502,
        ),
        (
            "the issuing CA",
            format!("ca_file = \"{}\"", ca.display()),
            200,
        ),
    ];
    for (name, extra, status) in cases {
        let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], &extra)).await;
        let response = client()
            .get(gateway.url(PROFILE))
            .header("authorization", basic("alice@acme.example", "pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{name}");
        let (_, text) = visible(response).await;
        assert!(
            !text.contains(&xsp.addr.port().to_string()),
            "{name}: {text}"
        );
    }
    assert_eq!(
        xsp.request_count(),
        1,
        "only the verified connection carried a request"
    );
}

/// Two providers on one simulator, each with its own dialer origin, with idp-broadsoft.
async fn two_providers(sim: &xsi_sim::Simulator) -> Gateway {
    let plugins = format!(
        "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n",
        plugin_library("xsigate-idp-broadsoft").display()
    );
    let acme = provider_for_simulator(
        "acme",
        &["acme.example"],
        sim,
        &format!("plugins = [\"broadsoft\"]\ncors_origins = [\"{ACME_DIALER}\"]"),
    );
    let beta = provider_for_simulator(
        "beta",
        &["beta.example"],
        sim,
        &format!("plugins = [\"broadsoft\"]\ncors_origins = [\"{BETA_DIALER}\"]"),
    );
    let mut gateway = Gateway::start(&format!("{plugins}{acme}{beta}")).await;
    gateway.wait_for("/readyz", 200).await;
    gateway
}

const ACME_DIALER: &str = "https://dialer.acme.example";
const BETA_DIALER: &str = "https://dialer.beta.example";

async fn simulator_with_alice() -> std::sync::Arc<xsi_sim::Simulator> {
    let seed = toml::from_str(
        "[[users]]\nuser_id = \"alice@acme.example\"\npassword = \"alice-pw\"\nservice_provider = \"acme\"\ngroup = \"sales\"\n",
    )
    .unwrap();
    xsi_sim::Simulator::start(seed).await.unwrap()
}

fn allowed_origin(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Another provider's dialer page may not read a user's login answer (its CSRF token, uniqueId
/// and reports) or session: the login API answers CORS for the origins of the provider the
/// answer is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_providers_dialer_cannot_read_a_users_login_or_session() {
    let sim = simulator_with_alice().await;
    let gateway = two_providers(&sim).await;
    let login = |origin: &'static str| {
        client()
            .post(gateway.url("/api/access/services/idp/broadsoft"))
            .header("origin", origin)
            .json(&json!({ "user": "alice@acme.example", "password": "alice-pw" }))
            .send()
    };
    let from_beta = login(BETA_DIALER).await.unwrap();
    assert_eq!(from_beta.status(), 200);
    assert_eq!(
        allowed_origin(&from_beta),
        None,
        "beta's page reads acme's login"
    );
    let from_acme = login(ACME_DIALER).await.unwrap();
    assert_eq!(allowed_origin(&from_acme).as_deref(), Some(ACME_DIALER));
    let cookie = set_cookie_pair(&from_acme);

    for (origin, readable) in [(BETA_DIALER, false), (ACME_DIALER, true)] {
        let session = client()
            .get(gateway.url("/api/access/services/session"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(session.status(), 200);
        assert_eq!(
            allowed_origin(&session).is_some(),
            readable,
            "session read from {origin}"
        );
    }
    // Answers about no user stay readable from every listed origin.
    let ztp = client()
        .post(gateway.url("/api/access/services/ztp"))
        .header("origin", BETA_DIALER)
        .json(&json!({ "query": "alice@acme.example" }))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed_origin(&ztp).as_deref(), Some(BETA_DIALER));
}

/// A cross-site form can post `text/plain` without a preflight: a login API body must be JSON
/// (login CSRF).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_api_takes_json_bodies_only() {
    let sim = simulator_with_alice().await;
    let gateway = two_providers(&sim).await;
    let body = json!({ "user": "alice@acme.example", "password": "alice-pw" }).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut request = client()
            .post(gateway.url("/api/access/services/idp/broadsoft"))
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
        assert!(
            response.headers().get("set-cookie").is_none(),
            "{content_type:?} logged in"
        );
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unsupported_media_type");
    }
    let json = client()
        .post(gateway.url("/api/access/services/idp/broadsoft"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 200);
}

/// The XSP reads the `user` segment in any case and percent-decoded, so the check that the
/// credentials' provider is the path's must read it so too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_user_in_another_spelling_is_still_matched_against_the_credentials() {
    let acme = Upstream::start("acme-xsp").await;
    let beta = Upstream::start("beta-xsp").await;
    let config = provider("acme", &["acme.example"], &[&acme], "")
        + &provider("beta", &["beta.example"], &[&beta], "");
    let gateway = Gateway::start(&config).await;
    for spelling in ["USER", "User", "%75ser", "%55SER"] {
        let response = client()
            .get(gateway.url(&format!(
                "/com.broadsoft.xsi-actions/v2.0/{spelling}/carol@beta.example/profile"
            )))
            .header("authorization", basic("alice@acme.example", "pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{spelling}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "conflicting_provider", "{spelling}");
    }
    assert_eq!(acme.request_count() + beta.request_count(), 0);
}

/// The value of the cookie `name` among a response's `Set-Cookie` headers.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// Anyone could lock any user out by failing their password: now strangers' failures lock the
/// user id for unknown clients only, and a browser that logged in as the user before (its
/// device cookie) still logs in, counted on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_failures_never_lock_a_user_out_of_a_browser_they_used_before() {
    let sim = simulator_with_alice().await;
    let gateway = two_providers(&sim).await;
    let login = |password: &'static str, cookie: Option<String>| {
        let mut request = client()
            .post(gateway.url("/api/access/services/idp/broadsoft"))
            .json(&json!({ "user": "alice@acme.example", "password": password }));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let first = login("alice-pw", None).await.unwrap();
    assert_eq!(first.status(), 200);
    let device = set_cookie(&first, "xsigate_device").expect("a device cookie");
    let attributes = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("xsigate_device="))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api/access/services/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }

    // A stranger fails until the user id is locked for unknown clients.
    let mut locked = false;
    for _ in 0..8 {
        let status = login("guess", None).await.unwrap().status();
        locked |= status == 429;
    }
    assert!(locked, "the stranger was never stopped");
    assert_eq!(login("alice-pw", None).await.unwrap().status(), 429);
    let forged = Some("xsigate_device=AAAA".to_owned());
    assert_eq!(login("alice-pw", forged).await.unwrap().status(), 429);

    // Alice's browser logs in, and gets no second device cookie.
    let trusted = login("alice-pw", Some(device.clone())).await.unwrap();
    assert_eq!(trusted.status(), 200);
    assert_eq!(set_cookie(&trusted, "xsigate_device"), None);
    // A device that fails is locked on its own.
    let mut device_locked = false;
    for _ in 0..8 {
        device_locked |= login("wrong", Some(device.clone())).await.unwrap().status() == 429;
    }
    assert!(device_locked);
}

/// Users' authentications the simulator's XSPs refused.
fn refused_at_the_xsp(sim: &xsi_sim::Simulator) -> usize {
    sim.platform()
        .requests()
        .iter()
        .filter(|r| r.status == 401 && r.auth_user.is_some())
        .count()
}

/// A plain XSI client's credentials are a login like any other: guesses through the proxy are
/// counted and stopped before the XSP, and a user id locked at the login API is not probed
/// through the proxy either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_mode_is_no_password_oracle_past_the_lockout() {
    let sim = simulator_with_alice().await;
    let gateway = two_providers(&sim).await;
    let profile = |password: &str| {
        client()
            .get(gateway.url(PROFILE))
            .header("authorization", basic("alice@acme.example", password))
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(profile("guess").await.unwrap().status().as_u16());
        // Failures are counted off the request path; give each its moment.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let first_lock = statuses
        .iter()
        .position(|s| *s == 429)
        .expect("never locked");
    assert!(
        statuses[..first_lock].iter().all(|s| *s == 401),
        "{statuses:?}"
    );
    assert!(
        statuses[first_lock..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    assert!(first_lock <= 5, "{statuses:?}");
    let refused = refused_at_the_xsp(&sim);
    assert_eq!(refused, first_lock, "a locked guess reached the XSP");
    let locked = profile("alice-pw").await.unwrap();
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().get("retry-after").is_some());
    assert_eq!(refused_at_the_xsp(&sim), refused);
}

/// The finding as reported: while a user id is locked at the login API, the proxy does not
/// take guesses for it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_locked_at_the_login_api_is_not_probed_through_the_proxy() {
    let sim = simulator_with_alice().await;
    let gateway = two_providers(&sim).await;
    let mut locked = false;
    for _ in 0..8 {
        let response = client()
            .post(gateway.url("/api/access/services/idp/broadsoft"))
            .json(&json!({ "user": "alice@acme.example", "password": "guess" }))
            .send()
            .await
            .unwrap();
        locked |= response.status() == 429;
    }
    assert!(locked);
    let before = sim.platform().requests().len();
    let probe = client()
        .get(gateway.url(PROFILE))
        .header("authorization", basic("alice@acme.example", "alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 429);
    let reached: Vec<_> = sim.platform().requests()[before..]
        .iter()
        .filter(|r| r.auth_user.is_some())
        .cloned()
        .collect();
    assert!(reached.is_empty(), "{reached:?}");
}

/// An error page of a server in front of the XSP (HTML naming its host and software) never
/// reaches the client: xsigate's envelope takes its place, with the same status. XSI error
/// documents and successful answers pass as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xsp_error_page_is_replaced_by_the_error_envelope() {
    let xsp = Upstream::start("xsp-behind-apache").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let get = |query: &str| {
        client()
            .get(gateway.url(&format!("{PROFILE}?{query}")))
            .header("authorization", basic("alice@acme.example", "pw"))
            .send()
    };
    for (query, status) in [("status=500&html=1", 500), ("status=502&html=1", 502)] {
        let response = get(query).await.unwrap();
        assert_eq!(response.status(), status, "{query}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let (_, text) = visible(response).await;
        for secret in ["127.0.0.1", "xsp-behind-apache", "Tomcat", "<html"] {
            assert!(!text.contains(secret), "{query}: {text}");
        }
        let body: serde_json::Value =
            serde_json::from_str(text.split("\n\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "upstream_error", "{query}");
        assert_eq!(body["error"]["status"], status, "{query}");
    }
    // JSON errors (the double's), empty ones and successful answers are the XSP's own.
    let empty = get("status=404&empty=1").await.unwrap();
    assert_eq!(empty.status(), 404);
    assert_eq!(empty.text().await.unwrap(), "");
    let passed = get("status=404").await.unwrap();
    assert_eq!(passed.status(), 404);
    let body: serde_json::Value = passed.json().await.unwrap();
    assert_eq!(body["upstream"], "xsp-behind-apache");
    let page = get("html=1").await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
}
