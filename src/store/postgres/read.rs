//! The lookups and walks of [`PgStore`], with the sled store's orders and results. A walk over
//! a whole table ([`PgStore::leads`], [`PgStore::all_events`]…) reads it a page at a time
//! (keyset paging on its key), so a million leads never sit in memory at once.

use chrono::{DateTime, Utc};
use postgres::Row;
use postgres::types::ToSql;

use super::{PgStore, Result, column, millis, record, sql_limit};
use crate::engine::Enrollment;
use crate::lead::{Lead, email_key};
use crate::store::depths::Snapshot;
use crate::store::{Delivery, Event, MessageRecord, OutboxEmail};

/// Rows a walk reads at a time.
const PAGE: i64 = 1000;

/// How often a daemon on PostgreSQL counts the queues' depths again for `/metrics`.
pub const DEPTHS_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

impl PgStore {
    // ---- leads ----

    /// The lead with this address, whatever its spelling.
    pub fn lead(&self, email: &str) -> Result<Option<Lead>> {
        let rows = self.rows(
            "SELECT body FROM leads WHERE lead_key = $1",
            &[&email_key(email).as_ref()],
        )?;
        rows.first().map(|row| record(row, 0, "lead")).transpose()
    }

    /// Every lead, in the order of their folded addresses.
    pub fn leads(&self) -> Pages<String, Lead> {
        self.pages(
            "SELECT lead_key, body FROM leads ORDER BY lead_key LIMIT $1",
            "SELECT lead_key, body FROM leads WHERE lead_key > $2 ORDER BY lead_key LIMIT $1",
            |row| Ok((column(row, 0, "lead")?, record(row, 1, "lead")?)),
        )
    }

    /// Up to `limit` leads after `after` (exclusive), in address order: a resumable walk.
    pub fn leads_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<Lead>> {
        let after = after.map(|email| email_key(email).into_owned());
        let limit = sql_limit(limit);
        let rows = match &after {
            Some(key) => self.rows(
                "SELECT body FROM leads WHERE lead_key > $2 ORDER BY lead_key LIMIT $1",
                &[&limit, key],
            )?,
            None => self.rows(
                "SELECT body FROM leads ORDER BY lead_key LIMIT $1",
                &[&limit],
            )?,
        };
        rows.iter().map(|row| record(row, 0, "lead")).collect()
    }

    pub fn lead_count(&self) -> Result<usize> {
        self.count("SELECT count(*) FROM leads")
    }

    // ---- enrollments ----

    pub fn enrollment(&self, workflow: &str, email: &str) -> Result<Option<Enrollment>> {
        let rows = self.rows(
            "SELECT body FROM enrollments WHERE workflow = $1 AND lead_key = $2",
            &[&workflow, &email_key(email).as_ref()],
        )?;
        rows.first()
            .map(|row| record(row, 0, "enrollment"))
            .transpose()
    }

    /// A lead's enrollments, by workflow name.
    pub fn enrollments_of(&self, email: &str) -> Result<Vec<Enrollment>> {
        self.rows(
            "SELECT body FROM enrollments WHERE lead_key = $1 ORDER BY workflow",
            &[&email_key(email).as_ref()],
        )?
        .iter()
        .map(|row| record(row, 0, "enrollment"))
        .collect()
    }

    /// These enrollments (workflow, email), each with its lead, in one query: what a daemon
    /// reads for the work it claimed. Those that no longer exist are left out.
    pub fn enrollments_with_leads(
        &self,
        enrollments: &[(String, String)],
    ) -> Result<Vec<(Enrollment, Option<Lead>)>> {
        let (workflows, keys): (Vec<&str>, Vec<String>) = enrollments
            .iter()
            .map(|(workflow, email)| (workflow.as_str(), email_key(email).into_owned()))
            .unzip();
        self.rows(
            "SELECT e.body, l.body FROM unnest($1::text[], $2::text[]) WITH ORDINALITY \
             AS wanted (workflow, lead_key, n) \
             JOIN enrollments e USING (workflow, lead_key) \
             LEFT JOIN leads l ON l.lead_key = wanted.lead_key ORDER BY wanted.n",
            &[&workflows, &keys],
        )?
        .iter()
        .map(|row| {
            let lead: Option<postgres::types::Json<Lead>> = column(row, 1, "lead")?;
            Ok((record(row, 0, "enrollment")?, lead.map(|json| json.0)))
        })
        .collect()
    }

