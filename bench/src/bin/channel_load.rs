//! `channel-load`: opens one XSI-Events channel per generated user and keeps every one alive with
//! heartbeats for a while, then reports what held. It talks to the simulator's XSPs directly
//! (or to anything that speaks XSI-Events, such as xsigate in front of them).
//!
//! Users are those of `xsi-sim --generate-users N`: `user00000@<domain>` / `password00000`, …

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Hold many XSI-Events channels open with heartbeats")]
struct Args {
    /// Base URL of the XSP (or gateway), e.g. http://127.0.0.1:18081
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 10_000)]
    channels: usize,
    #[arg(long, default_value = "sim.xsigate.test")]
    domain: String,
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    /// How long every channel is held after all are open.
    #[arg(long, default_value_t = 60)]
    hold_seconds: u64,
    /// Channels opened at once while ramping up.
    #[arg(long, default_value_t = 200)]
    ramp_concurrency: usize,
    /// Each user toggles its Do Not Disturb this often (0 = never), so events flow and are
    /// acknowledged on every channel.
    #[arg(long, default_value_t = 30)]
    event_seconds: u64,
}

#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    open_failures: AtomicU64,
    heartbeats_sent: AtomicU64,
    heartbeats_failed: AtomicU64,
    heartbeats_echoed: AtomicU64,
    events_received: AtomicU64,
    acks_sent: AtomicU64,
    acks_failed: AtomicU64,
    changes_failed: AtomicU64,
    streams_ended: AtomicU64,
}

fn credentials(domain: &str, i: usize) -> (String, String) {
    let user = format!("user{i:05}@{domain}");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:password{i:05}"))
    );
    (user, auth)
}

