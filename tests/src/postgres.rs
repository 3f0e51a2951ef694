//! A real PostgreSQL server for the suites: Debian's `postgresql`, made by `initdb` and run by
//! `pg_ctl` in a temporary directory, on a loopback port, as an unprivileged user (PostgreSQL
//! refuses to run as root, and CI runs as root). Each test gets its own server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::free_port;

/// The role xsigate logs in as; `initdb` makes it the superuser.
pub const USER: &str = "xsigate";
/// Its password (scram-sha-256 over loopback, as a production database would ask).
pub const PASSWORD: &str = "pg-pass-7d1e94";
pub const DATABASE: &str = "xsigate";

/// A running PostgreSQL server with the `xsigate` database.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// The user and group the server runs as, when this process is root.
    owner: Option<(u32, u32)>,
    /// Whether the server speaks only TLS (see [`Postgres::start_tls`]).
    tls: bool,
}

/// The certificate a TLS server presents: self-signed, so it is its own CA.
#[derive(Debug)]
pub struct ServerCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl ServerCertificate {
    /// A certificate for these names (host names or IP addresses).
    pub fn for_names(names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        Self {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
        }
    }
}

impl Postgres {
    /// Makes a cluster, starts it and creates the database.
    pub fn start() -> Self {
        Self::make(None)
    }

    /// Like [`Postgres::start`], but the server accepts TLS connections only, presenting
    /// `certificate`: a client that connects without TLS is refused.
    pub fn start_tls(certificate: &ServerCertificate) -> Self {
        Self::make(Some(certificate))
    }

    fn make(certificate: Option<&ServerCertificate>) -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let owner = unprivileged_owner();
        let password_file = dir.path().join("pwfile");
        std::fs::write(&password_file, PASSWORD).unwrap();
        if let Some((uid, gid)) = owner {
            for path in [dir.path(), &password_file] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        }
        let postgres = Self {
            dir,
            bin,
            port: free_port(),
            owner,
            tls: certificate.is_some(),
        };
        let data = postgres.data_dir();
        postgres.run(
            postgres
                .as_server_user("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", USER, "--auth=scram-sha-256", "-E", "UTF8"])
                .args(["--locale=C", "--no-sync"])
                .arg(format!("--pwfile={}", password_file.display())),
        );
        if let Some(certificate) = certificate {
            postgres.only_tls(certificate);
        }
        postgres.start_server();
        let mut createdb = Command::new(postgres.bin.join("createdb"));
        createdb
            .args(["-h", "127.0.0.1", "-p", &postgres.port.to_string()])
            .args(["-U", USER, DATABASE])
            .env("PGPASSWORD", PASSWORD);
        if postgres.tls {
            createdb.env("PGSSLMODE", "require");
        }
        postgres.run(&mut createdb);
        postgres
    }

    /// Gives the server its certificate and key, and lets TCP clients in over TLS only.
    fn only_tls(&self, certificate: &ServerCertificate) {
        let data = self.data_dir();
        let key = data.join("server.key");
        std::fs::write(data.join("server.crt"), &certificate.cert_pem).unwrap();
        std::fs::write(&key, &certificate.key_pem).unwrap();
        // PostgreSQL refuses a key that others can read.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some((uid, gid)) = self.owner {
            for file in ["server.crt", "server.key"] {
                std::os::unix::fs::chown(data.join(file), Some(uid), Some(gid)).unwrap();
            }
        }
        let hba = data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).unwrap();
        let rules: String = rules
            .lines()
            .map(|line| match line.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(&hba, rules).unwrap();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command of the server's own, run as the user that owns its files.
    fn as_server_user(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt as _;
            command.uid(uid).gid(gid);
        }
        command.current_dir(self.dir.path());
        command
    }

    fn run(&self, command: &mut Command) {
        let output = command.stdin(Stdio::null()).output().unwrap();
        assert!(
            output.status.success(),
            "{command:?} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    /// Starts the server (again) on its port; returns once it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c ssl={}",
            self.port,
            self.dir.path().display(),
            if self.tls { "on" } else { "off" }
        );
        self.run(
            self.as_server_user("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir.path().join("postgres.log"))
                .args(["-w", "-t", "30", "-o", &options, "start"]),
        );
    }

    /// Stops the server as an operator's restart would (fast: clients are disconnected).
    pub fn stop_server(&self) {
        self.run(
            self.as_server_user("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "30", "-m", "fast", "stop"]),
        );
    }

    /// The URL xsigate is configured with (no password: that goes by reference).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// A `[server.store]` table naming this database over plain TCP, its password in a file
    /// beside it.
    pub fn store_table(&self) -> String {
        format!("{}tls = \"off\"\n", self.table_without_tls_settings())
    }

    /// A `[server.store]` table naming this database with `tls` left to its default, trusting
    /// the PEM certificate `ca_pem` (written beside the database) when given.
    pub fn tls_store_table(&self, ca_pem: Option<&str>) -> String {
        let mut table = self.table_without_tls_settings();
        if let Some(ca_pem) = ca_pem {
            let ca_file = self.dir.path().join("trusted-ca.pem");
            std::fs::write(&ca_file, ca_pem).unwrap();
            table.push_str(&format!("ca_file = \"{}\"\n", ca_file.display()));
        }
        table
    }

    fn table_without_tls_settings(&self) -> String {
        let password_file = self.dir.path().join("xsigate-password");
        std::fs::write(&password_file, PASSWORD).unwrap();
        format!(
            "[server.store]\nurl = \"{}\"\npassword_file = \"{}\"\nmax_connections = 4\n",
            self.url(),
            password_file.display()
        )
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .as_server_user("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "30", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directory of Debian's PostgreSQL server programs (`/usr/lib/postgresql/<major>/bin`,
/// the newest if several), which Debian keeps off `PATH`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).expect(
        "PostgreSQL's server (Debian package `postgresql`) must be installed; \
         `scripts/install-deps test` installs it",
    )
}

/// When this process is root: the user `nobody` and its group, from `/etc/passwd`.
fn unprivileged_owner() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string(Path::new("/etc/passwd")).unwrap();
    let entry = passwd
        .lines()
        .find(|line| line.starts_with("nobody:"))
        .expect("a `nobody` user to run PostgreSQL as");
    let fields: Vec<&str> = entry.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}
