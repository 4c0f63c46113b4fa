//! The human rendering of a [`Report`]: one aligned row per workflow, then what needs a look
//! (complaint rates above the limit, sender-side rejections, emails in flight, uncertain
//! emails), exits by reason, the next enrollments due, and the totals.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{Email, Report, WorkflowStatus, complaints_too_many};
use crate::cli::check::plural;

/// The table names this many emails of a kind (uncertain, in flight); the count covers all.
const LISTED: usize = 10;

fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The human report: the aligned table, uncertain emails, exits by reason, the next due, totals.
pub(super) fn table(report: &Report, now: DateTime<Utc>, workflows_dir: &str) -> String {
    let mut out = String::new();
    workflows(&mut out, report, workflows_dir);
    steps(&mut out, report);
    complaints(&mut out, report);
    sender_side(&mut out, report);
    in_flight(&mut out, report);
    uncertain(&mut out, report);
    exits(&mut out, report);
    next_due(&mut out, report, now);
    let _ = writeln!(
        out,
        "\n{} lead{} in the store, {} contact{} (stage contact or customer), {} suppressed",
        report.leads,
        plural(report.leads as usize),
        report.contacts,
        plural(report.contacts as usize),
        report.suppressed
    );
    if report.complaints > 0 || report.sender_side_rejections > 0 {
        let _ = writeln!(
            out,
            "{} spam complaint{} ({} of the emails sent), {} sender-side rejection{}",
            report.complaints,
            plural(report.complaints as usize),
            percent(report.complaint_rate, 2),
            report.sender_side_rejections,
            plural(report.sender_side_rejections as usize)
        );
    }
    out
}

/// A rate in percent with `decimals` decimals, or a dash when there is none.
fn percent(rate: Option<f64>, decimals: usize) -> String {
    rate.map_or_else(|| "–".to_string(), |rate| format!("{rate:.decimals$}%"))
}

/// Engagement per step: people's opens and clicks (tracked workflows) and replies, machines'
/// opens and clicks apart.
fn steps(out: &mut String, report: &Report) {
    let engaged: Vec<_> = report
        .workflows
        .iter()
        .flat_map(|w| w.steps.iter().map(move |(step, s)| (&w.name, step, s)))
        .filter(|(_, _, s)| s.opens + s.clicks + s.machine_opens + s.machine_clicks + s.replies > 0)
        .collect();
    if engaged.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nper step (opens, clicks and replies by people; machines' apart: image proxies, link scanners):"
    );
    for (workflow, step, s) in engaged {
        let _ = writeln!(
            out,
            "  {} / {}: {} sent, {} open{}, {} click{}, {} repl{} (machines: {} open{}, {} click{})",
            workflow,
            step,
            s.sent,
            s.opens,
            plural(s.opens as usize),
            s.clicks,
            plural(s.clicks as usize),
            s.replies,
            if s.replies == 1 { "y" } else { "ies" },
            s.machine_opens,
            plural(s.machine_opens as usize),
            s.machine_clicks,
            plural(s.machine_clicks as usize),
        );
    }
}

