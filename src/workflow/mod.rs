//! The compiled workflow program: what the DSL compiler produces and the engine runs.
//!
//! A workflow is a list of named steps; each step's body is flattened into a small instruction
//! list with relative-free jumps (indexes into the same step's code). An enrollment's position is
//! `(step name, instruction index)` plus what it did in that step (see `engine::resume`), so an
//! edited workflow whose step still exists lets in-flight enrollments continue where they were. Everything here is plain data: validated, immutable, and
//! free of I/O.

pub mod cron;

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{NaiveTime, Weekday};
use chrono_tz::Tz;

use crate::lead::{Stage, Value};
use crate::scoring::{Scoring, Temperature};

pub use self::cron::CronSlot;

/// One validated workflow file.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The name in `workflow "…"`; unique across all loaded files.
    pub name: String,
    /// The file it was compiled from (for messages).
    pub path: PathBuf,
    /// Hex digest of the source text: identifies the version enrollments ran under.
    pub version: String,
    /// `enroll when …`; `None` means leads are only enrolled by hand.
    pub enroll: Option<Condition>,
    /// `allow re-entry`: a lead that finished may be enrolled again.
    pub reentry: bool,
    /// `exit when …`: when a lead has reached what the workflow is for, it leaves.
    pub goal: Option<Goal>,
    /// `mark as bulk`: newsletters and digests. Their emails carry `Auto-Submitted:
    /// auto-generated` and `Precedence: bulk`, so out-of-office responders stay quiet (RFC
    /// 3834); personal sequences, whose point is a reply, leave it off.
    pub bulk: bool,
    /// `every "…"`: a recurring workflow that enrolls its segment at each slot.
    pub every: Option<CronSlot>,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    /// Who is told about replies (`owner "…"`); notifications go here when `notify owner` is used.
    pub owner: Option<Mailbox>,
    /// The workflow's zone: used for `every`, and for leads without a (valid) zone of their own.
    pub timezone: Tz,
    /// `send on …`: when emails may leave. `None`: any time.
    pub window: Option<SendWindow>,
    pub handlers: Handlers,
    /// `track clicks`, `track opens`: what its emails' links and image report.
    pub tracking: Tracking,
    /// In source order; execution starts at the first and falls through to the next.
    pub steps: Vec<Step>,
    /// The project's scoring rules (one workflow's `scoring` block, shared by all: see
    /// `dsl::load`); the defaults when no workflow has one.
    pub scoring: Arc<Scoring>,
    /// This file holds the `scoring` block.
    pub defines_scoring: bool,
}

impl Workflow {
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|step| step.name == name)
    }

    /// Every lead field the workflow names (`lead.country` in a condition, `set lead.plan`):
    /// for `nurture check`, an attribute a workflow names is one leads are meant to carry.
    pub fn fields(&self) -> BTreeSet<&str> {
        fn visit<'a>(condition: &'a Condition, out: &mut BTreeSet<&'a str>) {
            match condition {
                Condition::And(a, b) | Condition::Or(a, b) => {
                    visit(a, out);
                    visit(b, out);
                }
                Condition::Not(inner) => visit(inner, out),
                Condition::CompareDate { field, value, .. } => {
                    out.insert(field);
                    date(value, out);
                }
                Condition::Compare { field, .. }
                | Condition::In { field, .. }
                | Condition::IsSet { field, .. } => {
                    out.insert(field);
                }
                Condition::HasTag(_) | Condition::Engaged(_) | Condition::Temperature { .. } => {}
            }
        }
        fn date<'a>(expr: &'a DateExpr, out: &mut BTreeSet<&'a str>) {
            if let DateBase::Field(field) = &expr.base {
                out.insert(field);
            }
        }
        let mut fields = BTreeSet::new();
        if let Some(condition) = &self.enroll {
            visit(condition, &mut fields);
        }
        let handlers = &self.handlers;
        let codes = [
            &handlers.reply,
            &handlers.auto_reply,
            &handlers.bounce,
            &handlers.unsubscribe,
            &handlers.click,
        ];
        for code in codes
            .into_iter()
            .chain(handlers.became.iter().map(|(_, code)| code))
            .chain(self.steps.iter().map(|step| &step.code))
        {
            for instr in code {
                match instr {
                    Instr::Branch { condition, .. } => visit(condition, &mut fields),
                    Instr::Act(Action::Set { field, .. }) => {
                        fields.insert(field);
                    }
                    Instr::Act(Action::SetDate { field, value }) => {
                        fields.insert(field);
                        date(value, &mut fields);
                    }
                    Instr::Wait(Wait::UntilDate(value))
                    | Instr::Send(Send {
                        expires: Some(value),
                        ..
                    }) => date(value, &mut fields),
                    _ => {}
                }
            }
        }
        fields
    }

    /// Every template any `send` of this workflow uses, once each, in order of first use.
    pub fn templates(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for step in &self.steps {
            for instr in &step.code {
                if let Instr::Send(send) = instr
                    && !names.contains(&send.template.as_str())
                {
                    names.push(&send.template);
                }
            }
        }
        names
    }
}

