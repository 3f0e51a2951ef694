//! The shared store: a PostgreSQL database that several instances use at once.
//!
//! The schema is SQLite's, in PostgreSQL's types. What several writers could race on is one
//! statement each (a failure count, a uniqueId, a reset token's single use), so the database's
//! row locks decide, not the instances.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};

use super::contract::{
    ClaimableLease, HeldLease, LeaseName, Migrations, SessionOwner, SessionRow, Store, StoreError,
    claimable_leases, counts, held_leases, millis, owners, unix_ms,
};

/// How long opening the store may take at start before it is an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a query waits for a connection: a request that needs the store while PostgreSQL is
/// away is refused after this rather than held.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// The advisory lock that serialises migrations of instances starting together ("xsigate").
const SCHEMA_LOCK: i64 = 0x0078_7369_6761_7465;

/// The schema, oldest change first (see [`Migrations`]). The first is SQLite's first three, the
/// second its fourth.
pub const MIGRATIONS: Migrations = &[
    &[
        "CREATE TABLE plugin_kv (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value BYTEA NOT NULL,
        expires_at_ms BIGINT,
        PRIMARY KEY (namespace, key)
    )",
        "CREATE TABLE user_ids (
        user_id TEXT PRIMARY KEY,
        unique_id TEXT NOT NULL UNIQUE,
        created_at_ms BIGINT NOT NULL
    )",
        "CREATE TABLE login_failures (
        key TEXT PRIMARY KEY,
        failures BIGINT NOT NULL,
        last_failure_ms BIGINT NOT NULL,
        locked_until_ms BIGINT NOT NULL
    )",
        "CREATE INDEX login_failures_by_time ON login_failures (last_failure_ms)",
        "CREATE TABLE sessions (
        token_hash BYTEA PRIMARY KEY,
        csrf_hash BYTEA NOT NULL,
        user_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        level TEXT NOT NULL,
        xsp TEXT,
        sealed BYTEA NOT NULL,
        created_at_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        service_provider TEXT,
        group_id TEXT
    )",
        // Sessions are ended by user id without regard to case.
        "CREATE INDEX sessions_by_user ON sessions (lower(user_id))",
        "CREATE TABLE reset_tokens (
        token_hash BYTEA PRIMARY KEY,
        user_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    )",
    ],
    &[
        // Who does which live work (a channel set, an agent login): one instance each.
        "CREATE TABLE leases (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        holder TEXT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        ended BOOLEAN NOT NULL DEFAULT false,
        released BOOLEAN NOT NULL DEFAULT false,
        PRIMARY KEY (namespace, name)
    )",
        "CREATE INDEX leases_by_expiry ON leases (namespace, expires_at_ms)",
        "CREATE INDEX leases_by_holder ON leases (holder)",
        "CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        expires_at_ms BIGINT NOT NULL
    )",
    ],
    &[
        // Instances read each other's live locks every second.
        "CREATE INDEX login_failures_by_lock ON login_failures (locked_until_ms)",
    ],
];

/// Where the shared store is and how to log in to it.
#[derive(Clone)]
pub struct PostgresSettings {
    /// A `postgres://user@host:port/database` URL, without a password.
    pub url: String,
    pub password: Option<String>,
    pub tls: PostgresTls,
    /// Connections this instance opens at most.
    pub max_connections: u32,
}

/// How the connection to the database is protected.
#[derive(Debug, Clone)]
pub enum PostgresTls {
    Off,
    /// The server's certificate is checked against the system's roots and `ca_file`'s, and
    /// its name against the URL's host.
    VerifyFull {
        ca_file: Option<PathBuf>,
    },
}

