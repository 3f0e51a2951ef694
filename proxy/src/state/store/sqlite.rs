//! The embedded store: SQLite in `data_dir`, for one instance.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::contract::{
    ClaimableLease, HeldLease, LeaseName, Migrations, SessionOwner, SessionRow, Store, StoreError,
    claimable_leases, counts, held_leases, millis, owners, unix_ms,
};

/// Rows one statement reads or writes at most: well under SQLite's 32,766 bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// Adds the uniqueIds of those of `user_ids` that have one to `known`.
async fn known_unique_ids<'a>(
    connection: &mut sqlx::SqliteConnection,
    user_ids: impl Iterator<Item = &'a String>,
    known: &mut HashMap<String, String>,
) -> Result<(), StoreError> {
    let user_ids: Vec<&String> = user_ids.collect();
    for ids in user_ids.chunks(ROWS_PER_STATEMENT) {
        let mut select =
            sqlx::QueryBuilder::new("SELECT user_id, unique_id FROM user_ids WHERE user_id IN (");
        let mut list = select.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        select.push(")");
        let rows: Vec<(String, String)> =
            select.build_query_as().fetch_all(&mut *connection).await?;
        known.extend(rows);
    }
    Ok(())
}

/// File name of the database inside `data_dir`.
pub const DATABASE_FILE: &str = "xsigate.sqlite";

pub const MIGRATIONS: Migrations = &[
    &[
        "CREATE TABLE plugin_kv (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        expires_at_ms INTEGER,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID",
        "CREATE TABLE user_ids (
        user_id TEXT PRIMARY KEY,
        unique_id TEXT NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL
    )",
    ],
    &[
        // Failed logins per key (a user id, or a client address), for brute-force protection.
        "CREATE TABLE login_failures (
        key TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        last_failure_ms INTEGER NOT NULL,
        locked_until_ms INTEGER NOT NULL
    ) WITHOUT ROWID",
        // Login sessions. The cookie's token and the CSRF token are stored as SHA-256 hashes, the
        // replayable credentials and XSP cookies sealed: a copy of the file logs nobody in.
        "CREATE TABLE sessions (
        token_hash BLOB PRIMARY KEY,
        csrf_hash BLOB NOT NULL,
        user_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        level TEXT NOT NULL,
        xsp TEXT,
        sealed BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID",
        "CREATE INDEX sessions_by_user ON sessions (user_id)",
        // Password-reset tokens, by SHA-256 hash; each is taken (deleted) by its one use.
        "CREATE TABLE reset_tokens (
        token_hash BLOB PRIMARY KEY,
        user_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID",
    ],
    &[
        // The scope of administrator sessions: a group administrator's service provider and
        // group, a service-provider administrator's service provider.
        "ALTER TABLE sessions ADD COLUMN service_provider TEXT",
        "ALTER TABLE sessions ADD COLUMN group_id TEXT",
        // For sweeping failures nobody counts any more.
        "CREATE INDEX login_failures_by_time ON login_failures (last_failure_ms)",
    ],
    &[
        // Who does which live work (a channel set, an agent login): one instance each.
        "CREATE TABLE leases (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        holder TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        ended INTEGER NOT NULL DEFAULT 0,
        released INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (namespace, name)
    ) WITHOUT ROWID",
        "CREATE INDEX leases_by_expiry ON leases (namespace, expires_at_ms)",
        "CREATE INDEX leases_by_holder ON leases (holder)",
        "CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        expires_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID",
    ],
    &[
        // Instances sharing the store read each other's live locks every second.
        "CREATE INDEX login_failures_by_lock ON login_failures (locked_until_ms)",
    ],
];

/// What the gateway keeps between restarts.
/// The embedded store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir` and brings its schema up to date.
    /// Must run on the runtime that will use the store: the pool's tasks live there.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let open_error = |source| StoreError::Open {
            location: path.display().to_string(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_error)?
            .filename(&path)
            .create_if_missing(true)
            // WAL lets readers proceed while one writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        migrate(&pool, &path).await?;
        Ok(Self { pool })
    }
}

