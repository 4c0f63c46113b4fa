//! The durable state: leads, enrollments, the due index, sent messages, the outbox, the event
//! journal and meta, in an embedded sled database behind one narrow interface.
//!
//! Trees (key → value; see [`keys`] for the encodings; "email" in a key is the address folded
//! to lower case, [`crate::lead::email_key`], so every spelling of an address finds its lead):
//! - `leads`: email → [`Lead`]
//! - `enrollments`: workflow ‖ email → [`Enrollment`]
//! - `lead_enrollments`: email ‖ workflow → () (which workflows a lead is in)
//! - `due`: due time ‖ workflow ‖ email → () (the scheduler range-scans only what is due)
//! - `messages`: Message-ID → [`MessageRecord`]
//! - `outbox`: not-before ‖ Message-ID → [`OutboxEmail`]
//! - `events`: email ‖ sequence → [`Event`] (append-only, per lead, in order)
//! - `changed`: email → () (leads whose data changed since enrollment last looked at them)
//! - `meta`: schema version, emails being handed to a transport (`in_flight:` mark → the
//!   emails with their MIME bytes), copies of uncertain emails (`uncertain:` Message-ID → the
//!   email, for `nurture outbox resend`), mail-watcher positions,
//!   unconfirmed sign-ups and idempotency keys (`daemon::intake`)
//! - `webhooks`: next attempt ‖ webhook-id → [`Delivery`] (webhooks waiting to be delivered)
//! - `webhooks_failed`: webhook-id → [`Delivery`] (given up; kept until retried by hand)
//! - `counters`, `counters_index`: the figures `nurture status` shows, kept by every batch
//!   ([`counters`])
//!
//! Every change that must agree is one [`Batch`], applied as one transaction across the trees:
//! an enrollment and its due entry never disagree, and an email enters the outbox in the same
//! transaction that moves its enrollment past the `send`.
//!
//! Webhooks: a store opened [`SledStore::with_webhooks`] knows the subscriptions (no secrets), and
//! [`SledStore::apply`] turns every journal line of a batch that a subscription wants into a
//! `webhooks` entry in that batch's transaction: a webhook exists if and only if its event
//! does. Entries leave the queue only through a batch too (`webhooks_remove`, delivered or
//! moved); the daemon's delivery task never writes (`crate::daemon::webhooks`). A store
//! opened without subscriptions (tests, tools) queues nothing, and leaves the queue alone.
//!
//! Backups ([`backup`]): every write goes through the write gate, held shared by writers and
//! alone by a snapshot, so `nurture backup` sees the store between two transactions.
//!
//! Closing ([`SledStore::close`]) leaves the counters and the first enrollments due in a small file
//! beside the store ([`snapshot`]), so `nurture status` with no daemon running does not open it.
//!
//! The store holds personal data and the unsubscribe key: its folder is the owner's alone
//! ([`crate::private`]). A store written by an older nurture is upgraded when opened
//! ([`migrate`]).

mod backends;
pub mod backup;
pub mod cache;
mod codec;
pub mod counters;
pub mod depths;
pub mod keys;
mod migrate;
pub mod postgres;
mod records;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Db, Transactional, Tree};

use crate::engine::{Enrollment, Status};
use crate::lead::{Lead, email_key};
use crate::webhooks::Routes;

pub use self::backends::{Store, Walk};
pub use self::counters::{Counters, Recounted, StepCounts, WorkflowCounts};
pub use self::migrate::Merged;
pub use self::records::{Event, EventKind, Expiry, MessageRecord, MessageState, OutboxEmail};
pub use crate::webhooks::Delivery;

/// The layout version this build reads and writes. Bump it with a migration when trees or
/// keys change meaning. 2: leads are keyed by their address folded to lower case. 3: the
/// figures of `nurture status` are kept as counters.
pub const SCHEMA_VERSION: u32 = 3;

/// sled's page cache for a store of a million leads, and for tests. Its own default (1 GB) is
/// far more than a daemon needs. sled keeps a few hundred MB of its own beside the cache at
/// that size (measured: 287 MB resident in all with 16 MB of cache, 343 MB with 64 MB), so the
/// cache stays small; the working set is the front of the due index. A daemon sizes its cache
/// from its store ([`cache`]).
pub const DEFAULT_CACHE_BYTES: u64 = cache::MIN_BYTES;

