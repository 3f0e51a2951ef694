//! The session authority: creating, resuming, caching and ending login sessions.
//!
//! A session is named by an opaque random token (256 bits) that travels only in an `HttpOnly`,
//! `SameSite=Strict` cookie (and `Secure` behind TLS), with a second random token for CSRF
//! that the client echoes in a header. The store keeps SHA-256 hashes of both, so a copy of the
//! database names no live session; what must be replayed later (the user's password for
//! XSI-Events, the XSP's session cookies) is sealed under the server key and bound to the user
//! and the session. Sessions live in the store, so they survive a restart and are shared by
//! instances on one database. They end when idle too long, at an absolute limit, or at logout.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use xsigate_plugin_sdk::LoginLevel;

use crate::state::Shared;
use crate::state::seal::{SealError, SealKey, Sealer};
use crate::state::session::{BoundSession, Scope, Session, SessionSecrets, cookie_key};
use crate::state::store::{
    SessionOwner, SessionRow, Store, StoreError, millis, store_unavailable, unix_ms,
};
use crate::state::token::{DigestHashing, new_token, token_hash, well_formed};
use crate::wire::error::ErrorCode;
use crate::wire::headers::SESSION_COOKIE;

/// Activity is recorded at most this often per session, to spare the store a write per request.
const TOUCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long a session read from the store serves proxied requests before it is read again. A
/// logout or password reset on this instance takes effect at once; on another instance sharing
/// the store, within this time.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// Ten years in milliseconds: longer than any idle time a cached session may serve for.
const FAR_END_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// Sessions kept in memory; past this, stale entries go, and then everything.
const CACHE_CAPACITY: usize = 200_000;

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: String,
    pub provider: String,
    pub level: LoginLevel,
    pub scope: Scope,
    /// The XSP the login was answered by, which later requests are pinned to.
    pub xsp: Option<String>,
    pub secrets: SessionSecrets,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("a stored session is unreadable: {0}")]
    Corrupt(String),
}

#[derive(Debug)]
struct Cached {
    session: Arc<Session>,
    read_at: Instant,
    /// The session's absolute end on the same clock as `read_at`, so that a look-up reads one
    /// clock instead of two (it is on every proxied request's path).
    ends: Instant,
}

/// A new session and its tokens, which exist in clear only here, to be sent to the client.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub csrf: String,
    pub session: Session,
}

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
        }
    }
}

/// The sealing context: the sealed secrets open only for this user's this session.
fn context(user_id: &str, token_hash: &[u8]) -> Vec<u8> {
    let mut context = b"session\0".to_vec();
    context.extend_from_slice(user_id.as_bytes());
    context.push(0);
    context.extend_from_slice(token_hash);
    context
}

/// The store namespace of channel-set owners; `/` keeps it apart from every plugin's.
const CHANNEL_SETS: &str = "xsigate/channel-sets";
/// How long a channel set stays its user's after its last channel was opened: longer than any
/// channel lives (BroadWorks caps `expires` at hours), so a set is never up for grabs while in use.
pub const CHANNEL_SET_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The session store.
pub struct Sessions {
    store: Arc<dyn Store>,
    /// Where store work runs: never on a proxy thread.
    runtime: tokio::runtime::Handle,
    key: SealKey,
    policy: SessionPolicy,
    /// Sessions of proxied requests by token hash, so that a request costs no store read.
    cache: RwLock<HashMap<Vec<u8>, Cached, DigestHashing>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(shared: &Shared, policy: SessionPolicy) -> Result<Self, SealError> {
        Self::with_parts(
            Arc::clone(&shared.store),
            shared.runtime.clone(),
            &shared.sealer,
            policy,
        )
    }

    fn with_parts(
        store: Arc<dyn Store>,
        runtime: tokio::runtime::Handle,
        sealer: &Sealer,
        policy: SessionPolicy,
    ) -> Result<Self, SealError> {
        Ok(Self {
            store,
            runtime,
            key: sealer.key("sessions")?,
            policy,
            cache: RwLock::new(HashMap::default()),
        })
    }

