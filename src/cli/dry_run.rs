//! `nurture dry-run WORKFLOW`: what would be sent, to whom and when, computed by the engine the
//! daemon runs (on a virtual clock), with every email rendered and optionally written to disk.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use clap::{Args, ValueEnum};
use serde_json::json;

use super::{Cli, CliError, ExitCode, Project};
use crate::diagnostic::did_you_mean;
use crate::engine::calendar;
use crate::engine::simulate::{Ending, Scenario, Timeline, Trigger, simulate};
use crate::engine::{Effect, PlannedEmail, condition};
use crate::lead::{Lead, normalize_email};
use crate::leads_file;
use crate::mail::compose::{OutgoingEmail, lead_mailbox, to_eml};
use crate::mail::links::Tracker;
use crate::mail::personalize::personalize;
use crate::unsubscribe::Unsubscribe;
use crate::workflow::{WindowZone, Workflow};

#[derive(Debug, Args)]
pub struct DryRunArgs {
    /// The workflow's name, or the path of its `.flow` file.
    pub workflow: String,
    /// Preview for this lead (repeatable). Taken from `--leads` when it is there; otherwise a
    /// lead with only this address.
    #[arg(long = "lead", value_name = "EMAIL")]
    pub lead: Vec<String>,
    /// A leads file (CSV, JSON or JSON Lines). Without `--lead`, every lead in it that the
    /// workflow's `enroll when` matches is previewed.
    #[arg(long, value_name = "FILE")]
    pub leads: Option<PathBuf>,
    /// When the leads are enrolled: `2026-11-23T09:00:00+01:00`, or `2026-11-23 09:00` in UTC
    /// (default: now).
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
    /// How far to look ahead: `90m`, `12h`, `30d`, `8w` (at most 100 years).
    #[arg(long, value_name = "DURATION", default_value = "60d", value_parser = parse_duration)]
    pub until: Duration,
    /// The lead replies one hour after STEP's email, or DURATION after the start.
    #[arg(long, value_name = "STEP|DURATION")]
    pub reply_after: Option<String>,
    /// A permanent bounce arrives one hour after STEP's email, or DURATION after the start.
    #[arg(long, value_name = "STEP|DURATION")]
    pub bounce_after: Option<String>,
    /// An out-of-office arrives one hour after STEP's email, or DURATION after the start.
    #[arg(long, value_name = "STEP|DURATION")]
    pub auto_reply_after: Option<String>,
    /// With `--auto-reply-after`: the return date the out-of-office gives (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", requires = "auto_reply_after")]
    pub return_date: Option<NaiveDate>,
    /// The lead asks to unsubscribe one hour after STEP's email, or DURATION after the start.
    #[arg(long, value_name = "STEP|DURATION")]
    pub unsubscribe_after: Option<String>,
    /// A person clicks a link of STEP's email one hour after it is sent (repeatable).
    #[arg(long, value_name = "STEP")]
    pub click_after: Vec<String>,
    /// A person opens STEP's email one hour after it is sent (repeatable).
    #[arg(long, value_name = "STEP")]
    pub open_after: Vec<String>,
    /// The lead does NAME (an event the API would report) DURATION after the start:
    /// `visited-pricing@2d` (repeatable).
    #[arg(long, value_name = "NAME@DURATION")]
    pub event: Vec<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write every email as a complete `.eml` (the MIME the daemon sends) and an `.html`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(cli: &Cli, args: &DryRunArgs) -> Result<ExitCode, CliError> {
    let as_file = Path::new(&args.workflow);
    let from_file = args.workflow.ends_with(".flow") || as_file.is_file();
    let sources = if from_file {
        vec![as_file.to_path_buf()]
    } else {
        vec![cli.workflows.clone()]
    };
    let project = Project::load(&sources, &cli.templates);
    if project.count(crate::diagnostic::Severity::Error) > 0 {
        eprint!("{}", project.render_diagnostics());
        return Err(CliError::Invalid(
            "the workflows have errors; fix them first (see `nurture check`)".into(),
        ));
    }
    let workflow = find_workflow(&project, &args.workflow, from_file)?;
    let start = match &args.start {
        Some(text) => parse_start(text)?,
        None => Utc::now()
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or_else(Utc::now),
    };
    // A start near the end of time plus a long look-ahead is past what a date can hold.
    let until = start.checked_add_signed(args.until).ok_or_else(|| {
        CliError::Usage("--start plus --until is past the last date nurture can represent".into())
    })?;
    let scenario = scenario(args, workflow)?;
    let (leads, skipped) = select_leads(args, workflow, start)?;

    let options = Options {
        start,
        until,
        scenario,
        unsubscribe: Unsubscribe::preview(&cli.load_config()?.http.base_url),
    };
    let previews: Vec<LeadPreview> = leads
        .iter()
        .map(|lead| preview_lead(&project, workflow, lead, &options))
        .collect();
    if let Some(dir) = &args.out {
        write_emails(dir, workflow, &previews)?;
    }
    let text = match args.format {
        Format::Text => {
            let mut text: String = previews
                .iter()
                .map(|preview| render_text(workflow, preview))
                .collect();
            if skipped > 0 {
                text.push_str(&format!(
                    "{skipped} lead{} in the file not enrolled: `enroll when` does not match them\n",
                    super::check::plural(skipped)
                ));
            }
            text
        }
        Format::Json => {
            let timelines: Vec<serde_json::Value> =
                previews.iter().map(|p| render_json(workflow, p)).collect();
            let out =
                json!({ "workflow": workflow.name, "leads": timelines, "not_enrolled": skipped });
            serde_json::to_string_pretty(&out).unwrap_or_default() + "\n"
        }
    };
    super::write_output(&mut std::io::stdout().lock(), &text)?;
    let failed: usize = previews
        .iter()
        .flat_map(|p| &p.emails)
        .filter(|e| e.rendered.is_err())
        .count();
    if failed > 0 {
        return Err(CliError::Invalid(format!(
            "{failed} email{} could not be rendered (see above)",
            super::check::plural(failed)
        )));
    }
    Ok(ExitCode::Success)
}

/// What one dry-run computes for each lead.
pub struct Options {
    pub start: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub scenario: Scenario,
    /// Links of the daemon's shape (its `http.base_url`) under a public preview key.
    pub unsubscribe: Unsubscribe,
}

/// One lead's timeline with its emails rendered.
pub struct LeadPreview {
    pub lead: Lead,
    pub zone: Tz,
    pub timeline: Timeline,
    /// One per `Send` effect, in timeline order.
    pub emails: Vec<PreviewEmail>,
}

pub struct PreviewEmail {
    pub at: DateTime<Utc>,
    pub planned: PlannedEmail,
    /// The email as the daemon would send it, or why it cannot be rendered or composed for
    /// this lead (the dry-run then exits 1).
    pub rendered: Result<OutgoingEmail, String>,
}

/// Simulates `workflow` for `lead` and renders every email it would send.
pub fn preview_lead(
    project: &Project,
    workflow: &Workflow,
    lead: &Lead,
    options: &Options,
) -> LeadPreview {
    let timeline = simulate(
        workflow,
        lead,
        options.start,
        options.until,
        &options.scenario,
    );
    let emails = timeline
        .events
        .iter()
        .filter_map(|event| match (&event.effect, &event.lead) {
            (Effect::Send(planned), Some(snapshot)) => Some(PreviewEmail {
                at: event.at,
                planned: planned.clone(),
                // Composed too, as the daemon does before sending: an address the mail
                // system refuses fails here, not silently at run time.
                rendered: personalize(
                    &project.templates,
                    workflow,
                    snapshot,
                    planned,
                    event.at,
                    event.at,
                    &options.unsubscribe,
                    &snapshot.email,
                    preview_tracker(workflow, &options.unsubscribe).as_ref(),
                )
                .and_then(|(email, _)| match to_eml(&email) {
                    Ok(_) => Ok(email),
                    Err(error) => Err(format!("cannot compose the email: {error}")),
                }),
            }),
            _ => None,
        })
        .collect();
    let rule = workflow
        .window
        .as_ref()
        .map_or(WindowZone::Lead, |w| w.zone);
    LeadPreview {
        zone: calendar::zone_for(workflow, lead, rule),
        lead: lead.clone(),
        timeline,
        emails,
    }
}

fn find_workflow<'a>(
    project: &'a Project,
    wanted: &str,
    from_file: bool,
) -> Result<&'a Workflow, CliError> {
    if from_file {
        return project
            .workflows
            .first()
            .ok_or_else(|| CliError::Input(format!("`{wanted}` holds no workflow")));
    }
    project.workflow(wanted).ok_or_else(|| {
        let names: Vec<&str> = project.workflows.iter().map(|w| w.name.as_str()).collect();
        let hint = match did_you_mean(wanted, names.iter().copied()) {
            Some(close) => format!("; did you mean `{close}`?"),
            None => format!("; the workflows are: {}", names.join(", ")),
        };
        CliError::Usage(format!("no workflow named `{wanted}`{hint}"))
    })
}

