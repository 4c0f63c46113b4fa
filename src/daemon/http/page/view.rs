//! What the status page shows, read from the store and rendered to HTML.
//!
//! The numbers are `nurture status`'s report ([`crate::cli::status::report`]), the latest
//! promotions `nurture contacts`' ([`crate::cli::contacts::contacts`]) and a lead's timeline the
//! sentences of `nurture leads show` ([`crate::cli::leads::view`]): the page computes nothing of
//! its own but the funnel's geometry. The templates (`*.html.hbs` beside this file) are built
//! into the binary and rendered by handlebars with HTML escaping on and in strict mode: every
//! value from the store reaches the page escaped, the SVG's labels included.

use chrono::{DateTime, Utc};
use handlebars::Handlebars;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ring::digest::{SHA256, digest};
use serde::Serialize;

use crate::cli::contacts::{Contact, promotions_by_workflow};
use crate::cli::leads::view::{facts_words, reason_word, sentence, status_text, when};
use crate::cli::status::{Report, WorkflowStatus, report};
use crate::lead::Lead;
use crate::project::Project;
use crate::store::Store;

/// The style sheet, inline in every page (no request for another file).
pub const STYLE: &str = include_str!("style.css");
const LAYOUT: &str = include_str!("layout.html.hbs");
const LOGIN: &str = include_str!("login.html.hbs");
const STATUS: &str = include_str!("status.html.hbs");
const LEAD: &str = include_str!("lead.html.hbs");

/// Promotions listed per workflow, newest first.
const PROMOTIONS_LISTED: usize = 5;
/// Characters of a reply shown with its promotion.
const REPLY_CHARS: usize = 280;

/// The funnel's drawing, in SVG user units (the SVG scales to the page's width).
const FUNNEL_WIDTH: u32 = 480;
const ROW_HEIGHT: u32 = 40;
const BAR_X: u32 = 105;
/// Room right of the longest bar for its number.
const BAR_MAX: u32 = FUNNEL_WIDTH - BAR_X - 75;

/// The compiled templates.
pub struct Views {
    registry: Handlebars<'static>,
    /// `'sha256-…'` of [`STYLE`], for the Content-Security-Policy.
    pub style_hash: String,
}

impl Views {
    pub fn new() -> Result<Views, String> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry
            .register_partial("layout", LAYOUT)
            .map_err(|e| format!("the status page's layout: {e}"))?;
        registry
            .register_partial("style", STYLE)
            .map_err(|e| format!("the status page's style: {e}"))?;
        for (name, source) in [("login", LOGIN), ("status", STATUS), ("lead", LEAD)] {
            registry
                .register_template_string(name, source)
                .map_err(|e| format!("the status page's {name} template: {e}"))?;
        }
        use base64::Engine as _;
        let hash =
            base64::engine::general_purpose::STANDARD.encode(digest(&SHA256, STYLE.as_bytes()));
        Ok(Views {
            registry,
            style_hash: format!("'sha256-{hash}'"),
        })
    }

    /// `template` with `data`; a failure is a bug of ours, reported as the page's error.
    pub fn render(&self, template: &str, data: &impl Serialize) -> Result<String, String> {
        self.registry
            .render(template, data)
            .map_err(|e| format!("the status page's {template} template: {e}"))
    }
}

/// The login page: the form, and what went wrong with the last try.
#[derive(Serialize)]
pub struct LoginView {
    pub title: &'static str,
    pub problem: Option<String>,
}

/// The status page: every workflow's funnel, exits and latest promotions, and the totals.
#[derive(Serialize)]
pub struct StatusView {
    title: &'static str,
    generated: String,
    leads: u64,
    contacts: u64,
    suppressed: u64,
    workflows: Vec<WorkflowView>,
}

#[derive(Serialize)]
struct WorkflowView {
    name: String,
    /// The HTML id of its section.
    id: String,
    loaded: bool,
    funnel: Funnel,
    exits: Vec<Figure>,
    figures: Vec<Figure>,
    promotions: Vec<Promotion>,
}

