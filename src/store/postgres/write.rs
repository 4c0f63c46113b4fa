//! [`PgStore::apply`]: a [`Batch`] as one transaction, its parts in the order the sled store
//! applies them, each part one statement over arrays (`unnest`), whatever its number of rows.
//!
//! An enrollment is written only if no other owner holds a live lease on it: a daemon whose
//! lease ran out while it worked (and whose enrollment another daemon has since claimed) gets
//! [`PgError::Leased`] and its whole batch is rolled back, so the step is not done twice.
//! Writing an enrollment ends its lease: the batch that moves it hands it back to everyone.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use chrono::{DateTime, Utc};
use postgres::Transaction;
use postgres::types::{Json, ToSql};

use super::pool::{Conn, Statements};
use super::{PgError, PgStore, Result, column, millis, record};
use crate::lead::{Lead, email_key};
use crate::store::{Batch, Delivery, OutboxEmail};

const LEADS_PUT: &str = "INSERT INTO leads (lead_key, body) \
     SELECT * FROM unnest($1::text[], $2::jsonb[]) \
     ON CONFLICT (lead_key) DO UPDATE SET body = excluded.body";
const LEAD_GET: &str = "SELECT body FROM leads WHERE lead_key = $1";
const ENROLLMENTS_PUT: &str = "INSERT INTO enrollments AS e (workflow, lead_key, due, body) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[]) \
     ON CONFLICT (workflow, lead_key) DO UPDATE \
     SET due = excluded.due, body = excluded.body, lease_owner = NULL, lease_until = NULL \
     WHERE e.lease_owner IS NULL OR e.lease_owner = $5 OR e.lease_until <= clock_timestamp()";
const ENROLLMENTS_HELD: &str = "SELECT workflow, body->>'lead', lease_owner, lease_until \
     FROM enrollments WHERE (workflow, lead_key) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
     AND lease_owner <> $3 LIMIT 1";
const IDS: &str = "SELECT nextval('nurture_ids') FROM generate_series(1, $1::int)";
const EVENTS_PUT: &str = "INSERT INTO events (seq, lead_key, body) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::jsonb[])";
const OUTBOX_REMOVE: &str = "DELETE FROM outbox WHERE (not_before, message_id) IN \
     (SELECT * FROM unnest($1::timestamptz[], $2::text[]))";
const OUTBOX_PUT: &str = "INSERT INTO outbox (not_before, message_id, header, eml) \
     SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::jsonb[], $4::bytea[]) \
     ON CONFLICT (not_before, message_id) DO UPDATE SET header = excluded.header, eml = excluded.eml";
const MESSAGES_REMOVE: &str = "DELETE FROM messages WHERE message_id = ANY($1::text[])";
const MESSAGES_PUT: &str = "INSERT INTO messages (message_id, at, body) \
     SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::jsonb[]) \
     ON CONFLICT (message_id) DO UPDATE SET at = excluded.at, body = excluded.body";
const CHANGED_REMOVE: &str = "DELETE FROM changed WHERE lead_key = ANY($1::text[])";
const CHANGED_PUT: &str = "INSERT INTO changed (lead_key) SELECT * FROM unnest($1::text[]) \
     ON CONFLICT DO NOTHING";
const IN_FLIGHT_REMOVE: &str = "DELETE FROM in_flight WHERE mark = ANY($1::bigint[])";
const IN_FLIGHT_PUT: &str = "INSERT INTO in_flight (mark, owner, position, header, eml) \
     SELECT $1, $5, * FROM unnest($2::int[], $3::jsonb[], $4::bytea[])";
const UNCERTAIN_REMOVE: &str = "DELETE FROM uncertain WHERE message_id = ANY($1::text[])";
const UNCERTAIN_PUT: &str = "INSERT INTO uncertain (message_id, header, eml) \
     SELECT * FROM unnest($1::text[], $2::jsonb[], $3::bytea[]) \
     ON CONFLICT (message_id) DO UPDATE SET header = excluded.header, eml = excluded.eml";
