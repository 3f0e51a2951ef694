//! `events-load`: drives `bench/events.sh`.
//!
//! - `login`: logs the simulator's generated users (`user00000@<domain>` / `password00000`, …)
//!   in through xsigate's login API, `--concurrency` at a time, so xsi-events opens a channel
//!   set for each; prints the logins per second.
//! - `drive`: toggles Do Not Disturb of generated users round robin through the simulator's
//!   control API at `--rate` changes per second (open loop), then reads what the fixture tap
//!   saw on the bus through xsigate and prints the events per second delivered and the
//!   latency from each change to its event on the bus (p50, p99, max). The k-th DND event of a
//!   user on the bus is the k-th change of that user: one user's events stay in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Load for the XSI-Events benchmark")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Login {
        /// Base URL of xsigate.
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        users: usize,
        /// The first generated user to log in (user<first>, then the next `users`).
        #[arg(long, default_value_t = 0)]
        first: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value = "sim.xsigate.test")]
        domain: String,
    },
    /// Gives each of `watchers` generated users (from `first`) a Busy Lamp Field list of
    /// `monitored` users among the first `event_users`, spread so that each is watched about
    /// equally, through the XSP as the users' own portals would.
    BlfLists {
        /// Base URL of one simulated XSP.
        #[arg(long)]
        xsp: String,
        #[arg(long)]
        watchers: usize,
        #[arg(long)]
        first: usize,
        #[arg(long, default_value_t = 20)]
        monitored: usize,
        #[arg(long)]
        event_users: usize,
        #[arg(long, default_value = "sim.xsigate.test")]
        domain: String,
    },
    Drive {
        /// Base URL of the simulator's control API.
        #[arg(long)]
        control: String,
        /// Base URL of xsigate, and a user id in the tap's provider to reach the tap with.
        /// Several instances: `--gateway` for each; their taps' events are read together.
        #[arg(long, required = true)]
        gateway: Vec<String>,
        #[arg(long)]
        tap_user: String,
        /// Generated users to toggle, round robin.
        #[arg(long)]
        users: usize,
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value = "sim.xsigate.test")]
        domain: String,
        /// Base URL of the simulator's Firebase stand-in: also match each change to the
        /// database write that carried it (firebase-sync).
        #[arg(long)]
        firebase: Option<String>,
    },
}

/// Changes sent, by user: the unix ms each was sent and the DND it set, in order.
type Sent = HashMap<String, Vec<(u64, bool)>>;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
fn report(line: &str) {
    println!("{line}");
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0;
    };
    sorted[((last as f64) * p).round() as usize]
}

async fn login(
    gateway: &str,
    (first, users): (usize, usize),
    concurrency: usize,
    domain: &str,
) -> Result<(), String> {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, next, failed) = (http.clone(), Arc::clone(&next), Arc::clone(&failed));
            let url = format!("{gateway}/api/access/services/idp/broadsoft");
            let domain = domain.to_owned();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= users {
                        return;
                    }
                    let i = first + i;
                    let body = json!({ "user": format!("user{i:05}@{domain}"), "password": format!("password{i:05}") });
                    let ok = http
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.map_err(|e| e.to_string())?;
    }
    let failed = failed.load(Ordering::Relaxed);
    report(&format!(
        "logins {users} in {:.1}s ({:.0}/s), failed {failed}",
        started.elapsed().as_secs_f64(),
        users as f64 / started.elapsed().as_secs_f64()
    ));
    if failed > 0 {
        return Err(format!("{failed} logins failed"));
    }
    Ok(())
}

async fn blf_lists(
    xsp: &str,
    (first, watchers): (usize, usize),
    monitored: usize,
    event_users: usize,
    domain: &str,
) -> Result<(), String> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    for w in 0..watchers {
        let watcher = first + w;
        let entries: String = (0..monitored)
            .map(|k| {
                let m = (w * monitored + k) % event_users.max(1);
                format!("<userDetails><userId>user{m:05}@{domain}</userId></userDetails>")
            })
            .collect();
        let body = format!(
            "<BusyLampField xmlns=\"http://schema.broadsoft.com/xsi\"><monitoredUserList>{entries}</monitoredUserList></BusyLampField>"
        );
        let user = format!("user{watcher:05}@{domain}");
        let response = http
            .put(format!(
                "{xsp}/com.broadsoft.xsi-actions/v2.0/user/{user}/services/BusyLampField"
            ))
            .basic_auth(&user, Some(format!("password{watcher:05}")))
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{user}'s list: {}", response.status()));
        }
    }
    report(&format!(
        "busy lamp field lists: {watchers} watchers of {monitored} users each, set in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[allow(
    clippy::too_many_arguments,
    reason = "the subcommand's arguments, passed through"
)]
/// What `drive` sends.
struct Load<'a> {
    users: usize,
    rate: u64,
    seconds: u64,
    domain: &'a str,
}

