//! Several instances on one PostgreSQL database (Debian's `postgresql`, started per test by the
//! harness): the shared store keeps the same promises as the embedded one, instances racing on
//! one row each count, and what one instance does to a session or a login lock holds on all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use xsigate::access::limit::LOCKS_FOLLOWED_EVERY;
use xsigate::access::sessions::CACHE_TTL;

use xsigate::state::store::{
    ClaimableLease, HeldLease, LeaseName, PostgresSettings, PostgresStore, PostgresTls,
    SessionOwner, SessionRow, SqliteStore, Store,
};
use xsigate_tests::isolation::ACTIONS;
use xsigate_tests::postgres::{self, Postgres, ServerCertificate};
use xsigate_tests::{
    Gateway, Login, basic, binary, change_user, client, free_port, log_in, plugin_library,
    provider_for_simulator, provider_urls, run_command, sim_get,
};

fn settings(postgres: &Postgres) -> PostgresSettings {
    PostgresSettings {
        url: postgres.url(),
        password: Some(postgres::PASSWORD.to_owned()),
        tls: PostgresTls::Off,
        max_connections: 4,
    }
}

fn session(token: u8, user_id: &str, provider: &str, now: i64) -> SessionRow {
    SessionRow {
        token_hash: vec![token; 32],
        csrf_hash: vec![token ^ 0xff; 32],
        user_id: user_id.to_owned(),
        provider: provider.to_owned(),
        level: "user".to_owned(),
        service_provider: None,
        group_id: Some("sales".to_owned()),
        xsp: Some("xsp1".to_owned()),
        sealed: vec![7; 48],
        created_at_ms: now,
        last_seen_ms: now,
        expires_at_ms: now + 3_600_000,
    }
}

