//! The dashboards and alert rules on a real Prometheus server (Debian's `prometheus`), scraping
//! a live xsigate after a scripted scenario: logins that succeed, fail and lock, proxied
//! traffic, XSI-Events and Firebase sync, a screen-recording login, a password reset, a ZTP
//! lookup, an operator's sign-in, a refused client, and a provider whose XSPs are down. Every
//! panel's every expression, as Grafana would send it, must return series; every alert rule
//! must load and evaluate, and the XSP-down alert must go pending.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xsi_sim::firebase::{Firebase, FirebaseSettings};
use xsi_sim::srs::{Srs, SrsSettings};
use xsigate_tests::{
    Gateway, SmtpServer, basic, change_user, client, free_port, log_in, plugin_library,
    provider_for_simulator, provider_urls, repo_root,
};

const ALICE: &str = "alice@acme.example";
const BOB: &str = "bob@acme.example";
const PASSWORD: &str = "pw-dashboards";
const WAIT: Duration = Duration::from_secs(30);

/// A Prometheus server of its own, scraping the gateway every second and evaluating the
/// alert rules every second.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = repo_root().join("dashboards/alerts.yml");
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: xsigate\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules.display()
            ),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package `prometheus`) must be installed; the test command installs it");
        let prometheus = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = client().get(prometheus.url("/-/ready")).send().await {
                if response.status() == 200 {
                    return prometheus;
                }
            }
            assert!(Instant::now() < deadline, "prometheus never got ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let response = client()
            .get(format!("{}?{query}", self.url(path)))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The series an instant query returns.
    async fn series(&self, expr: &str) -> usize {
        let data = self.api("/api/v1/query", &[("query", expr)]).await;
        data["result"].as_array().map_or(0, Vec::len)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The provider's world: users, a Firebase, a screen-recording service, a mail relay.
struct World {
    sim: Arc<xsi_sim::Simulator>,
    firebase: Arc<Firebase>,
    _srs: Arc<Srs>,
    _smtp: SmtpServer,
    _secrets: tempfile::TempDir,
    gateway: Gateway,
    console: SocketAddr,
}

fn firebase_fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/firebase").join(name)
}

impl World {
    async fn start() -> Self {
        let mut seed = String::from("xsp = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n");
        for (i, user) in [ALICE, BOB].iter().enumerate() {
            seed.push_str(&format!(
                "[[users]]\nuser_id = \"{user}\"\npassword = \"{PASSWORD}\"\nservice_provider = \"acme\"\n\
                 is_enterprise = true\ngroup = \"sales\"\nnumber = \"20255501{i:02}\"\n\
                 extension = \"1{i:02}\"\nemail = \"{}\"\n",
                user.replace("acme.example", "mail.example")
            ));
        }
        seed.push_str(
            "[[admins]]\nuser_id = \"admin@acme.example\"\npassword = \"admin-pw\"\n\
             scope = { level = \"service_provider\", service_provider = \"acme\" }\n",
        );
        let sim = xsi_sim::Simulator::start(toml::from_str(&seed).unwrap())
            .await
            .unwrap();
        let firebase = Firebase::start(
            FirebaseSettings {
                service_account: std::fs::read_to_string(firebase_fixture("service-account.json"))
                    .unwrap(),
                secret: None,
                token_lifetime: Duration::from_secs(3600),
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let srs = Srs::start(
            SrsSettings {
                origin: "https://desktop.acme.example".to_owned(),
                agents: HashMap::from([(ALICE.to_owned(), PASSWORD.to_owned())]),
                keep_alive: Duration::from_secs(4),
                version: "8.5.500.07".to_owned(),
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .unwrap();
        let smtp = SmtpServer::start().await;
        let secrets = tempfile::tempdir().unwrap();
        std::fs::write(secrets.path().join("master"), "admin-pw\n").unwrap();
        let console = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let plugin = |name: &str, library: &str, config: &str| {
            format!(
                "[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n{config}",
                plugin_library(library).display()
            )
        };
        let mut config = format!(
            "[server.console]\naddress = \"{console}\"\n\
             [[server.admins]]\nuser = \"ops\"\npassword_hash = \"{}\"\n",
            xsigate::config::password::hash("ops passphrase").unwrap()
        );
        config.push_str(&plugin("broadsoft", "xsigate-idp-broadsoft", ""));
        config.push_str(&plugin(
            "email",
            "xsigate-idp-email",
            &format!("config = {{ anchor_users = [\"{ALICE}\"] }}\n"),
        ));
        config.push_str(&plugin("session", "xsigate-xsi-session", ""));
        config.push_str(&plugin(
            "events",
            "xsigate-xsi-events",
            "[plugins.config.providers.acme]\nheartbeat_seconds = 1\nsilence_seconds = 3\n",
        ));
        config.push_str(&plugin(
            "firebase",
            "xsigate-firebase-sync",
            &format!(
                "[plugins.config]\nbatch_ms = 25\n[plugins.config.providers.acme]\n\
                 service_account_file = \"{}\"\ntimeout_ms = 2000\ndatabase_url = \"{}\"\ntoken_url = \"{}\"\n",
                firebase_fixture("service-account.json").display(),
                firebase.url(),
                firebase.token_url()
            ),
        ));
        config.push_str(&plugin(
            "srs",
            "xsigate-srs-login",
            &format!(
                "[plugins.config.providers.acme]\nurl = \"{}\"\norigin = \"https://desktop.acme.example\"\n\
                 server = \"https://rws1.acme.example\"\npeer_server = \"https://rws2.acme.example\"\n\
                 switch = \"SIP_Switch\"\nplace = \"Place_{{extension}}\"\nkeep_alive_seconds = 1\ntimeout_ms = 1000\n",
                srs.url()
            ),
        ));
        config.push_str(&provider_for_simulator(
            "acme",
            &["acme.example"],
            &sim,
            &format!(
                "email_domains = [\"mail.example\"]\n\
                 plugins = [\"broadsoft\", \"email\", \"session\", \"events\", \"firebase\", \"srs\"]\n\
                 master = {{ user = \"admin@acme.example\", password_file = \"{}\" }}\n\
                 reset_url = \"https://dialer.acme.example/reset\"\n\
                 [providers.acme.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
                 from = \"Acme Dialer <noreply@acme.example>\"\n",
                secrets.path().join("master").display(),
                smtp.port
            ),
        ));
        // A provider whose two XSPs refuse every connection.
        let dead = |_| format!("http://127.0.0.1:{}", free_port());
        let dead: Vec<String> = (0..2).map(dead).collect();
        config.push_str(&provider_urls("beta", &["beta.example"], &dead, ""));
        // Not ready as a whole (beta has no XSP up): wait for acme's.
        let gateway = Gateway::start(&config).await;
        for xsp in ["xsp1", "xsp2"] {
            gateway
                .wait_metric(
                    &format!("xsigate_xsp_up{{provider=\"acme\",xsp=\"{xsp}\"}}"),
                    |v| v == 1.0,
                )
                .await;
        }
        Self {
            sim,
            firebase,
            _srs: srs,
            _smtp: smtp,
            _secrets: secrets,
            gateway,
            console,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> u16 {
        client()
            .post(self.gateway.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Everything the dashboards watch, made to happen once.
    async fn scenario(&self) {
        let alice = log_in(&self.gateway, ALICE, PASSWORD).await;
        assert_eq!(
            alice.answer["reports"]["srs"]["state"], "logged_in",
            "{}",
            alice.answer
        );
        let uid = alice.answer["unique_id"].as_str().unwrap().to_owned();
        // Proxied XSI on the session, and a path nothing serves.
        for _ in 0..5 {
            let response = client()
                .get(self.gateway.url(&format!(
                    "/com.broadsoft.xsi-actions/v2.0/user/{ALICE}/profile"
                )))
                .header("cookie", &alice.cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        let _ = client().get(self.gateway.url("/nowhere")).send().await;
        // A change on BroadWorks, through XSI-Events to Firebase.
        change_user(&self.sim, ALICE, |u| {
            let active = u["do_not_disturb"]["active"].as_bool().unwrap_or(false);
            u["do_not_disturb"]["active"] = json!(!active);
        })
        .await;
        let deadline = Instant::now() + WAIT;
        while self.firebase.get(&format!("users/{uid}/dnd")).is_null() {
            assert!(Instant::now() < deadline, "Firebase never got alice's DND");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A channel the XSP drops: xsi-events opens it again.
        let channel = self
            .sim
            .platform()
            .channels()
            .views()
            .into_iter()
            .find(|c| c.owner == ALICE)
            .map(|c| c.channel_id)
            .expect("alice has a channel");
        assert!(self.sim.platform().channels().cut(&channel));
        // Wrong passwords until bob is locked.
        for _ in 0..6 {
            self.post(
                "/api/access/services/idp/broadsoft",
                &json!({ "user": BOB, "password": "wrong" }),
            )
            .await;
        }
        // A ZTP lookup by e-mail, and a reset link.
        self.post(
            "/api/access/services/ztp",
            &json!({ "query": "bob@mail.example" }),
        )
        .await;
        self.post("/api/access/services/reset", &json!({ "user": ALICE }))
            .await;
        // A provider with no XSP up.
        for _ in 0..3 {
            let _ = client()
                .get(
                    self.gateway
                        .url("/com.broadsoft.xsi-actions/v2.0/user/carol@beta.example/profile"),
                )
                .header("authorization", basic("carol@beta.example", PASSWORD))
                .send()
                .await;
        }
        // A client refused before routing: a head with too many fields.
        let mut request = client().get(self.gateway.url("/healthz"));
        for i in 0..200 {
            request = request.header(format!("x-filler-{i}"), "x");
        }
        let _ = request.send().await;
        // An operator signs in.
        let response = client()
            .post(format!("http://{}/login", self.console))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("user=ops&password=ops+passphrase")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303);
    }
}

/// Every expression of a dashboard's panels, as Grafana would send it with `variables` set.
fn expressions(file: &str, variables: &[(&str, &str)]) -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("dashboards").join(file)).unwrap(),
    )
    .unwrap();
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let mut expr = target["expr"].as_str().unwrap().to_owned();
            for (name, value) in variables {
                expr = expr.replace(name, value);
            }
            assert!(!expr.contains('$'), "{file}: a variable is left in {expr}");
            found.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_returns_series_and_every_alert_rule_evaluates_on_a_real_prometheus() {
    let world = World::start().await;
    let prometheus = Prometheus::start(world.gateway.metrics_addr).await;
    world.scenario().await;

    let interval = ("$__rate_interval", "30s");
    let mut panels = expressions(
        "xsigate-overview.json",
        &[interval, ("$provider", ".*"), ("$job", "xsigate")],
    );
    panels.extend(expressions(
        "xsigate-provider.json",
        &[interval, ("$provider", "acme"), ("$job", "xsigate")],
    ));
    assert!(panels.len() >= 40, "{} expressions", panels.len());
    // Rates need two scrapes inside their window after the scenario: bounded polling.
    let deadline = Instant::now() + WAIT;
    let empty = loop {
        let mut empty = Vec::new();
        for (title, expr) in &panels {
            if prometheus.series(expr).await == 0 {
                empty.push(format!("{title}: {expr}"));
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break empty;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(
        empty.is_empty(),
        "panels without series:\n{}",
        empty.join("\n")
    );

    // The alert rules: loaded, evaluated without error, and the dead provider's XSPs pending.
    let deadline = Instant::now() + WAIT;
    loop {
        let rules = prometheus.api("/api/v1/rules", &[]).await;
        let all: Vec<&Value> = rules["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert!(all.len() >= 6, "{rules}");
        let evaluated = all.iter().all(|r| r["health"] == "ok");
        let alerts = prometheus.api("/api/v1/alerts", &[]).await;
        let xsp_down = alerts["alerts"].as_array().unwrap().iter().any(|a| {
            a["labels"]["alertname"] == "XsigateXspDown" && a["labels"]["provider"] == "beta"
        });
        if evaluated && xsp_down {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules not all healthy or no XSP-down alert:\n{rules}\n{alerts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
