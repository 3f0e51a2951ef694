//! The product's whole user experience in a real browser: the demo, started with its own
//! command (`scripts/demo`), and headless Chromium (Debian's) driven by puppeteer-core through
//! the reference dialer (`tests/browser/dialer.mjs`): each password login method, DND and
//! forwarding set in the page coming back through XSI-Events → firebase-sync → Firebase, a call
//! and a queued caller showing up, a watched colleague's lamp ringing, an XSI-Events channel of
//! the page's own with its heartbeats pinned by the cross-origin `X-Xsigate-Xsp`, and logout
//! ending the live view. Screenshots of each step are kept in `target/browser-suite/`.
//!
//! The demo listens on its fixed loopback ports (scripts/demo lists them): a demo already
//! running on this machine makes this suite fail at start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use xsigate_tests::repo_root;

const READY: &str = "demo: ready";

/// The demo's process group, stopped as Ctrl-C would stop it when dropped.
struct Demo {
    child: Child,
    output: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Demo {
    fn start() -> Self {
        let mut command = Command::new("bash");
        // What cargo sets for this test crate: a build script that reads CARGO_MANIFEST_DIR
        // (ring's) would make the demo's release build start over for it.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
                || name == "CARGO_TARGET_TMPDIR"
                || name == "CARGO_PRIMARY_PACKAGE"
            {
                command.env_remove(name.as_ref());
            }
        }
        let mut child = command
            .arg(repo_root().join("scripts/demo"))
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let (sender, output) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            child,
            output,
            lines: Vec::new(),
        }
    }

    /// Waits for the demo's ready line; answers how long it took.
    fn wait_ready(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let left = limit.saturating_sub(started.elapsed());
            match self.output.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.starts_with(READY);
                    self.lines.push(line);
                    if ready {
                        return started.elapsed();
                    }
                }
                Err(_) => panic!(
                    "the demo was not ready within {limit:?}:\n{}",
                    self.lines.join("\n")
                ),
            }
        }
    }

    fn log(&mut self) -> String {
        self.lines.extend(self.output.try_iter());
        self.lines.join("\n")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let Ok(group) = i32::try_from(self.child.id()) else {
            return;
        };
        let signal_group = |signal: &str| {
            let _ = Command::new("kill")
                .args([signal, "--", &format!("-{group}")])
                .status();
        };
        // Ctrl-C's signal: xsigate stops at once, the script stops the rest.
        signal_group("-INT");
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        signal_group("-KILL");
        let _ = self.child.wait();
    }
}

