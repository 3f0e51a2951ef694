//! What every store does, and the rows and errors it speaks in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `location` names the database (a file, or a PostgreSQL URL without its password).
    #[error("cannot open the store {location}: {source}")]
    Open {
        location: String,
        source: sqlx::Error,
    },
    #[error(
        "the store {location} has schema version {found}, newer than this xsigate knows ({known}); \
         run the newer xsigate, or restore a backup"
    )]
    Newer {
        location: String,
        found: i64,
        known: usize,
    },
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// Whether `error`, or an error it was caused by, says the store cannot be reached (rather than
/// that a query was wrong): the caller may answer "try again shortly".
pub fn store_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        let sqlx = match error.downcast_ref::<StoreError>() {
            Some(StoreError::Query(sqlx) | StoreError::Open { source: sqlx, .. }) => Some(sqlx),
            Some(StoreError::Newer { .. }) => None,
            None => error.downcast_ref::<sqlx::Error>(),
        };
        if sqlx.is_some_and(|e| {
            matches!(
                e,
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed
            )
        }) {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Schema changes, oldest first, one list per implementation (each counts its own versions).
/// Never edit one that has shipped; append the same change to each list.
pub type Migrations = &'static [&'static [&'static str]];

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// A live (unexpired) value of `key` in `namespace`.
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a value, replacing any; with a time to live it disappears after that.
    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError>;

    /// Removes a key; true when a live value was there.
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError>;

    /// Deletes expired values; returns how many.
    async fn kv_sweep(&self) -> Result<u64, StoreError>;

    /// The live keys of `namespace` that start with `prefix`, in order.
    async fn kv_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// The uniqueId of a userId, created on first use. It is random, so it reveals nothing
    /// about the user, and stable, so clients can key their data on it.
    async fn unique_id(&self, user_id: &str) -> Result<String, StoreError>;

    /// The uniqueIds of several userIds, in their order, created on first use in one
    /// transaction: a provider-level channel set meets thousands of users at once, and one
    /// commit per user would queue its events behind the disk.
    async fn unique_ids(&self, user_ids: &[String]) -> Result<Vec<String>, StoreError>;

    /// The userId behind a uniqueId.
    async fn user_id(&self, unique_id: &str) -> Result<Option<String>, StoreError>;

    /// Until when (Unix ms) logins under `key` are refused; `None` when they are not.
    async fn login_locked_until(&self, key: &str) -> Result<Option<i64>, StoreError>;

    /// Every live lock: its key and until when (Unix ms) it holds.
    async fn login_locks(&self, now_ms: i64) -> Result<Vec<(String, i64)>, StoreError>;

    /// Deletes failure counts older than `forget_ms` that hold no lock; returns how many.
    async fn login_failures_sweep(&self, now_ms: i64, forget_ms: i64) -> Result<u64, StoreError>;

    /// Counts a failed login under `key` and returns the failures in a row so far. Failures
    /// older than `forget_ms` before `now_ms` no longer count.
    async fn login_failed(&self, key: &str, now_ms: i64, forget_ms: i64)
    -> Result<u32, StoreError>;

    /// Refuses logins under `key` until `until_ms`.
    async fn login_lock(&self, key: &str, until_ms: i64) -> Result<(), StoreError>;

    /// Forgets the failures under `key` (after a successful login).
    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError>;

    async fn session_insert(&self, session: &SessionRow) -> Result<(), StoreError>;

    /// The session with this token hash, unless it expired: idle longer than `idle_ms` or past
    /// its absolute expiry.
    async fn session_get(
        &self,
        token_hash: &[u8],
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Option<SessionRow>, StoreError>;

    /// Records activity on a session.
    async fn session_touch(&self, token_hash: &[u8], now_ms: i64) -> Result<(), StoreError>;

    /// Replaces a session's pinned XSP and sealed secrets (the XSP renewed its cookie, or the
    /// session moved to another XSP).
    async fn session_update(
        &self,
        token_hash: &[u8],
        xsp: Option<&str>,
        sealed: &[u8],
    ) -> Result<(), StoreError>;

    /// Ends a session; returns it if it existed.
    async fn session_delete(&self, token_hash: &[u8]) -> Result<Option<SessionRow>, StoreError>;

    /// Deletes expired sessions; returns whose they were, so their end can be announced.
    async fn session_sweep(
        &self,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Vec<SessionOwner>, StoreError>;

    /// Live sessions: not expired, not idle longer than `idle_ms`.
    async fn session_count(&self, now_ms: i64, idle_ms: i64) -> Result<u64, StoreError>;

    /// Live sessions per provider id.
    async fn session_count_by_provider(
        &self,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Vec<(String, u64)>, StoreError>;

    /// A user's live sessions.
    async fn session_count_of(
        &self,
        user_id: &str,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Ends every session of a user (after a password change), the user id compared without
    /// regard to ASCII case as BroadWorks compares it; returns whose they were.
    async fn session_delete_user(&self, user_id: &str) -> Result<Vec<SessionOwner>, StoreError>;

    async fn reset_insert(
        &self,
        token_hash: &[u8],
        user_id: &str,
        provider: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError>;

    /// Takes a live reset token: deletes it and returns its user id and provider. A token can
    /// be taken once; an expired one is never returned.
    async fn reset_take(
        &self,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Result<Option<(String, String)>, StoreError>;

    /// Deletes expired reset tokens; returns how many.
    async fn reset_sweep(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Takes lease `name` of `namespace` for `holder` until `until_ms`, unless another holder's
    /// is live at `now_ms`. `Some(ended)` when taken (`ended`: its work was asked to end, and the
    /// taker must end it), `None` when another instance holds it.
    async fn lease_acquire(
        &self,
        lease: &LeaseName<'_>,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<bool>, StoreError>;

    /// Extends every lease `holder` still holds (and has not released) to `until_ms` and returns
    /// them.
    async fn lease_renew(&self, holder: &str, until_ms: i64) -> Result<Vec<HeldLease>, StoreError>;

    /// Hands a lease over: any instance may take it at once. Until one does, it stays `holder`'s
    /// without being renewed.
    async fn lease_release(
        &self,
        lease: &LeaseName<'_>,
        holder: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Hands every lease of `holder` over at once (a graceful stop).
    async fn lease_release_all(&self, holder: &str, now_ms: i64) -> Result<u64, StoreError>;

    /// The leases `holder` holds, released ones not yet taken included, as (namespace, name).
    async fn leases_of(&self, holder: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Forgets a lease whose work is over.
    async fn lease_finish(&self, lease: &LeaseName<'_>, holder: &str) -> Result<(), StoreError>;

    /// Asks whoever holds a lease (or takes it next) to end its work.
    async fn lease_end(&self, lease: &LeaseName<'_>) -> Result<(), StoreError>;

    /// Leases of `namespace` whose names start with `prefix` that nobody holds at `now_ms`, at
    /// most `limit`, with whoever held each last (empty if nobody).
    async fn lease_claimable(
        &self,
        namespace: &str,
        prefix: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimableLease>, StoreError>;

    /// Leases whose work goes on (not asked to end), by namespace: the work to share out.
    async fn lease_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Records that `instance` lives until `until_ms`, and returns how many instances live at
    /// `now_ms` (this one included).
    async fn instance_heartbeat(
        &self,
        instance: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<u64, StoreError>;
}

/// A lease: a plugin's namespace and the name of the work it guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseName<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

/// A lease an instance still holds after a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub namespace: String,
    pub name: String,
    /// Someone asked for its work to end.
    pub ended: bool,
}

/// A lease nobody holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimableLease {
    pub name: String,
    pub ended: bool,
    /// The instance that held it last; empty when none did.
    pub last_holder: String,
    /// Since when nobody holds it (ms since the epoch).
    pub unowned_since_ms: i64,
}

/// Whose an ended session was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    pub user_id: String,
    pub provider: String,
}

/// A stored session, as the store keeps it (see `session` for what it means).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub token_hash: Vec<u8>,
    pub csrf_hash: Vec<u8>,
    pub user_id: String,
    pub provider: String,
    pub level: String,
    pub service_provider: Option<String>,
    pub group_id: Option<String>,
    pub xsp: Option<String>,
    pub sealed: Vec<u8>,
    pub created_at_ms: i64,
    pub last_seen_ms: i64,
    pub expires_at_ms: i64,
}

impl SessionRow {
    /// A row as either database returns it (`SELECT *` or `RETURNING *`).
    pub(super) fn from_row<'r, R>(row: &'r R) -> Result<Self, sqlx::Error>
    where
        R: sqlx::Row,
        &'static str: sqlx::ColumnIndex<R>,
        Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(Self {
            token_hash: row.try_get("token_hash")?,
            csrf_hash: row.try_get("csrf_hash")?,
            user_id: row.try_get("user_id")?,
            provider: row.try_get("provider")?,
            level: row.try_get("level")?,
            service_provider: row.try_get("service_provider")?,
            group_id: row.try_get("group_id")?,
            xsp: row.try_get("xsp")?,
            sealed: row.try_get("sealed")?,
            created_at_ms: row.try_get("created_at_ms")?,
            last_seen_ms: row.try_get("last_seen_ms")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
        })
    }
}

impl sqlx::FromRow<'_, sqlx::sqlite::SqliteRow> for SessionRow {
    fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Self, sqlx::Error> {
        Self::from_row(row)
    }
}

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for SessionRow {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Self::from_row(row)
    }
}

impl std::fmt::Debug for SessionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRow")
            .field("user_id", &self.user_id)
            .field("provider", &self.provider)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

/// The time as the store records it: Unix milliseconds.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration as the store records it, in milliseconds (saturating).
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The owners of deleted session rows, as `RETURNING user_id, provider` gives them.
pub(super) fn owners(rows: Vec<(String, String)>) -> Vec<SessionOwner> {
    rows.into_iter()
        .map(|(user_id, provider)| SessionOwner { user_id, provider })
        .collect()
}

pub(super) fn held_leases(rows: Vec<(String, String, bool)>) -> Vec<HeldLease> {
    rows.into_iter()
        .map(|(namespace, name, ended)| HeldLease {
            namespace,
            name,
            ended,
        })
        .collect()
}

pub(super) fn claimable_leases(rows: Vec<(String, bool, String, i64)>) -> Vec<ClaimableLease> {
    rows.into_iter()
        .map(
            |(name, ended, last_holder, unowned_since_ms)| ClaimableLease {
                name,
                ended,
                last_holder,
                unowned_since_ms,
            },
        )
        .collect()
}

pub(super) fn counts(rows: Vec<(String, i64)>) -> Vec<(String, u64)> {
    rows.into_iter()
        .map(|(key, count)| (key, u64::try_from(count).unwrap_or(0)))
        .collect()
}
