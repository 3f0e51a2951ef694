//! The randomized isolation exercise every kind of login session goes through: each user
//! works at once, interleaving reads and writes of its own resources with attempts on others';
//! its own succeed, the others' are refused before an XSP. The caller then checks what the XSPs
//! saw, which depends on how the sessions authenticate upstream.

use std::sync::Arc;

use serde_json::Value;

use crate::{Gateway, client};

pub const ACTIONS: &str = "/com.broadsoft.xsi-actions/v2.0";

/// A logged-in browser: whose session, its cookie (`name=value`) and CSRF token.
#[derive(Debug, Clone)]
pub struct SessionOf {
    pub user_id: String,
    pub cookie: String,
    pub csrf: String,
}

impl SessionOf {
    pub fn get(&self, gateway: &Gateway, path: &str) -> reqwest::RequestBuilder {
        client()
            .get(gateway.url(path))
            .header("cookie", &self.cookie)
    }

    pub fn put(&self, gateway: &Gateway, path: &str, body: String) -> reqwest::RequestBuilder {
        client()
            .put(gateway.url(path))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .body(body)
    }
}

pub fn dnd_document(active: bool) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DoNotDisturb xmlns=\"http://schema.broadsoft.com/xsi\"><active>{active}</active></DoNotDisturb>"
    )
}

/// The user a path names after `/user/`, lower-cased.
pub fn path_user(path: &str) -> Option<String> {
    let mut segments = path.split('/');
    segments.by_ref().find(|s| s.eq_ignore_ascii_case("user"))?;
    segments
        .next()
        .map(|s| s.replace("%40", "@").to_ascii_lowercase())
}

/// Whether a path is one the exercise sends: a user's profile or Do Not Disturb.
pub fn exercised(path: &str) -> bool {
    path.starts_with(ACTIONS)
        && (path.ends_with("/profile") || path.ends_with("/services/DoNotDisturb"))
}

/// A small deterministic generator: the seed is printed, so a failing run can be repeated.
#[derive(Debug)]
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from((self.0 >> 33) % n as u64).unwrap()
    }
}

/// What the exercise did.
#[derive(Debug)]
pub struct Exercise {
    pub seed: u64,
    /// Requests each session sent for its own resources (all answered 200).
    pub own_accesses: usize,
    /// Each user's Do Not Disturb as it last set it, if it did.
    pub last_set: Vec<(String, Option<bool>)>,
}

impl Exercise {
    /// Checks nobody changed anybody else's Do Not Disturb.
    pub fn check_final_states(&self, sim: &xsi_sim::Simulator) {
        let seed = self.seed;
        for (user, last_set) in &self.last_set {
            if let Some(active) = last_set {
                let state = sim
                    .platform()
                    .directory()
                    .user(user)
                    .unwrap()
                    .do_not_disturb
                    .active;
                assert_eq!(state, *active, "{user} (seed {seed})");
            }
        }
    }
}

/// Runs `operations` random requests per session, all sessions at once.
pub async fn every_session_on_its_own(
    gateway: &Arc<Gateway>,
    sessions: Vec<SessionOf>,
    operations: usize,
) -> Exercise {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let sessions = Arc::new(sessions);
    let users = sessions.len();
    let mut tasks = tokio::task::JoinSet::new();
    for me in 0..users {
        let (gateway, sessions) = (Arc::clone(gateway), Arc::clone(&sessions));
        tasks.spawn(async move {
            let mut random = Lcg(seed ^ (me as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let session = &sessions[me];
            let (mut own, mut last_set) = (0usize, None);
            for _ in 0..operations {
                let target = if random.below(2) == 0 {
                    me
                } else {
                    random.below(users)
                };
                let target_user = &sessions[target].user_id;
                let path = |rest: &str| format!("{ACTIONS}/user/{target_user}/{rest}");
                let active = random.below(2) == 0;
                let (request, writes) = match random.below(3) {
                    0 => (session.get(&gateway, &path("profile")), false),
                    1 => (session.get(&gateway, &path("services/DoNotDisturb")), false),
                    _ => (
                        session.put(
                            &gateway,
                            &path("services/DoNotDisturb"),
                            dnd_document(active),
                        ),
                        true,
                    ),
                };
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                if target == me {
                    assert_eq!(
                        status,
                        200,
                        "{} on its own {} (seed {seed})",
                        session.user_id,
                        path("")
                    );
                    own += 1;
                    if writes {
                        last_set = Some(active);
                    }
                } else {
                    assert_eq!(
                        status,
                        403,
                        "{} on {} (seed {seed})",
                        session.user_id,
                        path("")
                    );
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(body["error"]["code"], "forbidden");
                }
            }
            (me, own, last_set)
        });
    }
    let mut own_accesses = 0;
    let mut last_set = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (me, own, set) = result.unwrap();
        own_accesses += own;
        last_set.push((sessions[me].user_id.clone(), set));
    }
    Exercise {
        seed,
        own_accesses,
        last_set,
    }
}