/// One row per workflow, names left, numbers right-aligned under their headers.
fn workflows(out: &mut String, report: &Report, workflows_dir: &str) {
    const HEADERS: [&str; 17] = [
        "workflow",
        "enrolled",
        "active",
        "completed",
        "exited",
        "sent",
        "failed",
        "uncertain",
        "queued",
        "in flight",
        "replies",
        "auto-replies",
        "complaints",
        "complaint rate",
        "sender-side rejections",
        "promoted",
        "contact rate",
    ];
    let rows: Vec<[String; 17]> = report
        .workflows
        .iter()
        .map(|w| {
            let name = if w.loaded {
                w.name.clone()
            } else {
                format!("{}*", w.name)
            };
            [
                name,
                w.enrolled.to_string(),
                w.active.to_string(),
                w.completed.to_string(),
                w.exited_total().to_string(),
                w.sent.to_string(),
                w.failed.to_string(),
                w.uncertain.to_string(),
                w.queued.to_string(),
                w.in_flight.to_string(),
                w.replies.to_string(),
                w.auto_replies.to_string(),
                w.complaints.to_string(),
                percent(w.complaint_rate, 2),
                w.sender_side_rejections.to_string(),
                w.promoted.to_string(),
                percent(w.contact_rate, 1),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|header| header.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (column, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let pad = " ".repeat(width - cell.chars().count());
            // Names read left to right; numbers line up on their last digit.
            if column == 0 {
                let _ = write!(text, "{cell}{pad}");
            } else {
                let _ = write!(text, "  {pad}{cell}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&HEADERS);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    if report.workflows.iter().any(|w| !w.loaded) {
        let _ = writeln!(
            out,
            "* not loaded: the store has enrollments in this workflow, but no workflow of that \
             name compiled from {workflows_dir} (deleted, renamed, or its file has errors: run \
             `nurture check`)"
        );
    }
}

/// A warning for every workflow whose complaint rate is above 0.1 %, and for all of them
/// together (mailbox providers count per sender, whatever the workflow).
fn complaints(out: &mut String, report: &Report) {
    let sent: u64 = report.workflows.iter().map(|w| w.sent).sum();
    let too_many: Vec<(&str, u64, u64, Option<f64>)> = report
        .workflows
        .iter()
        .map(|w| (w.name.as_str(), w.complaints, w.sent, w.complaint_rate))
        .chain([(
            "all workflows",
            report.complaints,
            sent,
            report.complaint_rate,
        )])
        .filter(|(_, complaints, sent, _)| complaints_too_many(*complaints, *sent))
        .collect();
    if too_many.is_empty() {
        return;
    }
    out.push('\n');
    for (name, complaints, sent, rate) in too_many {
        let _ = writeln!(
            out,
            "warning: {name}: {complaints} spam complaint{} for {sent} email{} sent, a complaint \
             rate of {}, above 0.1%",
            plural(complaints as usize),
            plural(sent as usize),
            percent(rate, 2)
        );
    }
    out.push_str(
        "  Gmail and Yahoo filter or refuse a sender whose complaint rate passes 0.3%: mail \
         fewer people who did not ask for it, less often, with a visible unsubscribe link\n",
    );
}

/// Emails refused for a reason on the sender's side: the leads are fine, the sender is not.
fn sender_side(out: &mut String, report: &Report) {
    let total = report.sender_side_rejections;
    if total == 0 {
        return;
    }
    let mut by_workflow: Vec<String> = report
        .workflows
        .iter()
        .filter(|w| w.sender_side_rejections > 0)
        .map(|w| format!("{} {}", w.name, w.sender_side_rejections))
        .collect();
    let traced: u64 = report
        .workflows
        .iter()
        .map(|w| w.sender_side_rejections)
        .sum();
    if total > traced {
        by_workflow.push(format!("no workflow known {}", total - traced));
    }
    let (emails, were) = if total == 1 {
        ("email was", "it was")
    } else {
        ("emails were", "they were")
    };
    let _ = writeln!(
        out,
        "\nwarning: {total} {emails} refused by the receiving server for a reason on the \
         sender's side ({}): the sender has a deliverability problem (blocked, spam, policy or \
         authentication: SPF, DKIM, DMARC, the sending IP's reputation); the leads stay active; \
         the journal (`nurture leads show LEAD`) and the daemon's log say who refused and why \
         {were} refused",
        by_workflow.join(", ")
    );
}

/// Emails a stop caught while they were being handed over: the daemon settles them when it
/// starts, so this shows only while it is stopped.
fn in_flight(out: &mut String, report: &Report) {
    let count = report.in_flight_emails.len();
    if count > 0 {
        let (emails, them) = if count == 1 {
            ("email was", "it")
        } else {
            ("emails were", "them")
        };
        let _ = writeln!(
            out,
            "\n{count} {emails} in flight when the daemon stopped: `nurture run` settles {them} \
             when it starts (with the file transport, from the outbox folder; over SMTP, \
             uncertain):"
        );
        list(out, &report.in_flight_emails, |email| email.queued_at);
    }
}

/// Uncertain emails need a person to find out whether they left: the count and the first few.
fn uncertain(out: &mut String, report: &Report) {
    let uncertain = report.uncertain_emails.len();
    if uncertain > 0 {
        let (emails, them, they) = if uncertain == 1 {
            ("email is", "it", "it")
        } else {
            ("emails are", "them", "they")
        };
        let _ = writeln!(
            out,
            "\nwarning: {uncertain} {emails} uncertain: the daemon stopped while handing {them} \
             to the mail server, so {they} may or may not have left; nurture does not send {them} \
             again by itself: the mail server's log tells whether {they} left, then \
             `nurture outbox resend` or `nurture outbox drop`:"
        );
        list(out, &report.uncertain_emails, |email| email.at);
    }
}

/// The first [`LISTED`] emails, one a line, and how many more there are.
fn list(out: &mut String, emails: &[Email], at: impl Fn(&Email) -> Option<DateTime<Utc>>) {
    for email in emails.iter().take(LISTED) {
        let _ = writeln!(
            out,
            "  {}  {}  {}  step {}  {}",
            at(email).map_or_else(String::new, utc),
            email.workflow,
            email.lead,
            email.step,
            email.message_id
        );
    }
    if emails.len() > LISTED {
        let _ = writeln!(out, "  and {} more", emails.len() - LISTED);
    }
}

fn exits(out: &mut String, report: &Report) {
    let exits: Vec<&WorkflowStatus> = report
        .workflows
        .iter()
        .filter(|w| !w.exited.is_empty())
        .collect();
    if !exits.is_empty() {
        out.push_str("\nexited, by reason:\n");
        for w in exits {
            let reasons: Vec<String> = w
                .exited
                .iter()
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            let _ = writeln!(out, "  {}: {}", w.name, reasons.join(", "));
        }
    }
}

fn next_due(out: &mut String, report: &Report, now: DateTime<Utc>) {
    out.push_str("\nnext due:\n");
    if report.next.is_empty() {
        out.push_str("  nothing is scheduled\n");
    }
    let workflow_width = report
        .next
        .iter()
        .map(|due| due.workflow.chars().count())
        .max()
        .unwrap_or(0);
    for due in &report.next {
        // The daemon holds the store while it runs, so a past time here means it is stopped.
        let late = if due.at <= now { "  overdue" } else { "" };
        let pad = " ".repeat(workflow_width - due.workflow.chars().count());
        let _ = writeln!(
            out,
            "  {}  {}{pad}  {}{late}",
            utc(due.at),
            due.workflow,
            due.lead
        );
    }
}
