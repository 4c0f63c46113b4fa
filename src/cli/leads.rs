//! `nurture leads …`: import, list, show and change leads. This module owns the subcommand
//! definitions and their dispatch; each area lives in a submodule.

mod edit;
pub(crate) mod import;
pub(crate) mod view;

use std::io::Write;
use std::path::PathBuf;

use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use self::import::{ImportOptions, ImportSummary};
use self::view::{CsvOut, Filter, store_error, write_error};
use super::check::plural;
use super::session::{Output, Session, StoreCommand, Target};
use super::{Cli, CliError, ExitCode};
use crate::lead::{Lead, Stage};
use crate::leads_file::CsvOptions;
use crate::scoring::Temperature;

#[derive(Debug, Args)]
pub struct LeadsArgs {
    #[command(subcommand)]
    pub command: LeadsCommand,
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadsCommand {
    /// Import leads from a CSV, JSON or JSON Lines file: new addresses are created, known ones
    /// updated.
    #[command(after_help = IMPORT_HELP)]
    Import(ImportArgs),
    /// List leads, filtered, as a table, JSON or CSV (which `leads import` reads back).
    List(ListArgs),
    /// Show one lead: fields, attributes, suppression, enrollments and its timeline.
    Show(ShowArgs),
    /// Set fields or attributes: `nurture leads set EMAIL company="Acme GmbH" plan=pro`.
    /// An empty value (`plan=`) clears the field or removes the attribute.
    Set(SetArgs),
    /// Add tags to a lead.
    Tag(TagArgs),
    /// Remove tags from a lead.
    Untag(TagArgs),
    /// Promote a lead to contact (default) or customer; stages only move forward.
    Promote(PromoteArgs),
    /// Never mail this address again; its active enrollments end.
    Suppress(SuppressArgs),
    /// Allow mailing this address again (enrollments that ended stay ended).
    Unsuppress(EmailArg),
    /// Write every lead as CSV, JSON or JSON Lines, in the shape `leads import` reads back.
    Export(ExportArgs),
}

const IMPORT_HELP: &str = "\
CSV needs a header row with an `email` column; first_name, last_name, name, company, source, \
tags (separated by ; | or ,), timezone, score and stage are lead fields, every other column an \
attribute. The separator is the most frequent of `,` `;` and tab in the header line unless \
--delimiter says; a row that is not UTF-8 is read as Windows-1252 (Latin-1) unless --encoding \
says. A cell holds at most 64 KiB, a line at most 1 MiB. JSON is an array of lead objects (or \
{\"leads\": [...]}); JSON Lines one object per line.

A lead already in the store takes the file's non-empty fields, the union of the tags and the \
file's attributes; its score only where the row has one. Its stage, suppression and creation \
time are never changed. Importing the same file again changes nothing.

Rows that cannot be imported (a bad address, an unknown time zone, an unclosed quote, a cell \
too large, …) are reported on stderr with the file line where they start and do not fail the \
import; after an unclosed quote, reading resumes on the next line. The summary counts every row \
once: created, updated, unchanged, merged (an earlier row had the address) or rejected. The \
exit code is 0 once the good rows are in, 3 when the file cannot be read or the store cannot \
be written.";

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ImportArgs {
    /// The leads file: `.csv`, `.json`, `.jsonl` or `.ndjson`.
    pub file: PathBuf,
    /// The source of leads whose row names none ("webinar", "website-form").
    #[arg(long, value_name = "S")]
    pub source: Option<String>,
    /// A tag added to every lead in the file (repeatable).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// CSV: the separator, one character (`,` `;` `|`) or `tab` (default: from the header).
    #[arg(long, value_name = "C", value_parser = CsvOptions::parse_delimiter)]
    // The side that reads the file uses these; they never travel to a daemon.
    #[serde(skip)]
    pub delimiter: Option<u8>,
    /// CSV: the encoding of every row, e.g. `utf-8`, `windows-1252`, `latin1` (default: each
    /// row UTF-8 when it is, else Windows-1252).
    #[arg(long, value_name = "NAME", value_parser = CsvOptions::parse_encoding)]
    #[serde(skip)]
    pub encoding: Option<&'static encoding_rs::Encoding>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ListArgs {
    #[arg(long, value_enum)]
    pub stage: Option<StageArg>,
    /// Only leads enrolled (now or before) in this workflow.
    #[arg(long, value_name = "NAME")]
    pub workflow: Option<String>,
    #[arg(long, value_name = "T")]
    pub tag: Option<String>,
    #[arg(long, value_name = "S")]
    pub source: Option<String>,
    /// Only suppressed leads.
    #[arg(long)]
    pub suppressed: bool,
    /// Only leads this warm now (by the workflows' `scoring` rules).
    #[arg(long, value_enum)]
    pub temperature: Option<TemperatureArg>,
    /// At most N leads (in address order).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum TemperatureArg {
    Hot,
    Warm,
    Cold,
    Inactive,
}

impl TemperatureArg {
    fn temperature(self) -> Temperature {
        match self {
            TemperatureArg::Hot => Temperature::Hot,
            TemperatureArg::Warm => Temperature::Warm,
            TemperatureArg::Cold => Temperature::Cold,
            TemperatureArg::Inactive => Temperature::Inactive,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum StageArg {
    Lead,
    Contact,
    Customer,
}

impl StageArg {
    fn stage(self) -> Stage {
        match self {
            StageArg::Lead => Stage::Lead,
            StageArg::Contact => Stage::Contact,
            StageArg::Customer => Stage::Customer,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum ListFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ShowArgs {
    pub email: String,
    #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
    pub format: ShowFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum ShowFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct SetArgs {
    pub email: String,
    /// `field=value`: first_name, last_name, company, source, timezone, score, or any attribute.
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub pairs: Vec<String>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct TagArgs {
    pub email: String,
    #[arg(required = true, value_name = "TAG")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct PromoteArgs {
    pub email: String,
    #[arg(long, value_enum, default_value_t = PromoteTo::Contact)]
    pub to: PromoteTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum PromoteTo {
    Contact,
    Customer,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct SuppressArgs {
    pub email: String,
    /// Why, for the journal (default "by hand").
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct EmailArg {
    pub email: String,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// Write to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum ExportFormat {
    Csv,
    Json,
    Jsonl,
}

/// `nurture leads …`: an import reads its file here; every other subcommand is a store command
/// ([`super::session`]).
pub fn dispatch(cli: &Cli, args: &LeadsArgs) -> Result<ExitCode, CliError> {
    match &args.command {
        LeadsCommand::Import(args) => run_import(cli, args),
        command => super::session::run(cli, StoreCommand::Leads(command.clone())),
    }
}

/// Runs a `leads` subcommand other than `import` on `session`.
pub fn run(
    command: &LeadsCommand,
    session: &Session<'_>,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let (store, now) = (session.store, session.now);
    let outcome = match command {
        LeadsCommand::Import(_) => {
            return Err(CliError::Usage(
                "`leads import` reads its file where it runs; it cannot be sent as one command"
                    .into(),
            ));
        }
        LeadsCommand::List(args) => return run_list(args, session, out),
        LeadsCommand::Export(args) => return run_export(args, session, out),
        LeadsCommand::Show(args) => {
            let lead = view::find_lead(store, &args.email)?;
            let text = match args.format {
                ShowFormat::Text => {
                    view::show_text(store, &lead, &session.project().scoring(), now)?
                }
                ShowFormat::Json => {
                    view::show_json(store, &lead, &session.project().scoring(), now)? + "\n"
                }
            };
            out.out.write_all(text.as_bytes()).map_err(write_error)?;
            return Ok(ExitCode::Success);
        }
        LeadsCommand::Set(args) => edit::set(store, &args.email, &args.pairs, now)?,
        LeadsCommand::Tag(args) => edit::tags(store, &args.email, &args.tags, true, now)?,
        LeadsCommand::Untag(args) => edit::tags(store, &args.email, &args.tags, false, now)?,
        LeadsCommand::Promote(args) => {
            let stage = match args.to {
                PromoteTo::Contact => Stage::Contact,
                PromoteTo::Customer => Stage::Customer,
            };
            edit::promote(store, &args.email, stage, now)?
        }
        LeadsCommand::Suppress(args) => {
            edit::suppress(store, &args.email, args.reason.as_deref(), now)?
        }
        LeadsCommand::Unsuppress(args) => edit::unsuppress(store, &args.email, now)?,
    };
    out.line(outcome.message)?;
    Ok(ExitCode::Success)
}

fn run_list(
    args: &ListArgs,
    session: &Session<'_>,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let store = session.store;
    let filter = Filter {
        stage: args.stage.map(StageArg::stage),
        workflow: args.workflow.clone(),
        tag: args.tag.clone(),
        source: args.source.clone(),
        suppressed: args.suppressed,
        temperature: args
            .temperature
            .map(|t| (t.temperature(), session.project().scoring(), session.now)),
    };
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut leads: Vec<Lead> = Vec::new();
    for lead in store.leads() {
        if leads.len() >= limit {
            break;
        }
        let lead = lead.map_err(store_error)?;
        if filter.matches(store, &lead)? {
            leads.push(lead);
        }
    }
    match args.format {
        ListFormat::Table => {
            if leads.is_empty() {
                out.note("no leads match");
            } else {
                out.out
                    .write_all(view::table(&leads).as_bytes())
                    .map_err(write_error)?;
            }
        }
        ListFormat::Json => {
            write_json_array(out.out, leads.iter().map(Ok))?;
        }
        ListFormat::Csv => {
            let mut csv = CsvOut::new(&mut *out.out, view::attribute_names(&leads))?;
            for lead in &leads {
                csv.write(lead)?;
            }
            csv.finish()?;
        }
    }
    Ok(ExitCode::Success)
}

/// A JSON array with one lead per line: valid JSON that still diffs and greps line by line.
/// Returns how many leads it wrote.
fn write_json_array<L: std::borrow::Borrow<Lead>>(
    out: &mut dyn Write,
    leads: impl IntoIterator<Item = Result<L, CliError>>,
) -> Result<usize, CliError> {
    let mut count = 0;
    out.write_all(b"[").map_err(write_error)?;
    for lead in leads {
        let separator = if count == 0 { "\n" } else { ",\n" };
        count += 1;
        write!(out, "{separator}  {}", view::lead_json(lead?.borrow())).map_err(write_error)?;
    }
    out.write_all(b"\n]\n").map_err(write_error)?;
    Ok(count)
}

/// `leads export`: to the command's standard output, which is the `--out` file when there is
/// one (opened where the command runs: [`super::session::run`]).
fn run_export(
    args: &ExportArgs,
    session: &Session<'_>,
    output: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let store = session.store;
    let out = &mut *output.out;
    // Leads stream from the store one at a time, so an export of a million leads stays small;
    // CSV needs one pass first to learn every attribute name for its header.
    let leads = || store.leads().map(|lead| lead.map_err(store_error));
    let mut count = 0;
    match args.format {
        ExportFormat::Csv => {
            let mut names = std::collections::BTreeSet::new();
            for lead in leads() {
                names.extend(lead?.attributes.into_keys());
            }
            let mut csv = CsvOut::new(&mut *out, names)?;
            for lead in leads() {
                csv.write(&lead?)?;
                count += 1;
            }
            csv.finish()?;
        }
        ExportFormat::Json => count = write_json_array(out, leads())?,
        ExportFormat::Jsonl => {
            for lead in leads() {
                writeln!(out, "{}", view::lead_json(&lead?)).map_err(write_error)?;
                count += 1;
            }
        }
    }
    out.flush().map_err(write_error)?;
    if let Some(path) = &args.out {
        output.note(format!(
            "{count} lead{} written to {}",
            plural(count),
            path.display()
        ));
    }
    Ok(ExitCode::Success)
}

/// `leads import`: the file is read and checked here; its leads are merged and written by the
/// running daemon, chunk by chunk, or into the store opened here when no daemon runs.
fn run_import(cli: &Cli, args: &ImportArgs) -> Result<ExitCode, CliError> {
    let options = ImportOptions {
        source: args.source.clone().filter(|s| !s.trim().is_empty()),
        tags: args
            .tags
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        csv: CsvOptions {
            delimiter: args.delimiter,
            encoding: args.encoding,
        },
    };
    // Check the file before opening the store, so a typo in the name is reported as such.
    if !args.file.is_file() {
        return Err(CliError::Input(format!(
            "cannot read {}: no such file",
            args.file.display()
        )));
    }
    let config = cli.load_config()?;
    let progress = super::progress::import(&args.file);
    let on_chunk = |sofar: &ImportSummary, rejected: &[crate::leads_file::RejectedRow]| {
        progress.suspend(|| {
            for row in rejected {
                eprintln!(
                    "warning: {}:{}: {}",
                    args.file.display(),
                    row.line,
                    row.reason
                );
            }
        });
        super::progress::rows_read(&progress, sofar.rows);
    };
    let summary = match super::session::target(&config)? {
        Target::Daemon(daemon) => daemon.import(&args.file, &options, on_chunk),
        Target::Here(store) => {
            let imported = import::import(&store, &args.file, &options, Utc::now(), on_chunk)
                .map_err(|e| CliError::Input(e.to_string()));
            super::close(&store);
            imported
        }
    };
    progress.finish_and_clear();
    let summary = summary?;
    for note in &summary.notes {
        eprintln!("note: {}: {note}", args.file.display());
    }
    println!("{}", summary_line(&summary));
    Ok(ExitCode::Success)
}

/// The counts, which add up to the rows read; `merged` only when a row repeated an address.
fn summary_line(summary: &ImportSummary) -> String {
    let merged = match summary.merged {
        0 => String::new(),
        n => format!(", {n} merged (same address as an earlier row)"),
    };
    format!(
        "{} row{} read: {} created, {} updated, {} unchanged{merged}, {} rejected",
        summary.rows,
        plural(summary.rows),
        summary.created,
        summary.updated,
        summary.unchanged,
        summary.rejected
    )
}