    /// Every enrollment, by workflow then lead.
    pub fn enrollments(&self) -> Pages<(String, String), Enrollment> {
        self.pages(
            "SELECT workflow, lead_key, body FROM enrollments \
             ORDER BY workflow, lead_key LIMIT $1",
            "SELECT workflow, lead_key, body FROM enrollments WHERE (workflow, lead_key) > ($2, $3) \
             ORDER BY workflow, lead_key LIMIT $1",
            |row| {
                let key = (column(row, 0, "enrollment")?, column(row, 1, "enrollment")?);
                Ok((key, record(row, 2, "enrollment")?))
            },
        )
    }

    /// Up to `limit` enrollments due at or before `now`, earliest first, as (workflow, email
    /// key), leased or not (a daemon sharing the database takes its work with
    /// [`PgStore::claim_due`]).
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(String, String)>> {
        self.rows(
            "SELECT workflow, lead_key FROM enrollments WHERE due IS NOT NULL AND due <= $1 \
             ORDER BY due, workflow, lead_key LIMIT $2",
            &[&millis(now), &sql_limit(limit)],
        )?
        .iter()
        .map(|row| {
            Ok((
                column(row, 0, "due enrollment")?,
                column(row, 1, "due enrollment")?,
            ))
        })
        .collect()
    }

