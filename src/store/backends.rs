//! [`Store`]: the one store the engine, the daemon and the CLI speak to, on either backend:
//! the embedded sled store ([`SledStore`], the default, which needs nothing) or a PostgreSQL
//! database ([`PgStore`], chosen with `[store] url`) that several daemons share.
//!
//! Both keep the same contract (docs/store.md, tested once on both in `contract`). What only
//! one of them has is said here, per operation: the sled store keeps the `status` counters as
//! it writes and leaves a snapshot when closed, while on PostgreSQL the figures are counted
//! from the records when asked (seconds per million leads) and backups are PostgreSQL's own.

use std::path::Path;

use chrono::{DateTime, Utc};
use tracing::warn;

use super::backup::{BackupError, Summary};
use super::depths::Snapshot as Depths;
use super::postgres::{PgError, PgStore, Settings};
use super::{
    Batch, Counters, Delivery, Event, Merged, MessageRecord, OutboxEmail, Recounted, Result,
    SledStore, StoreError,
};
use crate::config::StoreConfig;
use crate::engine::Enrollment;
use crate::lead::Lead;
use crate::webhooks::Routes;

/// The store. Cheap to clone: every clone is the same open store.
#[derive(Clone)]
pub enum Store {
    // Boxed, both: the handles are a few hundred bytes, and a store is moved around a lot.
    Sled(Box<SledStore>),
    Postgres(Box<PgStore>),
}

/// The same call on either backend, its PostgreSQL error made a [`StoreError`].
macro_rules! either {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sled(store) => store.$method($($arg),*),
            Store::Postgres(store) => Ok(blocking(|| store.$method($($arg),*))?),
        }
    };
}

/// The same walk on either backend, as one boxed iterator.
macro_rules! walk {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sled(store) => Box::new(store.$method($($arg),*)),
            Store::Postgres(store) => {
                let mut pages = store.$method($($arg),*);
                Box::new(std::iter::from_fn(move || blocking(|| pages.next())).map(|item| Ok(item?)))
            }
        }
    };
}

/// Runs a call of the synchronous PostgreSQL client, which blocks its thread on the network
/// and runs a small runtime of its own: from a tokio worker it must leave the runtime first
/// (`block_in_place`), so the daemon's async code can call the store as it calls sled.
fn blocking<T: Send>(call: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Err(_) => call(),
        Ok(RuntimeFlavor::CurrentThread) => {
            std::thread::scope(|scope| scope.spawn(call).join().expect("a store call panicked"))
        }
        Ok(_) => tokio::task::block_in_place(call),
    }
}

/// A walk over a store's records, in key order.
pub type Walk<'a, T> = Box<dyn Iterator<Item = Result<T>> + 'a>;

