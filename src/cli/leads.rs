//! `nurture leads …`: import, list, show and change leads. This module owns the subcommand
//! definitions and their dispatch; each area lives in a submodule.

mod import;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::{Args, Subcommand};

use self::import::{ImportOptions, ImportSummary};
use super::check::plural;
use super::{Cli, CliError, ExitCode};

#[derive(Debug, Args)]
pub struct LeadsArgs {
    #[command(subcommand)]
    pub command: LeadsCommand,
}

#[derive(Debug, Subcommand)]
pub enum LeadsCommand {
    /// Import leads from a CSV, JSON or JSON Lines file: new addresses are created, known ones
    /// updated.
    #[command(after_help = IMPORT_HELP)]
    Import(ImportArgs),
}

const IMPORT_HELP: &str = "\
CSV needs a header row with an `email` column; first_name, last_name, name, company, source, \
tags (separated by ; | or ,), timezone, score and stage are lead fields, every other column an \
attribute. JSON is an array of lead objects (or {\"leads\": [...]}); JSON Lines one object per \
line.

A lead already in the store takes the file's non-empty fields, the union of the tags and the \
file's attributes; its score only where the row has one. Its stage, suppression and creation \
time are never changed. Importing the same file again changes nothing.

Rows that cannot be imported (a bad address, an unknown time zone, …) are reported on stderr \
with their line number and do not fail the import: the exit code is 0 once the good rows are in, \
3 when the file cannot be read or the store cannot be written.";

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The leads file: `.csv`, `.json`, `.jsonl` or `.ndjson`.
    pub file: PathBuf,
    /// The source of leads whose row names none ("webinar", "website-form").
    #[arg(long, value_name = "S")]
    pub source: Option<String>,
    /// A tag added to every lead in the file (repeatable).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
}

pub fn run(cli: &Cli, args: &LeadsArgs) -> Result<ExitCode, CliError> {
    match &args.command {
        LeadsCommand::Import(args) => run_import(cli, args),
    }
}

fn run_import(cli: &Cli, args: &ImportArgs) -> Result<ExitCode, CliError> {
    let options = ImportOptions {
        source: args.source.clone().filter(|s| !s.trim().is_empty()),
        tags: args
            .tags
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
    };
    // Check the file before opening the store, so a typo in the name is reported as such.
    if !args.file.is_file() {
        return Err(CliError::Input(format!(
            "cannot read {}: no such file",
            args.file.display()
        )));
    }
    let (_, store) = cli.open_store()?;
    let mut progress = Progress::new();
    let summary = import::import(
        &store,
        &args.file,
        &options,
        Utc::now(),
        |sofar, rejected| {
            progress.clear();
            for row in rejected {
                eprintln!(
                    "warning: {}:{}: {}",
                    args.file.display(),
                    row.line,
                    row.reason
                );
            }
            progress.show(sofar);
        },
    );
    progress.clear();
    let summary = summary.map_err(|e| CliError::Input(e.to_string()))?;
    println!("{}", summary_line(&summary));
    Ok(ExitCode::Success)
}

fn summary_line(summary: &ImportSummary) -> String {
    format!(
        "{} row{} read: {} created, {} updated, {} unchanged, {} rejected",
        summary.rows,
        plural(summary.rows),
        summary.created,
        summary.updated,
        summary.unchanged,
        summary.rejected
    )
}

/// A one-line progress report on stderr, only when stderr is a terminal (never in a log) and
/// only once the import has run for a moment, so small files print nothing extra.
struct Progress {
    terminal: bool,
    started: Instant,
    shown: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            shown: false,
        }
    }

    fn show(&mut self, sofar: &ImportSummary) {
        let elapsed = self.started.elapsed();
        if self.terminal && elapsed >= Duration::from_secs(1) {
            let rate = sofar.rows as f64 / elapsed.as_secs_f64();
            eprint!("\rimporting: {} rows ({rate:.0} rows/s)", sofar.rows);
            self.shown = true;
        }
    }

    /// Erases the progress line before anything else is printed.
    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }
}