/// The last lines of each named log in `dir`, headed by its name.
fn log_tails(dir: &std::path::Path, logs: &[&str]) -> String {
    const LINES: usize = 20;
    let mut tails = String::new();
    for log in logs {
        let text = std::fs::read_to_string(dir.join(format!("{log}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LINES)..];
        tails.push_str(&format!(
            "--- {log}.log (last {LINES} lines)\n{}\n",
            tail.join("\n")
        ));
    }
    tails
}

#[test]
fn the_reference_dialer_runs_the_whole_flow_in_a_real_browser() {
    let out = repo_root().join("target/browser-suite");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();

    let mut demo = Demo::start();
    // The build is done by then (scripts/test builds the demo first); the rest is start-up.
    let ready_after = demo.wait_ready(Duration::from_secs(600));
    eprintln!("demo ready after {ready_after:?}");

    let output = Command::new("node")
        .arg(repo_root().join("tests/browser/dialer.mjs"))
        .env("DIALER_URL", "http://127.0.0.1:5173/")
        .env("SIM_CONTROL", "http://127.0.0.1:18099")
        .env("DATABASE_URL", "http://127.0.0.1:9000")
        .env("OUT", &out)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no report:\n{stdout}\n{stderr}\n{}", demo.log()));
    eprintln!("browser report: {report:#}");
    // The demo's own logs go with the screenshots, for a failure to be read after the run.
    for log in [
        "xsigate",
        "simulator",
        "database",
        "auth",
        "dialer",
        "entra",
        "onelogin",
        "saml-idp",
    ] {
        let from = repo_root().join(format!("data/demo/{log}.log"));
        let _ = std::fs::copy(from, out.join(format!("{log}.log")));
    }
    assert!(
        output.status.success() && report.get("error").is_none(),
        "the browser run failed ({}); screenshots in {}\n{stderr}\n{}\n{}",
        report["error"],
        out.display(),
        demo.log(),
        // CI keeps only what a failure prints: the peers' last words, xsigate's being above.
        log_tails(&out, &["simulator", "database", "auth", "dialer"])
    );

    const ALICE: &str = "alice@demo.xsigate.test";
    for method in ["email", "phone", "broadsoft", "o365", "onelogin", "saml"] {
        assert_eq!(report["logins"][method], ALICE, "login by {method}");
    }
    assert_eq!(report["screening"]["srs"], "logged_in");
    // The first Firebase sign-in was refused on the network; the live view tried again.
    assert_eq!(
        report["firebase_sign_ins"],
        serde_json::json!({"refused": 1, "passed": 1}),
        "{report}"
    );

    // What the page set came back live, and is what the simulator holds.
    let dnd = &report["dnd"];
    assert_ne!(dnd["page"], dnd["before"]);
    assert_eq!(dnd["simulator"], dnd["page"] == "on");
    assert_eq!(report["cfa"]["page"], "always to 2025550199");
    assert_eq!(report["cfa"]["simulator"]["active"], true);
    assert!(
        report["call"].as_str().unwrap().contains("Bob Berg"),
        "{report}"
    );
    // Bob's lamp (he is on alice's Busy Lamp Field list) rang with the call.
    assert!(
        report["blf"]
            .as_str()
            .unwrap()
            .contains("Bob Berg: ringing"),
        "{report}"
    );

    // The page read the pin from a cross-origin answer, and its heartbeats reached that XSP.
    let channel = &report["channel"];
    let held = &channel["simulator"];
    assert!(
        held.is_object(),
        "the simulator holds the page's channel: {report}"
    );
    assert_eq!(
        channel["pin"],
        format!("xsp{}", held["xsp"].as_u64().unwrap() + 1),
        "the pin names the XSP holding the stream"
    );
    assert_eq!(channel["heartbeats"], "2 sent");
    assert!(held["heartbeats"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(held["owner"], ALICE);

    // Logout ends the session and the live view.
    let after = &report["after_logout"];
    assert_eq!(after["session_status"], 401);
    assert_eq!(after["live_shown"], false);
    assert_eq!(after["live_dnd"], "–");

    assert!(
        report["queue"].as_str().unwrap().contains("Carol Caller"),
        "{report}"
    );
    // The database rules: an agent reads its call centre's queue; another user reads neither
    // that centre's node nor alice's.
    let rules = &report["rules"];
    assert!(
        rules["agent_reads_its_centre_queue"].is_object(),
        "{report}"
    );
    assert_eq!(rules["other_reads_the_centre"], "permission_denied");
    assert_eq!(rules["other_reads_alice"], "permission_denied");

    let shots = report["screenshots"].as_array().unwrap();
    assert_eq!(shots.len(), 8, "{report}");
    for shot in shots {
        let size = std::fs::metadata(shot.as_str().unwrap()).unwrap().len();
        assert!(size > 10_000, "{shot} is {size} bytes");
    }
    let unexpected: Vec<&Value> = report["console_errors"]
        .as_array()
        .unwrap()
        .iter()
        // The one refusal the run provokes: the session check after logout.
        .filter(|e| !e.as_str().unwrap().contains("401"))
        .collect();
    assert!(unexpected.is_empty(), "console errors: {unexpected:?}");

    // The demo's operator console, with the dialer's traffic behind it: bob logs in while an
    // operator watches, and the operator ends bob's sessions from the page.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let console = xsigate_tests::drive_console(
        "http://127.0.0.1:9465/",
        ("ops", "ops-demo-passphrase"),
        "bob@demo.xsigate.test",
        &out.join("console"),
        || {
            let status = runtime.block_on(async {
                xsigate_tests::client()
                    .post("http://127.0.0.1:8080/api/access/services/idp/broadsoft")
                    .json(&serde_json::json!({
                        "user": "bob@demo.xsigate.test",
                        "password": "bob-demo-password",
                    }))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            });
            assert_eq!(status.ok(), Some(200), "bob's login");
        },
    );
    xsigate_tests::assert_console_run(&console);
}