impl Store {
    /// Opens (or creates) the sled store in `path` with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store> {
        SledStore::open(path, cache_bytes).map(|store| Store::Sled(Box::new(store)))
    }

    /// Opens the store `[store]` configures: the PostgreSQL database at `url` when it is set
    /// (its password from `password_file` or `password_env`), else the sled store in `path`.
    pub fn open_configured(config: &StoreConfig) -> Result<Store> {
        if config.url.is_empty() {
            let cache = super::cache::cache_bytes(config.cache_mb, &config.path);
            tracing::debug!(cache_mib = cache >> 20, path = %config.path.display(), "sled page cache");
            return Store::open(&config.path, cache);
        }
        let password = crate::secret::read("store", &config.password_file, &config.password_env)
            .map_err(|detail| StoreError::from(PgError::Url { detail }))?;
        let settings = Settings::new(&config.url, password.as_ref(), &config.ca_file)?;
        let store = blocking(|| PgStore::open_with(settings, super::postgres::DEFAULT_POOL_SIZE))?
            .with_lease(std::time::Duration::from_secs(config.lease_seconds));
        Ok(Store::Postgres(Box::new(store)))
    }

    /// Where the store is, for logs: the sled folder, or the database's name.
    pub fn describe(config: &StoreConfig) -> String {
        if config.url.is_empty() {
            config.path.display().to_string()
        } else {
            // The URL holds no password (refused when opening); it may name a user and host.
            config.url.clone()
        }
    }

    /// The PostgreSQL store, when this is one: what several daemons sharing it need (claims,
    /// wake-ups, the inbox watcher's lease).
    pub fn shared(&self) -> Option<&PgStore> {
        match self {
            Store::Sled(_) => None,
            Store::Postgres(store) => Some(store),
        }
    }

    /// This store, queueing a webhook delivery for every journal line `routes` subscribe to.
    pub fn with_webhooks(self, routes: Routes) -> Store {
        match self {
            Store::Sled(store) => Store::Sled(Box::new(store.with_webhooks(routes))),
            Store::Postgres(store) => Store::Postgres(Box::new(store.with_webhooks(routes))),
        }
    }

    /// Only for the engine benchmark (see [`SledStore::without_counters_for_benchmark`]).
    #[doc(hidden)]
    pub fn without_counters_for_benchmark(self) -> Store {
        match self {
            Store::Sled(store) => Store::Sled(Box::new(store.without_counters_for_benchmark())),
            postgres => postgres,
        }
    }

    /// Leads the upgrade run by this open merged (a sled store written by an older nurture).
    pub fn merged(&self) -> &[Merged] {
        match self {
            Store::Sled(store) => store.merged(),
            Store::Postgres(_) => &[],
        }
    }

    pub fn flush(&self) -> Result<()> {
        either!(self.flush())
    }

    /// Closes the store for this process (sled: leaves the snapshot `status` reads; on
    /// PostgreSQL every commit is already durable and nothing is left behind).
    pub fn close(&self) -> Result<()> {
        match self {
            Store::Sled(store) => store.close(),
            Store::Postgres(_) => Ok(()),
        }
    }

    pub fn apply(&self, batch: &Batch) -> Result<()> {
        either!(self.apply(batch))
    }

    pub fn lead(&self, email: &str) -> Result<Option<Lead>> {
        either!(self.lead(email))
    }

    pub fn leads(&self) -> Walk<'_, Lead> {
        walk!(self.leads())
    }

    /// Up to `limit` leads in address order, after the lead `after` (from the start if `None`).
    pub fn leads_after(&self, after: Option<&str>, limit: usize) -> Walk<'_, Lead> {
        match self {
            Store::Sled(store) => Box::new(store.leads_after(after, limit)),
            Store::Postgres(store) => match blocking(|| store.leads_after(after, limit)) {
                Ok(leads) => Box::new(leads.into_iter().map(Ok)),
                Err(error) => Box::new(std::iter::once(Err(error.into()))),
            },
        }
    }

    /// How many leads the store holds (0, logged, if the database cannot say).
    pub fn lead_count(&self) -> usize {
        match self {
            Store::Sled(store) => store.lead_count(),
            Store::Postgres(store) => blocking(|| store.lead_count()).unwrap_or_else(|error| {
                warn!(%error, "cannot count the leads");
                0
            }),
        }
    }

    pub fn enrollment(&self, workflow: &str, email: &str) -> Result<Option<Enrollment>> {
        either!(self.enrollment(workflow, email))
    }

    pub fn enrollments_of(&self, email: &str) -> Result<Vec<Enrollment>> {
        either!(self.enrollments_of(email))
    }

    pub fn enrollments(&self) -> Walk<'_, Enrollment> {
        walk!(self.enrollments())
    }

    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(String, String)>> {
        either!(self.due(now, limit))
    }

    /// Up to `limit` enrollments due at `now`, for this process to run: on PostgreSQL they
    /// are claimed (leased to this daemon until the batch that moves them commits, or the
    /// lease runs out), so several daemons never run the same one.
    pub fn take_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(String, String)>> {
        match self {
            Store::Sled(store) => store.due(now, limit),
            Store::Postgres(store) => Ok(blocking(|| store.claim_due(now, limit, store.lease()))?),
        }
    }

    /// Lets go of claims taken by [`Store::take_due`] whose batch did not commit.
    pub fn release(&self, enrollments: &[(String, String)]) -> Result<()> {
        match self {
            Store::Sled(_) => Ok(()),
            Store::Postgres(store) => Ok(blocking(|| store.release(enrollments))?),
        }
    }

    /// Runs `work` on these leads while no other daemon can move their enrollments
    /// (PostgreSQL: held under this daemon's lease, let go after; sled: one process).
    pub fn holding<T>(&self, emails: &[&str], work: impl FnOnce() -> Result<T>) -> Result<T> {
        let Store::Postgres(store) = self else {
            return work();
        };
        blocking(|| store.hold(emails))?;
        let result = work();
        let released = blocking(|| store.let_go(emails));
        let value = result?;
        released?;
        Ok(value)
    }

    /// The in-flight marks this process settles when it starts, and, leading several daemons,
    /// from time to time: all of them on sled (one process); on PostgreSQL those of daemons
    /// that are gone.
    pub fn in_flight_to_recover(&self) -> Result<Vec<(u64, Vec<OutboxEmail>)>> {
        match self {
            Store::Sled(store) => store.in_flight(),
            Store::Postgres(store) => Ok(blocking(|| store.in_flight_orphaned())?),
        }
    }

    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        either!(self.next_due())
    }

    pub fn upcoming(&self, limit: usize) -> Result<Vec<(DateTime<Utc>, String, String)>> {
        either!(self.upcoming(limit))
    }

    pub fn changed(&self, limit: usize) -> Result<Vec<String>> {
        either!(self.changed(limit))
    }

    pub fn events_of(&self, email: &str) -> Result<Vec<Event>> {
        either!(self.events_of(email))
    }

    pub fn all_events(&self) -> Walk<'_, (String, Event)> {
        walk!(self.all_events())
    }

    pub fn message(&self, message_id: &str) -> Result<Option<MessageRecord>> {
        either!(self.message(message_id))
    }

    pub fn sent_since(&self, since: DateTime<Utc>) -> Result<Vec<(DateTime<Utc>, String, String)>> {
        either!(self.sent_since(since))
    }

    pub fn messages(&self) -> Walk<'_, MessageRecord> {
        walk!(self.messages())
    }

    pub fn outbox_ready(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxEmail>> {
        either!(self.outbox_ready(now, limit))
    }

    pub fn outbox(&self) -> Walk<'_, OutboxEmail> {
        walk!(self.outbox())
    }

    pub fn outbox_next(&self) -> Result<Option<DateTime<Utc>>> {
        either!(self.outbox_next())
    }

    /// How many emails wait in the outbox (0, logged, if the database cannot say).
    pub fn outbox_len(&self) -> usize {
        match self {
            Store::Sled(store) => store.outbox_len(),
            Store::Postgres(store) => blocking(|| store.outbox_len()).unwrap_or_else(|error| {
                warn!(%error, "cannot count the outbox");
                0
            }),
        }
    }

    pub fn new_id(&self) -> Result<u64> {
        either!(self.new_id())
    }

    pub fn in_flight(&self) -> Result<Vec<(u64, Vec<OutboxEmail>)>> {
        either!(self.in_flight())
    }

    pub fn uncertain(&self) -> Result<Vec<OutboxEmail>> {
        either!(self.uncertain())
    }

    pub fn outbox_email(
        &self,
        not_before: DateTime<Utc>,
        message_id: &str,
    ) -> Result<Option<OutboxEmail>> {
        either!(self.outbox_email(not_before, message_id))
    }

    pub fn webhooks_pending(&self) -> Walk<'_, Delivery> {
        walk!(self.webhooks_pending())
    }

    pub fn webhooks_failed(&self) -> Walk<'_, Delivery> {
        walk!(self.webhooks_failed())
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        either!(self.meta_get(key))
    }

    pub fn meta_set(&self, key: &str, value: &[u8]) -> Result<()> {
        either!(self.meta_set(key, value))
    }

    pub fn meta_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        either!(self.meta_prefix(prefix, limit))
    }

    pub fn size_on_disk(&self) -> Result<u64> {
        either!(self.size_on_disk())
    }

    /// The figures `status` shows: kept as the sled store writes; counted from the records on
    /// PostgreSQL, where several daemons write and none keeps a tally for the others.
    pub fn counters(&self) -> Result<Counters> {
        match self {
            Store::Sled(store) => store.counters(),
            Store::Postgres(store) => {
                let (mut counted, _) = super::counters::recount(self)?;
                counted.in_flight = blocking(|| store.in_flight())?
                    .into_iter()
                    .flat_map(|(_, emails)| emails)
                    .collect();
                Ok(counted)
            }
        }
    }

    /// The (lead, workflow) pairs counted as promotions.
    pub fn promotions(&self) -> Result<Vec<(String, String)>> {
        match self {
            Store::Sled(store) => store.promotions(),
            Store::Postgres(_) => Ok(super::counters::promotions_in(
                &super::counters::recount(self)?.1,
            )),
        }
    }

    /// Counts every figure again (and, on sled, repairs the counters kept when `repair`).
    pub fn recount(&self, repair: bool) -> Result<Recounted> {
        match self {
            Store::Sled(store) => store.recount(repair),
            Store::Postgres(_) => {
                let counted = self.counters()?;
                Ok(Recounted {
                    counted,
                    differences: Vec::new(),
                    index_differences: 0,
                    repaired: false,
                })
            }
        }
    }

    /// The queues' depths for `/metrics`, once counted: on sled kept exact by every write after
    /// one count; on PostgreSQL as the database counted them last ([`Store::count_depths`]
    /// again every [`super::postgres::DEPTHS_EVERY`]).
    pub fn depths(&self) -> Option<Depths> {
        match self {
            Store::Sled(store) => store.depths(),
            Store::Postgres(store) => store.depths(),
        }
    }

    pub fn count_depths(&self) -> Result<()> {
        match self {
            Store::Sled(store) => store.count_depths(),
            Store::Postgres(store) => Ok(blocking(|| store.count_depths())?),
        }
    }

    /// Writes a backup of the store (sled; a PostgreSQL store is backed up with PostgreSQL's
    /// own tools).
    pub fn backup(
        &self,
        out: &mut dyn std::io::Write,
    ) -> std::result::Result<Summary, BackupError> {
        match self {
            Store::Sled(store) => store.backup(out),
            Store::Postgres(_) => Err(BackupError::NotSled),
        }
    }

    pub fn restore(&self, path: &Path) -> std::result::Result<Summary, BackupError> {
        match self {
            Store::Sled(store) => store.restore(path),
            Store::Postgres(_) => Err(BackupError::NotSled),
        }
    }
}

impl StoreError {
    /// Whether a batch was refused because another daemon holds a lease on what it writes:
    /// nothing was written, and the work is someone else's now.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Postgres(error) if matches!(**error, PgError::Leased { .. }))
    }
}

impl From<PgError> for StoreError {
    fn from(error: PgError) -> StoreError {
        match error {
            PgError::Record(error) => error,
            error => StoreError::Postgres(Box::new(error)),
        }
    }
}