impl PostgresSettings {
    /// The URL as errors and logs name the database: never with a password.
    pub fn location(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) => {
                let _ = url.set_password(None);
                url.to_string()
            }
            Err(_) => "(an unreadable postgres URL)".to_owned(),
        }
    }
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("location", &self.location())
            .field("tls", &self.tls)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// The shared store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects, brings the schema up to date, and keeps a pool that reconnects by itself when
    /// the database comes back after a restart. Must run on the runtime that will use the store.
    pub async fn open(settings: &PostgresSettings) -> Result<Self, StoreError> {
        let location = settings.location();
        let open_error = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        let mut options = PgConnectOptions::from_str(&settings.url)
            .map_err(open_error)?
            .application_name("xsigate");
        if let Some(password) = &settings.password {
            options = options.password(password);
        }
        options = match &settings.tls {
            PostgresTls::Off => options.ssl_mode(PgSslMode::Disable),
            PostgresTls::VerifyFull { ca_file } => {
                let options = options.ssl_mode(PgSslMode::VerifyFull);
                match ca_file {
                    Some(ca_file) => options.ssl_root_cert(ca_file),
                    None => options,
                }
            }
        };
        // One connection first: its error says why (refused, authentication, no such database)
        // where a pool would only say it timed out.
        let mut connection =
            tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
                .await
                .map_err(|_| {
                    open_error(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    )))
                })?
                .map_err(open_error)?;
        migrate(&mut connection, &location).await?;
        let _ = connection.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The connection pool, for the cluster's own queries (leases, notifications).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Applies the migrations the database has not seen, all in one transaction under an advisory
/// lock: instances starting together wait for the first one's migration instead of racing it,
/// and a crash leaves none of it.
async fn migrate(connection: &mut PgConnection, location: &str) -> Result<(), StoreError> {
    let mut transaction = connection.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *transaction)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS xsigate_schema (version BIGINT NOT NULL)")
        .execute(&mut *transaction)
        .await?;
    let found: Option<i64> = sqlx::query_scalar("SELECT version FROM xsigate_schema")
        .fetch_optional(&mut *transaction)
        .await?;
    let found = found.unwrap_or(0);
    let known = MIGRATIONS.len();
    let Ok(applied) = usize::try_from(found) else {
        return Err(newer(location, found, known));
    };
    if applied > known {
        return Err(newer(location, found, known));
    }
    for statements in &MIGRATIONS[applied..] {
        for statement in *statements {
            sqlx::query(*statement).execute(&mut *transaction).await?;
        }
    }
    sqlx::query("DELETE FROM xsigate_schema")
        .execute(&mut *transaction)
        .await?;
    sqlx::query("INSERT INTO xsigate_schema (version) VALUES ($1)")
        .bind(i64::try_from(known).unwrap_or(i64::MAX))
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(())
}

fn newer(location: &str, found: i64, known: usize) -> StoreError {
    StoreError::Newer {
        location: location.to_owned(),
        found,
        known,
    }
}

