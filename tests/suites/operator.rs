//! The operator console through the real xsigate, with the simulator as the provider's world
//! and xsi-events keeping users' channel sets: operators' sign-in and its lockout, cookies that
//! do not cross between the console and the proxy, CSRF on every change, the status page and
//! its JSON, the actions on a user, and the audit trail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xsigate_tests::{
    Gateway, Login, binary, client, free_port, log_in, plugin_library, provider_for_simulator,
    run_command, set_cookie_pair,
};

const ALICE: &str = "alice@acme.example";
const PASSWORD: &str = "pw-operator";
const OPERATOR: &str = "ops";
const OPERATOR_PASSWORD: &str = "a long operator passphrase";
const WAIT: Duration = Duration::from_secs(15);

/// The operator's hash, made once: argon2id at OWASP's cost is slow on purpose.
fn operator_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| xsigate::config::password::hash(OPERATOR_PASSWORD).unwrap())
}

async fn simulator() -> Arc<xsi_sim::Simulator> {
    let seed = format!(
        "xsp = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n\
         [[users]]\nuser_id = \"{ALICE}\"\npassword = \"{PASSWORD}\"\nservice_provider = \"acme\"\n\
         group = \"sales\"\n"
    );
    xsi_sim::Simulator::start(toml::from_str(&seed).unwrap())
        .await
        .unwrap()
}

/// A gateway with idp-broadsoft, xsi-session and xsi-events for acme, and the console.
struct World {
    sim: Arc<xsi_sim::Simulator>,
    gateway: Gateway,
    console: SocketAddr,
}

impl World {
    async fn start() -> Self {
        let sim = simulator().await;
        let console = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = format!(
            "[server.console]\naddress = \"{console}\"\n\
             [[server.admins]]\nuser = \"{OPERATOR}\"\npassword_hash = \"{}\"\n\
             [[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
             [[plugins]]\nname = \"session\"\npath = \"{}\"\n\
             [[plugins]]\nname = \"events\"\npath = \"{}\"\n\
             [plugins.config.providers.acme]\nheartbeat_seconds = 1\nsilence_seconds = 3\n{}",
            operator_hash(),
            plugin_library("xsigate-idp-broadsoft").display(),
            plugin_library("xsigate-xsi-session").display(),
            plugin_library("xsigate-xsi-events").display(),
            provider_for_simulator(
                "acme",
                &["acme.example"],
                &sim,
                "plugins = [\"broadsoft\", \"session\", \"events\"]\n",
            ),
        );
        let mut gateway = Gateway::start(&config).await;
        gateway.wait_for("/readyz", 200).await;
        Self {
            sim,
            gateway,
            console,
        }
    }