const SCHEMA_KEY: &[u8] = b"schema_version";
const IN_FLIGHT_PREFIX: &[u8] = b"in_flight:";
const UNCERTAIN_PREFIX: &[u8] = b"uncertain:";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store at {path} is in use by another nurture process (a running `nurture run`?); stop it, or choose another store with NURTURE_STORE_PATH or `[store] path`"
    )]
    Locked { path: PathBuf },
    #[error(
        "the store at {path} has schema version {found}, but this build of nurture reads version {SCHEMA_VERSION}; {hint}"
    )]
    Schema {
        path: PathBuf,
        found: u32,
        hint: &'static str,
    },
    #[error(
        "{path} holds data but no nurture schema version: it is not a nurture store; choose an empty directory"
    )]
    Foreign { path: PathBuf },
    #[error("a stored {what} is in format {format}, which this build of nurture cannot read")]
    UnknownFormat { what: &'static str, format: u8 },
    #[error("a stored {what} is damaged: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("cannot open the store at {path}: {error}")]
    Open { path: PathBuf, error: sled::Error },
    #[error("cannot make the store at {path} private to its owner: {error}")]
    Private {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "a restore into the store at {path} did not finish: it holds part of a backup; delete the folder and run `nurture restore` again"
    )]
    RestoreIncomplete { path: PathBuf },
    #[error("cannot write or remove the status snapshot {path}: {error}")]
    Snapshot {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("{0}")]
    Postgres(Box<postgres::PgError>),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A set of changes applied atomically by [`SledStore::apply`].
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Leads to write whole (created or updated).
    pub leads: Vec<Lead>,
    /// Enrollments to write; the due index follows each one's `due`.
    pub enrollments: Vec<Enrollment>,
    /// Journal lines, by lead email.
    pub events: Vec<(String, Event)>,
    /// Emails entering (or re-entering, after a retry) the outbox.
    pub outbox_put: Vec<OutboxEmail>,
    /// Outbox entries leaving, by (not-before, Message-ID).
    pub outbox_remove: Vec<(DateTime<Utc>, String)>,
    pub messages: Vec<MessageRecord>,
    /// Records of emails to forget, by Message-ID (an uncertain email sent again).
    pub messages_remove: Vec<String>,
    /// Leads whose data changed: enrollment looks at them again.
    pub changed: Vec<String>,
    /// Leads enrollment has looked at.
    pub changed_done: Vec<String>,
    /// Lists emails, with their MIME bytes, as being handed to a transport, under a mark id
    /// ([`SledStore::new_id`]). Whatever is still listed when the store is next opened was caught
    /// mid-send: the bytes let it be sent again if it never left.
    pub in_flight_set: Option<(u64, Vec<OutboxEmail>)>,
    /// Marks whose emails' outcomes this batch records.
    pub in_flight_clear: Vec<u64>,
    /// Copies of uncertain emails, with their MIME bytes, kept for `nurture outbox resend`.
    pub uncertain_put: Vec<OutboxEmail>,
    /// Copies of uncertain emails to let go (resent or dropped), by Message-ID.
    pub uncertain_remove: Vec<String>,
    /// Meta entries to write (the inbox watcher's position, the mail it has processed).
    pub meta_put: Vec<(String, Vec<u8>)>,
    /// Webhook deliveries leaving the queue, by (next attempt, id): delivered, or moved (to a
    /// later attempt through `webhooks_put`, or to the failed ones).
    pub webhooks_remove: Vec<(DateTime<Utc>, String)>,
    /// Webhook deliveries (re-)entering the queue, at their `next_attempt`. (Those the batch's
    /// journal lines call for are added by [`SledStore::apply`] itself.)
    pub webhooks_put: Vec<Delivery>,
    /// Given-up deliveries to keep, and (by id) to take back out when they are retried.
    pub webhooks_failed_put: Vec<Delivery>,
    pub webhooks_failed_remove: Vec<String>,
    /// Meta entries to remove (after `meta_put`): expired sign-ups and idempotency keys.
    pub meta_remove: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.leads.is_empty()
            && self.enrollments.is_empty()
            && self.events.is_empty()
            && self.outbox_put.is_empty()
            && self.outbox_remove.is_empty()
            && self.messages.is_empty()
            && self.messages_remove.is_empty()
            && self.changed.is_empty()
            && self.changed_done.is_empty()
            && self.in_flight_set.is_none()
            && self.in_flight_clear.is_empty()
            && self.uncertain_put.is_empty()
            && self.uncertain_remove.is_empty()
            && self.meta_put.is_empty()
            && self.webhooks_remove.is_empty()
            && self.webhooks_put.is_empty()
            && self.webhooks_failed_put.is_empty()
            && self.webhooks_failed_remove.is_empty()
            && self.meta_remove.is_empty()
    }

    pub fn event(
        &mut self,
        lead: &str,
        at: DateTime<Utc>,
        workflow: Option<&str>,
        kind: EventKind,
    ) {
        self.events.push((
            lead.to_string(),
            Event {
                at,
                workflow: workflow.map(str::to_string),
                kind,
            },
        ));
    }
}

