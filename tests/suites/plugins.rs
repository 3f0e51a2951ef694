//! Plugins: real cdylibs built by this workspace, loaded by the real binary (or, for the
//! identity-provider API that has no public route yet, by the real host library), against real
//! HTTP peers on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use xsigate_tests::{
    Gateway, InProcess, Upstream, basic, binary, client, plugin_library, provider, run_command,
};

const USER: &str = "alice@acme.example";

fn fixture_plugin(extra: &str) -> String {
    format!(
        "[[plugins]]\nname = \"fixture\"\npath = \"{}\"\ncall_timeout_ms = 500\n{extra}\n",
        plugin_library("xsigate-fixture-host-services").display()
    )
}

async fn gateway_with_fixture(upstream: &Upstream, config: &str) -> Gateway {
    let config = format!(
        "{}{}",
        fixture_plugin(config),
        provider(
            "acme",
            &["acme.example"],
            &[upstream],
            "plugins = [\"fixture\"]"
        )
    );
    Gateway::start(&config).await
}

fn xsi(gateway: &Gateway) -> String {
    gateway.url(&format!(
        "/com.broadsoft.xsi-actions/v2.0/user/{USER}/profile"
    ))
}

/// Runs a fixture command and returns the plugin's JSON answer.
async fn command(gateway: &Gateway, name: &str, arg: &str) -> Value {
    let response = client()
        .get(xsi(gateway))
        .header("authorization", basic(USER, "pw"))
        .header("x-fixture", name)
        .header("x-fixture-arg", arg)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "command {name}");
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_service_works_from_plugin_code() {
    let upstream = Upstream::start("xsp").await;
    let peer = Upstream::start("peer").await;
    let gateway = gateway_with_fixture(&upstream, "").await;

    // HTTP through the host's client: the peer saw the plugin's header, the plugin its answer.
    let seen = command(&gateway, "http", &format!("{}/peer/path", peer.url())).await;
    assert_eq!(seen["status"], 200);
    assert!(seen["body"].as_str().unwrap().contains("peer"), "{seen}");
    let request = peer
        .requests()
        .into_iter()
        .find(|r| r.path_and_query == "/peer/path");
    assert_eq!(request.unwrap().headers["x-from"], "fixture");
    let failed = command(&gateway, "http-error", &format!("http://{}/", free_addr())).await;
    assert_eq!(failed["error"], "Failed", "{failed}");
    let invalid = command(&gateway, "http-error", "ftp://127.0.0.1/").await;
    assert_eq!(invalid["error"], "Invalid", "{invalid}");

    // The store: put, get, delete, expiry, and persistence across calls.
    let store = command(&gateway, "store", "key-1").await;
    assert_eq!(store["before"], Value::Null);
    assert_eq!(store["after_put"], "value-1");
    assert_eq!(store["deleted"], true);
    assert_eq!(store["deleted_again"], false);
    assert_eq!(store["after_delete"], Value::Null);
    assert_eq!(
        store["expired"],
        Value::Null,
        "a value past its TTL is gone"
    );
    assert_eq!(
        store["listed"],
        serde_json::json!(["list/a", "list/b"]),
        "keys by prefix, in order, and nothing else"
    );
    assert_eq!(command(&gateway, "store-read", "").await["kept"], "key-1");

    // userId -> uniqueId: stable, opaque, reversible.
    let ids = command(&gateway, "unique-id", USER).await;
    assert_eq!(ids["first"], ids["second"]);
    assert_eq!(ids["back"], USER);
    assert_eq!(ids["unknown"], Value::Null);
    assert!(!ids["first"].as_str().unwrap().contains("alice"));
    assert_eq!(ids["batch_len"], 1202);
    assert_eq!(ids["batch_distinct"], 1201);
    assert_eq!(ids["batch_first"], ids["first"]);
    assert_eq!(ids["batch_last"], ids["first"]);
    assert_eq!(ids["batch_stable"], true);

    // Sealing: opens under its context only, never shows the plaintext, detects tampering.
    let sealed = command(&gateway, "seal", "context-a").await;
    assert_eq!(sealed["opened"], "replayable secret");
    assert_eq!(sealed["other_context"], "Failed");
    assert_eq!(sealed["tampered"], "Failed");
    assert_eq!(sealed["contains_plaintext"], false);

    // Event bus: the fixture consumes its own topic; nobody listens on the other one.
    let published = command(&gateway, "publish", "hello").await;
    assert_eq!(published["delivered"], 1);
    assert_eq!(published["nobody"], 0);
    gateway
        .wait_metric(
            "xsigate_plugin_fixture_events_total{topic=\"fixture.events\"}",
            |v| v >= 1.0,
        )
        .await;

    // Timers.
    assert!(
        command(&gateway, "sleep", "").await["slept_ms"]
            .as_u64()
            .unwrap()
            >= 50
    );

    // Logging into the host's log, attributed to the plugin.
    command(&gateway, "log", "marker-7").await;
    gateway
        .wait_log(|l| {
            l.lines().any(|line| {
                line.contains("fixture log line")
                    && line.contains("plugin=fixture")
                    && line.contains("marker-7")
            })
        })
        .await;

    // Metrics registered under the plugin's name; a bad record is refused, not a crash.
    command(&gateway, "metric", "").await;
    assert_eq!(
        gateway.metric("xsigate_plugin_fixture_level").await,
        Some(42.0)
    );
    assert_eq!(
        gateway.metric("xsigate_plugin_fixture_sizes_count").await,
        Some(1.0)
    );
    assert_eq!(
        gateway
            .metric("xsigate_plugin_fixture_commands_total{command=\"metric\"}")
            .await,
        Some(1.0)
    );
    gateway
        .wait_log(|l| l.contains("plugin metric record refused"))
        .await;
    assert_eq!(
        command(&gateway, "subscribe-late", "").await["refused"],
        true,
        "subscriptions after init are refused"
    );

    // Host calls are counted per plugin, service and result.
    assert!(
        gateway
            .metric("xsigate_plugin_host_calls_total{plugin=\"fixture\",result=\"ok\",service=\"store\"}")
            .await
            .unwrap()
            >= 6.0
    );
    assert_eq!(
        gateway
            .metric("xsigate_plugin_calls_total{hook=\"request_filter\",plugin=\"fixture\"}")
            .await,
        Some(12.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_reach_xsps_only_through_the_host_with_its_credentials() {
    let mut xsp1 = Upstream::start("xsp-one").await;
    let xsp2 = Upstream::start("xsp-two").await;
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("master");
    std::fs::write(&password_file, "master-secret\n").unwrap();
    let master = format!(
        "plugins = [\"fixture\"]\nmaster = {{ user = \"admin@acme.example\", password_file = \"{}\" }}",
        password_file.display()
    );
    let config = format!(
        "{}{}",
        fixture_plugin(""),
        provider("acme", &["acme.example"], &[&xsp1, &xsp2], &master)
    );
    let gateway = Gateway::start(&config).await;
    let authorization = |upstream: &Upstream| -> Vec<String> {
        upstream
            .requests()
            .iter()
            .filter(|r| !r.is_health_probe())
            .filter_map(|r| r.headers.get("authorization"))
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };

    let answer = command(&gateway, "xsi", "bob@acme.example").await;
    assert_eq!(answer["status"], 200, "{answer}");
    let xsp = answer["xsp"].as_str().unwrap().to_owned();
    assert!(xsp == "xsp1" || xsp == "xsp2", "{answer}");
    let master = command(&gateway, "xsi-master", "bob@acme.example").await;
    assert_eq!(master["status"], 200, "{master}");
    let sent: Vec<String> = [authorization(&xsp1), authorization(&xsp2)].concat();
    assert!(
        sent.contains(&basic("bob@acme.example", "user-pw")),
        "{sent:?}"
    );
    assert!(
        sent.contains(&basic("admin@acme.example", "master-secret")),
        "{sent:?}"
    );

    // Only providers that list the plugin, and only XSI paths.
    assert_eq!(
        command(&gateway, "xsi-foreign", "bob@acme.example").await["error"],
        "Invalid"
    );
    assert_eq!(
        command(&gateway, "xsi-path", "bob@acme.example").await["error"],
        "Invalid"
    );

    // An XSP that cannot be reached is skipped: every request is answered by the other.
    xsp1.stop();
    for _ in 0..4 {
        let answer = command(&gateway, "xsi", "bob@acme.example").await;
        assert_eq!(answer["status"], 200, "{answer}");
        assert_eq!(answer["xsp"], "xsp2", "{answer}");
    }
    let logs = gateway.logs();
    assert!(
        !logs.contains("master-secret") && !logs.contains("user-pw"),
        "{logs}"
    );
}

fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], xsigate_tests::free_port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_see_and_change_requests_and_responses() {
    let upstream = Upstream::start("xsp").await;
    let gateway = gateway_with_fixture(&upstream, "").await;
    let client = client();

    // What a filter sees of the request.
    let response = client
        .get(format!("{}?a=1", xsi(&gateway)))
        .header("authorization", basic(USER, "pw"))
        .header("accept", "text/xml")
        .header("accept", "application/json")
        .header("x-fixture", "view")
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["method"], "GET");
    assert_eq!(
        view["path"],
        format!("/com.broadsoft.xsi-actions/v2.0/user/{USER}/profile")
    );
    assert_eq!(view["query"], "a=1");
    assert_eq!(view["provider"], "acme");
    assert_eq!(view["request_id"], request_id);
    assert_eq!(view["client_addr"], "127.0.0.1");
    // Both fields of a name, in order, collected or read one at a time.
    assert_eq!(
        view["accept"],
        serde_json::json!(["text/xml", "application/json"])
    );
    assert_eq!(view["accept_values"], view["accept"]);

    // A proxied request passes all three filters.
    let response = client
        .get(xsi(&gateway))
        .header("authorization", basic(USER, "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-fixture-upstream-status"], "200");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let seen = upstream
        .requests()
        .into_iter()
        .rfind(|r| !r.is_health_probe())
        .unwrap();
    assert_eq!(seen.headers["x-fixture-seen"], "request");
    assert_eq!(seen.headers["x-fixture-upstream-id"], request_id.as_str());

    // A plugin's own answer: its status, headers and body; framing stays the host's.
    let before = upstream.request_count();
    let response = client
        .get(xsi(&gateway))
        .header("authorization", basic(USER, "pw"))
        .header("x-fixture", "answer")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 418);
    assert_eq!(response.headers()["x-answered-by"], "fixture");
    assert_eq!(response.headers()["content-length"], "15");
    assert_eq!(response.text().await.unwrap(), "short and stout");
    assert_eq!(
        upstream.request_count(),
        before,
        "an answered request goes nowhere"
    );
    gateway
        .wait_log(|l| l.contains("plugin=\"fixture\"") || l.contains("plugin=fixture"))
        .await;
}