/// The funnel: its steps, with the geometry of their bars.
#[derive(Serialize)]
struct Funnel {
    /// The numbers in one sentence: the SVG's accessible name.
    label: String,
    width: u32,
    height: u32,
    steps: Vec<Step>,
}

#[derive(Serialize)]
struct Step {
    /// Stable, for scripts and tests: `enrolled`, `emailed`, `engaged`, `replied`, `contact`.
    key: &'static str,
    label: &'static str,
    count: u64,
    /// Of the enrolled, in percent with one decimal; none with no enrollment.
    of_enrolled: String,
    /// Of the step before, in percent; none for the first step.
    of_previous: String,
    text_y: u32,
    bar_x: u32,
    bar_y: u32,
    bar_width: u32,
    bar_height: u32,
    number_x: u32,
}

#[derive(Serialize)]
struct Figure {
    label: String,
    value: String,
}

#[derive(Serialize)]
struct Promotion {
    email: String,
    href: String,
    name: String,
    when: String,
    by: String,
    /// What was received just before it: the reply's subject and first lines.
    why: String,
}

/// The status page's data: the report (as `nurture status --format json` makes it) and the
/// latest promotions, read from `store`.
pub fn status(store: &Store, project: &Project, now: DateTime<Utc>) -> Result<StatusView, String> {
    let report: Report = report(store, project, 0).map_err(|e| e.to_string())?;
    let promotions = promotions_by_workflow(store).map_err(|e| e.to_string())?;
    let workflows = report
        .workflows
        .iter()
        .map(|workflow| {
            let promotions = promotions
                .get(&workflow.name)
                .into_iter()
                .flatten()
                .take(PROMOTIONS_LISTED)
                .map(promotion)
                .collect();
            WorkflowView {
                name: workflow.name.clone(),
                id: format!("workflow-{}", slug(&workflow.name)),
                loaded: workflow.loaded,
                funnel: funnel(workflow),
                exits: workflow
                    .exited
                    .iter()
                    .map(|(reason, count)| Figure {
                        label: reason.replace('_', " "),
                        value: count.to_string(),
                    })
                    .collect(),
                figures: figures(workflow),
                promotions,
            }
        })
        .collect();
    Ok(StatusView {
        title: "Status",
        generated: when(now),
        leads: report.leads,
        contacts: report.contacts,
        suppressed: report.suppressed,
        workflows,
    })
}

