//! Conformance to outside contracts: the CLI's exit codes and messages, and Prometheus' own
//! checker on the metrics exposition.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use xsigate_tests::{
    Gateway, Upstream, basic, binary, client, plugin_library, provider, repo_root, run_command,
};

#[test]
fn check_accepts_the_shipped_configuration() {
    let shipped = repo_root().join("providers.toml");
    let (code, stdout, stderr) = run_command(
        Command::new(binary("xsigate"))
            .arg("check")
            .arg("-c")
            .arg(&shipped),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("ok (1 providers, 2 XSPs, 1 listeners, 10 plugins)"),
        "every shipped plugin loads (scripts/test builds them with `scripts/demo build`): {stdout}"
    );

    let (code, stdout, _) = run_command(
        Command::new(binary("xsigate"))
            .arg("check")
            .current_dir(repo_root()),
    );
    assert_eq!(code, 0, "the embedded default is the shipped file");
    assert!(
        stdout.starts_with("<embedded providers.toml>: ok"),
        "{stdout}"
    );
}

/// Before the demo's build, the shipped configuration names the first plugin library missing
/// and the command that builds it. (The copy sits where no `target/` exists; its secrets are
/// copied along, so that the libraries are what is missing.)
#[test]
fn check_names_a_missing_plugin_library_and_the_command_that_builds_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sim")).unwrap();
    for file in [
        "providers.toml",
        "sim/demo-master-password",
        "sim/demo-firebase-secret",
    ] {
        std::fs::copy(repo_root().join(file), dir.path().join(file)).unwrap();
    }
    let config = dir.path().join("providers.toml");
    let (code, stdout, stderr) = run_command(
        Command::new(binary("xsigate"))
            .arg("check")
            .arg("-c")
            .arg(&config),
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text
        .lines()
        .position(|l| l == "[[plugins]]")
        .expect("a [[plugins]] entry")
        + 1;
    assert_eq!(
        stderr.trim(),
        format!(
            "{}:{line}:1: plugin `broadsoft` ({}): no such file; build it with \
             `cargo build --release -p xsigate-idp-broadsoft`",
            config.display(),
            dir.path()
                .join("target/release/libxsigate_idp_broadsoft.so")
                .display()
        )
    );
}

#[test]
fn check_rejects_a_broken_configuration_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "[providers.acme]\ndomains = [\"acme.example\"]\nxsp = [\"gopher://xsp\"]\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run_command(
        Command::new(binary("xsigate"))
            .arg("check")
            .arg("-c")
            .arg(&path),
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "{}:3:8: providers.acme.xsp[0]: scheme must be http or https, not `gopher`",
            path.display()
        )
    );

    let (code, _, stderr) = run_command(
        Command::new(binary("xsigate"))
            .arg("check")
            .arg("-c")
            .arg(dir.path().join("absent.toml")),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("absent.toml: cannot read the configuration"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_to_start_on_a_broken_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "[providers.acme]\ndomains = [\"acme.example\"]\nxsp = [\"http://x\"]\nthreads = 2\n",
    )
    .unwrap();
    let (code, _, stderr) = run_command(
        Command::new(binary("xsigate"))
            .arg("run")
            .arg("-c")
            .arg(&path),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("broken.toml:4:1: providers.acme.threads: unknown field `threads`"),
        "{stderr}"
    );
}

