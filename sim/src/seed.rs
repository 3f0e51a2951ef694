//! Seed files: who exists on the simulated platform and where its XSPs listen.
//!
//! ```toml
//! xsp = ["127.0.0.1:18081", "127.0.0.1:18082"]   # one simulated XSP per address
//! control = "127.0.0.1:18099"                     # the test/control API
//!
//! [[users]]
//! user_id = "alice@demo.xsigate.test"
//! password = "alice-password"
//! service_provider = "demo"
//! group = "sales"
//! first_name = "Alice"
//!
//! [[admins]]
//! user_id = "admin@demo.xsigate.test"
//! password = "admin-password"
//! scope = { level = "service_provider", service_provider = "demo" }  # or system, or group
//!
//! [tls]                                           # optional: HTTPS XSPs
//! self_signed_cert_out = "xsp-cert.pem"           # or cert_file = "…", key_file = "…"
//!
//! [srs]                                           # optional: a Genesys SRS stand-in
//! address = "127.0.0.1:18090"                     # its agents are the users, by user id
//! origin = "http://127.0.0.1:5173"                # the agent desktop's Origin
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::directory::{Admin, User};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub xsp: Vec<SocketAddr>,
    pub control: Option<SocketAddr>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub admins: Vec<Admin>,
    #[serde(default)]
    pub call_centers: Vec<crate::directory::CallCenter>,
    #[serde(default)]
    pub events: crate::events::EventSettings,
    /// Serve the XSPs over HTTPS (the control API stays plain HTTP).
    pub tls: Option<TlsSeed>,
    /// Also serve a screen-recording (Genesys SRS) stand-in.
    pub srs: Option<SrsSeed>,
}

/// A Genesys SRS stand-in beside the XSPs, as a provider's agents would have it: every user of
/// the seed is an agent, logging in with their user id and password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrsSeed {
    pub address: SocketAddr,
    /// The `Origin` SRS expects from the agent desktop.
    pub origin: String,
    /// A session not pinged for this long is disconnected (60 s in SRS).
    #[serde(default = "SrsSeed::default_keep_alive_seconds")]
    pub keep_alive_seconds: u64,
}

impl SrsSeed {
    fn default_keep_alive_seconds() -> u64 {
        60
    }

    /// The stand-in's settings for the seed's users.
    pub fn settings(&self, users: &[User]) -> crate::srs::SrsSettings {
        crate::srs::SrsSettings {
            origin: self.origin.clone(),
            agents: users
                .iter()
                .map(|user| (user.user_id.clone(), user.password.clone()))
                .collect(),
            keep_alive: std::time::Duration::from_secs(self.keep_alive_seconds),
            version: "8.5.500.07".to_owned(),
        }
    }
}

/// Where the XSPs' certificate comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum TlsSeed {
    /// PEM files.
    Files {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    /// A certificate for `localhost` and `127.0.0.1` made at start; its PEM is written to this
    /// path so that clients can trust it.
    SelfSigned { self_signed_cert_out: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
}

impl Seed {
    pub fn from_file(path: &Path) -> Result<Self, SeedError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
            path: display.clone(),
            source,
        })?;
        // JSON for seeds that tools write, TOML for seeds that people write.
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            serde_json::from_str(&text).map_err(|source| SeedError::Json {
                path: display,
                source,
            })
        } else {
            toml::from_str(&text).map_err(|source| SeedError::Parse {
                path: display,
                source,
            })
        }
    }

    /// `users` users spread over `groups` groups of one service provider, for load tests.
    pub fn generated(users: usize, groups: usize, domain: &str) -> Self {
        let groups = groups.max(1);
        let users = (0..users)
            .map(|i| User {
                user_id: format!("user{i:05}@{domain}"),
                password: format!("password{i:05}"),
                service_provider: "generated".to_owned(),
                is_enterprise: true,
                group: format!("group{:03}", i % groups),
                first_name: Some(format!("User{i:05}")),
                last_name: Some("Generated".to_owned()),
                number: Some(format!("20255{i:05}")),
                extension: Some(format!("{i:05}")),
                email: Some(format!("user{i:05}@{domain}")),
                mobile: None,
                department: None,
                do_not_disturb: Default::default(),
                call_forwarding_always: Default::default(),
                remote_office: Default::default(),
                voice_mail: Default::default(),
                comm_pilot_express: None,
                agent_state: Default::default(),
                agent_state_since_ms: 0,
                agent_monitoring: Default::default(),
                busy_lamp_field: Vec::new(),
            })
            .collect();
        Self {
            xsp: Vec::new(),
            control: None,
            users,
            admins: Vec::new(),
            call_centers: Vec::new(),
            events: crate::events::EventSettings::default(),
            tls: None,
            srs: None,
        }
    }
}