async fn status_and_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_plugins_fail_only_their_own_request_under_concurrent_load() {
    let upstream = Upstream::start("xsp").await;
    let gateway = gateway_with_fixture(&upstream, "").await;
    let client = client();

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (client, url) = (client.clone(), xsi(&gateway));
        requests.spawn(async move {
            let mut request = client.get(url).header("authorization", basic(USER, "pw"));
            if i % 2 == 0 {
                request = request.header("x-fixture", "panic");
            }
            let response = request.send().await.unwrap();
            (
                i % 2 == 0,
                response.status().as_u16(),
                response.text().await.unwrap(),
            )
        });
    }
    let (mut panicked, mut served) = (0, 0);
    while let Some(result) = requests.join_next().await {
        let (panics, status, body) = result.unwrap();
        if panics {
            assert_eq!(status, 500, "{body}");
            assert!(body.contains("\"internal_error\""), "{body}");
            assert!(
                !body.contains("fixture panic"),
                "panic text never reaches a client"
            );
            panicked += 1;
        } else {
            assert_eq!(status, 200, "{body}");
            served += 1;
        }
    }
    assert_eq!((panicked, served), (100, 100));
    assert_eq!(
        gateway
            .metric("xsigate_plugin_errors_total{hook=\"request_filter\",plugin=\"fixture\"}")
            .await,
        Some(100.0)
    );

    // Every other kind of failure, each with its own clean answer.
    let send = |command: &'static str, query: &'static str| {
        let request = client
            .get(format!("{}{query}", xsi(&gateway)))
            .header("authorization", basic(USER, "pw"));
        let request = match command {
            "" => request,
            "upstream-panic" => request.header("x-fixture-upstream", "panic"),
            command => request.header("x-fixture", command),
        };
        async move { status_and_code(request.send().await.unwrap()).await }
    };
    assert_eq!(send("error", "").await, (502, "plugin_failed".to_owned()));
    assert_eq!(send("hang", "").await, (504, "plugin_timeout".to_owned()));
    assert_eq!(
        send("bad-status", "").await,
        (500, "internal_error".to_owned())
    );
    assert_eq!(
        send("upstream-panic", "").await,
        (500, "internal_error".to_owned())
    );
    assert_eq!(
        send("", "?fixture_fail=1").await,
        (502, "plugin_failed".to_owned())
    );

    // And the process still serves.
    let response = client
        .get(xsi(&gateway))
        .header("authorization", basic(USER, "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let logs = gateway
        .wait_log(|l| l.contains("fixture panic before going upstream"))
        .await;
    assert!(logs.contains("fixture panic on request"));
    assert!(logs.contains("failure=\"timeout\""), "{logs}");
    assert!(!logs.contains("stack backtrace"), "{logs}");
    assert!(!logs.contains("RUST_BACKTRACE"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_restart_and_consumers_survive_their_own_panics() {
    let upstream = Upstream::start("xsp").await;
    let gateway = gateway_with_fixture(&upstream, "config = { worker_fail_first = true }").await;

    gateway
        .wait_metric("xsigate_plugin_fixture_worker_runs_total", |v| v >= 2.0)
        .await;
    assert_eq!(
        gateway
            .metric("xsigate_plugin_worker_restarts_total{plugin=\"fixture\"}")
            .await,
        Some(1.0)
    );

    command(&gateway, "publish", "panic").await;
    gateway
        .wait_metric(
            "xsigate_plugin_errors_total{hook=\"on_event\",plugin=\"fixture\"}",
            |v| v >= 1.0,
        )
        .await;
    command(&gateway, "publish", "after").await;
    gateway
        .wait_metric(
            "xsigate_plugin_fixture_events_total{topic=\"fixture.events\"}",
            |v| v >= 2.0,
        )
        .await;
}

/// `xsigate check` on a configuration holding `plugins`, with provider `acme` using plugin `p`;
/// returns (exit code, stderr).
fn check(dir: &Path, plugins: &str) -> (i32, String) {
    check_using(dir, plugins, "\"p\"")
}

/// As [`check`], with `acme` using the plugins listed in `uses`.
fn check_using(dir: &Path, plugins: &str, uses: &str) -> (i32, String) {
    let config = dir.join("providers.toml");
    std::fs::write(
        &config,
        format!(
            "{plugins}\n[providers.acme]\ndomains = [\"acme.example\"]\nxsp = [\"http://127.0.0.1:1\"]\nplugins = [{uses}]\n"
        ),
    )
    .unwrap();
    let (code, _, stderr) = run_command(
        Command::new(binary("xsigate"))
            .arg("check")
            .arg("-c")
            .arg(&config),
    );
    (code, stderr)
}

fn entry(path: &Path, config: &str) -> String {
    format!(
        "[[plugins]]\nname = \"p\"\npath = \"{}\"\nconfig = {{ {config} }}\n",
        path.display()
    )
}

#[test]
fn loader_failures_are_startup_errors_naming_the_entry_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = plugin_library("xsigate-fixture-host-services");
    let cases: Vec<(String, String)> = vec![
        (
            entry(&dir.path().join("missing.so"), ""),
            "missing.so): no such file".to_owned(),
        ),
        (
            entry(&dir.path().join("providers.toml"), ""),
            "cannot load the library".to_owned(),
        ),
        (entry(&plugin_library("xsigate-fixture-foreign-abi"), ""), {
            let ours = xsigate_plugin_sdk::abi::ABI_VERSION;
            format!(
                "built for plugin ABI {}, but this xsigate speaks ABI {ours}",
                ours + 1
            )
        }),
        (
            entry(&plugin_library("xsigate-fixture-no-init"), ""),
            "missing symbol `xsigate_plugin_init`".to_owned(),
        ),
        (
            entry(&fixture, "fail_init = true"),
            "init failed: fixture refused to start: fail_init is set".to_owned(),
        ),
        (
            entry(&fixture, "bogus = 1"),
            "init failed: invalid config: unknown field `bogus`, expected one of".to_owned(),
        ),
        (
            entry(&fixture, "topic = 5"),
            "init failed: invalid config: topic: invalid type: integer `5`, expected a string"
                .to_owned(),
        ),
    ];
    for (plugins, expected) in cases {
        let (code, stderr) = check(dir.path(), &plugins);
        assert_eq!(code, 1, "{plugins}\n{stderr}");
        let config = dir.path().join("providers.toml");
        let prefix = format!("{}:1:1: plugin `p` (", config.display());
        assert!(stderr.starts_with(&prefix), "{stderr}");
        assert!(
            stderr.contains(&expected),
            "expected `{expected}` in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    // A library that is not a plugin at all: any other shared object the build produced.
    let deps = binary("xsigate").parent().unwrap().join("deps");
    let foreign = std::fs::read_dir(deps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("libserde_derive-") && name.ends_with(".so")
        })
        .expect("a proc-macro library in target/*/deps");
    let (code, stderr) = check(dir.path(), &entry(&foreign, ""));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not an xsigate plugin: it exports no `xsigate_plugin_abi_version` symbol"),
        "{stderr}"
    );

    // The same failure stops `xsigate run` before it serves.
    let config = dir.path().join("providers.toml");
    check(
        dir.path(),
        &entry(&plugin_library("xsigate-fixture-foreign-abi"), ""),
    );
    let (code, _, stderr) = run_command(
        Command::new(binary("xsigate"))
            .arg("run")
            .arg("-c")
            .arg(&config),
    );
    assert_eq!(code, 1);
    let foreign = format!(
        "built for plugin ABI {}",
        xsigate_plugin_sdk::abi::ABI_VERSION + 1
    );
    assert!(stderr.contains(&foreign), "{stderr}");

    // And a good one passes.
    let (code, stderr) = check(dir.path(), &entry(&fixture, ""));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn two_identity_providers_of_one_provider_may_not_serve_the_same_method() {
    let dir = tempfile::tempdir().unwrap();
    let idp = plugin_library("xsigate-idp-webhook");
    let plugins = format!(
        "{}[[plugins]]\nname = \"q\"\npath = \"{}\"\nconfig = {{ url = \"http://127.0.0.1:1\" }}\n",
        entry(&idp, "url = \"http://127.0.0.1:1\""),
        idp.display()
    );
    let (code, stderr) = check_using(dir.path(), &plugins, "\"p\", \"q\"");
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "provider `acme` also uses plugin `p`, and both serve login method `webhook`"
        ),
        "{stderr}"
    );
}

#[test]
fn reverse_lookups_need_master_credentials_and_anchor_users() {
    let dir = tempfile::tempdir().unwrap();
    let email = plugin_library("xsigate-idp-email");
    let (code, stderr) = check_using(
        dir.path(),
        &entry(&email, "anchor_users = [\"alice@acme.example\"]"),
        "\"p\"",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "it looks users up with master credentials, and provider `acme` has no `master`"
        ),
        "{stderr}"
    );
    let (code, stderr) = check_using(
        dir.path(),
        &entry(&email, "anchor_users = [\"alice\"]"),
        "\"p\"",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("anchor_users: `alice` is not a user id"),
        "{stderr}"
    );
}

/// The operator's identity service the example plugin talks to: knows one user.
async fn identity_service() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use http_body_util::BodyExt as _;
    let listener = xsi_sim::http::bind(free_addr()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = xsi_sim::http::serve(listener, None, |request, _| async move {
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let input: Value = serde_json::from_slice(&body).unwrap_or_default();
        let (status, answer) = match path.as_str() {
            "/idp/authenticate" if input["user"] == "alice@mail.example" => {
                if input["password"] == "right" {
                    (200, serde_json::json!({ "user_id": USER }))
                } else {
                    (401, serde_json::json!({}))
                }
            }
            "/idp/authenticate" if input["user"] == "broken@mail.example" => {
                (500, serde_json::json!({}))
            }
            _ => (404, serde_json::json!({})),
        };
        Ok(http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(xsi_sim::http::Body::full(answer.to_string()))
            .unwrap())
    });
    (addr, task)
}

#[test]
fn the_example_identity_provider_logs_users_in_through_the_host() {
    use xsigate::plugin::{AuthenticateError, PluginFailure};
    use xsigate_plugin_sdk::{Authentication, Login, LoginQuery, QueryMatch};

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, _service) = runtime.block_on(identity_service());
    let text = format!(
        "[[plugins]]\nname = \"webhook\"\npath = \"{}\"\nconfig = {{ url = \"http://{addr}/idp\", label = \"Mail account\" }}\n\
         [providers.acme]\ndomains = [\"acme.example\"]\nxsp = [\"http://127.0.0.1:1\"]\nplugins = [\"webhook\"]\n",
        plugin_library("xsigate-idp-webhook").display()
    );
    let running = InProcess::start(&text);
    let chain = running.chain("acme");
    assert_eq!(chain.identity.len(), 1);
    assert_eq!(chain.identity[0].manifest.login_methods, ["webhook"]);

    runtime.block_on(async {
        let query = |q: &str| LoginQuery {
            provider: "acme".to_owned(),
            query: q.to_owned(),
            matched: QueryMatch::UserDomain,
        };
        let options = chain.login_options(&query("alice@mail.example")).await;
        assert_eq!(options.len(), 1);
        assert_eq!(options[0].method, "webhook");
        assert_eq!(options[0].label, "Mail account");
        assert_eq!(options[0].user_id, None);
        // The same for an address nobody has: options never tell whether an account exists.
        assert_eq!(
            chain.login_options(&query("nobody@mail.example")).await,
            options
        );
        assert!(chain.login_options(&query("2025550101")).await.is_empty());

        let login = |user: &str, password: &str, method: &str| Login {
            provider: "acme".to_owned(),
            method: method.to_owned(),
            user: user.to_owned(),
            password: Some(password.to_owned()),
            params: serde_json::Map::new(),
            flow: None,
        };
        assert_eq!(
            chain
                .authenticate(
                    &login("alice@mail.example", "right", "webhook"),
                    QueryMatch::UserDomain
                )
                .await,
            Ok(Authentication::Authenticated {
                user_id: USER.to_owned(),
                grant: Default::default(),
            })
        );
        assert!(matches!(
            chain
                .authenticate(
                    &login("alice@mail.example", "wrong", "webhook"),
                    QueryMatch::UserDomain
                )
                .await,
            Ok(Authentication::Rejected { .. })
        ));
        assert!(matches!(
            chain
                .authenticate(&login("broken@mail.example", "x", "webhook"), QueryMatch::UserDomain)
                .await,
            Err(AuthenticateError::Failed(PluginFailure::Error(message))) if message.contains("500")
        ));
        assert_eq!(
            chain
                .authenticate(
                    &login("alice@mail.example", "right", "saml"),
                    QueryMatch::UserDomain
                )
                .await,
            Err(AuthenticateError::UnknownMethod)
        );
    });

    let text = String::from_utf8(running.metrics.render()).unwrap();
    assert!(
        text.contains(
            "xsigate_plugin_webhook_authentications_total{plugin=\"webhook\",result=\"accepted\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("xsigate_plugin_calls_total{hook=\"authenticate\",plugin=\"webhook\"} 3"),
        "{text}"
    );
}

#[test]
fn plugin_crates_link_no_async_runtime_and_no_http_client() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    for krate in [
        "xsigate-plugin-sdk",
        "xsigate-idp-webhook",
        "xsigate-idp-broadsoft",
        "xsigate-idp-email",
        "xsigate-idp-phone",
        "xsigate-fixture-host-services",
        "xsigate-fixture-noop-filter",
    ] {
        let (code, stdout, stderr) = run_command(
            Command::new(&cargo)
                .args([
                    "tree",
                    "--offline",
                    "--locked",
                    "-e",
                    "normal",
                    "--prefix",
                    "none",
                    "-p",
                    krate,
                ])
                .current_dir(xsigate_tests::repo_root()),
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(krate), "{stdout}");
        let linked: Vec<&str> = stdout
            .lines()
            .filter(|line| {
                ["tokio ", "hyper ", "reqwest "]
                    .iter()
                    .any(|c| line.starts_with(c))
            })
            .collect();
        assert!(linked.is_empty(), "{krate} links {linked:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_and_their_data_carry_over_a_graceful_upgrade() {
    let upstream = Upstream::start("xsp").await;
    let mut gateway = gateway_with_fixture(&upstream, "").await;
    command(&gateway, "store", "before-upgrade").await;
    let ids = command(&gateway, "unique-id", USER).await;

    gateway.upgrade().await;

    // The new process loaded the plugin again and opened the same store.
    assert_eq!(
        command(&gateway, "store-read", "").await["kept"],
        "before-upgrade"
    );
    assert_eq!(
        command(&gateway, "unique-id", USER).await["first"],
        ids["first"]
    );
    let sealed = command(&gateway, "seal", "context-a").await;
    assert_eq!(sealed["opened"], "replayable secret");
}

#[test]
fn idp_broadsoft_checks_user_credentials_on_the_simulator_through_the_host() {
    use xsigate_plugin_sdk::{Authentication, Login, LoginLevel, LoginQuery, QueryMatch};

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let seed: xsi_sim::seed::Seed = toml::from_str(
        r#"
        [[users]]
        user_id = "alice@acme.example"
        password = "alice-pw"
        service_provider = "acme"
        group = "sales"
        "#,
    )
    .unwrap();
    let sim = runtime.block_on(xsi_sim::Simulator::start(seed)).unwrap();
    let xsps: Vec<String> = sim
        .xsp_addrs()
        .iter()
        .map(|a| format!("\"http://{a}\""))
        .collect();
    let text = format!(
        "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
         [providers.acme]\ndomains = [\"acme.example\"]\nxsp = [{}]\nplugins = [\"broadsoft\"]\n",
        plugin_library("xsigate-idp-broadsoft").display(),
        xsps.join(", ")
    );
    let running = InProcess::start(&text);
    let chain = running.chain("acme");

    runtime.block_on(async {
        let query = |q: &str| LoginQuery {
            provider: "acme".to_owned(),
            query: q.to_owned(),
            matched: QueryMatch::UserDomain,
        };
        let options = chain.login_options(&query("alice@acme.example")).await;
        assert_eq!(options.len(), 1);
        assert_eq!(options[0].method, "broadsoft");
        assert!(chain.login_options(&query("2025550101")).await.is_empty());

        let login = |user: &str, password: &str, level: Option<&str>| {
            let mut params = serde_json::Map::new();
            if let Some(level) = level {
                params.insert("level".to_owned(), level.into());
            }
            Login {
                provider: "acme".to_owned(),
                method: "broadsoft".to_owned(),
                user: user.to_owned(),
                password: Some(password.to_owned()),
                params,
                flow: None,
            }
        };
        let Ok(Authentication::Authenticated { user_id, grant }) = chain
            .authenticate(
                &login("Alice@acme.example", "alice-pw", None),
                QueryMatch::UserDomain,
            )
            .await
        else {
            panic!("alice's own credentials must log her in");
        };
        assert_eq!(
            user_id, "alice@acme.example",
            "the profile's canonical userId"
        );
        assert_eq!(grant.level, LoginLevel::User);
        let xsp = grant.xsp.as_deref().unwrap();
        assert!(xsp == "xsp1" || xsp == "xsp2", "{grant:?}");
        assert!(
            grant.xsp_cookies["xsi-actions"].starts_with("JSESSIONID="),
            "{grant:?}"
        );

        // A wrong password and an unknown user are the same rejection.
        let wrong = chain
            .authenticate(
                &login("alice@acme.example", "nope", None),
                QueryMatch::UserDomain,
            )
            .await
            .unwrap();
        let unknown = chain
            .authenticate(
                &login("nobody@acme.example", "nope", None),
                QueryMatch::UserDomain,
            )
            .await
            .unwrap();
        assert!(matches!(wrong, Authentication::Rejected { .. }));
        assert_eq!(wrong, unknown);
        // A user claiming an administrator level is refused by the XSP, like a wrong password.
        assert_eq!(
            chain
                .authenticate(
                    &login("alice@acme.example", "alice-pw", Some("system")),
                    QueryMatch::UserDomain
                )
                .await
                .unwrap(),
            Authentication::Rejected {
                reason: "the administrator's scope does not cover the claimed one".to_owned()
            }
        );
        // Only reverse lookups are asked about queries no provider claims.
        assert!(
            chain
                .login_options(&LoginQuery {
                    matched: QueryMatch::Nothing,
                    ..query("alice@acme.example")
                })
                .await
                .is_empty()
        );

        // One XSP down: the login goes to the other.
        assert!(sim.stop_xsp(0));
        for _ in 0..3 {
            let Ok(Authentication::Authenticated { grant, .. }) = chain
                .authenticate(
                    &login("alice@acme.example", "alice-pw", None),
                    QueryMatch::UserDomain,
                )
                .await
            else {
                panic!("the other XSP must answer");
            };
            assert_eq!(grant.xsp.as_deref(), Some("xsp2"));
        }
    });
}
