//! XSI-Events through the real xsigate with the xsi-events plugin against the XSI simulator,
//! with short timings: typed events of every package on the bus (watched by the fixture
//! plugin's tap), acknowledgements, failover to the other XSP with a resync, resuming after a
//! crash without a new login, logout, bad documents, and a soak with events flowing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection as _;
use xsigate::state::store::DATABASE_FILE;
use xsigate_tests::{
    Gateway, Login, basic, change_user, client, plugin_library, provider_for_simulator,
    provider_urls, sim_get,
};

const ALICE: &str = "alice@acme.example";
const BOB: &str = "bob@acme.example";
const CENTER: &str = "sales-cc@acme.example";
const ADMIN: &str = "admin@acme.example";
const PASSWORD: &str = "pw-events";
const WAIT: Duration = Duration::from_secs(15);
/// Every package the plugin subscribes by default.
const PACKAGES: [&str; 9] = [
    "Advanced Call",
    "Do Not Disturb",
    "Call Center Queue",
    "Call Center Agent Monitoring",
    "Voice Mail Message Summary",
    "Call Forwarding Always",
    "Remote Office",
    "Call Center Monitoring",
    "CommPilot Express",
];

/// Two XSPs; alice is an agent of the sales call centre; `events` is the simulator's `[events]`
/// table body.
async fn simulator(users: &[&str], events: &str) -> std::sync::Arc<xsi_sim::Simulator> {
    simulator_with(users, events, "").await
}

/// Like [`simulator`], with `top` added to the seed's top-level keys.
async fn simulator_with(
    users: &[&str],
    events: &str,
    top: &str,
) -> std::sync::Arc<xsi_sim::Simulator> {
    let mut seed = format!("xsp = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n{top}\n");
    for (i, user) in users.iter().enumerate() {
        seed.push_str(&format!(
            "[[users]]\nuser_id = \"{user}\"\npassword = \"{PASSWORD}\"\nservice_provider = \"acme\"\n\
             is_enterprise = true\ngroup = \"sales\"\nnumber = \"20255501{i:02}\"\nextension = \"1{i:02}\"\n"
        ));
    }
    seed.push_str(&format!(
        "[[call_centers]]\nuser_id = \"{CENTER}\"\nname = \"Sales\"\nnumber = \"2025550300\"\n\
         service_provider = \"acme\"\ngroup = \"sales\"\nagents = [\"{ALICE}\"]\n\
         [[admins]]\nuser_id = \"{ADMIN}\"\npassword = \"{PASSWORD}\"\n\
         scope = {{ level = \"service_provider\", service_provider = \"acme\" }}\n\
         [events]\n{events}\n"
    ));
    xsi_sim::Simulator::start(toml::from_str(&seed).unwrap())
        .await
        .unwrap()
}

/// xsigate with idp-broadsoft, xsi-events (its provider table `events`) and the tap;
/// `provider` is added to the provider table.
async fn gateway(sim: &xsi_sim::Simulator, events: &str, provider: &str) -> Gateway {
    gateway_on_store(sim, events, provider, "").await
}

/// Like [`gateway`], with these `[server.store]` settings.
async fn gateway_on_store(
    sim: &xsi_sim::Simulator,
    events: &str,
    provider: &str,
    store: &str,
) -> Gateway {
    let provider = provider_for_simulator(
        "acme",
        &["acme.example"],
        sim,
        &format!("{PLUGINS}\n{provider}"),
    );
    gateway_for(events, &provider, store).await
}

/// The plugins of the provider table in [`gateway_for`].
const PLUGINS: &str = "plugins = [\"broadsoft\", \"events\", \"tap\"]";

/// xsigate with idp-broadsoft, xsi-events and the tap in front of `provider_table` (the whole
/// `[providers.acme]`, with [`PLUGINS`]).
async fn gateway_for(events: &str, provider_table: &str, store: &str) -> Gateway {
    let config = format!(
        "[server.store]\n{store}\n\
         [[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
         [[plugins]]\nname = \"events\"\npath = \"{}\"\n\
         [plugins.config.providers.acme]\n{events}\n\
         [[plugins]]\nname = \"tap\"\npath = \"{}\"\n\
         [plugins.config]\ntap = [\"xsi.event\"]\n{provider_table}",
        plugin_library("xsigate-idp-broadsoft").display(),
        plugin_library("xsigate-xsi-events").display(),
        plugin_library("xsigate-fixture-host-services").display(),
    );
    let mut gateway = Gateway::start(&config).await;
    gateway.wait_for("/readyz", 200).await;
    gateway
}

/// Fast timings: heartbeats every second, lost after 3 s of silence.
const FAST: &str = "heartbeat_seconds = 1\nsilence_seconds = 3\n";

async fn log_in(gateway: &Gateway, user: &str) -> Login {
    xsigate_tests::log_in(gateway, user, PASSWORD).await
}