/// The funnel of `workflow`: enrolled → emailed → engaged → replied → contact, each bar as
/// long as its share of the largest step.
fn funnel(workflow: &WorkflowStatus) -> Funnel {
    let counts = [
        ("enrolled", "Enrolled", workflow.enrolled),
        ("emailed", "Emailed", workflow.emailed),
        ("engaged", "Engaged", workflow.engaged),
        ("replied", "Replied", workflow.replies),
        ("contact", "Contact", workflow.promoted),
    ];
    let largest = counts.iter().map(|(_, _, count)| *count).max().unwrap_or(0);
    let mut previous: Option<u64> = None;
    let mut steps = Vec::new();
    for (row, (key, label, count)) in (0u32..).zip(counts) {
        let bar_width = match largest {
            0 => 0,
            // At least a sliver for a step with someone in it, so it shows.
            _ => ((count as f64 / largest as f64 * f64::from(BAR_MAX)).round() as u32)
                .max(u32::from(count > 0) * 2),
        };
        let y = row * ROW_HEIGHT;
        steps.push(Step {
            key,
            label,
            count,
            of_enrolled: percent(count, workflow.enrolled),
            of_previous: previous.map_or_else(String::new, |before| percent(count, before)),
            text_y: y + ROW_HEIGHT / 2 + 6,
            bar_x: BAR_X,
            bar_y: y + 6,
            bar_width,
            bar_height: ROW_HEIGHT - 12,
            number_x: BAR_X + bar_width + 8,
        });
        previous = Some(count);
    }
    let label = format!(
        "Funnel of {}: {}",
        workflow.name,
        steps
            .iter()
            .map(|step| format!("{} {}", step.label.to_lowercase(), step.count))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Funnel {
        label,
        width: FUNNEL_WIDTH,
        height: ROW_HEIGHT * steps.len() as u32,
        steps,
    }
}

/// The other figures of `nurture status` worth a glance.
fn figures(workflow: &WorkflowStatus) -> Vec<Figure> {
    let count = |label: &str, value: u64| Figure {
        label: label.to_string(),
        value: value.to_string(),
    };
    let rate = |rate: Option<f64>, decimals: usize| {
        rate.map_or_else(|| "–".to_string(), |rate| format!("{rate:.decimals$} %"))
    };
    vec![
        count("active", workflow.active),
        count("completed", workflow.completed),
        count("emails sent", workflow.sent),
        count("emails failed", workflow.failed),
        count("emails queued", workflow.queued),
        count("emails uncertain", workflow.uncertain),
        count("auto-replies", workflow.auto_replies),
        count("spam complaints", workflow.complaints),
        Figure {
            label: "complaint rate".into(),
            value: rate(workflow.complaint_rate, 2),
        },
        Figure {
            label: "contact rate".into(),
            value: rate(workflow.contact_rate, 1),
        },
    ]
}

fn promotion(contact: &Contact) -> Promotion {
    let why = contact.why.as_deref().unwrap_or("-");
    let why = match why.char_indices().nth(REPLY_CHARS) {
        Some((cut, _)) => format!("{}…", &why[..cut]),
        None => why.to_string(),
    };
    Promotion {
        email: contact.lead.email.clone(),
        href: lead_href(&contact.lead.email),
        name: contact.lead.full_name().unwrap_or_default(),
        when: contact.promoted_at.map_or_else(|| "-".to_string(), when),
        by: contact.by.clone().unwrap_or_default(),
        why,
    }
}

/// `part` / `whole` in percent with one decimal; empty when `whole` is 0.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return String::new();
    }
    format!("{:.1} %", part as f64 * 100.0 / whole as f64)
}

/// What a lead's address keeps unencoded in its page's address: letters, digits, `@ . - _`.
const IN_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'@')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');

/// The lead page's address: the lead's address percent-encoded but for [`IN_SEGMENT`], so an
/// address with `/`, `?`, `#` or `%` stays one path segment.
pub fn lead_href(email: &str) -> String {
    format!("/leads/{}", utf8_percent_encode(email, IN_SEGMENT))
}

/// An HTML id from a workflow name: letters, digits and `-`.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// A lead's page: its fields, enrollments and timeline.
#[derive(Serialize)]
pub struct LeadView {
    title: String,
    email: String,
    fields: Vec<Figure>,
    attributes: Vec<Figure>,
    enrollments: Vec<EnrollmentView>,
    timeline: Vec<Line>,
}

#[derive(Serialize)]
struct EnrollmentView {
    workflow: String,
    status: String,
    step: String,
    due: String,
    enrolled: String,
    facts: String,
}

#[derive(Serialize)]
struct Line {
    when: String,
    workflow: String,
    text: String,
}

