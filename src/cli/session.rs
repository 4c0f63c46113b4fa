//! Store commands, and where they run.
//!
//! `leads …`, `status`, `contacts`, `enroll`, `unenroll`, `outbox` and `webhooks` read or
//! change the store. Each is
//! written once, as a function of a [`Session`] (the store, the workflows, the time) and an
//! [`Output`] (its standard output and error), and [`run`] runs it in one of two places:
//! - while `nurture run` holds the store, inside the daemon ([`crate::control`]): the
//!   arguments travel over the control socket, the daemon runs the same function on its own
//!   store handle (a command that changes the store in its work loop, between two batches),
//!   and the output comes back here;
//! - with no daemon running, here, on the store this process opens.
//!
//! `leads import` is the one exception: its file is read here in both cases, and its leads
//! stream to the daemon in chunks (see [`super::leads`]).
//!
//! Adding a store command: derive `Clone`, `Serialize` and `Deserialize` on its arguments, add
//! a variant to [`StoreCommand`], say in [`StoreCommand::writes`] whether it changes the store,
//! call its `run(args, session, out)` from [`StoreCommand::execute`] (writing with
//! `out.out`/`out.err`, never `println!`), and dispatch it from `cli::main` with [`run`].

use std::cell::OnceCell;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::contacts::ContactsArgs;
use super::enroll::EnrollArgs;
use super::leads::{LeadsCommand, ShowArgs, ShowFormat, view::write_error};
use super::outbox::{self, OutboxArgs};
use super::status::StatusArgs;
use super::webhooks::{self, WebhooksArgs};
use super::{Cli, CliError, ExitCode, contacts, enroll, leads, status};
use crate::config::Config;
use crate::control::client;
use crate::lead::Lead;
use crate::project::Project;
use crate::store::snapshot::Snapshot;
use crate::store::{Store, StoreError};

/// A command that reads or changes the store, with its arguments: what travels to a running
/// daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreCommand {
    Leads(LeadsCommand),
    Status(StatusArgs),
    Contacts(ContactsArgs),
    Enroll(EnrollArgs),
    Unenroll(EnrollArgs),
    Webhooks(WebhooksArgs),
    Outbox(OutboxArgs),
}

impl StoreCommand {
    /// Whether the command may change the store: a daemon runs it in its work loop, its one
    /// writer. The others read beside the loop.
    pub fn writes(&self) -> bool {
        match self {
            StoreCommand::Leads(command) => !matches!(
                command,
                LeadsCommand::List(_) | LeadsCommand::Show(_) | LeadsCommand::Export(_)
            ),
            // A recount holds every batch back while it counts, and may repair the counters.
            StoreCommand::Status(args) => args.recount,
            StoreCommand::Contacts(_) => false,
            StoreCommand::Enroll(_) | StoreCommand::Unenroll(_) => true,
            StoreCommand::Webhooks(args) => args.writes(),
            StoreCommand::Outbox(args) => args.writes(),
        }
    }

    /// Runs the command on `session`, writing to `out`.
    pub fn execute(
        &self,
        session: &Session<'_>,
        out: &mut Output<'_>,
    ) -> Result<ExitCode, CliError> {
        match self {
            StoreCommand::Leads(command) => leads::run(command, session, out),
            StoreCommand::Status(args) => status::run(args, session, out),
            StoreCommand::Contacts(args) => contacts::run(args, session, out),
            StoreCommand::Webhooks(args) => webhooks::run(args, session, out),
            StoreCommand::Outbox(args) => outbox::run(args, session, out),
            StoreCommand::Enroll(args) => enroll::enroll(args, session, out),
            StoreCommand::Unenroll(args) => enroll::unenroll(args, session, out),
        }
    }
}

/// What a store command runs against.
pub struct Session<'a> {
    pub store: &'a Store,
    /// The time its changes are stamped with (the daemon's clock inside a daemon).
    pub now: DateTime<Utc>,
    /// The workflows folder, as messages name it.
    pub workflows_dir: String,
    workflows: Workflows<'a>,
}

enum Workflows<'a> {
    /// The workflows a daemon runs.
    Running(&'a Project),
    /// The folders on the command line, loaded when a command first needs them.
    Folders {
        workflows: &'a Path,
        templates: &'a Path,
        loaded: OnceCell<Box<Project>>,
    },
}

impl<'a> Session<'a> {
    /// A session in this process, on a store it opened.
    pub fn local(store: &'a Store, cli: &'a Cli) -> Session<'a> {
        Session {
            store,
            now: Utc::now(),
            workflows_dir: cli.workflows.display().to_string(),
            workflows: Workflows::Folders {
                workflows: &cli.workflows,
                templates: &cli.templates,
                loaded: OnceCell::new(),
            },
        }
    }

    /// A session inside a running daemon, with the workflows it runs.
    pub fn running(
        store: &'a Store,
        project: &'a Project,
        now: DateTime<Utc>,
        workflows_dir: String,
    ) -> Session<'a> {
        Session {
            store,
            now,
            workflows_dir,
            workflows: Workflows::Running(project),
        }
    }

    /// The workflows (only those that compiled; a daemon runs only valid ones).
    pub fn project(&self) -> &Project {
        match &self.workflows {
            Workflows::Running(project) => project,
            Workflows::Folders {
                workflows,
                templates,
                loaded,
            } => loaded
                .get_or_init(|| Box::new(Project::load(&[workflows.to_path_buf()], templates))),
        }
    }
}

/// Where a command writes: the terminal, or frames on the control socket.
pub struct Output<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

impl Output<'_> {
    /// One line on the standard output.
    pub fn line(&mut self, text: impl std::fmt::Display) -> Result<(), CliError> {
        writeln!(self.out, "{text}").map_err(write_error)
    }

    /// One line on the standard error (a warning, a note): a failure to write it is not the
    /// command's failure.
    pub fn note(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.err, "{text}");
    }
}

