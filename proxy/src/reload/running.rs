//! What a running instance notes in its data directory, for `xsigate reload` to find it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a running instance writes to its data directory at start, for `xsigate reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub pid: u32,
    /// The configuration file it runs, absolute.
    pub file: PathBuf,
    pub checksum: String,
}

const RUNNING_FILE: &str = "running.json";
/// The text of the running configuration, kept beside the server secret (mode 0600): what
/// `reload` compares a new file with.
const RUNNING_TEXT: &str = "running.toml";

impl Running {
    /// Notes the running instance in `data_dir`.
    pub fn write(&self, data_dir: &Path, text: &str) -> std::io::Result<()> {
        write_private(&data_dir.join(RUNNING_TEXT), text.as_bytes())?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_private(&data_dir.join(RUNNING_FILE), &json)
    }

    pub fn read(data_dir: &Path) -> Option<(Self, String)> {
        let json = std::fs::read(data_dir.join(RUNNING_FILE)).ok()?;
        let running = serde_json::from_slice(&json).ok()?;
        let text = std::fs::read_to_string(data_dir.join(RUNNING_TEXT)).ok()?;
        Some((running, text))
    }
}

/// Writes `bytes` to `path` readable by the owner only, replacing it whole (a reader never
/// sees half a file).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(partial, path)
}
