//! The store on PostgreSQL: the same operations and the same contract as the sled [`Store`]
//! (docs/store.md), on a database that several daemons, the CLI and the API share.
//!
//! - [`schema`]: the tables, as embedded versioned migrations applied when a store opens.
//! - [`pool`]: connection settings (URL, password from outside it, TLS), the connection pool.
//! - [`write`]: [`PgStore::apply`], a [`Batch`] as one transaction.
//! - [`read`]: the lookups and walks.
//! - [`shared`]: what several daemons on one database need: due work claimed under leases
//!   (`FOR UPDATE SKIP LOCKED`), a wake-up channel (`LISTEN/NOTIFY`), and the inbox watcher's
//!   lease (an advisory lock).
//!
//! The API is synchronous, like sled's: it blocks the calling thread on the network. Inside a
//! tokio runtime call it as the daemon calls sled, within `tokio::task::block_in_place` (or
//! `spawn_blocking`); called straight from async code it panics, as the synchronous `postgres`
//! client runs its own small runtime per connection.
//!
//! Every handle has an owner name (unique per open unless set with [`PgStore::with_owner`]): the
//! leases it takes are in that name, and a batch may only move an enrollment no one else holds.
//!
//! [`Store`]: super::SledStore

mod pool;
pub mod read;
pub mod schema;
pub mod shared;
// Also for the integration tests (tests/shared_store.rs), which start daemons on it.
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
mod write;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use postgres::Row;
use postgres::types::{FromSql, Json, ToSql};
use serde::de::DeserializeOwned;

use super::StoreError;
use crate::secret::Secret;
use crate::webhooks::Routes;

use self::pool::{Conn, Manager};
pub use self::pool::{Session, Settings};
pub use self::read::DEPTHS_EVERY;
pub use self::shared::{Waker, WatcherLease};

/// Connections a store keeps open at most: the daemon's scheduler, sender, inbox watcher,
/// webhooks and HTTP doors each borrow one at a time.
pub const DEFAULT_POOL_SIZE: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the store URL is not valid: {detail}")]
    Url { detail: String },
    #[error("cannot connect to the database: {}", connect_detail(.0))]
    Connect(#[source] postgres::Error),
    #[error("database error: {}", database_detail(.0))]
    Database(#[from] postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] r2d2::Error),
    #[error(
        "the database {database} holds tables but no nurture_migrations table: it is not a nurture store; choose an empty database"
    )]
    Foreign { database: String },
    #[error(
        "the database {database} has layout version {found}, but this build of nurture reads version {}: it was written by a newer nurture; upgrade nurture",
        schema::VERSION
    )]
    Newer { database: String, found: i32 },
    #[error("migration {version} ({name}) failed: {error}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        error: postgres::Error,
    },
    #[error(
        "the enrollment of {lead} in `{workflow}` is held by another daemon ({owner}) until {until}: the batch changed nothing"
    )]
    Leased {
        workflow: String,
        lead: String,
        owner: String,
        until: DateTime<Utc>,
    },
    #[error(transparent)]
    Record(#[from] StoreError),
}

pub type Result<T> = std::result::Result<T, PgError>;

/// The store on PostgreSQL. Cheap to clone: clones share the pool (and the owner name).
#[derive(Clone)]
pub struct PgStore {
    pool: r2d2::Pool<Manager>,
    settings: Settings,
    /// Who this handle's leases are in the name of.
    owner: Arc<str>,
    /// The webhook subscriptions batches route journal lines by (none by default).
    routes: Arc<Routes>,
    /// How long a claim on due work holds ([`PgStore::claim_due`] through the daemon): the
    /// longest a batch may take, and how long the others wait for a daemon that died.
    lease: Duration,
    /// The queues' depths as last counted ([`PgStore::count_depths`]), for `/metrics`.
    depths: Arc<std::sync::Mutex<Option<crate::store::depths::Snapshot>>>,
}

/// How long a daemon's claims hold by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

impl PgStore {
    /// Opens the store in the database at `url` (`postgres://user@host:port/db`, add
    /// `?sslmode=require` for TLS), with `password` read from a file or a variable, and brings
    /// its tables up to date.
    pub fn open(url: &str, password: Option<&Secret>) -> Result<PgStore> {
        PgStore::open_with(Settings::new(url, password, "")?, DEFAULT_POOL_SIZE)
    }

    /// Opens the store with these settings and at most `pool_size` connections.
    pub fn open_with(settings: Settings, pool_size: u32) -> Result<PgStore> {
        let mut client = settings.connect()?;
        schema::migrate(&mut client, &settings.database())?;
        drop(client);
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(30))
            // A connection the server closed is noticed when borrowed, not used.
            .test_on_check_out(false)
            .build(Manager(settings.clone()))?;
        Ok(PgStore {
            pool,
            settings,
            owner: unique_owner().into(),
            routes: Arc::default(),
            lease: DEFAULT_LEASE,
            depths: Arc::default(),
        })
    }

    /// This store, queueing a webhook delivery for every journal line `routes` subscribe to
    /// (as [`super::SledStore::with_webhooks`]).
    pub fn with_webhooks(self, routes: Routes) -> PgStore {
        PgStore {
            routes: Arc::new(routes),
            ..self
        }
    }

    /// This store, taking leases in the name of `owner` (a daemon's name in logs and in the
    /// `enrollments.lease_owner` column).
    pub fn with_owner(self, owner: &str) -> PgStore {
        PgStore {
            owner: owner.into(),
            ..self
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// This store, its claims holding for `lease`.
    pub fn with_lease(self, lease: Duration) -> PgStore {
        PgStore { lease, ..self }
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// A connection from the pool.
    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>> {
        Ok(self.pool.get()?)
    }

    /// Runs `sql` (prepared once per connection) and returns its rows.
    fn rows(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let mut conn = self.conn()?;
        let Conn { client, statements } = &mut *conn;
        let statement = statements.get(&mut **client, sql)?;
        Ok(client.query(&statement, params)?)
    }
}

/// A name for this process's leases: host, process id and a counter, so two handles opened by
/// one process (tests, benchmarks) are two owners too.
fn unique_owner() -> String {
    static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!(
        "{}:{}:{}",
        host.trim(),
        std::process::id(),
        OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Why a connection failed: the client's own text ("error connecting to server") names no
/// cause, its source does (connection refused, a timeout, a refused password).
fn connect_detail(error: &postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// What the server said (the client's own text is only "db error").
fn database_detail(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// A `LIMIT` for `limit` rows: `usize::MAX` (everything) would wrap to a negative `bigint`.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// `at` to the millisecond: queue times are kept to the millisecond, as the sled store's keys
/// keep them, so both order, compare and return them alike.
fn millis(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(at.timestamp_millis())
        .single()
        .unwrap_or(at)
}

/// Column `index` of `row`, decoded as `what`: a value that does not decode is reported as a
/// damaged record, as the sled store reports one.
fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize, what: &'static str) -> Result<T> {
    row.try_get(index).map_err(|error| {
        PgError::Record(StoreError::Corrupt {
            what,
            detail: error.to_string(),
        })
    })
}

/// The JSON record in column `index` of `row`.
fn record<T: DeserializeOwned>(row: &Row, index: usize, what: &'static str) -> Result<T> {
    column::<Json<T>>(row, index, what).map(|json| json.0)
}
