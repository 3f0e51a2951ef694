//! `xsigate reload -c FILE`: finds the instance running on FILE, says what the file changes,
//! and has the instance take it over (SIGHUP), waiting until the new process runs it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::changes::Changes;
use super::running::Running;
use crate::config::Config;

/// How long the hand-over may take: the new process starts (plugins, store, providers) and
/// takes the listening sockets.
const TAKEOVER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no xsigate instance runs on data_dir {0} (start one with `xsigate run`)")]
    NotRunning(PathBuf),
    #[error(
        "the instance in this data_dir runs {running}; reload that file (or start another \
         instance for this one)"
    )]
    OtherFile { running: PathBuf },
    #[error("the embedded configuration cannot be reloaded: give the file with -c")]
    Embedded,
    #[error("cannot signal the running instance (pid {pid}): {reason}")]
    Signal { pid: u32, reason: String },
    #[error(
        "the running instance (pid {pid}) did not hand over within {} s; it keeps serving \
         what it ran, and its log says why",
        TAKEOVER.as_secs()
    )]
    NotTakenOver { pid: u32 },
}

/// A reload about to be asked for.
#[derive(Debug)]
pub struct Plan {
    pub running: Running,
    pub changes: Changes,
    checksum: String,
    data_dir: PathBuf,
}

/// What reloading `config` would change in the instance running on its file.
pub fn request(config: &Config) -> Result<Plan, ReloadError> {
    let file = config.file.as_deref().ok_or(ReloadError::Embedded)?;
    let data_dir = absolute(&config.server.data_dir, file);
    let Some((running, text)) = Running::read(&data_dir) else {
        return Err(ReloadError::NotRunning(data_dir));
    };
    if !alive(running.pid) {
        return Err(ReloadError::NotRunning(data_dir));
    }
    if canonical(&running.file) != canonical(file) {
        return Err(ReloadError::OtherFile {
            running: running.file,
        });
    }
    Ok(Plan {
        changes: Changes::between(&text, &config.text.0),
        checksum: config.checksum.clone(),
        running,
        data_dir,
    })
}

impl Plan {
    /// Whether the running instance runs this very text already.
    pub fn is_current(&self) -> bool {
        self.running.checksum == self.checksum
    }

    /// Asks for the reload and waits for the new process; returns its pid.
    pub fn perform(&self) -> Result<u32, ReloadError> {
        let pid = self.running.pid;
        let signal_error = |reason: String| ReloadError::Signal { pid, reason };
        let target = Pid::from_raw(i32::try_from(pid).map_err(|e| signal_error(e.to_string()))?);
        kill(target, Signal::SIGHUP).map_err(|e| signal_error(e.to_string()))?;
        let deadline = Instant::now() + TAKEOVER;
        while Instant::now() < deadline {
            if let Some((now, _)) = Running::read(&self.data_dir) {
                if now.pid != pid && now.checksum == self.checksum && alive(now.pid) {
                    return Ok(now.pid);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(ReloadError::NotTakenOver { pid })
    }
}

fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

/// `data_dir` as the instance resolved it: relative to the configuration file's directory.
fn absolute(data_dir: &Path, file: &Path) -> PathBuf {
    let base = file.parent().unwrap_or(Path::new("."));
    canonical(&base.join(data_dir))
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
