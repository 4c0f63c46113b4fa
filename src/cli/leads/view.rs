//! Reading leads out of the store: `leads list`, `leads show`, `leads export`, the CSV and JSON
//! shapes they write (both read back by `leads import`), and the sentence each journal event
//! reads as.
//!
//! Stored values come from files and mail nobody vetted, so the human formats (the table and
//! `show`'s text) never trust them: control characters and the invisible ones that reorder text
//! are written as escapes (`\n`, `\u{1b}`), so a value can neither break a table's lines nor
//! drive the terminal; a table cell is cut at [`CELL_CHARS`] characters and padding is done by
//! hand, so no length can panic a format width. JSON and CSV give the exact values, except that a
//! CSV cell a spreadsheet would run as a formula gets a leading `'` ([`neutralize`]).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::cli::CliError;
use crate::daemon::intake::pending;
use crate::diagnostic::did_you_mean;
use crate::engine::{Enrollment, Facts, Status};
use crate::lead::{Lead, Stage, SuppressionReason, Value, normalize_email};
use crate::scoring::{Scoring, Temperature};
use crate::store::{EventKind, Store};

/// The columns every CSV starts with, in this order; attributes follow, by name.
const CSV_FIELDS: [&str; 10] = [
    "email",
    "first_name",
    "last_name",
    "company",
    "source",
    "tags",
    "timezone",
    "score",
    "stage",
    "suppression",
];

/// A store error, as the command line reports it.
pub fn store_error(error: crate::store::StoreError) -> CliError {
    CliError::Input(error.to_string())
}

/// An output that could not be written (a closed pipe, a full disk).
pub fn write_error(error: std::io::Error) -> CliError {
    CliError::Input(format!("cannot write the output: {error}"))
}

/// The stored lead for an address typed on the command line: normalized first; an unknown one
/// is an input error that names the closest stored address, if one is close.
pub fn find_lead(store: &Store, raw: &str) -> Result<Lead, CliError> {
    let email = normalize_email(raw).map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(lead) = store.lead(&email).map_err(store_error)? {
        return Ok(lead);
    }
    let mut known = Vec::new();
    for lead in store.leads() {
        known.push(lead.map_err(store_error)?.email);
    }
    if let Some(pending) = pending(store, &email).map_err(store_error)? {
        return Err(CliError::Input(format!(
            "no lead `{email}` yet: it signed up through form `{}` on {} and has not confirmed (the sign-up expires {})",
            pending.form,
            when(pending.requested_at),
            when(pending.expires)
        )));
    }
    let hint = match did_you_mean(&email, known.iter().map(String::as_str)) {
        Some(close) => format!("; did you mean `{close}`?"),
        None if known.is_empty() => {
            "; the store has no leads yet (see `nurture leads import`)".to_string()
        }
        None => String::new(),
    };
    Err(CliError::Input(format!(
        "no lead `{email}` in the store{hint}"
    )))
}

/// "through form `signup`, consent text v3".
fn consent(form: &str, version: &str) -> String {
    if version.is_empty() {
        format!("confirmed through form `{form}`")
    } else {
        format!("confirmed through form `{form}`, consent text {version}")
    }
}

/// The filters of `leads list`; an unset one lets every lead through.
#[derive(Debug, Default)]
pub struct Filter {
    pub stage: Option<Stage>,
    pub workflow: Option<String>,
    pub tag: Option<String>,
    pub source: Option<String>,
    pub suppressed: bool,
    /// `--temperature hot`: read at `now` by the project's scoring.
    pub temperature: Option<(Temperature, Arc<Scoring>, DateTime<Utc>)>,
}

impl Filter {
    pub fn matches(&self, store: &Store, lead: &Lead) -> Result<bool, CliError> {
        let simple = self.stage.is_none_or(|stage| lead.stage == stage)
            && self.tag.as_ref().is_none_or(|tag| lead.tags.contains(tag))
            && self
                .source
                .as_ref()
                .is_none_or(|source| lead.source.as_ref() == Some(source))
            && (!self.suppressed || lead.is_suppressed())
            && self
                .temperature
                .as_ref()
                .is_none_or(|(wanted, scoring, now)| scoring.temperature(lead, *now) == *wanted);
        if !simple {
            return Ok(false);
        }
        // Checked last: it is the one filter that reads more of the store.
        match &self.workflow {
            None => Ok(true),
            Some(workflow) => Ok(store
                .enrollments_of(&lead.email)
                .map_err(store_error)?
                .iter()
                .any(|e| &e.workflow == workflow)),
        }
    }
}