const META_PUT: &str = "INSERT INTO meta (key, value) SELECT * FROM unnest($1::text[], $2::bytea[]) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const META_REMOVE: &str = "DELETE FROM meta WHERE key = ANY($1::text[])";
const WEBHOOKS_REMOVE: &str = "DELETE FROM webhooks WHERE (next_attempt, id) IN \
     (SELECT * FROM unnest($1::timestamptz[], $2::text[]))";
const WEBHOOKS_PUT: &str = "INSERT INTO webhooks (next_attempt, id, body) \
     SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::jsonb[]) \
     ON CONFLICT (next_attempt, id) DO UPDATE SET body = excluded.body";
const FAILED_REMOVE: &str = "DELETE FROM webhooks_failed WHERE id = ANY($1::text[])";
const FAILED_PUT: &str = "INSERT INTO webhooks_failed (id, body) \
     SELECT * FROM unnest($1::text[], $2::jsonb[]) \
     ON CONFLICT (id) DO UPDATE SET body = excluded.body";

/// One transaction's statements, prepared once per connection.
struct Writer<'a, 'c> {
    tx: &'a mut Transaction<'c>,
    statements: &'a mut Statements,
}

impl Writer<'_, '_> {
    fn execute(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let statement = self.statements.get(self.tx, sql)?;
        Ok(self.tx.execute(&statement, params)?)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        let statement = self.statements.get(self.tx, sql)?;
        Ok(self.tx.query(&statement, params)?)
    }
}

impl PgStore {
    /// Applies `batch` as one transaction: all of it, or (on any error) none of it.
    pub fn apply(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let Conn { client, statements } = &mut *conn;
        let mut tx = client.transaction()?;
        let mut writer = Writer {
            tx: &mut tx,
            statements,
        };
        self.write(&mut writer, batch)?;
        // On an error above, dropping the transaction rolls it back.
        tx.commit()?;
        Ok(())
    }