/// What every store must do, whichever database is behind it.
async fn keeps_the_store_contract(store: &dyn Store) {
    // uniqueIds: random, stable, one per user, found back.
    let alice = store.unique_id("alice@acme.example").await.unwrap();
    assert_eq!(alice.len(), 32);
    assert_eq!(store.unique_id("alice@acme.example").await.unwrap(), alice);
    let users = [
        "carol@acme.example",
        "alice@acme.example",
        "carol@acme.example",
    ]
    .map(str::to_owned);
    let ids = store.unique_ids(&users).await.unwrap();
    assert_eq!((ids[1].as_str(), &ids[0]), (alice.as_str(), &ids[2]));
    assert_ne!(ids[0], alice);
    assert_eq!(
        store.user_id(&ids[0]).await.unwrap().as_deref(),
        Some("carol@acme.example")
    );
    assert_eq!(store.user_id("nobody").await.unwrap(), None);

    // Values: namespaced, listed by a literal prefix in byte order, expiring.
    for key in ["a%b/z", "a%b/Z", "axb/1", "a%b/m"] {
        store.kv_put("ns", key, key.as_bytes(), None).await.unwrap();
    }
    store.kv_put("other", "a%b/q", b"q", None).await.unwrap();
    assert_eq!(
        store.kv_keys("ns", "a%b/").await.unwrap(),
        ["a%b/Z", "a%b/m", "a%b/z"]
    );
    store.kv_put("ns", "a%b/m", b"new", None).await.unwrap();
    assert_eq!(
        store.kv_get("ns", "a%b/m").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(store.kv_get("ns", "a%b/q").await.unwrap(), None);
    store
        .kv_put("ns", "brief", b"x", Some(Duration::from_millis(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.kv_get("ns", "brief").await.unwrap(), None);
    assert!(!store.kv_delete("ns", "brief").await.unwrap());
    assert_eq!(store.kv_sweep().await.unwrap(), 1);
    assert!(store.kv_delete("ns", "a%b/z").await.unwrap());

    // Login failures: counted in a row, forgotten when old, locks only grow.
    let forget = 1_000;
    assert_eq!(
        store.login_failed("user:a", 10_000, forget).await.unwrap(),
        1
    );
    assert_eq!(
        store.login_failed("user:a", 10_500, forget).await.unwrap(),
        2
    );
    assert_eq!(
        store.login_failed("user:a", 20_000, forget).await.unwrap(),
        1
    );
    let far = store::now() + 60_000;
    store.login_lock("user:a", far).await.unwrap();
    store.login_lock("user:a", far - 30_000).await.unwrap();
    assert_eq!(store.login_locked_until("user:a").await.unwrap(), Some(far));
    store.login_failed("user:b", 10_000, forget).await.unwrap();
    store.login_failed("user:c", 10_000, forget).await.unwrap();
    store.login_lock("user:c", 15_000).await.unwrap();
    assert_eq!(
        store.login_locks(store::now()).await.unwrap(),
        [("user:a".to_owned(), far)],
        "only live locks"
    );
    store.login_succeeded("user:a").await.unwrap();
    assert_eq!(store.login_locked_until("user:a").await.unwrap(), None);
    assert!(store.login_locks(store::now()).await.unwrap().is_empty());

    // Sessions: found while live, touched forward only, ended once, by user without case.
    let now = store::now();
    let idle = 60_000;
    store
        .session_insert(&session(1, "Dave@Acme.example", "acme", now))
        .await
        .unwrap();
    store
        .session_insert(&session(2, "dave@acme.example", "acme", now))
        .await
        .unwrap();
    store
        .session_insert(&session(3, "erin@acme.example", "beta", now - 2 * idle))
        .await
        .unwrap();
    let found = store
        .session_get(&[1; 32], now, idle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, session(1, "Dave@Acme.example", "acme", now));
    assert_eq!(store.session_get(&[3; 32], now, idle).await.unwrap(), None);
    store.session_touch(&[1; 32], now + 5).await.unwrap();
    store.session_touch(&[1; 32], now - 5).await.unwrap();
    store
        .session_update(&[1; 32], Some("xsp2"), &[9; 40])
        .await
        .unwrap();
    let found = store
        .session_get(&[1; 32], now, idle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.last_seen_ms, found.xsp.as_deref(), found.sealed),
        (now + 5, Some("xsp2"), vec![9; 40])
    );
    assert_eq!(store.session_count(now, idle).await.unwrap(), 2);
    assert_eq!(
        store
            .session_count_of("dave@acme.example", now, idle)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.session_count_by_provider(now, idle).await.unwrap(),
        [("acme".to_owned(), 2)]
    );
    let mut ended = store
        .session_delete_user("DAVE@acme.EXAMPLE")
        .await
        .unwrap();
    ended.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    assert_eq!(
        ended,
        [
            SessionOwner {
                user_id: "Dave@Acme.example".to_owned(),
                provider: "acme".to_owned()
            },
            SessionOwner {
                user_id: "dave@acme.example".to_owned(),
                provider: "acme".to_owned()
            }
        ]
    );
    assert_eq!(store.session_delete(&[1; 32]).await.unwrap(), None);
    assert_eq!(
        store.session_sweep(now, idle).await.unwrap(),
        [SessionOwner {
            user_id: "erin@acme.example".to_owned(),
            provider: "beta".to_owned()
        }]
    );

    // Reset tokens: taken once, never when expired.
    store
        .reset_insert(&[4; 32], "alice@acme.example", "acme", now + 60_000)
        .await
        .unwrap();
    store
        .reset_insert(&[5; 32], "alice@acme.example", "acme", now - 1)
        .await
        .unwrap();
    assert_eq!(
        store.reset_take(&[4; 32], now).await.unwrap(),
        Some(("alice@acme.example".to_owned(), "acme".to_owned()))
    );
    assert_eq!(store.reset_take(&[4; 32], now).await.unwrap(), None);
    assert_eq!(store.reset_take(&[5; 32], now).await.unwrap(), None);

    // Leases: one live holder; renewals say what was ended; handed over, the next taker learns
    // that its work was asked to end; finished, it is gone.
    let lease = LeaseName {
        namespace: "events",
        name: "set/acme/u1",
    };
    let until = now + 10_000;
    assert_eq!(
        store.lease_acquire(&lease, "i1", now, until).await.unwrap(),
        Some(false)
    );
    assert_eq!(
        store.lease_acquire(&lease, "i2", now, until).await.unwrap(),
        None
    );
    assert_eq!(
        store.lease_acquire(&lease, "i1", now, until).await.unwrap(),
        Some(false)
    );
    assert_eq!(
        store
            .lease_claimable("events", "set/", now, 10)
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        store.lease_counts().await.unwrap(),
        [("events".to_owned(), 1)]
    );
    store.lease_end(&lease).await.unwrap();
    assert_eq!(
        store.lease_renew("i1", until + 1).await.unwrap(),
        [HeldLease {
            namespace: "events".to_owned(),
            name: "set/acme/u1".to_owned(),
            ended: true
        }]
    );
    assert!(store.lease_counts().await.unwrap().is_empty());
    store.lease_release(&lease, "i1", now).await.unwrap();
    assert_eq!(
        store
            .lease_claimable("events", "set/", now, 10)
            .await
            .unwrap(),
        [ClaimableLease {
            name: "set/acme/u1".to_owned(),
            ended: true,
            last_holder: "i1".to_owned(),
            unowned_since_ms: now,
        }]
    );
    assert_eq!(
        store
            .lease_claimable("events", "other/", now, 10)
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        store.lease_acquire(&lease, "i2", now, until).await.unwrap(),
        Some(true)
    );
    assert!(store.lease_renew("i1", until).await.unwrap().is_empty());
    store.lease_finish(&lease, "i2").await.unwrap();
    assert!(store.lease_renew("i2", until).await.unwrap().is_empty());
    // A lease whose holder died is free after its time.
    assert_eq!(
        store
            .lease_acquire(&lease, "i3", now - 20, now - 10)
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        store.lease_acquire(&lease, "i4", now, until).await.unwrap(),
        Some(false)
    );

    // Instances: counted while they renew.
    assert_eq!(store.instance_heartbeat("i1", now, until).await.unwrap(), 1);
    assert_eq!(store.instance_heartbeat("i2", now, until).await.unwrap(), 2);
    assert_eq!(
        store
            .instance_heartbeat("i2", until, until + 1)
            .await
            .unwrap(),
        1
    );
}

mod store {
    pub fn now() -> i64 {
        xsigate::state::store::unix_ms()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_keeps_the_same_promises_as_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).await.unwrap();
    keeps_the_store_contract(&sqlite).await;

    let postgres = Postgres::start();
    let shared = PostgresStore::open(&settings(&postgres)).await.unwrap();
    keeps_the_store_contract(&shared).await;
}

/// Instances share one database: three stores (as three instances would open it) started at
/// once migrate it once, and racing on the same rows each count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_racing_on_one_row_each_count() {
    let postgres = Postgres::start();
    let settings = settings(&postgres);
    let opened = futures_util::future::join_all((0..3).map(|_| PostgresStore::open(&settings)));
    let stores: Vec<Arc<dyn Store>> = opened
        .await
        .into_iter()
        .map(|store| Arc::new(store.unwrap()) as Arc<dyn Store>)
        .collect();

    // 30 failures of one user, 10 through each instance at once: each is counted once.
    let now = store::now();
    let failures = (0..30).map(|i| {
        let store = Arc::clone(&stores[i % 3]);
        async move { store.login_failed("user:bob", now, 60_000).await.unwrap() }
    });
    let mut counts = futures_util::future::join_all(failures).await;
    counts.sort_unstable();
    assert_eq!(counts, (1..=30).collect::<Vec<u32>>());

    // Overlapping first sightings of users on every instance at once: one uniqueId each.
    let batches = (0..3).map(|i| {
        let store = Arc::clone(&stores[i]);
        let mut users: Vec<String> = (0..300).map(|u| format!("u{u}@acme.example")).collect();
        users.rotate_left(i * 100);
        async move { (users.clone(), store.unique_ids(&users).await.unwrap()) }
    });
    let mut seen = std::collections::HashMap::new();
    for (users, ids) in futures_util::future::join_all(batches).await {
        for (user, id) in users.into_iter().zip(ids) {
            assert_eq!(seen.entry(user).or_insert_with(|| id.clone()), &id);
        }
    }
    assert_eq!(seen.len(), 300);

    // A reset token is taken by one instance only.
    stores[0]
        .reset_insert(&[8; 32], "bob@acme.example", "acme", now + 60_000)
        .await
        .unwrap();
    let takes = stores
        .iter()
        .map(|store| async move { store.reset_take(&[8; 32], store::now()).await.unwrap() });
    let taken = futures_util::future::join_all(takes).await;
    assert_eq!(taken.iter().filter(|t| t.is_some()).count(), 1);
}

/// A database migrated by a newer xsigate is refused, naming it without its password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_xsigate_is_refused() {
    let postgres = Postgres::start();
    let settings = settings(&postgres);
    let store = PostgresStore::open(&settings).await.unwrap();
    sqlx::query("UPDATE xsigate_schema SET version = 99")
        .execute(store.pool())
        .await
        .unwrap();
    let message = PostgresStore::open(&settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains(&postgres.url()), "{message}");
    assert!(!message.contains(postgres::PASSWORD), "{message}");
}