/// Opens channel `i`, then heartbeats it until `until`; counts everything.
/// The ramp permit is released once the channel is open (or failed to open).
async fn hold(
    args: Arc<Args>,
    http: reqwest::Client,
    i: usize,
    counters: Arc<Counters>,
    until: Arc<tokio::sync::OnceCell<Instant>>,
    ramp_permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (user, auth) = credentials(&args.domain, i);
    let body = format!(
        "<Channel xmlns=\"http://schema.broadsoft.com/xsi\"><channelSetId>load-{i}</channelSetId><expires>3600</expires></Channel>"
    );
    let url = format!(
        "{}/com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel",
        args.target
    );
    let mut response = match http
        .post(url)
        .header("authorization", &auth)
        .body(body)
        .send()
        .await
    {
        Ok(response) if response.status().is_success() => response,
        _ => {
            counters.open_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    // The channel id is in the first document.
    let mut pending = String::new();
    let channel_id = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => pending.push_str(&String::from_utf8_lossy(&bytes)),
            _ => {
                counters.open_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if let Some(id) = pending
            .split("<channelId>")
            .nth(1)
            .and_then(|s| s.split('<').next())
        {
            break id.to_owned();
        }
    };
    counters.opened.fetch_add(1, Ordering::Relaxed);
    drop(ramp_permit);
    let heartbeat_url = format!(
        "{}/com.broadsoft.xsi-events/v2.0/channel/{channel_id}/heartbeat",
        args.target
    );
    // The reader acknowledges every event on the stream and counts heartbeat echoes.
    let (reader_counters, reader_http, reader_auth) =
        (Arc::clone(&counters), http.clone(), auth.clone());
    let ack_url = format!(
        "{}/com.broadsoft.xsi-events/v2.0/channel/eventresponse",
        args.target
    );
    let reader = tokio::spawn(async move {
        let mut pending = String::new();
        while let Ok(Some(bytes)) = response.chunk().await {
            pending.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = pending.find('\n') {
                let document: String = pending.drain(..=end).collect();
                if document.contains("<ChannelHeartBeat") {
                    reader_counters
                        .heartbeats_echoed
                        .fetch_add(1, Ordering::Relaxed);
                } else if let Some(event_id) = document
                    .split("<xsi:eventID>")
                    .nth(1)
                    .and_then(|s| s.split('<').next())
                {
                    reader_counters
                        .events_received
                        .fetch_add(1, Ordering::Relaxed);
                    let body = format!(
                        "<EventResponse xmlns=\"http://schema.broadsoft.com/xsi\"><eventID>{event_id}</eventID><statusCode>200</statusCode><reason>OK</reason></EventResponse>"
                    );
                    let acked = reader_http
                        .post(&ack_url)
                        .header("authorization", &reader_auth)
                        .body(body)
                        .send()
                        .await;
                    let counter = match acked {
                        Ok(r) if r.status().is_success() => &reader_counters.acks_sent,
                        _ => &reader_counters.acks_failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        reader_counters
            .streams_ended
            .fetch_add(1, Ordering::Relaxed);
    });
    let subscription = format!(
        "<Subscription xmlns=\"http://schema.broadsoft.com/xsi\"><event>Do Not Disturb</event><expires>3600</expires><channelSetId>load-{i}</channelSetId></Subscription>"
    );
    let subscribe_url = format!("{}/com.broadsoft.xsi-events/v2.0/user/{user}", args.target);
    if !http
        .post(subscribe_url)
        .header("authorization", &auth)
        .body(subscription)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        counters.open_failures.fetch_add(1, Ordering::Relaxed);
    }
    if args.event_seconds > 0 {
        let (http, auth, counters, period) = (
            http.clone(),
            auth.clone(),
            Arc::clone(&counters),
            Duration::from_secs(args.event_seconds),
        );
        let url = format!(
            "{}/com.broadsoft.xsi-actions/v2.0/user/{user}/services/DoNotDisturb",
            args.target
        );
        let offset = period.mul_f64((i % 997) as f64 / 997.0);
        tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(period);
            for active in [true, false].into_iter().cycle() {
                tick.tick().await;
                let body = format!(
                    "<DoNotDisturb xmlns=\"http://schema.broadsoft.com/xsi\"><active>{active}</active></DoNotDisturb>"
                );
                if !http
                    .put(&url)
                    .header("authorization", &auth)
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    counters.changes_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    // Spread heartbeats over the interval so they do not all arrive at once.
    let period = Duration::from_secs(args.heartbeat_seconds);
    let offset = period.mul_f64((i % 1000) as f64 / 1000.0);
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if until.get().is_some_and(|end| Instant::now() >= *end) {
            break;
        }
        counters.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
        match http
            .put(&heartbeat_url)
            .header("authorization", &auth)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            _ => {
                counters.heartbeats_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    reader.abort();
}

#[tokio::main]
#[expect(clippy::print_stdout, reason = "the report is the program's output")]
async fn main() {
    let args = Arc::new(Args::parse());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .pool_max_idle_per_host(512)
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            eprintln!("channel-load: {e}");
            std::process::exit(2);
        }
    };
    let counters = Arc::new(Counters::default());
    let until = Arc::new(tokio::sync::OnceCell::new());
    let started = Instant::now();
    let ramp = Arc::new(tokio::sync::Semaphore::new(args.ramp_concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.channels {
        let Ok(permit) = Arc::clone(&ramp).acquire_owned().await else {
            break;
        };
        let (args, http, counters, until) = (
            Arc::clone(&args),
            http.clone(),
            Arc::clone(&counters),
            Arc::clone(&until),
        );
        tasks.spawn(hold(args, http, i, counters, until, permit));
    }
    while counters.opened.load(Ordering::Relaxed) + counters.open_failures.load(Ordering::Relaxed)
        < args.channels as u64
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp_time = started.elapsed();
    println!(
        "opened {} channels ({} failed) in {:.1} s",
        counters.opened.load(Ordering::Relaxed),
        counters.open_failures.load(Ordering::Relaxed),
        ramp_time.as_secs_f64()
    );
    println!("ready: holding for {} s", args.hold_seconds);
    tokio::time::sleep(Duration::from_secs(args.hold_seconds)).await;
    let _ = until.set(Instant::now());
    let alive =
        counters.opened.load(Ordering::Relaxed) - counters.streams_ended.load(Ordering::Relaxed);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "held: channels alive {alive} of {}, heartbeats sent {}, failed {}, echoed on streams {}",
        load(&counters.opened),
        load(&counters.heartbeats_sent),
        load(&counters.heartbeats_failed),
        load(&counters.heartbeats_echoed),
    );
    println!(
        "events: received {}, acknowledged {}, acknowledgements failed {}, state changes failed {}",
        load(&counters.events_received),
        load(&counters.acks_sent),
        load(&counters.acks_failed),
        load(&counters.changes_failed),
    );
    tasks.abort_all();
}
