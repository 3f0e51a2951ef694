//! Abusive clients, played over raw TCP against the real gateway: smuggling shapes, slow and
//! oversized heads, floods of idle connections, per-address limits, pipelining. Each refusal
//! is xsigate's own (the error envelope, `Connection: close`, no `Server` header) and nothing
//! refused reaches the XSP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]
// The measured figures (memory per connection, what a failure answered) are printed for the record.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use xsigate_tests::{Gateway, Upstream, WAIT, provider, read_kept_answer};

/// What came back on one raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
    /// The gateway closed the connection (rather than the wait running out).
    closed: bool,
}

impl Answer {
    fn code(&self) -> String {
        let body: serde_json::Value =
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// xsigate's own refusal: the envelope with this code, the connection closed, no server
    /// software named.
    fn assert_refused(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert!(self.closed, "connection left open: {self:?}");
        assert_eq!(self.header("connection"), Some("close"), "{self:?}");
        assert!(self.header("server").is_none(), "{self:?}");
        assert!(
            !self.head.to_ascii_lowercase().contains("pingora"),
            "{self:?}"
        );
    }
}

fn parse(raw: &[u8], closed: bool) -> Answer {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
        closed,
    }
}

/// Sends `request` on a new connection and reads until the gateway closes it (bounded).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_all(stream).await
}

async fn read_all(mut stream: TcpStream) -> Answer {
    let mut raw = Vec::new();
    let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .is_ok();
    parse(&raw, closed)
}

async fn gateway_with(xsp: &Upstream, clients: &str) -> Gateway {
    let limits = if clients.is_empty() {
        String::new()
    } else {
        format!("[server.clients]\n{clients}\n")
    };
    Gateway::start(&format!(
        "{limits}{}",
        provider("acme", &["acme.example"], &[xsp], "")
    ))
    .await
}

