//! The command line: clap definitions, dispatch, and the one place errors become exit codes.
//!
//! Each subcommand lives in its own module and returns `Result<ExitCode, CliError>`; only
//! [`main`] prints a `CliError` and maps it to its documented exit code.
//!
//! Exit codes (documented in the README):
//! - 0: success;
//! - 1: the workflows or templates have errors (all of them are printed);
//! - 2: the command line is wrong (unknown flag, bad value);
//! - 3: an input could not be read or an output could not be written (a leads file, `--out`),
//!   or the store cannot be opened (or the running daemon stopped before the command ended).
//!
//! The commands that read or change the store run through a running daemon, or on the store
//! opened here when none runs: [`session`].

mod backup;
mod check;
pub(crate) mod contacts;
pub mod dry_run;
mod enroll;
mod generate;
pub(crate) mod leads;
mod mail;
mod outbox;
mod progress;
mod run;
mod send_test;
pub mod session;
pub mod status;
mod store_copy;
mod webhooks;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use self::session::StoreCommand;
use crate::config::Config;
pub use crate::project::Project;
use crate::store::{Store, StoreError};

/// The process exit codes `nurture` documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    Invalid = 1,
    Usage = 2,
    Input = 3,
}

/// An error that stops a command; printed once, by [`main`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Diagnostics were already printed; this only carries the summary.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Input(String),
}

impl CliError {
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Invalid(_) => ExitCode::Invalid,
            CliError::Usage(_) => ExitCode::Usage,
            CliError::Input(_) => ExitCode::Input,
        }
    }
}

/// Writes a command's whole output to `sink`. A reader that closed the pipe early
/// (`nurture dry-run … | head`) is not a failure: what it wanted, it got.
pub(crate) fn write_output(sink: &mut dyn Write, text: &str) -> Result<(), CliError> {
    match sink.write_all(text.as_bytes()).and_then(|()| sink.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Input(
            format!("cannot write to standard output: {error}"),
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "nurture",
    version,
    about = "Email nurture automation: workflows that turn leads into contacts",
    after_help = "Exit codes: 0 success, 1 invalid workflows or templates, 2 bad command line, \
                  3 unreadable input or unwritable output."
)]
pub struct Cli {
    /// Folder of workflow files (`*.flow`).
    #[arg(
        long,
        global = true,
        env = "NURTURE_WORKFLOWS",
        default_value = "workflows"
    )]
    pub workflows: PathBuf,
    /// Folder of email templates (`NAME.html.hbs`, `NAME.txt.hbs`, `partials/`).
    #[arg(
        long,
        global = true,
        env = "NURTURE_TEMPLATES",
        default_value = "templates"
    )]
    pub templates: PathBuf,
    /// The configuration file (default: `./nurture.toml` if it exists, else built-in defaults).
    #[arg(long, global = true, env = "NURTURE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check workflows and the templates they use; print every problem.
    Check(check::CheckArgs),
    /// Preview what a workflow would send, to whom and when, without sending anything.
    DryRun(Box<dry_run::DryRunArgs>),
    /// Run the daemon: enroll leads, send each email when due, until stopped (SIGINT/SIGTERM).
    Run(run::RunArgs),
    /// Enroll leads in a workflow by hand (its `enroll when` is skipped, its other rules are not).
    Enroll(enroll::EnrollArgs),
    /// End leads' enrollments in a workflow by hand.
    Unenroll(enroll::EnrollArgs),
    /// Send every email of a workflow, rendered for one lead, to one address now (a preview in
    /// a real mail client).
    SendTest(send_test::SendTestArgs),
    /// Import, list, show and change leads.
    Leads(leads::LeadsArgs),
    /// List the leads that became contacts: when, and why.
    Contacts(contacts::ContactsArgs),
    /// Per workflow: enrolled, active, completed, exited, sent, replies, contacts, next sends.
    Status(status::StatusArgs),
    /// The webhook queue and the given-up webhooks; `webhooks retry` sends given-up ones again.
    Webhooks(webhooks::WebhooksArgs),
    /// Print the completion script for a shell (`nurture completions bash > …`).
    Completions(generate::CompletionsArgs),
    /// Write the man pages (`nurture.1` and one per subcommand) into a folder.
    Man(generate::ManArgs),
    /// Emails a crash left uncertain: list them, send them again, or drop them.
    Outbox(outbox::OutboxArgs),
    /// Inbound mail: `classify` says what nurture makes of a message, and why.
    Mail(mail::MailArgs),
    /// Write a consistent snapshot of the store to a file (through the running daemon, if any).
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty or absent store (no daemon may hold it).
    Restore(backup::RestoreArgs),
    /// Move a whole store between sled and PostgreSQL (`store copy --from data --to postgres://…`).
    Store(store_copy::StoreArgs),
}

impl Cli {
    /// The configuration: file, then environment (see [`crate::config`]).
    pub fn load_config(&self) -> Result<Config, CliError> {
        Config::load(self.config.as_deref()).map_err(|e| CliError::Usage(e.to_string()))
    }
}

/// A store this process opened (no daemon runs: [`session::target`]), after saying what the
/// upgrade its opening ran merged.
fn opened(store: Result<Store, StoreError>) -> Result<Store, CliError> {
    let store = store.map_err(|e| CliError::Input(e.to_string()))?;
    for merged in store.merged() {
        eprintln!("note: store upgraded: {merged}");
    }
    Ok(store)
}

/// Closes a store this process opened, so that the next `nurture status` reads the snapshot
/// the close leaves instead of opening the store; failing to leave it is only said.
fn close(store: &Store) {
    if let Err(error) = store.close() {
        eprintln!("warning: {error}; the next `nurture status` opens the store instead");
    }
}

/// Parses the command line, runs the command, prints any error, and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version to stdout with exit 0, and usage errors with exit 2.
            let _ = error.print();
            return error.exit_code();
        }
    };
    let result = match &cli.command {
        Command::Check(args) => check::run(&cli, args),
        Command::DryRun(args) => dry_run::run(&cli, args),
        Command::Run(args) => run::run(&cli, args),
        Command::Enroll(args) => session::run(&cli, StoreCommand::Enroll(args.clone())),
        Command::Unenroll(args) => session::run(&cli, StoreCommand::Unenroll(args.clone())),
        Command::SendTest(args) => send_test::run(&cli, args),
        Command::Leads(args) => leads::dispatch(&cli, args),
        Command::Contacts(args) => session::run(&cli, StoreCommand::Contacts(args.clone())),
        Command::Status(args) => session::run(&cli, StoreCommand::Status(args.clone())),
        Command::Webhooks(args) => session::run(&cli, StoreCommand::Webhooks(args.clone())),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
        Command::Outbox(args) => session::run(&cli, StoreCommand::Outbox(args.clone())),
        Command::Mail(args) => mail::run(&cli, args),
        Command::Backup(args) => backup::backup(&cli, args),
        Command::Restore(args) => backup::restore(&cli, args),
        Command::Store(args) => store_copy::run(&cli, args),
    };
    let code = match result {
        Ok(code) => code,
        Err(error) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {error}");
            error.exit_code()
        }
    };
    code as i32
}
