//! Firebase sync through the real xsigate (idp-broadsoft, xsi-events, firebase-sync) against
//! the XSI simulator and the Realtime Database + token endpoint stand-in: custom tokens at
//! login, each user's node kept to the simulator's state, convergence after a 30-second
//! outage, legacy secrets; and end to end with real Firebase parts from npm (firebase-server,
//! the firebase-tools Auth emulator, the Firebase JS SDK as the browser).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xsi_sim::firebase::{Firebase, FirebaseSettings};
use xsigate_tests::{
    Gateway, change_user, free_port, log_in, plugin_library, provider_for_simulator, repo_root,
    sim_get,
};

const ALICE: &str = "alice@acme.example";
const BOB: &str = "bob@acme.example";
const PASSWORD: &str = "pw-firebase";
const WAIT: Duration = Duration::from_secs(20);
const CLIENT_EMAIL: &str = "firebase-sync@demo-xsigate.iam.gserviceaccount.com";
const AUDIENCE: &str =
    "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit";

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/firebase").join(name)
}

async fn simulator() -> Arc<xsi_sim::Simulator> {
    let mut seed = String::from("xsp = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n");
    for (i, user) in [ALICE, BOB].iter().enumerate() {
        seed.push_str(&format!(
            "[[users]]\nuser_id = \"{user}\"\npassword = \"{PASSWORD}\"\nservice_provider = \"acme\"\n\
             is_enterprise = true\ngroup = \"sales\"\nnumber = \"20255501{i:02}\"\nextension = \"1{i:02}\"\n"
        ));
    }
    xsi_sim::Simulator::start(toml::from_str(&seed).unwrap())
        .await
        .unwrap()
}

