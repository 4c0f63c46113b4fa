//! `nurture store copy --from SOURCE --to TARGET`: moves a whole store between the backends
//! (a sled folder, or a `postgres://` URL whose password comes from `[store]`
//! `password_file` / `password_env`), both ways.
//!
//! Everything a daemon needs to carry on where the source left off is copied as it stands:
//! leads, enrollments with their due times, the journal (each lead's lines in order), email
//! records, the outbox, the leads waiting for enrollment, emails in flight and uncertain, the
//! webhook queues, and meta (the unsubscribe key, sign-ups, the inbox positions). A daemon
//! started on the copy sends what was due and nothing that was sent. The target must be empty
//! and no daemon may run on either side; the counts are compared once the copy is done.

use clap::{Args, Subcommand};

use super::{Cli, CliError, ExitCode};
use crate::config::StoreConfig;
use crate::store::{Batch, Store};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreSubcommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreSubcommand {
    /// Copy a whole store into an empty one: sled to PostgreSQL, or back.
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The store to copy: a sled folder, or postgres://user@host:port/db.
    #[arg(long)]
    pub from: String,
    /// The empty store to copy into: a sled folder, or postgres://user@host:port/db.
    #[arg(long)]
    pub to: String,
}

/// Records written per transaction.
const CHUNK: usize = 1000;

/// Meta entries that belong to the sled store's own layout, not to what it holds.
const LAYOUT_META: [&str; 4] = [
    "schema_version",
    "restore_incomplete",
    "in_flight:",
    "uncertain:",
];

pub fn run(cli: &Cli, args: &StoreArgs) -> Result<ExitCode, CliError> {
    let StoreSubcommand::Copy(copy) = &args.command;
    let config = cli.load_config()?;
    let open = |place: &str| -> Result<Store, CliError> {
        let mut store = StoreConfig {
            cache_mb: config.store.cache_mb,
            password_file: config.store.password_file.clone(),
            password_env: config.store.password_env.clone(),
            ca_file: config.store.ca_file.clone(),
            ..StoreConfig::default()
        };
        if place.starts_with("postgres://") || place.starts_with("postgresql://") {
            store.url = place.to_owned();
        } else {
            store.path = place.into();
        }
        let opened =
            Store::open_configured(&store).map_err(|e| CliError::Input(format!("{place}: {e}")))?;
        if let Some(shared) = opened.shared() {
            // A running daemon holds the lead: its writes would be missed by the copy.
            let lead = shared
                .try_lead()
                .map_err(|e| CliError::Input(e.to_string()))?;
            if lead.is_none() {
                return Err(CliError::Input(format!(
                    "{place}: a daemon runs on this database; stop every daemon first"
                )));
            }
        }
        Ok(opened)
    };
    let source = open(&copy.from)?;
    let target = open(&copy.to)?;
    if target.lead_count() > 0 || target.enrollments().next().is_some() {
        return Err(CliError::Input(format!(
            "{}: the target store is not empty; copy into an empty store",
            copy.to
        )));
    }
    let copied = copy_all(&source, &target).map_err(|e| CliError::Input(e.to_string()))?;
    // The counters a sled target keeps are counted once, from what was copied.
    target
        .recount(true)
        .map_err(|e| CliError::Input(e.to_string()))?;
    let check = counts(&target).map_err(|e| CliError::Input(e.to_string()))?;
    if check != copied {
        return Err(CliError::Input(format!(
            "the copy does not match its source: copied {copied:?}, found {check:?} in {}",
            copy.to
        )));
    }
    super::close(&source);
    super::close(&target);
    println!(
        "copied {} into {}: {} leads, {} enrollments, {} journal lines, {} emails, {} waiting in the outbox",
        copy.from,
        copy.to,
        copied.leads,
        copied.enrollments,
        copied.events,
        copied.messages,
        copied.outbox
    );
    Ok(ExitCode::Success)
}

/// What a store holds, counted.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    leads: usize,
    enrollments: usize,
    events: usize,
    messages: usize,
    outbox: usize,
}

fn counts(store: &Store) -> crate::store::Result<Counts> {
    Ok(Counts {
        leads: count(store.leads())?,
        enrollments: count(store.enrollments())?,
        events: count(store.all_events())?,
        messages: count(store.messages())?,
        outbox: count(store.outbox())?,
    })
}

fn count<T>(mut walk: crate::store::Walk<'_, T>) -> crate::store::Result<usize> {
    walk.try_fold(0, |n, item| item.map(|_| n + 1))
}

/// Copies every record of `source` into `target`, a chunk per transaction.
fn copy_all(source: &Store, target: &Store) -> crate::store::Result<Counts> {
    let mut counts = Counts::default();
    let mut batch = Batch::default();
    let mut pending = 0;
    let flush = |batch: &mut Batch, pending: &mut usize, force: bool| {
        if *pending >= CHUNK || (force && *pending > 0) {
            target.apply(&std::mem::take(batch))?;
            *pending = 0;
        }
        Ok::<_, crate::store::StoreError>(())
    };
    for lead in source.leads() {
        batch.leads.push(lead?);
        counts.leads += 1;
        pending += 1;
        flush(&mut batch, &mut pending, false)?;
    }
    for enrollment in source.enrollments() {
        batch.enrollments.push(enrollment?);
        counts.enrollments += 1;
        pending += 1;
        flush(&mut batch, &mut pending, false)?;
    }
    for event in source.all_events() {
        batch.events.push(event?);
        counts.events += 1;
        pending += 1;
        flush(&mut batch, &mut pending, false)?;
    }
    for message in source.messages() {
        batch.messages.push(message?);
        counts.messages += 1;
        pending += 1;
        flush(&mut batch, &mut pending, false)?;
    }
    for email in source.outbox() {
        batch.outbox_put.push(email?);
        counts.outbox += 1;
        pending += 1;
        flush(&mut batch, &mut pending, false)?;
    }
    batch.changed = source.changed(usize::MAX)?;
    batch.uncertain_put = source.uncertain()?;
    batch.meta_put = source
        .meta_prefix("", usize::MAX)?
        .into_iter()
        .filter(|(key, _)| !LAYOUT_META.iter().any(|layout| key.starts_with(layout)))
        .collect();
    for delivery in source.webhooks_pending() {
        batch.webhooks_put.push(delivery?);
    }
    for delivery in source.webhooks_failed() {
        batch.webhooks_failed_put.push(delivery?);
    }
    pending += 1;
    flush(&mut batch, &mut pending, true)?;
    // One mark per transaction: a batch lists one.
    for mark in source.in_flight()? {
        target.apply(&Batch {
            in_flight_set: Some(mark),
            ..Batch::default()
        })?;
    }
    Ok(counts)
}