const PROFILE: &str = "/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/profile";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_gets_xsigates_own_400_and_the_connection_closes() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(&xsp, "").await;
    let auth = "Authorization: Basic YWxpY2VAYWNtZS5leGFtcGxlOnB3\r\n";
    // CL.TE and TE.CL: a front end and a back end that disagree on the length would read the
    // smuggled request as the next one on the connection.
    let smuggled = "GET /com.broadsoft.xsi-actions/v2.0/user/bob@acme.example/profile HTTP/1.1\r\nHost: x\r\n\r\n";
    let variants = [
        format!(
            "POST {PROFILE} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST {PROFILE} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        ),
        format!(
            "POST {PROFILE} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ),
        format!(
            "POST {PROFILE} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST {PROFILE} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: gzip\r\n\r\n{smuggled}"
        ),
        format!(
            "POST {PROFILE} HTTP/1.0\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!("POST {PROFILE} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: +0\r\n\r\n{smuggled}"),
    ];
    for request in &variants {
        let answer = exchange(gateway.addr, request.as_bytes()).await;
        answer.assert_refused(400, "ambiguous_framing");
        assert!(answer.header("x-request-id").is_some(), "{answer:?}");
    }
    assert_eq!(xsp.request_count(), 0, "{:?}", xsp.requests());
    let refused = gateway
        .metric("xsigate_client_refusals_total{code=\"ambiguous_framing\"}")
        .await;
    assert_eq!(refused, Some(variants.len() as f64));
    assert!(
        gateway.logs().contains("refused=\"ambiguous_framing\""),
        "each refusal has its access line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_targets_and_connect_are_refused_before_routing() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(&xsp, "").await;
    for (request, status, code) in [
        (
            format!(
                "GET http://{}{PROFILE} HTTP/1.1\r\nHost: x\r\n\r\n",
                xsp.url()
            ),
            400,
            "bad_request",
        ),
        (
            format!("GET //evil{PROFILE} HTTP/1.1\r\nHost: x\r\n\r\n"),
            400,
            "bad_request",
        ),
        (
            "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n".to_owned(),
            405,
            "method_not_allowed",
        ),
        (
            format!("GET {PROFILE} HTTP/1.1\r\n\r\n"),
            400,
            "bad_request",
        ),
        (
            format!("GET {PROFILE} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400,
            "bad_request",
        ),
        (
            format!("GET {PROFILE} HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"),
            400,
            "bad_request",
        ),
        // Bytes httparse passes and no URI holds: on the lane's path, and on Pingora's.
        (
            format!("GET {PROFILE}<x> HTTP/1.1\r\nHost: x\r\n\r\n"),
            400,
            "bad_request",
        ),
        (
            "GET /com.broadsoft.xsi-events/v2.0/user/a`b HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
        (
            format!("GET {PROFILE}?q=\"x\" HTTP/1.1\r\nHost: x\r\n\r\n"),
            400,
            "bad_request",
        ),
    ] {
        exchange(gateway.addr, request.as_bytes())
            .await
            .assert_refused(status, code);
    }
    assert_eq!(xsp.request_count(), 0);
}

/// Sends a head on `stream` a field every 200 ms, for at most 10 s (the gateway must end it
/// long before), and returns what came back and how long after the head's first line the
/// gateway closed.
async fn trickle_head(stream: TcpStream) -> (Answer, Duration) {
    let started = tokio::time::Instant::now();
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut raw = Vec::new();
        let closed = tokio::time::timeout(WAIT, read.read_to_end(&mut raw))
            .await
            .is_ok_and(|r| r.is_ok());
        (parse(&raw, closed), started.elapsed())
    });
    write.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    for i in 0..50 {
        if reader.is_finished()
            || write
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reader.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_trickles_in_gets_408_once_header_seconds_pass() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(&xsp, "header_seconds = 1").await;
    let stream = TcpStream::connect(gateway.addr).await.unwrap();
    let (answer, _) = trickle_head(stream).await;
    answer.assert_refused(408, "request_timeout");
    assert_eq!(
        gateway
            .metric("xsigate_client_refusals_total{code=\"request_timeout\"}")
            .await,
        Some(1.0)
    );
}

const KEPT_REQUEST: &str = "Host: x\r\nAuthorization: Basic YWxpY2VAYWNtZS5leGFtcGxlOnB3\r\n\r\n";

/// A kept connection's idle time counts from its last request, not its first: requests closer
/// together than `idle_seconds` keep it open past that, and once quiet it is closed without a
/// word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_is_idle_from_its_last_request() {
    const IDLE: Duration = Duration::from_secs(2);
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(&xsp, "idle_seconds = 2").await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    // Three requests 1.3 s apart: the last comes 2.6 s after the first.
    for n in 0..3 {
        if n > 0 {
            tokio::time::sleep(IDLE * 13 / 20).await;
        }
        let request = format!("GET {PROFILE}?n={n} HTTP/1.1\r\n{KEPT_REQUEST}");
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = parse(&read_kept_answer(&mut stream).await, false);
        assert_eq!(answer.status, 200, "request {n}: {answer:?}");
    }
    let quiet = read_all(stream).await;
    assert!(quiet.closed && quiet.head.is_empty(), "{quiet:?}");
}

/// The head of a kept connection's next request has `header_seconds`, as its first had: a
/// client that trickles it gets 408 then, not only when `idle_seconds` would end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connections_next_head_that_trickles_in_gets_408_once_header_seconds_pass() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(&xsp, "header_seconds = 1\nidle_seconds = 8").await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let first = format!("GET {PROFILE} HTTP/1.1\r\n{KEPT_REQUEST}");
    stream.write_all(first.as_bytes()).await.unwrap();
    assert_eq!(
        parse(&read_kept_answer(&mut stream).await, false).status,
        200
    );
    let (answer, after) = trickle_head(stream).await;
    answer.assert_refused(408, "request_timeout");
    // Ended by the head's second, well before the connection's eight idle seconds.
    assert!(after < Duration::from_secs(6), "408 after {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_and_oversized_heads_get_431() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(&xsp, "header_fields = 50\nheader_bytes = 8192").await;
    let mut flood = format!("GET {PROFILE} HTTP/1.1\r\nHost: x\r\n");
    for i in 0..60 {
        flood.push_str(&format!("X-Flood-{i}: y\r\n"));
    }
    flood.push_str("\r\n");
    exchange(gateway.addr, flood.as_bytes())
        .await
        .assert_refused(431, "header_too_large");

    // Past the size limit and never ending: refused at the limit, not read on without end.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let long = format!(
        "GET {PROFILE} HTTP/1.1\r\nHost: x\r\nCookie: {}",
        "a".repeat(8192)
    );
    stream.write_all(long.as_bytes()).await.unwrap();
    read_all(stream)
        .await
        .assert_refused(431, "header_too_large");
    assert_eq!(xsp.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_body_bytes_get_413_declared_or_chunked() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(&xsp, "body_bytes = 1024").await;
    let auth = "Authorization: Basic YWxpY2VAYWNtZS5leGFtcGxlOnB3\r\n";
    let declared = format!(
        "PUT {PROFILE} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2048\r\n\r\n{}",
        "a".repeat(2048)
    );
    exchange(gateway.addr, declared.as_bytes())
        .await
        .assert_refused(413, "payload_too_large");
    assert_eq!(xsp.request_count(), 0, "refused before routing");

    let chunk = format!("320\r\n{}\r\n", "b".repeat(0x320));
    let chunked = format!(
        "PUT {PROFILE} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    let answer = exchange(gateway.addr, chunked.as_bytes()).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.code(), "payload_too_large");
    assert!(answer.closed);
    // Within the limit, a body passes.
    let small = format!(
        "PUT {PROFILE} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 10\r\nConnection: close\r\n\r\n0123456789"
    );
    assert_eq!(exchange(gateway.addr, small.as_bytes()).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_holding_its_connections_gets_429_until_one_closes() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(&xsp, "connections_per_address = 4").await;
    gateway
        .wait_metric("xsigate_downstream_connections", |v| v == 0.0)
        .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    gateway
        .wait_metric("xsigate_downstream_connections", |v| v == 4.0)
        .await;
    exchange(gateway.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .assert_refused(429, "too_many_connections");
    held.pop();
    gateway
        .wait_metric("xsigate_downstream_connections", |v| v == 3.0)
        .await;
    let answer = exchange(
        gateway.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_past_its_request_rate_gets_429_with_retry_after_then_passes_again() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(
        &xsp,
        "requests_per_second_per_address = 2\nrequest_burst_per_address = 4",
    )
    .await;
    let mut refused = None;
    for _ in 0..20 {
        let answer = exchange(
            gateway.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if answer.status == 429 {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let refused = refused.expect("20 requests at once pass a rate of 2/s with a burst of 4");
    refused.assert_refused(429, "too_many_requests");
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{refused:?}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = exchange(
        gateway.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(again.status, 200, "{again:?}");
}

/// An XSI-Actions body that follows its head late and in pieces reaches the XSP whole; one that
/// stops short gets xsigate's 400 once `downstream_read_seconds` pass, and never reaches the
/// XSP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_body_reaches_the_xsp_whole_and_one_that_stops_short_gets_400() {
    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start(&format!(
        "[server.timeouts]\ndownstream_read_seconds = 1\n{}",
        provider("acme", &["acme.example"], &[&xsp], "")
    ))
    .await;
    let head = format!(
        "PUT {PROFILE} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2VAYWNtZS5leGFtcGxlOnB3\r\n\
         Content-Length: 10\r\nConnection: close\r\n\r\n"
    );

    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for part in [&b"01234"[..], b"56789"] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(part).await.unwrap();
    }
    let answer = read_all(stream).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = xsp.requests();
    assert_eq!((seen.len(), seen[0].body_len), (1, 10), "{seen:?}");

    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(format!("{head}0123").as_bytes())
        .await
        .unwrap();
    let answer = read_all(stream).await;
    answer.assert_refused(400, "bad_request");
    assert_eq!(xsp.request_count(), 1);
}

/// A `HEAD` is answered with the length a `GET` would have and no body, and the connection
/// carries the next request: a body written after the head would be read as the next answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_is_answered_without_a_body_and_the_connection_goes_on() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(&xsp, "").await;
    let auth = "Authorization: Basic YWxpY2VAYWNtZS5leGFtcGxlOnB3\r\n";
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(format!("HEAD {PROFILE} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(WAIT, stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(1))),
            "{:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = parse(&head, false);
    assert_eq!(head.status, 200, "{head:?}");
    assert!(
        head.header("content-length").is_some_and(|n| n != "0"),
        "{head:?}"
    );
    assert_eq!(head.header("connection"), Some("keep-alive"), "{head:?}");
    // The XSP's own `Date` gives way to xsigate's: one of each.
    for name in ["date:", "connection:"] {
        let lines = head
            .head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with(name));
        assert_eq!(lines.count(), 1, "{name} {head:?}");
    }

    stream
        .write_all(format!("GET {PROFILE}?n=2 HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let next = parse(&read_kept_answer(&mut stream).await, false);
    assert_eq!(next.status, 200, "{next:?}");
    let body: serde_json::Value = serde_json::from_str(&next.body).unwrap();
    assert!(body["path"].as_str().unwrap().ends_with("n=2"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_one_by_one_never_mixed() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with(&xsp, "").await;
    let auth = "Authorization: Basic YWxpY2VAYWNtZS5leGFtcGxlOnB3\r\n";
    let one = format!("GET {PROFILE}?n=1 HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    let two = format!("GET {PROFILE}?n=2 HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(format!("{one}{two}").as_bytes())
        .await
        .unwrap();
    let answer = read_all(stream).await;
    assert!(answer.closed, "{answer:?}");
    // The first is answered whole; the second is answered after it or not at all (the
    // connection closes and the client sends it again), and never inside the first.
    assert_eq!(answer.status, 200, "{answer:?}");
    let length: usize = answer.header("content-length").unwrap().parse().unwrap();
    let first: serde_json::Value = serde_json::from_str(&answer.body[..length]).unwrap();
    assert!(first["path"].as_str().unwrap().ends_with("n=1"), "{first}");
    let rest = &answer.body[length..];
    assert!(
        rest.is_empty() || (rest.starts_with("HTTP/1.1 200") && rest.contains("n=2")),
        "{rest:?}"
    );
    let seen: Vec<_> = xsp
        .requests()
        .into_iter()
        .filter(|s| !s.is_health_probe())
        .map(|s| s.path_and_query)
        .collect();
    assert!(seen.first().is_some_and(|p| p.ends_with("n=1")), "{seen:?}");
    assert!(seen.len() <= 2, "{seen:?}");
}

/// Lets this process open as many sockets as the hard limit allows.
fn raise_open_files() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut raised = limit;
    raised.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, raised);
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Ten thousand connections that never send a byte: the gateway holds them in a bounded amount
/// of memory, keeps serving, and closes them all once `idle_seconds` pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_are_held_in_bounded_memory_and_closed_when_idle() {
    const IDLE: usize = 10_000;
    /// Upper bound of what one idle client connection may cost the gateway (measured: 19 KiB in
    /// release and 20 KiB in debug builds; 84 KiB before plain listeners dropped Pingora's 64 KiB
    /// read buffer).
    const KIB_PER_CONNECTION: u64 = 24;
    let open_files = raise_open_files();
    assert!(
        open_files > IDLE as u64 + 500,
        "this test needs {IDLE} sockets; the open-files limit is {open_files}"
    );
    let xsp = Upstream::start("xsp").await;
    // The child inherits the raised limit.
    let gateway = gateway_with(&xsp, "connections_per_address = 20000\nidle_seconds = 4").await;
    let before = gateway.rss_kib();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    gateway
        .wait_metric("xsigate_downstream_connections", |v| v >= IDLE as f64)
        .await;
    let held = gateway.rss_kib();
    let per_connection = held.saturating_sub(before) / IDLE as u64;
    println!(
        "RSS {before} KiB before, {held} KiB with {IDLE} idle connections: {per_connection} KiB each"
    );
    assert!(
        per_connection <= KIB_PER_CONNECTION,
        "{per_connection} KiB per idle connection"
    );
    let served = exchange(
        gateway.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(served.status, 200, "served while {IDLE} connections wait");
    gateway
        .wait_metric("xsigate_downstream_connections", |v| v == 0.0)
        .await;
    // Closed without a word: an idle connection gets no answer, only the end of the stream.
    let mut raw = Vec::new();
    let ended = tokio::time::timeout(WAIT, idle[0].read_to_end(&mut raw)).await;
    assert!(ended.is_ok_and(|r| r.is_ok()) && raw.is_empty(), "{raw:?}");
}

/// HTTP/2 requests share their address's rate with HTTP/1.x ones: many streams on one TLS
/// connection are refused past the burst, as many connections would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_held_to_the_addresss_request_rate() {
    let xsp = Upstream::start("xsp").await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("gw.crt");
    let key_path = dir.path().join("gw.key");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let tls_port = xsigate_tests::free_port();
    let _gateway = Gateway::start(&format!(
        "[[server.listeners]]\naddress = \"127.0.0.1:{tls_port}\"\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n\
         [server.clients]\nrequests_per_second_per_address = 2\nrequest_burst_per_address = 4\n{}",
        cert_path.display(),
        key_path.display(),
        provider("acme", &["acme.example"], &[&xsp], "")
    ))
    .await;
    let ca = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let h2 = xsigate_tests::client_builder()
        .tls_certs_only([ca])
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut refused = None;
    for _ in 0..20 {
        let response = h2
            .get(format!("https://localhost:{tls_port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let refused = refused.expect("20 requests at once pass a rate of 2/s with a burst of 4");
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");
}