/// What a workflow's emails report back (`track clicks`, `track opens`); off unless said, and
/// only when the daemon has a public address (`http.base_url`) to report to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracking {
    /// Links become `{base_url}/c/{token}`, answered with a redirect to the link.
    pub clicks: bool,
    /// A 1×1 image `{base_url}/o/{token}` is added to the HTML part.
    pub opens: bool,
}

impl Tracking {
    pub fn any(self) -> bool {
        self.clicks || self.opens
    }
}

/// `exit when lead.stage is "customer"`: the workflow's goal. It is checked at every wake-up,
/// before every step, after every handler, and whenever the lead changes outside the workflow;
/// a lead that meets it leaves with the reason "goal reached: …" (and is not enrolled while it
/// meets it).
#[derive(Debug, Clone)]
pub struct Goal {
    pub condition: Condition,
    /// The condition as written, for the exit reason (`lead.stage is "customer"`).
    pub text: String,
}

/// A sender or recipient: `Ana Ortiz <ana@acme.example>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    /// Already validated and normalized with `lead::normalize_email`.
    pub address: String,
}

impl Mailbox {
    /// `"Ana Ortiz <ana@acme.example>"` or `"ana@acme.example"`; the reason when it is neither.
    pub fn parse(text: &str) -> Result<Mailbox, String> {
        let written = text.trim();
        match written.find('<') {
            Some(open) => match written.strip_suffix('>') {
                Some(inside) => {
                    let name = written[..open].trim().trim_matches('"').trim();
                    crate::lead::normalize_email(&inside[open + 1..])
                        .map(|address| Mailbox {
                            name: (!name.is_empty()).then(|| name.to_string()),
                            address,
                        })
                        .map_err(|error| error.to_string())
                }
                None => Err(format!("`{written}` has a `<` but does not end with `>`")),
            },
            None => crate::lead::normalize_email(written)
                .map(|address| Mailbox {
                    name: None,
                    address,
                })
                .map_err(|error| error.to_string()),
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} <{}>", self.address),
            None => f.write_str(&self.address),
        }
    }
}

/// `send on Mon-Fri between 09:00 and 17:30 in lead timezone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    pub days: Weekdays,
    /// Inclusive start.
    pub start: NaiveTime,
    /// Exclusive end; always after `start` (validated).
    pub end: NaiveTime,
    pub zone: WindowZone,
}

/// Whose clock a send window (and `wait until`) is read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowZone {
    /// The lead's own zone, falling back to the workflow's when the lead has none.
    Lead,
    /// Always the workflow's `timezone`.
    Workflow,
}

/// A set of weekdays, as a bit mask (bit 0 = Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Weekdays(u8);

impl Weekdays {
    pub const ALL: Weekdays = Weekdays(0b111_1111);
    pub const BUSINESS: Weekdays = Weekdays(0b001_1111);

    pub fn empty() -> Weekdays {
        Weekdays(0)
    }

    pub fn with(self, day: Weekday) -> Weekdays {
        Weekdays(self.0 | 1 << day.num_days_from_monday())
    }