async fn stand_in(secret: Option<&str>, token_lifetime: Duration) -> Arc<Firebase> {
    Firebase::start(
        FirebaseSettings {
            service_account: std::fs::read_to_string(fixture("service-account.json")).unwrap(),
            secret: secret.map(str::to_owned),
            token_lifetime,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// xsigate with idp-broadsoft, xsi-events (user level, heartbeats every second) and
/// firebase-sync, whose provider table is `firebase`.
async fn gateway(sim: &xsi_sim::Simulator, firebase: &str) -> Gateway {
    let config = format!(
        "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
         [[plugins]]\nname = \"events\"\npath = \"{}\"\n\
         [plugins.config.providers.acme]\nheartbeat_seconds = 1\nsilence_seconds = 3\n\
         [[plugins]]\nname = \"firebase\"\npath = \"{}\"\n\
         [plugins.config]\nbatch_ms = 25\n\
         [plugins.config.providers.acme]\nservice_account_file = \"{}\"\ntimeout_ms = 2000\n{firebase}\n{}",
        plugin_library("xsigate-idp-broadsoft").display(),
        plugin_library("xsigate-xsi-events").display(),
        plugin_library("xsigate-firebase-sync").display(),
        fixture("service-account.json").display(),
        provider_for_simulator(
            "acme",
            &["acme.example"],
            sim,
            "plugins = [\"broadsoft\", \"events\", \"firebase\"]\n",
        ),
    );
    let mut gateway = Gateway::start(&config).await;
    gateway.wait_for("/readyz", 200).await;
    gateway
}

fn oauth(firebase: &Firebase) -> String {
    format!(
        "database_url = \"{}\"\ntoken_url = \"{}\"\n",
        firebase.url(),
        firebase.token_url()
    )
}

/// Waits until the stand-in's value at `path` satisfies `condition`.
async fn wait_value(
    firebase: &Firebase,
    path: &str,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = firebase.get(path);
        if condition(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: {path} = {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The simulator's DND state of `user`, as the node holds it.
async fn sim_dnd(sim: &xsi_sim::Simulator, user: &str) -> Value {
    let u = sim_get(sim, &format!("/users/{user}")).await;
    json!({"active": u["do_not_disturb"]["active"], "ring_splash": u["do_not_disturb"]["ring_splash"]})
}

/// Checks a custom token with an RS256 implementation independent of the plugin's
/// (jsonwebtoken) and the service account's public key.
fn verify_custom_token(token: &str) -> Value {
    let key =
        jsonwebtoken::DecodingKey::from_rsa_pem(&std::fs::read(fixture("public-key.pem")).unwrap())
            .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

/// Nothing in the database names a userId, a domain or an XSP.
fn assert_anonymous(data: &Value) {
    let text = data.to_string();
    for leak in ["acme.example", "alice", "bob", "127.0.0.1", "xsp"] {
        assert!(!text.contains(leak), "{leak} written to Firebase: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_gets_a_custom_token_and_dnd_reaches_the_users_node() {
    let sim = simulator().await;
    let firebase = stand_in(None, Duration::from_secs(3600)).await;
    let gateway = gateway(&sim, &oauth(&firebase)).await;

    let login = log_in(&gateway, ALICE, PASSWORD).await;
    let uid = login.answer["unique_id"].as_str().unwrap().to_owned();
    let report = &login.answer["reports"]["firebase"];
    assert_eq!(report["database_url"], firebase.url());
    assert_eq!(report["path"], format!("users/{uid}"));
    assert_eq!(report["uid"], uid);
    let claims = verify_custom_token(report["custom_token"].as_str().unwrap());
    assert_eq!(claims["uid"], uid);
    assert_eq!(claims["sub"], CLIENT_EMAIL);
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 3600);
    assert_eq!(
        report["expires_at_ms"].as_u64().unwrap() / 1000,
        claims["exp"].as_u64().unwrap()
    );

    let node = format!("users/{uid}");
    let initial = sim_dnd(&sim, ALICE).await;
    wait_value(
        &firebase,
        &format!("{node}/dnd"),
        "the initial DND state",
        |v| *v == initial,
    )
    .await;
    let toggled = !initial["active"].as_bool().unwrap();
    change_user(&sim, ALICE, |u| {
        u["do_not_disturb"]["active"] = json!(toggled);
    })
    .await;
    wait_value(
        &firebase,
        &format!("{node}/dnd/active"),
        "the toggled DND",
        |v| *v == json!(toggled),
    )
    .await;
    change_user(&sim, ALICE, |u| {
        u["call_forwarding_always"] =
            json!({ "active": true, "forward_to_phone_number": "+12025550199", "ring_splash": false });
    })
    .await;
    wait_value(
        &firebase,
        &format!("{node}/forwarding/always"),
        "forwarding",
        |v| *v == json!({"active": true, "forward_to": "+12025550199", "ring_splash": false}),
    )
    .await;
    assert!(
        firebase
            .get(&format!("{node}/updated_ms"))
            .as_u64()
            .is_some()
    );

    // Every write: a multi-path PATCH at the root, authorised by a granted access token.
    let writes = firebase.writes();
    assert!(!writes.is_empty());
    for write in &writes {
        assert_eq!((write.method.as_str(), write.path.as_str()), ("PATCH", ""));
        assert!(
            write
                .locations
                .iter()
                .all(|(l, _)| l.starts_with(&format!("{node}/"))),
            "{write:?}"
        );
    }
    assert_eq!(firebase.refused(), 0);
    let tokens = firebase.token_requests();
    assert!(
        !tokens.is_empty() && tokens.iter().all(|t| t.granted),
        "{tokens:?}"
    );
    assert_anonymous(&firebase.get(""));

    let series = |name: &str| format!("xsigate_plugin_firebase_{name}");
    assert_eq!(
        gateway
            .metric(&series(
                "custom_tokens_total{provider=\"acme\",result=\"ok\"}"
            ))
            .await,
        Some(1.0)
    );
    assert!(
        gateway
            .metric(&series("writes_total{provider=\"acme\",result=\"ok\"}"))
            .await
            .unwrap()
            >= 2.0
    );
    assert!(
        gateway
            .metric(&series("sync_lag_seconds_count{provider=\"acme\"}"))
            .await
            .unwrap()
            >= 2.0
    );
    assert!(
        gateway
            .metric(&series("batch_locations_count{provider=\"acme\"}"))
            .await
            .unwrap()
            >= 2.0
    );
    assert!(
        gateway
            .metric(&series("resyncs_total{provider=\"acme\"}"))
            .await
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        gateway
            .metric(&series("queue_users{provider=\"acme\"}"))
            .await,
        Some(0.0)
    );
    let logs = gateway.logs();
    assert!(!logs.contains("ya29."), "an access token in the log");
    assert!(!logs.contains(report["custom_token"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_converges_after_being_down_for_30_seconds_while_events_flow() {
    let sim = simulator().await;
    // Short-lived access tokens: one expires during the outage and is refreshed after it.
    let firebase = stand_in(None, Duration::from_secs(8)).await;
    let gateway = gateway(&sim, &oauth(&firebase)).await;
    let alice = log_in(&gateway, ALICE, PASSWORD).await;
    let bob = log_in(&gateway, BOB, PASSWORD).await;
    let nodes: Vec<String> = [&alice, &bob]
        .iter()
        .map(|l| format!("users/{}", l.answer["unique_id"].as_str().unwrap()))
        .collect();
    for (node, user) in nodes.iter().zip([ALICE, BOB]) {
        let dnd = sim_dnd(&sim, user).await;
        wait_value(
            &firebase,
            &format!("{node}/dnd"),
            "the initial state",
            |v| *v == dnd,
        )
        .await;
    }

    firebase.stop();
    let outage = Instant::now();
    let mut changes = 0u32;
    let mut max_queue = 0.0f64;
    while outage.elapsed() < Duration::from_secs(30) {
        changes += 1;
        for user in [ALICE, BOB] {
            change_user(&sim, user, |u| {
                u["do_not_disturb"]["active"] = json!(changes % 2 == 1);
                u["call_forwarding_always"] = json!({
                    "active": true,
                    "forward_to_phone_number": format!("+1202555{:04}", changes),
                    "ring_splash": false,
                });
            })
            .await;
        }
        if let Some(depth) = gateway
            .metric("xsigate_plugin_firebase_queue_users{provider=\"acme\"}")
            .await
        {
            max_queue = max_queue.max(depth);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(changes >= 50, "{changes} changes during the outage");
    assert!(
        max_queue <= 2.0,
        "the queue holds users, not events: {max_queue}"
    );
    let failures = gateway
        .metric("xsigate_plugin_firebase_failures_total{provider=\"acme\",reason=\"unreachable\"}")
        .await
        .unwrap_or(0.0)
        + gateway
            .metric("xsigate_plugin_firebase_failures_total{provider=\"acme\",reason=\"token\"}")
            .await
            .unwrap_or(0.0);
    assert!(failures >= 3.0, "{failures} failed attempts in 30 s");
    let writes_before = firebase.writes().len();

    firebase.restart().await.unwrap();
    for (node, user) in nodes.iter().zip([ALICE, BOB]) {
        let dnd = sim_dnd(&sim, user).await;
        let forward = sim_get(&sim, &format!("/users/{user}")).await["call_forwarding_always"]
            ["forward_to_phone_number"]
            .clone();
        wait_value(
            &firebase,
            &format!("{node}/dnd"),
            "DND after the outage",
            |v| *v == dnd,
        )
        .await;
        wait_value(
            &firebase,
            &format!("{node}/forwarding/always/forward_to"),
            "forwarding after the outage",
            |v| *v == forward,
        )
        .await;
    }
    // The backlog is the latest state per user: a handful of writes, not one per change.
    let catch_up = firebase.writes().len() - writes_before;
    assert!(
        catch_up <= 6,
        "{catch_up} writes to catch up on {changes} changes per user"
    );
    let catch_up_write = &firebase.writes()[writes_before];
    // Remote Office did not change during the outage: only a full rewrite carries it.
    assert!(
        catch_up_write
            .locations
            .iter()
            .any(|(l, _)| l.ends_with("/remote_office")),
        "users are rewritten whole after the gap: {catch_up_write:?}"
    );
    assert!(
        firebase
            .token_requests()
            .iter()
            .filter(|t| t.granted)
            .count()
            >= 2
    );
    assert_eq!(firebase.refused(), 0, "an expired token was never used");
    assert!(
        gateway
            .metric("xsigate_plugin_firebase_resyncs_total{provider=\"acme\"}")
            .await
            .unwrap()
            >= 4.0
    );
    assert_anonymous(&firebase.get(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_database_secret_authenticates_writes_and_stays_out_of_logs() {
    const SECRET: &str = "0123456789abcdefghij0123456789abcdefghij";
    let sim = simulator().await;
    let firebase = stand_in(Some(SECRET), Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let gateway = gateway(
        &sim,
        &format!(
            "database_url = \"{}\"\ndatabase_secret_file = \"{}\"\n",
            firebase.url(),
            secret_file.display()
        ),
    )
    .await;
    let login = log_in(&gateway, ALICE, PASSWORD).await;
    let node = format!("users/{}", login.answer["unique_id"].as_str().unwrap());
    change_user(&sim, ALICE, |u| u["do_not_disturb"]["active"] = json!(true)).await;
    wait_value(&firebase, &format!("{node}/dnd/active"), "DND", |v| {
        *v == json!(true)
    })
    .await;
    assert!(firebase.token_requests().is_empty());
    assert_eq!(firebase.refused(), 0);
    assert!(login.answer["reports"]["firebase"]["custom_token"].is_string());
    assert!(!gateway.logs().contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_counted_and_retried_not_dropped() {
    let sim = simulator().await;
    let firebase = stand_in(
        Some("the-right-secret-0123456789abcdefghijkl"),
        Duration::from_secs(3600),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "a-wrong-secret-0123456789abcdefghijklmn").unwrap();
    let gateway = gateway(
        &sim,
        &format!(
            "database_url = \"{}\"\ndatabase_secret_file = \"{}\"\n",
            firebase.url(),
            secret_file.display()
        ),
    )
    .await;
    log_in(&gateway, ALICE, PASSWORD).await;
    gateway
        .wait_metric(
            "xsigate_plugin_firebase_failures_total{provider=\"acme\",reason=\"unauthorized\"}",
            |v| v >= 2.0,
        )
        .await;
    assert!(firebase.refused() >= 2);
    assert!(firebase.writes().is_empty());
    assert_eq!(
        gateway
            .metric("xsigate_plugin_firebase_queue_users{provider=\"acme\"}")
            .await,
        Some(1.0),
        "alice's state waits, it is not dropped"
    );
    assert!(!gateway.logs().contains("a-wrong-secret"));
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the Auth emulator serves. Its port alone says nothing: firebase-tools listens on
/// it for a moment to check that it is free, long before it serves.
async fn wait_auth_emulator(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::Client::new();
    loop {
        let answer = client
            .get(format!("http://127.0.0.1:{port}/"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if let Ok(answer) = answer
            && let Ok(body) = answer.json::<Value>().await
            && body["authEmulator"]["ready"] == true
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Auth emulator never served on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real Firebase parts from npm: the database (firebase-server with the shipped rules, as
/// the demo runs it) and the firebase-tools Auth emulator, stopped when dropped.
struct RealFirebase {
    _processes: (Process, Process),
    database_port: u16,
    auth_port: u16,
    work: tempfile::TempDir,
}

impl RealFirebase {
    async fn start() -> Self {
        let node_modules = repo_root().join("node_modules");
        assert!(
            node_modules.join("firebase-server").is_dir()
                && node_modules.join("firebase-tools").is_dir(),
            "run `npm ci` in the repository first (scripts/test does)"
        );
        let work = tempfile::tempdir().unwrap();
        let database_port = free_port();
        let auth_port = free_port();
        let log = |name: &str| std::fs::File::create(work.path().join(name)).unwrap();
        let database = Process(
            Command::new("node")
                .arg(repo_root().join("firebase/demo-database.mjs"))
                .arg(format!("127.0.0.1:{database_port}"))
                .arg(repo_root().join("firebase/database.rules.json"))
                .stdout(log("database.log"))
                .stderr(log("database.err"))
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::fs::write(
            work.path().join("firebase.json"),
            // Its hub and logging ports too, or two emulators at once (two tests) collide.
            json!({"emulators": {
                "auth": {"host": "127.0.0.1", "port": auth_port},
                "hub": {"host": "127.0.0.1", "port": free_port()},
                "logging": {"host": "127.0.0.1", "port": free_port()},
                "ui": {"enabled": false},
            }})
            .to_string(),
        )
        .unwrap();
        let auth = Process(
            Command::new(node_modules.join(".bin/firebase"))
                .args([
                    "emulators:start",
                    "--only",
                    "auth",
                    "--project",
                    "demo-xsigate",
                ])
                .current_dir(work.path())
                .env("HOME", work.path())
                .env("FIREBASE_CLI_DISABLE_UPDATE_CHECK", "true")
                .stdout(log("auth.log"))
                .stderr(log("auth.err"))
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_port(database_port, "firebase-server").await;
        wait_auth_emulator(auth_port).await;
        Self {
            _processes: (database, auth),
            database_port,
            auth_port,
            work,
        }
    }

    /// firebase-sync's provider keys for this database. firebase-server has no REST
    /// authentication: the legacy secret is sent and ignored.
    fn provider_keys(&self) -> String {
        let secret_file = self.work.path().join("secret");
        std::fs::write(&secret_file, "unused-by-firebase-server-0123456789abcd").unwrap();
        format!(
            "database_url = \"http://127.0.0.1:{}\"\ndatabase_secret_file = \"{}\"\n",
            self.database_port,
            secret_file.display()
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_a_browser_on_the_firebase_sdk_sees_its_own_dnd_and_not_another_users() {
    let e2e = repo_root().join("tests/firebase-e2e");
    let firebase = RealFirebase::start().await;
    let auth_port = firebase.auth_port;

    let sim = simulator().await;
    let gateway = gateway(&sim, &firebase.provider_keys()).await;
    // Bob's node exists, so that reading it is a question of rules, not of absence.
    let bob = log_in(&gateway, BOB, PASSWORD).await;
    let bob_uid = bob.answer["unique_id"].as_str().unwrap().to_owned();

    let output = Command::new("node")
        .arg(e2e.join("browser.mjs"))
        .env("XSIGATE_URL", gateway.url(""))
        .env("XSIGATE_USER", ALICE)
        .env("XSIGATE_PASSWORD", PASSWORD)
        .env("SIM_CONTROL", format!("http://{}", sim.control_addr()))
        .env("AUTH_EMULATOR", format!("127.0.0.1:{auth_port}"))
        .env("OTHER_UID", &bob_uid)
        .current_dir(&e2e)
        .output()
        .unwrap();
    drop(firebase);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser.mjs failed:\n{stdout}\n{stderr}\n{}",
        gateway.logs()
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("browser report: {report}");
    assert_eq!(report["signed_in_uid"], report["unique_id"]);
    assert_eq!(report["own_node_readable"], true);
    assert_eq!(report["other_node"], "permission_denied");
    let latencies = report["dnd_latency_ms"].as_array().unwrap();
    assert_eq!(latencies.len(), 4, "{report}");
    for latency in latencies {
        assert!(
            latency.as_f64().unwrap() < 1000.0,
            "a DND toggle took over a second: {report}"
        );
    }
}

/// Provider `blf` (service provider `bsp`, master credentials): alice watches bob by her Busy
/// Lamp Field list; carol is in the same group but on no list. xsi-events at service-provider
/// level; [`blf_gateway`] adds firebase-sync with a policy read every second.
async fn blf_world() -> (Arc<xsi_sim::Simulator>, tempfile::TempDir, String) {
    let mut seed = String::from(
        "xsp = [\"127.0.0.1:0\"]\n[[admins]]\nuser_id = \"admin@blf.example\"\n\
         password = \"admin-pw\"\nscope = { level = \"service_provider\", service_provider = \"bsp\" }\n",
    );
    for (i, (user, first, group, watches)) in [
        ("alice", "Alice", "sales", "[\"bob@blf.example\"]"),
        ("bob", "Bob", "sales", "[]"),
        ("carol", "Carol", "sales", "[]"),
        ("dave", "Dave", "support", "[]"),
    ]
    .iter()
    .enumerate()
    {
        seed.push_str(&format!(
            "[[users]]\nuser_id = \"{user}@blf.example\"\npassword = \"{PASSWORD}\"\n\
             service_provider = \"bsp\"\nis_enterprise = true\ngroup = \"{group}\"\n\
             first_name = \"{first}\"\nlast_name = \"Lamp\"\nnumber = \"20255503{i:02}\"\n\
             busy_lamp_field = {watches}\n"
        ));
    }
    let sim = xsi_sim::Simulator::start(toml::from_str(&seed).unwrap())
        .await
        .unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("master"), "admin-pw\n").unwrap();
    let provider = provider_for_simulator(
        "blf",
        &["blf.example"],
        &sim,
        &format!(
            "plugins = [\"broadsoft\", \"events\", \"firebase\"]\n\
             master = {{ user = \"admin@blf.example\", password_file = \"{}\" }}\n",
            secrets.path().join("master").display()
        ),
    );
    (sim, secrets, provider)
}

/// xsigate for [`blf_world`], writing to `database` (provider keys of firebase-sync).
async fn blf_gateway(provider: &str, policy: &str, database: &str) -> Gateway {
    let config = format!(
        "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
         [[plugins]]\nname = \"events\"\npath = \"{}\"\n\
         [plugins.config.providers.blf]\nlevel = \"service_provider\"\nservice_provider = \"bsp\"\n\
         heartbeat_seconds = 1\nsilence_seconds = 3\n\
         [[plugins]]\nname = \"firebase\"\npath = \"{}\"\n\
         [plugins.config.providers.blf]\nservice_account_file = \"{}\"\ntimeout_ms = 2000\n\
         blf = \"{policy}\"\nblf_refresh_seconds = 1\n{database}\n{provider}",
        plugin_library("xsigate-idp-broadsoft").display(),
        plugin_library("xsigate-xsi-events").display(),
        plugin_library("xsigate-firebase-sync").display(),
        fixture("service-account.json").display(),
    );
    let mut gateway = Gateway::start(&config).await;
    gateway.wait_for("/readyz", 200).await;
    gateway
}

/// An XSI request straight to the simulator's first XSP, as a user's own phone or portal
/// would make it.
async fn xsp(
    sim: &xsi_sim::Simulator,
    method: reqwest::Method,
    user: &str,
    rest: &str,
    body: Option<String>,
) -> String {
    let url = format!(
        "http://{}/com.broadsoft.xsi-actions/v2.0/user/{user}/{rest}",
        sim.xsp_addrs()[0]
    );
    let mut request = xsigate_tests::client()
        .request(method, url)
        .header("authorization", xsigate_tests::basic(user, PASSWORD));
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{rest}: {}",
        response.status()
    );
    response.text().await.unwrap()
}

/// The id of bob's one call, as his phone would list it.
async fn bobs_call(sim: &xsi_sim::Simulator) -> String {
    let calls = xsp(sim, reqwest::Method::GET, "bob@blf.example", "calls", None).await;
    calls
        .split("<callId>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lamps_follow_a_watched_colleagues_call_and_dnd_and_go_with_the_list() {
    let (sim, _secrets, provider) = blf_world().await;
    // Set before xsigate subscribes: no event will ever carry it.
    change_user(&sim, "alice@blf.example", |u| {
        u["do_not_disturb"]["active"] = json!(true);
    })
    .await;
    let firebase = stand_in(None, Duration::from_secs(3600)).await;
    let gateway = blf_gateway(&provider, "list", &oauth(&firebase)).await;
    let alice = log_in(&gateway, "alice@blf.example", PASSWORD).await;
    let node = format!("users/{}", alice.answer["unique_id"].as_str().unwrap());
    let lamps = format!("{node}/blf");
    // At the service-provider level BroadWorks sends no initial state: her own state is read
    // at her login, before anything changes.
    wait_value(
        &firebase,
        &format!("{node}/dnd/active"),
        "alice's own DND at login",
        |v| *v == json!(true),
    )
    .await;

    // Alice sees exactly bob's lamp, by his uniqueId, with his name and nothing else of his.
    let seen = wait_value(&firebase, &lamps, "alice's lamps", |v| v.is_object()).await;
    let lamps_of = seen.as_object().unwrap();
    assert_eq!(lamps_of.len(), 1, "{seen}");
    let (bob, lamp) = lamps_of.iter().next().unwrap();
    assert_eq!(lamp["name"], "Bob Lamp");
    assert_eq!(lamp["state"], "idle");
    let keys: Vec<&String> = lamp.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "since_ms", "state"]);
    let lamp_path = format!("{lamps}/{bob}");
    let state = |wanted: &'static str| {
        let firebase = Arc::clone(&firebase);
        let lamp_path = lamp_path.clone();
        async move {
            wait_value(&firebase, &lamp_path, wanted, |v| v["state"] == wanted).await;
        }
    };

    // Carol calls bob: ringing; bob answers: busy; bob hangs up: idle; bob's DND: dnd.
    xsp(
        &sim,
        reqwest::Method::POST,
        "carol@blf.example",
        "calls/new?address=2025550301",
        None,
    )
    .await;
    state("ringing").await;
    let call_id = bobs_call(&sim).await;
    xsp(
        &sim,
        reqwest::Method::PUT,
        "bob@blf.example",
        &format!("calls/{call_id}/talk"),
        None,
    )
    .await;
    state("busy").await;
    xsp(
        &sim,
        reqwest::Method::DELETE,
        "bob@blf.example",
        &format!("calls/{call_id}"),
        None,
    )
    .await;
    state("idle").await;
    // Bob originates a call: busy while it rings at the far end.
    xsp(
        &sim,
        reqwest::Method::POST,
        "bob@blf.example",
        "calls/new?address=2025550303",
        None,
    )
    .await;
    state("busy").await;
    let call_id = bobs_call(&sim).await;
    xsp(
        &sim,
        reqwest::Method::DELETE,
        "bob@blf.example",
        &format!("calls/{call_id}"),
        None,
    )
    .await;
    state("idle").await;
    change_user(&sim, "bob@blf.example", |u| {
        u["do_not_disturb"]["active"] = json!(true);
    })
    .await;
    state("dnd").await;

    // Alice's list changes on the XSP (her phone's portal): carol comes, bob goes.
    let list = "<BusyLampField xmlns=\"http://schema.broadsoft.com/xsi\"><monitoredUserList>\
                <userDetails><userId>carol@blf.example</userId></userDetails>\
                </monitoredUserList></BusyLampField>";
    xsp(
        &sim,
        reqwest::Method::PUT,
        "alice@blf.example",
        "services/BusyLampField",
        Some(list.to_owned()),
    )
    .await;
    let seen = wait_value(&firebase, &lamps, "the list change", |v| {
        v.as_object()
            .is_some_and(|m| m.len() == 1 && !m.contains_key(bob.as_str()))
    })
    .await;
    assert_eq!(
        seen.as_object().unwrap().values().next().unwrap()["name"],
        "Carol Lamp"
    );
    assert_anonymous(&firebase.get(""));

    // Her last logout takes her lamps away.
    let response = xsigate_tests::client()
        .post(gateway.url("/api/access/services/logout"))
        .header("cookie", &alice.cookie)
        .header("x-csrf-token", &alice.csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    wait_value(&firebase, &lamps, "lamps after logout", Value::is_null).await;
}

/// Each policy on real Firebase parts: every watcher's browser reads exactly the lamps its
/// policy allows, in its own node, and is refused every other user's node, those it watches
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_each_watcher_reads_exactly_its_lamps_under_each_policy() {
    let firebase = RealFirebase::start().await;
    let (sim, _secrets, provider) = blf_world().await;
    let users = ["alice", "bob", "carol", "dave"];
    // alice watches bob by list; sales is alice, bob and carol; the enterprise is all four.
    let expected = |policy: &str, user: &str| -> Vec<&'static str> {
        let everyone = ["Alice Lamp", "Bob Lamp", "Carol Lamp", "Dave Lamp"];
        let mine = |name: &str| name.to_lowercase().starts_with(user);
        match (policy, user) {
            ("list", "alice") => vec!["Bob Lamp"],
            ("list", _) | ("group", "dave") => vec![],
            ("group", _) => everyone[..3].iter().copied().filter(|n| !mine(n)).collect(),
            _ => everyone.iter().copied().filter(|n| !mine(n)).collect(),
        }
    };
    for policy in ["list", "group", "enterprise"] {
        let gateway = blf_gateway(&provider, policy, &firebase.provider_keys()).await;
        let mut uids = Vec::new();
        for user in users {
            let login = log_in(&gateway, &format!("{user}@blf.example"), PASSWORD).await;
            uids.push(login.answer["unique_id"].as_str().unwrap().to_owned());
        }
        let plan: Vec<Value> = users
            .iter()
            .enumerate()
            .map(|(i, user)| {
                let others: Vec<String> = uids
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, uid)| format!("users/{uid}"))
                    .collect();
                json!({"user": format!("{user}@blf.example"), "password": PASSWORD,
                       "lamps": expected(policy, user).len(), "others": others})
            })
            .collect();
        let output = Command::new("node")
            .arg(repo_root().join("tests/firebase-e2e/blf.mjs"))
            .env("XSIGATE_URL", gateway.url(""))
            .env("AUTH_EMULATOR", format!("127.0.0.1:{}", firebase.auth_port))
            .env("PLAN", Value::from(plan).to_string())
            .current_dir(repo_root())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "blf.mjs ({policy}) failed:\n{stdout}\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            gateway.logs()
        );
        let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        eprintln!("{policy}: {report}");
        for user in users {
            let seen = &report[format!("{user}@blf.example")];
            let names: Vec<String> = seen["lamps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().split(':').next().unwrap().to_owned())
                .collect();
            assert_eq!(
                names,
                expected(policy, user),
                "{policy}: {user}'s lamps: {seen}"
            );
            for (path, read) in seen["others"].as_object().unwrap() {
                assert_eq!(read, "permission_denied", "{policy}: {user} read {path}");
            }
        }
        if policy == "list" {
            // Bob leaves alice's list (on the XSP): her browser no longer finds his lamp, and
            // his node stays closed to her.
            let nil = "<BusyLampField xmlns=\"http://schema.broadsoft.com/xsi\" \
                       xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
                       <monitoredUserList xsi:nil=\"true\"/></BusyLampField>";
            xsp(
                &sim,
                reqwest::Method::PUT,
                "alice@blf.example",
                "services/BusyLampField",
                Some(nil.to_owned()),
            )
            .await;
            let plan = json!([{"user": "alice@blf.example", "password": PASSWORD, "lamps": 0,
                               "others": [format!("users/{}", uids[1])]}]);
            let output = Command::new("node")
                .arg(repo_root().join("tests/firebase-e2e/blf.mjs"))
                .env("XSIGATE_URL", gateway.url(""))
                .env("AUTH_EMULATOR", format!("127.0.0.1:{}", firebase.auth_port))
                .env("PLAN", plan.to_string())
                .current_dir(repo_root())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "blf.mjs after the removal:\n{stdout}"
            );
            let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
            let alice = &report["alice@blf.example"];
            assert_eq!(alice["lamps"], json!([]), "{report}");
            assert_eq!(
                alice["others"][format!("users/{}", uids[1])],
                "permission_denied"
            );
        }
    }
}