/// A simulator with `USERS` users, `user<i>@acme.example` with password `pw-<i>`.
async fn simulator(users: usize) -> Arc<xsi_sim::Simulator> {
    let mut seed = String::new();
    for i in 0..users {
        seed.push_str(&format!(
            "[[users]]\nuser_id = \"user{i}@acme.example\"\npassword = \"pw-{i}\"\n\
             service_provider = \"acme\"\ngroup = \"sales\"\n"
        ));
    }
    xsi_sim::Simulator::start(toml::from_str(&seed).unwrap())
        .await
        .unwrap()
}

/// Instances of one deployment: the same providers, the same sealing secret, one database.
struct Cluster {
    gateways: Vec<Gateway>,
    _secret: SharedSecret,
}

impl Cluster {
    async fn start(instances: usize, sim: &xsi_sim::Simulator, postgres: &Postgres) -> Self {
        Self::start_on(instances, sim, &postgres.store_table()).await
    }

    /// Instances whose `[server.store]` table is `store_table`.
    async fn start_on(instances: usize, sim: &xsi_sim::Simulator, store_table: &str) -> Self {
        let secret = SharedSecret::new();
        let plugins = format!(
            "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n[[plugins]]\nname = \"session\"\npath = \"{}\"\n",
            plugin_library("xsigate-idp-broadsoft").display(),
            plugin_library("xsigate-xsi-session").display()
        );
        let provider = provider_for_simulator(
            "acme",
            &["acme.example"],
            sim,
            "plugins = [\"broadsoft\", \"session\"]\n",
        );
        let rest = format!("{store_table}{plugins}{provider}");
        let mut gateways = Vec::new();
        for _ in 0..instances {
            gateways.push(secret.start_instance(&rest).await);
        }
        Self {
            gateways,
            _secret: secret,
        }
    }
}

/// The server secret every instance of a test shares, as a deployment's must.
struct SharedSecret {
    dir: tempfile::TempDir,
}

impl SharedSecret {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), rand_bytes()).unwrap();
        Self { dir }
    }

    /// An instance with this secret and `rest` of its config, once ready.
    async fn start_instance(&self, rest: &str) -> Gateway {
        let server_keys = format!(
            "secret_file = \"{}\"",
            self.dir.path().join("secret").display()
        );
        let mut gateway = Gateway::start_with_server_keys(&server_keys, rest).await;
        gateway.wait_for("/readyz", 200).await;
        gateway
    }
}

/// 64 bytes for a sealing secret, different in every test.
fn rand_bytes() -> Vec<u8> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (0..64u32)
        .map(|i| (seed.rotate_left(i) as u8) ^ (i as u8).wrapping_mul(151))
        .collect()
}

fn profile(user: &str) -> String {
    format!("{ACTIONS}/user/{user}/profile")
}