/// Applies the migrations the database has not seen, each in its own transaction together with
/// the version bump (`PRAGMA user_version`), so a crash never leaves half a migration.
async fn migrate(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let mut connection = pool.acquire().await?;
    let found: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *connection)
        .await?;
    let known = MIGRATIONS.len();
    if usize::try_from(found).map_or(true, |found| found > known) {
        return Err(StoreError::Newer {
            location: path.display().to_string(),
            found,
            known,
        });
    }
    for (index, statements) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let mut transaction = connection.begin().await?;
        for statement in *statements {
            sqlx::query(*statement).execute(&mut *transaction).await?;
        }
        // PRAGMA takes no bound parameters; the value is our own index.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA user_version = {}",
            index + 1
        )))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT value FROM plugin_kv WHERE namespace = ?1 AND key = ?2
             AND (expires_at_ms IS NULL OR expires_at_ms > ?3)",
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
            "INSERT INTO plugin_kv (namespace, key, value, expires_at_ms) VALUES (?1, ?2, ?3, ?4)
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
            "DELETE FROM plugin_kv WHERE namespace = ?1 AND key = ?2
             AND (expires_at_ms IS NULL OR expires_at_ms > ?3)",
        )
        .bind(namespace)
        .bind(key)
        .bind(unix_ms())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn kv_sweep(&self) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM plugin_kv WHERE expires_at_ms <= ?1")
            .bind(unix_ms())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn kv_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        // `substr` rather than LIKE: a prefix may hold `%` or `_`.
        let keys = sqlx::query_scalar::<_, String>(
            "SELECT key FROM plugin_kv WHERE namespace = ?1 AND substr(key, 1, length(?2)) = ?2
             AND (expires_at_ms IS NULL OR expires_at_ms > ?3) ORDER BY key",
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
            sqlx::query_scalar::<_, String>("SELECT unique_id FROM user_ids WHERE user_id = ?1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        // Known users, nearly every call, cost a read; only a first login writes.
        if let Some(unique_id) = existing {
            return Ok(unique_id);
        }
        let mut created = self.unique_ids(&[user_id.to_owned()]).await?;
        created
            .pop()
            .ok_or(StoreError::Query(sqlx::Error::RowNotFound))
    }

    async fn unique_ids(&self, user_ids: &[String]) -> Result<Vec<String>, StoreError> {
        // Known users cost one read and no write; only the new ones take a transaction.
        let mut known = HashMap::with_capacity(user_ids.len());
        let mut connection = self.pool.acquire().await?;
        known_unique_ids(&mut connection, user_ids.iter(), &mut known).await?;
        drop(connection);
        let mut missing: Vec<&String> = user_ids
            .iter()
            .filter(|id| !known.contains_key(*id))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let mut transaction = self.pool.begin().await?;
            let now = unix_ms();
            for rows in missing.chunks(ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO user_ids (user_id, unique_id, created_at_ms) ",
                );
                insert.push_values(rows, |mut row, user_id| {
                    row.push_bind(*user_id)
                        .push_bind(format!("{:032x}", rand::random::<u128>()))
                        .push_bind(now);
                });
                // A user another instance or call creates meanwhile keeps that one's id.
                insert.push(" ON CONFLICT (user_id) DO NOTHING");
                insert.build().execute(&mut *transaction).await?;
            }
            known_unique_ids(&mut transaction, missing.into_iter(), &mut known).await?;
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
            sqlx::query_scalar::<_, String>("SELECT user_id FROM user_ids WHERE unique_id = ?1")
                .bind(unique_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(user_id)
    }

    async fn login_locked_until(&self, key: &str) -> Result<Option<i64>, StoreError> {
        let until = sqlx::query_scalar::<_, i64>(
            "SELECT locked_until_ms FROM login_failures WHERE key = ?1 AND locked_until_ms > ?2",
        )
        .bind(key)
        .bind(unix_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(until)
    }

    async fn login_locks(&self, now_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let locks = sqlx::query_as::<_, (String, i64)>(
            "SELECT key, locked_until_ms FROM login_failures WHERE locked_until_ms > ?1",
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
        // One statement, so that concurrent failures each count.
        let failures = sqlx::query_scalar::<_, i64>(
            "INSERT INTO login_failures (key, failures, last_failure_ms, locked_until_ms)
             VALUES (?1, 1, ?2, 0)
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN last_failure_ms < ?2 - ?3 THEN 1 ELSE failures + 1 END,
                 last_failure_ms = ?2
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
            "DELETE FROM login_failures WHERE last_failure_ms < ?1 - ?2 AND locked_until_ms <= ?1",
        )
        .bind(now_ms)
        .bind(forget_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn login_lock(&self, key: &str, until_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE login_failures SET locked_until_ms = MAX(locked_until_ms, ?2) WHERE key = ?1",
        )
        .bind(key)
        .bind(until_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = ?1")
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
            "SELECT * FROM sessions WHERE token_hash = ?1
             AND expires_at_ms > ?2 AND last_seen_ms > ?2 - ?3",
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
            "UPDATE sessions SET last_seen_ms = MAX(last_seen_ms, ?2) WHERE token_hash = ?1",
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
        sqlx::query("UPDATE sessions SET xsp = ?2, sealed = ?3 WHERE token_hash = ?1")
            .bind(token_hash)
            .bind(xsp)
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session_delete(&self, token_hash: &[u8]) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query_as::<_, SessionRow>(
            "DELETE FROM sessions WHERE token_hash = ?1 RETURNING *",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    async fn session_count(&self, now_ms: i64, idle_ms: i64) -> Result<u64, StoreError> {
        let count = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sessions WHERE expires_at_ms > ?1 AND last_seen_ms > ?1 - ?2",
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
             WHERE expires_at_ms > ?1 AND last_seen_ms > ?1 - ?2 GROUP BY provider",
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
             WHERE user_id = ?1 AND expires_at_ms > ?2 AND last_seen_ms > ?2 - ?3",
        )
        .bind(user_id)
        .bind(now_ms)
        .bind(idle_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn session_delete_user(&self, user_id: &str) -> Result<Vec<SessionOwner>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM sessions WHERE user_id = ?1 COLLATE NOCASE RETURNING user_id, provider",
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
             VALUES (?1, ?2, ?3, ?4)",
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
            "DELETE FROM reset_tokens WHERE token_hash = ?1
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
        let result = sqlx::query("DELETE FROM reset_tokens WHERE expires_at_ms <= ?1")
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
            "DELETE FROM sessions WHERE expires_at_ms <= ?1 OR last_seen_ms <= ?1 - ?2 \
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
        let ended = sqlx::query_scalar::<_, bool>(
            "INSERT INTO leases (namespace, name, holder, expires_at_ms) VALUES (?1, ?2, ?3, ?5)
             ON CONFLICT (namespace, name) DO UPDATE
             SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms, released = 0
             WHERE leases.holder = excluded.holder OR leases.expires_at_ms <= ?4
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
            "UPDATE leases SET expires_at_ms = ?2 WHERE holder = ?1 AND NOT released
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
            "UPDATE leases SET expires_at_ms = MIN(expires_at_ms, ?4), released = 1
             WHERE namespace = ?1 AND name = ?2 AND holder = ?3",
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
            "UPDATE leases SET expires_at_ms = MIN(expires_at_ms, ?2), released = 1
             WHERE holder = ?1",
        )
        .bind(holder)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn leases_of(&self, holder: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query_as("SELECT namespace, name FROM leases WHERE holder = ?1")
            .bind(holder)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    async fn lease_finish(&self, lease: &LeaseName<'_>, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE namespace = ?1 AND name = ?2 AND holder = ?3")
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
             VALUES (?1, ?2, '', 0, 1)
             ON CONFLICT (namespace, name) DO UPDATE SET ended = 1",
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
             WHERE namespace = ?1 AND expires_at_ms <= ?3 AND substr(name, 1, length(?2)) = ?2
             ORDER BY expires_at_ms LIMIT ?4",
        )
        .bind(namespace)
        .bind(prefix)
        .bind(now_ms)
        .bind(limit)
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
            "INSERT INTO instances (id, expires_at_ms) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
        )
        .bind(instance)
        .bind(until_ms)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM instances WHERE expires_at_ms <= ?1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        let live = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM instances")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(live).unwrap_or(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn the_schema_is_migrated_once_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            let unique = store.unique_id("alice@acme.example").await.unwrap();
            store.kv_put("p", "k", b"v", None).await.unwrap();
            let version: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64);
            store.pool.close().await;

            let reopened = SqliteStore::open(dir.path()).await.unwrap();
            assert_eq!(
                reopened.unique_id("alice@acme.example").await.unwrap(),
                unique
            );
            assert_eq!(
                reopened.kv_get("p", "k").await.unwrap().as_deref(),
                Some(&b"v"[..])
            );
        });
    }

    #[test]
    fn a_database_from_a_newer_xsigate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            sqlx::query("PRAGMA user_version = 999")
                .execute(&store.pool)
                .await
                .unwrap();
            store.pool.close().await;
            let error = SqliteStore::open(dir.path()).await.unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains("schema version 999, newer than this xsigate knows"),
                "{message}"
            );
            assert!(message.contains(DATABASE_FILE), "{message}");
        });
    }

    #[test]
    fn unique_ids_are_stable_distinct_and_opaque() {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            let alice = store.unique_id("alice@acme.example").await.unwrap();
            let bob = store.unique_id("bob@acme.example").await.unwrap();
            assert_ne!(alice, bob);
            assert_eq!(alice.len(), 32);
            assert!(!alice.contains("alice"));
            assert_eq!(store.unique_id("alice@acme.example").await.unwrap(), alice);
            assert_eq!(
                store.user_id(&bob).await.unwrap().as_deref(),
                Some("bob@acme.example")
            );
            assert_eq!(store.user_id("unknown").await.unwrap(), None);
        });
    }

    #[test]
    fn unique_ids_in_one_go_agree_with_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            let alice = store.unique_id("alice@acme.example").await.unwrap();
            let users = [
                "carol@acme.example",
                "alice@acme.example",
                "carol@acme.example",
            ]
            .map(str::to_owned);
            let ids = store.unique_ids(&users).await.unwrap();
            assert_eq!(ids[1], alice);
            assert_eq!(ids[0], ids[2]);
            assert_ne!(ids[0], alice);
            assert_eq!(store.unique_id("carol@acme.example").await.unwrap(), ids[0]);
            assert!(store.unique_ids(&[]).await.unwrap().is_empty());
        });
    }

    #[test]
    fn values_are_namespaced_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            store.kv_put("a", "k", b"1", None).await.unwrap();
            assert_eq!(store.kv_get("b", "k").await.unwrap(), None);
            assert!(!store.kv_delete("b", "k").await.unwrap());
            store
                .kv_put("a", "short", b"2", Some(Duration::from_millis(1)))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(store.kv_get("a", "short").await.unwrap(), None);
            assert_eq!(store.kv_sweep().await.unwrap(), 1);
            assert!(store.kv_delete("a", "k").await.unwrap());
        });
    }
    #[test]
    fn failure_counts_are_swept_once_forgotten_and_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            let forget = 1_000;
            store.login_failed("old", 0, forget).await.unwrap();
            store.login_failed("locked", 0, forget).await.unwrap();
            store.login_lock("locked", 10_000).await.unwrap();
            store.login_failed("recent", 4_500, forget).await.unwrap();
            assert_eq!(store.login_failures_sweep(5_000, forget).await.unwrap(), 1);
            let kept: Vec<String> =
                sqlx::query_scalar("SELECT key FROM login_failures ORDER BY key")
                    .fetch_all(&store.pool)
                    .await
                    .unwrap();
            assert_eq!(kept, ["locked", "recent"]);
            // Still counted: a failure now is the second in a row.
            assert_eq!(
                store.login_failed("recent", 5_000, forget).await.unwrap(),
                2
            );
            assert_eq!(store.login_failed("old", 5_000, forget).await.unwrap(), 1);
        });
    }
}