/// Adds the uniqueIds of those of `user_ids` that have one to `known`.
async fn known_unique_ids(
    connection: &mut PgConnection,
    user_ids: &[&str],
    known: &mut HashMap<String, String>,
) -> Result<(), StoreError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, unique_id FROM user_ids WHERE user_id = ANY($1)")
            .bind(user_ids)
            .fetch_all(&mut *connection)
            .await?;
    known.extend(rows);
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT value FROM plugin_kv WHERE namespace = $1 AND key = $2
             AND (expires_at_ms IS NULL OR expires_at_ms > $3)",
        )
        .bind(namespace)
        .bind(key)
        .bind(unix_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(value)
    }

    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let expires = ttl.map(|t| unix_ms().saturating_add(millis(t)));
        sqlx::query(
            "INSERT INTO plugin_kv (namespace, key, value, expires_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (namespace, key) DO UPDATE
             SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
        )
        .bind(namespace)
        .bind(key)
        .bind(value)
        .bind(expires)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "DELETE FROM plugin_kv WHERE namespace = $1 AND key = $2
             AND (expires_at_ms IS NULL OR expires_at_ms > $3)",
        )
        .bind(namespace)
        .bind(key)
        .bind(unix_ms())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn kv_sweep(&self) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM plugin_kv WHERE expires_at_ms <= $1")
            .bind(unix_ms())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn kv_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        // `starts_with` rather than LIKE: a prefix may hold `%` or `_`. `COLLATE "C"` orders by
        // bytes, as SQLite does, whatever the database's locale.
        let keys = sqlx::query_scalar::<_, String>(
            "SELECT key FROM plugin_kv WHERE namespace = $1 AND starts_with(key, $2)
             AND (expires_at_ms IS NULL OR expires_at_ms > $3) ORDER BY key COLLATE \"C\"",
        )
        .bind(namespace)
        .bind(prefix)
        .bind(unix_ms())
        .fetch_all(&self.pool)
        .await?;
        Ok(keys)
    }

    async fn unique_id(&self, user_id: &str) -> Result<String, StoreError> {
        let existing =
            sqlx::query_scalar::<_, String>("SELECT unique_id FROM user_ids WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        if let Some(unique_id) = existing {
            return Ok(unique_id);
        }
        let mut created = self.unique_ids(&[user_id.to_owned()]).await?;
        created
            .pop()
            .ok_or(StoreError::Query(sqlx::Error::RowNotFound))
    }

    async fn unique_ids(&self, user_ids: &[String]) -> Result<Vec<String>, StoreError> {
        let mut known = HashMap::with_capacity(user_ids.len());
        let asked: Vec<&str> = user_ids.iter().map(String::as_str).collect();
        let mut connection = self.pool.acquire().await?;
        known_unique_ids(&mut connection, &asked, &mut known).await?;
        let mut missing: Vec<&str> = asked
            .iter()
            .copied()
            .filter(|id| !known.contains_key(*id))
            .collect();
        // In one order on every instance, so that two inserting overlapping users wait for each
        // other instead of deadlocking.
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let fresh: Vec<String> = missing
                .iter()
                .map(|_| format!("{:032x}", rand::random::<u128>()))
                .collect();
            let mut transaction = connection.begin().await?;
            // A user another instance creates meanwhile keeps that one's id.
            sqlx::query(
                "INSERT INTO user_ids (user_id, unique_id, created_at_ms)
                 SELECT user_id, unique_id, $3
                 FROM UNNEST($1::text[], $2::text[]) AS new (user_id, unique_id)
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(&missing)
            .bind(&fresh)
            .bind(unix_ms())
            .execute(&mut *transaction)
            .await?;
            known_unique_ids(&mut transaction, &missing, &mut known).await?;
            transaction.commit().await?;
        }
        user_ids
            .iter()
            .map(|id| {
                known
                    .get(id)
                    .cloned()
                    .ok_or(StoreError::Query(sqlx::Error::RowNotFound))
            })
            .collect()
    }

    async fn user_id(&self, unique_id: &str) -> Result<Option<String>, StoreError> {
        let user_id =
            sqlx::query_scalar::<_, String>("SELECT user_id FROM user_ids WHERE unique_id = $1")
                .bind(unique_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(user_id)
    }

    async fn login_locked_until(&self, key: &str) -> Result<Option<i64>, StoreError> {
        let until = sqlx::query_scalar::<_, i64>(
            "SELECT locked_until_ms FROM login_failures WHERE key = $1 AND locked_until_ms > $2",
        )
        .bind(key)
        .bind(unix_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(until)
    }

    async fn login_locks(&self, now_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let locks = sqlx::query_as::<_, (String, i64)>(
            "SELECT key, locked_until_ms FROM login_failures WHERE locked_until_ms > $1",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(locks)
    }

    async fn login_failed(
        &self,
        key: &str,
        now_ms: i64,
        forget_ms: i64,
    ) -> Result<u32, StoreError> {
        // One statement: instances failing the same user at once each count, in turn.
        let failures = sqlx::query_scalar::<_, i64>(
            "INSERT INTO login_failures AS f (key, failures, last_failure_ms, locked_until_ms)
             VALUES ($1, 1, $2, 0)
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN f.last_failure_ms < $2 - $3 THEN 1 ELSE f.failures + 1 END,
                 last_failure_ms = $2
             RETURNING failures",
        )
        .bind(key)
        .bind(now_ms)
        .bind(forget_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(failures).unwrap_or(u32::MAX))
    }

    async fn login_failures_sweep(&self, now_ms: i64, forget_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM login_failures WHERE last_failure_ms < $1 - $2 AND locked_until_ms <= $1",
        )
        .bind(now_ms)
        .bind(forget_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn login_lock(&self, key: &str, until_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE login_failures SET locked_until_ms = GREATEST(locked_until_ms, $2)
             WHERE key = $1",
        )
        .bind(key)
        .bind(until_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session_insert(&self, session: &SessionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, csrf_hash, user_id, provider, level, xsp, sealed,
                                   created_at_ms, last_seen_ms, expires_at_ms,
                                   service_provider, group_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&session.token_hash)
        .bind(&session.csrf_hash)
        .bind(&session.user_id)
        .bind(&session.provider)
        .bind(&session.level)
        .bind(&session.xsp)
        .bind(&session.sealed)
        .bind(session.created_at_ms)
        .bind(session.last_seen_ms)
        .bind(session.expires_at_ms)
        .bind(&session.service_provider)
        .bind(&session.group_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session_get(
        &self,
        token_hash: &[u8],
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query_as::<_, SessionRow>(
            "SELECT * FROM sessions WHERE token_hash = $1
             AND expires_at_ms > $2 AND last_seen_ms > $2 - $3",
        )
        .bind(token_hash)
        .bind(now_ms)
        .bind(idle_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    async fn session_touch(&self, token_hash: &[u8], now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET last_seen_ms = GREATEST(last_seen_ms, $2) WHERE token_hash = $1",
        )
        .bind(token_hash)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session_update(
        &self,
        token_hash: &[u8],
        xsp: Option<&str>,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET xsp = $2, sealed = $3 WHERE token_hash = $1")
            .bind(token_hash)
            .bind(xsp)
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session_delete(&self, token_hash: &[u8]) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query_as::<_, SessionRow>(
            "DELETE FROM sessions WHERE token_hash = $1 RETURNING *",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    async fn session_count(&self, now_ms: i64, idle_ms: i64) -> Result<u64, StoreError> {
        let count = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sessions WHERE expires_at_ms > $1 AND last_seen_ms > $1 - $2",
        )
        .bind(now_ms)
        .bind(idle_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn session_count_by_provider(
        &self,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query_as::<_, (String, i64)>(
            "SELECT provider, COUNT(*) FROM sessions \
             WHERE expires_at_ms > $1 AND last_seen_ms > $1 - $2 GROUP BY provider",
        )
        .bind(now_ms)
        .bind(idle_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(provider, count)| (provider, u64::try_from(count).unwrap_or(0)))
            .collect())
    }

    async fn session_count_of(
        &self,
        user_id: &str,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<u64, StoreError> {
        let count = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sessions \
             WHERE user_id = $1 AND expires_at_ms > $2 AND last_seen_ms > $2 - $3",
        )
        .bind(user_id)
        .bind(now_ms)
        .bind(idle_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn session_delete_user(&self, user_id: &str) -> Result<Vec<SessionOwner>, StoreError> {
        // `lower` folds beyond ASCII, where SQLite's NOCASE does not; BroadWorks user ids are
        // ASCII, so both find the same sessions.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM sessions WHERE lower(user_id) = lower($1) RETURNING user_id, provider",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(owners(rows))
    }

    async fn reset_insert(
        &self,
        token_hash: &[u8],
        user_id: &str,
        provider: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reset_tokens (token_hash, user_id, provider, expires_at_ms)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(provider)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn reset_take(
        &self,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query_as::<_, (String, String, i64)>(
            "DELETE FROM reset_tokens WHERE token_hash = $1
             RETURNING user_id, provider, expires_at_ms",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .filter(|(_, _, expires)| *expires > now_ms)
            .map(|(user_id, provider, _)| (user_id, provider)))
    }

    async fn reset_sweep(&self, now_ms: i64) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM reset_tokens WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn session_sweep(
        &self,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Vec<SessionOwner>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM sessions WHERE expires_at_ms <= $1 OR last_seen_ms <= $1 - $2 \
             RETURNING user_id, provider",
        )
        .bind(now_ms)
        .bind(idle_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(owners(rows))
    }

    async fn lease_acquire(
        &self,
        lease: &LeaseName<'_>,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<bool>, StoreError> {
        // One statement: of instances taking the same lease at once, the row lock lets one in.
        let ended = sqlx::query_scalar::<_, bool>(
            "INSERT INTO leases AS l (namespace, name, holder, expires_at_ms) VALUES ($1, $2, $3, $5)
             ON CONFLICT (namespace, name) DO UPDATE
             SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms, released = false
             WHERE l.holder = excluded.holder OR l.expires_at_ms <= $4
             RETURNING ended",
        )
        .bind(lease.namespace)
        .bind(lease.name)
        .bind(holder)
        .bind(now_ms)
        .bind(until_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(ended)
    }

    async fn lease_renew(&self, holder: &str, until_ms: i64) -> Result<Vec<HeldLease>, StoreError> {
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "UPDATE leases SET expires_at_ms = $2 WHERE holder = $1 AND NOT released
             RETURNING namespace, name, ended",
        )
        .bind(holder)
        .bind(until_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(held_leases(rows))
    }

    async fn lease_release(
        &self,
        lease: &LeaseName<'_>,
        holder: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE leases SET expires_at_ms = LEAST(expires_at_ms, $4), released = true
             WHERE namespace = $1 AND name = $2 AND holder = $3",
        )
        .bind(lease.namespace)
        .bind(lease.name)
        .bind(holder)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn lease_release_all(&self, holder: &str, now_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE leases SET expires_at_ms = LEAST(expires_at_ms, $2), released = true
             WHERE holder = $1",
        )
        .bind(holder)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn leases_of(&self, holder: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query_as("SELECT namespace, name FROM leases WHERE holder = $1")
            .bind(holder)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    async fn lease_finish(&self, lease: &LeaseName<'_>, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE namespace = $1 AND name = $2 AND holder = $3")
            .bind(lease.namespace)
            .bind(lease.name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lease_end(&self, lease: &LeaseName<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO leases (namespace, name, holder, expires_at_ms, ended)
             VALUES ($1, $2, '', 0, true)
             ON CONFLICT (namespace, name) DO UPDATE SET ended = true",
        )
        .bind(lease.namespace)
        .bind(lease.name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn lease_claimable(
        &self,
        namespace: &str,
        prefix: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimableLease>, StoreError> {
        let rows: Vec<(String, bool, String, i64)> = sqlx::query_as(
            "SELECT name, ended, holder, expires_at_ms FROM leases
             WHERE namespace = $1 AND expires_at_ms <= $3 AND starts_with(name, $2)
             ORDER BY expires_at_ms LIMIT $4",
        )
        .bind(namespace)
        .bind(prefix)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(claimable_leases(rows))
    }

    async fn lease_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT namespace, COUNT(*) FROM leases WHERE NOT ended GROUP BY namespace",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(counts(rows))
    }

    async fn instance_heartbeat(
        &self,
        instance: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        sqlx::query(
            "INSERT INTO instances (id, expires_at_ms) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
        )
        .bind(instance)
        .bind(until_ms)
        .execute(&self.pool)
        .await?;
        let live =
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM instances WHERE expires_at_ms > $1")
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await?;
        sqlx::query("DELETE FROM instances WHERE expires_at_ms <= $1")
            .bind(now_ms - 3_600_000)
            .execute(&self.pool)
            .await?;
        Ok(u64::try_from(live).unwrap_or(1))
    }
}