    pub async fn create(&self, new: NewSession) -> Result<Issued, SessionError> {
        let (token, csrf) = (new_token(), new_token());
        let hashed = token_hash(&token);
        let plain =
            serde_json::to_vec(&new.secrets).map_err(|e| SessionError::Corrupt(e.to_string()))?;
        let sealed = self.key.seal(&context(&new.user_id, &hashed), &plain)?;
        let now = unix_ms();
        let row = SessionRow {
            token_hash: hashed,
            csrf_hash: token_hash(&csrf),
            user_id: new.user_id,
            provider: new.provider,
            level: new.level.as_str().to_owned(),
            service_provider: new.scope.service_provider,
            group_id: new.scope.group,
            xsp: new.xsp,
            sealed,
            created_at_ms: now,
            last_seen_ms: now,
            expires_at_ms: now.saturating_add(millis(self.policy.absolute)),
        };
        self.store.session_insert(&row).await?;
        let session = self.open(row, new.secrets)?;
        Ok(Issued {
            token,
            csrf,
            session,
        })
    }

    fn open(&self, row: SessionRow, secrets: SessionSecrets) -> Result<Session, SessionError> {
        let level = LoginLevel::parse(&row.level)
            .ok_or_else(|| SessionError::Corrupt(format!("unknown level `{}`", row.level)))?;
        Ok(Session {
            user_id: row.user_id,
            provider: row.provider,
            level,
            scope: Scope {
                service_provider: row.service_provider,
                group: row.group_id,
            },
            xsp: row.xsp,
            secrets,
            created_at_ms: row.created_at_ms,
            expires_at_ms: row.expires_at_ms,
            unique_id: None,
            csrf_hash: row.csrf_hash,
            token_hash: row.token_hash,
        })
    }

    fn unseal(&self, row: SessionRow) -> Result<Session, SessionError> {
        let plain = self
            .key
            .open(&context(&row.user_id, &row.token_hash), &row.sealed)?;
        let secrets: SessionSecrets =
            serde_json::from_slice(&plain).map_err(|e| SessionError::Corrupt(e.to_string()))?;
        self.open(row, secrets)
    }