    /// When the earliest enrollment no other daemon holds is due, if any is.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let owner: &str = &self.owner;
        let rows = self.rows(
            "SELECT due FROM enrollments WHERE due IS NOT NULL \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until <= clock_timestamp()) \
             ORDER BY due LIMIT 1",
            &[&owner],
        )?;
        rows.first()
            .map(|row| column(row, 0, "due time"))
            .transpose()
    }

    /// The next `limit` due times, with their enrollments (workflow, lead as spelled), for
    /// reports.
    pub fn upcoming(&self, limit: usize) -> Result<Vec<(DateTime<Utc>, String, String)>> {
        self.rows(
            "SELECT due, workflow, body->>'lead' FROM enrollments WHERE due IS NOT NULL \
             ORDER BY due, workflow, lead_key LIMIT $1",
            &[&sql_limit(limit)],
        )?
        .iter()
        .map(|row| {
            Ok((
                column(row, 0, "due time")?,
                column(row, 1, "enrollment")?,
                column(row, 2, "enrollment")?,
            ))
        })
        .collect()
    }

    // ---- leads whose data changed ----

    /// Up to `limit` leads enrollment has not looked at since they changed (their keys).
    pub fn changed(&self, limit: usize) -> Result<Vec<String>> {
        self.rows(
            "SELECT lead_key FROM changed ORDER BY lead_key LIMIT $1",
            &[&sql_limit(limit)],
        )?
        .iter()
        .map(|row| column(row, 0, "changed lead"))
        .collect()
    }

    // ---- the journal ----

    /// A lead's events, oldest first.
    pub fn events_of(&self, email: &str) -> Result<Vec<Event>> {
        self.rows(
            "SELECT body FROM events WHERE lead_key = $1 ORDER BY seq",
            &[&email_key(email).as_ref()],
        )?
        .iter()
        .map(|row| record(row, 0, "event"))
        .collect()
    }

    /// Every event of every lead, lead by lead, with the lead's key.
    pub fn all_events(&self) -> Pages<(String, i64), (String, Event)> {
        self.pages(
            "SELECT lead_key, seq, body FROM events ORDER BY lead_key, seq LIMIT $1",
            "SELECT lead_key, seq, body FROM events WHERE (lead_key, seq) > ($2, $3) \
             ORDER BY lead_key, seq LIMIT $1",
            |row| {
                let key: (String, i64) = (column(row, 0, "event")?, column(row, 1, "event")?);
                let event: Event = record(row, 2, "event")?;
                Ok((key.clone(), (key.0, event)))
            },
        )
    }

    // ---- messages and the outbox ----

    pub fn message(&self, message_id: &str) -> Result<Option<MessageRecord>> {
        let rows = self.rows(
            "SELECT body FROM messages WHERE message_id = $1",
            &[&message_id],
        )?;
        rows.first()
            .map(|row| record(row, 0, "message"))
            .transpose()
    }

    /// The emails handed to a transport since `since`, as (time, sender, recipient), the
    /// latest Message-ID first (as the sled store returns them).
    pub fn sent_since(&self, since: DateTime<Utc>) -> Result<Vec<(DateTime<Utc>, String, String)>> {
        self.rows(
            "SELECT body FROM messages WHERE at >= $1 ORDER BY message_id DESC",
            &[&since],
        )?
        .iter()
        .map(|row| {
            let record: MessageRecord = record(row, 0, "message")?;
            Ok((record.at, record.sender, record.lead))
        })
        .collect()
    }

    pub fn messages(&self) -> Pages<String, MessageRecord> {
        self.pages(
            "SELECT message_id, body FROM messages ORDER BY message_id LIMIT $1",
            "SELECT message_id, body FROM messages WHERE message_id > $2 \
             ORDER BY message_id LIMIT $1",
            |row| Ok((column(row, 0, "message")?, record(row, 1, "message")?)),
        )
    }

    /// Up to `limit` outbox emails that may leave at `now`, in order.
    pub fn outbox_ready(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxEmail>> {
        self.rows(
            "SELECT header, eml FROM outbox WHERE not_before <= $1 \
             ORDER BY not_before, message_id LIMIT $2",
            &[&millis(now), &sql_limit(limit)],
        )?
        .iter()
        .map(|row| email(row, 0))
        .collect()
    }

    /// Every email in the outbox, in the order they may leave.
    pub fn outbox(&self) -> Pages<(DateTime<Utc>, String), OutboxEmail> {
        self.pages(
            "SELECT not_before, message_id, header, eml FROM outbox \
             ORDER BY not_before, message_id LIMIT $1",
            "SELECT not_before, message_id, header, eml FROM outbox \
             WHERE (not_before, message_id) > ($2, $3) ORDER BY not_before, message_id LIMIT $1",
            |row| {
                let key = (
                    column(row, 0, "outbox email")?,
                    column(row, 1, "outbox email")?,
                );
                Ok((key, email(row, 2)?))
            },
        )
    }

    /// When the earliest outbox email may leave.
    pub fn outbox_next(&self) -> Result<Option<DateTime<Utc>>> {
        let rows = self.rows("SELECT min(not_before) FROM outbox", &[])?;
        Ok(rows
            .first()
            .map(|row| column::<Option<DateTime<Utc>>>(row, 0, "outbox time"))
            .transpose()?
            .flatten())
    }

    pub fn outbox_len(&self) -> Result<usize> {
        self.count("SELECT count(*) FROM outbox")
    }

    /// The outbox email with this key, if it is still there.
    pub fn outbox_email(
        &self,
        not_before: DateTime<Utc>,
        message_id: &str,
    ) -> Result<Option<OutboxEmail>> {
        let rows = self.rows(
            "SELECT header, eml FROM outbox WHERE not_before = $1 AND message_id = $2",
            &[&millis(not_before), &message_id],
        )?;
        rows.first().map(|row| email(row, 0)).transpose()
    }

    /// A fresh id, unique in this database (for in-flight marks).
    pub fn new_id(&self) -> Result<u64> {
        let rows = self.rows("SELECT nextval('nurture_ids')", &[])?;
        let id: i64 = rows
            .first()
            .map(|row| column(row, 0, "id"))
            .transpose()?
            .unwrap_or_default();
        Ok(id as u64)
    }

    /// Every in-flight mark still set, with its emails and their MIME bytes.
    pub fn in_flight(&self) -> Result<Vec<(u64, Vec<OutboxEmail>)>> {
        let rows = self.rows(
            "SELECT mark, header, eml FROM in_flight ORDER BY mark, position",
            &[],
        )?;
        marks(&rows)
    }

    /// The kept copies of uncertain emails, by Message-ID.
    pub fn uncertain(&self) -> Result<Vec<OutboxEmail>> {
        self.rows("SELECT header, eml FROM uncertain ORDER BY message_id", &[])?
            .iter()
            .map(|row| email(row, 0))
            .collect()
    }

    // ---- webhooks ----

    /// The deliveries waiting, soonest due first.
    pub fn webhooks_pending(&self) -> Pages<(DateTime<Utc>, String), Delivery> {
        self.pages(
            "SELECT next_attempt, id, body FROM webhooks ORDER BY next_attempt, id LIMIT $1",
            "SELECT next_attempt, id, body FROM webhooks WHERE (next_attempt, id) > ($2, $3) \
             ORDER BY next_attempt, id LIMIT $1",
            |row| {
                let key = (
                    column(row, 0, "webhook delivery")?,
                    column(row, 1, "webhook delivery")?,
                );
                Ok((key, record(row, 2, "webhook delivery")?))
            },
        )
    }

    /// The deliveries given up, by id.
    pub fn webhooks_failed(&self) -> Pages<String, Delivery> {
        self.pages(
            "SELECT id, body FROM webhooks_failed ORDER BY id LIMIT $1",
            "SELECT id, body FROM webhooks_failed WHERE id > $2 ORDER BY id LIMIT $1",
            |row| {
                Ok((
                    column(row, 0, "failed webhook delivery")?,
                    record(row, 1, "failed webhook delivery")?,
                ))
            },
        )
    }

    // ---- meta for other components (mail watchers) ----

    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let rows = self.rows("SELECT value FROM meta WHERE key = $1", &[&key])?;
        rows.first().map(|row| column(row, 0, "meta")).transpose()
    }

    pub fn meta_set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.rows(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    /// Up to `limit` meta entries whose keys start with `prefix`, in key order.
    pub fn meta_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        self.rows(
            "SELECT key, value FROM meta WHERE starts_with(key, $1) ORDER BY key LIMIT $2",
            &[&prefix, &sql_limit(limit)],
        )?
        .iter()
        .map(|row| Ok((column(row, 0, "meta")?, column(row, 1, "meta")?)))
        .collect()
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        let rows = self.rows("SELECT pg_database_size(current_database())", &[])?;
        let size: i64 = rows
            .first()
            .map(|row| column(row, 0, "size"))
            .transpose()?
            .unwrap_or_default();
        Ok(size as u64)
    }

    /// Counts the queues' depths in the database (active enrollments by workflow, enrollments
    /// with a due time, the outbox) and keeps them for [`PgStore::depths`]. Several daemons
    /// write the tables, so no process can keep these figures as it writes, as the sled store
    /// does: the daemon counts again every [`DEPTHS_EVERY`].
    pub fn count_depths(&self) -> Result<()> {
        let active = self
            .rows(
                "SELECT workflow, count(*) FROM enrollments \
                 WHERE body->'status'->>'status' = 'active' GROUP BY workflow ORDER BY workflow",
                &[],
            )?
            .iter()
            .map(|row| {
                let count: i64 = column(row, 1, "count")?;
                Ok((column(row, 0, "workflow")?, count as u64))
            })
            .collect::<Result<Vec<(String, u64)>>>()?;
        let snapshot = Snapshot {
            active,
            due: self.count("SELECT count(*) FROM enrollments WHERE due IS NOT NULL")? as u64,
            outbox: self.count("SELECT count(*) FROM outbox")? as u64,
        };
        *self
            .depths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snapshot);
        Ok(())
    }

    /// The depths as last counted; none before the first count.
    pub fn depths(&self) -> Option<Snapshot> {
        self.depths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every change is durable once its batch has committed: nothing to flush (kept for the
    /// sled store's callers).
    pub fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn count(&self, sql: &'static str) -> Result<usize> {
        let rows = self.rows(sql, &[])?;
        let count: i64 = rows
            .first()
            .map(|row| column(row, 0, "count"))
            .transpose()?
            .unwrap_or_default();
        Ok(count as usize)
    }

    /// A walk over a table in key order: `first` reads the first page (`$1`: the page size),
    /// `after` the page after a key (`$2`, `$3`: the key's parts), `decode` makes a row into
    /// its key and item.
    fn pages<K: Cursor, T>(
        &self,
        first: &'static str,
        after: &'static str,
        decode: fn(&Row) -> Result<(K, T)>,
    ) -> Pages<K, T> {
        Pages {
            store: self.clone(),
            first,
            after,
            decode,
            cursor: None,
            page: Vec::new().into_iter(),
            done: false,
        }
    }
}

/// An email from its JSON header (column `at`) and its MIME bytes (the next column).
/// In-flight rows (mark, header, eml, in mark order) as marks with their emails.
pub(super) fn marks(rows: &[Row]) -> Result<Vec<(u64, Vec<OutboxEmail>)>> {
    let mut marks: Vec<(u64, Vec<OutboxEmail>)> = Vec::new();
    for row in rows {
        let mark = column::<i64>(row, 0, "in-flight mark")? as u64;
        let email = email(row, 1)?;
        match marks.last_mut() {
            Some((last, emails)) if *last == mark => emails.push(email),
            _ => marks.push((mark, vec![email])),
        }
    }
    Ok(marks)
}

fn email(row: &Row, at: usize) -> Result<OutboxEmail> {
    let mut email: OutboxEmail = record(row, at, "outbox email")?;
    email.eml = column(row, at + 1, "outbox email")?;
    Ok(email)
}

/// The key of a table's row, as the parameters of the query for the rows after it.
pub trait Cursor: Clone {
    fn params(&self) -> Vec<&(dyn ToSql + Sync)>;
}

impl Cursor for String {
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![self]
    }
}

