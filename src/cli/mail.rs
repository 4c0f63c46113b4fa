//! `nurture mail classify FILE… [--format text|json]`: what nurture makes of inbound mail, and
//! why. For each message (`-` reads standard input): its kind (`reply`, `auto-reply`,
//! `bounce`, `complaint`, `unsubscribe`, `unrelated`, `unknown`), the signal that decided it,
//! the excerpt; for a bounce the recipient, status, reason and whether it suppresses; for a
//! complaint the recipient and feedback type; for an auto-reply the return date. When the
//! configured store exists, also which lead and workflow the daemon would act on and what
//! would happen — the daemon's own correlation, run without writing anything but the store's
//! unsubscribe key when it has none yet. A store held by a running daemon is not borrowed:
//! the messages are classified without it, and a note says so.
//!
//! JSON (`--format json`): an array with one object per file, in the order given; the keys
//! are stable: `file`, `kind`, `signal`, `from`, `subject`, `message_id`, `excerpt`;
//! `recipient`, `status`, `reason`, `permanent`, `delayed`, `diagnostic`,
//! `original_message_id` (bounces); `recipient`, `feedback_type`, `original_message_id`
//! (complaints); `return_date` (auto-replies); `lead`, `workflow`, `outcome` when a store was
//! read (`lead` null: no lead of ours; `outcome` says why).

use std::io::{Read, Write};
use std::path::PathBuf;

use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Cli, CliError, ExitCode};
use crate::daemon::correlate;
use crate::daemon::scheduler::Happening;
use crate::engine::Input;
use crate::mail::classify::{Incoming, Kind, classify};
use crate::store::{Store, StoreError};
use crate::unsubscribe::Unsubscribe;