    /// The live session a cookie token names, recording the activity.
    pub async fn resume(&self, token: &str) -> Result<Option<Session>, SessionError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let hashed = token_hash(token);
        let now = unix_ms();
        let Some(row) = self
            .store
            .session_get(&hashed, now, millis(self.policy.idle))
            .await?
        else {
            return Ok(None);
        };
        if now - row.last_seen_ms >= millis(TOUCH_INTERVAL) {
            self.store.session_touch(&hashed, now).await?;
        }
        self.unseal(row).map(Some)
    }

    /// The live session of a proxied request: from memory when it was read from the store
    /// less than [`CACHE_TTL`] ago, else from the store (recording the activity).
    pub async fn resume_cached(&self, token: &str) -> Result<Option<Arc<Session>>, SessionError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let hashed = token_hash(token);
        if let Some(session) = self.cached(&hashed) {
            return Ok(Some(session));
        }
        let Some(mut session) = self.resume(token).await? else {
            self.forget(&hashed);
            return Ok(None);
        };
        session.unique_id = Some(self.store.unique_id(&session.user_id).await?);
        let session = Arc::new(session);
        self.remember(hashed, Arc::clone(&session));
        Ok(Some(session))
    }

    fn cached(&self, hashed: &[u8]) -> Option<Arc<Session>> {
        self.cached_within(hashed, CACHE_TTL)
    }

    /// The session in memory if it was read from the store less than `age` ago and has not
    /// reached its absolute end.
    fn cached_within(&self, hashed: &[u8], age: Duration) -> Option<Arc<Session>> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let entry = cache.get(hashed)?;
        let now = Instant::now();
        (now.saturating_duration_since(entry.read_at) < age && now < entry.ends)
            .then(|| Arc::clone(&entry.session))
    }

    fn remember(&self, hashed: Vec<u8>, session: Arc<Session>) {
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, entry| entry.read_at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        let read_at = Instant::now();
        // Past any age a look-up allows, an end is as good as never (and cannot overflow).
        let left = session
            .expires_at_ms
            .saturating_sub(unix_ms())
            .clamp(0, FAR_END_MS);
        cache.insert(
            hashed,
            Cached {
                ends: read_at + Duration::from_millis(left.unsigned_abs()),
                session,
                read_at,
            },
        );
    }

    fn forget(&self, hashed: &[u8]) {
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hashed);
    }

    /// The live session of a proxied request: from memory when fresh, else read on the state
    /// runtime, so that store work never runs on a proxy thread.
    /// A store that cannot be reached is [`ErrorCode::StoreUnavailable`] (503: try again), any
    /// other failure [`ErrorCode::Internal`].
    /// `hashed`: the token's digest (`state::token::token_digest`), which the caller may have
    /// kept from the connection's previous request.
    pub async fn resume_proxied(
        self: &Arc<Self>,
        token: &str,
        hashed: &[u8],
    ) -> Result<Option<Arc<Session>>, ErrorCode> {
        if !well_formed(token) {
            return Ok(None);
        }
        if let Some(session) = self.cached(hashed) {
            return Ok(Some(session));
        }
        let this = Arc::clone(self);
        let owned = token.to_owned();
        match self
            .runtime
            .spawn(async move { this.resume_cached(&owned).await })
            .await
        {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(e)) if store_unavailable(&e) => {
                // While the store is away a session this instance read within its idle time
                // goes on serving: no logout elsewhere can have been recorded meanwhile either.
                if let Some(session) = self.cached_within(hashed, self.policy.idle) {
                    return Ok(Some(session));
                }
                tracing::warn!(error = %e, "the store cannot be reached to read a session");
                Err(ErrorCode::StoreUnavailable)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading a session failed");
                Err(ErrorCode::Internal)
            }
            Err(_) => Err(ErrorCode::Internal),
        }
    }

    /// Whether `user_id` may open a channel in the XSI-Events channel set `set_id` of
    /// `provider`: a set belongs to the session user who first used it (kept for
    /// [`CHANNEL_SET_LIFETIME`] after its last use), as BroadWorks binds it to the user who made
    /// it. Run on the state runtime. `Err` when the store could not say.
    pub async fn claim_channel_set(
        self: &Arc<Self>,
        provider: &str,
        set_id: &str,
        user_id: &str,
    ) -> Result<bool, ()> {
        let store = Arc::clone(&self.store);
        let key = format!("{provider}/{set_id}");
        let user = user_id.to_owned();
        let claimed = self.runtime.spawn(async move {
            if let Some(owner) = store.kv_get(CHANNEL_SETS, &key).await? {
                if !String::from_utf8_lossy(&owner).eq_ignore_ascii_case(&user) {
                    return Ok(false);
                }
            }
            store
                .kv_put(
                    CHANNEL_SETS,
                    &key,
                    user.as_bytes(),
                    Some(CHANNEL_SET_LIFETIME),
                )
                .await?;
            Ok::<_, StoreError>(true)
        });
        match claimed.await {
            Ok(Ok(claimed)) => Ok(claimed),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading a channel set's owner failed");
                Err(())
            }
            Err(_) => Err(()),
        }
    }

    /// Keeps the XSP state the filters of a proxied request changed: in the session cache at
    /// once (the client's next request may follow immediately), in the store on the state
    /// runtime.
    pub fn keep_xsp_state(&self, bound: &BoundSession) {
        let provider = bound.session.provider.clone();
        match self.update_xsp_state(bound) {
            Ok(write) => {
                self.runtime.spawn(async move {
                    if let Err(e) = write.await {
                        tracing::warn!(provider = %provider, error = %e, "storing a session's XSP cookie failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(provider = %provider, error = %e, "keeping a session's XSP cookie failed");
            }
        }
    }

    /// Keeps what the filters of a proxied request changed: the session's XSP and its cookie
    /// for the request's XSI application. The cache has it when this returns, so the client's
    /// next request rides on the new cookie; the store has it once the returned write is done.
    fn update_xsp_state(
        &self,
        bound: &BoundSession,
    ) -> Result<impl Future<Output = Result<(), StoreError>> + Send + 'static, SessionError> {
        let old = &bound.session;
        // Another request may have changed the session since this one read it.
        let current = self
            .cached(&old.token_hash)
            .unwrap_or_else(|| Arc::clone(old));
        let mut secrets = current.secrets.clone();
        if let Some(app) = bound.app {
            match &bound.xsp_cookie {
                Some(cookie) => secrets
                    .xsp_cookies
                    .insert(cookie_key(app).to_owned(), cookie.clone()),
                None => secrets.xsp_cookies.remove(cookie_key(app)),
            };
        }
        let plain =
            serde_json::to_vec(&secrets).map_err(|e| SessionError::Corrupt(e.to_string()))?;
        let sealed = self
            .key
            .seal(&context(&old.user_id, &old.token_hash), &plain)?;
        let updated = Session {
            xsp: bound.xsp.clone(),
            secrets,
            ..(*current).clone()
        };
        self.remember(old.token_hash.clone(), Arc::new(updated));
        let store = Arc::clone(&self.store);
        let token_hash = old.token_hash.clone();
        let xsp = bound.xsp.clone();
        Ok(async move {
            store
                .session_update(&token_hash, xsp.as_deref(), &sealed)
                .await
        })
    }

    /// Ends every session of a user (their password changed), the user id in any case;
    /// returns whose they were. No request of this instance rides on them once this returns.
    pub async fn end_all_of(&self, user_id: &str) -> Result<Vec<SessionOwner>, SessionError> {
        self.forget_user(user_id);
        let ended = self.store.session_delete_user(user_id).await?;
        // A request that read the store meanwhile may have cached one again.
        self.forget_user(user_id);
        Ok(ended)
    }

    fn forget_user(&self, user_id: &str) {
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, entry| !entry.session.user_id.eq_ignore_ascii_case(user_id));
    }

    /// Ends the session a token names; returns it if it was live.
    pub async fn end(&self, token: &str) -> Result<Option<Session>, SessionError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let hashed = token_hash(token);
        self.forget(&hashed);
        match self.store.session_delete(&hashed).await? {
            Some(row) => self.unseal(row).map(Some),
            None => Ok(None),
        }
    }

    /// How many sessions are live.
    pub async fn live(&self) -> Result<u64, StoreError> {
        self.store
            .session_count(unix_ms(), millis(self.policy.idle))
            .await
    }

    /// How many sessions are live, per provider id.
    pub async fn live_by_provider(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.store
            .session_count_by_provider(unix_ms(), millis(self.policy.idle))
            .await
    }

    /// How many live sessions a user has.
    pub async fn live_of(&self, user_id: &str) -> Result<u64, StoreError> {
        self.store
            .session_count_of(user_id, unix_ms(), millis(self.policy.idle))
            .await
    }

    /// How often expired sessions should be looked for: often enough that their end is
    /// announced within half the idle limit, and at most every 30 seconds.
    pub fn sweep_interval(&self) -> Duration {
        (self.policy.idle / 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Deletes expired sessions; returns whose they were.
    pub async fn sweep(&self) -> Result<Vec<SessionOwner>, StoreError> {
        self.store
            .session_sweep(unix_ms(), millis(self.policy.idle))
            .await
    }

    /// Whether a presented CSRF token is the session's. Hashes of equal length are compared,
    /// so timing says nothing about the token.
    pub fn csrf_matches(session: &Session, presented: &str) -> bool {
        well_formed(presented) && token_hash(presented) == session.csrf_hash
    }

    /// The `Set-Cookie` value that gives the client its session.
    pub fn cookie(&self, token: &str, secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!(
            "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            self.policy.absolute.as_secs()
        )
    }

    /// The `Set-Cookie` value that removes it.
    pub fn removal_cookie(secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::state::store::SqliteStore;

    fn with_sessions(policy: SessionPolicy, test: impl AsyncFnOnce(Sessions, &std::path::Path)) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
            let sealer = Sealer::from_material(&[9u8; 32]);
            let runtime = tokio::runtime::Handle::current();
            let sessions = Sessions::with_parts(store, runtime, &sealer, policy).unwrap();
            test(sessions, dir.path()).await;
        });
    }

    fn alice() -> NewSession {
        NewSession {
            user_id: "alice@acme.example".to_owned(),
            provider: "acme".to_owned(),
            level: LoginLevel::User,
            scope: Scope::default(),
            xsp: Some("xsp2".to_owned()),
            secrets: SessionSecrets {
                password: Some("correct horse battery".to_owned()),
                xsp_cookies: BTreeMap::from([(
                    "xsi-actions".to_owned(),
                    "JSESSIONID=abc123".to_owned(),
                )]),
            },
        }
    }

    #[test]
    fn an_administrator_session_keeps_its_level_and_scope() {
        with_sessions(SessionPolicy::default(), async |sessions, _| {
            let admin = NewSession {
                user_id: "sales-admin@acme.example".to_owned(),
                level: LoginLevel::Group,
                scope: Scope {
                    service_provider: Some("acme".to_owned()),
                    group: Some("sales".to_owned()),
                },
                ..alice()
            };
            let issued = sessions.create(admin.clone()).await.unwrap();
            let session = sessions.resume(&issued.token).await.unwrap().unwrap();
            assert_eq!(session.level, LoginLevel::Group);
            assert_eq!(session.scope, admin.scope);
        });
    }

    #[test]
    fn a_session_resumes_by_its_token_and_ends_at_logout() {
        with_sessions(SessionPolicy::default(), async |sessions, _| {
            let issued = sessions.create(alice()).await.unwrap();
            assert!(well_formed(&issued.token));
            assert_ne!(issued.token, issued.csrf);
            let session = sessions.resume(&issued.token).await.unwrap().unwrap();
            assert_eq!(session.user_id, "alice@acme.example");
            assert_eq!(session.level, LoginLevel::User);
            assert_eq!(session.xsp.as_deref(), Some("xsp2"));
            assert_eq!(session.secrets, alice().secrets);
            assert!(Sessions::csrf_matches(&session, &issued.csrf));
            assert!(!Sessions::csrf_matches(&session, &issued.token));
            assert!(!Sessions::csrf_matches(&session, ""));

            assert!(sessions.resume(&new_token()).await.unwrap().is_none());
            assert!(sessions.resume("not a token").await.unwrap().is_none());
            let ended = sessions.end(&issued.token).await.unwrap().unwrap();
            assert_eq!(ended.user_id, "alice@acme.example");
            assert!(sessions.resume(&issued.token).await.unwrap().is_none());
            assert!(sessions.end(&issued.token).await.unwrap().is_none());
        });
    }

    #[test]
    fn sessions_expire_when_idle_and_at_their_absolute_limit() {
        let idle = SessionPolicy {
            idle: Duration::from_millis(50),
            absolute: Duration::from_secs(60),
        };
        with_sessions(idle, async |sessions, _| {
            let issued = sessions.create(alice()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(120)).await;
            assert!(sessions.resume(&issued.token).await.unwrap().is_none());
            assert_eq!(
                sessions.sweep().await.unwrap(),
                [SessionOwner {
                    user_id: "alice@acme.example".to_owned(),
                    provider: "acme".to_owned(),
                }]
            );
            assert!(sessions.sweep().await.unwrap().is_empty());
        });
        let short = SessionPolicy {
            idle: Duration::from_secs(60),
            absolute: Duration::from_millis(50),
        };
        with_sessions(short, async |sessions, _| {
            let issued = sessions.create(alice()).await.unwrap();
            assert!(sessions.resume(&issued.token).await.unwrap().is_some());
            tokio::time::sleep(Duration::from_millis(120)).await;
            assert!(sessions.resume(&issued.token).await.unwrap().is_none());
        });
    }

    #[test]
    fn the_database_holds_no_password_token_or_xsp_cookie() {
        with_sessions(SessionPolicy::default(), async |sessions, dir| {
            let issued = sessions.create(alice()).await.unwrap();
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(dir).unwrap() {
                bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
            }
            let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            assert!(
                contains(b"alice@acme.example"),
                "the test reads the right files"
            );
            for secret in [
                b"correct horse battery".as_slice(),
                b"abc123",
                issued.token.as_bytes(),
                issued.csrf.as_bytes(),
            ] {
                assert!(!contains(secret), "{}", String::from_utf8_lossy(secret));
            }
        });
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_tls() {
        with_sessions(SessionPolicy::default(), async |sessions, _| {
            let cookie = sessions.cookie("t", true);
            assert_eq!(
                cookie,
                "xsigate_session=t; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
            );
            assert!(!sessions.cookie("t", false).contains("Secure"));
            assert!(Sessions::removal_cookie(false).contains("Max-Age=0"));
        });
    }
}