async fn drive(
    control: &str,
    gateways: &[String],
    tap_user: &str,
    load: &Load<'_>,
    firebase: Option<&str>,
) -> Result<(), String> {
    let Load {
        users,
        rate,
        seconds,
        domain,
    } = *load;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .map_err(|e| e.to_string())?;
    let mut states = Vec::with_capacity(users);
    for i in 0..users {
        let url = format!("{control}/users/user{i:05}@{domain}");
        states.push(json_of(http.get(&url)).await?);
    }
    // What the taps hold already (the initial state of user-level sets, read at login) is not
    // the drive's: each instance's tap is read from here on. Each user's events come through
    // the one instance that keeps the user's channel set, in order.
    let mut before = Vec::with_capacity(gateways.len());
    for gateway in gateways {
        before.push(tapped(&http, gateway, tap_user).await?.len());
    }
    // Sent changes by user: the unix ms each was sent and the DND it set, in order.
    let sent: Arc<std::sync::Mutex<Sent>> = Arc::default();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let total = rate * seconds;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..total {
        tokio::time::sleep_until(
            (started + interval * u32::try_from(k).unwrap_or(u32::MAX)).into(),
        )
        .await;
        let i = (k as usize) % users;
        let state = &mut states[i];
        let active = state["do_not_disturb"]["active"].as_bool().unwrap_or(false);
        state["do_not_disturb"]["active"] = json!(!active);
        let body = state.clone();
        let user = format!("user{i:05}@{domain}");
        let url = format!("{control}/users/{user}");
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (http, sent) = (http.clone(), Arc::clone(&sent));
        // Record before sending: the order per user is the order of the changes.
        sent.lock()
            .map_err(|e| e.to_string())?
            .entry(user)
            .or_default()
            .push((unix_ms(), !active));
        tasks.push(tokio::spawn(async move {
            let put = Instant::now();
            let ok = http
                .put(&url)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            drop(permit);
            (
                ok,
                u64::try_from(put.elapsed().as_millis()).unwrap_or(u64::MAX),
            )
        }));
    }
    let mut failed = 0;
    let mut puts = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (ok, took) = task.await.map_err(|e| e.to_string())?;
        failed += u64::from(!ok);
        puts.push(took);
    }
    puts.sort_unstable();
    let driven = started.elapsed().as_secs_f64();
    report(&format!(
        "changes {total} in {driven:.1}s ({:.0}/s), failed {failed}; the simulator answered each in ms p50 {} p99 {}",
        total as f64 / driven,
        percentile(&puts, 0.5),
        percentile(&puts, 0.99)
    ));

    // Wait until the bus has every change (bounded), then match them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let mut events = Vec::new();
        for (gateway, skip) in gateways.iter().zip(&before) {
            events.extend(
                tapped(&http, gateway, tap_user)
                    .await?
                    .into_iter()
                    .skip(*skip),
            );
        }
        if events.len() as u64 >= total || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let sent: Sent = std::mem::take(&mut *sent.lock().map_err(|e| e.to_string())?);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut latencies = Vec::with_capacity(events.len());
    // Two legs: the change until xsi-events read its bytes off the channel (the simulator's
    // write, which its answer to the change bounds, the socket and the host's stream reader),
    // and from that read to the consumer (xsi-events's decoding and uniqueId, the bus).
    let (mut to_channel, mut in_gateway) = (Vec::new(), Vec::new());
    // A user's first event also creates its uniqueId in the store: measured apart.
    let mut warm = Vec::new();
    let (mut first, mut last) = (u64::MAX, 0u64);
    for event in &events {
        let Some(user) = event["payload"]["user_id"].as_str() else {
            continue;
        };
        let arrived = event["arrived_ms"].as_u64().unwrap_or(0);
        let k = seen.entry(user).or_default();
        if let Some((at, _)) = sent.get(user).and_then(|times| times.get(*k)) {
            latencies.push(arrived.saturating_sub(*at));
            if *k > 0 {
                warm.push(arrived.saturating_sub(*at));
            }
            if let Some(received) = event["payload"]["received_ms"].as_u64() {
                to_channel.push(received.saturating_sub(*at));
                in_gateway.push(arrived.saturating_sub(received));
            }
            first = first.min(arrived);
            last = last.max(arrived);
        }
        *k += 1;
    }
    latencies.sort_unstable();
    to_channel.sort_unstable();
    warm.sort_unstable();
    in_gateway.sort_unstable();
    let span = (last.saturating_sub(first)) as f64 / 1000.0;
    report(&format!(
        "bus events {} of {total} ({:.0}/s over {span:.1}s); change->bus latency ms p50 {} p99 {} max {}",
        latencies.len(),
        latencies.len() as f64 / span.max(0.001),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0)
    ));
    report(&format!(
        "  without each user's first event (which creates its uniqueId): p50 {} p99 {} max {}",
        percentile(&warm, 0.5),
        percentile(&warm, 0.99),
        warm.last().copied().unwrap_or(0)
    ));
    report(&format!(
        "  change->read off the channel (simulator, socket, host stream) ms p50 {} p99 {}; read->bus (xsi-events, bus) ms p50 {} p99 {}",
        percentile(&to_channel, 0.5),
        percentile(&to_channel, 0.99),
        percentile(&in_gateway, 0.5),
        percentile(&in_gateway, 0.99)
    ));
    if (latencies.len() as u64) < total || failed > 0 {
        return Err("not every change reached the bus".to_owned());
    }
    if let Some(firebase) = firebase {
        let unique_ids: HashMap<&str, &str> = events
            .iter()
            .filter_map(|e| {
                Some((
                    e["payload"]["unique_id"].as_str()?,
                    e["payload"]["user_id"].as_str()?,
                ))
            })
            .collect();
        database_lag(&http, firebase, &sent, &unique_ids, total).await?;
    }
    Ok(())
}

