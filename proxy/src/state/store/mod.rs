//! The store: what must survive a restart and what instances share, behind one trait with two
//! implementations of the same schema.
//!
//! [`SqliteStore`], the embedded default, is a file in `data_dir` for one instance;
//! [`PostgresStore`] is a PostgreSQL database that several instances share, so that any of them
//! serves any session. Both hold the userId -> uniqueId map, sessions, reset tokens, login
//! failure counts and plugins' namespaced key-value data. Every query is parameterised; values
//! are opaque bytes. The schema is versioned: each implementation's migrations run in order,
//! once each, and a database written by a newer xsigate is refused rather than misread.

mod contract;
mod postgres;
mod sqlite;

pub use contract::{
    ClaimableLease, HeldLease, LeaseName, Migrations, SessionOwner, SessionRow, Store, StoreError,
    millis, store_unavailable, unix_ms,
};
pub use postgres::{PostgresSettings, PostgresStore, PostgresTls};
pub use sqlite::{DATABASE_FILE, SqliteStore};