    /// Every day from `first` to `last`, wrapping past Sunday (`Fri-Mon` is Fri, Sat, Sun, Mon).
    pub fn with_range(self, first: Weekday, last: Weekday) -> Weekdays {
        let mut days = self;
        let mut day = first;
        loop {
            days = days.with(day);
            if day == last {
                return days;
            }
            day = day.succ();
        }
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Weekdays {
    /// `Mon-Fri`, `Mon, Wed, Fri`, `every day`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Weekdays::ALL {
            return f.write_str("every day");
        }
        let days: Vec<Weekday> = (0..7)
            .map(|i| Weekday::try_from(i as u8).expect("0..7 is a weekday"))
            .filter(|day| self.contains(*day))
            .collect();
        let contiguous = days
            .windows(2)
            .all(|pair| pair[0].num_days_from_monday() + 1 == pair[1].num_days_from_monday());
        match days.as_slice() {
            [] => f.write_str("no day"),
            [one] => write!(f, "{one}"),
            [first, .., last] if contiguous => write!(f, "{first}-{last}"),
            _ => {
                let names: Vec<String> = days.iter().map(|d| d.to_string()).collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

/// What happens when mail about an enrollment arrives. Each handler is a short instruction list
/// run like a step body; it may not `wait` or `send` (validated). An empty list means "continue
/// the sequence"; the compiler fills in the documented defaults for handlers a file leaves out.
#[derive(Debug, Clone, Default)]
pub struct Handlers {
    /// Default: promote to contact; notify owner (when there is one); exit.
    pub reply: Vec<Instr>,
    /// Default: continue (an out-of-office never ends a sequence on its own).
    pub auto_reply: Vec<Instr>,
    /// Default: exit. (A permanent bounce also suppresses the address, whatever the handler says.)
    pub bounce: Vec<Instr>,
    /// Default: exit. (The address is always suppressed.)
    pub unsubscribe: Vec<Instr>,
    /// A person clicked a tracked link. Default: continue.
    pub click: Vec<Instr>,
    /// `when lead becomes hot { … }`: run when the lead's temperature changes to this one.
    /// Default: nothing.
    pub became: Vec<(Temperature, Vec<Instr>)>,
}

/// A named step.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub code: Vec<Instr>,
    /// A digest of `code` as it bears on where an enrollment stands (instructions, templates,
    /// waits, conditions, jump targets, `goto` step names; not subjects). An enrollment records
    /// it with its position: when it differs, the step's instructions changed under it and the
    /// engine finds its place again (see `engine::resume`).
    pub shape: String,
    /// Where the step's name is in the file (byte offsets), for messages about it.
    pub span: std::ops::Range<usize>,
}

/// One instruction. Jump targets index into the same step's `code`; an index equal to
/// `code.len()` means "the end of this step" (fall through to the next step).
#[derive(Debug, Clone)]
pub enum Instr {
    Send(Send),
    Wait(Wait),
    /// Evaluate the condition; when false, continue at `else_to`.
    Branch {
        condition: Condition,
        /// The condition as written in the file, for timelines ("lead.score >= 20").
        text: String,
        else_to: usize,
    },
    /// Continue at this index (the end of an `if` block jumping over its `else`).
    Jump(usize),
    Act(Action),
    /// Continue at the start of the step with this index.
    Goto(usize),
    /// End the enrollment ("exited: workflow said exit").
    Exit,
    /// Only in `on auto-reply`: pause the sequence until the out-of-office's return date, if
    /// the message gave one.
    PauseUntilReturn,
}

/// `send "welcome" subject "Welcome aboard, {{first_name}}!"`.
#[derive(Debug, Clone)]
pub struct Send {
    /// Template name: `templates/<name>.html.hbs` and `templates/<name>.txt.hbs`.
    pub template: String,
    /// A handlebars template rendered for the lead (never HTML-escaped; CR/LF removed).
    pub subject: String,
    /// `expires lead.offer_ends`: from this moment on the email is not sent (an offer that
    /// ended is never announced); `None`: it never expires.
    pub expires: Option<DateExpr>,
}

// A cron slot is large, but there is one `Wait` per `wait` statement: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    /// `wait 2 days`, `wait 90 minutes`: wall-clock duration.
    For(WaitLength),
    /// `wait 3 business days`: Monday to Friday, same local time of day.
    BusinessDays(u32),
    /// `wait until Tuesday 10:00` (or `wait until 10:00`: the next time it is 10:00).
    UntilWeekday { days: Weekdays, time: NaiveTime },
    /// `wait until cron "0 9 * * MON"`, read on the lead's clock.
    UntilCron(CronSlot),
    /// `wait until lead clicked "offer" or 3 days`: the sequence goes on when the lead does
    /// it (at once, if it already has), or after `timeout`, whichever comes first.
    UntilAction {
        action: Engagement,
        timeout: WaitLength,
    },
    /// `wait until lead.trial_ends - 2 days`: a moment computed from the lead's data when the
    /// wait starts (no wait when it has passed or the lead has no such date).
    UntilDate(DateExpr),
}

/// A moment written in the language: `now`, `lead.trial_ends`, `"2026-12-24"`, each optionally
/// moved: `now + 7 days`, `lead.trial_ends - 2 days`. It is worked out on the lead's clock when
/// the statement runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DateExpr {
    pub base: DateBase,
    pub shifts: Vec<DateShift>,
    /// As written, on one line, for timelines ("lead.trial_ends - 2 days").
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DateBase {
    /// The moment the statement runs.
    Now,
    /// A lead field holding a date (see `crate::dates`).
    Field(String),
    /// A date written in the workflow: `"2026-12-24"`.
    Fixed(crate::dates::DateValue),
}

/// `+ 7 days`, `- 2 hours`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateShift {
    pub forward: bool,
    pub length: WaitLength,
}

/// A length of time as the marketer wrote it (kept for display: "2 days", not "172800 s").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitLength {
    Minutes(u32),
    Hours(u32),
    /// Calendar days: same local time of day, whatever DST did in between.
    Days(u32),
    Weeks(u32),
}