/// The store. Cheap to clone: every clone is the same open database.
#[derive(Clone)]
pub struct SledStore {
    db: Db,
    leads: Tree,
    enrollments: Tree,
    lead_enrollments: Tree,
    due: Tree,
    messages: Tree,
    outbox: Tree,
    events: Tree,
    changed: Tree,
    meta: Tree,
    webhooks: Tree,
    webhooks_failed: Tree,
    counters: Tree,
    counters_index: Tree,
    /// Every batch holds it shared while it commits; reading several trees as of one instant
    /// (the counters with the emails in flight, a recount) holds it alone. sled commits one
    /// transaction at a time, but offers no consistent read across keys.
    writers: Arc<RwLock<()>>,
    /// Whether batches keep the counters (always, but in the benchmark that measures what
    /// keeping them costs: see [`SledStore::without_counters_for_benchmark`]).
    counting: bool,
    /// The webhook subscriptions the journal lines of a batch are routed by (none by default).
    routes: Arc<Routes>,
    /// What the upgrade run by this open merged (empty when there was none). Shared by clones.
    merged: Arc<Vec<Merged>>,
    /// Held shared by every write, alone by a backup's snapshot ([`backup`]). Shared by clones.
    gate: Arc<std::sync::RwLock<()>>,
    /// The queues' depths for the daemon's gauges ([`depths`]). Shared by clones.
    depths: Arc<depths::Depths>,
    /// Whether the status snapshot a close left is on disk ([`snapshot`]). Shared by clones.
    seal: Arc<snapshot::Seal>,
}

