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
//!
//! [directories]                                   # optional: Graph and OneLogin API stand-ins
//! address = "127.0.0.1:18096"                     # their people: the users' e-mail addresses
//! graph_issuer = "http://127.0.0.1:18110/<tenant>/v2.0"   # the tenant whose tokens Graph takes
//! graph_jwks_file = "data/demo-idp-jwks.json"     # and its public keys
//! onelogin_client_id = "demo-api-reader"          # the one OneLogin API credential
//! onelogin_client_secret = "demo-onelogin-api-secret"
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
    /// Also serve the company directories single sign-on asks (Graph, OneLogin's API).
    pub directories: Option<DirectoriesSeed>,
}

/// The directories stand-in (`crate::directories`) beside the XSPs: every user with an e-mail
/// address is a person of the company directory, with that address as mail and user principal
/// name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoriesSeed {
    pub address: SocketAddr,
    /// The Entra ID tenant whose app-only tokens Graph accepts: its issuer, and a file with
    /// its JWK Set. Without them there is no Graph.
    pub graph_issuer: Option<String>,
    pub graph_jwks_file: Option<PathBuf>,
    /// The OneLogin API credential; without it there is no OneLogin API.
    pub onelogin_client_id: Option<String>,
    pub onelogin_client_secret: Option<String>,
}

impl DirectoriesSeed {
    /// The stand-in's settings for the seed's users.
    pub fn settings(
        &self,
        users: &[User],
    ) -> Result<crate::directories::DirectorySettings, String> {
        use crate::directories::{
            DirectorySettings, DirectoryUser, GraphTenant, OneLoginCredential,
        };
        let graph = match (&self.graph_issuer, &self.graph_jwks_file) {
            (Some(issuer), Some(file)) => Some(GraphTenant {
                issuer: issuer.clone(),
                jwks: std::fs::read_to_string(file)
                    .map_err(|e| format!("directories.graph_jwks_file {}: {e}", file.display()))?,
            }),
            (None, None) => None,
            _ => {
                return Err(
                    "directories: give graph_issuer and graph_jwks_file together".to_owned(),
                );
            }
        };
        let onelogin = match (&self.onelogin_client_id, &self.onelogin_client_secret) {
            (Some(client_id), Some(client_secret)) => Some(OneLoginCredential {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(
                    "directories: give onelogin_client_id and onelogin_client_secret together"
                        .to_owned(),
                );
            }
        };
        Ok(DirectorySettings {
            users: users
                .iter()
                .filter_map(|user| user.email.clone())
                .map(|mail| DirectoryUser {
                    user_principal_name: mail.clone(),
                    mail,
                })
                .collect(),
            graph,
            onelogin,
        })
    }
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
            directories: None,
        }
    }
}
