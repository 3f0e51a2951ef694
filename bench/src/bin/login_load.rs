//! `login-load`: what a storm of logins does to proxied traffic. Sends proxied requests at a
//! fixed rate (open loop: each request's latency counts from when it was due, so a stalled
//! proxy cannot hide its stall by slowing the sender), first alone, then while `--logins`
//! workers log in back to back through the login API. Prints the latency percentiles of both
//! phases and the logins completed.
//!
//! Login users are those of `xsi-sim --generate-users N`: `user00000@<domain>` /
//! `password00000`, …

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Latency of proxied requests during a login storm")]
struct Args {
    /// Base URL of xsigate, e.g. http://127.0.0.1:19083
    #[arg(long)]
    gateway: String,
    /// Path of the proxied request.
    #[arg(long)]
    path: String,
    /// `Authorization` header of the proxied request.
    #[arg(long)]
    authorization: String,
    /// Proxied requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of each phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent login workers in the second phase.
    #[arg(long, default_value_t = 100)]
    logins: usize,
    /// Generated users to log in as, round robin.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    #[arg(long, default_value = "sim.xsigate.test")]
    domain: String,
    /// Proxied requests allowed in flight; more are counted as errors, not queued.
    #[arg(long, default_value_t = 2000)]
    max_in_flight: usize,
}

/// Latencies of one phase, in microseconds.
#[derive(Debug, Default)]
struct Phase {
    latencies: Vec<u64>,
    errors: u64,
}

impl Phase {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let Some(last) = sorted.len().checked_sub(1) else {
            return f64::NAN;
        };
        let index = ((last as f64) * p).round() as usize;
        sorted.get(index.min(last)).copied().unwrap_or_default() as f64 / 1000.0
    }
}

/// Sends proxied requests at the fixed rate for the phase's length.
async fn proxied_phase(args: &Args, http: &reqwest::Client) -> Phase {
    let url = format!("{}{}", args.gateway, args.path);
    let interval = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
    let total = args.rate * args.seconds;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight));
    let (results, mut collected) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let start = Instant::now();
    let mut refused = 0u64;
    for i in 0..total {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            refused += 1;
            continue;
        };
        let request = http
            .get(&url)
            .header("authorization", &args.authorization)
            .send();
        let results = results.clone();
        tokio::spawn(async move {
            let ok = match request.await {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            drop(permit);
            let latency = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = results.send(ok.then_some(latency));
        });
    }
    drop(results);
    let mut phase = Phase {
        errors: refused,
        ..Phase::default()
    };
    while let Some(result) = collected.recv().await {
        match result {
            Some(latency) => phase.latencies.push(latency),
            None => phase.errors += 1,
        }
    }
    phase
}

#[derive(Debug, Default)]
struct LoginCounters {
    accepted: AtomicU64,
    failed: AtomicU64,
}

/// Logs in back to back until `stop`.
async fn login_worker(
    args: Arc<Args>,
    http: reqwest::Client,
    worker: usize,
    counters: Arc<LoginCounters>,
    stop: Arc<AtomicBool>,
) {
    let url = format!("{}/api/access/services/idp/broadsoft", args.gateway);
    let mut i = worker;
    while !stop.load(Ordering::Relaxed) {
        let user = i % args.users.max(1);
        let body = format!(
            r#"{{"user":"user{user:05}@{}","password":"password{user:05}"}}"#,
            args.domain
        );
        let ok = match http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
            Err(_) => false,
        };
        let counter = if ok {
            &counters.accepted
        } else {
            &counters.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        i += args.logins;
    }
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
fn report(name: &str, phase: &Phase) {
    println!(
        "{name} requests={} errors={} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3}",
        phase.latencies.len(),
        phase.errors,
        phase.percentile(0.50),
        phase.percentile(0.99),
        phase.percentile(0.999),
    );
}

#[tokio::main]
#[expect(clippy::print_stdout, reason = "the report is the program's output")]
async fn main() {
    // reqwest is built without a TLS provider of its own; the driver speaks plain HTTP anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Arc::new(Args::parse());
    let proxied = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight)
        .build();
    let (Ok(proxied), Ok(logins)) = (proxied, reqwest::Client::builder().build()) else {
        eprintln!("login-load: cannot build an HTTP client");
        std::process::exit(2);
    };

    // Warm the connection pool, then measure alone.
    let warm = Args {
        seconds: 1,
        ..Args::parse()
    };
    proxied_phase(&warm, &proxied).await;
    let idle = proxied_phase(&args, &proxied).await;
    report("idle", &idle);

    let counters = Arc::new(LoginCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..args.logins)
        .map(|worker| {
            tokio::spawn(login_worker(
                Arc::clone(&args),
                logins.clone(),
                worker,
                Arc::clone(&counters),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let started = Instant::now();
    let loaded = proxied_phase(&args, &proxied).await;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    report("storm", &loaded);
    let accepted = counters.accepted.load(Ordering::Relaxed);
    println!(
        "logins accepted={accepted} failed={} per_s={:.0}",
        counters.failed.load(Ordering::Relaxed),
        accepted as f64 / elapsed
    );
    println!(
        "p99_ratio={:.2}",
        loaded.percentile(0.99) / idle.percentile(0.99)
    );
}