#[test]
fn version_names_the_build() {
    let (code, stdout, _) = run_command(Command::new(binary("xsigate")).arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("xsigate {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A gateway whose provider uses a no-op plugin and the BroadSoft and e-mail identity
/// providers, so that the plugin, login and lookup families are exported too.
async fn gateway_with_plugin(xsp: &Upstream) -> Gateway {
    let plugin = format!(
        "[[plugins]]\nname = \"noop\"\npath = \"{}\"\n[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
         [[plugins]]\nname = \"email\"\npath = \"{}\"\nconfig = {{ anchor_users = [\"a@acme.example\"] }}\n",
        plugin_library("xsigate-fixture-noop-filter").display(),
        plugin_library("xsigate-idp-broadsoft").display(),
        plugin_library("xsigate-idp-email").display()
    );
    // Password reset is configured (never used) so that its series exist too.
    let master = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(master.path(), "admin-pw").unwrap();
    let extra = format!(
        "plugins = [\"noop\", \"broadsoft\", \"email\"]\n\
         master = {{ user = \"admin@acme.example\", password_file = \"{}\" }}\n\
         reset_url = \"https://dialer.acme.example/reset\"\n\
         [providers.acme.smtp]\nhost = \"127.0.0.1\"\nsecurity = \"none\"\nfrom = \"noreply@acme.example\"\n",
        master.path().display()
    );
    let provider = provider("acme", &["acme.example"], &[xsp], &extra);
    Gateway::start(&format!("{plugin}{provider}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with_plugin(&xsp).await;
    let http = client();
    for path in [
        "/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/profile",
        "/nowhere",
        "/readyz",
    ] {
        http.get(gateway.url(path))
            .header("authorization", basic("alice@acme.example", "pw"))
            .send()
            .await
            .unwrap();
    }
    gateway
        .wait_metric(
            "xsigate_requests_total{provider=\"acme\",route=\"xsi_actions\",status=\"2xx\"}",
            |v| v == 1.0,
        )
        .await;
    let exposition = http
        .get(gateway.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "xsigate_requests_total",
        "xsigate_request_duration_seconds_bucket",
        "xsigate_upstream_response_duration_seconds_bucket",
        "xsigate_upstream_connect_failures_total",
        "xsigate_xsp_up",
        "xsigate_requests_in_flight",
        "xsigate_downstream_connections",
        "xsigate_build_info",
        "process_resident_memory_bytes",
        "xsigate_plugin_calls_total",
        "xsigate_plugin_errors_total",
        "xsigate_plugin_call_duration_seconds_bucket",
        "xsigate_plugin_worker_restarts_total",
        "xsigate_plugin_events_dropped_total",
        "xsigate_logins_total",
        "xsigate_sessions_active",
        "xsigate_rate_limited_total",
        "xsigate_plugin_email_lookups_total",
    ] {
        assert!(exposition.contains(family), "{family} is missing");
    }

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) must be installed; the test command installs it");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), exposition.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool failed: {report}");
    assert!(report.trim().is_empty(), "promtool reports: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_client_connections_are_counted() {
    let xsp = Upstream::start("xsp").await;
    let gateway = Gateway::start(&provider("acme", &["acme.example"], &[&xsp], "")).await;
    let series = "xsigate_downstream_connections";
    let keepalive = client();
    keepalive
        .get(gateway.url("/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/profile"))
        .header("authorization", basic("alice@acme.example", "pw"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    gateway.wait_metric(series, |v| v == 1.0).await;
    drop(keepalive);
    gateway.wait_metric(series, |v| v == 0.0).await;
}

/// Every metric name a dashboard or alert rule uses, e.g. `xsigate_xsp_up`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["xsigate_", "process_"] {
        for (start, _) in text.match_indices(prefix) {
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_match_the_exposition() {
    let dashboards = repo_root().join("dashboards");
    let (code, stdout, stderr) = run_command(
        Command::new("promtool")
            .args(["check", "rules", "alerts.yml"])
            .current_dir(&dashboards),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = run_command(
        Command::new("promtool")
            .args(["test", "rules", "alerts.test.yml"])
            .current_dir(&dashboards),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");

    let mut expressions = Vec::new();
    for file in ["xsigate-overview.json", "xsigate-provider.json"] {
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dashboards.join(file)).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                expressions.push(target["expr"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(expressions.len() >= 8);
    let mut used = metric_names(&expressions.join("\n"));
    used.extend(metric_names(
        &std::fs::read_to_string(dashboards.join("alerts.yml")).unwrap(),
    ));

    let xsp = Upstream::start("xsp").await;
    let gateway = gateway_with_plugin(&xsp).await;
    gateway
        .wait_metric("xsigate_xsp_up{provider=\"acme\",xsp=\"xsp1\"}", |v| {
            v == 1.0
        })
        .await;
    let exposition = client()
        .get(gateway.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exposed = metric_names(&exposition);
    // A name cut short at a regular expression (`xsigate_plugin_` of
    // `{__name__=~"xsigate_plugin_.+_lookups_total"}`) needs an exported name it begins.
    let missing: Vec<_> = used
        .iter()
        .filter(|name| {
            if name.ends_with('_') {
                !exposed.iter().any(|e| e.starts_with(name.as_str()))
            } else {
                !exposed.contains(*name)
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "dashboards or alerts use metrics xsigate does not export: {missing:?}"
    );
}

/// `xsigate hash-password < input`: exit code, standard output, standard error.
fn hash_password(input: &[u8]) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(binary("xsigate"))
        .arg("hash-password")
        // No configuration is read: the command works anywhere.
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn hash_password_prints_an_argon2id_hash_at_owasps_minimum_and_refuses_what_is_no_password() {
    let (code, stdout, stderr) = hash_password(b"correct horse battery\n");
    assert_eq!(code, 0, "{stderr}");
    let hash = stdout.trim_end();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert_eq!(hash.matches('$').count(), 5, "{hash}");
    assert!(!stdout.contains("correct horse") && !stderr.contains("correct horse"));
    // The same password twice gives two hashes: each has its own salt.
    assert_ne!(hash_password(b"correct horse battery\n").1, stdout);

    for (input, says) in [
        (&b"\n"[..], "the password is empty"),
        (&b""[..], "the password is empty"),
        (&[b'x'; 5000][..], "longer than 1024 bytes"),
    ] {
        let (code, stdout, stderr) = hash_password(input);
        assert_eq!(code, 1, "{stdout}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(says), "{stderr}");
    }
}