/// Something done to the lead or the outside world.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `set lead.plan to "pro"`.
    Set {
        field: String,
        value: Value,
    },
    /// `set lead.offer_ends to now + 7 days`: the moment, stored as RFC 3339 text in UTC.
    SetDate {
        field: String,
        value: DateExpr,
    },
    Tag(String),
    Untag(String),
    /// `score +10`, `score -5`.
    Score(i64),
    /// `promote to contact`.
    Promote(Stage),
    /// `notify "sales@acme.example"` or `notify owner`.
    Notify(NotifyTarget),
}

#[derive(Debug, Clone, PartialEq)]
pub enum NotifyTarget {
    Owner,
    Address(Mailbox),
}

/// A yes/no question about a lead and its enrollment.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
    /// `lead.score >= 20`, `lead.source is "webinar"`.
    Compare {
        field: String,
        op: CompareOp,
        value: Value,
    },
    /// `lead.trial_ends < now + 3 days`: orders two moments. A lead whose field holds no date
    /// (unset, or text that is not a date) compares false.
    CompareDate {
        field: String,
        op: CompareOp,
        value: DateExpr,
    },
    /// `lead.tags has "trial"`.
    HasTag(String),
    /// `lead.temperature is hot` (`negated`: `is not`).
    Temperature {
        temperature: Temperature,
        negated: bool,
    },
    /// `lead.country in ["DE", "AT", "CH"]`.
    In {
        field: String,
        values: Vec<Value>,
    },
    /// `lead.company is set` (`negated`: `is not set`).
    IsSet {
        field: String,
        negated: bool,
    },
    /// An engagement fact about this enrollment: `replied`, `opened "welcome"`...
    Engaged(Engagement),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// Case-insensitive substring, text only.
    Contains,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "is",
            CompareOp::Ne => "is not",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Contains => "contains",
        }
    }
}

/// What the enrollment has seen happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engagement {
    /// The lead sent a human reply to any email of this workflow.
    Replied,
    /// An auto-reply (out-of-office) came back.
    AutoReplied,
    /// A person clicked a tracked link in any email of this workflow.
    Clicked,
    /// A person clicked a link of the email of this step.
    ClickedStep(String),
    /// A person clicked the link of this name (`{{link "NAME" "URL"}}`).
    ClickedLink(String),
    /// A person opened the email of this step.
    Opened(String),
    /// The lead did this (an event reported through the API), within this time when given.
    Did {
        event: String,
        within: Option<WaitLength>,
    },
    /// The email of this template was sent to the lead in this enrollment.
    Sent(String),
}

impl std::fmt::Display for Engagement {
    /// As written in a workflow: `clicked "offer"`, `did "visited-pricing" within 7 days`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engagement::Replied => f.write_str("replied"),
            Engagement::AutoReplied => f.write_str("auto-replied"),
            Engagement::Clicked => f.write_str("clicked"),
            Engagement::ClickedStep(step) => write!(f, "clicked \"{step}\""),
            Engagement::ClickedLink(name) => write!(f, "clicked link \"{name}\""),
            Engagement::Opened(step) => write!(f, "opened \"{step}\""),
            Engagement::Did {
                event,
                within: None,
            } => write!(f, "did \"{event}\""),
            Engagement::Did {
                event,
                within: Some(length),
            } => write!(f, "did \"{event}\" within {length}"),
            Engagement::Sent(template) => write!(f, "sent \"{template}\""),
        }
    }
}

impl std::fmt::Display for WaitLength {
    /// `2 days`, `1 hour`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, unit) = match *self {
            WaitLength::Minutes(n) => (n, "minute"),
            WaitLength::Hours(n) => (n, "hour"),
            WaitLength::Days(n) => (n, "day"),
            WaitLength::Weeks(n) => (n, "week"),
        };
        if n == 1 {
            write!(f, "1 {unit}")
        } else {
            write!(f, "{n} {unit}s")
        }
    }
}