/// The most characters a table cell shows; longer values end in `…` (`leads show` and the JSON
/// formats give them whole).
pub const CELL_CHARS: usize = 60;

/// `text` for a person's terminal: control characters, and the format characters that hide or
/// reorder text (zero-width spaces, bidirectional overrides), as escapes such as `\n`, `\t`,
/// `\u{1b}`; everything else as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A table cell: [`printable`], and at most [`CELL_CHARS`] characters.
pub fn cell(text: &str) -> String {
    let text = printable(text);
    match text.char_indices().nth(CELL_CHARS) {
        None => text.into_owned(),
        Some(_) => {
            let cut = text
                .char_indices()
                .nth(CELL_CHARS - 1)
                .map_or(text.len(), |(i, _)| i);
            format!("{}…", &text[..cut])
        }
    }
}

/// Columns aligned for people: the header, then the rows, two spaces apart; the columns whose
/// index is in `right` are right-aligned. Padding is written by hand: a format width panics
/// past 65,535.
pub fn aligned<const N: usize>(header: [&str; N], rows: &[[String; N]], right: &[usize]) -> String {
    let header = header.map(String::from);
    let mut widths = [0; N];
    for row in std::iter::once(&header).chain(rows) {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (text, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(width - text.chars().count());
            if right.contains(&i) {
                line.push_str(&pad);
                line.push_str(text);
            } else {
                line.push_str(text);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Aligned columns for people: email, name, company, stage, score, tags, suppressed.
pub fn table(leads: &[Lead]) -> String {
    let header = [
        "EMAIL",
        "NAME",
        "COMPANY",
        "STAGE",
        "SCORE",
        "TAGS",
        "SUPPRESSED",
    ];
    let rows: Vec<[String; 7]> = leads
        .iter()
        .map(|lead| {
            [
                cell(&lead.email),
                cell(&lead.full_name().unwrap_or_default()),
                cell(lead.company.as_deref().unwrap_or_default()),
                lead.stage.to_string(),
                lead.score.to_string(),
                cell(&lead.tags.iter().cloned().collect::<Vec<_>>().join(",")),
                lead.suppression
                    .as_ref()
                    .map_or_else(String::new, |s| reason_word(s.reason).to_string()),
            ]
        })
        .collect();
    // Right-align the score so the numbers line up.
    aligned(header, &rows, &[4])
}

/// A suppression's reason in one word.
pub fn reason_word(reason: SuppressionReason) -> &'static str {
    match reason {
        SuppressionReason::Unsubscribed => "unsubscribed",
        SuppressionReason::Bounced => "bounced",
        SuppressionReason::Manual => "manual",
        SuppressionReason::Complained => "complained",
    }
}

/// The attribute names of `leads`, for the CSV header.
pub fn attribute_names<'a>(leads: impl IntoIterator<Item = &'a Lead>) -> BTreeSet<String> {
    leads
        .into_iter()
        .flat_map(|lead| lead.attributes.keys().cloned())
        .collect()
}

/// A CSV writer for leads whose columns `leads import` maps back to the same fields.
pub struct CsvOut<W: Write> {
    writer: csv::Writer<W>,
    attributes: Vec<String>,
}

impl<W: Write> CsvOut<W> {
    pub fn new(out: W, attributes: BTreeSet<String>) -> Result<CsvOut<W>, CliError> {
        // Attributes named like a lead field would be read back as that field: leave them out
        // of the header rather than corrupt the field.
        let attributes: Vec<String> = attributes
            .into_iter()
            .filter(|name| !CSV_FIELDS.contains(&name.as_str()))
            .collect();
        let mut writer = csv::Writer::from_writer(out);
        writer
            .write_record(
                CSV_FIELDS
                    .iter()
                    .copied()
                    .chain(attributes.iter().map(String::as_str)),
            )
            .map_err(csv_error)?;
        Ok(CsvOut { writer, attributes })
    }

    pub fn write(&mut self, lead: &Lead) -> Result<(), CliError> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut record = vec![
            neutralize(lead.email.clone()),
            neutralize(text(&lead.first_name)),
            neutralize(text(&lead.last_name)),
            neutralize(text(&lead.company)),
            neutralize(text(&lead.source)),
            neutralize(lead.tags.iter().cloned().collect::<Vec<_>>().join(";")),
            neutralize(text(&lead.timezone)),
            // A number (`-5` is a score, not a formula) and words of ours.
            lead.score.to_string(),
            lead.stage.to_string(),
            lead.suppression
                .as_ref()
                .map_or_else(String::new, |s| reason_word(s.reason).to_string()),
        ];
        for name in &self.attributes {
            record.push(match lead.attributes.get(name) {
                None => String::new(),
                Some(Value::Text(text)) => neutralize(text.clone()),
                Some(other) => other.to_string(),
            });
        }
        self.writer.write_record(&record).map_err(csv_error)
    }

    pub fn finish(mut self) -> Result<(), CliError> {
        self.writer.flush().map_err(write_error)
    }
}

/// A text cell as CSV writes it: one that a spreadsheet would run as a formula (starting with
/// `=`, `+`, `-`, `@`, a tab or a carriage return; OWASP's "CSV injection") gets a leading `'`,
/// which spreadsheets show as plain text. `leads import` takes that `'` off again (see
/// `crate::leads_file`), so an export imports back to the same values.
pub fn neutralize(text: String) -> String {
    if text.starts_with(crate::leads_file::FORMULA_STARTS) {
        format!("'{text}")
    } else {
        text
    }
}

fn csv_error(error: csv::Error) -> CliError {
    CliError::Input(format!("cannot write the CSV: {error}"))
}

/// One lead as JSON: the store's own shape, which `leads import` reads back.
pub fn lead_json(lead: &Lead) -> String {
    serde_json::to_string(lead).unwrap_or_default()
}

/// `42`, or `25 (50 on 2026-11-01 …, halving every 30 days)` when it has faded.
fn score_text(lead: &Lead, scoring: &Scoring, now: DateTime<Utc>) -> String {
    let score = scoring.score(lead, now);
    match (lead.score_at, scoring.half_life_days) {
        (Some(at), Some(days)) if score != lead.score => format!(
            "{score} ({} on {}, halving every {days} days)",
            lead.score,
            when(at)
        ),
        _ => score.to_string(),
    }
}

/// A time as the reports show it.
pub fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// What a journal event says, as a sentence without the time and workflow.
pub fn sentence(kind: &EventKind) -> String {
    match kind {
        EventKind::Created { by } => format!("created by {by}"),
        EventKind::Updated { by, fields } => format!("{} changed by {by}", fields.join(", ")),
        EventKind::Enrolled => "enrolled".to_string(),
        EventKind::Queued { step, subject, .. } => {
            format!("email of step {step} queued, subject \"{subject}\"")
        }
        EventKind::Sent { step, message_id } => {
            format!("email of step {step} sent ({message_id})")
        }
        EventKind::SendFailed {
            step,
            error,
            permanent,
            ..
        } => {
            if *permanent {
                format!("email of step {step} failed, not sent: {error}")
            } else {
                format!("email of step {step} refused for now, tried again later: {error}")
            }
        }
        EventKind::Uncertain { step, .. } => {
            format!("email of step {step} may or may not have left: the daemon stopped mid-send")
        }
        EventKind::Resent { step, .. } => {
            format!("uncertain email of step {step} sent again by the operator")
        }
        EventKind::Dropped { step, .. } => {
            format!("uncertain email of step {step} dropped by the operator: not sent again")
        }
        EventKind::Received { what } => format!("{what} received"),
        EventKind::Scored {
            signal,
            points,
            before,
            after,
            temperature,
        } => format!("score {points:+} on {signal} ({before} → {after}, {temperature})"),
        EventKind::Expired {
            step,
            template,
            expired,
            expires,
        } => format!(
            "email \"{template}\" of step {step} not sent: it expired {} ({expires})",
            when(*expired)
        ),
        EventKind::Paused { until, reason } => format!("{reason}, until {until}"),
        EventKind::Decision {
            step,
            condition,
            result,
        } => {
            let answer = if *result { "yes" } else { "no" };
            format!("in step {step}, {condition}: {answer}")
        }
        EventKind::Changed { change } => change.clone(),
        // `by` is "by hand" or "workflow `trial-welcome`".
        EventKind::Promoted { stage, by } if by.starts_with("by ") => {
            format!("promoted to {stage} {by}")
        }
        EventKind::Promoted { stage, by } => format!("promoted to {stage} by {by}"),
        EventKind::Notified { to, reason } => format!("notified {to}: {reason}"),
        EventKind::WebhookDelivered {
            webhook,
            url,
            attempts,
            ..
        } => format!("webhook {webhook} delivered to {url} (attempt {attempts})"),
        EventKind::WebhookFailed {
            webhook,
            url,
            error,
            attempts,
            ..
        } => format!("webhook {webhook} to {url} given up after {attempts} attempts: {error}"),
        EventKind::Completed => "completed the workflow".to_string(),
        EventKind::Exited { reason } => format!("left the workflow: {reason}"),
        EventKind::Suppressed { reason } => format!("suppressed: {reason}"),
        EventKind::Unsuppressed => "no longer suppressed".to_string(),
        EventKind::Tracked {
            name,
            properties,
            by,
        } => {
            let properties = if properties.is_empty() {
                String::new()
            } else {
                format!(" {}", serde_json::to_string(properties).unwrap_or_default())
            };
            format!("event {name}{properties}, reported by {by}")
        }
        EventKind::ConfirmationRequested { form, expires } => format!(
            "signed up through form `{form}`: confirmation email sent, unconfirmed until {}",
            when(*expires)
        ),
        EventKind::Consented { form, version } => {
            format!("consent given: {}", consent(form, version))
        }
        EventKind::ConfirmationExpired { form } => {
            format!("sign-up through form `{form}` expired unconfirmed")
        }
        EventKind::Engaged {
            kind,
            step,
            url,
            name,
            machine,
            ..
        } => {
            let what = match (kind.as_str(), name, url) {
                ("click", Some(name), _) => format!("clicked link `{name}` of `{step}`"),
                ("click", None, Some(url)) => format!("clicked {url} in `{step}`"),
                ("open", ..) => format!("opened `{step}`"),
                (other, ..) => format!("{other} of `{step}`"),
            };
            match machine {
                None => format!("{what} (a person)"),
                Some(why) => format!("{what} (a machine: {why}; not counted)"),
            }
        }
    }
}

/// An enrollment's status in words: "active", "completed", "exited: the lead replied".
pub fn status_text(enrollment: &Enrollment) -> String {
    match &enrollment.status {
        Status::Active => "active".to_string(),
        Status::Completed => "completed".to_string(),
        Status::Exited(reason) => format!("exited: {reason}"),
    }
}

/// What an enrollment has seen, in words: "replied", "clicked", "sent welcome, nudge".
pub fn facts_words(facts: &Facts) -> Vec<String> {
    let mut words = Vec::new();
    if facts.replied {
        words.push("replied".to_string());
    }
    if facts.auto_replied {
        words.push("auto-replied".to_string());
    }
    if facts.clicked {
        words.push("clicked".to_string());
    }
    if !facts.sent.is_empty() {
        words.push(format!("sent {}", facts.sent.join(", ")));
    }
    words
}

/// `leads show` as text: fields, attributes, enrollments, then the timeline.
pub fn show_text(
    store: &Store,
    lead: &Lead,
    scoring: &Scoring,
    now: DateTime<Utc>,
) -> Result<String, CliError> {
    let mut out = String::new();
    let none = || "-".to_string();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(none);
    let _ = writeln!(out, "{}", shown(&lead.email));
    let mut fields = vec![
        ("name", lead.full_name().unwrap_or_else(none)),
        ("company", opt(&lead.company)),
        ("source", opt(&lead.source)),
        ("timezone", opt(&lead.timezone)),
        (
            "tags",
            if lead.tags.is_empty() {
                none()
            } else {
                lead.tags.iter().cloned().collect::<Vec<_>>().join(", ")
            },
        ),
        ("score", score_text(lead, scoring, now)),
        ("temperature", scoring.temperature(lead, now).to_string()),
        ("stage", lead.stage.to_string()),
    ];
    let suppressed = match &lead.suppression {
        None => "no".to_string(),
        Some(s) => format!(
            "{} ({}) since {}",
            reason_word(s.reason),
            s.detail,
            when(s.at)
        ),
    };
    fields.push(("suppressed", suppressed));
    let events = store.events_of(&lead.email).map_err(store_error)?;
    let given = events.iter().rev().find_map(|event| match &event.kind {
        EventKind::Consented { form, version } => {
            Some(format!("{}, {}", when(event.at), consent(form, version)))
        }
        _ => None,
    });
    if let Some(given) = given {
        fields.push(("consent", given));
    }
    if let Some(pending) = pending(store, &lead.email).map_err(store_error)? {
        fields.push((
            "unconfirmed",
            format!(
                "signed up again through form `{}` on {}; waits for confirmation until {}",
                pending.form,
                when(pending.requested_at),
                when(pending.expires)
            ),
        ));
    }
    fields.push(("created", when(lead.created_at)));
    fields.push(("updated", when(lead.updated_at)));
    for (name, value) in fields {
        let _ = writeln!(out, "  {name:<10} {}", shown(&value));
    }
    if !lead.attributes.is_empty() {
        let _ = writeln!(out, "attributes");
        let rows: Vec<[String; 2]> = lead
            .attributes
            .iter()
            .map(|(name, value)| [shown(name), shown(&value.to_string())])
            .collect();
        for line in aligned(["", ""], &rows, &[]).lines().skip(1) {
            let _ = writeln!(out, "  {line}");
        }
    }
    let enrollments = store.enrollments_of(&lead.email).map_err(store_error)?;
    let _ = writeln!(out, "enrollments");
    if enrollments.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in &enrollments {
        let due = e.due.map_or_else(
            || "nothing due".to_string(),
            |due| format!("next due {}", when(due)),
        );
        let facts = facts_words(&e.facts);
        let facts = if facts.is_empty() {
            String::new()
        } else {
            format!("; {}", facts.join("; "))
        };
        let line = format!(
            "{}: {}, step {}, {due}, enrolled {}{facts}",
            e.workflow,
            status_text(e),
            e.position.step,
            when(e.enrolled_at)
        );
        let _ = writeln!(out, "  {}", shown(&line));
    }
    let _ = writeln!(out, "timeline");
    for event in events {
        let workflow = event
            .workflow
            .as_ref()
            .map_or_else(String::new, |w| format!("[{w}] "));
        let line = format!("{workflow}{}", sentence(&event.kind));
        let _ = writeln!(out, "  {}  {}", when(event.at), shown(&line));
    }
    Ok(out)
}

/// The most characters `leads show` prints of one value; `--format json` gives it whole.
const SHOW_CHARS: usize = 2000;

/// A value in `leads show`'s text: [`printable`], cut after [`SHOW_CHARS`] characters with a
/// word on how much is left out.
fn shown(text: &str) -> String {
    let text = printable(text);
    match text.char_indices().nth(SHOW_CHARS) {
        None => text.into_owned(),
        Some((cut, _)) => {
            let more = text[cut..].chars().count();
            format!(
                "{}… ({more} more characters; --format json shows all)",
                &text[..cut]
            )
        }
    }
}

/// `leads show` as JSON: the lead, its enrollments and its events in the store's shapes.
pub fn show_json(
    store: &Store,
    lead: &Lead,
    scoring: &Scoring,
    now: DateTime<Utc>,
) -> Result<String, CliError> {
    let enrollments = store.enrollments_of(&lead.email).map_err(store_error)?;
    let events = store.events_of(&lead.email).map_err(store_error)?;
    let history: Vec<&crate::store::Event> = events
        .iter()
        .filter(|event| matches!(event.kind, EventKind::Scored { .. }))
        .collect();
    let value = json!({
        "lead": lead,
        "score_now": scoring.score(lead, now),
        "temperature": scoring.temperature(lead, now),
        "score_history": history,
        "enrollments": enrollments,
        "events": events,
    });
    Ok(serde_json::to_string_pretty(&value).unwrap_or_default())
}