impl<A: ToSql + Sync + Clone, B: ToSql + Sync + Clone> Cursor for (A, B) {
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.0, &self.1]
    }
}

/// A walk over a whole table, a page at a time (see [`PgStore::pages`]). An error ends it.
pub struct Pages<K, T> {
    store: PgStore,
    first: &'static str,
    after: &'static str,
    decode: fn(&Row) -> Result<(K, T)>,
    cursor: Option<K>,
    page: std::vec::IntoIter<T>,
    done: bool,
}

impl<K: Cursor, T> Pages<K, T> {
    fn next_page(&mut self) -> Result<()> {
        let rows = match &self.cursor {
            None => self.store.rows(self.first, &[&PAGE])?,
            Some(cursor) => {
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&PAGE];
                params.extend(cursor.params());
                self.store.rows(self.after, &params)?
            }
        };
        self.done = (rows.len() as i64) < PAGE;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let (key, item) = (self.decode)(row)?;
            self.cursor = Some(key);
            items.push(item);
        }
        self.page = items.into_iter();
        Ok(())
    }
}

impl<K: Cursor, T> Iterator for Pages<K, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(item) = self.page.next() {
                return Some(Ok(item));
            }
            if self.done {
                return None;
            }
            if let Err(error) = self.next_page() {
                self.done = true;
                return Some(Err(error));
            }
        }
    }
}