#[derive(Debug, Args)]
pub struct MailArgs {
    #[command(subcommand)]
    pub command: MailCommand,
}

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Say what nurture makes of mail files (reply, auto-reply, bounce, complaint…) and why.
    Classify(ClassifyArgs),
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Message files (RFC 5322, as saved from a mail client: `.eml`); `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(cli: &Cli, args: &MailArgs) -> Result<ExitCode, CliError> {
    match &args.command {
        MailCommand::Classify(args) => classify_files(cli, args),
    }
}

/// The store as far as this command can use it.
enum Lookup {
    Store(Box<(Store, Unsubscribe)>),
    /// Why there is none (printed once, as a note).
    Without(String),
}

fn classify_files(cli: &Cli, args: &ClassifyArgs) -> Result<ExitCode, CliError> {
    let config = cli.load_config()?;
    let lookup = if config.store.url.is_empty() && !config.store.path.exists() {
        Lookup::Without(String::new())
    } else {
        match Store::open_configured(&config.store) {
            Ok(store) => match Unsubscribe::load(&config.http, &store) {
                Ok(unsubscribe) => Lookup::Store(Box::new((store, unsubscribe))),
                Err(error) => Lookup::Without(format!(
                    "the unsubscribe key cannot be read ({error}): classified without the store"
                )),
            },
            Err(StoreError::Locked { path }) => Lookup::Without(format!(
                "the store {} is in use by a running daemon: classified without it (which lead and what would happen are not shown)",
                path.display()
            )),
            Err(error) => Lookup::Without(format!("{error}: classified without the store")),
        }
    };
    if let Lookup::Without(note) = &lookup
        && !note.is_empty()
    {
        eprintln!("note: {note}");
    }
    let mut reports = Vec::new();
    let mut unreadable = 0;
    for file in &args.files {
        let raw = match read(file) {
            Ok(raw) => raw,
            Err(error) => {
                eprintln!("error: {error}");
                unreadable += 1;
                continue;
            }
        };
        let incoming = classify(&raw);
        let mut report = report(&file.display().to_string(), &incoming);
        if let Lookup::Store(found) = &lookup {
            let (store, unsubscribe) = &**found;
            outcome(store, unsubscribe, &config.bounces, &incoming, &mut report)
                .map_err(|e| CliError::Input(e.to_string()))?;
        }
        reports.push(report);
    }
    let mut out = std::io::stdout().lock();
    let written = match args.format {
        Format::Json => serde_json::to_writer_pretty(&mut out, &reports)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
        Format::Text => reports
            .iter()
            .try_for_each(|report| write!(out, "{}", text(report))),
    };
    written.map_err(|e| CliError::Input(format!("cannot write the report: {e}")))?;
    if unreadable > 0 {
        return Err(CliError::Input(format!(
            "{unreadable} of {} files could not be read",
            args.files.len()
        )));
    }
    Ok(ExitCode::Success)
}

fn read(file: &PathBuf) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut raw)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(raw);
    }
    std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

/// What is said of one message, in the order printed. `None`: the key does not apply and is
/// left out; `Some(Value::Null)`: it applies and is unknown.
#[derive(Debug, Default, Serialize)]
struct Report {
    file: String,
    kind: &'static str,
    signal: String,
    from: Option<String>,
    subject: Option<String>,
    message_id: Option<String>,
    excerpt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permanent: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delayed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diagnostic: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feedback_type: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_message_id: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_date: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lead: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
}

/// The report of one message, before the store is asked.
fn report(file: &str, incoming: &Incoming) -> Report {
    let mut report = Report {
        file: file.to_owned(),
        kind: incoming.kind.name(),
        signal: incoming.kind.signal().to_owned(),
        from: incoming.from.clone(),
        subject: incoming.subject.clone(),
        message_id: incoming.message_id.clone(),
        excerpt: incoming.excerpt.clone(),
        ..Report::default()
    };
    match &incoming.kind {
        Kind::Bounce {
            recipient,
            status,
            reason,
            permanent,
            delayed,
            diagnostic,
            ..
        } => {
            report.recipient = Some(json!(recipient));
            report.status = Some(json!(status));
            report.reason = Some(json!(reason));
            report.permanent = Some(*permanent);
            report.delayed = Some(*delayed);
            report.diagnostic = Some(json!(diagnostic));
            report.original_message_id = Some(json!(incoming.original_message_id));
        }
        Kind::Complaint {
            recipient,
            feedback_type,
            ..
        } => {
            report.recipient = Some(json!(recipient));
            report.feedback_type = Some(json!(feedback_type));
            report.original_message_id = Some(json!(incoming.original_message_id));
        }
        Kind::AutoReply { return_date, .. } => {
            report.return_date = Some(json!(return_date));
        }
        _ => {}
    }
    report
}

/// Adds `lead`, `workflow` and `outcome`: what the daemon would do with this message now.
fn outcome(
    store: &Store,
    unsubscribe: &Unsubscribe,
    bounces: &crate::config::BouncesConfig,
    incoming: &Incoming,
    report: &mut Report,
) -> Result<(), StoreError> {
    match correlate::happening(store, unsubscribe, incoming)? {
        Ok(mut happening) => {
            correlate::count_soft_bounces(store, &mut happening, bounces, Utc::now())?;
            report.lead = Some(json!(happening.lead));
            report.workflow = Some(json!(happening.workflow));
            report.outcome = Some(describe(&happening));
        }
        Err(why) => {
            report.lead = Some(Value::Null);
            report.workflow = Some(Value::Null);
            report.outcome = Some(format!("left alone: {why}"));
        }
    }
    Ok(())
}

/// What a happening does, in words.
fn describe(happening: &Happening) -> String {
    let scope = match &happening.workflow {
        Some(workflow) => format!("its enrollment in `{workflow}`"),
        None => "each of its active enrollments".to_owned(),
    };
    let mut said = match &happening.input {
        Some(Input::Reply) => format!(
            "runs the `on reply` handler for {scope} (by default: promoted to contact, the owner notified, the sequence ends)"
        ),
        Some(Input::AutoReply { return_date }) => match return_date {
            Some(date) => format!("runs the `on auto-reply` handler for {scope}; back on {date}"),
            None => format!("runs the `on auto-reply` handler for {scope}"),
        },
        Some(Input::Bounce { .. }) => format!("runs the `on bounce` handler for {scope}"),
        Some(Input::Unsubscribe) => format!("runs the `on unsubscribe` handler for {scope}"),
        Some(Input::Became(temperature)) => {
            format!("runs the `when lead becomes {temperature}` handler for {scope}")
        }
        Some(
            Input::Due
            | Input::Click { .. }
            | Input::Open { .. }
            | Input::Did { .. }
            | Input::LeadChanged,
        )
        | None => format!(
            "journaled (“{}”); no handler runs",
            happening.note.as_deref().unwrap_or("received")
        ),
    };
    if let Some((_, detail)) = &happening.suppress {
        said.push_str(&format!(
            "; the address is suppressed ({detail}) and its enrollments end"
        ));
    }
    said
}

/// The text form: a headline, then one line per fact.
fn text(report: &Report) -> String {
    let said = |value: &Option<Value>| {
        value
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut headline = format!("{}: {}", report.file, report.kind);
    if report.kind == "bounce" {
        let status = said(&report.status);
        headline.push_str(&format!(
            ", {} ({})",
            said(&report.reason),
            if status.is_empty() {
                "no status"
            } else {
                &status
            }
        ));
        headline.push_str(if report.permanent == Some(true) {
            ", permanent: the lead is suppressed"
        } else if report.delayed == Some(true) {
            ", delayed: still being retried"
        } else {
            ", not permanent: the lead stays"
        });
    }
    let mut lines = vec![headline];
    let mut line = |label: &str, value: &str| {
        if !value.is_empty() {
            lines.push(format!("  {label:<10} {value}"));
        }
    };
    line("signal", &report.signal);
    line("from", report.from.as_deref().unwrap_or_default());
    line("subject", report.subject.as_deref().unwrap_or_default());
    line("recipient", &said(&report.recipient));
    line("feedback", &said(&report.feedback_type));
    line("said", &said(&report.diagnostic));
    line("back on", &said(&report.return_date));
    line("excerpt", &report.excerpt);
    if let Some(outcome) = &report.outcome {
        let lead = match (said(&report.lead), said(&report.workflow)) {
            (lead, _) if lead.is_empty() => "none of ours".to_owned(),
            (lead, workflow) if workflow.is_empty() => lead,
            (lead, workflow) => format!("{lead} (workflow {workflow})"),
        };
        line("lead", &lead);
        line("outcome", outcome);
    }
    lines.join("\n") + "\n\n"
}
