//! What several daemons sharing one database need (the approach of River, Oban and pg-boss):
//!
//! - Due work is claimed, not just read: [`PgStore::claim_due`] takes due enrollments no one
//!   holds (`FOR UPDATE SKIP LOCKED`: claimers never wait for each other nor take the same row)
//!   and leases them to this store's owner. A leased enrollment is invisible to other claimers
//!   until the batch that moves it commits (writing an enrollment ends its lease) or the lease
//!   runs out (its daemon died: another takes it over). Leases are timed by the database's
//!   clock, the one clock all daemons share.
//! - A sleeping daemon is woken through `LISTEN/NOTIFY` ([`Waker`]): the tables' triggers
//!   notify when a due time is written, a lead changes or an email is queued.
//! - One inbox watcher per mailbox: [`WatcherLease`] is a session advisory lock, held as long
//!   as its connection lives, so it passes to another daemon when its holder dies. The same
//!   kind of lock elects one leader among the daemons ([`PgStore::try_lead`]: the work that
//!   must be done once, not once per daemon), and says which daemons are alive
//!   ([`PgStore::hold_life`]): a daemon's in-flight marks are recovered by the leader only
//!   once that daemon's life lock is free ([`PgStore::in_flight_orphaned`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::fallible_iterator::FallibleIterator;

use super::{PgError, PgStore, Result, Session, Settings, column, millis, sql_limit};
use crate::lead::email_key;
use crate::store::OutboxEmail;

const CLAIM: &str = "WITH picked AS ( \
         SELECT workflow, lead_key FROM enrollments \
         WHERE due IS NOT NULL AND due <= $1 \
         AND (lease_until IS NULL OR lease_until <= clock_timestamp()) \
         ORDER BY due, workflow, lead_key LIMIT $2 \
         FOR UPDATE SKIP LOCKED) \
     UPDATE enrollments e \
     SET lease_owner = $3, lease_until = clock_timestamp() + $4 * interval '1 millisecond' \
     FROM picked WHERE e.workflow = picked.workflow AND e.lead_key = picked.lead_key \
     RETURNING e.due, e.workflow, e.lead_key";
const RELEASE: &str = "UPDATE enrollments SET lease_owner = NULL, lease_until = NULL \
     WHERE (workflow, lead_key) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
     AND lease_owner = $3";

const HOLD: &str = "UPDATE enrollments SET lease_owner = $2, \
     lease_until = clock_timestamp() + $3 * interval '1 millisecond' \
     WHERE lead_key = ANY($1) \
     AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until <= clock_timestamp())";
const HELD_ELSEWHERE: &str = "SELECT count(*) FROM enrollments WHERE lead_key = ANY($1) \
     AND lease_owner <> $2 AND lease_until > clock_timestamp()";
const LET_GO: &str = "UPDATE enrollments SET lease_owner = NULL, lease_until = NULL \
     WHERE lead_key = ANY($1) AND lease_owner = $2";

/// How often a hold on leads another daemon works on looks again.
const HOLD_RETRY: Duration = Duration::from_millis(10);

/// The channel the tables' triggers notify (migrations/0001_initial.sql).
const WAKE_CHANNEL: &str = "nurture_wake";