async fn status_of(gateway: &Gateway, login: &Login, user: &str) -> u16 {
    client()
        .get(gateway.url(&profile(user)))
        .header("cookie", &login.cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Any instance serves any session; a logout on one ends the session on every other within
/// the session cache's lifetime, the delay the deployment guide promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_works_on_every_instance_and_a_logout_anywhere_ends_it_everywhere() {
    let postgres = Postgres::start();
    let sim = simulator(1).await;
    let cluster = Cluster::start(3, &sim, &postgres).await;
    let [a, b, c] = &cluster.gateways[..] else {
        unreachable!()
    };
    let user = "user0@acme.example";
    let login = log_in(a, user, "pw-0").await;
    for gateway in [a, b, c] {
        assert_eq!(status_of(gateway, &login, user).await, 200);
    }

    let logout = client()
        .post(c.url("/api/access/services/logout"))
        .header("cookie", &login.cookie)
        .header("x-csrf-token", &login.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    let ended_at = Instant::now();
    assert_eq!(status_of(c, &login, user).await, 401);
    // A and B read the session within the last CACHE_TTL: they may serve it until then, and
    // must not after (with a second's slack for this machine's scheduling).
    let deadline = ended_at + CACHE_TTL + Duration::from_secs(1);
    for gateway in [a, b] {
        loop {
            let status = status_of(gateway, &login, user).await;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                Instant::now() < deadline,
                "the session outlived its logout elsewhere by more than {CACHE_TTL:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The failure count is the deployment's, not an instance's: failures spread over three
/// instances lock the user id as they would on one, and the lock holds on every instance, before
/// any credential reaches an XSP.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_logins_spread_over_three_instances_lock_the_user_id() {
    let postgres = Postgres::start();
    let sim = simulator(1).await;
    let cluster = Cluster::start(3, &sim, &postgres).await;
    let login = |gateway: &Gateway, password: &str| {
        client()
            .post(gateway.url("/api/access/services/idp/broadsoft"))
            .json(&json!({ "user": "user0@acme.example", "password": password }))
            .send()
    };
    for i in 0..4 {
        let status = login(&cluster.gateways[i % 3], "guess")
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "failure {}", i + 1);
    }
    // The fifth failure, as on one instance, locks; then the right password is refused
    // everywhere, unchecked.
    let locked = login(&cluster.gateways[1], "guess").await.unwrap();
    assert_eq!(locked.status(), 429);
    let refused_before = refused_at_the_xsp(&sim);
    for gateway in &cluster.gateways {
        assert_eq!(login(gateway, "pw-0").await.unwrap().status(), 429);
    }
    assert_eq!(refused_at_the_xsp(&sim), refused_before);
    assert_eq!(
        tried_at_the_xsp(&sim),
        5,
        "only the five failures reached an XSP"
    );
}

/// A user id locked through one instance is not probed through another's transparent path:
/// each instance learns the others' locks within `LOCKS_FOLLOWED_EVERY`, so no guess sent
/// after that reaches the XSP, wherever it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_made_on_one_instance_holds_on_the_others_transparent_path() {
    let postgres = Postgres::start();
    let sim = simulator(1).await;
    let cluster = Cluster::start(3, &sim, &postgres).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = client()
            .post(cluster.gateways[0].url("/api/access/services/idp/broadsoft"))
            .json(&json!({ "user": "user0@acme.example", "password": "guess" }))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429]);
    tokio::time::sleep(LOCKS_FOLLOWED_EVERY * 2).await;

    let tried = tried_at_the_xsp(&sim);
    for gateway in &cluster.gateways[1..] {
        for password in ["guess", "pw-0"] {
            let response = client()
                .get(gateway.url(&profile("user0@acme.example")))
                .header("authorization", basic("user0@acme.example", password))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                429,
                "a guess through {}",
                gateway.url("")
            );
            assert!(response.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(tried_at_the_xsp(&sim), tried, "a guess reached the XSP");
}

/// Users' authentications that reached the simulator's XSPs.
fn tried_at_the_xsp(sim: &xsi_sim::Simulator) -> usize {
    sim.platform()
        .requests()
        .iter()
        .filter(|r| r.auth_user.is_some())
        .count()
}

/// Users' authentications the simulator's XSPs refused.
fn refused_at_the_xsp(sim: &xsi_sim::Simulator) -> usize {
    sim.platform()
        .requests()
        .iter()
        .filter(|r| r.status == 401 && r.auth_user.is_some())
        .count()
}

/// PostgreSQL unreachable at start is a startup error that says which database and why, and
/// never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_clear_startup_error() {
    let port = free_port();
    let said = startup_error(&format!(
        "[server.store]\nurl = \"postgres://xsigate@127.0.0.1:{port}/xsigate\"\n\
         password_file = \"pg-password\"\n"
    ));
    assert!(
        said.contains(&format!(
            "cannot open the store postgres://xsigate@127.0.0.1:{port}/xsigate"
        )),
        "{said}"
    );
    assert!(said.to_lowercase().contains("refused"), "{said}");
}

/// What `xsigate run` says when it cannot start on a store given by `store_table` (its
/// password file, `pg-password`, beside the config); the password never in it.
fn startup_error(store_table: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pg-password"), postgres::PASSWORD).unwrap();
    let config = format!(
        "[server]\ndata_dir = \"data\"\n[[server.listeners]]\naddress = \"127.0.0.1:{}\"\n\
         {store_table}{}",
        free_port(),
        provider_urls(
            "acme",
            &["acme.example"],
            &["http://127.0.0.1:9".to_owned()],
            ""
        )
    );
    std::fs::write(dir.path().join("providers.toml"), config).unwrap();
    let (code, stdout, stderr) = run_command(
        Command::new(binary("xsigate"))
            .arg("run")
            .arg("-c")
            .arg(dir.path().join("providers.toml")),
    );
    assert_ne!(code, 0, "started: {stdout}{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(!said.contains(postgres::PASSWORD), "{said}");
    said
}

/// `tls` defaults to `verify-full`: instances reach a database that accepts TLS only, trusting
/// its certificate through `ca_file`, and serve logins and sessions from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_reached_over_tls_with_its_certificate_checked() {
    let certificate = ServerCertificate::for_names(&["127.0.0.1"]);
    let postgres = Postgres::start_tls(&certificate);
    let sim = simulator(1).await;
    let store_table = postgres.tls_store_table(Some(&certificate.cert_pem));
    let cluster = Cluster::start_on(1, &sim, &store_table).await;
    let login = log_in(&cluster.gateways[0], "user0@acme.example", "pw-0").await;
    assert_eq!(
        status_of(&cluster.gateways[0], &login, "user0@acme.example").await,
        200
    );
    // The database takes nothing else: the instance above spoke TLS.
    let said = startup_error(&postgres.store_table());
    assert!(said.contains("no encryption"), "{said}");
}

/// A database whose certificate is not signed by a trusted root is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_certificate_from_an_unknown_issuer_is_refused() {
    let postgres = Postgres::start_tls(&ServerCertificate::for_names(&["127.0.0.1"]));
    let stranger = ServerCertificate::for_names(&["127.0.0.1"]);
    let said = startup_error(&postgres.tls_store_table(Some(&stranger.cert_pem)));
    assert!(said.contains("cannot open the store"), "{said}");
    assert!(said.contains("invalid peer certificate"), "{said}");
}