    fn write(&self, w: &mut Writer, batch: &Batch) -> Result<()> {
        if !batch.leads.is_empty() {
            let leads = last_by(&batch.leads, |lead| email_key(&lead.email).into_owned());
            let keys: Vec<String> = leads
                .iter()
                .map(|lead| email_key(&lead.email).into_owned())
                .collect();
            let bodies: Vec<Json<&Lead>> = leads.iter().map(|lead| Json(*lead)).collect();
            w.execute(LEADS_PUT, &[&keys, &bodies])?;
        }
        if !batch.enrollments.is_empty() {
            self.write_enrollments(w, batch)?;
        }
        let mut webhooks_put: Vec<Delivery> = batch.webhooks_put.clone();
        if !batch.events.is_empty() {
            self.write_events(w, batch, &mut webhooks_put)?;
        }
        if !batch.outbox_remove.is_empty() {
            let (times, ids) = time_keys(&batch.outbox_remove);
            w.execute(OUTBOX_REMOVE, &[&times, &ids])?;
        }
        if !batch.outbox_put.is_empty() {
            let emails = last_by(&batch.outbox_put, |e| {
                (millis(e.not_before), e.message_id.clone())
            });
            let times: Vec<DateTime<Utc>> = emails.iter().map(|e| millis(e.not_before)).collect();
            let ids: Vec<&str> = emails.iter().map(|e| e.message_id.as_str()).collect();
            let (headers, emls) = headers_and_bytes(&emails);
            w.execute(OUTBOX_PUT, &[&times, &ids, &headers, &emls])?;
        }
        if !batch.messages_remove.is_empty() {
            w.execute(MESSAGES_REMOVE, &[&batch.messages_remove])?;
        }
        if !batch.messages.is_empty() {
            let messages = last_by(&batch.messages, |m| m.message_id.clone());
            let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
            let times: Vec<DateTime<Utc>> = messages.iter().map(|m| m.at).collect();
            let bodies: Vec<Json<_>> = messages.iter().map(|m| Json(*m)).collect();
            w.execute(MESSAGES_PUT, &[&ids, &times, &bodies])?;
        }
        if !batch.changed_done.is_empty() {
            w.execute(CHANGED_REMOVE, &[&lead_keys(&batch.changed_done)])?;
        }
        if !batch.changed.is_empty() {
            w.execute(CHANGED_PUT, &[&lead_keys(&batch.changed)])?;
        }
        if !batch.in_flight_clear.is_empty() {
            let marks: Vec<i64> = batch.in_flight_clear.iter().map(|m| *m as i64).collect();
            w.execute(IN_FLIGHT_REMOVE, &[&marks])?;
        }
        if let Some((mark, emails)) = &batch.in_flight_set {
            // Setting a mark replaces what it listed, as writing its sled key does.
            let mark = *mark as i64;
            w.execute(IN_FLIGHT_REMOVE, &[&vec![mark]])?;
            let positions: Vec<i32> = (0..emails.len() as i32).collect();
            let emails: Vec<&OutboxEmail> = emails.iter().collect();
            let (headers, emls) = headers_and_bytes(&emails);
            let owner: &str = &self.owner;
            w.execute(IN_FLIGHT_PUT, &[&mark, &positions, &headers, &emls, &owner])?;
        }
        if !batch.uncertain_remove.is_empty() {
            w.execute(UNCERTAIN_REMOVE, &[&batch.uncertain_remove])?;
        }
        if !batch.uncertain_put.is_empty() {
            let emails = last_by(&batch.uncertain_put, |e| e.message_id.clone());
            let ids: Vec<&str> = emails.iter().map(|e| e.message_id.as_str()).collect();
            let (headers, emls) = headers_and_bytes(&emails);
            w.execute(UNCERTAIN_PUT, &[&ids, &headers, &emls])?;
        }
        if !batch.meta_put.is_empty() {
            let entries = last_by(&batch.meta_put, |(key, _)| key.clone());
            let keys: Vec<&str> = entries.iter().map(|(key, _)| key.as_str()).collect();
            let values: Vec<&[u8]> = entries.iter().map(|(_, value)| value.as_slice()).collect();
            w.execute(META_PUT, &[&keys, &values])?;
        }
        if !batch.webhooks_remove.is_empty() {
            let (times, ids) = time_keys(&batch.webhooks_remove);
            w.execute(WEBHOOKS_REMOVE, &[&times, &ids])?;
        }
        if !webhooks_put.is_empty() {
            let deliveries = last_by(&webhooks_put, |d| (millis(d.next_attempt), d.id.clone()));
            let times: Vec<DateTime<Utc>> =
                deliveries.iter().map(|d| millis(d.next_attempt)).collect();
            let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
            let bodies: Vec<Json<&Delivery>> = deliveries.iter().map(|d| Json(*d)).collect();
            w.execute(WEBHOOKS_PUT, &[&times, &ids, &bodies])?;
        }
        if !batch.webhooks_failed_remove.is_empty() {
            w.execute(FAILED_REMOVE, &[&batch.webhooks_failed_remove])?;
        }
        if !batch.webhooks_failed_put.is_empty() {
            let deliveries = last_by(&batch.webhooks_failed_put, |d| d.id.clone());
            let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
            let bodies: Vec<Json<&Delivery>> = deliveries.iter().map(|d| Json(*d)).collect();
            w.execute(FAILED_PUT, &[&ids, &bodies])?;
        }
        if !batch.meta_remove.is_empty() {
            w.execute(META_REMOVE, &[&batch.meta_remove])?;
        }
        Ok(())
    }