impl PgStore {
    /// Claims up to `limit` enrollments due at or before `now` that no live lease holds,
    /// earliest first, leasing them to this store's owner for `lease`; returns them as
    /// (workflow, email key). Each due enrollment is claimed by one claimer at a time.
    pub fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(String, String)>> {
        let owner: &str = &self.owner;
        let lease_ms = lease.as_millis() as f64;
        let rows = self.rows(CLAIM, &[&millis(now), &sql_limit(limit), &owner, &lease_ms])?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok((
                    column::<DateTime<Utc>>(row, 0, "due time")?,
                    column(row, 1, "enrollment")?,
                    column(row, 2, "enrollment")?,
                ))
            })
            .collect::<Result<Vec<(DateTime<Utc>, String, String)>>>()?;
        // UPDATE … RETURNING does not keep the order the rows were picked in.
        claimed.sort();
        Ok(claimed
            .into_iter()
            .map(|(_, workflow, email)| (workflow, email))
            .collect())
    }

    /// Lets go of this owner's leases on these enrollments (workflow, email) without writing
    /// them: work claimed but not done (a daemon stopping) goes back to the others at once.
    pub fn release(&self, enrollments: &[(String, String)]) -> Result<()> {
        let (workflows, keys): (Vec<&str>, Vec<String>) = enrollments
            .iter()
            .map(|(workflow, email)| (workflow.as_str(), email_key(email).into_owned()))
            .unzip();
        let owner: &str = &self.owner;
        self.rows(RELEASE, &[&workflows, &keys, &owner])?;
        Ok(())
    }

    /// Leases every enrollment of these leads to this owner, waiting (at most one lease
    /// period) while another daemon runs any of them: what arrives from outside (a reply, a
    /// click, an unsubscribe) reads and moves a lead's enrollments only while no one else can.
    /// The batch that writes an enrollment ends its lease; [`PgStore::let_go`] ends the rest.
    pub fn hold(&self, emails: &[&str]) -> Result<()> {
        let keys: Vec<String> = emails.iter().map(|e| email_key(e).into_owned()).collect();
        let owner: &str = &self.owner;
        let lease_ms = self.lease.as_millis() as f64;
        let deadline = std::time::Instant::now() + self.lease + Duration::from_secs(1);
        loop {
            self.rows(HOLD, &[&keys, &owner, &lease_ms])?;
            let held: i64 = self
                .rows(HELD_ELSEWHERE, &[&keys, &owner])?
                .first()
                .map(|row| column(row, 0, "count"))
                .transpose()?
                .unwrap_or_default();
            if held == 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(PgError::Record(crate::store::StoreError::Corrupt {
                    what: "lease",
                    detail: format!(
                        "the enrollments of {} stay held by another daemon",
                        emails.join(", ")
                    ),
                }));
            }
            std::thread::sleep(HOLD_RETRY);
        }
    }

    /// Ends this owner's leases on these leads' enrollments (those its batch did not write).
    pub fn let_go(&self, emails: &[&str]) -> Result<()> {
        let keys: Vec<String> = emails.iter().map(|e| email_key(e).into_owned()).collect();
        let owner: &str = &self.owner;
        self.rows(LET_GO, &[&keys, &owner])?;
        Ok(())
    }

    /// A wake-up channel on a connection of its own (see [`Waker`]).
    pub fn waker(&self) -> Result<Waker> {
        Waker::listen(&self.settings)
    }

    /// The inbox watcher's lease for `mailbox`, if no other daemon holds it (see
    /// [`WatcherLease`]).
    pub fn try_watch(&self, mailbox: &str) -> Result<Option<WatcherLease>> {
        let key = format!("nurture inbox watcher {mailbox}");
        WatcherLease::try_acquire(&self.settings, &key, mailbox)
    }

    /// The leader's lease, if no other daemon holds it: the leader enrolls, scans, retries the
    /// outbox, delivers webhooks and recovers the emails of daemons that died.
    pub fn try_lead(&self) -> Result<Option<WatcherLease>> {
        WatcherLease::try_acquire(&self.settings, LEADER, "leader")
    }

    /// This handle's life lock: held while its daemon lives, so that the others know its
    /// in-flight marks are being settled by it. Every owner name is unique, so it is free.
    pub fn hold_life(&self) -> Result<WatcherLease> {
        let key = life_key(&self.owner);
        WatcherLease::try_acquire(&self.settings, &key, &self.owner)?.ok_or_else(|| {
            PgError::Record(crate::store::StoreError::Corrupt {
                what: "daemon name",
                detail: format!("{} is already alive elsewhere", self.owner),
            })
        })
    }

    /// The in-flight marks of daemons that are gone (their life lock is free), with their
    /// emails: what a leader settles as the daemon that listed them would at its restart.
    pub fn in_flight_orphaned(&self) -> Result<Vec<(u64, Vec<OutboxEmail>)>> {
        let owner: &str = &self.owner;
        let owners = self.rows(
            "SELECT DISTINCT owner FROM in_flight WHERE owner <> $1",
            &[&owner],
        )?;
        let mut gone = Vec::new();
        if !owners.is_empty() {
            let mut session = self.settings.connect()?;
            for row in &owners {
                let name: String = column(row, 0, "in-flight owner")?;
                let key = life_key(&name);
                let free: bool = session
                    .query_one(
                        "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                        &[&key],
                    )?
                    .get(0);
                if free {
                    session.execute(
                        "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                        &[&key],
                    )?;
                    gone.push(name);
                }
            }
        }
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.rows(
            "SELECT mark, header, eml FROM in_flight WHERE owner = ANY($1) ORDER BY mark, position",
            &[&gone],
        )?;
        super::read::marks(&rows)
    }
}

/// The advisory lock key of the leader's lease.
const LEADER: &str = "nurture leader";

/// The advisory lock key of `owner`'s life.
fn life_key(owner: &str) -> String {
    format!("nurture daemon {owner}")
}

/// Listens for the notifications that work may have appeared. Dropping it closes its
/// connection.
pub struct Waker {
    client: Session,
}

impl Waker {
    fn listen(settings: &Settings) -> Result<Waker> {
        let mut client = settings.connect()?;
        client.batch_execute(&format!("LISTEN {WAKE_CHANNEL}"))?;
        Ok(Waker { client })
    }

    /// Waits until a notification arrives (true; the ones already waiting are taken with it)
    /// or `timeout` passes (false). An error means the connection is gone: listen again.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let woken = {
            let mut notifications = self.client.notifications();
            let woken = notifications.timeout_iter(timeout).next()?.is_some();
            // Several commits may have notified: one wake-up answers them all.
            while notifications.iter().next()?.is_some() {}
            woken
        };
        if !woken && self.client.is_closed() {
            // timeout_iter ends the same way on a timeout and on a lost connection.
            self.client.simple_query("")?;
        }
        Ok(woken)
    }
}

/// The right to watch one mailbox, held by one daemon at a time: a session-level advisory lock
/// on a connection of its own. It ends when dropped or when the connection dies (its daemon
/// killed, the network cut): then another daemon's [`PgStore::try_watch`] gets it.
pub struct WatcherLease {
    client: Session,
    mailbox: String,
}

impl WatcherLease {
    fn try_acquire(settings: &Settings, key: &str, mailbox: &str) -> Result<Option<WatcherLease>> {
        let mut client = settings.connect()?;
        let held: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&key],
            )?
            .get(0);
        Ok(held.then(|| WatcherLease {
            client,
            mailbox: mailbox.to_owned(),
        }))
    }

    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// Whether the lease still holds: its connection answers. A watcher checks before acting
    /// on what it read, and stops watching once this is false.
    pub fn held(&mut self) -> bool {
        !self.client.is_closed() && self.client.is_valid(Duration::from_secs(5)).is_ok()
    }
}