/// A trusted certificate for another name than the URL's host is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_certificate_for_another_name_is_refused() {
    let certificate = ServerCertificate::for_names(&["db.example"]);
    let postgres = Postgres::start_tls(&certificate);
    let said = startup_error(&postgres.tls_store_table(Some(&certificate.cert_pem)));
    assert!(said.contains("cannot open the store"), "{said}");
    assert!(
        said.contains("invalid peer certificate: certificate not valid for name \"127.0.0.1\""),
        "{said}"
    );
}

/// The default asks for TLS: a database that does not offer it is a startup error that says
/// so, never a silent fall back to plain TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_tls_is_refused_unless_tls_is_off() {
    let postgres = Postgres::start();
    let said = startup_error(&postgres.tls_store_table(None));
    assert!(said.contains("cannot open the store"), "{said}");
    assert!(said.contains("server does not support TLS"), "{said}");
}

const EVENTS_PASSWORD: &str = "pw-events";

/// `users` users with one password, two XSPs, channels kept with fast timings.
async fn events_simulator(users: usize) -> Arc<xsi_sim::Simulator> {
    let mut seed = String::from("xsp = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n");
    for i in 0..users {
        seed.push_str(&format!(
            "[[users]]\nuser_id = \"agent{i}@acme.example\"\npassword = \"{EVENTS_PASSWORD}\"\n\
             service_provider = \"acme\"\ngroup = \"sales\"\n"
        ));
    }
    xsi_sim::Simulator::start(toml::from_str(&seed).unwrap())
        .await
        .unwrap()
}

/// BroadWorks never had two channel sets of one user open at once: it terminated none as a
/// duplicate.
async fn assert_no_duplicate_sets(sim: &xsi_sim::Simulator) {
    let terminated = sim_get(sim, "/channels/terminated").await;
    assert!(
        terminated
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["reason"] != "DuplicateChannelSet"),
        "{terminated}"
    );
}

/// An instance with idp-broadsoft, xsi-session and xsi-events (user-level sets, Do Not Disturb only, fast
/// heartbeats) on the shared database, with leases of `LEASE_SECONDS`.
async fn events_instance(
    sim: &xsi_sim::Simulator,
    postgres: &Postgres,
    secret: &SharedSecret,
) -> Gateway {
    let rest = format!(
        "{}lease_seconds = {LEASE_SECONDS}\n\
         [[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
         [[plugins]]\nname = \"session\"\npath = \"{}\"\n\
         [[plugins]]\nname = \"events\"\npath = \"{}\"\n\
         [plugins.config.providers.acme]\npackages = [\"Do Not Disturb\"]\n\
         heartbeat_seconds = 1\nsilence_seconds = 3\n{}",
        postgres.store_table(),
        plugin_library("xsigate-idp-broadsoft").display(),
        plugin_library("xsigate-xsi-session").display(),
        plugin_library("xsigate-xsi-events").display(),
        provider_for_simulator(
            "acme",
            &["acme.example"],
            sim,
            "plugins = [\"broadsoft\", \"session\", \"events\"]\n"
        ),
    );
    secret.start_instance(&rest).await
}

const LEASE_SECONDS: u64 = 3;

/// Open channels per owner, as the simulator holds them.
async fn channels_by_owner(
    sim: &xsi_sim::Simulator,
) -> std::collections::HashMap<String, Vec<String>> {
    let channels = sim_get(sim, "/channels").await;
    let mut by_owner: std::collections::HashMap<String, Vec<String>> = Default::default();
    for channel in channels.as_array().unwrap() {
        by_owner
            .entry(channel["owner"].as_str().unwrap().to_ascii_lowercase())
            .or_default()
            .push(channel["channel_set_id"].as_str().unwrap().to_owned());
    }
    by_owner
}

