//! Hostile upstreams: an XSP (played by a raw TCP server here) that answers byte by byte,
//! trickles its head past the read limit, sends an endless body, more than its answer, answers after the client has gone, or gives a login lookup a DTD with
//! entity expansion and an external entity, a document far too large, or the wrong type. Each
//! ends cleanly: bounded memory, the error envelope, nothing fetched, the request logged once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]
// The measured figures (memory per connection, what a failure answered) are printed for the record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use xsigate_tests::{Gateway, WAIT, basic, client, plugin_library, provider_urls};

const PROFILE: &str = "/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/profile";
/// What a hostile upstream may make the gateway's memory grow by, in KiB.
const GROWTH_KIB: u64 = 16 * 1024;
/// The same for a plugin's service: each host HTTP call buffers at most 2 MiB of an answer
/// (`HTTP_BODY_MAX`), and a plugin has a few in flight and retries (a login's server and peer,
/// a token request and a write); what the allocator has not yet given back after such bursts
/// comes on top (measured: up to 38 MiB against an endless Firebase, 17 MiB against SRS).
const HOST_CALLS_GROWTH_KIB: u64 = 64 * 1024;

/// How the hostile XSP answers every request that is not a health probe.
#[derive(Clone)]
enum Behaviour {
    /// A valid `200` with this body, written one byte per write.
    Bytewise(&'static str),
    /// A `200` whose chunked body never ends, written as fast as the gateway takes it.
    Endless,
    /// A valid `200`, sent after this long.
    Late(Duration),
    /// A `200` with this content type and body.
    Document(&'static str, Arc<Vec<u8>>),
    /// A `500` whose chunked body trickles a byte at a time and never ends.
    TrickledRefusal,
    /// A `103 Early Hints` with a field of its own, then a valid `200` with this body.
    Interim(&'static str),
    /// A `101 Switching Protocols` to a request that asked for no upgrade, then bytes of
    /// whatever protocol it switched to.
    Switched,
    /// A `200` whose head comes a byte at a time, each well within the read limit, the whole
    /// far beyond it.
    TrickledHead,
    /// A `200` with this body on a connection kept open, and after it, in the same write, a
    /// whole second answer nobody asked for; the same for each request on the connection.
    Overrun(&'static str),
    /// A `200` with this body in two chunks, on a connection kept open.
    Chunked(&'static str),
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytewise(body) => write!(f, "Bytewise({} bytes)", body.len()),
            Self::Endless => write!(f, "Endless"),
            Self::Late(delay) => write!(f, "Late({delay:?})"),
            Self::Document(kind, body) => write!(f, "Document({kind}, {} bytes)", body.len()),
            Self::TrickledRefusal => write!(f, "TrickledRefusal"),
            Self::Interim(body) => write!(f, "Interim({} bytes)", body.len()),
            Self::Switched => write!(f, "Switched"),
            Self::TrickledHead => write!(f, "TrickledHead"),
            Self::Overrun(body) => write!(f, "Overrun({} bytes)", body.len()),
            Self::Chunked(body) => write!(f, "Chunked({} bytes)", body.len()),
        }
    }
}

#[derive(Debug)]
struct HostileXsp {
    addr: SocketAddr,
    /// Requests answered with the behaviour (health probes not counted).
    requests: Arc<AtomicUsize>,
    /// Answers whose writing failed because the gateway closed the connection.
    cut_off: Arc<AtomicUsize>,
    /// Requests that came on a connection after its first request.
    reused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostileXsp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileXsp {
    async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let cut_off = Arc::new(AtomicUsize::new(0));
        let reused = Arc::new(AtomicUsize::new(0));
        let counters = Counters {
            seen: Arc::clone(&requests),
            reused: Arc::clone(&reused),
        };
        let cut = Arc::clone(&cut_off);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (behaviour, counters, cut) =
                    (behaviour.clone(), counters.clone(), Arc::clone(&cut));
                tokio::spawn(async move {
                    if serve(stream, &behaviour, &counters).await.is_err() {
                        cut.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            cut_off,
            reused,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A request's head from `stream`, in lower case; `None` when the gateway closed the connection.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&byte[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&head).to_ascii_lowercase()))
}

/// What the hostile XSP counts of the requests it answers.
#[derive(Clone)]
struct Counters {
    seen: Arc<AtomicUsize>,
    reused: Arc<AtomicUsize>,
}

/// Answers one request on `stream` and closes it (each request on it, for `Overrun`).
async fn serve(
    mut stream: TcpStream,
    behaviour: &Behaviour,
    counters: &Counters,
) -> std::io::Result<()> {
    let Some(head) = read_head(&mut stream).await? else {
        return Ok(());
    };
    if head.contains("user-agent: xsigate-health/") {
        return stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    }
    counters.seen.fetch_add(1, Ordering::SeqCst);
    let ok = |content_type: &str, body: &[u8]| {
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        answer
    };
    match behaviour {
        Behaviour::Bytewise(body) => {
            for byte in ok("application/xml", body.as_bytes()) {
                stream.write_all(&[byte]).await?;
                stream.flush().await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Behaviour::Endless => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
            // Bounded: 64 GiB would take far longer than any test.
            for _ in 0..4_000_000 {
                stream.write_all(chunk.as_bytes()).await?;
            }
        }
        Behaviour::Late(delay) => {
            tokio::time::sleep(*delay).await;
            stream
                .write_all(&ok("application/xml", b"<Profile/>"))
                .await?;
        }
        Behaviour::Document(content_type, body) => {
            stream.write_all(&ok(content_type, body)).await?;
        }
        Behaviour::TrickledRefusal => {
            stream
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            // Bounded: ten minutes, far longer than any test.
            for _ in 0..6000 {
                stream.write_all(b"1\r\nx\r\n").await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Behaviour::Interim(body) => {
            stream
                .write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </hint.css>; rel=preload\r\n\r\n")
                .await?;
            stream.flush().await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            stream
                .write_all(&ok("application/xml", body.as_bytes()))
                .await?;
        }
        Behaviour::Switched => {
            stream
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nswitched-protocol-bytes")
                .await?;
        }
        Behaviour::TrickledHead => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nX-Padding: {}\r\nContent-Length: 0\r\n\r\n",
                "x".repeat(40)
            );
            for byte in head.bytes() {
                stream.write_all(&[byte]).await?;
                stream.flush().await?;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Behaviour::Overrun(body) => loop {
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}\
                 HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n<smuggled>",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await?;
            if read_head(&mut stream).await?.is_none() {
                return Ok(());
            }
            counters.seen.fetch_add(1, Ordering::SeqCst);
            counters.reused.fetch_add(1, Ordering::SeqCst);
        },
        Behaviour::Chunked(body) => loop {
            let (first, second) = body.split_at(body.len() / 2);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n\
                 {:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
                first.len(),
                second.len()
            );
            stream.write_all(answer.as_bytes()).await?;
            if read_head(&mut stream).await?.is_none() {
                return Ok(());
            }
            counters.seen.fetch_add(1, Ordering::SeqCst);
        },
    }
    stream.shutdown().await
}

async fn gateway_before(xsp: &HostileXsp, extra: &str) -> Gateway {
    let plugins = format!(
        "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n",
        plugin_library("xsigate-idp-broadsoft").display()
    );
    let provider = provider_urls(
        "acme",
        &["acme.example"],
        &[xsp.url()],
        "plugins = [\"broadsoft\"]",
    );
    let mut gateway = Gateway::start(&format!("{extra}\n{plugins}{provider}")).await;
    gateway.wait_for("/readyz", 200).await;
    gateway
}

fn profile_get(gateway: &Gateway, query: &str) -> reqwest::RequestBuilder {
    profile_get_on(&client(), gateway, query)
}

/// The same on `client`, whose connections carry the requests one after another.
fn profile_get_on(
    client: &reqwest::Client,
    gateway: &Gateway,
    query: &str,
) -> reqwest::RequestBuilder {
    client
        .get(gateway.url(&format!("{PROFILE}{query}")))
        .header("authorization", basic("alice@acme.example", "pw"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_written_byte_by_byte_is_passed_on_whole() {
    const BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Profile xmlns=\"http://schema.broadsoft.com/xsi\"><details><userId>alice@acme.example</userId></details></Profile>";
    let xsp = HostileXsp::start(Behaviour::Bytewise(BODY)).await;
    let gateway = gateway_before(&xsp, "").await;
    let response = profile_get(&gateway, "").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), BODY);
}

/// A chunked answer goes to an HTTP/1.1 client chunked, on a connection that then carries its
/// next request; an HTTP/1.0 client, which cannot read chunks, gets the body as it is, ended by
/// closing the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_answer_is_framed_for_the_clients_version() {
    const BODY: &str = "<Profile xmlns=\"http://schema.broadsoft.com/xsi\"><details/></Profile>";
    let xsp = HostileXsp::start(Behaviour::Chunked(BODY)).await;
    let gateway = gateway_before(&xsp, "").await;
    let request = |version: &str| {
        format!(
            "GET {PROFILE} HTTP/{version}\r\nHost: gw\r\nAuthorization: {}\r\n\r\n",
            basic("alice@acme.example", "pw")
        )
    };
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(request("1.1").as_bytes()).await.unwrap();
        let answer = read_chunked_answer(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("\r\nConnection: keep-alive\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("\r\n0\r\n\r\n"), "{answer}");
        let decoded: String = answer
            .split_once("\r\n\r\n")
            .unwrap()
            .1
            .split("\r\n")
            .skip(1)
            .step_by(2)
            .collect();
        assert_eq!(decoded, BODY, "{answer}");
    }

    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(request("1.0").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the connection closes after the answer")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert_eq!(body, BODY);
    assert_eq!(xsp.requests.load(Ordering::SeqCst), 3);
}

/// One answer off a kept connection, up to the end of its chunked body (bounded).
async fn read_chunked_answer(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !raw.ends_with(b"\r\n0\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("a whole answer");
    String::from_utf8(raw).unwrap()
}

/// An interim answer is the upstream's business: the client gets the final one, whole, without
/// the interim's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interim_answer_is_passed_over_for_the_final_one() {
    const BODY: &str = "<Profile xmlns=\"http://schema.broadsoft.com/xsi\"/>";
    let xsp = HostileXsp::start(Behaviour::Interim(BODY)).await;
    let gateway = gateway_before(&xsp, "").await;
    let response = profile_get(&gateway, "").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("link").is_none());
    assert_eq!(response.text().await.unwrap(), BODY);
}

/// A `101` to a request that asked for no upgrade would hand the client's connection to
/// whatever protocol the upstream switched to: it is a broken answer, and none of it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_nobody_asked_for_is_a_bad_gateway() {
    let xsp = HostileXsp::start(Behaviour::Switched).await;
    let gateway = gateway_before(&xsp, "").await;
    let response = profile_get(&gateway, "").send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(response.headers().get("upgrade").is_none());
    let body = response.text().await.unwrap();
    assert!(!body.contains("switched-protocol"), "{body}");
    let envelope: serde_json::Value = serde_json::from_str(&body).unwrap();
    println!("a 101 nobody asked for: {envelope}");
}

/// The read limit is the whole head's: an upstream cannot hold a request open by sending its head
/// a byte at a time, each read in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_past_the_read_limit_is_a_timeout() {
    let xsp = HostileXsp::start(Behaviour::TrickledHead).await;
    let gateway = gateway_before(&xsp, "[server.timeouts]\nupstream_read_seconds = 1\n").await;
    let response = profile_get(&gateway, "").send().await.unwrap();
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
}

/// Bytes after an answer's end are no answer to anything: a connection that carried them may
/// hold more of them, and is never asked again, so no request gets another's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sent_more_than_its_answer_is_not_asked_again() {
    const BODY: &str = "<Profile xmlns=\"http://schema.broadsoft.com/xsi\"/>";
    let xsp = HostileXsp::start(Behaviour::Overrun(BODY)).await;
    let gateway = gateway_before(&xsp, "").await;
    let client = client();
    for _ in 0..3 {
        let response = profile_get_on(&client, &gateway, "").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), BODY);
    }
    assert_eq!(xsp.requests.load(Ordering::SeqCst), 3);
    assert_eq!(xsp.reused.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_is_held_back_by_the_client_and_cut_off_when_it_leaves() {
    let xsp = HostileXsp::start(Behaviour::Endless).await;
    let gateway = gateway_before(&xsp, "").await;
    let before = gateway.rss_kib();
    let mut response = profile_get(&gateway, "").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // The client stops reading; the XSP writes on as fast as it is let.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let growth = gateway.rss_kib().saturating_sub(before);
    println!("RSS grew {growth} KiB while a client held an endless body unread");
    assert!(growth < GROWTH_KIB, "{growth} KiB");
    drop(response);
    let started = tokio::time::Instant::now();
    while xsp.cut_off.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < WAIT,
            "the XSP's endless answer was never cut off"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway
        .wait_metric("xsigate_requests_in_flight", |v| v == 0.0)
        .await;
    let lines = gateway
        .logs()
        .lines()
        .filter(|l| l.contains("xsigate::access") && l.contains(PROFILE))
        .count();
    assert_eq!(lines, 1, "{}", gateway.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_client_left_is_dropped_and_the_request_logged_once() {
    let xsp = HostileXsp::start(Behaviour::Late(Duration::from_millis(1500))).await;
    let gateway = gateway_before(&xsp, "").await;
    let gave_up = profile_get(&gateway, "?late=1")
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "the client gives up before the XSP answers"
    );
    gateway
        .wait_log(|logs| logs.contains("xsigate::access") && logs.contains(PROFILE))
        .await;
    gateway
        .wait_metric("xsigate_requests_in_flight", |v| v == 0.0)
        .await;
    // Well after the XSP's late answer: still exactly one line, no panic, no warning.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = gateway.logs();
    let lines: Vec<_> = logs
        .lines()
        .filter(|l| l.contains("xsigate::access") && l.contains(PROFILE))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    assert_eq!(xsp.requests.load(Ordering::SeqCst), 1);
}

async fn log_in(gateway: &Gateway) -> (u16, serde_json::Value) {
    let response = client()
        .post(gateway.url("/api/access/services/idp/broadsoft"))
        .json(&serde_json::json!({ "user": "alice@acme.example", "password": "pw" }))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A failed login's answer: the envelope, a gateway-side code, and nothing of the document.
fn assert_clean_failure(status: u16, body: &serde_json::Value, leaked: &[&str]) {
    assert!(
        (400..600).contains(&status) && status != 200,
        "{status} {body}"
    );
    assert!(body["error"]["code"].is_string(), "{body}");
    let text = body.to_string();
    for secret in leaked {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_lookup_never_expands_entities_or_fetches_an_external_one() {
    let canary = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let canary_addr = canary.local_addr().unwrap();
    let fetched = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fetched);
    let watch = tokio::spawn(async move {
        while canary.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut laughs =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE Profile [\n<!ENTITY lol \"lol\">\n");
    for level in 1..=9 {
        let previous = if level == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", level - 1)
        };
        laughs.push_str(&format!(
            "<!ENTITY lol{level} \"{}\">\n",
            format!("&{previous};").repeat(10)
        ));
    }
    laughs.push_str(&format!(
        "<!ENTITY xxe SYSTEM \"http://{canary_addr}/secret\">\n]>\n\
         <Profile xmlns=\"http://schema.broadsoft.com/xsi\"><details><userId>&lol9;&xxe;</userId>\
         <firstName>&lol9;</firstName></details></Profile>"
    ));
    let document = Arc::new(laughs.into_bytes());
    let xsp = HostileXsp::start(Behaviour::Document("application/xml", document)).await;
    let gateway = gateway_before(&xsp, "").await;
    let before = gateway.rss_kib();
    let (status, body) = log_in(&gateway).await;
    println!("login against a billion-laughs profile: {status} {body}");
    assert_clean_failure(status, &body, &["lol", "ENTITY", &canary_addr.to_string()]);
    let growth = gateway.rss_kib().saturating_sub(before);
    assert!(growth < GROWTH_KIB, "{growth} KiB");
    assert!(xsp.requests.load(Ordering::SeqCst) >= 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        0,
        "the external entity was fetched"
    );
    watch.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_or_mistyped_lookup_answer_is_a_clean_login_failure() {
    let mut huge = b"<?xml version=\"1.0\"?><Profile xmlns=\"http://schema.broadsoft.com/xsi\"><details><userId>".to_vec();
    huge.resize(huge.len() + 24 * 1024 * 1024, b'a');
    huge.extend_from_slice(b"</userId></details></Profile>");
    let xsp = HostileXsp::start(Behaviour::Document("application/xml", Arc::new(huge))).await;
    let gateway = gateway_before(&xsp, "").await;
    let (status, body) = log_in(&gateway).await;
    println!("login against a 24 MiB profile: {status} {body}");
    assert_clean_failure(status, &body, &["aaaa"]);
    drop(gateway);

    let page = b"<html><body>Apache Tomcat at 10.0.0.7: Welcome</body></html>".to_vec();
    let xsp = HostileXsp::start(Behaviour::Document("text/html", Arc::new(page))).await;
    let gateway = gateway_before(&xsp, "").await;
    let (status, body) = log_in(&gateway).await;
    println!("login against an HTML page: {status} {body}");
    assert_clean_failure(status, &body, &["Tomcat", "10.0.0.7", "html"]);
}

const AGENT: &str = "agent1@acme.example";
const AGENT_PASSWORD: &str = "pw-agent1";

/// The simulator with one agent, for the recording service's and Firebase's hostile cases.
async fn agent_simulator() -> Arc<xsi_sim::Simulator> {
    let seed = format!(
        "[[users]]\nuser_id = \"{AGENT}\"\npassword = \"{AGENT_PASSWORD}\"\nservice_provider = \"acme\"\n\
         group = \"desk\"\nnumber = \"2025550101\"\nextension = \"0101\"\n"
    );
    xsi_sim::Simulator::start(toml::from_str(&seed).unwrap())
        .await
        .unwrap()
}

/// The agent's dialer login (broadsoft method).
async fn log_in_agent(gateway: &Gateway) -> reqwest::Response {
    client()
        .post(gateway.url("/api/access/services/idp/broadsoft"))
        .json(&serde_json::json!({ "user": AGENT, "password": AGENT_PASSWORD }))
        .send()
        .await
        .unwrap()
}

/// A recording service that stalls, streams without end, answers HTML or trickles garbage:
/// the dialer login still opens its session within the report's bounded wait, the recording
/// login is reported failed and counted, and nothing of the answer reaches the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_recording_service_never_holds_up_the_dialer_login() {
    let sim = agent_simulator().await;
    let page = Arc::new(b"<html><body>Genesys at 10.0.0.9 says hello</body></html>".to_vec());
    for behaviour in [
        Behaviour::Late(Duration::from_secs(5)),
        Behaviour::Endless,
        Behaviour::Document("text/html", page),
        Behaviour::Bytewise("\u{1}\u{2}garbage{\"not\":json"),
    ] {
        let srs = HostileXsp::start(behaviour.clone()).await;
        let config = format!(
            "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
             [[plugins]]\nname = \"srs\"\npath = \"{}\"\n\
             [plugins.config.providers.acme]\nurl = \"{}\"\norigin = \"https://desktop.acme.example\"\n\
             server = \"https://rws1.acme.example\"\npeer_server = \"https://rws2.acme.example\"\n\
             switch = \"SIP_Switch\"\nplace = \"Place_{{extension}}\"\nkeep_alive_seconds = 1\n\
             timeout_ms = 1000\n{}",
            plugin_library("xsigate-idp-broadsoft").display(),
            plugin_library("xsigate-srs-login").display(),
            srs.url(),
            xsigate_tests::provider_for_simulator(
                "acme",
                &["acme.example"],
                &sim,
                "plugins = [\"broadsoft\", \"srs\"]"
            ),
        );
        let mut gateway = Gateway::start(&config).await;
        gateway.wait_for("/readyz", 200).await;
        let before = gateway.rss_kib();
        let started = tokio::time::Instant::now();
        let response = log_in_agent(&gateway).await;
        assert_eq!(response.status(), 200, "{behaviour:?}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{behaviour:?}: the login waited on the recording service"
        );
        let report = &answer["reports"]["srs"];
        assert_ne!(report["state"], "ok", "{behaviour:?}: {answer}");
        for leaked in ["Genesys", "10.0.0.9", "garbage", "xxxx"] {
            assert!(
                !answer.to_string().contains(leaked),
                "{behaviour:?}: {answer}"
            );
        }
        let counted = |result: &str| {
            format!("xsigate_plugin_srs_logins_total{{provider=\"acme\",result=\"{result}\"}}")
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut failures = 0.0;
            for result in ["unreachable", "rejected", "rws_unavailable", "refused"] {
                failures += gateway.metric(&counted(result)).await.unwrap_or(0.0);
            }
            if failures >= 1.0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{behaviour:?}: no failure counted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(gateway.metric(&counted("logged_in")).await, Some(0.0));
        let failed = gateway
            .wait_log(|logs| logs.contains("srs") && logs.contains("WARN"))
            .await;
        assert!(!failed.contains("panicked"), "{failed}");
        let growth = gateway.rss_kib().saturating_sub(before);
        assert!(
            growth < HOST_CALLS_GROWTH_KIB,
            "{behaviour:?}: {growth} KiB"
        );
        println!("{behaviour:?}: report {report}, RSS +{growth} KiB");
    }
}

/// A Firebase whose token endpoint and database stall, stream without end, answer HTML, or
/// grant a token "for ever" (`expires_in` of 2^64-1, which once overflowed the plugin's clock):
/// the dialer login is never held up, failures are counted and the user's state waits in the
/// queue, the plugin's worker never restarts, and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_firebase_never_holds_up_logins_or_crashes_the_sync() {
    let sim = agent_simulator().await;
    let forever = Arc::new(
        format!(
            r#"{{"access_token":"ya29.forever","expires_in":{}}}"#,
            u64::MAX
        )
        .into_bytes(),
    );
    let page = Arc::new(b"<html>Google Front End at 10.0.0.11</html>".to_vec());
    for behaviour in [
        Behaviour::Late(Duration::from_secs(5)),
        Behaviour::Endless,
        Behaviour::Document("text/html", page),
        Behaviour::Document("application/json", forever),
    ] {
        let firebase = HostileXsp::start(behaviour.clone()).await;
        let account =
            xsigate_tests::repo_root().join("tests/fixtures/firebase/service-account.json");
        let config = format!(
            "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
             [[plugins]]\nname = \"events\"\npath = \"{}\"\n\
             [plugins.config.providers.acme]\nheartbeat_seconds = 1\nsilence_seconds = 3\n\
             [[plugins]]\nname = \"firebase\"\npath = \"{}\"\n\
             [plugins.config]\nbatch_ms = 25\n\
             [plugins.config.providers.acme]\nservice_account_file = \"{}\"\ntimeout_ms = 1000\n\
             blf = \"off\"\ndatabase_url = \"{}\"\ntoken_url = \"{}/token\"\n{}",
            plugin_library("xsigate-idp-broadsoft").display(),
            plugin_library("xsigate-xsi-events").display(),
            plugin_library("xsigate-firebase-sync").display(),
            account.display(),
            firebase.url(),
            firebase.url(),
            xsigate_tests::provider_for_simulator(
                "acme",
                &["acme.example"],
                &sim,
                "plugins = [\"broadsoft\", \"events\", \"firebase\"]"
            ),
        );
        let mut gateway = Gateway::start(&config).await;
        gateway.wait_for("/readyz", 200).await;
        let before = gateway.rss_kib();
        let started = tokio::time::Instant::now();
        let response = log_in_agent(&gateway).await;
        assert_eq!(response.status(), 200, "{behaviour:?}");
        let answer = response.text().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{behaviour:?}: the login waited on Firebase"
        );
        for leaked in ["Google Front End", "10.0.0.11", "ya29"] {
            assert!(!answer.contains(leaked), "{behaviour:?}: {answer}");
        }
        let counted = |family: &str, label: &str, value: &str| {
            format!("xsigate_plugin_firebase_{family}{{provider=\"acme\",{label}=\"{value}\"}}")
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let outcome = if matches!(behaviour, Behaviour::Document("application/json", _)) {
                // The "for ever" token is taken (capped) and a write lands with it.
                gateway
                    .metric(&counted("writes_total", "result", "ok"))
                    .await
            } else {
                let mut failures = 0.0;
                for reason in ["unreachable", "token", "server_error", "rejected"] {
                    failures += gateway
                        .metric(&counted("failures_total", "reason", reason))
                        .await
                        .unwrap_or(0.0);
                }
                Some(failures)
            };
            if outcome.is_some_and(|v| v >= 1.0) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{behaviour:?}: nothing counted\n{}",
                gateway.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(firebase.requests.load(Ordering::SeqCst) >= 1);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let restarts = gateway
            .metric("xsigate_plugin_worker_restarts_total{plugin=\"firebase\"}")
            .await
            .unwrap_or(0.0);
        assert_eq!(restarts, 0.0, "{behaviour:?}: {}", gateway.logs());
        let logs = gateway.logs();
        assert!(
            !logs.contains("panicked") && !logs.contains("ya29"),
            "{logs}"
        );
        let growth = gateway.rss_kib().saturating_sub(before);
        assert!(
            growth < HOST_CALLS_GROWTH_KIB,
            "{behaviour:?}: {growth} KiB"
        );
        println!("{behaviour:?}: RSS +{growth} KiB");
    }
}

/// A channel open refused with an error body that never ends must not hold the channel set for
/// good: the refusal is read within the call's timeout (10 s), then the set tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_refused_with_an_endless_body_is_given_up_and_opened_again() {
    let xsp = HostileXsp::start(Behaviour::TrickledRefusal).await;
    let master = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(master.path(), "master-password").unwrap();
    let plugins = format!(
        "[[plugins]]\nname = \"events\"\npath = \"{}\"\n\
         [plugins.config.providers.acme]\nlevel = \"service_provider\"\nservice_provider = \"acme\"\n",
        plugin_library("xsigate-xsi-events").display()
    );
    let provider = provider_urls(
        "acme",
        &["acme.example"],
        &[xsp.url()],
        &format!(
            "plugins = [\"events\"]\nmaster = {{ user = \"admin@acme.example\", password_file = \"{}\" }}",
            master.path().display()
        ),
    );
    let mut gateway = Gateway::start(&format!("{plugins}{provider}")).await;
    gateway.wait_for("/readyz", 200).await;

    // The provider's set opens its channel at start: the first attempt is the refusal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while xsp.requests.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the channel set never tried again after a refusal that does not end ({} attempts)",
            xsp.requests.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway
        .wait_log(|l| l.contains("refusal did not end within the call's timeout"))
        .await;
    assert!(
        !gateway.logs().contains(&xsp.addr.to_string()),
        "a log line names the XSP's address"
    );
}