/// `2026-11-23T09:00:00+01:00`, or `2026-11-23 09:00` / `2026-11-23T09:00` in UTC.
fn parse_start(text: &str) -> Result<DateTime<Utc>, CliError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Utc.from_utc_datetime(&naive));
        }
    }
    Err(CliError::Usage(format!(
        "`{text}` is not a start time; write `2026-11-23T09:00:00+01:00` or `2026-11-23 09:00` (UTC)"
    )))
}

/// The longest duration a flag takes: a preview of a century is already more than any
/// sequence needs, and anything longer only risks overflowing date arithmetic.
const MAX_DURATION_DAYS: i64 = 100 * 366;

/// `90m`, `12h`, `30d`, `8w`, at most 100 years. A number too large for the unit (`--until
/// 99999999999d` panicked in chrono) is refused like any other bad value: clap reports it as a
/// usage error (exit 2).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad =
        || format!("`{text}` is not a duration; write a number and a unit: 90m, 12h, 30d, 8w");
    let too_long = || format!("`{text}` is too long; at most 100 years ({MAX_DURATION_DAYS}d)");
    let n: i64 = match number.parse() {
        Ok(n) => n,
        Err(_) if !number.is_empty() => return Err(too_long()),
        Err(_) => return Err(bad()),
    };
    let duration = match unit.trim() {
        "m" | "min" | "minutes" => Duration::try_minutes(n),
        "h" | "hours" => Duration::try_hours(n),
        "d" | "days" => Duration::try_days(n),
        "w" | "weeks" => Duration::try_weeks(n),
        _ => return Err(bad()),
    };
    duration
        .filter(|d| *d <= Duration::days(MAX_DURATION_DAYS))
        .ok_or_else(too_long)
}

