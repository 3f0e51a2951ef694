//! The real xsigate in front of real HTTP upstreams: routing, pinning, forwarding headers, TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use xsigate_tests::{
    Gateway, Upstream, basic, client, client_builder, provider, provider_for_simulator,
};

const PROFILE: &str = "/com.broadsoft.xsi-actions/v2.0/user";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_each_provider_by_user_domain() {
    let acme = Upstream::start("acme-xsp").await;
    let beta = Upstream::start("beta-xsp").await;
    let config = provider("acme", &["acme.example", "acme-alt.example"], &[&acme], "")
        + &provider("beta", &["beta.example"], &[&beta], "");
    let gateway = Gateway::start(&config).await;
    let http = client();

    // By credentials, by the path's user, and by a second domain of the same provider.
    let cases = [
        (Some("alice@acme.example"), "alice@acme.example", "acme-xsp"),
        (None, "bob@acme-alt.example", "acme-xsp"),
        (Some("carol@beta.example"), "carol@beta.example", "beta-xsp"),
        (None, "dave%40beta.example", "beta-xsp"),
    ];
    for (credentials, user, expected) in cases {
        let mut request = http.get(gateway.url(&format!("{PROFILE}/{user}/profile")));
        if let Some(user) = credentials {
            request = request.header("authorization", basic(user, "pw"));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{user}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["upstream"], expected, "{user}");
    }
    assert_eq!(acme.request_count(), 2);
    assert_eq!(beta.request_count(), 2);

    // The XSP checks the credentials, so they reach it untouched.
    let seen = acme.requests();
    assert_eq!(
        seen[0].headers["authorization"],
        basic("alice@acme.example", "pw")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_what_it_cannot_route_with_json_errors() {
    let acme = Upstream::start("acme-xsp").await;
    let beta = Upstream::start("beta-xsp").await;
    let config = provider("acme", &["acme.example"], &[&acme], "")
        + &provider("beta", &["beta.example"], &[&beta], "");
    let gateway = Gateway::start(&config).await;
    let http = client();

    let unknown = http
        .get(gateway.url(&format!("{PROFILE}/eve@nowhere.example/profile")))
        .header("authorization", basic("eve@nowhere.example", "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.headers()["content-type"], "application/json");
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_provider");
    assert_eq!(body["error"]["request_id"].as_str().unwrap().len(), 32);

    let conflict = http
        .get(gateway.url(&format!("{PROFILE}/carol@beta.example/profile")))
        .header("authorization", basic("alice@acme.example", "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), 400);

    let anonymous = http
        .get(gateway.url("/com.broadsoft.xsi-actions/v2.0/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"XtendedServicesInterface\""
    );

    let elsewhere = http.get(gateway.url("/admin")).send().await.unwrap();
    assert_eq!(elsewhere.status(), 404);
    let body: serde_json::Value = elsewhere.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    assert_eq!(
        acme.request_count() + beta.request_count(),
        0,
        "nothing unroutable reached an XSP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_services_and_applets_need_a_login_session() {
    let xsp = Upstream::start("xsp").await;
    let history = Upstream::start("history").await;
    let extra = format!(
        "gateway = {{ history = \"{url}/v1/history\" }}\napplets = {{ crm = {{ url = \"{url}/crm\" }} }}",
        url = history.url()
    );
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], &extra)).await;
    let http = client();
    // BroadWorks credentials prove nothing to xsigate and must never reach a gateway service.
    for path in [
        "/api/dialer/services/gateway/history/calls/recent?limit=5",
        "/apps/crm/",
    ] {
        let response = http
            .post(gateway.url(path))
            .header("authorization", basic("alice@acme.example", "pw"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_logged_in");
    }
    assert_eq!(history.request_count(), 0);
    assert_eq!(xsp.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinning_sends_every_request_to_the_named_xsp() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&one, &two], "")).await;
    let http = client();
    let auth = basic("alice@acme.example", "pw");
    let heartbeat = gateway.url("/com.broadsoft.xsi-events/v2.0/channel/abc/heartbeat");

    // Unpinned requests are spread over both XSPs and say which one served them.
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let response = http
            .put(&heartbeat)
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        served_by.insert(
            response.headers()["x-xsigate-xsp"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(served_by.into_iter().collect::<Vec<_>>(), ["xsp1", "xsp2"]);

    let before = one.request_count();
    for _ in 0..10 {
        let response = http
            .put(&heartbeat)
            .header("authorization", &auth)
            .header("x-xsigate-xsp", "xsp2")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-xsigate-xsp"], "xsp2");
    }
    assert_eq!(
        one.request_count(),
        before,
        "no pinned request went to xsp1"
    );
    assert!(
        two.requests()
            .iter()
            .all(|r| r.headers.get("x-xsigate-xsp").is_none()),
        "the pin stays at the edge"
    );

    let bad_pin = http
        .put(&heartbeat)
        .header("authorization", &auth)
        .header("x-xsigate-xsp", "xsp9")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_pin.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_client_and_request_identity_like_nginx() {
    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let response = client()
        .get(gateway.url(&format!("{PROFILE}/alice@acme.example/profile")))
        .header("authorization", basic("alice@acme.example", "pw"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let seen = &xsp.requests()[0];
    assert_eq!(seen.headers["host"], xsp.addr.to_string());
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-request-id"], request_id.as_str());
    gateway.wait_log(|logs| logs.contains(&request_id)).await;
}

/// A client on exactly one connection: what reaches the XSP on two upstream connections was
/// the gateway's choice, never a client pool's (reqwest may open a second connection while its
/// first is on the way back to its pool).
struct OneConnection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
    authority: String,
}

impl OneConnection {
    async fn open(gateway: &Gateway) -> Self {
        let stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        Self {
            sender,
            authority: gateway.addr.to_string(),
        }
    }

    /// Reads alice's profile to its end, so that the connection is free for the next request.
    async fn read_profile(&mut self) {
        use http_body_util::BodyExt as _;
        let request = http::Request::get(format!("{PROFILE}/alice@acme.example/profile"))
            .header("host", &self.authority)
            .header("authorization", basic("alice@acme.example", "pw"))
            .body(http_body_util::Empty::new())
            .unwrap();
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
}

/// XSI-Actions requests take the lean lane: the upstream connection a client connection's
/// first request opened stays with it, and its next requests find it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connection_keeps_its_upstream_connection() {
    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let mut client = OneConnection::open(&gateway).await;
    for _ in 0..5 {
        client.read_profile().await;
    }
    let clients: Vec<_> = xsp.requests().iter().map(|r| r.client).collect();
    assert_eq!(clients.len(), 5);
    assert!(clients.iter().all(|c| *c == clients[0]), "{clients:?}");
}

/// Client connections keep at most `upstream_keepalive_pool_size` upstream connections idle
/// between them, so that many idle browsers do not hold as many connections open at an XSP: with
/// one, the first client keeps its connection and the second opens one for each request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_upstream_connections_are_bounded_by_the_pool_size() {
    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start_with_server_keys(
        "upstream_keepalive_pool_size = 1",
        &provider("acme", &["acme.example"], &[&xsp], ""),
    )
    .await;
    let mut first = OneConnection::open(&gateway).await;
    let mut second = OneConnection::open(&gateway).await;
    for _ in 0..3 {
        first.read_profile().await;
        second.read_profile().await;
    }
    let clients: Vec<_> = xsp.requests().iter().map(|r| r.client).collect();
    let (firsts, seconds): (Vec<_>, Vec<_>) = clients.chunks(2).map(|c| (c[0], c[1])).unzip();
    assert!(firsts.iter().all(|c| *c == firsts[0]), "{clients:?}");
    assert!(seconds.iter().all(|c| !firsts.contains(c)), "{clients:?}");
    assert!(
        seconds[0] != seconds[1] && seconds[1] != seconds[2],
        "{clients:?}"
    );
}

/// An upstream connection kept idle with a client's is tested before it carries a request: the
/// XSP restarted meanwhile, and a `POST` (which a failure may not send twice) still goes
/// through, on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_upstream_connection_the_xsp_closed_is_not_used() {
    let mut xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let http = client_builder().pool_max_idle_per_host(1).build().unwrap();
    let url = gateway.url(&format!(
        "{PROFILE}/alice@acme.example/calls/new?address=2025550101"
    ));
    let post = || {
        http.post(&url)
            .header("authorization", basic("alice@acme.example", "pw"))
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 200);
    xsp.stop();
    let back = Upstream::start_at("xsp", xsp.addr).await;
    // The restart's FIN reaches xsigate's idle socket within a moment on loopback.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let response = post().await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = back.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
}

/// Sends one raw request with `Connection: close` and returns the answer's status.
async fn raw_status(gateway: &Gateway, head: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer}"))
}

/// Hop-by-hop fields end at xsigate: `Connection`, every field it names and the standard ones
/// never reach the XSP, and naming a field that says whom the request is from is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_stay_with_the_client() {
    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let authorization = basic("alice@acme.example", "pw");
    let head = |connection: &str| {
        format!(
            "GET {PROFILE}/alice@acme.example/profile HTTP/1.1\r\nHost: gw\r\n\
             Authorization: {authorization}\r\nConnection: {connection}\r\nX-Hop: secret\r\n\
             Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\n\r\n"
        )
    };
    assert_eq!(raw_status(&gateway, &head("close, X-Hop")).await, 200);
    let seen = &xsp.requests()[0];
    for name in [
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(!seen.headers.contains_key(name), "{name} reached the XSP");
    }
    assert_eq!(seen.headers["authorization"], authorization.as_str());

    assert_eq!(
        raw_status(&gateway, &head("close, X-Forwarded-For")).await,
        400
    );
    assert_eq!(xsp.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start_with_args(
        &provider("acme", &["acme.example"], &[&xsp], ""),
        &["--log-format", "json"],
    )
    .await;
    client()
        .get(gateway.url(&format!("{PROFILE}/alice@acme.example/profile")))
        .header("authorization", basic("alice@acme.example", "pw"))
        .send()
        .await
        .unwrap();
    let is_access = |line: &serde_json::Value| {
        line["target"] == "xsigate::access" && line["route"] == "xsi_actions"
    };
    let parse = |logs: &str| -> Vec<serde_json::Value> {
        logs.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let logs = gateway
        .wait_log(|logs| parse(logs).iter().any(is_access))
        .await;
    let access = parse(&logs).into_iter().find(is_access).unwrap();
    assert_eq!(access["status"], 200);
    assert_eq!(access["provider"], "acme");
    assert_eq!(access["upstream"], "xsp1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_http2_and_http1() {
    let xsp = Upstream::start("xsp").await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("gw.crt");
    let key_path = dir.path().join("gw.key");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let tls_port = xsigate_tests::free_port();
    let config = format!(
        "[[server.listeners]]\naddress = \"127.0.0.1:{tls_port}\"\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n{}",
        cert_path.display(),
        key_path.display(),
        provider("acme", &["acme.example"], &[&xsp], "")
    );
    let _gateway = Gateway::start(&config).await;

    let ca = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let url = format!("https://localhost:{tls_port}{PROFILE}/alice@acme.example/profile");
    for (http2, expected) in [
        (true, http::Version::HTTP_2),
        (false, http::Version::HTTP_11),
    ] {
        let mut builder = client_builder().tls_certs_only([ca.clone()]);
        builder = if http2 {
            builder.http2_prior_knowledge()
        } else {
            builder.http1_only()
        };
        let response = builder
            .build()
            .unwrap()
            .get(&url)
            .header("authorization", basic("alice@acme.example", "pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), expected);
    }
    let seen = xsp.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|r| r.headers["x-forwarded-proto"] == "https")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_xsp_health() {
    let mut xsp = Upstream::start("xsp").await;
    let mut gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    gateway.wait_for("/readyz", 200).await;
    xsp.stop();
    gateway.wait_for("/readyz", 503).await;
    gateway
        .wait_metric("xsigate_xsp_up{provider=\"acme\",xsp=\"xsp1\"}", |v| {
            v == 0.0
        })
        .await;
    let _back = Upstream::start_at("xsp", xsp.addr).await;
    gateway.wait_for("/readyz", 200).await;
}

/// The simulator's XSPs behind xsigate: BroadWorks authentication passes through untouched and
/// the session cookie comes back to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fronts_the_xsi_simulator() {
    let seed: xsi_sim::seed::Seed = toml::from_str(
        r#"
        [[users]]
        user_id = "alice@acme.example"
        password = "alice-pw"
        service_provider = "acme"
        group = "sales"
        "#,
    )
    .unwrap();
    let sim = xsi_sim::Simulator::start(seed).await.unwrap();
    let config = provider_for_simulator("acme", &["acme.example"], &sim, "");
    let mut gateway = Gateway::start(&config).await;
    gateway.wait_for("/readyz", 200).await;
    let http = client();
    let profile = gateway.url(&format!("{PROFILE}/alice@acme.example/profile"));

    let denied = http
        .get(&profile)
        .header("authorization", basic("alice@acme.example", "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied.headers()["www-authenticate"],
        "Basic realm=\"XtendedServicesInterface\""
    );

    let response = http
        .get(&profile)
        .header("authorization", basic("alice@acme.example", "alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("JSESSIONID=") && cookie.contains("Path=/com.broadsoft.xsi-actions"),
        "{cookie}"
    );
    let xsp = response.headers()["x-xsigate-xsp"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("<userId>alice@acme.example</userId>")
    );

    // Pinned to the XSP that issued it, the cookie stands in for the password check there.
    let session = cookie.split(';').next().unwrap().to_owned();
    let again = http
        .get(&profile)
        .header("authorization", basic("alice@acme.example", "alice-pw"))
        .header("cookie", &session)
        .header("x-xsigate-xsp", &xsp)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let records: Vec<_> = sim
        .platform()
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/profile"))
        .collect();
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].auth, xsi_sim::xsp::AuthKind::Cookie);
    assert!(
        records
            .iter()
            .all(|r| r.auth_user.as_deref() == Some("alice@acme.example"))
    );
}

/// An XSP of the simulator dies mid-run: xsigate marks it down and every request still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_simulated_xsp_dying() {
    let seed: xsi_sim::seed::Seed = toml::from_str(
        "[[users]]\nuser_id = \"bob@acme.example\"\npassword = \"bob-pw\"\nservice_provider = \"acme\"\ngroup = \"g\"\n",
    )
    .unwrap();
    let sim = xsi_sim::Simulator::start(seed).await.unwrap();
    let config = provider_for_simulator("acme", &["acme.example"], &sim, "");
    let gateway = Gateway::start(&config).await;
    let http = client();
    let dnd = gateway.url(&format!("{PROFILE}/bob@acme.example/services/donotdisturb"));
    for i in 0..40 {
        if i == 10 {
            assert!(sim.stop_xsp(0));
        }
        let response = http
            .get(&dnd)
            .header("authorization", basic("bob@acme.example", "bob-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
    }
    gateway
        .wait_metric("xsigate_xsp_up{provider=\"acme\",xsp=\"xsp1\"}", |v| {
            v == 0.0
        })
        .await;
}

/// HTTPS XSPs of the simulator, trusted through the provider's `ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fronts_https_xsps_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("xsp.pem");
    let mut seed: xsi_sim::seed::Seed = toml::from_str(
        "[[users]]\nuser_id = \"alice@acme.example\"\npassword = \"alice-pw\"\nservice_provider = \"acme\"\ngroup = \"g\"\n",
    )
    .unwrap();
    seed.tls = Some(xsi_sim::seed::TlsSeed::SelfSigned {
        self_signed_cert_out: cert.clone(),
    });
    let sim = xsi_sim::Simulator::start(seed).await.unwrap();
    let xsps: Vec<String> = sim
        .xsp_addrs()
        .iter()
        .map(|a| format!("https://127.0.0.1:{}", a.port()))
        .collect();
    let config = format!(
        "[providers.acme]\ndomains = [\"acme.example\"]\nxsp = [\"{}\"]\nca_file = \"{}\"\nhealth_check = {{ interval_ms = 200, fall = 1, rise = 1 }}\n",
        xsps.join("\", \""),
        cert.display()
    );
    let mut gateway = Gateway::start(&config).await;
    gateway.wait_for("/readyz", 200).await;
    for _ in 0..4 {
        let response = client()
            .get(gateway.url(&format!("{PROFILE}/alice@acme.example/profile")))
            .header("authorization", basic("alice@acme.example", "alice-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let served: std::collections::BTreeSet<usize> =
        sim.platform().requests().iter().map(|r| r.xsp).collect();
    assert_eq!(served.len(), 2, "both HTTPS XSPs carried traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_reaches_a_real_smtp_server_through_the_providers_relay() {
    let smtp = xsigate_tests::SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[providers.acme]\ndomains = [\"acme.example\"]\nxsp = [\"http://127.0.0.1:1\"]\n\
         [providers.acme.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
         from = \"Acme Dialer <noreply@acme.example>\"\n",
        smtp.port
    );
    let config = xsigate_tests::load_config(&text, dir.path());
    let mailer =
        xsigate::access::mail::Mailer::new(config.providers["acme"].smtp.as_ref().unwrap())
            .unwrap();
    mailer
        .send(
            "alice@mail.example",
            "Reset your password",
            "Open https://dialer.example/reset#token within 15 minutes.",
        )
        .await
        .unwrap();
    let received = smtp.wait_for(|m| m.contains("END MESSAGE")).await;
    assert!(
        received.contains("Subject: Reset your password"),
        "{received}"
    );
    assert!(received.contains("To: alice@mail.example"), "{received}");
    assert!(
        received.contains("From: \"Acme Dialer\" <noreply@acme.example>"),
        "{received}"
    );
    assert!(
        received.contains("https://dialer.example/reset#token"),
        "{received}"
    );

    // A relay that does not answer is an error naming the relay, not a hang.
    let closed = format!(
        "[providers.acme]\ndomains = [\"acme.example\"]\nxsp = [\"http://127.0.0.1:1\"]\n\
         [providers.acme.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"noreply@acme.example\"\n",
        xsigate_tests::free_port()
    );
    let config = xsigate_tests::load_config(&closed, dir.path());
    let mailer =
        xsigate::access::mail::Mailer::new(config.providers["acme"].smtp.as_ref().unwrap())
            .unwrap();
    let error = mailer
        .send("alice@mail.example", "x", "y")
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("sending through 127.0.0.1 failed"),
        "{error}"
    );
}
