//! Failures of upstreams: failover, retries that are safe, timeouts, pinned XSPs that die.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use xsigate_tests::{
    Gateway, LoadOutcome, ProxiedLoad, Upstream, WAIT, basic, client, provider, read_kept_answer,
    run_command,
};

const PROFILE: &str = "/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/profile";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_xsp_mid_run_fails_no_idempotent_request() {
    let mut one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&one, &two], "")).await;
    let http = client();
    let auth = basic("alice@acme.example", "pw");

    // 8 clients x 150 requests; each request waits a little upstream so that some are in flight
    // on the XSP when it dies.
    let completed = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, auth, url, completed) = (
            http.clone(),
            auth.clone(),
            gateway.url(&format!("{PROFILE}?delay_ms=2")),
            Arc::clone(&completed),
        );
        clients.spawn(async move {
            let mut failures = Vec::new();
            for i in 0..150 {
                let request = if i % 2 == 0 {
                    http.get(&url)
                } else {
                    http.put(&url).body("<DoNotDisturb/>")
                };
                match request.header("authorization", &auth).send().await {
                    Ok(response) if response.status() == 200 => {}
                    Ok(response) => failures.push(format!("status {}", response.status())),
                    Err(e) => failures.push(e.to_string()),
                }
                completed.fetch_add(1, Ordering::Relaxed);
            }
            failures
        });
    }
    // Kill xsp1 once a third of the run is done.
    let deadline = std::time::Instant::now() + WAIT;
    while completed.load(Ordering::Relaxed) < 400 {
        assert!(
            std::time::Instant::now() < deadline,
            "the load never progressed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let served_by_one_before_kill = one.request_count();
    one.stop();

    let mut failures = Vec::new();
    while let Some(result) = clients.join_next().await {
        failures.extend(result.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        served_by_one_before_kill > 0,
        "xsp1 carried traffic before it died"
    );
    assert!(two.request_count() >= 1200 - served_by_one_before_kill);
    gateway
        .wait_metric("xsigate_xsp_up{provider=\"acme\",xsp=\"xsp1\"}", |v| {
            v == 0.0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_xsp_is_skipped_and_counted() {
    let dead = Upstream::start("dead").await;
    let dead_url = dead.url();
    drop(dead);
    let alive = Upstream::start("alive").await;
    let config = format!(
        "[providers.acme]\ndomains = [\"acme.example\"]\nxsp = [\"{dead_url}\", \"{}\"]\nhealth_check = {{ interval_ms = 60000, fall = 5 }}\n",
        alive.url()
    );
    let gateway = Gateway::start(&config).await;
    let http = client();
    for _ in 0..6 {
        let response = http
            .get(gateway.url(PROFILE))
            .header("authorization", basic("alice@acme.example", "pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(alive.request_count(), 6);
    let failures = gateway
        .wait_metric(
            "xsigate_upstream_connect_failures_total{provider=\"acme\",upstream=\"xsp1\"}",
            |v| v >= 1.0,
        )
        .await;
    let retries = gateway
        .metric("xsigate_upstream_retries_total{provider=\"acme\"}")
        .await
        .unwrap();
    assert_eq!(
        failures, retries,
        "every connect failure led to exactly one retry elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_xsps_down_is_a_clean_502() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&one, &two], "")).await;
    drop((one, two));
    let response = client()
        .get(gateway.url(PROFILE))
        .header("authorization", basic("alice@acme.example", "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_xsp_is_a_clean_504() {
    let slow = Upstream::start("slow").await;
    let config = format!(
        "[server.timeouts]\nupstream_read_seconds = 1\n{}",
        provider("acme", &["acme.example"], &[&slow], "")
    );
    let gateway = Gateway::start(&config).await;
    let response = client()
        .get(gateway.url(&format!("{PROFILE}?delay_ms=3000")))
        .header("authorization", basic("alice@acme.example", "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_may_have_had_effects_is_never_sent_twice() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&one, &two], "")).await;
    let response = client()
        .post(
            gateway.url("/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/calls/new?drop=1"),
        )
        .header("authorization", basic("alice@acme.example", "pw"))
        .body("<call/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        one.request_count() + two.request_count(),
        1,
        "the POST reached exactly one XSP once"
    );

    // The same failure on an idempotent request is retried on the other XSP, which also drops
    // it: both saw it once, and the client still gets a clean 502.
    let response = client()
        .get(gateway.url(&format!("{PROFILE}?drop=1")))
        .header("authorization", basic("alice@acme.example", "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(one.request_count() + two.request_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_request_never_fails_over() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&one, &two], "")).await;
    drop(two);
    let response = client()
        .put(gateway.url("/com.broadsoft.xsi-events/v2.0/channel/abc/heartbeat"))
        .header("authorization", basic("alice@acme.example", "pw"))
        .header("x-xsigate-xsp", "xsp2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        one.request_count(),
        0,
        "the channel's heartbeat must not land on another XSP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_upgrade_drops_no_request() {
    let xsp = Upstream::start("xsp").await;
    let mut gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let http = client();
    let auth = basic("alice@acme.example", "pw");
    let url = gateway.url(PROFILE);
    // Bounded: at most 5,000 requests per client, and it stops when told.
    let load = ProxiedLoad::start(&url, &auth, 5_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.upgrade().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let LoadOutcome {
        sent,
        retried,
        failures,
    } = load.finish().await;
    assert!(
        sent > 100,
        "the load ran across the upgrade ({sent} requests)"
    );
    assert!(
        retried <= 8,
        "only requests racing a closing keep-alive connection needed a retry ({retried} of {sent})"
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // The new process serves on the same address.
    let after = http
        .get(&url)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
}

/// A graceful stop closes a kept connection that waits for its next request when the stop
/// begins, not when the grace period ends: a client learns at once to take its next request to
/// the process that serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_closes_idle_kept_connections_at_once() {
    /// The gateway's grace period (the harness's `grace_period_seconds`) is 2 s; this is well
    /// inside it.
    const AT_ONCE: Duration = Duration::from_millis(1500);
    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!(
        "GET {PROFILE} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        basic("alice@acme.example", "pw")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_kept_answer(&mut stream).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let pid = gateway.running_pid().unwrap();
    let (code, _, stderr) = run_command(
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string()),
    );
    assert_eq!(code, 0, "{stderr}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(AT_ONCE, stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok_and(|r| r.is_ok()),
        "still open {AT_ONCE:?} into the stop"
    );
    assert!(rest.is_empty(), "{rest:?}");
}
