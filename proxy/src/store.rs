//! The embedded store: SQLite in `data_dir`.
//!
//! It holds what must survive a restart: the userId -> uniqueId map and plugins' namespaced
//! key-value data. Every query is parameterised; values are opaque bytes.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// File name of the database inside `data_dir`.
pub const DATABASE_FILE: &str = "xsigate.sqlite";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS plugin_kv (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        expires_at_ms INTEGER,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS user_ids (
        user_id TEXT PRIMARY KEY,
        unique_id TEXT NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL
    )",
];

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`. Must run on the runtime that will
    /// use the store: the pool's maintenance tasks live there.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let open_error = |source| StoreError::Open {
            path: path.clone(),
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
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&pool)
                .await
                .map_err(open_error)?;
        }
        Ok(Self { pool })
    }

    /// A live value of `key` in `namespace`.
    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT value FROM plugin_kv WHERE namespace = ?1 AND key = ?2
             AND (expires_at_ms IS NULL OR expires_at_ms > ?3)",
        )
        .bind(namespace)
        .bind(key)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(value)
    }

    pub async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let expires =
            ttl.map(|t| now_ms().saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)));
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

    /// Removes a key; true when a live value was there.
    pub async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "DELETE FROM plugin_kv WHERE namespace = ?1 AND key = ?2
             AND (expires_at_ms IS NULL OR expires_at_ms > ?3)",
        )
        .bind(namespace)
        .bind(key)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Deletes expired values; returns how many.
    pub async fn kv_sweep(&self) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM plugin_kv WHERE expires_at_ms <= ?1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// The uniqueId of a userId, created on first use. It is random, so it reveals nothing
    /// about the user, and stable, so clients can key their data on it.
    pub async fn unique_id(&self, user_id: &str) -> Result<String, StoreError> {
        let candidate = format!("{:032x}", rand::random::<u128>());
        sqlx::query(
            "INSERT INTO user_ids (user_id, unique_id, created_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(&candidate)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let unique_id =
            sqlx::query_scalar::<_, String>("SELECT unique_id FROM user_ids WHERE user_id = ?1")
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(unique_id)
    }

    pub async fn user_id(&self, unique_id: &str) -> Result<Option<String>, StoreError> {
        let user_id =
            sqlx::query_scalar::<_, String>("SELECT user_id FROM user_ids WHERE unique_id = ?1")
                .bind(unique_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(user_id)
    }
}