/// A GET's JSON answer.
async fn json_of(request: reqwest::RequestBuilder) -> Result<Value, String> {
    request
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}

/// The DND events one instance's tap fixture saw, oldest first.
async fn tapped(
    http: &reqwest::Client,
    gateway: &str,
    tap_user: &str,
) -> Result<Vec<Value>, String> {
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{tap_user}:x")
        )
    );
    let tap = format!("{gateway}/com.broadsoft.xsi-actions/v2.0/user/{tap_user}/profile");
    let tapped = json_of(
        http.get(&tap)
            .header("authorization", &auth)
            .header("x-fixture", "tapped")
            .header("x-fixture-arg", "DoNotDisturbEvent"),
    )
    .await?;
    Ok(tapped["events"].as_array().cloned().unwrap_or_default())
}

/// Matches each change to the first database write after it that holds its DND value and
/// prints the change -> database latency. A change that a later one overtook before any write
/// carried it (coalesced) has no latency; a user's last change must have been written.
async fn database_lag(
    http: &reqwest::Client,
    firebase: &str,
    sent: &Sent,
    unique_ids: &HashMap<&str, &str>,
    total: u64,
) -> Result<(), String> {
    // Wait until the writes stop growing (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut writes: Vec<Value> = Vec::new();
    loop {
        let now: Vec<Value> = http
            .get(format!("{firebase}/_standin/writes"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let settled = !now.is_empty() && now.len() == writes.len();
        writes = now;
        if settled || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    // DND values written per user, in order: (at_ms, active).
    let mut written: HashMap<&str, Vec<(u64, bool)>> = HashMap::new();
    // Lamps written per (watched user, watcher), in order: (at_ms, shows DND).
    let mut lamps: HashMap<(&str, &str), Vec<(u64, bool)>> = HashMap::new();
    let mut locations = 0usize;

    for write in &writes {
        let at = write["at_ms"].as_u64().unwrap_or(0);
        for location in write["locations"].as_array().into_iter().flatten() {
            locations += 1;
            let (Some(path), value) = (location[0].as_str(), &location[1]) else {
                continue;
            };
            let mut parts = path.split('/');
            let (Some("users"), Some(uid), Some(child)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if child == "blf" {
                if let (Some(watched), Some(state)) = (
                    parts.next().and_then(|id| unique_ids.get(id)),
                    value["state"].as_str(),
                ) {
                    lamps
                        .entry((watched, uid))
                        .or_default()
                        .push((at, state == "dnd"));
                }
                continue;
            }
            let Some(user) = unique_ids.get(uid) else {
                continue;
            };
            let active = match child {
                "dnd" => value["active"].as_bool(),
                _ => None,
            };
            if let Some(active) = active {
                written.entry(user).or_default().push((at, active));
            }
        }
    }
    let (mut lags, mut coalesced, mut missing) = (Vec::new(), 0u64, 0u64);
    for (user, changes) in sent {
        let writes = written.get(user.as_str()).map_or(&[][..], Vec::as_slice);
        for (k, (at, active)) in changes.iter().enumerate() {
            let next = changes.get(k + 1).map_or(u64::MAX, |(t, _)| *t);
            match writes.iter().find(|(w, v)| *w >= *at && v == active) {
                Some((w, _)) if *w < next => lags.push(w - at),
                Some(_) => coalesced += 1,
                // Only the last change of a user must have been written: earlier ones may be
                // overtaken by the next before any write.
                None if next == u64::MAX => missing += 1,
                None => coalesced += 1,
            }
        }
    }
    lags.sort_unstable();
    let span = writes.first().zip(writes.last()).map_or(0.0, |(a, b)| {
        b["at_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(a["at_ms"].as_u64().unwrap_or(0)) as f64
            / 1000.0
    });
    report(&format!(
        "database writes {} carrying {locations} locations over {span:.1}s ({:.0} changes/s written, {:.1} locations per write)",
        writes.len(),
        lags.len() as f64 / span.max(0.001),
        locations as f64 / (writes.len().max(1)) as f64
    ));
    report(&format!(
        "change->database latency ms p50 {} p99 {} max {}; {} of {total} changes written, {coalesced} coalesced into a later write, {missing} never written",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0),
        lags.len()
    ));
    if !lamps.is_empty() {
        lamp_lag(sent, &lamps, total);
    }
    if missing > 0 {
        return Err("not every change reached the database".to_owned());
    }
    Ok(())
}

/// Busy lamp field: for each change and each watcher of the changed user, the first lamp
/// written to that watcher showing it; and how many lamp locations each change cost.
fn lamp_lag(sent: &Sent, lamps: &HashMap<(&str, &str), Vec<(u64, bool)>>, total: u64) {
    // Lamps written since the first change: the ones written at login are not the events'.
    let from = sent
        .values()
        .filter_map(|changes| changes.first())
        .map(|(at, _)| *at)
        .min()
        .unwrap_or(0);
    let lamp_locations = lamps
        .values()
        .flatten()
        .filter(|(at, _)| *at >= from)
        .count();
    let (mut lags, mut coalesced) = (Vec::new(), 0u64);
    for ((watched, _), writes) in lamps {
        let Some(changes) = sent.get(*watched) else {
            continue;
        };
        for (k, (at, active)) in changes.iter().enumerate() {
            let next = changes.get(k + 1).map_or(u64::MAX, |(t, _)| *t);
            match writes.iter().find(|(w, v)| *w >= *at && v == active) {
                Some((w, _)) if *w < next => lags.push(w - at),
                _ => coalesced += 1,
            }
        }
    }
    lags.sort_unstable();
    report(&format!(
        "busy lamp field: {lamp_locations} lamp locations for {total} changes ({:.1} per change), {} watcher-lamps",
        lamp_locations as f64 / total.max(1) as f64,
        lamps.len()
    ));
    report(&format!(
        "change->lamp latency ms p50 {} p99 {} max {} over {} (change, watcher) pairs, {coalesced} coalesced",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0),
        lags.len()
    ));
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match Args::parse().command {
        Command::Login {
            gateway,
            users,
            first,
            concurrency,
            domain,
        } => login(&gateway, (first, users), concurrency, &domain).await,
        Command::BlfLists {
            xsp,
            watchers,
            first,
            monitored,
            event_users,
            domain,
        } => blf_lists(&xsp, (first, watchers), monitored, event_users, &domain).await,
        Command::Drive {
            control,
            gateway,
            tap_user,
            users,
            rate,
            seconds,
            domain,
            firebase,
        } => {
            let load = Load {
                users,
                rate,
                seconds,
                domain: &domain,
            };
            drive(&control, &gateway, &tap_user, &load, firebase.as_deref()).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("events-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
