//! The running instance's side of a reload: on SIGHUP it checks its configuration file in a
//! separate `xsigate check` (plugins' own checks included, without touching this process),
//! starts `xsigate run --upgrade` on it, and once the new process waits for the listening
//! sockets, sends itself SIGQUIT, which is Pingora's graceful upgrade: the sockets go over,
//! this process drains. Anything that fails before that leaves this process serving.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};

use super::changes::Changes;

/// How long the new process may take to reach the upgrade socket.
const START: Duration = Duration::from_secs(60);

/// Listens for SIGHUP for the life of the process.
#[derive(Debug)]
pub struct ReloadService {
    /// The configuration file, absolute; `None` when running on the embedded default.
    pub file: Option<PathBuf>,
    /// The running configuration's text.
    pub text: String,
    /// Pingora's upgrade socket, which the new process binds when it is ready for the sockets.
    pub upgrade_socket: PathBuf,
    /// Options to start the new process with besides `run -c FILE --upgrade`.
    pub args: Vec<OsString>,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload by upgrade instead");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    if let Err(reason) = self.reload().await {
                        tracing::error!(error = %reason, "reload refused: the running configuration stays");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl ReloadService {
    async fn reload(&self) -> Result<(), String> {
        let file = self
            .file
            .as_ref()
            .ok_or("the embedded configuration has no file to read again")?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the binary: {e}"))?;
        let checked = tokio::process::Command::new(&exe)
            .arg("check")
            .arg("-c")
            .arg(file)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run `xsigate check`: {e}"))?;
        if !checked.status.success() {
            let stderr = String::from_utf8_lossy(&checked.stderr);
            return Err(stderr
                .lines()
                .next()
                .unwrap_or("the check failed")
                .to_owned());
        }
        let text = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let changes = Changes::between(&self.text, &text);
        tracing::info!(
            file = %file.display(),
            changes = %changes.to_string().trim_end().replace('\n', "; "),
            "reloading: starting a new process on the configuration"
        );
        let before = socket_identity(&self.upgrade_socket);
        let mut child = tokio::process::Command::new(&exe)
            .arg("run")
            .arg("-c")
            .arg(file)
            .arg("--upgrade")
            .args(&self.args)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the new process: {e}"))?;
        let deadline = Instant::now() + START;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the new process exited during its start ({status})"
                ));
            }
            let now = socket_identity(&self.upgrade_socket);
            if now.is_some() && now != before {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(format!(
                    "the new process did not get ready within {} s",
                    START.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(
            pid = child.id().unwrap_or_default(),
            "handing the listeners over to the new process"
        );
        kill(Pid::this(), Signal::SIGQUIT).map_err(|e| format!("cannot start the hand-over: {e}"))
    }
}

/// Which socket file is at `path` (device, inode, change time), if any.
fn socket_identity(path: &std::path::Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}
