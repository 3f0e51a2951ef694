//! What the single-sign-on suites share: a browser's cookie jar as the test keeps it, reading
//! a redirect or a form as a browser does, the reference dialer served for a gateway, and an
//! identity provider's process.

use std::process::{Child, Command, Stdio};

use std::time::Duration;
use tokio::io::AsyncBufReadExt;

use serde_json::{Value, json};

use crate::{Gateway, WAIT, client, repo_root};

/// One site's cookies, as `name=value` pairs (paths and ports are not told apart: the test
/// chooses what the callback gets itself).
#[derive(Debug, Default, Clone)]
pub struct Jar(Vec<(String, String)>);

impl Jar {
    pub fn absorb(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.0.retain(|(n, _)| n != name);
            if !value.is_empty() && !text.contains("Max-Age=0") {
                self.0.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A `Location` or a form's `action` as the browser reads it, against the page's URL.
pub fn resolve(base: &str, reference: &str) -> String {
    url::Url::parse(base)
        .unwrap()
        .join(reference)
        .unwrap()
        .to_string()
}

pub fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// The reference dialer, served by `dialer/serve.mjs` for `gateway`; ended with the test.
#[derive(Debug)]
pub struct Dialer {
    child: Child,
}

impl Drop for Dialer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dialer {
    pub async fn serve(port: u16, gateway: &Gateway) -> Self {
        let child = Command::new("node")
            .arg(repo_root().join("dialer/serve.mjs"))
            .arg(format!("127.0.0.1:{port}"))
            .env("XSIGATE_URL", gateway.url(""))
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs (scripts/install-deps test)");
        let mut dialer = Self { child };
        // Up to 30 s: a whole suite starts browsers and node processes on two cores at once,
        // and a CI run once saw no answer within the 10 s this waited before. An exit is told
        // apart from a slow start: the process's output goes nowhere.
        for _ in 0..300 {
            if client()
                .get(format!("http://127.0.0.1:{port}/config.json"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return dialer;
            }
            if let Ok(Some(status)) = dialer.child.try_wait() {
                panic!("the dialer exited before it served ({status}; port {port})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the dialer did not start in 30 s");
    }
}

/// An identity provider's process (`sim/idp`), ended with the test.
#[derive(Debug)]
pub struct IdpProcess {
    child: Child,
}

impl Drop for IdpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl IdpProcess {
    /// Starts `command` and waits (at most [`WAIT`]) for the `ready <port>` line it prints when it
    /// listens. `what` names it in the failure.
    pub async fn start(mut command: Command, what: &str) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not run ({e}): scripts/install-deps test"));
        let stdout = tokio::process::ChildStdout::from_std(child.stdout.take().unwrap()).unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("ready ") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "{what} did not start");
        // Its output is drained until it ends: a closed pipe would end it at its next line.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child }
    }
}

/// A run of `tests/browser/sso.mjs`: Chromium signs in through the dialer on `dialer_port`
/// with `method` as alice@mail.example (the identity provider's password `idp_password`),
/// then tries shared@mail.example. The driver's report, and a brief of it for failures; the
/// run itself must have succeeded.
pub async fn chromium_sign_in(
    gateway: &Gateway,
    dialer_port: u16,
    method: &str,
    idp_password: &str,
) -> (Value, Value) {
    let out = repo_root().join("target/browser-suite");
    std::fs::create_dir_all(&out).unwrap();
    let output = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser/sso.mjs"))
        .env("DIALER_URL", format!("http://127.0.0.1:{dialer_port}/"))
        .env("METHOD", method)
        .env("LOGIN", "alice@mail.example")
        .env("IDP_PASSWORD", idp_password)
        .env("REFUSED_LOGIN", "shared@mail.example")
        .env("OUT", &out)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no report:\n{stdout}\n{stderr}"));
    let brief = json!({
        "error": report["error"],
        "addresses": report["addresses"],
        "status": report["status"],
        "refusal_status": report["refusal_status"],
        "console_errors": report["console_errors"],
        "screenshots": report["screenshots"],
    });
    assert!(
        output.status.success() && report.get("error").is_none(),
        "{method}: the browser run failed: {brief:#}\n{stderr}\n{}",
        gateway.logs()
    );
    (report, brief)
}
