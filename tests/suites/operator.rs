//! The operator console through the real xsigate, with the simulator as the provider's world
//! and xsi-events keeping users' channel sets: operators' sign-in and its lockout, cookies that
//! do not cross between the console and the proxy, CSRF on every change, the status page and
//! its JSON, the actions on a user, the audit trail, and reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xsigate_tests::{
    Gateway, LoadOutcome, Login, ProxiedLoad, Upstream, basic, binary, client, free_port, log_in,
    plugin_library, provider, provider_for_simulator, run_command, set_cookie_pair,
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
        self.gateway
            .metric(series)
            .await
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
    // The operator's sign-in is among the audited acts.
    let audit = &status["audit"]["acts"];
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

fn reload_command(gateway: &Gateway) -> (i32, String, String) {
    run_command(
        std::process::Command::new(binary("xsigate"))
            .arg("reload")
            .arg("-c")
            .arg(gateway.config_path()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_takes_a_new_file_over_under_load_dropping_no_request() {
    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let before = gateway.running_pid().unwrap();
    let profile = gateway.url(&format!(
        "/com.broadsoft.xsi-actions/v2.0/user/{ALICE}/profile"
    ));
    // Bounded: at most 20,000 requests per client, and it stops when told.
    let load = ProxiedLoad::start(&profile, &basic(ALICE, PASSWORD), 20_000);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let path = gateway.config_path();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&provider("beta", &["beta.example"], &[&xsp], ""));
    std::fs::write(&path, text).unwrap();
    let (code, stdout, stderr) = {
        let gateway = &gateway;
        tokio::task::block_in_place(|| reload_command(gateway))
    };
    assert_eq!(code, 0, "{stdout}{stderr}\n{}", gateway.logs());
    assert!(stdout.contains("providers added: beta"), "{stdout}");
    assert!(
        stdout.contains(&format!("reloaded: pid {before} handed over to pid")),
        "{stdout}"
    );
    let after = gateway.running_pid().unwrap();
    assert_ne!(after, before);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let LoadOutcome {
        sent,
        retried,
        failures,
    } = load.finish().await;
    eprintln!("reload under load: {sent} requests, {retried} retried on a new connection");
    assert!(
        sent > 100,
        "the load ran across the reload ({sent} requests)"
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
    // The new provider is served, by the new process. For Pingora's first 5 s after the
    // hand-over the old process still accepts too, so a new connection may meet either.
    let beta = gateway.url("/com.broadsoft.xsi-actions/v2.0/user/bob@beta.example/profile");
    let deadline = Instant::now() + WAIT;
    loop {
        let response = client()
            .get(&beta)
            .header("authorization", basic("bob@beta.example", PASSWORD))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "beta never served:\n{}",
            gateway.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = gateway.logs();
    assert!(logs.contains("changes=providers added: beta"), "{logs}");
    // Reloading the same file again has nothing to do.
    let (code, stdout, _) = tokio::task::block_in_place(|| reload_command(&gateway));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("no change") && stdout.contains("runs this file already"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_leaves_the_running_process_untouched_by_reload_or_sighup() {
    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let pid = gateway.running_pid().unwrap();
    let path = gateway.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    let lines = good.lines().count();
    std::fs::write(
        &path,
        format!("{good}[providers.beta]\ndomains = [\"beta.example\"]\nxsp = [\"gopher://xsp\"]\n"),
    )
    .unwrap();

    let (code, stdout, stderr) = tokio::task::block_in_place(|| reload_command(&gateway));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{}:{}:8: providers.beta.xsp[0]: scheme must be http or https",
            path.display(),
            lines + 3
        )),
        "{stderr}"
    );
    assert!(stderr.contains("nothing changed"), "{stderr}");

    // SIGHUP with the same file: the instance says why in its log and keeps serving.
    let (code, _, stderr) = run_command(
        std::process::Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string()),
    );
    assert_eq!(code, 0, "{stderr}");
    let logs = gateway
        .wait_log(|l| l.contains("reload refused: the running configuration stays"))
        .await;
    assert!(logs.contains("providers.beta.xsp[0]"), "{logs}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gateway.running_pid(), Some(pid));
    let response = client()
        .get(gateway.url(&format!(
            "/com.broadsoft.xsi-actions/v2.0/user/{ALICE}/profile"
        )))
        .header("authorization", basic(ALICE, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_page_refreshes_itself_acts_and_refuses_a_post_without_its_token() {
    let world = World::start().await;
    let _alice = log_in(&world.gateway, ALICE, PASSWORD).await;
    let runtime = tokio::runtime::Handle::current();
    let run = tokio::task::block_in_place(|| {
        xsigate_tests::drive_console(
            &world.console_url("/"),
            (OPERATOR, OPERATOR_PASSWORD),
            ALICE,
            &xsigate_tests::repo_root().join("target/console-suite"),
            || {
                runtime.block_on(log_in(&world.gateway, ALICE, PASSWORD));
            },
        )
    });
    xsigate_tests::assert_console_run(&run);
    assert_eq!(run.report["sessions_before"], 1);
    assert!(
        run.report["notice"]
            .as_str()
            .unwrap()
            .contains("2 session(s) ended"),
        "{}",
        run.report
    );
    assert_eq!(run.report["sessions_after"], 0);
}
