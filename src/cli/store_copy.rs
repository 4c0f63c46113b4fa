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
    // Errors name the side (`--from`, `--to`), not the place: a URL typed with a password in
    // it is refused, never echoed.
    let open = |side: &str, place: &str| -> Result<Store, CliError> {
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
            Store::open_configured(&store).map_err(|e| CliError::Input(format!("{side}: {e}")))?;
        if let Some(shared) = opened.shared() {
            // A running daemon holds the lead: its writes would be missed by the copy.
            let lead = shared
                .try_lead()
                .map_err(|e| CliError::Input(e.to_string()))?;
            if lead.is_none() {
                return Err(CliError::Input(format!(
                    "{side}: a daemon runs on this database; stop every daemon first"
                )));
            }
        }
        Ok(opened)
    };
    let source = open("--from", &copy.from)?;
    let target = open("--to", &copy.to)?;
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
    let counts = Counts {
        leads: copy_walk(source.leads(), target, |batch, lead| batch.leads.push(lead))?,
        enrollments: copy_walk(source.enrollments(), target, |batch, enrollment| {
            batch.enrollments.push(enrollment)
        })?,
        events: copy_walk(source.all_events(), target, |batch, event| {
            batch.events.push(event)
        })?,
        messages: copy_walk(source.messages(), target, |batch, message| {
            batch.messages.push(message)
        })?,
        outbox: copy_walk(source.outbox(), target, |batch, email| {
            batch.outbox_put.push(email)
        })?,
    };
    // The rest, small, in one transaction.
    let batch = Batch {
        changed: source.changed(usize::MAX)?,
        uncertain_put: source.uncertain()?,
        meta_put: source
            .meta_prefix("", usize::MAX)?
            .into_iter()
            .filter(|(key, _)| !LAYOUT_META.iter().any(|layout| key.starts_with(layout)))
            .collect(),
        webhooks_put: source
            .webhooks_pending()
            .collect::<crate::store::Result<_>>()?,
        webhooks_failed_put: source
            .webhooks_failed()
            .collect::<crate::store::Result<_>>()?,
        ..Batch::default()
    };
    target.apply(&batch)?;
    // One mark per transaction: a batch lists one.
    for mark in source.in_flight()? {
        target.apply(&Batch {
            in_flight_set: Some(mark),
            ..Batch::default()
        })?;
    }
    Ok(counts)
}

/// Writes the records of `walk` into `target`, [`CHUNK`] per transaction, each put in a batch
/// by `put`; how many there were.
fn copy_walk<T>(
    walk: crate::store::Walk<'_, T>,
    target: &Store,
    put: impl Fn(&mut Batch, T),
) -> crate::store::Result<usize> {
    let mut batch = Batch::default();
    let mut copied = 0;
    for record in walk {
        put(&mut batch, record?);
        copied += 1;
        if copied % CHUNK == 0 {
            target.apply(&std::mem::take(&mut batch))?;
        }
    }
    target.apply(&batch)?;
    Ok(copied)
}