/// The page of the lead at `email` (normalized), `None` when there is none.
pub fn lead(store: &Store, email: &str) -> Result<Option<LeadView>, String> {
    let Some(lead) = store.lead(email).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let enrollments = store
        .enrollments_of(&lead.email)
        .map_err(|e| e.to_string())?;
    let events = store.events_of(&lead.email).map_err(|e| e.to_string())?;
    Ok(Some(LeadView {
        title: lead.email.clone(),
        email: lead.email.clone(),
        fields: fields(&lead),
        attributes: lead
            .attributes
            .iter()
            .map(|(name, value)| Figure {
                label: name.clone(),
                value: value.to_string(),
            })
            .collect(),
        enrollments: enrollments
            .iter()
            .map(|e| EnrollmentView {
                workflow: e.workflow.clone(),
                status: status_text(e),
                step: e.position.step.clone(),
                due: e.due.map_or_else(|| "nothing due".to_string(), when),
                enrolled: when(e.enrolled_at),
                facts: facts_words(&e.facts).join("; "),
            })
            .collect(),
        timeline: events
            .iter()
            .map(|event| Line {
                when: when(event.at),
                workflow: event.workflow.clone().unwrap_or_default(),
                text: sentence(&event.kind),
            })
            .collect(),
    }))
}

fn fields(lead: &Lead) -> Vec<Figure> {
    let text = |label: &str, value: Option<String>| Figure {
        label: label.to_string(),
        value: value.unwrap_or_else(|| "-".to_string()),
    };
    let tags = lead.tags.iter().cloned().collect::<Vec<_>>().join(", ");
    vec![
        text("name", lead.full_name()),
        text("company", lead.company.clone()),
        text("source", lead.source.clone()),
        text("timezone", lead.timezone.clone()),
        text("tags", (!tags.is_empty()).then_some(tags)),
        text("score", Some(lead.score.to_string())),
        text("stage", Some(lead.stage.to_string())),
        text(
            "suppressed",
            Some(lead.suppression.as_ref().map_or_else(
                || "no".to_string(),
                |s| {
                    format!(
                        "{} ({}) since {}",
                        reason_word(s.reason),
                        s.detail,
                        when(s.at)
                    )
                },
            )),
        ),
        text("created", Some(when(lead.created_at))),
        text("updated", Some(when(lead.updated_at))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_compile_and_escape_what_the_store_holds() {
        let views = Views::new().unwrap();
        let hostile = "<script>alert(1)</script>\"'&";
        let view = LeadView {
            title: hostile.into(),
            email: hostile.into(),
            fields: vec![Figure {
                label: "name".into(),
                value: hostile.into(),
            }],
            attributes: vec![],
            enrollments: vec![],
            timeline: vec![Line {
                when: "2026-11-23 09:00:00 UTC".into(),
                workflow: hostile.into(),
                text: hostile.into(),
            }],
        };
        let html = views.render("lead", &view).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
    }

    #[test]
    fn the_funnel_draws_each_step_with_its_number() {
        let workflow = WorkflowStatus {
            name: "trial".into(),
            enrolled: 10,
            emailed: 8,
            engaged: 4,
            replies: 2,
            promoted: 1,
            ..WorkflowStatus::default()
        };
        let funnel = funnel(&workflow);
        let counts: Vec<u64> = funnel.steps.iter().map(|s| s.count).collect();
        assert_eq!(counts, [10, 8, 4, 2, 1]);
        assert_eq!(funnel.steps[0].bar_width, BAR_MAX);
        assert_eq!(funnel.steps[1].bar_width, BAR_MAX * 8 / 10);
        assert_eq!(funnel.steps[2].of_enrolled, "40.0 %");
        assert_eq!(funnel.steps[3].of_previous, "50.0 %");
        assert_eq!(
            funnel.label,
            "Funnel of trial: enrolled 10, emailed 8, engaged 4, replied 2, contact 1"
        );
        // Nobody enrolled: no bars, no percentages, no division by zero.
        let empty = super::funnel(&WorkflowStatus::default());
        assert!(
            empty
                .steps
                .iter()
                .all(|s| s.bar_width == 0 && s.of_enrolled.is_empty())
        );
    }

    #[test]
    fn lead_links_keep_the_address_in_one_segment() {
        assert_eq!(
            lead_href("a+b/c?d#e%f@x.test"),
            "/leads/a%2Bb%2Fc%3Fd%23e%25f@x.test"
        );
    }
}