fn trigger(flag: &str, text: &str, workflow: &Workflow) -> Result<Trigger, CliError> {
    if workflow.step_index(text).is_some() {
        return Ok(Trigger::AfterStep(text.to_string()));
    }
    match parse_duration(text) {
        Ok(duration) => return Ok(Trigger::After(duration)),
        // A number with a unit is meant as a duration: say what is wrong with it.
        Err(message) if text.trim().starts_with(|c: char| c.is_ascii_digit()) => {
            return Err(CliError::Usage(format!("{flag}: {message}")));
        }
        Err(_) => {}
    }
    let steps: Vec<&str> = workflow.steps.iter().map(|s| s.name.as_str()).collect();
    let hint = match did_you_mean(text, steps.iter().copied()) {
        Some(close) => format!("did you mean `{close}`?"),
        None => format!("the steps are: {}", steps.join(", ")),
    };
    Err(CliError::Usage(format!(
        "{flag} `{text}` is neither a step of `{}` nor a duration such as 3d; {hint}",
        workflow.name
    )))
}

fn scenario(args: &DryRunArgs, workflow: &Workflow) -> Result<Scenario, CliError> {
    let parse = |flag: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|text| trigger(flag, text, workflow))
            .transpose()
    };
    let step = |flag: &str, text: &String| match trigger(flag, text, workflow)? {
        Trigger::AfterStep(step) => Ok(step),
        Trigger::After(_) => Err(CliError::Usage(format!(
            "{flag} `{text}`: name a step (the email that is clicked or opened)"
        ))),
    };
    let clicks = (args.click_after.iter())
        .map(|text| step("--click-after", text))
        .collect::<Result<_, _>>()?;
    let opens = (args.open_after.iter())
        .map(|text| step("--open-after", text))
        .collect::<Result<_, _>>()?;
    let events = (args.event.iter())
        .map(|text| match text.rsplit_once('@') {
            Some((name, after)) if !name.trim().is_empty() => parse_duration(after)
                .map(|after| (name.trim().to_string(), after))
                .map_err(|message| CliError::Usage(format!("--event `{text}`: {message}"))),
            _ => Err(CliError::Usage(format!(
                "--event `{text}`: write NAME@DURATION, as in `visited-pricing@2d`"
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok(Scenario {
        clicks,
        opens,
        events,
        reply: parse("--reply-after", &args.reply_after)?,
        bounce: parse("--bounce-after", &args.bounce_after)?,
        unsubscribe: parse("--unsubscribe-after", &args.unsubscribe_after)?,
        auto_reply: parse("--auto-reply-after", &args.auto_reply_after)?
            .map(|trigger| (trigger, args.return_date)),
    })
}

/// The leads to preview, and how many leads of the file `enroll when` left out.
fn select_leads(
    args: &DryRunArgs,
    workflow: &Workflow,
    now: DateTime<Utc>,
) -> Result<(Vec<Lead>, usize), CliError> {
    let from_file = match &args.leads {
        Some(path) => {
            let report = leads_file::load(path, now).map_err(|e| CliError::Input(e.to_string()))?;
            for row in &report.rejected {
                eprintln!(
                    "warning: {}:{}: row skipped: {}",
                    path.display(),
                    row.line,
                    row.reason
                );
            }
            report.leads
        }
        None if args.lead.is_empty() => {
            return Err(CliError::Usage(
                "say whom to preview: --lead EMAIL, or --leads FILE (e.g. workflows/sample-leads.csv)"
                    .into(),
            ));
        }
        None => Vec::new(),
    };
    if args.lead.is_empty() {
        let total = from_file.len();
        let enrolled: Vec<Lead> = from_file
            .into_iter()
            .filter(|lead| matches_enrollment(workflow, lead, now))
            .collect();
        let skipped = total - enrolled.len();
        return Ok((enrolled, skipped));
    }
    let mut chosen = Vec::new();
    for wanted in &args.lead {
        let email = normalize_email(wanted).map_err(|e| CliError::Usage(e.to_string()))?;
        let lead = from_file
            .iter()
            .find(|lead| lead.email.eq_ignore_ascii_case(&email))
            .cloned()
            .unwrap_or_else(|| Lead::new(email, now));
        chosen.push(lead);
    }
    Ok((chosen, 0))
}

/// A tracked workflow's previews show tracked links (under the preview key, message 0: they
/// lead nowhere), so the preview looks like what leaves.
fn preview_tracker<'a>(workflow: &Workflow, unsubscribe: &'a Unsubscribe) -> Option<Tracker<'a>> {
    Some(Tracker {
        signer: unsubscribe.signer(),
        base_url: unsubscribe.base_url()?,
        message: 0,
        clicks: workflow.tracking.clicks,
        opens: workflow.tracking.opens,
    })
    .filter(|_| workflow.tracking.any())
}

fn matches_enrollment(workflow: &Workflow, lead: &Lead, now: DateTime<Utc>) -> bool {
    let clock = crate::engine::clock(workflow, lead, now);
    !lead.is_suppressed()
        && workflow.enroll.as_ref().is_none_or(|condition| {
            condition::evaluate(condition, lead, &Default::default(), clock, &mut Vec::new())
        })
}

/// `Mon 2026-11-23 09:00 CET`.
fn local_time(zone: Tz, at: DateTime<Utc>) -> String {
    at.with_timezone(&zone)
        .format("%a %Y-%m-%d %H:%M %Z")
        .to_string()
}

/// `Sat 10:00`.
fn short_time(zone: Tz, at: DateTime<Utc>) -> String {
    at.with_timezone(&zone).format("%a %H:%M").to_string()
}

fn render_text(workflow: &Workflow, preview: &LeadPreview) -> String {
    let zone = preview.zone;
    let lead = &preview.lead;
    let mut out = String::new();
    let who = lead_mailbox(lead).to_string();
    let zone_note = match &lead.timezone {
        Some(_) => zone.name().to_string(),
        None => format!(
            "{} (the workflow's; the lead has no time zone)",
            zone.name()
        ),
    };
    let _ = writeln!(out, "{} → {who}, clock {zone_note}", workflow.name);
    let mut emails = preview.emails.iter();
    let mut last_at = None;
    for event in &preview.timeline.events {
        let line = match &event.effect {
            Effect::Send(planned) => {
                let mut text = String::new();
                if let Some(shift) = &planned.shifted {
                    let _ = writeln!(
                        text,
                        "    held for the {}: {} → {}",
                        shift.reason,
                        short_time(zone, shift.from),
                        short_time(zone, shift.to)
                    );
                }
                let rendered = emails.next().map(|email| &email.rendered);
                let subject = match rendered {
                    Some(Ok(email)) => format!("subject \"{}\"", email.subject),
                    // The daemon records it as failed and ends the sequence there; the preview
                    // goes on so that the later emails can be checked too.
                    Some(Err(error)) => format!(
                        "CANNOT RENDER: {error}\n      (`nurture run` records this email as \
                         failed and ends the sequence here)"
                    ),
                    None => String::new(),
                };
                let _ = write!(
                    text,
                    "    send \"{}\" (step {}), {subject}",
                    planned.template, planned.step
                );
                text
            }
            Effect::Decision {
                condition,
                observed,
                result,
                ..
            } => {
                let seen: Vec<String> = observed
                    .iter()
                    .map(|o| format!("{} = {}", o.what, o.value))
                    .collect();
                format!(
                    "    if {condition}: {} ({})",
                    if *result { "yes" } else { "no" },
                    seen.join(", ")
                )
            }
            Effect::Expired {
                step,
                template,
                expired,
                expires,
            } => format!(
                "    not sent: \"{template}\" (step {step}) expired {} (expires {expires})",
                local_time(zone, *expired)
            ),
            Effect::Received { what } => format!("    {what} received"),
            Effect::LeadChanged { change } => format!("    {change}"),
            Effect::Promoted { stage } => format!("    promoted to {stage}"),
            Effect::Notify { to, reason } => format!("    notify {to}: {reason}"),
            // A window hold is shown on the send it delays.
            Effect::Waiting { reason, .. } if reason == "send window" => continue,
            Effect::Waiting { until, reason } | Effect::Paused { until, reason } => {
                format!("    {reason}, until {}", local_time(zone, *until))
            }
            // The ending is shown once, below.
            Effect::Completed | Effect::Exited { .. } => continue,
        };
        if last_at != Some(event.at) {
            let _ = writeln!(
                out,
                "  {}  ({} UTC)",
                local_time(zone, event.at),
                event.at.format("%Y-%m-%d %H:%M")
            );
            last_at = Some(event.at);
        }
        let _ = writeln!(out, "{line}");
    }
    let stage_change = if preview.timeline.final_lead.stage != lead.stage {
        format!("; {} → {}", lead.stage, preview.timeline.final_lead.stage)
    } else {
        String::new()
    };
    let ending = match &preview.timeline.ending {
        Ending::Completed { at } => {
            format!("completed {}{stage_change}", local_time(zone, *at))
        }
        Ending::Exited { at, reason } => {
            format!("exited {}: {reason}{stage_change}", local_time(zone, *at))
        }
        Ending::Active {
            next_due: Some(next),
        } => format!(
            "still active when the preview ends; next due {}",
            local_time(zone, *next)
        ),
        Ending::Active { next_due: None } => "still active when the preview ends".to_string(),
    };
    let sent = preview.emails.len();
    let _ = writeln!(
        out,
        "  {ending} ({sent} email{})\n",
        super::check::plural(sent)
    );
    out
}

fn render_json(workflow: &Workflow, preview: &LeadPreview) -> serde_json::Value {
    let mut emails = preview.emails.iter();
    let events: Vec<serde_json::Value> = preview
        .timeline
        .events
        .iter()
        .map(|event| {
            let mut value = serde_json::to_value(event).unwrap_or_default();
            // Only sends consume an email: the two lists are in the same order.
            if matches!(event.effect, Effect::Send(_))
                && let Some(email) = emails.next()
                && let Some(object) = value.as_object_mut()
            {
                match &email.rendered {
                    Ok(rendered) => {
                        object.insert("subject".into(), json!(rendered.subject));
                        object.insert("message_id".into(), json!(rendered.message_id));
                    }
                    Err(error) => {
                        object.insert("render_error".into(), json!(error));
                    }
                }
            }
            value
        })
        .collect();
    json!({
        "workflow": workflow.name,
        "lead": preview.lead.email,
        "timezone": preview.zone.name(),
        "enrolled_at": preview.timeline.enrolled_at,
        "events": events,
        "ending": preview.timeline.ending,
        "stage": preview.timeline.final_lead.stage,
    })
}

/// `DIR/<lead>/<nn>-<step>-<template>.eml` and `.html`.
fn write_emails(dir: &Path, workflow: &Workflow, previews: &[LeadPreview]) -> Result<(), CliError> {
    let io = |path: &Path, error: std::io::Error| {
        CliError::Input(format!("cannot write `{}`: {error}", path.display()))
    };
    for preview in previews {
        let folder = dir.join(file_safe(&preview.lead.email));
        std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
        for (index, email) in preview.emails.iter().enumerate() {
            let Ok(rendered) = &email.rendered else {
                continue;
            };
            let stem = format!(
                "{:02}-{}-{}",
                index + 1,
                file_safe(&email.planned.step),
                file_safe(&email.planned.template)
            );
            let eml = to_eml(rendered)
                .map_err(|e| CliError::Invalid(format!("workflow `{}`: {e}", workflow.name)))?;
            let eml_path = folder.join(format!("{stem}.eml"));
            std::fs::write(&eml_path, eml).map_err(|e| io(&eml_path, e))?;
            let html_path = folder.join(format!("{stem}.html"));
            std::fs::write(&html_path, &rendered.body.html).map_err(|e| io(&html_path, e))?;
        }
    }
    Ok(())
}

/// A name safe in any file system: letters, digits, `@`, `.`, `-`, `_`; anything else `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