    /// Writes the batch's enrollments (their due times with them), unless another owner holds
    /// one of them.
    fn write_enrollments(&self, w: &mut Writer, batch: &Batch) -> Result<()> {
        let enrollments = last_by(&batch.enrollments, |e| {
            (e.workflow.clone(), email_key(&e.lead).into_owned())
        });
        let workflows: Vec<&str> = enrollments.iter().map(|e| e.workflow.as_str()).collect();
        let keys: Vec<String> = enrollments
            .iter()
            .map(|e| email_key(&e.lead).into_owned())
            .collect();
        let dues: Vec<Option<DateTime<Utc>>> =
            enrollments.iter().map(|e| e.due.map(millis)).collect();
        let bodies: Vec<Json<_>> = enrollments.iter().map(|e| Json(*e)).collect();
        let owner: &str = &self.owner;
        let written = w.execute(
            ENROLLMENTS_PUT,
            &[&workflows, &keys, &dues, &bodies, &owner],
        )?;
        if written < enrollments.len() as u64 {
            let rows = w.query(ENROLLMENTS_HELD, &[&workflows, &keys, &owner])?;
            // The enrollments written have no lease now, and those refused stay locked by this
            // transaction: the ones left with another's lease are the refused ones.
            let Some(row) = rows.first() else {
                return Err(PgError::Record(crate::store::StoreError::Corrupt {
                    what: "enrollment lease",
                    detail: "an enrollment was refused, but no lease holds it".into(),
                }));
            };
            return Err(PgError::Leased {
                workflow: column(row, 0, "enrollment")?,
                lead: column(row, 1, "enrollment")?,
                owner: column(row, 2, "enrollment lease")?,
                until: column(row, 3, "enrollment lease")?,
            });
        }
        Ok(())
    }

    /// Appends the batch's journal lines, in order, and queues the webhooks they call for.
    fn write_events(
        &self,
        w: &mut Writer,
        batch: &Batch,
        webhooks_put: &mut Vec<Delivery>,
    ) -> Result<()> {
        let count = batch.events.len() as i32;
        let sequences: Vec<i64> = w
            .query(IDS, &[&count])?
            .iter()
            .map(|row| column(row, 0, "journal sequence"))
            .collect::<Result<_>>()?;
        if !self.routes.is_empty() {
            // The leads of this batch as they will stand, for the webhooks' bodies.
            let in_batch: HashMap<String, &Lead> = batch
                .leads
                .iter()
                .map(|lead| (email_key(&lead.email).into_owned(), lead))
                .collect();
            for ((lead, event), sequence) in batch.events.iter().zip(&sequences) {
                if !self.routes.may_want(&event.kind) {
                    continue;
                }
                let key = email_key(lead);
                let stored: Option<Lead>;
                let current = match in_batch.get(key.as_ref()) {
                    Some(lead) => Some(*lead),
                    None => {
                        let rows = w.query(LEAD_GET, &[&key.as_ref()])?;
                        stored = rows.first().map(|row| record(row, 0, "lead")).transpose()?;
                        stored.as_ref()
                    }
                };
                // Unique in this store (the journal line's sequence) and across stores (its
                // time), as the sled store makes them.
                let base = format!("msg_{:x}_{sequence:x}", event.at.timestamp_millis());
                let mut route = 0;
                webhooks_put.extend(self.routes.deliveries(lead, current, event, || {
                    route += 1;
                    format!("{base}_{route}")
                }));
            }
        }
        let keys = lead_keys(batch.events.iter().map(|(lead, _)| lead));
        let bodies: Vec<Json<_>> = batch.events.iter().map(|(_, event)| Json(event)).collect();
        w.execute(EVENTS_PUT, &[&sequences, &keys, &bodies])?;
        Ok(())
    }
}

/// The items with distinct keys, the last of each kept: a batch that writes one key twice
/// means its last write, as in the sled store (and one SQL statement may not write a row twice).
fn last_by<T, K: Eq + Hash>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut seen = HashSet::new();
    let mut kept: Vec<&T> = items
        .iter()
        .rev()
        .filter(|item| seen.insert(key(item)))
        .collect();
    kept.reverse();
    kept
}

fn lead_keys<'a>(emails: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    emails
        .into_iter()
        .map(|email| email_key(email).into_owned())
        .collect()
}

/// (time, id) keys as two arrays, the times to the millisecond.
fn time_keys(keys: &[(DateTime<Utc>, String)]) -> (Vec<DateTime<Utc>>, Vec<&str>) {
    keys.iter()
        .map(|(at, id)| (millis(*at), id.as_str()))
        .unzip()
}

/// Emails as their JSON headers and their MIME bytes (kept apart: the header has no bytes).
fn headers_and_bytes<'a>(
    emails: &[&'a OutboxEmail],
) -> (Vec<Json<&'a OutboxEmail>>, Vec<&'a [u8]>) {
    emails
        .iter()
        .map(|email| (Json(*email), email.eml.as_slice()))
        .unzip()
}