/// How long an open waits for a lock that is being released: sled 0.34 drops its `Db` before
/// its flusher thread lets go of the lock file (spacejam/sled#1234), so a store closed a moment
/// ago in this process (a test reopening, a command run right after a daemon stopped) is still
/// locked for a few milliseconds. A daemon that really holds the store holds it far longer.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled in `path`, waiting up to [`LOCK_RELEASE_WAIT`] for a lock on its way out.
fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_RELEASE_WAIT {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            Err(error) => {
                return Err(StoreError::Open {
                    path: path.to_path_buf(),
                    error,
                });
            }
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store in `path` with a page cache of `cache_bytes`, upgrading
    /// a store written by an older nurture ([`SledStore::merged`] says what that merged).
    pub fn open(path: &Path, cache_bytes: u64) -> Result<SledStore> {
        let private = |error| StoreError::Private {
            path: path.to_path_buf(),
            error,
        };
        // sled creates its files itself, with the process's umask (0644 under the usual 022),
        // and nurture forbids the unsafe code that changing the umask takes. So a new folder is
        // made 0700 before sled writes into it, which keeps every file in it from other users
        // from the start (files sled adds later included), and after the open (once the folder
        // is known to be a nurture store, not some folder named by mistake) the folder is set
        // to 0700 and its files to 0600, a store made by an older nurture included.
        if !path.exists() {
            crate::private::private_dir(path).map_err(private)?;
        }
        let db = open_sled(path, cache_bytes)?;
        // Holding the lock, before anything can change: the snapshot the last close left
        // would no longer be true.
        let seal = Arc::new(snapshot::Seal::open(path)?);
        let store = SledStore {
            leads: db.open_tree("leads")?,
            enrollments: db.open_tree("enrollments")?,
            lead_enrollments: db.open_tree("lead_enrollments")?,
            due: db.open_tree("due")?,
            messages: db.open_tree("messages")?,
            outbox: db.open_tree("outbox")?,
            events: db.open_tree("events")?,
            changed: db.open_tree("changed")?,
            meta: db.open_tree("meta")?,
            webhooks: db.open_tree("webhooks")?,
            webhooks_failed: db.open_tree("webhooks_failed")?,
            counters: db.open_tree("counters")?,
            counters_index: db.open_tree("counters_index")?,
            writers: Arc::default(),
            counting: true,
            routes: Arc::default(),
            merged: Arc::default(),
            gate: Arc::default(),
            depths: Arc::default(),
            seal,
            db,
        };
        let merged = store.check_schema(path)?;
        crate::private::private_tree(path).map_err(private)?;
        Ok(SledStore {
            merged: Arc::new(merged),
            ..store
        })
    }

    /// This store, queueing a webhook delivery for every journal line `routes` subscribe to
    /// (see the module header). Clones made from it after this share the routes.
    pub fn with_webhooks(self, routes: Routes) -> SledStore {
        SledStore {
            routes: Arc::new(routes),
            ..self
        }
    }

    /// This store, its batches no longer keeping the counters, which go wrong from then on:
    /// only for the engine benchmark, which measures the cost of keeping them in the same run.
    #[doc(hidden)]
    pub fn without_counters_for_benchmark(self) -> SledStore {
        SledStore {
            counting: false,
            ..self
        }
    }

    /// Leads that were one person under several spellings of their address, merged by the
    /// upgrade this open ran. The daemon logs them and commands print them.
    pub fn merged(&self) -> &[Merged] {
        &self.merged
    }

    /// Checks the schema version; upgrades an older store (returning what that merged) and
    /// stamps a new one.
    fn check_schema(&self, path: &Path) -> Result<Vec<Merged>> {
        if self.meta.contains_key(backup::RESTORING_KEY)? {
            return Err(StoreError::RestoreIncomplete {
                path: path.to_path_buf(),
            });
        }
        match self.meta.get(SCHEMA_KEY)? {
            Some(bytes) => {
                let found = bytes
                    .as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        what: "schema version",
                        detail: format!("{} bytes", bytes.len()),
                    })?;
                if found == SCHEMA_VERSION {
                    return Ok(Vec::new());
                }
                if found < SCHEMA_VERSION
                    && let Some(upgraded) = migrate::upgrade(self, found)
                {
                    return upgraded;
                }
                let hint = if found > SCHEMA_VERSION {
                    "it was written by a newer nurture: upgrade nurture"
                } else {
                    "it was written by an older nurture and has no migration to this version"
                };
                Err(StoreError::Schema {
                    path: path.to_path_buf(),
                    found,
                    hint,
                })
            }
            None => {
                let others = [&self.leads, &self.enrollments, &self.events, &self.meta];
                if others.iter().any(|tree| !tree.is_empty()) {
                    return Err(StoreError::Foreign {
                        path: path.to_path_buf(),
                    });
                }
                self.meta
                    .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                self.db.flush()?;
                Ok(Vec::new())
            }
        }
    }

    /// Makes every change so far durable (sled otherwise flushes every 500 ms).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Closes the store for this process: makes every change durable and leaves the snapshot
    /// `nurture status` reads while no process holds the store ([`snapshot`]). The store stays
    /// usable; a write after this removes the snapshot again.
    pub fn close(&self) -> Result<()> {
        let _alone = self
            .gate
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.db.flush()?;
        let snapshot = snapshot::Snapshot::new(
            self.counters()?,
            self.upcoming(snapshot::UPCOMING)?,
            Utc::now(),
        );
        self.seal.seal(&snapshot)
    }

    /// Applies `batch` as one transaction.
    pub fn apply(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let _shared = self.write_gate()?;
        // The latest event each lead reports through the API in this batch: it may make the
        // lead's other enrollments engaged, which are read before the transaction (it cannot
        // scan), with every other batch held back so that they stay as read.
        let reported = if self.counting {
            counters::reported(batch)
        } else {
            Default::default()
        };
        let (_shared, _alone);
        let mut others = std::collections::HashMap::new();
        if reported.is_empty() {
            _shared = self.writers.read().unwrap_or_else(|e| e.into_inner());
        } else {
            _alone = self.writers.write().unwrap_or_else(|e| e.into_inner());
            for lead in reported.keys() {
                others.insert(lead.clone(), counters::others(self, batch, lead)?);
            }
        }
        // Encode outside the transaction: its closure may run more than once on a conflict.
        let leads: Vec<(Vec<u8>, Vec<u8>)> = batch
            .leads
            .iter()
            .map(|lead| (keys::lead(&lead.email), codec::encode(lead)))
            .collect();
        let enrollments: Vec<(&Enrollment, Vec<u8>, Vec<u8>)> = batch
            .enrollments
            .iter()
            .map(|e| (e, keys::enrollment(&e.workflow, &e.lead), codec::encode(e)))
            .collect();
        let mut events = Vec::with_capacity(batch.events.len());
        let mut webhooks_put: Vec<(Vec<u8>, Vec<u8>)> = batch
            .webhooks_put
            .iter()
            .map(|d| (keys::webhook(d.next_attempt, &d.id), codec::encode(d)))
            .collect();
        // The leads of this batch as they will stand, for the webhooks' bodies (built once).
        let mut batch_leads: Option<std::collections::HashMap<String, &Lead>> = None;
        for (lead, event) in &batch.events {
            let sequence = self.db.generate_id()?;
            events.push((keys::event(lead, sequence), codec::encode(event)));
            if self.routes.is_empty() || !self.routes.may_want(&event.kind) {
                continue;
            }
            let in_batch = batch_leads
                .get_or_insert_with(|| {
                    batch
                        .leads
                        .iter()
                        .map(|l| (email_key(&l.email).into_owned(), l))
                        .collect()
                })
                .get(email_key(lead).as_ref())
                .copied();
            let stored;
            let current = match in_batch {
                Some(lead) => Some(lead),
                None => {
                    stored = self.lead(lead)?;
                    stored.as_ref()
                }
            };
            // Unique in this store (the journal line's sequence) and across stores (its time).
            let base = format!("msg_{:x}_{sequence:x}", event.at.timestamp_millis());
            let mut route = 0;
            let deliveries = self.routes.deliveries(lead, current, event, || {
                route += 1;
                format!("{base}_{route}")
            });
            for delivery in deliveries {
                webhooks_put.push((
                    keys::webhook(delivery.next_attempt, &delivery.id),
                    codec::encode(&delivery),
                ));
            }
        }
        let webhooks_remove: Vec<Vec<u8>> = batch
            .webhooks_remove
            .iter()
            .map(|(at, id)| keys::webhook(*at, id))
            .collect();
        let webhooks_failed_put: Vec<(Vec<u8>, Vec<u8>)> = batch
            .webhooks_failed_put
            .iter()
            .map(|d| (d.id.as_bytes().to_vec(), codec::encode(d)))
            .collect();
        let outbox_put: Vec<(Vec<u8>, Vec<u8>)> = batch
            .outbox_put
            .iter()
            .map(|email| {
                (
                    keys::outbox(email.not_before, &email.message_id),
                    codec::encode_with_raw(email, &email.eml),
                )
            })
            .collect();
        let outbox_remove: Vec<Vec<u8>> = batch
            .outbox_remove
            .iter()
            .map(|(at, id)| keys::outbox(*at, id))
            .collect();
        let in_flight: Option<(Vec<u8>, Vec<u8>)> = batch
            .in_flight_set
            .as_ref()
            .map(|(id, list)| (in_flight_key(*id), encode_in_flight(list)));
        let uncertain_put: Vec<(Vec<u8>, Vec<u8>)> = batch
            .uncertain_put
            .iter()
            .map(|email| {
                (
                    uncertain_key(&email.message_id),
                    codec::encode_with_raw(email, &email.eml),
                )
            })
            .collect();
        let messages: Vec<(Vec<u8>, Vec<u8>)> = batch
            .messages
            .iter()
            .map(|m| (m.message_id.as_bytes().to_vec(), codec::encode(m)))
            .collect();

        let trees = (
            &self.leads,
            &self.enrollments,
            &self.lead_enrollments,
            &self.due,
            &self.messages,
            &self.outbox,
            &self.events,
            &self.changed,
            &self.meta,
            &self.webhooks,
            &self.webhooks_failed,
            &self.counters,
            &self.counters_index,
        );
        // The depths' count does not read a chunk while this commits ([`depths`]).
        let progress = self.depths.writing();
        let result = trees.transaction(
            |(
                leads_t,
                enrollments_t,
                lead_enrollments_t,
                due_t,
                messages_t,
                outbox_t,
                events_t,
                changed_t,
                meta_t,
                webhooks_t,
                webhooks_failed_t,
                counters_t,
                counters_index_t,
            )| {
                // What the batch changes in the counters, worked out from each write against
                // the value it replaces.
                let mut deltas = self.counting.then(counters::Deltas::default);
                for (lead, (key, value)) in batch.leads.iter().zip(&leads) {
                    let old = leads_t.insert(key.as_slice(), value.as_slice())?;
                    if let Some(deltas) = &mut deltas {
                        deltas.lead(old.as_deref(), lead)?;
                    }
                }
                let mut delta = depths::Delta::default();
                for (enrollment, key, value) in &enrollments {
                    let previous = enrollments_t.insert(key.as_slice(), value.as_slice())?;
                    let abort = ConflictableTransactionError::Abort;
                    let was_active = match previous {
                        Some(old) => {
                            let (due, status) = match &mut deltas {
                                Some(deltas) => {
                                    let old: counters::StoredEnrollment =
                                        codec::decode("enrollment", &old).map_err(abort)?;
                                    let now = reported.get(email_key(&enrollment.lead).as_ref());
                                    deltas.enrollment(
                                        counters_index_t,
                                        Some(&old),
                                        enrollment,
                                        now.copied(),
                                    )?;
                                    (old.due, old.status)
                                }
                                None => {
                                    let old: Replaced =
                                        codec::decode("enrollment", &old).map_err(abort)?;
                                    (old.due, old.status)
                                }
                            };
                            if let Some(due) = due {
                                let due_key = keys::due(due, key);
                                if due_t.remove(due_key.as_slice())?.is_some()
                                    && progress.due.tracks(&due_key)
                                {
                                    delta.due(-1);
                                }
                            }
                            status == Status::Active
                        }
                        None => {
                            if let Some(deltas) = &mut deltas {
                                let now = reported.get(email_key(&enrollment.lead).as_ref());
                                deltas.enrollment(
                                    counters_index_t,
                                    None,
                                    enrollment,
                                    now.copied(),
                                )?;
                            }
                            let index =
                                keys::lead_enrollment(&enrollment.lead, &enrollment.workflow);
                            lead_enrollments_t.insert(index, &[])?;
                            false
                        }
                    };
                    if progress.enrollments.tracks(key) {
                        delta.enrollment(&enrollment.workflow, was_active, enrollment.is_active());
                    }
                    if let Some(due) = enrollment.due {
                        let due_key = keys::due(due, key);
                        if due_t.insert(due_key.as_slice(), &[])?.is_none()
                            && progress.due.tracks(&due_key)
                        {
                            delta.due(1);
                        }
                    }
                }
                if let Some(deltas) = &mut deltas {
                    for (lead, latest) in &reported {
                        let others = others.get(lead).map_or(&[][..], Vec::as_slice);
                        deltas.tracked(counters_index_t, lead, *latest, others)?;
                    }
                }
                for ((lead, event), (key, value)) in batch.events.iter().zip(&events) {
                    events_t.insert(key.as_slice(), value.as_slice())?;
                    if let Some(deltas) = &mut deltas {
                        deltas.event(counters_index_t, lead, event)?;
                    }
                }
                for key in &outbox_remove {
                    let old = outbox_t.remove(key.as_slice())?;
                    if old.is_some() && progress.outbox.tracks(key) {
                        delta.outbox(-1);
                    }
                    if let Some(deltas) = &mut deltas {
                        deltas.outbox(old.as_deref(), None)?;
                    }
                }
                for (email, (key, value)) in batch.outbox_put.iter().zip(&outbox_put) {
                    let old = outbox_t.insert(key.as_slice(), value.as_slice())?;
                    if old.is_none() && progress.outbox.tracks(key) {
                        delta.outbox(1);
                    }
                    if let Some(deltas) = &mut deltas {
                        deltas.outbox(old.as_deref(), Some(email))?;
                    }
                }
                for id in &batch.messages_remove {
                    let old = messages_t.remove(id.as_bytes())?;
                    if let Some(deltas) = &mut deltas {
                        deltas.message(id, old.as_deref(), None)?;
                    }
                }
                for (record, (key, value)) in batch.messages.iter().zip(&messages) {
                    let old = messages_t.insert(key.as_slice(), value.as_slice())?;
                    if let Some(deltas) = &mut deltas {
                        deltas.message(&record.message_id, old.as_deref(), Some(record))?;
                    }
                }
                for email in &batch.changed_done {
                    changed_t.remove(keys::lead(email))?;
                }
                for email in &batch.changed {
                    changed_t.insert(keys::lead(email), &[])?;
                }
                for id in &batch.in_flight_clear {
                    meta_t.remove(in_flight_key(*id))?;
                }
                if let Some((key, list)) = &in_flight {
                    meta_t.insert(key.as_slice(), list.as_slice())?;
                }
                for id in &batch.uncertain_remove {
                    meta_t.remove(uncertain_key(id))?;
                }
                for (key, value) in &uncertain_put {
                    meta_t.insert(key.as_slice(), value.as_slice())?;
                }
                for (key, value) in &batch.meta_put {
                    meta_t.insert(key.as_bytes(), value.as_slice())?;
                }
                for key in &webhooks_remove {
                    webhooks_t.remove(key.as_slice())?;
                }
                for (key, value) in &webhooks_put {
                    webhooks_t.insert(key.as_slice(), value.as_slice())?;
                }
                for id in &batch.webhooks_failed_remove {
                    webhooks_failed_t.remove(id.as_bytes())?;
                }
                for (key, value) in &webhooks_failed_put {
                    webhooks_failed_t.insert(key.as_slice(), value.as_slice())?;
                }
                for key in &batch.meta_remove {
                    meta_t.remove(key.as_bytes())?;
                }
                if let Some(deltas) = deltas {
                    deltas.write(counters_t, counters_index_t)?;
                }
                Ok(delta)
            },
        );
        let delta = result.map_err(flatten)?;
        self.depths.add(delta);
        drop(progress);
        crate::metrics::journal(&batch.events);
        Ok(())
    }

    // ---- leads ----

    /// The lead with this address, whatever its spelling.
    pub fn lead(&self, email: &str) -> Result<Option<Lead>> {
        self.leads
            .get(keys::lead(email))?
            .map(|bytes| codec::decode("lead", &bytes))
            .transpose()
    }

    /// Every lead, in the order of their folded addresses.
    pub fn leads(&self) -> impl Iterator<Item = Result<Lead>> + '_ {
        self.leads.iter().map(|entry| {
            let (_, value) = entry?;
            codec::decode("lead", &value)
        })
    }

    /// Up to `limit` leads after `after` (exclusive), in address order: a resumable walk.
    pub fn leads_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Iterator<Item = Result<Lead>> + '_ {
        let start = match after {
            Some(email) => std::ops::Bound::Excluded(keys::lead(email)),
            None => std::ops::Bound::Unbounded,
        };
        self.leads
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
            .take(limit)
            .map(|entry| {
                let (_, value) = entry?;
                codec::decode("lead", &value)
            })
    }

    pub fn lead_count(&self) -> usize {
        self.leads.len()
    }

    // ---- enrollments ----

    pub fn enrollment(&self, workflow: &str, email: &str) -> Result<Option<Enrollment>> {
        self.enrollments
            .get(keys::enrollment(workflow, email))?
            .map(|bytes| codec::decode("enrollment", &bytes))
            .transpose()
    }

    /// A lead's enrollments, by workflow name.
    pub fn enrollments_of(&self, email: &str) -> Result<Vec<Enrollment>> {
        let mut found = Vec::new();
        for entry in self.lead_enrollments.scan_prefix(keys::lead_prefix(email)) {
            let (key, _) = entry?;
            if let Some((_, workflow)) = keys::split(&key)
                && let Some(enrollment) = self.enrollment(workflow, email)?
            {
                found.push(enrollment);
            }
        }
        Ok(found)
    }

    /// Every enrollment, by workflow then lead.
    pub fn enrollments(&self) -> impl Iterator<Item = Result<Enrollment>> + '_ {
        self.enrollments.iter().map(|entry| {
            let (_, value) = entry?;
            codec::decode("enrollment", &value)
        })
    }

    /// Up to `limit` enrollments due at or before `now`, earliest first, as (workflow, email
    /// key): the lead's spelling is the enrollment's `lead`.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(String, String)>> {
        let end = keys::time_bytes(now + chrono::Duration::milliseconds(1));
        let mut found = Vec::new();
        for entry in self.due.range(..end.as_slice()).take(limit) {
            let (key, _) = entry?;
            let (workflow, email) = keys::split(&key[8..]).ok_or(StoreError::Corrupt {
                what: "due index key",
                detail: format!("{key:?}"),
            })?;
            found.push((workflow.to_string(), email.to_string()));
        }
        Ok(found)
    }

    /// When the earliest enrollment is due, if any is.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .due
            .first()?
            .and_then(|(key, _)| keys::time_from_bytes(&key)))
    }

    /// The next `limit` due times, with their enrollments (workflow, lead as spelled), for
    /// reports.
    pub fn upcoming(&self, limit: usize) -> Result<Vec<(DateTime<Utc>, String, String)>> {
        let mut found = Vec::new();
        for entry in self.due.iter().take(limit) {
            let (key, _) = entry?;
            if let (Some(at), Some((workflow, email))) =
                (keys::time_from_bytes(&key), keys::split(&key[8..]))
            {
                let lead = match self.enrollment(workflow, email)? {
                    Some(enrollment) => enrollment.lead,
                    None => email.to_string(),
                };
                found.push((at, workflow.to_string(), lead));
            }
        }
        Ok(found)
    }

    // ---- leads whose data changed ----

    /// Up to `limit` leads enrollment has not looked at since they changed (their keys).
    pub fn changed(&self, limit: usize) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for entry in self.changed.iter().take(limit) {
            let (key, _) = entry?;
            found.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(found)
    }

    // ---- the journal ----

    /// A lead's events, oldest first.
    pub fn events_of(&self, email: &str) -> Result<Vec<Event>> {
        self.events
            .scan_prefix(keys::lead_prefix(email))
            .map(|entry| {
                let (_, value) = entry?;
                codec::decode("event", &value)
            })
            .collect()
    }

    /// Every event of every lead, lead by lead, with the lead's key.
    pub fn all_events(&self) -> impl Iterator<Item = Result<(String, Event)>> + '_ {
        self.events.iter().map(|entry| {
            let (key, value) = entry?;
            let email = keys::lead_of(&key).to_string();
            Ok((email, codec::decode("event", &value)?))
        })
    }

    // ---- messages and the outbox ----

    pub fn message(&self, message_id: &str) -> Result<Option<MessageRecord>> {
        self.messages
            .get(message_id.as_bytes())?
            .map(|bytes| codec::decode("message", &bytes))
            .transpose()
    }

    /// The emails handed to a transport since `since`, as (time, sender, recipient). The
    /// daemon's Message-IDs begin with an increasing number, so the record is in sending order
    /// and only its end is read.
    pub fn sent_since(&self, since: DateTime<Utc>) -> Result<Vec<(DateTime<Utc>, String, String)>> {
        let mut found = Vec::new();
        for entry in self.messages.iter().rev() {
            let (_, value) = entry?;
            let record: MessageRecord = codec::decode("message", &value)?;
            if record.at < since {
                break;
            }
            found.push((record.at, record.sender, record.lead));
        }
        Ok(found)
    }

    pub fn messages(&self) -> impl Iterator<Item = Result<MessageRecord>> + '_ {
        self.messages.iter().map(|entry| {
            let (_, value) = entry?;
            codec::decode("message", &value)
        })
    }

    /// Up to `limit` outbox emails that may leave at `now`, in order.
    pub fn outbox_ready(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxEmail>> {
        let end = keys::time_bytes(now + chrono::Duration::milliseconds(1));
        self.outbox
            .range(..end.as_slice())
            .take(limit)
            .map(|entry| {
                let (_, value) = entry?;
                decode_outbox(&value)
            })
            .collect()
    }

    /// Every email in the outbox.
    pub fn outbox(&self) -> impl Iterator<Item = Result<OutboxEmail>> + '_ {
        self.outbox.iter().map(|entry| {
            let (_, value) = entry?;
            decode_outbox(&value)
        })
    }

    /// When the earliest outbox email may leave.
    pub fn outbox_next(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .outbox
            .first()?
            .and_then(|(key, _)| keys::time_from_bytes(&key)))
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// A fresh id, unique in this store (for in-flight marks).
    pub fn new_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// Every in-flight mark still set, with its emails and their MIME bytes (empty for a mark
    /// written by a nurture that kept headers only).
    pub fn in_flight(&self) -> Result<Vec<(u64, Vec<OutboxEmail>)>> {
        let mut marks = Vec::new();
        for entry in self.meta.scan_prefix(IN_FLIGHT_PREFIX) {
            let (key, value) = entry?;
            let id = key[IN_FLIGHT_PREFIX.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "in-flight mark",
                    detail: format!("{key:?}"),
                })?;
            marks.push((id, decode_in_flight(&value)?));
        }
        Ok(marks)
    }

    /// The kept copies of uncertain emails (see [`Batch::uncertain_put`]), by Message-ID.
    pub fn uncertain(&self) -> Result<Vec<OutboxEmail>> {
        self.meta
            .scan_prefix(UNCERTAIN_PREFIX)
            .map(|entry| {
                let (_, value) = entry?;
                decode_outbox(&value)
            })
            .collect()
    }

    /// The outbox email with this key, if it is still there.
    pub fn outbox_email(
        &self,
        not_before: DateTime<Utc>,
        message_id: &str,
    ) -> Result<Option<OutboxEmail>> {
        self.outbox
            .get(keys::outbox(not_before, message_id))?
            .map(|bytes| decode_outbox(&bytes))
            .transpose()
    }

    // ---- webhooks ----

    /// The deliveries waiting, soonest due first.
    pub fn webhooks_pending(&self) -> impl Iterator<Item = Result<Delivery>> + '_ {
        self.webhooks.iter().map(|entry| {
            let (_, value) = entry?;
            codec::decode("webhook delivery", &value)
        })
    }

    /// The deliveries given up, by id.
    pub fn webhooks_failed(&self) -> impl Iterator<Item = Result<Delivery>> + '_ {
        self.webhooks_failed.iter().map(|entry| {
            let (_, value) = entry?;
            codec::decode("failed webhook delivery", &value)
        })
    }

    // ---- meta for other components (mail watchers) ----

    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    pub fn meta_set(&self, key: &str, value: &[u8]) -> Result<()> {
        let _shared = self.write_gate()?;
        self.meta.insert(key.as_bytes(), value)?;
        Ok(())
    }

    /// Up to `limit` meta entries whose keys start with `prefix`, in key order.
    pub fn meta_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let mut found = Vec::new();
        for entry in self.meta.scan_prefix(prefix.as_bytes()).take(limit) {
            let (key, value) = entry?;
            found.push((String::from_utf8_lossy(&key).into_owned(), value.to_vec()));
        }
        Ok(found)
    }

    /// The write gate, held shared (see [`backup`]); a store closed before this write loses its
    /// status snapshot first.
    fn write_gate(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>> {
        let shared = self
            .gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.seal.unseal()?;
        Ok(shared)
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

/// A transaction's error as the store's.
fn flatten(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => StoreError::Sled(error),
    }
}

fn in_flight_key(id: u64) -> Vec<u8> {
    let mut key = IN_FLIGHT_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn uncertain_key(message_id: &str) -> Vec<u8> {
    let mut key = UNCERTAIN_PREFIX.to_vec();
    key.extend_from_slice(message_id.as_bytes());
    key
}

/// An in-flight list as stored: the emails' headers and the length of each one's MIME bytes
/// as JSON, then all the bytes, one after the other (a JSON array of numbers would quadruple
/// them).
#[derive(serde::Serialize, serde::Deserialize)]
struct InFlightList<E> {
    emails: E,
    lengths: Vec<usize>,
}

fn encode_in_flight(emails: &[OutboxEmail]) -> Vec<u8> {
    let header = InFlightList {
        emails,
        lengths: emails.iter().map(|email| email.eml.len()).collect(),
    };
    let raw: Vec<u8> = emails
        .iter()
        .flat_map(|email| &email.eml)
        .copied()
        .collect();
    codec::encode_with_raw(&header, &raw)
}

fn decode_in_flight(bytes: &[u8]) -> Result<Vec<OutboxEmail>> {
    // Lists written before the bytes were kept are a bare JSON array of headers.
    if bytes.get(1) == Some(&b'[') {
        return codec::decode("in-flight list", bytes);
    }
    let (list, raw): (InFlightList<Vec<OutboxEmail>>, Vec<u8>) =
        codec::decode_with_raw("in-flight list", bytes)?;
    let mut emails = list.emails;
    let mut start = 0;
    for (email, length) in emails.iter_mut().zip(list.lengths) {
        let end = start + length;
        email.eml = raw
            .get(start..end)
            .ok_or(StoreError::Corrupt {
                what: "in-flight list",
                detail: format!("{} bytes of MIME, more listed", raw.len()),
            })?
            .to_vec();
        start = end;
    }
    Ok(emails)
}

/// The fields of a stored enrollment that a write replacing it needs (to move its due entry,
/// and for the active count of [`depths`]): decoding only them skips building the rest.
#[derive(serde::Deserialize)]
struct Replaced {
    due: Option<DateTime<Utc>>,
    status: Status,
}

fn decode_outbox(bytes: &[u8]) -> Result<OutboxEmail> {
    let (mut email, eml): (OutboxEmail, Vec<u8>) = codec::decode_with_raw("outbox email", bytes)?;
    email.eml = eml;
    Ok(email)
}

#[cfg(test)]
mod contract;
#[cfg(test)]
mod tests;
