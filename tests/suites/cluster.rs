//! Several instances on one PostgreSQL database (Debian's `postgresql`, started per test by the
//! harness): the shared store keeps the same promises as the embedded one, instances racing on
//! one row each count, and what one instance does to a session or a login lock holds on all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use xsigate::state::store::{
    PostgresSettings, PostgresStore, SessionOwner, SessionRow, SqliteStore, Store,
};
use xsigate_tests::postgres::{self, Postgres};

fn settings(postgres: &Postgres) -> PostgresSettings {
    PostgresSettings {
        url: postgres.url(),
        password: Some(postgres::PASSWORD.to_owned()),
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
    let users = ["carol@acme.example", "alice@acme.example", "carol@acme.example"]
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
    assert_eq!(store.login_failed("user:a", 10_000, forget).await.unwrap(), 1);
    assert_eq!(store.login_failed("user:a", 10_500, forget).await.unwrap(), 2);
    assert_eq!(store.login_failed("user:a", 20_000, forget).await.unwrap(), 1);
    let far = store::now() + 60_000;
    store.login_lock("user:a", far).await.unwrap();
    store.login_lock("user:a", far - 30_000).await.unwrap();
    assert_eq!(store.login_locked_until("user:a").await.unwrap(), Some(far));
    store.login_succeeded("user:a").await.unwrap();
    assert_eq!(store.login_locked_until("user:a").await.unwrap(), None);

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
    let found = store.session_get(&[1; 32], now, idle).await.unwrap().unwrap();
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
        store.session_count_of("dave@acme.example", now, idle).await.unwrap(),
        1
    );
    assert_eq!(
        store.session_count_by_provider(now, idle).await.unwrap(),
        [("acme".to_owned(), 2)]
    );
    let mut ended = store.session_delete_user("DAVE@acme.EXAMPLE").await.unwrap();
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
    let message = PostgresStore::open(&settings).await.unwrap_err().to_string();
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains(&postgres.url()), "{message}");
    assert!(!message.contains(postgres::PASSWORD), "{message}");
}