/// Waits until every one of `users` users has exactly one open channel, and returns the
/// channel set of each.
async fn every_set_open_once(
    sim: &xsi_sim::Simulator,
    users: usize,
    within: Duration,
    instances: &[Gateway],
) -> std::collections::HashMap<String, String> {
    let deadline = Instant::now() + within;
    loop {
        let by_owner = channels_by_owner(sim).await;
        let once = by_owner.values().filter(|sets| sets.len() == 1).count();
        if once == users && by_owner.len() == users {
            return by_owner
                .into_iter()
                .map(|(owner, mut sets)| (owner, sets.pop().unwrap()))
                .collect();
        }
        if Instant::now() >= deadline {
            let missing: Vec<String> = (0..users)
                .map(|i| format!("agent{i}@acme.example"))
                .filter(|user| by_owner.get(user).is_none_or(|sets| sets.len() != 1))
                .collect();
            let logs: Vec<String> = instances.iter().map(Gateway::logs).collect();
            panic!(
                "{once} of {users} users have exactly one channel; {} owners have any; not \
                 once: {missing:?}\n{}",
                by_owner.len(),
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leases_held(gateway: &Gateway) -> f64 {
    gateway
        .metric("xsigate_leases_held{plugin=\"events\"}")
        .await
        .unwrap_or(0.0)
}

/// Three instances on one database, users logging in through each in turn: every user's
/// channel set is open exactly once and the sets spread within ±20%. A SIGKILL of one instance
/// moves its sets to the others within the lease's time plus 5 s, in the same channel sets
/// (resumed, not duplicated: the simulator terminates no channel as `DuplicateChannelSet`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_sets_are_kept_once_spread_out_and_taken_over_after_a_kill() {
    const USERS: usize = 300;
    let postgres = Postgres::start();
    let sim = events_simulator(USERS).await;
    let secret = SharedSecret::new();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(events_instance(&sim, &postgres, &secret).await);
    }
    for i in 0..USERS {
        let user = format!("agent{i}@acme.example");
        log_in(&instances[i % 3], &user, EVENTS_PASSWORD).await;
    }
    let sets = every_set_open_once(&sim, USERS, Duration::from_secs(60), &instances).await;
    let share = USERS as f64 / 3.0;
    let mut held = Vec::new();
    for instance in &instances {
        held.push(leases_held(instance).await);
    }
    eprintln!("leases per instance: {held:?}");
    assert_eq!(held.iter().sum::<f64>(), USERS as f64, "{held:?}");
    for count in &held {
        assert!(
            (count - share).abs() <= share * 0.2,
            "leases per instance {held:?}, share {share}"
        );
    }

    // A crash: nothing handed over. The survivors take its sets over after the lease's time.
    instances[0].kill();
    let killed_at = Instant::now();
    let mut survivors = instances.split_off(1);
    let deadline = killed_at + Duration::from_secs(LEASE_SECONDS + 5);
    loop {
        let mut held = 0.0;
        for survivor in &survivors {
            held += leases_held(survivor).await;
        }
        if held == USERS as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivors hold {held} of {USERS} sets {:?} after the kill",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("taken over in {:?}", killed_at.elapsed());
    let resumed = every_set_open_once(&sim, USERS, Duration::from_secs(10), &survivors).await;
    assert_eq!(resumed, sets, "the sets were resumed, not opened anew");
    for survivor in &survivors {
        let takeovers = survivor
            .metric("xsigate_lease_takeovers_total{plugin=\"events\"}")
            .await
            .unwrap_or(0.0);
        assert!(takeovers > 0.0, "each survivor took its part over");
    }
    assert_no_duplicate_sets(&sim).await;
    survivors.clear();
}

/// A logout through another instance than the one keeping the user's set closes the set within
/// a third of the lease's time (its holder hears it at its next renewal). A graceful upgrade of
/// an instance hands its sets over: every set keeps its channel set id, and none is without an
/// open channel for more than a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_logout_anywhere_closes_the_set_and_an_upgrade_hands_sets_over() {
    const USERS: usize = 30;
    let postgres = Postgres::start();
    let sim = events_simulator(USERS).await;
    let secret = SharedSecret::new();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(events_instance(&sim, &postgres, &secret).await);
    }
    let mut logins = Vec::new();
    for i in 0..USERS {
        let user = format!("agent{i}@acme.example");
        logins.push(log_in(&instances[i % 3], &user, EVENTS_PASSWORD).await);
    }
    let sets = every_set_open_once(&sim, USERS, Duration::from_secs(30), &instances).await;

    // agent0's set is kept by the instance it logged in through; it logs out through another.
    let logout = client()
        .post(instances[1].url("/api/access/services/logout"))
        .header("cookie", &logins[0].cookie)
        .header("x-csrf-token", &logins[0].csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECONDS) + Duration::from_secs(2);
    while channels_by_owner(&sim)
        .await
        .contains_key("agent0@acme.example")
    {
        assert!(
            Instant::now() < deadline,
            "the set outlived its user's logout elsewhere"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let subscriptions = sim_get(&sim, "/subscriptions").await;
    assert!(
        !subscriptions.to_string().contains("agent0@acme.example"),
        "{subscriptions}"
    );

    // An upgrade of the first instance, watched every 50 ms: the longest time any user's set
    // had no open channel.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let sim = Arc::clone(&sim);
        let watching = Arc::clone(&watching);
        tokio::spawn(async move {
            let mut dark_since: std::collections::HashMap<String, Instant> = Default::default();
            let mut longest = Duration::ZERO;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let open = channels_by_owner(&sim).await;
                let now = Instant::now();
                for i in 1..USERS {
                    let user = format!("agent{i}@acme.example");
                    if open.contains_key(&user) {
                        if let Some(since) = dark_since.remove(&user) {
                            longest = longest.max(now - since);
                        }
                    } else {
                        dark_since.entry(user).or_insert(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let now = Instant::now();
            for since in dark_since.values() {
                longest = longest.max(now - *since);
            }
            longest
        })
    };
    instances[0].upgrade().await;
    // The old process hands over as it exits; give the new one its claims.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let longest = watcher.await.unwrap();
    let mut after = every_set_open_once(&sim, USERS - 1, Duration::from_secs(10), &instances).await;
    let mut before = sets;
    before.remove("agent0@acme.example");
    after.remove("agent0@acme.example");
    assert_eq!(after, before, "every set kept its channel set id");
    // The upgraded process took its predecessor's part over; nothing moved between the others.
    let mut held = Vec::new();
    for instance in &instances {
        held.push(leases_held(instance).await);
    }
    assert_eq!(
        held,
        [9.0, 10.0, 10.0],
        "leases per instance after the upgrade"
    );
    eprintln!("longest without a channel during the upgrade: {longest:?}");
    assert!(
        longest <= Duration::from_secs(1),
        "a set had no channel for {longest:?}"
    );
    assert_no_duplicate_sets(&sim).await;
}

/// PostgreSQL restarted under two instances: meanwhile they keep serving what they can (a
/// session an instance read before, transparent XSI, the channel sets) and refuse what needs the
/// database with a clear 503; once it is back they recover by themselves and nothing is lost (the
/// sessions made before still work, logins work again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_is_ridden_out_and_recovered_from() {
    let postgres = Postgres::start();
    let sim = events_simulator(3).await;
    let secret = SharedSecret::new();
    let a = events_instance(&sim, &postgres, &secret).await;
    let b = events_instance(&sim, &postgres, &secret).await;
    // agent0's session is read on B before the outage, agent1's never is.
    let read = log_in(&a, "agent0@acme.example", EVENTS_PASSWORD).await;
    let unread = log_in(&a, "agent1@acme.example", EVENTS_PASSWORD).await;
    let sets = every_set_open_once(&sim, 2, Duration::from_secs(30), &[]).await;
    let session_status = |gateway: &Gateway, login: &Login, user: &str| {
        client()
            .get(gateway.url(&profile(user)))
            .header("cookie", &login.cookie)
            .send()
    };
    let log_in_status = |gateway: &Gateway| {
        client()
            .post(gateway.url("/api/access/services/idp/broadsoft"))
            .json(&json!({ "user": "agent2@acme.example", "password": EVENTS_PASSWORD }))
            .send()
    };
    let transparent = |gateway: &Gateway| {
        client()
            .get(gateway.url(&profile("agent2@acme.example")))
            .header(
                "authorization",
                basic("agent2@acme.example", EVENTS_PASSWORD),
            )
            .send()
    };
    let reader = (&read, "agent0@acme.example");
    assert_eq!(
        session_status(&b, reader.0, reader.1)
            .await
            .unwrap()
            .status(),
        200
    );

    postgres.stop_server();
    let down_at = Instant::now();
    let refused = log_in_status(&a).await.unwrap();
    let status = refused.status();
    let body = refused.text().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store_unavailable"), "{body}");
    assert!(!body.contains(&postgres.port.to_string()), "{body}");
    // Past the cache's lifetime: the session B read before goes on, the one it never read cannot
    // be checked and is refused the same way; transparent XSI needs no database.
    tokio::time::sleep(
        (down_at + CACHE_TTL + Duration::from_millis(500))
            .saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(
        session_status(&b, reader.0, reader.1)
            .await
            .unwrap()
            .status(),
        200
    );
    let refused = session_status(&b, &unread, "agent1@acme.example")
        .await
        .unwrap();
    let status = refused.status();
    let body = refused.text().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store_unavailable"), "{body}");
    assert_eq!(transparent(&b).await.unwrap().status(), 200);
    // The channel sets go on.
    assert_eq!(
        every_set_open_once(&sim, 2, Duration::from_secs(1), &[]).await,
        sets
    );

    postgres.start_server();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let session = session_status(&b, &unread, "agent1@acme.example")
            .await
            .unwrap()
            .status();
        let fresh = log_in_status(&a).await.unwrap().status();
        if session == 200 && fresh == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered: session {session}, login {fresh}\n{}",
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = every_set_open_once(&sim, 3, Duration::from_secs(20), &[]).await;
    for (user, set) in &sets {
        assert_eq!(
            &all[user], set,
            "{user}'s set went on in the same channel set"
        );
    }
    for gateway in [&a, &b] {
        let failures = gateway
            .metric("xsigate_lease_renewal_failures_total")
            .await
            .unwrap();
        assert!(
            failures > 0.0,
            "renewals failed while the database was down"
        );
    }
}

/// Two instances with idp-broadsoft and srs-login in front of the SRS stand-in.
async fn srs_instance(
    sim: &xsi_sim::Simulator,
    srs: &xsi_sim::srs::Srs,
    postgres: &Postgres,
    secret: &SharedSecret,
) -> Gateway {
    let rest = format!(
        "{}lease_seconds = {LEASE_SECONDS}\n\
         [[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
         [[plugins]]\nname = \"srs\"\npath = \"{}\"\n\
         [plugins.config.providers.acme]\nurl = \"{}\"\norigin = \"{DESKTOP}\"\n\
         server = \"https://rws1.acme.example\"\nswitch = \"SIP_Switch\"\n\
         place = \"Place_{{extension}}\"\nkeep_alive_seconds = 1\ntimeout_ms = 1000\n{}",
        postgres.store_table(),
        plugin_library("xsigate-idp-broadsoft").display(),
        plugin_library("xsigate-srs-login").display(),
        srs.url(),
        provider_for_simulator(
            "acme",
            &["acme.example"],
            sim,
            "plugins = [\"broadsoft\", \"srs\"]\n"
        ),
    );
    secret.start_instance(&rest).await
}

const DESKTOP: &str = "https://desktop.acme.example";

/// Waits until the stand-in's sessions of `agent0` (in no order) satisfy `condition`.
async fn wait_srs(
    srs: &xsi_sim::srs::Srs,
    within: Duration,
    what: &str,
    condition: impl Fn(&[xsi_sim::srs::SrsSession]) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let sessions = srs.sessions();
        if condition(&sessions) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {sessions:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An agent is kept logged in to screen recording by one instance: a logout through another
/// instance logs it out of SRS (within a third of the lease's time); after a kill of the
/// instance keeping it, another logs it in again within the lease's time plus 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_instance_keeps_each_agent_and_another_takes_it_over() {
    let postgres = Postgres::start();
    let sim = events_simulator(1).await;
    let srs = xsi_sim::srs::Srs::start(
        xsi_sim::srs::SrsSettings {
            origin: DESKTOP.to_owned(),
            agents: std::collections::HashMap::from([(
                "agent0@acme.example".to_owned(),
                EVENTS_PASSWORD.to_owned(),
            )]),
            keep_alive: Duration::from_secs(4),
            version: "8.5.500.07".to_owned(),
        },
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let secret = SharedSecret::new();
    let mut a = srs_instance(&sim, &srs, &postgres, &secret).await;
    let b = srs_instance(&sim, &srs, &postgres, &secret).await;
    let active = |sessions: &[xsi_sim::srs::SrsSession]| {
        sessions.iter().filter(|s| s.active && !s.ended).count()
    };

    // Logged in through A, out through B: A logs the agent out of SRS.
    let login = log_in(&a, "agent0@acme.example", EVENTS_PASSWORD).await;
    wait_srs(&srs, Duration::from_secs(10), "logged in once", |s| {
        active(s) == 1 && s.len() == 1
    })
    .await;
    let logout = client()
        .post(b.url("/api/access/services/logout"))
        .header("cookie", &login.cookie)
        .header("x-csrf-token", &login.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    wait_srs(
        &srs,
        Duration::from_secs(LEASE_SECONDS) + Duration::from_secs(2),
        "logged out of SRS after a logout elsewhere",
        |s| s.len() == 1 && s.iter().all(|x| x.ended),
    )
    .await;

    // Logged in through A again; A dies; B logs the agent in (a new SRS session) in time.
    log_in(&a, "agent0@acme.example", EVENTS_PASSWORD).await;
    wait_srs(&srs, Duration::from_secs(10), "logged in again", |s| {
        active(s) == 1 && s.len() == 2
    })
    .await;
    a.kill();
    wait_srs(
        &srs,
        Duration::from_secs(LEASE_SECONDS + 5),
        "logged in by the survivor",
        |s| s.len() == 3 && s.iter().any(|x| x.active && x.pings > 0 && !x.ended),
    )
    .await;
    // Only the survivor keeps it: one session pinged from now on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(srs.sessions().len(), 3, "{:?}", srs.sessions());
}

/// An instance with idp-broadsoft, xsi-events (DND, forwarding and calls) and firebase-sync
/// writing to the Firebase stand-in.
async fn firebase_instance(
    sim: &xsi_sim::Simulator,
    firebase: &xsi_sim::firebase::Firebase,
    postgres: &Postgres,
    secret: &SharedSecret,
) -> Gateway {
    let account = xsigate_tests::repo_root().join("tests/fixtures/firebase/service-account.json");
    let rest = format!(
        "{}lease_seconds = {LEASE_SECONDS}\n\
         [[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n\
         [[plugins]]\nname = \"events\"\npath = \"{}\"\n\
         [plugins.config.providers.acme]\n\
         packages = [\"Do Not Disturb\", \"Call Forwarding Always\", \"Advanced Call\"]\n\
         heartbeat_seconds = 1\nsilence_seconds = 3\n\
         [[plugins]]\nname = \"firebase\"\npath = \"{}\"\n\
         [plugins.config]\nbatch_ms = 25\n\
         [plugins.config.providers.acme]\nservice_account_file = \"{}\"\ntimeout_ms = 2000\n\
         database_url = \"{}\"\ntoken_url = \"{}\"\n{}",
        postgres.store_table(),
        plugin_library("xsigate-idp-broadsoft").display(),
        plugin_library("xsigate-xsi-events").display(),
        plugin_library("xsigate-firebase-sync").display(),
        account.display(),
        firebase.url(),
        firebase.token_url(),
        provider_for_simulator(
            "acme",
            &["acme.example"],
            sim,
            "plugins = [\"broadsoft\", \"events\", \"firebase\"]\n"
        ),
    );
    secret.start_instance(&rest).await
}

/// A call placed by `user`'s own phone, straight at the simulator's first XSP.
async fn place_call(sim: &xsi_sim::Simulator, user: &str) {
    let response = client()
        .post(format!(
            "http://{}/com.broadsoft.xsi-actions/v2.0/user/{user}/calls/new?address=2025550999",
            sim.xsp_addrs()[0]
        ))
        .header("authorization", basic(user, EVENTS_PASSWORD))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// A kill of one of three instances while users' DND and forwarding keep changing and calls are
/// placed: its sets move to the others, which resync, and every user's final DND, forwarding
/// and call state in Firebase is the simulator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_kill_under_load_every_users_final_state_reaches_firebase() {
    const USERS: usize = 30;
    let postgres = Postgres::start();
    let sim = events_simulator(USERS).await;
    let firebase = xsi_sim::firebase::Firebase::start(
        xsi_sim::firebase::FirebaseSettings {
            service_account: std::fs::read_to_string(
                xsigate_tests::repo_root().join("tests/fixtures/firebase/service-account.json"),
            )
            .unwrap(),
            secret: None,
            token_lifetime: Duration::from_secs(3600),
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let secret = SharedSecret::new();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(firebase_instance(&sim, &firebase, &postgres, &secret).await);
    }
    let mut nodes = Vec::new();
    for i in 0..USERS {
        let login = log_in(
            &instances[i % 3],
            &format!("agent{i}@acme.example"),
            EVENTS_PASSWORD,
        )
        .await;
        nodes.push(format!(
            "users/{}",
            login.answer["unique_id"].as_str().unwrap()
        ));
    }
    every_set_open_once(&sim, USERS, Duration::from_secs(30), &instances).await;

    // Changes to every user, round after round, a kill after the second, calls after the third.
    let started = Instant::now();
    let mut round = 0u32;
    let mut killed = false;
    // (A change to a user whose channel died waits in the simulator for its acknowledgement
    // until the set is taken over, so rounds are counted, not timed.)
    while round < 8 || started.elapsed() < Duration::from_secs(6) {
        round += 1;
        let changes = (0..USERS).map(|i| {
            let user = format!("agent{i}@acme.example");
            let sim = &sim;
            async move {
                change_user(sim, &user, |u| {
                    u["do_not_disturb"]["active"] = json!((round + i as u32) % 2 == 0);
                    u["call_forwarding_always"] = json!({
                        "active": round % 3 != 0,
                        "forward_to_phone_number": format!("+1202555{:04}", round * 100 + i as u32),
                        "ring_splash": false,
                    });
                })
                .await;
            }
        });
        futures_util::future::join_all(changes).await;
        if round == 2 {
            instances[0].kill();
            killed = true;
        }
        if round == 3 {
            for i in (0..USERS).step_by(5) {
                place_call(&sim, &format!("agent{i}@acme.example")).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(killed);

    // Every user's final state, as the simulator holds it, reaches Firebase.
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECONDS + 15);
    for (i, node) in nodes.iter().enumerate() {
        let user = format!("agent{i}@acme.example");
        let state = sim_get(&sim, &format!("/users/{user}")).await;
        let dnd = state["do_not_disturb"]["active"].clone();
        let forward = state["call_forwarding_always"]["forward_to_phone_number"].clone();
        let forwarding = state["call_forwarding_always"]["active"].clone();
        let calling = i % 5 == 0;
        loop {
            let written = firebase.get(node);
            let calls = written["calls"].as_object().map_or(0, serde_json::Map::len);
            let right = written["dnd"]["active"] == dnd
                && written["forwarding"]["always"]["active"] == forwarding
                && written["forwarding"]["always"]["forward_to"] == forward
                && (calls == 1) == calling;
            if right {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{user}: Firebase has {written}, the simulator {state}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_no_duplicate_sets(&sim).await;
}