    fn console_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.console)
    }

    async fn sign_in(&self, password: &str) -> reqwest::Response {
        client()
            .post(self.console_url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("user", OPERATOR), ("password", password)]))
            .send()
            .await
            .unwrap()
    }

    /// A signed-in operator: the console cookie and the CSRF token.
    async fn operator(&self) -> (String, String) {
        let response = self.sign_in(OPERATOR_PASSWORD).await;
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], "/");
        let set_cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
        assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
        let cookie = set_cookie_pair(&response);
        let status = self.status(&cookie).await;
        (cookie, status["csrf_token"].as_str().unwrap().to_owned())
    }

    async fn status(&self, cookie: &str) -> Value {
        let response = client()
            .get(self.console_url("/api/status"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Waits until the status satisfies `condition`.
    async fn status_until(&self, cookie: &str, condition: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status(cookie).await;
            if condition(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the status never met the condition: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn act(
        &self,
        cookie: &str,
        csrf: Option<&str>,
        action: &str,
        user: &str,
    ) -> reqwest::Response {
        let mut request = client()
            .post(self.console_url(&format!("/api/actions/{action}")))
            .header("cookie", cookie)
            .json(&json!({ "user": user }));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send().await.unwrap()
    }

    async fn profile(&self, login: &Login) -> u16 {
        client()
            .get(self.gateway.url(&format!(
                "/com.broadsoft.xsi-actions/v2.0/user/{ALICE}/profile"
            )))
            .header("cookie", &login.cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The channel sets the simulator holds for alice.
    fn alice_sets(&self) -> Vec<String> {
        let mut sets: Vec<String> = self
            .sim
            .platform()
            .channels()
            .views()
            .into_iter()
            .filter(|c| c.owner == ALICE)
            .map(|c| c.channel_set_id)
            .collect();
        sets.sort();
        sets.dedup();
        sets
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = client()
            .get(self.gateway.metrics_url())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series}"))
    }
}

fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

fn sets_open(status: &Value) -> u64 {
    status["providers"]["acme"]["plugins"]["events"]["counts"]["sets_open"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_and_sees_sessions_xsps_channel_sets_and_the_configuration() {
    let world = World::start().await;
    let _alice = log_in(&world.gateway, ALICE, PASSWORD).await;
    let (cookie, _) = world.operator().await;
    let status = world
        .status_until(&cookie, |s| {
            sets_open(s) == 1 && s["providers"]["acme"]["xsps"][0]["state"] == "up"
        })
        .await;
    assert_eq!(status["operator"], OPERATOR);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["store"]["healthy"], true);
    assert_eq!(status["providers"]["acme"]["sessions"], 1);
    assert!(
        status["providers"]["acme"]["xsps"][0]["probe_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let events = &status["providers"]["acme"]["plugins"]["events"];
    assert!(
        events["counts"]["subscriptions"].as_u64().unwrap() > 0,
        "{events}"
    );
    let file = std::fs::read(world.gateway.dir().join("providers.toml")).unwrap();
    let digest: String = ring::digest::digest(&ring::digest::SHA256, &file)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(status["config_sha256"], digest);
    // The operator's sign-in is the first audit entry.
    let audit = &status["audit"];
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "admin_login"
                && e["actor"] == "operator:ops"
                && e["result"] == "ok"),
        "{audit}"
    );

    // The page reads without a script: everything is in the HTML.
    let page = client()
        .get(world.console_url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    for expected in [
        "Provider acme",
        "active sessions",
        "events: sets open",
        "xsp1",
        "admin_login",
    ] {
        assert!(html.contains(expected), "{expected} missing from\n{html}");
    }
    assert!(
        !html.contains(PASSWORD) && !html.contains("127.0.0.1"),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_passwords_lock_the_operator_even_against_the_right_one() {
    let world = World::start().await;
    for attempt in 0..5 {
        let response = world.sign_in("not the passphrase").await;
        let status = response.status().as_u16();
        assert!(
            status == 401 || (attempt == 4 && status == 429),
            "attempt {attempt}: {status}"
        );
        assert!(response.headers().get("set-cookie").is_none());
    }
    let response = world.sign_in(OPERATOR_PASSWORD).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.headers().get("set-cookie").is_none());
    let logs = world
        .gateway
        .wait_log(|l| l.matches("action=\"admin_login\"").count() >= 6)
        .await;
    assert!(logs.contains("result=\"refused\""), "{logs}");
    assert!(!logs.contains(OPERATOR_PASSWORD) && !logs.contains("not the passphrase"));
    assert_eq!(
        world
            .metric("xsigate_audit_total{action=\"admin_login\",result=\"refused\"}")
            .await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_do_not_cross_between_the_console_and_the_proxy() {
    let world = World::start().await;
    let alice = log_in(&world.gateway, ALICE, PASSWORD).await;
    let (operator, _) = world.operator().await;
    let token = |pair: &str| pair.split_once('=').unwrap().1.to_owned();

    // A user's session token, under the console's cookie name: nobody.
    let user_token = token(&alice.cookie);
    for path in ["/api/status", "/"] {
        let response = client()
            .get(world.console_url(path))
            .header(
                "cookie",
                format!("xsigate_console={user_token}; {}", alice.cookie),
            )
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(status == 401 || status == 303, "{path}: {status}");
    }
    // The operator's token, under the proxy's cookie name: nobody either.
    let operator_token = token(&operator);
    let response = client()
        .get(world.gateway.url(&format!(
            "/com.broadsoft.xsi-actions/v2.0/user/{ALICE}/profile"
        )))
        .header(
            "cookie",
            format!("xsigate_session={operator_token}; {operator}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Each still works where it belongs.
    assert_eq!(world.profile(&alice).await, 200);
    world.status(&operator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_users_sessions_needs_the_csrf_token_and_is_audited() {
    let world = World::start().await;
    let alice = log_in(&world.gateway, ALICE, PASSWORD).await;
    let (operator, csrf) = world.operator().await;

    for csrf in [None, Some("x".repeat(43).as_str())] {
        let response = world.act(&operator, csrf, "end_sessions", ALICE).await;
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "csrf_token_invalid");
    }
    // And as a form, as a cross-site page would post it.
    let response = client()
        .post(world.console_url("/actions/end_sessions"))
        .header("cookie", &operator)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("user", ALICE)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        world.profile(&alice).await,
        200,
        "a refused action did something"
    );

    let response = world
        .act(&operator, Some(&csrf), "end_sessions", ALICE)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"], "ok", "{body}");
    assert_eq!(world.profile(&alice).await, 401);
    let deadline = Instant::now() + WAIT;
    while !world.alice_sets().is_empty() {
        assert!(
            Instant::now() < deadline,
            "alice's channel set outlived her sessions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = world
        .gateway
        .wait_log(|l| l.contains("action=\"end_sessions\"") && l.contains("result=\"ok\""))
        .await;
    assert!(logs.contains(&format!("subject=\"{ALICE}\"")), "{logs}");
    assert_eq!(
        world
            .metric("xsigate_audit_total{action=\"end_sessions\",result=\"refused\"}")
            .await,
        3.0
    );
    // Nothing left to end.
    let body: Value = world
        .act(&operator, Some(&csrf), "end_sessions", ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["result"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reopens_a_users_channel_set_and_resyncs_their_state() {
    let world = World::start().await;
    let alice = log_in(&world.gateway, ALICE, PASSWORD).await;
    let (operator, csrf) = world.operator().await;
    world.status_until(&operator, |s| sets_open(s) == 1).await;
    let before = world.alice_sets();
    assert_eq!(before.len(), 1);

    let body: Value = world
        .act(&operator, Some(&csrf), "reopen_channel_set", ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["result"], "ok", "{body}");
    let deadline = Instant::now() + WAIT;
    loop {
        let now = world.alice_sets();
        if now.len() == 1 && now != before {
            break;
        }
        assert!(Instant::now() < deadline, "no new channel set: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    world.status_until(&operator, |s| sets_open(s) == 1).await;
    assert_eq!(
        world.profile(&alice).await,
        200,
        "the session survives a reopen"
    );

    let resyncs = "xsigate_plugin_events_resyncs_total{provider=\"acme\"}";
    let before = world.metric(resyncs).await;
    let body: Value = world
        .act(&operator, Some(&csrf), "resync", ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["result"], "ok", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("read again"),
        "{body}"
    );
    assert!(world.metric(resyncs).await > before);
    assert_eq!(
        world.alice_sets().len(),
        1,
        "a resync opened or closed a set"
    );

    // A user nobody keeps anything for.
    let body: Value = world
        .act(&operator, Some(&csrf), "resync", "nobody@acme.example")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["result"], "not_found", "{body}");
    world
        .gateway
        .wait_log(|l| {
            l.contains("action=\"reopen_channel_set\"") && l.contains("action=\"resync\"")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_operators_the_console_does_not_listen() {
    let sim = simulator().await;
    let console = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut gateway = Gateway::start(&format!(
        "[server.console]\naddress = \"{console}\"\n{}",
        provider_for_simulator("acme", &["acme.example"], &sim, "")
    ))
    .await;
    gateway.wait_for("/readyz", 200).await;
    assert!(tokio::net::TcpStream::connect(console).await.is_err());
}

#[test]
fn a_weak_or_foreign_password_hash_is_refused_naming_its_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("providers.toml");
    let weak = "$argon2id$v=19$m=4096,t=1,p=1$c29tZXNhbHQ$VGhpcyBpcyBub3QgYSByZWFsIGhhc2g";
    for (hash, message) in [
        (weak, "weaker than argon2id m=19456,t=2,p=1"),
        (
            "$2b$12$abcdefghijklmnopqrstuv",
            "not an argon2id hash in PHC form",
        ),
    ] {
        std::fs::write(
            &path,
            format!(
                "[[server.admins]]\nuser = \"ops\"\npassword_hash = \"{hash}\"\n\
                 [providers.acme]\ndomains = [\"acme.example\"]\nxsp = [\"http://127.0.0.1:1\"]\n"
            ),
        )
        .unwrap();
        let (code, stdout, stderr) = run_command(
            std::process::Command::new(binary("xsigate"))
                .arg("check")
                .arg("-c")
                .arg(&path),
        );
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "{}:3:17: server.admins[0].password_hash: ",
                path.display()
            )) && stderr.contains(message),
            "{stderr}"
        );
        assert!(!stderr.contains(hash), "{stderr}");
    }
}