async fn log_out(gateway: &Gateway, session: &Login) {
    let response = client()
        .post(gateway.url("/api/access/services/logout"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// What the tap saw on `xsi.event`, oldest first.
async fn bus(gateway: &Gateway) -> Vec<Value> {
    let response = client()
        .get(gateway.url(&format!(
            "/com.broadsoft.xsi-actions/v2.0/user/{ALICE}/profile"
        )))
        .header("authorization", basic(ALICE, PASSWORD))
        .header("x-fixture", "tapped")
        .header("x-fixture-arg", "")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let tapped: Value = response.json().await.unwrap();
    tapped["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"].clone())
        .collect()
}

/// Waits for a bus event (newer than the first `skip`) that satisfies `condition`.
async fn wait_bus(
    gateway: &Gateway,
    skip: usize,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = bus(gateway).await;
        if let Some(event) = events.iter().skip(skip).find(|e| condition(e)) {
            return event.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never on the bus; saw {}",
            serde_json::to_string_pretty(&events).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is(event: &Value, user: &str, event_type: &str) -> bool {
    event["user_id"] == user && event["event"] == event_type
}

fn control(sim: &xsi_sim::Simulator, path: &str) -> String {
    format!("http://{}{path}", sim.control_addr())
}

async fn get(sim: &xsi_sim::Simulator, path: &str) -> Value {
    sim_get(sim, path).await
}

/// The open channels of a channel owner.
async fn channels_of(sim: &xsi_sim::Simulator, owner: &str) -> Vec<Value> {
    get(sim, "/channels")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["owner"] == owner)
        .cloned()
        .collect()
}

async fn wait_channel(
    sim: &xsi_sim::Simulator,
    owner: &str,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let channels = channels_of(sim, owner).await;
        if let Some(channel) = channels.iter().find(|c| condition(c)) {
            return channel.clone();
        }
        assert!(Instant::now() < deadline, "{what}: channels {channels:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn subscriptions_of(sim: &xsi_sim::Simulator, owner: &str) -> Vec<Value> {
    get(sim, "/subscriptions")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["owner"] == owner)
        .cloned()
        .collect()
}

/// Every acknowledgement the simulator received for events it sent, by status.
async fn acks(sim: &xsi_sim::Simulator) -> Vec<Value> {
    get(sim, "/acks").await.as_array().unwrap().clone()
}

/// Places a call from `from` to `to`'s extension through XSI-Actions on the simulator.
async fn call(sim: &xsi_sim::Simulator, from: &str, address: &str) {
    let xsp = sim.xsp_addrs()[0];
    let response = client()
        .post(format!(
            "http://{xsp}/com.broadsoft.xsi-actions/v2.0/user/{from}/calls/new?address={address}"
        ))
        .header("authorization", basic(from, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_packages_arrive_typed_on_the_bus_and_every_event_is_acknowledged() {
    let sim = simulator(&[ALICE, BOB], "").await;
    let gateway = gateway(&sim, FAST, "").await;
    let session = log_in(&gateway, ALICE).await;

    // One channel, one subscription per package, each with its initial state.
    wait_channel(&sim, ALICE, "alice's channel", |_| true).await;
    let deadline = Instant::now() + WAIT;
    while subscriptions_of(&sim, ALICE).await.len() < PACKAGES.len() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            subscriptions_of(&sim, ALICE).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let packages: HashSet<String> = subscriptions_of(&sim, ALICE)
        .await
        .iter()
        .map(|s| s["packages"][0].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(packages, PACKAGES.iter().map(|p| (*p).to_owned()).collect());
    let initial = wait_bus(&gateway, 0, "the initial DND state", |e| {
        is(e, ALICE, "DoNotDisturbEvent")
    })
    .await;
    assert_eq!(
        initial["state"],
        json!({ "kind": "do_not_disturb", "active": false, "ring_splash": false })
    );
    assert_eq!(initial["package"], "Do Not Disturb");
    assert_eq!(initial["source"], "event");
    assert_eq!(initial["provider"], "acme");
    let unique_id = initial["unique_id"].as_str().unwrap().to_owned();
    assert!(!unique_id.is_empty() && !unique_id.contains("alice"));
    wait_bus(&gateway, 0, "the initial call state", |e| {
        is(e, ALICE, "CallSubscriptionEvent")
            && e["state"] == json!({ "kind": "calls", "hook_status": "On-Hook", "calls": [] })
    })
    .await;
    wait_bus(&gateway, 0, "the initial agent monitoring", |e| {
        is(e, ALICE, "CallCenterAgentMonitoringSubscriptionEvent")
            && e["state"]["kind"] == "monitoring"
    })
    .await;

    // Every kind of change reaches the bus, typed.
    let seen = bus(&gateway).await.len();
    change_user(&sim, ALICE, |u| {
        u["do_not_disturb"] = json!({ "active": true, "ring_splash": true });
        u["call_forwarding_always"] =
            json!({ "active": true, "forward_to_phone_number": "+12025550199", "ring_splash": false });
        u["remote_office"] = json!({ "active": true, "remote_office_number": "+12025550177" });
        u["voice_mail"] = json!({ "new_messages": 2, "old_messages": 5 });
        u["comm_pilot_express"] = json!("Busy");
        u["agent_state"] = json!("Available");
        u["agent_monitoring"] = json!({ "average_acd_call_time_ms": 6154, "average_acd_outgoing_call_time_ms": 0 });
    })
    .await;
    let expect = [
        (
            "DoNotDisturbEvent",
            json!({ "kind": "do_not_disturb", "active": true, "ring_splash": true }),
        ),
        (
            "CallForwardingAlwaysEvent",
            json!({ "kind": "call_forwarding_always", "active": true, "forward_to": "+12025550199", "ring_splash": false }),
        ),
        (
            "RemoteOfficeEvent",
            json!({ "kind": "remote_office", "active": true, "number": "+12025550177" }),
        ),
        (
            "VoiceMailMessageSummaryEvent",
            json!({ "kind": "voice_mail_summary", "new_messages": 2, "old_messages": 5, "new_urgent_messages": 0, "old_urgent_messages": 0 }),
        ),
        (
            "CommPilotExpressEvent",
            json!({ "kind": "comm_pilot_express", "profile": "Busy" }),
        ),
    ];
    for (event_type, state) in expect {
        let event = wait_bus(&gateway, seen, event_type, |e| is(e, ALICE, event_type)).await;
        assert_eq!(event["state"], state, "{event_type}");
        assert_eq!(event["unique_id"], unique_id.as_str());
    }
    let monitoring = wait_bus(&gateway, seen, "agent monitoring", |e| {
        is(e, ALICE, "CallCenterAgentMonitoringEvent")
    })
    .await;
    assert_eq!(monitoring["package"], "Call Center Agent Monitoring");
    assert!(
        monitoring["state"]["figures"]
            .as_array()
            .unwrap()
            .contains(&json!({ "name": "averageACDCallTime", "value": 6154, "severity": null, "threshold": null })),
        "{monitoring}"
    );

    // A call to alice: Advanced Call's CallReceivedEvent, with the call typed.
    call(&sim, BOB, "100").await;
    let received = wait_bus(&gateway, seen, "the call", |e| {
        is(e, ALICE, "CallReceivedEvent")
    })
    .await;
    assert_eq!(received["package"], "Advanced Call");
    let call = &received["state"]["call"];
    assert_eq!(received["state"]["kind"], "call");
    assert_eq!(call["personality"], "Terminator");
    assert_eq!(call["state"], "Alerting");
    assert_eq!(call["remote_party"]["user_id"], BOB);
    assert!(call["call_id"].as_str().unwrap().starts_with("callhalf-"));

    // Every event the simulator sent was acknowledged with 200, on the channel's XSP.
    let deadline = Instant::now() + WAIT;
    loop {
        let acks = acks(&sim).await;
        let sent: u64 = subscriptions_of(&sim, ALICE)
            .await
            .iter()
            .map(|s| s["events_sent"].as_u64().unwrap())
            .sum();
        if acks.len() as u64 >= sent {
            assert!(
                acks.iter()
                    .all(|a| a["known"] == true && a["status"] == "200"),
                "{acks:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "acks {} of {sent}", acks.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let heartbeats = gateway
        .wait_metric(
            "xsigate_plugin_events_heartbeats_total{provider=\"acme\",result=\"ok\"}",
            |v| v >= 2.0,
        )
        .await;
    assert!(heartbeats >= 2.0);
    assert_eq!(
        gateway
            .metric("xsigate_plugin_events_channels{provider=\"acme\",state=\"open\"}")
            .await,
        Some(1.0)
    );

    // The user's password is in neither the log nor the store in clear text.
    assert!(!gateway.logs().contains(PASSWORD));
    for file in std::fs::read_dir(gateway.dir().join("data")).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap_or_default();
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes())
        );
    }

    // The last session's logout deletes the subscriptions and the channel.
    log_out(&gateway, &session).await;
    let deadline = Instant::now() + WAIT;
    while !channels_of(&sim, ALICE).await.is_empty()
        || !subscriptions_of(&sim, ALICE).await.is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?} {:?}",
            channels_of(&sim, ALICE).await,
            subscriptions_of(&sim, ALICE).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Channel streams run on connections of their own, not on the provider's HTTP client: to
/// HTTPS XSPs they check the certificate against the provider's CA as every other call does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_reach_https_xsps_trusted_through_the_providers_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("xsp.pem");
    let sim = simulator_with(
        &[ALICE],
        "",
        &format!("tls = {{ self_signed_cert_out = \"{}\" }}", cert.display()),
    )
    .await;
    let xsps: Vec<String> = sim
        .xsp_addrs()
        .iter()
        .map(|a| format!("https://127.0.0.1:{}", a.port()))
        .collect();
    let provider = provider_urls(
        "acme",
        &["acme.example"],
        &xsps,
        &format!("{PLUGINS}\nca_file = \"{}\"", cert.display()),
    );
    let gateway = gateway_for(FAST, &provider, "").await;
    let _session = log_in(&gateway, ALICE).await;
    wait_channel(&sim, ALICE, "alice's channel over TLS", |_| true).await;
    let initial = wait_bus(&gateway, 0, "alice's DND over TLS", |e| {
        is(e, ALICE, "DoNotDisturbEvent")
    })
    .await;
    // An event after the initial state: the stream itself is read, not only its head.
    change_user(&sim, ALICE, |u| u["do_not_disturb"]["active"] = json!(true)).await;
    wait_bus(&gateway, 0, "alice's DND change over TLS", |e| {
        is(e, ALICE, "DoNotDisturbEvent") && e["state"]["active"] == true
    })
    .await;
    assert_eq!(initial["state"]["active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_level_channel_carries_every_users_and_call_centres_events() {
    let sim = simulator(&[ALICE, BOB], "").await;
    let master = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(master.path(), PASSWORD).unwrap();
    let gateway = gateway(
        &sim,
        &format!("{FAST}level = \"service_provider\"\nservice_provider = \"acme\"\n"),
        &format!(
            "master = {{ user = \"{ADMIN}\", password_file = \"{}\" }}",
            master.path().display()
        ),
    )
    .await;

    // No login: the master's channel set opens at start, with a subscription per package at
    // the service provider.
    wait_channel(&sim, ADMIN, "the provider's channel", |_| true).await;
    let deadline = Instant::now() + WAIT;
    while subscriptions_of(&sim, ADMIN).await.len() < PACKAGES.len() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            subscriptions_of(&sim, ADMIN).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        subscriptions_of(&sim, ADMIN)
            .await
            .iter()
            .all(|s| s["target_type"] == "ServiceProvider" && s["target_id"] == "acme")
    );

    change_user(&sim, BOB, |u| {
        u["do_not_disturb"]["active"] = json!(true);
    })
    .await;
    let dnd = wait_bus(&gateway, 0, "bob's DND", |e| {
        is(e, BOB, "DoNotDisturbEvent")
    })
    .await;
    assert_eq!(dnd["state"]["active"], true);
    change_user(&sim, ALICE, |u| u["agent_state"] = json!("Available")).await;
    wait_bus(&gateway, 0, "the call centre's figures", |e| {
        is(e, CENTER, "CallCenterMonitoringEvent") && e["package"] == "Call Center Monitoring"
    })
    .await;
    let response = client()
        .post(control(&sim, &format!("/callcenters/{CENTER}/queue")))
        .json(&json!({ "address": "+15007003333", "name": "Caller" }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let added = wait_bus(&gateway, 0, "a queued call", |e| {
        is(e, CENTER, "ACDCallAddedEvent")
    })
    .await;
    assert_eq!(added["package"], "Call Center Queue");
    assert_eq!(added["state"]["kind"], "queued_call");
    assert_eq!(added["state"]["position"], 1);
    assert_eq!(
        added["state"]["entry"]["remote_party"]["address"],
        "+15007003333"
    );
    assert_eq!(added["state"]["entry"]["acd_name"], "Sales");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_xsp_of_a_channel_fails_over_within_five_seconds_and_resyncs() {
    let sim = simulator(&[ALICE, BOB], "event_timeout_seconds = 3").await;
    let gateway = gateway(&sim, FAST, "").await;
    let _session = log_in(&gateway, ALICE).await;
    let first = wait_channel(&sim, ALICE, "alice's channel", |_| true).await;
    let xsp = first["xsp"].as_u64().unwrap() as usize;
    wait_bus(&gateway, 0, "the initial DND state", |e| {
        is(e, ALICE, "DoNotDisturbEvent")
    })
    .await;

    // The XSP dies; during the gap DND changes, and that event is lost with the channel.
    let killed = Instant::now();
    assert!(sim.stop_xsp(xsp));
    change_user(&sim, ALICE, |u| {
        u["do_not_disturb"] = json!({ "active": true, "ring_splash": false });
        u["call_forwarding_always"] =
            json!({ "active": true, "forward_to_phone_number": "+12025550188", "ring_splash": false });
    })
    .await;
    let moved = wait_channel(&sim, ALICE, "a channel on the other XSP", |c| {
        c["xsp"].as_u64() != Some(xsp as u64)
    })
    .await;
    assert_eq!(
        moved["channel_set_id"], first["channel_set_id"],
        "the same set"
    );

    // The resync brings the bus to the simulator's state, through XSI-Actions.
    let resynced = wait_bus(&gateway, 0, "the resynced DND", |e| {
        is(e, ALICE, "resync") && e["package"] == "Do Not Disturb"
    })
    .await;
    assert_eq!(resynced["source"], "resync");
    let truth = get(&sim, &format!("/users/{ALICE}")).await;
    assert_eq!(
        resynced["state"]["active"],
        truth["do_not_disturb"]["active"]
    );
    wait_bus(&gateway, 0, "the resynced forwarding", |e| {
        is(e, ALICE, "resync")
            && e["state"]
                == json!({ "kind": "call_forwarding_always", "active": true, "forward_to": "+12025550188", "ring_splash": false })
    })
    .await;

    // Events flow again through the other XSP, within 5 s of the kill.
    let seen = bus(&gateway).await.len();
    change_user(&sim, ALICE, |u| {
        u["do_not_disturb"]["active"] = json!(false);
    })
    .await;
    let event = wait_bus(&gateway, seen, "an event after failover", |e| {
        is(e, ALICE, "DoNotDisturbEvent")
    })
    .await;
    assert_eq!(event["state"]["active"], false);
    let elapsed = killed.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "events resumed after {elapsed:?}"
    );
    assert!(
        gateway
            .metric("xsigate_plugin_events_failovers_total{provider=\"acme\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        gateway
            .metric("xsigate_plugin_events_resyncs_total{provider=\"acme\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

/// A crash and a restart: the restarted process takes its predecessor's sets up at once (their
/// leases, a minute long here, are freed rather than waited out), in the same channel set and
/// subscriptions, without logging anyone in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_subscriptions_resume_without_a_new_login() {
    // The XSP's 30-second heartbeat timeout outlasts the test: only a delete ends the old channel.
    let sim = simulator(&[ALICE, BOB], "").await;
    let mut gateway = gateway_on_store(&sim, FAST, "", "lease_seconds = 60").await;
    let _session = log_in(&gateway, ALICE).await;
    let first = wait_channel(&sim, ALICE, "alice's channel", |_| true).await;
    let deadline = Instant::now() + WAIT;
    while subscriptions_of(&sim, ALICE).await.len() < PACKAGES.len() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before: HashSet<String> = subscriptions_of(&sim, ALICE)
        .await
        .iter()
        .map(|s| s["subscription_id"].as_str().unwrap().to_owned())
        .collect();
    let logins_before = sim
        .platform()
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/profile"))
        .count();

    gateway.restart().await;
    gateway.wait_for("/readyz", 200).await;

    // A new channel in the same set; the subscriptions are the same ones, refreshed.
    wait_channel(&sim, ALICE, "a new channel after the restart", |c| {
        c["channel_id"] != first["channel_id"] && c["channel_set_id"] == first["channel_set_id"]
    })
    .await;
    // The crashed instance's channel is deleted rather than left to take events until its
    // heartbeats lapse.
    let deadline = Instant::now() + WAIT;
    while channels_of(&sim, ALICE).await.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            channels_of(&sim, ALICE).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it is kept alive.
    wait_channel(&sim, ALICE, "heartbeats on the new channel", |c| {
        c["heartbeats"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let after: HashSet<String> = subscriptions_of(&sim, ALICE)
        .await
        .iter()
        .map(|s| s["subscription_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(after, before);
    change_user(&sim, ALICE, |u| {
        u["do_not_disturb"]["active"] = json!(true);
    })
    .await;
    let event = wait_bus(&gateway, 0, "an event after the restart", |e| {
        is(e, ALICE, "DoNotDisturbEvent") && e["state"]["active"] == true
    })
    .await;
    assert_eq!(event["source"], "event");
    let logins_after = sim
        .platform()
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/profile"))
        .count();
    assert_eq!(logins_after, logins_before, "nobody logged in again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_events_are_acknowledged_with_their_status_and_counted() {
    let sim = simulator(&[ALICE, BOB], "").await;
    let gateway = gateway(&sim, FAST, "").await;
    let _session = log_in(&gateway, ALICE).await;
    let channel = wait_channel(&sim, ALICE, "alice's channel", |_| true).await;
    let channel_id = channel["channel_id"].as_str().unwrap();
    wait_bus(&gateway, 0, "the initial DND state", |e| {
        is(e, ALICE, "DoNotDisturbEvent")
    })
    .await;
    let subscription = subscriptions_of(&sim, ALICE).await[0]["subscription_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let event = |event_id: &str, subscription_id: &str, data: &str| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><xsi:Event xmlns:xsi="http://schema.broadsoft.com/xsi" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xsi1:type="xsi:SubscriptionEvent"><xsi:eventID>{event_id}</xsi:eventID><xsi:sequenceNumber>99</xsi:sequenceNumber><xsi:userId>{ALICE}</xsi:userId><xsi:externalApplicationId>xsigate</xsi:externalApplicationId><xsi:subscriptionId>{subscription_id}</xsi:subscriptionId><xsi:channelId>{channel_id}</xsi:channelId><xsi:targetId>{ALICE}</xsi:targetId>{data}</xsi:Event>"#
        )
    };
    let inject = |document: String, event_id: Option<&str>| {
        let url = match event_id {
            Some(id) => control(
                &sim,
                &format!("/channels/{channel_id}/inject?event_id={id}"),
            ),
            None => control(&sim, &format!("/channels/{channel_id}/inject")),
        };
        async move {
            let response = client().post(url).body(document).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
    };
    inject(
        event(
            "e-unknown-type",
            &subscription,
            r#"<xsi:eventData xsi1:type="xsi:MeetMeConferenceEvent"/>"#,
        ),
        Some("e-unknown-type"),
    )
    .await;
    // About a user nobody logged in as: refused, it makes no uniqueId for them either.
    inject(
        event("e-unknown-subscription", "no-such-subscription", r#"<xsi:eventData xsi1:type="xsi:DoNotDisturbEvent"><xsi:info><xsi:active>true</xsi:active></xsi:info></xsi:eventData>"#)
            .replace(&format!("<xsi:targetId>{ALICE}"), &format!("<xsi:targetId>{STRANGER}")),
        Some("e-unknown-subscription"),
    )
    .await;
    inject(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><xsi:Event><xsi:eventID>e-broken</xsi:eventID><open>".to_owned(),
        None,
    )
    .await;

    // The channel goes on: a real change still arrives, on the same channel.
    change_user(&sim, ALICE, |u| {
        u["do_not_disturb"]["active"] = json!(true);
    })
    .await;
    wait_bus(&gateway, 0, "a change after bad documents", |e| {
        is(e, ALICE, "DoNotDisturbEvent") && e["state"]["active"] == true
    })
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let acks = acks(&sim).await;
        let status = |id: &str| {
            acks.iter()
                .find(|a| a["event_id"] == id)
                .map(|a| a["status"].as_str().unwrap().to_owned())
        };
        if status("e-unknown-type").is_some() && status("e-unknown-subscription").is_some() {
            assert_eq!(status("e-unknown-type").as_deref(), Some("400"));
            assert_eq!(status("e-unknown-subscription").as_deref(), Some("481"));
            break;
        }
        assert!(Instant::now() < deadline, "{acks:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        channels_of(&sim, ALICE).await[0]["channel_id"],
        channel["channel_id"],
        "never reconnected"
    );
    let unknown = gateway
        .wait_metric(
            "xsigate_plugin_events_events_total{package=\"unknown\",provider=\"acme\"}",
            |v| v >= 2.0,
        )
        .await;
    assert_eq!(unknown, 2.0);
    gateway
        .wait_metric(
            "xsigate_plugin_events_events_total{package=\"malformed\",provider=\"acme\"}",
            |v| v >= 1.0,
        )
        .await;
    assert_eq!(unique_ids_made_for(&gateway, STRANGER).await, 0);
    assert_eq!(unique_ids_made_for(&gateway, ALICE).await, 1);
    assert!(
        !bus(&gateway)
            .await
            .iter()
            .any(|e| e["event"] == "MeetMeConferenceEvent")
    );
}

/// A user nobody logged in as.
const STRANGER: &str = "mallory@acme.example";

/// How many uniqueIds the gateway's store holds for `user_id`, read from its SQLite file.
async fn unique_ids_made_for(gateway: &Gateway, user_id: &str) -> i64 {
    let file = gateway.dir().join("data").join(DATABASE_FILE);
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .read_only(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM user_ids WHERE lower(user_id) = lower(?1)")
        .bind(user_id)
        .fetch_one(&mut connection)
        .await
        .unwrap()
}

/// Garbage on a channel: bytes that are no XML, a document that never ends (past the 1 MiB a
/// document may take), a DTD that expands entities a billion-fold and one that names an
/// external entity. Each is counted as malformed, nothing is expanded or fetched, memory stays
/// bounded, and the channel goes on delivering real changes without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_channel_is_counted_and_the_channel_goes_on() {
    let canary = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    canary.set_nonblocking(true).unwrap();
    let canary_addr = canary.local_addr().unwrap();
    let sim = simulator(&[ALICE, BOB], "").await;
    let gateway = gateway(&sim, FAST, "").await;
    let _session = log_in(&gateway, ALICE).await;
    let channel = wait_channel(&sim, ALICE, "alice's channel", |_| true).await;
    let channel_id = channel["channel_id"].as_str().unwrap().to_owned();
    wait_bus(&gateway, 0, "the initial DND state", |e| {
        is(e, ALICE, "DoNotDisturbEvent")
    })
    .await;
    let before = gateway.rss_kib();

    let mut laughs =
        String::from("<?xml version=\"1.0\"?><!DOCTYPE xsi:Event [<!ENTITY a \"aaaaaaaaaa\">");
    for level in 1..=8 {
        let previous = if level == 1 {
            "a".to_owned()
        } else {
            format!("a{}", level - 1)
        };
        laughs.push_str(&format!(
            "<!ENTITY a{level} \"{}\">",
            format!("&{previous};").repeat(10)
        ));
    }
    laughs.push_str(&format!(
        "<!ENTITY x SYSTEM \"http://{canary_addr}/\">]><xsi:Event xmlns:xsi=\"http://schema.broadsoft.com/xsi\">\
         <xsi:eventID>&a8;&x;</xsi:eventID></xsi:Event>"
    ));
    let endless = format!(
        "<?xml version=\"1.0\"?><xsi:Event xmlns:xsi=\"http://schema.broadsoft.com/xsi\"><xsi:eventID>{}",
        "z".repeat(1_200_000)
    );
    let garbage = [
        "\u{1}\u{2}not xml at all <<<>>> &&& \u{7f}".to_owned(),
        laughs,
        endless,
        "<?xml version=\"1.0\"?><a><b></a></b>".to_owned(),
    ];
    for document in garbage {
        let response = client()
            .post(control(&sim, &format!("/channels/{channel_id}/inject")))
            .body(document)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    change_user(&sim, ALICE, |u| {
        u["do_not_disturb"]["active"] = json!(true);
    })
    .await;
    wait_bus(&gateway, 0, "a change after the garbage", |e| {
        is(e, ALICE, "DoNotDisturbEvent") && e["state"]["active"] == true
    })
    .await;
    let malformed = gateway
        .wait_metric(
            "xsigate_plugin_events_events_total{package=\"malformed\",provider=\"acme\"}",
            |v| v >= 3.0,
        )
        .await;
    assert!(malformed >= 3.0, "{malformed}");
    assert_eq!(
        channels_of(&sim, ALICE).await[0]["channel_id"],
        channel["channel_id"],
        "never reconnected"
    );
    // What a channel holds of a document is bounded in the splitter (1 MiB, unit-tested there);
    // the process figure is printed for the record.
    let growth = gateway.rss_kib().saturating_sub(before);
    note_rss_growth(growth);
    assert!(canary.accept().is_err(), "the external entity was fetched");
    let logs = gateway.logs();
    assert!(
        !logs.contains("aaaaaaaaaa") && !logs.contains("panicked"),
        "{logs}"
    );
}

/// Prints a measured figure for the record (the suite's only output).
#[allow(clippy::print_stdout)]
fn note_rss_growth(rss_growth_kib: u64) {
    println!("RSS grew {rss_growth_kib} KiB over the garbage");
}

/// `XSIGATE_SOAK_SECONDS` (default 600) of events flowing through ten users' channels, with
/// channels and subscriptions that expire every few seconds and a 3-second heartbeat and
/// acknowledgement deadline on the XSPs: no channel is ever lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_with_events_flowing_never_loses_a_channel() {
    let seconds: u64 = std::env::var("XSIGATE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let users: Vec<String> = (0..10).map(|i| format!("soak{i}@acme.example")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let sim = simulator(
        &names,
        "event_timeout_seconds = 3\nack_timeout_seconds = 3\nchannel_expires_min = 4\n\
         channel_expires_max = 8\nsubscription_expires_min = 4\nsubscription_expires_max = 8",
    )
    .await;
    let gateway = gateway(
        &sim,
        &format!("{FAST}channel_expires_seconds = 6\nsubscription_expires_seconds = 6\n"),
        "",
    )
    .await;
    let mut channels = Vec::new();
    for user in &users {
        log_in(&gateway, user).await;
        channels.push(wait_channel(&sim, user, "a channel", |_| true).await["channel_id"].clone());
    }

    let started = Instant::now();
    let mut toggles = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let user = &users[(toggles % users.len() as u64) as usize];
        change_user(&sim, user, |u| {
            let active = u["do_not_disturb"]["active"].as_bool().unwrap();
            u["do_not_disturb"]["active"] = json!(!active);
        })
        .await;
        toggles += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every user's last DND state reached the bus, and every user kept its first channel.
    for (user, channel) in users.iter().zip(&channels) {
        let truth = get(&sim, &format!("/users/{user}")).await["do_not_disturb"]["active"].clone();
        let deadline = Instant::now() + WAIT;
        loop {
            let last = bus(&gateway)
                .await
                .into_iter()
                .rev()
                .find(|e| e["user_id"] == user.as_str() && e["package"] == "Do Not Disturb");
            if last.as_ref().is_some_and(|e| e["state"]["active"] == truth) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{user}: {last:?} against {truth}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let now = channels_of(&sim, user).await;
        assert_eq!(now.len(), 1, "{user}: {now:?}");
        assert_eq!(&now[0]["channel_id"], channel, "{user} lost its channel");
    }
    let acks = acks(&sim).await;
    assert!(
        acks.len() as u64 >= toggles,
        "{} acks for {toggles} changes",
        acks.len()
    );
    assert!(
        acks.iter()
            .all(|a| a["known"] == true && a["status"] == "200")
    );
    for series in [
        "xsigate_plugin_events_heartbeats_total{provider=\"acme\",result=\"failed\"}",
        "xsigate_plugin_events_ack_failures_total{provider=\"acme\"}",
    ] {
        assert_eq!(gateway.metric(series).await.unwrap_or(0.0), 0.0, "{series}");
    }
    let text = client()
        .get(gateway.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Their series exist from the start, at zero, and stay there.
    for never in ["reconnects_total{", "subscription_failures_total{"] {
        let family = format!("xsigate_plugin_events_{never}");
        let counted: Vec<&str> = text.lines().filter(|l| l.starts_with(&family)).collect();
        assert!(!counted.is_empty(), "{never} has no series");
        assert!(
            counted.iter().all(|l| l.ends_with(" 0")),
            "no channel was reopened, no subscription failed: {counted:?}"
        );
    }
    let heartbeats = gateway
        .metric(r#"xsigate_plugin_events_heartbeats_total{provider="acme",result="ok"}"#)
        .await
        .unwrap();
    assert!(
        heartbeats >= (seconds * users.len() as u64 / 2) as f64,
        "{heartbeats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_subscriptions_are_made_again_and_terminated_channels_reopened() {
    let sim = simulator(&[ALICE, BOB], "").await;
    let gateway = gateway(&sim, FAST, "").await;
    let _session = log_in(&gateway, ALICE).await;
    let channel = wait_channel(&sim, ALICE, "alice's channel", |_| true).await;
    let channel_id = channel["channel_id"].as_str().unwrap().to_owned();
    wait_bus(&gateway, 0, "the initial DND state", |e| {
        is(e, ALICE, "DoNotDisturbEvent")
    })
    .await;
    let dnd = subscriptions_of(&sim, ALICE)
        .await
        .into_iter()
        .find(|s| s["packages"][0] == "Do Not Disturb")
        .unwrap();
    let dnd_id = dnd["subscription_id"].as_str().unwrap().to_owned();

    // BroadWorks ends the DND subscription: it is acknowledged and made again.
    let terminated = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><xsi:Event xmlns:xsi="http://schema.broadsoft.com/xsi" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xsi1:type="xsi:SubscriptionEvent"><xsi:eventID>e-ended</xsi:eventID><xsi:sequenceNumber>9</xsi:sequenceNumber><xsi:userId>{ALICE}</xsi:userId><xsi:externalApplicationId>xsigate</xsi:externalApplicationId><xsi:subscriptionId>{dnd_id}</xsi:subscriptionId><xsi:channelId>{channel_id}</xsi:channelId><xsi:targetId>{ALICE}</xsi:targetId><xsi:eventData xsi1:type="xsi:SubscriptionTerminatedEvent"/></xsi:Event>"#
    );
    let response = client()
        .post(control(
            &sim,
            &format!("/channels/{channel_id}/inject?event_id=e-ended"),
        ))
        .body(terminated)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + WAIT;
    loop {
        let dnd: Vec<Value> = subscriptions_of(&sim, ALICE)
            .await
            .into_iter()
            .filter(|s| s["packages"][0] == "Do Not Disturb")
            .collect();
        if dnd.iter().any(|s| s["subscription_id"] != dnd_id.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "never subscribed again: {dnd:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        acks(&sim)
            .await
            .iter()
            .any(|a| a["event_id"] == "e-ended" && a["status"] == "200")
    );

    // BroadWorks ends the channel: it is opened again, with no acknowledgement.
    let ended = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><xsi:Event xsi1:type="xsi:ChannelTerminatedEvent" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsi="http://schema.broadsoft.com/xsi"><xsi:channelId>{channel_id}</xsi:channelId><xsi:reason>Expired</xsi:reason></xsi:Event>"#
    );
    let response = client()
        .post(control(&sim, &format!("/channels/{channel_id}/inject")))
        .body(ended)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    wait_channel(&sim, ALICE, "a new channel", |c| {
        c["channel_id"] != channel_id.as_str()
    })
    .await;
    gateway
        .wait_metric(
            r#"xsigate_plugin_events_reconnects_total{provider="acme",reason="terminated"}"#,
            |v| v == 1.0,
        )
        .await;
    change_user(&sim, ALICE, |u| {
        u["do_not_disturb"]["active"] = json!(true);
    })
    .await;
    wait_bus(&gateway, 0, "an event on the new channel", |e| {
        is(e, ALICE, "DoNotDisturbEvent") && e["state"]["active"] == true
    })
    .await;
}
