//! What must never cross the boundary: upstream addresses, upstream software, credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use xsigate_tests::{Gateway, Upstream, basic, client, provider};

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