/// Runs a store command through the running daemon, or on the store opened here when no
/// daemon runs (`status` reads the snapshot the store's last close left, when it can).
pub fn run(cli: &Cli, command: StoreCommand) -> Result<ExitCode, CliError> {
    let config = cli.load_config()?;
    let mut stdout = standard_output(&command)?;
    let mut stderr = std::io::stderr();
    // No daemon listening: a `status` the snapshot answers reads it.
    let closed = || match &command {
        StoreCommand::Status(args) if !args.recount => {
            let (counters, upcoming) = Snapshot::read(&config.store.path)?.answer(args.next)?;
            Some(status::Closed {
                args: args.clone(),
                counters,
                upcoming,
            })
        }
        _ => None,
    };
    let result = match locate(&config, closed)? {
        Located::Daemon(daemon) => daemon.run(&command, &mut stdout),
        Located::Here(store) => {
            let session = Session::local(&store, cli);
            let mut out = Output {
                out: &mut stdout,
                err: &mut stderr,
            };
            let result = command.execute(&session, &mut out);
            super::close(&store);
            result
        }
        Located::Closed(closed) => {
            let mut out = Output {
                out: &mut stdout,
                err: &mut stderr,
            };
            status::from_snapshot(closed, &cli.workflows, &cli.templates, &mut out)
        }
    };
    let flushed = stdout.flush().map_err(write_error);
    let code = result?;
    flushed?;
    Ok(code)
}

/// One stored lead, for a command that needs a lead but is no store command itself
/// (`send-test --lead`): read through the running daemon (as `leads show --format json`), or
/// from the store opened here.
pub fn lead(cli: &Cli, email: &str) -> Result<Lead, CliError> {
    let config = cli.load_config()?;
    match target(&config)? {
        Target::Daemon(daemon) => {
            let show = LeadsCommand::Show(ShowArgs {
                email: email.to_string(),
                format: ShowFormat::Json,
            });
            let mut json = Vec::new();
            daemon.run(&StoreCommand::Leads(show), &mut json)?;
            serde_json::from_slice::<serde_json::Value>(&json)
                .ok()
                .and_then(|shown| serde_json::from_value(shown.get("lead")?.clone()).ok())
                .ok_or_else(|| {
                    CliError::Input(format!(
                        "the running daemon sent `{email}` in a shape this nurture cannot read"
                    ))
                })
        }
        Target::Here(store) => leads::view::find_lead(&store, email),
    }
}

/// Where a store command runs.
pub enum Target {
    /// In the running daemon.
    Daemon(client::Daemon),
    /// Here, on the store this process opened (no daemon runs).
    Here(Store),
}

/// Where a store command runs, or what answers it without opening the store.
enum Located<T> {
    Daemon(client::Daemon),
    Here(Store),
    /// The answer that a store no process holds left beside itself.
    Closed(T),
}

/// The running daemon, else the store opened here.
pub fn target(config: &Config) -> Result<Target, CliError> {
    Ok(match locate(config, || None::<std::convert::Infallible>)? {
        Located::Daemon(daemon) => Target::Daemon(daemon),
        Located::Here(store) => Target::Here(store),
        Located::Closed(never) => match never {},
    })
}

/// How long a command waits for a store another process holds without a daemon listening:
/// a daemon starting (it opens the store before it listens) or stopping, or another command.
const WAIT_FOR_STORE: Duration = Duration::from_secs(30);

/// The running daemon, else what `closed` finds beside the store, else the store opened here.
fn locate<T>(config: &Config, closed: impl Fn() -> Option<T>) -> Result<Located<T>, CliError> {
    let started = Instant::now();
    let mut told = false;
    loop {
        if let Some(daemon) = client::connect(&config.store.path)? {
            return Ok(Located::Daemon(daemon));
        }
        // No daemon listens. A process that holds the store removed its snapshot when it
        // opened it, so one that is there is the store as it stands.
        // (A PostgreSQL store leaves none: one left by an earlier sled store is not its.)
        if config.store.url.is_empty()
            && let Some(answer) = closed()
        {
            return Ok(Located::Closed(answer));
        }
        match Store::open_configured(&config.store) {
            Err(StoreError::Locked { .. }) if started.elapsed() < WAIT_FOR_STORE => {
                if !told && started.elapsed() > Duration::from_secs(1) {
                    eprintln!("note: waiting for another nurture process to let go of the store");
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            result => {
                // What a command journals is reported to the webhooks that want it, as the
                // daemon's writes are.
                let routes = crate::webhooks::Routes::from_config(&config.webhooks)
                    .map_err(CliError::Usage)?;
                return super::opened(result)
                    .map(|store| Located::Here(store.with_webhooks(routes)));
            }
        }
    }
}

/// The command's standard output: the file `leads export --out` names, or stdout; an export
/// moves a progress bar on a terminal ([`super::progress`]).
fn standard_output(command: &StoreCommand) -> Result<BufWriter<Box<dyn Write>>, CliError> {
    let sink: Box<dyn Write> = match command {
        StoreCommand::Leads(LeadsCommand::Export(leads::ExportArgs { out, .. })) => {
            let inner: Box<dyn Write> = match out {
                Some(path) => Box::new(std::fs::File::create(path).map_err(|e| {
                    CliError::Input(format!("cannot write {}: {e}", path.display()))
                })?),
                None => Box::new(std::io::stdout()),
            };
            Box::new(super::progress::Counting {
                inner,
                bar: super::progress::export(out.is_none()),
            })
        }
        _ => Box::new(std::io::stdout()),
    };
    Ok(BufWriter::new(sink))
}
