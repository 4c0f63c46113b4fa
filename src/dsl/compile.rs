//! Syntax tree → [`Workflow`]: resolves every word and text into a program value (zones, cron
//! slots, addresses, weekdays, units, fields, stages, step indexes) and flattens statement
//! blocks into instruction lists with jumps.
//!
//! Each value that does not resolve becomes a diagnostic here, in the one place that reads it;
//! compilation carries on so that all of them are reported. The caller keeps the workflow only
//! when no check or resolution reported an error.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{NaiveTime, Utc, Weekday};
use chrono_tz::Tz;

use crate::dates::{DATE_FORMS, DateValue};
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::lead::{BUILT_IN_FIELDS, Lead, Stage, Value};
use crate::scoring::{Rule, Scoring, SignalKind, Temperature};
use crate::workflow::{
    Action, CompareOp, Condition, CronSlot, DateBase, DateExpr, DateShift, Engagement, Goal,
    Handlers, Instr, Mailbox, NotifyTarget, Send, SendWindow, Step, Tracking, Wait, WaitLength,
    Weekdays, WindowZone, Workflow,
};

use super::Context;
use super::ast::*;

/// `lead.temperature`: worked out from the score and recent actions, never stored.
pub const TEMPERATURE: &str = "temperature";
/// The largest `score +N` / `score -N`: keeps scores far from overflow, whatever loops do.
const MAX_SCORE_CHANGE: i64 = 1_000_000;
/// What to write instead of ordering text.
const TEXT_ORDER_HINT: &str = "text is compared with `is`, `is not`, `in [...]` or `contains`; \
     a date is written `\"2026-12-24\"`, `now` or `now + 3 days`";
/// The largest count in `wait N UNIT`: 10000 weeks is already two centuries.
const MAX_WAIT_COUNT: u32 = 10_000;

/// Units as written (singular and plural), plurals first so a typo suggests the plural.
const UNITS: [&str; 10] = [
    "minutes",
    "hours",
    "days",
    "weeks",
    "business days",
    "minute",
    "hour",
    "day",
    "week",
    "business day",
];

const WEEKDAY_NAMES: [(&str, &str, Weekday); 7] = [
    ("Mon", "Monday", Weekday::Mon),
    ("Tue", "Tuesday", Weekday::Tue),
    ("Wed", "Wednesday", Weekday::Wed),
    ("Thu", "Thursday", Weekday::Thu),
    ("Fri", "Friday", Weekday::Fri),
    ("Sat", "Saturday", Weekday::Sat),
    ("Sun", "Sunday", Weekday::Sun),
];

/// Compiles a syntax tree; the workflow is `None` when something essential (the sender) is
/// missing. Diagnostics are in no particular order.
pub fn compile(
    cx: &Context,
    ast: &WorkflowAst,
    version: String,
) -> (Option<Workflow>, Vec<Diagnostic>) {
    let mut compiler = Compiler {
        cx,
        diagnostics: Vec::new(),
        steps: BTreeMap::new(),
        sending: Vec::new(),
        tracking: Tracking::default(),
        dates: date_fields(ast),
    };
    for (index, step) in ast.steps().enumerate() {
        compiler
            .steps
            .entry(step.name.value.as_str())
            .or_insert(index);
        let mut sends = false;
        for_each_stmt(&step.body, &mut |stmt, _| {
            sends |= matches!(stmt.kind, StmtKind::Send { .. });
        });
        if sends {
            compiler.sending.push(step.name.value.as_str());
        }
    }
    let workflow = compiler.workflow(ast, version);
    (workflow, compiler.diagnostics)
}

struct Compiler<'a> {
    cx: &'a Context<'a>,
    diagnostics: Vec<Diagnostic>,
    /// Step name → index (the first, when a name is used twice: validation reports that).
    steps: BTreeMap<&'a str, usize>,
    /// The steps that send an email (what `opened "STEP"` and `clicked "STEP"` may name).
    sending: Vec<&'a str>,
    /// `track …`, read before anything else: conditions on clicks and opens need it.
    tracking: Tracking,
    /// Custom fields the file uses as dates → where and how often (see [`date_fields`]).
    dates: BTreeMap<String, DateUses>,
}

/// The header, as resolved so far: the first of each setting wins (validation reports repeats).
#[derive(Default)]
struct Header {
    enroll: Option<Condition>,
    goal: Option<Goal>,
    reentry: bool,
    bulk: bool,
    every: Option<CronSlot>,
    from: Option<Mailbox>,
    from_written: bool,
    reply_to: Option<Mailbox>,
    owner: Option<Mailbox>,
    timezone: Option<Tz>,
    window: Option<SendWindow>,
    scoring: Option<Scoring>,
}

impl<'a> Compiler<'a> {
    fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn workflow(&mut self, ast: &'a WorkflowAst, version: String) -> Option<Workflow> {
        for setting in ast.settings() {
            if let SettingKind::Track(words) = &setting.kind {
                self.track(words);
            }
        }
        let mut header = Header::default();
        let mut seen: Vec<&str> = Vec::new();
        for setting in ast.settings() {
            let keyword = setting.kind.keyword();
            if seen.contains(&keyword) {
                continue;
            }
            seen.push(keyword);
            self.setting(&setting.kind, &mut header);
        }
        if !header.from_written {
            self.push(
                self.cx
                    .error("the workflow has no sender", ast.name.span.clone())
                    .with_label("no `from` setting")
                    .with_hint("add `from \"Name <address>\"` to its settings"),
            );
        }

        let mut handlers = Handlers {
            reply: vec![Instr::Act(Action::Promote(Stage::Contact))],
            auto_reply: Vec::new(),
            bounce: vec![Instr::Exit],
            unsubscribe: vec![Instr::Exit],
            click: Vec::new(),
            became: Vec::new(),
        };
        if header.owner.is_some() {
            handlers
                .reply
                .push(Instr::Act(Action::Notify(NotifyTarget::Owner)));
        }
        handlers.reply.push(Instr::Exit);
        let mut handled: Vec<Event> = Vec::new();
        for handler in ast.handlers() {
            let code = self.body(&handler.body);
            let Some(event) = self.event(&handler.event) else {
                continue;
            };
            if handled.contains(&event) {
                continue;
            }
            handled.push(event);
            if let Event::Became(temperature) = event {
                handlers.became.push((temperature, code));
                continue;
            }
            *match event {
                // Taken above.
                Event::Became(_) => continue,
                Event::Reply => &mut handlers.reply,
                Event::AutoReply => &mut handlers.auto_reply,
                Event::Bounce => &mut handlers.bounce,
                Event::Unsubscribe => &mut handlers.unsubscribe,
                Event::Click => &mut handlers.click,
            } = code;
        }

        let mut steps: Vec<Step> = ast
            .steps()
            .map(|step| Step {
                name: step.name.value.clone(),
                code: self.body(&step.body),
                shape: String::new(),
                span: step.name.span.clone(),
            })
            .collect();
        let names: Vec<String> = steps.iter().map(|step| step.name.clone()).collect();
        for step in &mut steps {
            step.shape = shape(&step.code, &names);
        }

        Some(Workflow {
            name: ast.name.value.clone(),
            path: self.cx.path.to_path_buf(),
            version,
            enroll: header.enroll,
            goal: header.goal,
            reentry: header.reentry,
            bulk: header.bulk,
            every: header.every,
            from: header.from?,
            reply_to: header.reply_to,
            owner: header.owner,
            timezone: header.timezone.unwrap_or(Tz::UTC),
            window: header.window,
            handlers,
            tracking: self.tracking,
            steps,
            defines_scoring: header.scoring.is_some(),
            scoring: Arc::new(header.scoring.unwrap_or_default()),
        })
    }

    // -----------------------------------------------------------------------------------------
    // Settings
    // -----------------------------------------------------------------------------------------

    fn setting(&mut self, kind: &'a SettingKind, header: &mut Header) {
        match kind {
            SettingKind::Enroll(condition) => header.enroll = self.condition(condition),
            SettingKind::Goal(condition) => {
                header.goal = self.condition(condition).map(|resolved| Goal {
                    condition: resolved,
                    text: self.condition_text(condition),
                });
            }
            SettingKind::Reentry => header.reentry = true,
            SettingKind::Bulk => header.bulk = true,
            SettingKind::Every(cron) => header.every = self.cron(cron),
            SettingKind::From(text) => {
                header.from_written = true;
                header.from = self.mailbox(text, "sender");
            }
            SettingKind::ReplyTo(text) => header.reply_to = self.mailbox(text, "reply-to"),
            SettingKind::Owner(text) => header.owner = self.mailbox(text, "owner"),
            SettingKind::Timezone(zone) => header.timezone = self.timezone(zone),
            SettingKind::Window(window) => header.window = self.window(window),
            // Read first, by `track`.
            SettingKind::Track(_) => {}
            SettingKind::Scoring(items) => header.scoring = Some(self.scoring(items)),
        }
    }

    /// `track clicks and opens`.
    fn track(&mut self, words: &[Spanned<String>]) {
        for word in words {
            match word.value.as_str() {
                "clicks" => self.tracking.clicks = true,
                "opens" => self.tracking.opens = true,
                other => {
                    let hint = match did_you_mean(other, ["clicks", "opens"]) {
                        Some(name) => format!("did you mean `{name}`?"),
                        None => "write `track clicks`, `track opens` or `track clicks and opens`"
                            .to_string(),
                    };
                    self.push(
                        self.cx
                            .error(format!("cannot track `{other}`"), word.span.clone())
                            .with_label("not `clicks` or `opens`")
                            .with_hint(hint),
                    );
                }
            }
        }
    }

    /// `"Ana Ortiz <ana@acme.example>"` or `"ana@acme.example"`; `role` names it in messages.
    fn mailbox(&mut self, text: &Spanned<String>, role: &str) -> Option<Mailbox> {
        let parsed = Mailbox::parse(&text.value);
        parsed
            .map_err(|reason| {
                self.push(
                    self.cx
                        .error(
                            format!("invalid {role} address: {reason}"),
                            text.span.clone(),
                        )
                        .with_label("not an email address")
                        .with_hint(
                            "write `\"Name <name@example.com>\"` or just `\"name@example.com\"`",
                        ),
                );
            })
            .ok()
    }

    fn timezone(&mut self, zone: &Spanned<String>) -> Option<Tz> {
        zone.value
            .parse::<Tz>()
            .map_err(|_| {
                let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
                let hint = match did_you_mean(&zone.value, names) {
                    Some(name) => format!("did you mean `{name}`?"),
                    None => {
                        "use an IANA name such as `Europe/Berlin` or `America/New_York`".to_string()
                    }
                };
                self.push(
                    self.cx
                        .error(
                            format!("unknown time zone `{}`", zone.value),
                            zone.span.clone(),
                        )
                        .with_label("not an IANA time zone")
                        .with_hint(hint),
                );
            })
            .ok()
    }

    fn cron(&mut self, cron: &Spanned<String>) -> Option<CronSlot> {
        CronSlot::parse(&cron.value)
            .map_err(|reason| {
                self.push(
                    self.cx
                        .error(one_line(&reason), cron.span.clone())
                        .with_label("invalid cron slot")
                        .with_hint(
                            "5 fields: minute hour day-of-month month weekday, as in \
                             `0 9 * * MON`",
                        ),
                );
            })
            .ok()
    }

    fn window(&mut self, window: &WindowAst) -> Option<SendWindow> {
        let days = self.days(&window.days);
        let start = self.time(&window.start);
        let end = self.time(&window.end);
        let zone = match window.zone.as_ref().map(|zone| zone.value.as_str()) {
            Some("workflow") => WindowZone::Workflow,
            _ => WindowZone::Lead,
        };
        let (start, end) = (start?, end?);
        if end <= start {
            self.push(
                self.cx
                    .error(
                        "the send window must end after it starts",
                        window.end.span.clone(),
                    )
                    .with_label(format!(
                        "`{}` is not after `{}`",
                        window.end.value, window.start.value
                    ))
                    .with_hint("a window lies within one day, as in `between 09:00 and 17:30`"),
            );
            return None;
        }
        Some(SendWindow {
            days: days?,
            start,
            end,
            zone,
        })
    }

    fn time(&mut self, time: &Spanned<String>) -> Option<NaiveTime> {
        let (hours, minutes) = time.value.split_once(':')?;
        let parsed = hours
            .parse()
            .ok()
            .zip(minutes.parse().ok())
            .and_then(|(hours, minutes)| NaiveTime::from_hms_opt(hours, minutes, 0));
        if parsed.is_none() {
            self.push(
                self.cx
                    .error(
                        format!("`{}` is not a time of day", time.value),
                        time.span.clone(),
                    )
                    .with_label("hours go from 00 to 23, minutes from 00 to 59"),
            );
        }
        parsed
    }

    /// Weekdays as written → a set; `None` (after reporting) when a name is unknown.
    fn days(&mut self, days: &DaysAst) -> Option<Weekdays> {
        let DaysAst::List(ranges) = days else {
            return Some(Weekdays::ALL);
        };
        let mut set = Some(Weekdays::empty());
        for range in ranges {
            let days = match &range.last {
                None => self.day_set(&range.first),
                Some(last) => {
                    let first = self.weekday(&range.first);
                    let last = self.weekday(last);
                    first
                        .zip(last)
                        .map(|(first, last)| Weekdays::empty().with_range(first, last))
                }
            };
            set = set.zip(days).map(|(set, days)| union(set, days));
        }
        set
    }

    /// A lone day word: a weekday, `weekdays` or `weekends`.
    fn day_set(&mut self, word: &Spanned<String>) -> Option<Weekdays> {
        match word.value.to_lowercase().as_str() {
            "weekdays" => Some(Weekdays::BUSINESS),
            "weekends" => Some(Weekdays::empty().with(Weekday::Sat).with(Weekday::Sun)),
            _ => self.weekday(word).map(|day| Weekdays::empty().with(day)),
        }
    }

    /// One end of a range, or a lone day: a weekday name.
    fn weekday(&mut self, word: &Spanned<String>) -> Option<Weekday> {
        let lower = word.value.to_lowercase();
        if let Some((_, _, day)) = WEEKDAY_NAMES
            .iter()
            .find(|(short, long, _)| short.to_lowercase() == lower || long.to_lowercase() == lower)
        {
            return Some(*day);
        }
        let (message, label, hint) = if matches!(lower.as_str(), "weekdays" | "weekends") {
            (
                format!("`{}` cannot be one end of a range", word.value),
                "a range goes from one day to another",
                format!(
                    "write `{}` on its own, or a range such as `Mon-Fri`",
                    word.value
                ),
            )
        } else {
            let names = WEEKDAY_NAMES
                .iter()
                .flat_map(|(short, long, _)| [*short, *long])
                .chain(["weekdays", "weekends"]);
            let hint = match did_you_mean(&word.value, names) {
                Some(name) => format!("did you mean `{name}`?"),
                None => "weekdays are `Mon` … `Sun` or their full names".to_string(),
            };
            (
                format!("unknown weekday `{}`", word.value),
                "not a weekday",
                hint,
            )
        };
        self.push(
            self.cx
                .error(message, word.span.clone())
                .with_label(label)
                .with_hint(hint),
        );
        None
    }

    fn event(&mut self, event: &Spanned<String>) -> Option<Event> {
        let parsed = Event::parse(&event.value);
        if let Some(Event::Became(falling @ (Temperature::Cold | Temperature::Inactive))) = parsed {
            // Scores fade as they are read, never by an event: nothing would run this.
            self.push(
                self.cx
                    .error(
                        format!("a lead does not *become* {falling} at a moment nurture sees"),
                        event.span.clone(),
                    )
                    .with_label("scores fade over time, not by an event")
                    .with_hint(format!(
                        "`when lead becomes` reacts to `hot` and `warm`; to stop mailing a {falling} \
                         lead, write `exit when lead.temperature is {falling}` (checked before \
                         every email)"
                    )),
            );
            return None;
        }
        if parsed.is_none()
            && let Some(word) = event.value.strip_prefix(BECOMES)
        {
            self.unknown_temperature(word, event.span.clone());
            return None;
        }
        if parsed.is_none() {
            let hint = match did_you_mean(&event.value, Event::NAMES) {
                Some(name) => format!("did you mean `{name}`?"),
                None => {
                    "the events are `reply`, `auto-reply`, `bounce` and `unsubscribe`".to_string()
                }
            };
            self.push(
                self.cx
                    .error(
                        format!("unknown event `{}`", event.value),
                        event.span.clone(),
                    )
                    .with_label("no such event")
                    .with_hint(hint),
            );
        }
        parsed
    }

    // -----------------------------------------------------------------------------------------
    // Statements
    // -----------------------------------------------------------------------------------------

    /// A step or handler body → its code. `continue` jumps to the end of the code, which in a
    /// handler means "go on with the sequence".
    fn body(&mut self, body: &'a [Stmt]) -> Vec<Instr> {
        let mut code = Vec::new();
        let mut to_end = Vec::new();
        self.block(body, &mut code, &mut to_end);
        let end = code.len();
        for at in to_end {
            code[at] = Instr::Jump(end);
        }
        code
    }

    fn block(&mut self, body: &'a [Stmt], code: &mut Vec<Instr>, to_end: &mut Vec<usize>) {
        for stmt in body {
            match &stmt.kind {
                StmtKind::If(chain) => self.if_chain(chain, code, to_end),
                StmtKind::Continue => {
                    to_end.push(code.len());
                    code.push(Instr::Jump(usize::MAX));
                }
                kind => {
                    if let Some(instr) = self.instr(kind) {
                        code.push(instr);
                    }
                }
            }
        }
    }

    /// `if A {x} else if B {y} else {z}` →
    /// `Branch(A, else→L1) x Jump(end) L1: Branch(B, else→L2) y Jump(end) L2: z end:`.
    fn if_chain(&mut self, chain: &'a IfAst, code: &mut Vec<Instr>, to_end: &mut Vec<usize>) {
        let mut exits = Vec::new();
        for (index, (condition, block)) in chain.branches.iter().enumerate() {
            let branch_at = code.len();
            // A condition that does not resolve has been reported, and then the workflow is
            // discarded: any stand-in keeps the jump layout right for the rest of the checks.
            let resolved = self.condition(condition);
            code.push(Instr::Branch {
                condition: resolved.unwrap_or(Condition::Engaged(Engagement::Replied)),
                text: self.condition_text(condition),
                else_to: usize::MAX,
            });
            self.block(block, code, to_end);
            let last = index + 1 == chain.branches.len();
            if !last || chain.otherwise.is_some() {
                exits.push(code.len());
                code.push(Instr::Jump(usize::MAX));
            }
            let else_to = code.len();
            if let Instr::Branch { else_to: slot, .. } = &mut code[branch_at] {
                *slot = else_to;
            }
        }
        if let Some(block) = &chain.otherwise {
            self.block(block, code, to_end);
        }
        let end = code.len();
        for at in exits {
            code[at] = Instr::Jump(end);
        }
    }

    /// A simple statement → one instruction; `None` after reporting what does not resolve.
    fn instr(&mut self, kind: &'a StmtKind) -> Option<Instr> {
        Some(match kind {
            StmtKind::Send {
                template,
                subject,
                expires,
            } => Instr::Send(Send {
                template: template.value.clone(),
                subject: subject.value.clone(),
                expires: match expires {
                    Some(expires) => Some(self.date_expr(expires)?),
                    None => None,
                },
            }),
            StmtKind::SetDate { field, value } => {
                let name = self.date_field(field)?;
                Instr::Act(Action::SetDate {
                    field: name,
                    value: self.date_expr(value)?,
                })
            }
            StmtKind::Wait(wait) => Instr::Wait(self.wait(wait)?),
            StmtKind::Set { field, value } => {
                let name = self.field(field)?;
                if name == "stage" {
                    self.push(
                        self.cx
                            .error(
                                "a workflow cannot set `lead.stage`",
                                field.span.start..value.span.end,
                            )
                            .with_label("a stage changes by promotion only")
                            .with_hint(
                                "write `promote to contact` or `promote to customer`: a stage \
                                 only moves forward, so a workflow never moves a lead back",
                            ),
                    );
                    return None;
                }
                self.settable(&name, field, value)?;
                self.not_a_date(&name, value)?;
                Instr::Act(Action::Set {
                    field: name,
                    value: value.value.clone(),
                })
            }
            StmtKind::Tag(tag) => Instr::Act(Action::Tag(tag.value.clone())),
            StmtKind::Untag(tag) => Instr::Act(Action::Untag(tag.value.clone())),
            StmtKind::Score(change) => Instr::Act(Action::Score(self.score(change)?)),
            StmtKind::Promote(stage) => Instr::Act(Action::Promote(self.stage(stage)?)),
            StmtKind::NotifyOwner => Instr::Act(Action::Notify(NotifyTarget::Owner)),
            StmtKind::Notify(text) => Instr::Act(Action::Notify(NotifyTarget::Address(
                self.mailbox(text, "notify")?,
            ))),
            StmtKind::Goto(target) => Instr::Goto(self.step(target)?),
            StmtKind::Exit => Instr::Exit,
            StmtKind::PauseUntilReturn => Instr::PauseUntilReturn,
            // Handled by `block`, which needs the surrounding code.
            StmtKind::If(_) | StmtKind::Continue => return None,
        })
    }

    fn wait(&mut self, wait: &WaitAst) -> Option<Wait> {
        match wait {
            WaitAst::UntilDate(date) => self.date_expr(date).map(Wait::UntilDate),
            WaitAst::For { count, unit } => self.length("wait", count, unit),
            WaitAst::Until { days, time } => {
                let days = match days {
                    Some(days) => self.days(days),
                    None => Some(Weekdays::ALL),
                };
                let time = self.time(time)?;
                Some(Wait::UntilWeekday { days: days?, time })
            }
            WaitAst::Cron(cron) => self.cron(cron).map(Wait::UntilCron),
            WaitAst::UntilAction {
                action,
                count,
                unit,
            } => {
                let action = self.action(action);
                let timeout = self.time_limit(count, unit);
                Some(Wait::UntilAction {
                    action: action?,
                    timeout: timeout?,
                })
            }
        }
    }

    /// `7 days` after `within` or `or`: a plain length of time (business days count on a
    /// calendar, which a deadline does not need).
    fn time_limit(
        &mut self,
        count: &Spanned<String>,
        unit: &Spanned<String>,
    ) -> Option<WaitLength> {
        let wait = WaitAst::For {
            count: count.clone(),
            unit: unit.clone(),
        };
        match self.wait(&wait)? {
            Wait::For(length) => Some(length),
            _ => {
                self.push(
                    self.cx
                        .error(
                            "a time limit is not counted in business days",
                            unit.span.clone(),
                        )
                        .with_label("business days")
                        .with_hint("write it in `minutes`, `hours`, `days` or `weeks`"),
                );
                None
            }
        }
    }

    /// `2 days`, `3 business days`: a wait's length, or a date's shift.
    /// `what` leads the count in messages: `wait`, `+` or `-`.
    fn length(
        &mut self,
        what: &str,
        count: &Spanned<String>,
        unit: &Spanned<String>,
    ) -> Option<Wait> {
        let unit_text = unit
            .value
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let number = match count.value.parse::<u32>() {
            Ok(number) if number <= MAX_WAIT_COUNT => Some(number),
            _ => {
                self.push(
                    self.cx
                        .error(
                            format!("`{what} {}` is too long", count.value),
                            count.span.clone(),
                        )
                        .with_label(format!("at most {MAX_WAIT_COUNT}")),
                );
                None
            }
        };
        let length: fn(u32) -> Wait = match unit_text.as_str() {
            "minute" | "minutes" => |n| Wait::For(WaitLength::Minutes(n)),
            "hour" | "hours" => |n| Wait::For(WaitLength::Hours(n)),
            "day" | "days" => |n| Wait::For(WaitLength::Days(n)),
            "week" | "weeks" => |n| Wait::For(WaitLength::Weeks(n)),
            "business day" | "business days" => Wait::BusinessDays,
            _ => {
                let hint = match did_you_mean(&unit_text, UNITS) {
                    Some(name) => format!("did you mean `{name}`?"),
                    None => "the units are `minutes`, `hours`, `days`, `weeks` and \
                             `business days`"
                        .to_string(),
                };
                self.push(
                    self.cx
                        .error(format!("unknown unit `{unit_text}`"), unit.span.clone())
                        .with_label("not a unit of time")
                        .with_hint(hint),
                );
                return None;
            }
        };
        number.map(length)
    }

    /// What a lead did, resolved: steps must exist and send an email, and what it asks about
    /// must be tracked.
    fn action(&mut self, action: &ActionAst) -> Option<Engagement> {
        match action {
            ActionAst::Clicked(span) => {
                self.tracked(self.tracking.clicks, "clicks", span)?;
                Some(Engagement::Clicked)
            }
            ActionAst::ClickedStep(step) => {
                // Both checked, so both mistakes are reported at once.
                let tracked = self.tracked(self.tracking.clicks, "clicks", &step.span);
                let step = self.sending_step(step, "clicked");
                tracked?;
                Some(Engagement::ClickedStep(step?))
            }
            ActionAst::ClickedLink(name) => {
                let tracked = self.tracked(self.tracking.clicks, "clicks", &name.span);
                if !is_link_name(&name.value) {
                    self.push(
                        self.cx
                            .error(
                                format!("`{}` is not a link name", name.value),
                                name.span.clone(),
                            )
                            .with_label("letters, digits, `-` and `_` only")
                            .with_hint(
                                "name the link in its template the same way: \
                                 `{{link \"pricing\" \"https://…\"}}`",
                            ),
                    );
                    return None;
                }
                tracked?;
                Some(Engagement::ClickedLink(name.value.clone()))
            }
            ActionAst::Opened(step) => {
                let tracked = self.tracked(self.tracking.opens, "opens", &step.span);
                let step = self.sending_step(step, "opened");
                tracked?;
                Some(Engagement::Opened(step?))
            }
            ActionAst::Did { event, within } => {
                let within = within
                    .as_ref()
                    .map(|(count, unit)| self.time_limit(count, unit));
                if event.value.trim().is_empty() {
                    self.push(
                        self.cx
                            .error("an event has a name", event.span.clone())
                            .with_label("empty")
                            .with_hint(
                                "the name the API reported it under: `did \"visited-pricing\"`",
                            ),
                    );
                    return None;
                }
                let within = match within {
                    Some(length) => Some(length?),
                    None => None,
                };
                Some(Engagement::Did {
                    event: event.value.clone(),
                    within,
                })
            }
        }
    }

    /// Refuses a condition on clicks or opens that nothing records in this workflow.
    fn tracked(&mut self, on: bool, what: &str, span: &Span) -> Option<()> {
        if on {
            return Some(());
        }
        self.push(
            self.cx
                .error(format!("this workflow does not track {what}"), span.clone())
                .with_label(format!("no {what} are ever recorded for it"))
                .with_hint(format!("add `track {what}` to the workflow's settings")),
        );
        None
    }

    /// A step that sends an email, for `opened "STEP"` and `clicked "STEP"`.
    fn sending_step(&mut self, step: &Spanned<String>, verb: &str) -> Option<String> {
        if self.sending.contains(&step.value.as_str()) {
            return Some(step.value.clone());
        }
        let diagnostic = if self.steps.contains_key(step.value.as_str()) {
            self.cx
                .error(
                    format!("step `{}` sends no email", step.value),
                    step.span.clone(),
                )
                .with_label(format!("nothing in it can be {verb}"))
                .with_hint("name the step whose `send` you mean")
        } else {
            let hint = match did_you_mean(&step.value, self.sending.iter().copied()) {
                Some(name) => format!("did you mean `{name}`?"),
                None => format!("`{verb} \"STEP\"` names a step of this workflow that sends"),
            };
            self.cx
                .error(format!("no step named `{}`", step.value), step.span.clone())
                .with_label("unknown step")
                .with_hint(hint)
        };
        self.push(diagnostic);
        None
    }

    fn score(&mut self, change: &Spanned<String>) -> Option<i64> {
        let parsed = i64::from_str(&change.value)
            .ok()
            .filter(|n| n.abs() <= MAX_SCORE_CHANGE);
        if parsed.is_none() {
            self.push(
                self.cx
                    .error(
                        format!("`score {}` is out of range", change.value),
                        change.span.clone(),
                    )
                    .with_label(format!(
                        "a score changes by at most {MAX_SCORE_CHANGE} at a time"
                    )),
            );
        }
        parsed
    }

    fn stage(&mut self, stage: &Spanned<String>) -> Option<Stage> {
        let diagnostic = match Stage::parse(&stage.value) {
            Some(Stage::Lead) => self
                .cx
                .error("cannot promote to `lead`", stage.span.clone())
                .with_label("every lead starts there")
                .with_hint("a stage only moves forward: promote to `contact` or `customer`"),
            Some(parsed) => return Some(parsed),
            None => {
                let hint = match did_you_mean(&stage.value, ["contact", "customer"]) {
                    Some(name) => format!("did you mean `{name}`?"),
                    None => "promote to `contact` or `customer`".to_string(),
                };
                self.cx
                    .error(
                        format!("unknown stage `{}`", stage.value),
                        stage.span.clone(),
                    )
                    .with_label("not a stage")
                    .with_hint(hint)
            }
        };
        self.push(diagnostic);
        None
    }

    fn step(&mut self, target: &Spanned<String>) -> Option<usize> {
        let found = self.steps.get(target.value.as_str()).copied();
        if found.is_none() {
            let hint = match did_you_mean(&target.value, self.steps.keys().copied()) {
                Some(name) => format!("did you mean `{name}`?"),
                None => "`goto` names a step of this workflow".to_string(),
            };
            self.push(
                self.cx
                    .error(
                        format!("no step named `{}`", target.value),
                        target.span.clone(),
                    )
                    .with_label("unknown step")
                    .with_hint(hint),
            );
        }
        found
    }

    /// `lead.NAME`: a built-in field or a custom attribute, but not a likely typo of a built-in.
    fn field(&mut self, field: &Spanned<String>) -> Option<String> {
        let name = field.value.as_str();
        if BUILT_IN_FIELDS.contains(&name) {
            return Some(name.to_string());
        }
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            self.push(
                self.cx
                    .error(
                        format!("field names are lower case, not `{name}`"),
                        field.span.clone(),
                    )
                    .with_label("upper-case letters")
                    .with_hint(format!("write `lead.{}`", name.to_lowercase())),
            );
            return None;
        }
        // Short names are close to everything: allow one edit for them, two otherwise.
        let allowed = if name.chars().count() < 5 { 1 } else { 2 };
        let typo_of = BUILT_IN_FIELDS
            .iter()
            .map(|built_in| (strsim::levenshtein(name, built_in), *built_in))
            .filter(|(distance, _)| *distance <= allowed)
            .min_by_key(|(distance, _)| *distance);
        if let Some((_, built_in)) = typo_of {
            self.push(
                self.cx
                    .error(format!("unknown field `{name}`"), field.span.clone())
                    .with_label(format!("looks like a typo of `{built_in}`"))
                    .with_hint(format!(
                        "did you mean `lead.{built_in}`? (a custom column this close to a \
                         built-in field is refused)"
                    )),
            );
            return None;
        }
        Some(name.to_string())
    }

    /// What the lead model refuses to `set` (the email, tags, a bad score or stage…), with its
    /// own wording, found by trying it on a blank lead.
    fn settable(
        &mut self,
        name: &str,
        field: &Spanned<String>,
        value: &Spanned<Value>,
    ) -> Option<()> {
        let mut blank = Lead::new("blank@nurture.invalid".to_string(), Utc::now());
        let refused = match &value.value {
            Value::Number(n) if !n.is_finite() => Some("this number is too large".to_string()),
            other => blank.set_field(name, other.clone()).err(),
        };
        match refused {
            None => Some(()),
            Some(reason) => {
                self.push(
                    self.cx
                        .error(
                            format!("cannot set `lead.{name}`: {reason}"),
                            field.span.start..value.span.end,
                        )
                        .with_label("refused"),
                );
                None
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Conditions
    // -----------------------------------------------------------------------------------------

    /// The condition as written, on one line, for timelines and exit reasons.
    fn condition_text(&self, condition: &CondAst) -> String {
        self.cx.source[condition.span.clone()]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn condition(&mut self, condition: &CondAst) -> Option<Condition> {
        match &condition.kind {
            CondKind::And(operands) => self.operands(operands, Condition::And),
            CondKind::Or(operands) => self.operands(operands, Condition::Or),
            CondKind::Not(inner) => Some(Condition::Not(Box::new(self.condition(inner)?))),
            CondKind::Compare {
                field: written,
                op,
                value,
                bare,
            } => {
                let field = self.field(written)?;
                if field == TEMPERATURE {
                    return self.temperature_test(*op, value);
                }
                if *bare {
                    self.push(
                        self.cx
                            .error(
                                format!("text goes in quotes: `\"{}\"`", value.value),
                                value.span.clone(),
                            )
                            .with_label("a word without quotes")
                            .with_hint(
                                "only a temperature (`lead.temperature is hot`) is written \
                                 without quotes",
                            ),
                    );
                    return None;
                }
                if let Some(date) = self.date_literal(&field, written, *op, value) {
                    return date;
                }
                if let Value::Number(n) = value.value
                    && !n.is_finite()
                {
                    self.push(
                        self.cx
                            .error("this number is too large", value.span.clone())
                            .with_label("out of range"),
                    );
                    return None;
                }
                self.orders_numbers(&field, written, *op, value)?;
                Some(Condition::Compare {
                    field,
                    op: *op,
                    value: value.value.clone(),
                })
            }
            CondKind::CompareDate { field, op, value } => {
                let name = self.date_field(field);
                self.orders_dates(*op, field, value.span.clone())?;
                Some(Condition::CompareDate {
                    field: name?,
                    op: *op,
                    value: self.date_expr(value)?,
                })
            }
            CondKind::HasTag { field, tag } => {
                let name = self.field(field)?;
                if name != "tags" {
                    self.push(
                        self.cx
                            .error(
                                format!("`has` tests tags, not `lead.{name}`"),
                                field.span.clone(),
                            )
                            .with_label("not `lead.tags`")
                            .with_hint(format!(
                                "write `lead.tags has \"{}\"`, or `lead.{name} contains \"{}\"`",
                                tag.value, tag.value
                            )),
                    );
                    return None;
                }
                Some(Condition::HasTag(tag.value.clone()))
            }
            CondKind::In { field, values } => Some(Condition::In {
                field: self.field(field)?,
                values: values.iter().map(|value| value.value.clone()).collect(),
            }),
            CondKind::IsSet { field, negated } => Some(Condition::IsSet {
                field: self.field(field)?,
                negated: *negated,
            }),
            CondKind::Replied => Some(Condition::Engaged(Engagement::Replied)),
            CondKind::AutoReplied => Some(Condition::Engaged(Engagement::AutoReplied)),
            CondKind::Action(action) => self.action(action).map(Condition::Engaged),
            CondKind::Sent(template) => {
                Some(Condition::Engaged(Engagement::Sent(template.value.clone())))
            }
        }
    }

    /// `<`, `<=`, `>`, `>=` order numbers only: text in alphabetical order is almost never what
    /// was meant (a date written as text, `"9" > "10"`), and it used to be silently false. A
    /// built-in field other than `score` holds text; a custom attribute may hold a number, so it
    /// may be ordered against a number (a lead whose value is not a number compares false).
    fn orders_numbers(
        &mut self,
        name: &str,
        field: &Spanned<String>,
        op: CompareOp,
        value: &Spanned<Value>,
    ) -> Option<()> {
        if !matches!(
            op,
            CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge
        ) {
            return Some(());
        }
        let symbol = op.symbol();
        let text_field = BUILT_IN_FIELDS.contains(&name) && name != "score";
        let diagnostic = match &value.value {
            Value::Text(text) if crate::dates::looks_like_date(text) => self
                .cx
                .error(format!("`\"{text}\"` is not a date"), value.span.clone())
                .with_label("no such day or time")
                .with_hint(format!("write a date as {DATE_FORMS}")),
            Value::Text(text) => {
                let hint = match text.trim().parse::<f64>() {
                    Ok(number) if number.is_finite() => {
                        format!(
                            "to compare numbers, write the number without quotes: `{}`",
                            text.trim()
                        )
                    }
                    _ => TEXT_ORDER_HINT.to_string(),
                };
                self.cx
                    .error(
                        format!("`{symbol}` compares numbers, but `\"{text}\"` is text"),
                        value.span.clone(),
                    )
                    .with_label("text")
                    .with_hint(hint)
            }
            _ if text_field => self
                .cx
                .error(
                    format!("`{symbol}` compares numbers, but `lead.{name}` is text"),
                    field.span.clone(),
                )
                .with_label("a text field")
                .with_hint(TEXT_ORDER_HINT),
            _ => return Some(()),
        };
        self.push(diagnostic);
        None
    }

    // -----------------------------------------------------------------------------------------
    // Scoring
    // -----------------------------------------------------------------------------------------

    /// A `scoring { … }` block → the rules; what does not resolve is reported and left out.
    fn scoring(&mut self, items: &[ScoringItemAst]) -> Scoring {
        let mut scoring = Scoring::default();
        for item in items {
            match item {
                ScoringItemAst::Rule {
                    change,
                    signal,
                    name,
                } => {
                    let points = self.score(change);
                    let on = self.signal(signal, name.as_ref());
                    if let (Some(points), Some(on)) = (points, on) {
                        scoring.rules.push(Rule { points, on });
                    }
                }
                ScoringItemAst::Decay { count, unit } => {
                    scoring.half_life_days = self.whole_days("halve every", count, unit);
                }
                ScoringItemAst::Inactivity { count, unit } => {
                    if let Some(days) = self.whole_days("inactive after", count, unit) {
                        scoring.inactive_after_days = days;
                    }
                }
                ScoringItemAst::Threshold { temperature, score } => {
                    let Some(level) = self.score_level(score) else {
                        continue;
                    };
                    match Temperature::parse(&temperature.value) {
                        Some(Temperature::Hot) => scoring.hot = level,
                        Some(Temperature::Warm) => scoring.warm = level,
                        Some(other) => self.push(
                            self.cx
                                .error(
                                    format!("`{other}` has no score threshold"),
                                    temperature.span.clone(),
                                )
                                .with_label("only `hot at N` and `warm at N`")
                                .with_hint(
                                    "below `warm at` a lead is cold; `inactive after N days` \
                                     says when it is inactive",
                                ),
                        ),
                        None => {
                            self.unknown_temperature(&temperature.value, temperature.span.clone())
                        }
                    }
                }
            }
        }
        if scoring.warm > scoring.hot {
            let span = items
                .iter()
                .rev()
                .find_map(|item| match item {
                    ScoringItemAst::Threshold { temperature, score }
                        if Temperature::parse(&temperature.value) == Some(Temperature::Warm) =>
                    {
                        Some(score.span.clone())
                    }
                    _ => None,
                })
                .unwrap_or_default();
            self.push(
                self.cx
                    .error(
                        format!(
                            "`warm at {}` is above `hot at {}`",
                            scoring.warm, scoring.hot
                        ),
                        span,
                    )
                    .with_label("warm starts below hot")
                    .with_hint(format!(
                        "the defaults are `hot at {}` and `warm at {}`",
                        crate::scoring::DEFAULT_HOT,
                        crate::scoring::DEFAULT_WARM
                    )),
            );
        }
        scoring
    }

    /// `open`, `click`, `reply`, `event "NAME"`.
    fn signal(
        &mut self,
        signal: &Spanned<String>,
        name: Option<&Spanned<String>>,
    ) -> Option<SignalKind> {
        let kind = match (signal.value.as_str(), name) {
            ("open", None) => SignalKind::Open,
            ("click", None) => SignalKind::Click,
            ("reply", None) => SignalKind::Reply,
            ("event", Some(name)) if !name.value.trim().is_empty() => {
                SignalKind::Event(name.value.clone())
            }
            ("event", _) => {
                self.push(
                    self.cx
                        .error("`event` needs the event's name", signal.span.clone())
                        .with_label("which event?")
                        .with_hint(
                            "write `+20 on event \"visited-pricing\"`: the name the API \
                             reports (`POST /v1/leads/{email}/events`)",
                        ),
                );
                return None;
            }
            (word, Some(name)) if SignalKind::NAMES.contains(&word) => {
                self.push(
                    self.cx
                        .error(format!("`{word}` takes no name"), name.span.clone())
                        .with_label("only `event` is named")
                        .with_hint(format!("write `on {word}`")),
                );
                return None;
            }
            (word, _) => {
                let hint = match close_word(word, &SignalKind::NAMES) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => "points are given `on open`, `on click`, `on reply` or `on event \
                             \"NAME\"`"
                        .to_string(),
                };
                self.push(
                    self.cx
                        .error(format!("unknown signal `{word}`"), signal.span.clone())
                        .with_label("nothing scores this")
                        .with_hint(hint),
                );
                return None;
            }
        };
        Some(kind)
    }

    /// `30 days` in a scoring block: whole days or weeks.
    fn whole_days(
        &mut self,
        what: &str,
        count: &Spanned<String>,
        unit: &Spanned<String>,
    ) -> Option<u32> {
        let days = match self.length(what, count, unit)? {
            Wait::For(WaitLength::Days(n)) => Some(n),
            Wait::For(WaitLength::Weeks(n)) => Some(n * 7),
            _ => None,
        };
        match days {
            Some(days) if days > 0 => Some(days),
            _ => {
                self.push(
                    self.cx
                        .error(format!("`{what}` counts whole days"), unit.span.clone())
                        .with_label("days or weeks, at least one")
                        .with_hint(format!("write `{what} 30 days`")),
                );
                None
            }
        }
    }

    fn score_level(&mut self, score: &Spanned<String>) -> Option<i64> {
        let parsed = score
            .value
            .parse::<i64>()
            .ok()
            .filter(|n| n.abs() <= MAX_SCORE_CHANGE);
        if parsed.is_none() {
            self.push(
                self.cx
                    .error(
                        format!("`{}` is not a score", score.value),
                        score.span.clone(),
                    )
                    .with_label(format!("a whole number up to {MAX_SCORE_CHANGE}")),
            );
        }
        parsed
    }

    fn unknown_temperature(&mut self, word: &str, span: Span) {
        let names = Temperature::ALL.map(Temperature::as_str);
        let hint = match close_word(word, &names) {
            Some(close) => format!("did you mean `{close}`?"),
            None => "the temperatures are `hot`, `warm`, `cold` and `inactive`".to_string(),
        };
        self.push(
            self.cx
                .error(format!("unknown temperature `{word}`"), span)
                .with_label("not a temperature")
                .with_hint(hint),
        );
    }

    /// `lead.temperature is hot`, `lead.temperature is not "cold"`.
    fn temperature_test(&mut self, op: CompareOp, value: &Spanned<Value>) -> Option<Condition> {
        let negated = match op {
            CompareOp::Eq => false,
            CompareOp::Ne => true,
            other => {
                self.push(
                    self.cx
                        .error(
                            format!("`{}` does not compare temperatures", other.symbol()),
                            value.span.clone(),
                        )
                        .with_label("a temperature is one of four")
                        .with_hint(
                            "write `lead.temperature is hot` or `lead.temperature is not cold`; \
                             to compare scores, `lead.score >= 50`",
                        ),
                );
                return None;
            }
        };
        let word = value.value.to_string();
        match Temperature::parse(&word) {
            Some(temperature) => Some(Condition::Temperature {
                temperature,
                negated,
            }),
            None => {
                self.unknown_temperature(&word, value.span.clone());
                None
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Dates
    // -----------------------------------------------------------------------------------------

    /// `now + 7 days`, `lead.trial_ends - 2 days` → a date expression.
    fn date_expr(&mut self, date: &DateExprAst) -> Option<DateExpr> {
        let base = match &date.field {
            None => Some(DateBase::Now),
            Some(field) => self.date_field(field).map(DateBase::Field),
        };
        let mut shifts = Some(Vec::new());
        for shift in &date.shifts {
            let what = if shift.forward { "+" } else { "-" };
            let length = match self.length(what, &shift.count, &shift.unit) {
                Some(Wait::For(length)) => Some(length),
                Some(_) => {
                    self.push(
                        self.cx
                            .error("a date moves by calendar time", shift.unit.span.clone())
                            .with_label("business days cannot move a date")
                            .with_hint(
                                "write `days` or `weeks`; to land on a working day, `wait \
                                 until` the date and then `wait until Mon-Fri 09:00`",
                            ),
                    );
                    None
                }
                None => None,
            };
            let forward = shift.forward;
            shifts = shifts.zip(length).map(|(mut shifts, length)| {
                shifts.push(DateShift { forward, length });
                shifts
            });
        }
        Some(DateExpr {
            base: base?,
            shifts: shifts?,
            text: self.one_line(date.span.clone()),
        })
    }

    /// The source text of `span` on one line, for timelines.
    fn one_line(&self, span: Span) -> String {
        self.cx.source[span]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A field used as a date: a custom one (the built-in fields hold text or a number), and
    /// not a one-off near miss of another date field of the file (`expires lead.offer_end`
    /// where the file sets `lead.offer_ends`).
    fn date_field(&mut self, field: &Spanned<String>) -> Option<String> {
        let name = self.field(field)?;
        if !BUILT_IN_FIELDS.contains(&name.as_str()) {
            let typo_of = self
                .dates
                .get(&name)
                .filter(|uses| uses.count == 1)
                .and_then(|_| {
                    let others = self
                        .dates
                        .iter()
                        .filter(|(_, uses)| uses.count > 1)
                        .map(|(other, _)| other.clone());
                    crate::mail::templates::near_miss(&name, others)
                });
            if let Some(other) = typo_of {
                self.push(
                    self.cx
                        .error(
                            format!("`lead.{name}` is used as a date only here"),
                            field.span.clone(),
                        )
                        .with_label(format!("looks like a typo of `{other}`"))
                        .with_hint(format!("did you mean `lead.{other}`?")),
                );
                return None;
            }
            return Some(name);
        }
        let kind = if name == "score" { "a number" } else { "text" };
        self.push(
            self.cx
                .error(
                    format!("`lead.{name}` is {kind}, not a date"),
                    field.span.clone(),
                )
                .with_label("not a date")
                .with_hint(
                    "dates live in fields of their own, such as `lead.trial_ends`: a column of \
                     the leads file, or `set lead.trial_ends to now + 14 days`",
                ),
        );
        None
    }

    /// Dates are ordered, never equal: two moments to the second almost never are.
    fn orders_dates(&mut self, op: CompareOp, field: &Spanned<String>, value: Span) -> Option<()> {
        if matches!(
            op,
            CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge
        ) {
            return Some(());
        }
        let name = &field.value;
        self.push(
            self.cx
                .error(
                    format!("`{}` does not compare dates", op.symbol()),
                    field.span.start..value.end,
                )
                .with_label("dates are compared with `<`, `<=`, `>` or `>=`")
                .with_hint(format!(
                    "to ask about one day, write `lead.{name} >= \"2026-12-24\" and lead.{name} \
                     < \"2026-12-25\"`; to ask whether it is set, `lead.{name} is set`"
                )),
        );
        None
    }

    /// A comparison of a field with a written value that is about a date: `lead.trial_ends <
    /// "2026-12-24"` becomes a date comparison; a number or text compared with a field this file
    /// uses as a date is a type error. `None`: not about a date, compare as before.
    fn date_literal(
        &mut self,
        name: &str,
        field: &Spanned<String>,
        op: CompareOp,
        value: &Spanned<Value>,
    ) -> Option<Option<Condition>> {
        let written = match &value.value {
            Value::Text(text) => DateValue::parse(text),
            _ => None,
        };
        let ordering = matches!(
            op,
            CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge
        );
        match written {
            Some(date) if ordering => {
                let Some(name) = self.date_field(field) else {
                    return Some(None);
                };
                Some(Some(Condition::CompareDate {
                    field: name,
                    op,
                    value: DateExpr {
                        base: DateBase::Fixed(date),
                        shifts: Vec::new(),
                        text: self.one_line(value.span.clone()),
                    },
                }))
            }
            Some(_) if self.dates.contains_key(name) => {
                self.orders_dates(op, field, value.span.clone());
                Some(None)
            }
            _ if self.dates.contains_key(name) => {
                self.not_a_date(name, value);
                Some(None)
            }
            _ => None,
        }
    }

    /// A number or text given to a field this file uses as a date: a type error.
    fn not_a_date(&mut self, name: &str, value: &Spanned<Value>) -> Option<()> {
        let Some(first) = self.dates.get(name) else {
            return Some(());
        };
        let kind = match &value.value {
            Value::Text(text) if DateValue::parse(text).is_some() => return Some(()),
            Value::Text(text) if crate::dates::looks_like_date(text) => {
                self.push(
                    self.cx
                        .error(format!("`\"{text}\"` is not a date"), value.span.clone())
                        .with_label("no such day or time")
                        .with_hint(format!("write a date as {DATE_FORMS}")),
                );
                return None;
            }
            Value::Text(_) => "text",
            Value::Number(_) => "a number",
            Value::Bool(_) => "true or false",
        };
        let line = self.cx.line(first.first.start);
        let shown = self.one_line(value.span.clone());
        self.push(
            self.cx
                .error(
                    format!("`lead.{name}` is a date, but `{shown}` is {kind}"),
                    value.span.clone(),
                )
                .with_label(format!("{kind}, not a date"))
                .with_hint(format!(
                    "`lead.{name}` is used as a date on line {line}: compare it with `now`, \
                     `now + 3 days` or a date such as `\"2026-12-24\"`"
                )),
        );
        None
    }

    /// `a and b and c` as a balanced tree, so a long chain stays shallow for everything that
    /// walks it recursively (evaluation, cloning, dropping).
    fn operands(
        &mut self,
        operands: &[CondAst],
        join: fn(Box<Condition>, Box<Condition>) -> Condition,
    ) -> Option<Condition> {
        // Resolve every operand first, so each one's problems are reported.
        let resolved: Vec<Option<Condition>> = operands
            .iter()
            .map(|operand| self.condition(operand))
            .collect();
        let resolved: Vec<Condition> = resolved.into_iter().collect::<Option<_>>()?;
        Some(balanced(resolved, join))
    }
}

/// Where a file uses a custom field as a date first, and how many times.
struct DateUses {
    first: Span,
    count: usize,
}

/// The custom fields a file uses as dates (compared with a date, moved, set to one, waited for,
/// or an email's expiry), each with where it first does: the same field compared with a number
/// or text elsewhere in the file is then a type error that can say where the date use is.
fn date_fields(ast: &WorkflowAst) -> BTreeMap<String, DateUses> {
    let mut found: BTreeMap<String, DateUses> = BTreeMap::new();
    // The first use in the file, whatever order the walk below finds them in.
    let mut note = |field: &Spanned<String>| {
        if BUILT_IN_FIELDS.contains(&field.value.as_str()) {
            return;
        }
        let uses = found.entry(field.value.clone()).or_insert(DateUses {
            first: field.span.clone(),
            count: 0,
        });
        uses.count += 1;
        if field.span.start < uses.first.start {
            uses.first = field.span.clone();
        }
    };
    let mut conditions: Vec<&CondAst> = Vec::new();
    let mut bodies: Vec<&[Stmt]> = Vec::new();
    for item in &ast.items {
        match item {
            Item::Setting(setting) => {
                if let SettingKind::Enroll(condition) | SettingKind::Goal(condition) = &setting.kind
                {
                    conditions.push(condition);
                }
            }
            Item::Handler(handler) => bodies.push(&handler.body),
            Item::Step(step) => bodies.push(&step.body),
        }
    }
    let mut dates: Vec<&DateExprAst> = Vec::new();
    for body in bodies {
        for_each_stmt(body, &mut |stmt, _| match &stmt.kind {
            StmtKind::If(chain) => conditions.extend(chain.branches.iter().map(|(c, _)| c)),
            StmtKind::SetDate { field, value } => {
                note(field);
                dates.push(value);
            }
            StmtKind::Send {
                expires: Some(date),
                ..
            }
            | StmtKind::Wait(WaitAst::UntilDate(date)) => dates.push(date),
            _ => {}
        });
    }
    for condition in conditions {
        condition.for_each(&mut |part| match &part.kind {
            CondKind::CompareDate { field, value, .. } => {
                note(field);
                dates.push(value);
            }
            CondKind::Compare {
                field,
                op: CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge,
                value,
                ..
            } if matches!(&value.value, Value::Text(text) if DateValue::parse(text).is_some()) => {
                note(field)
            }
            _ => {}
        });
    }
    for field in dates.into_iter().filter_map(|date| date.field.as_ref()) {
        note(field);
    }
    found
}

/// The name `word` is likely a slip of: [`did_you_mean`], or one swapped pair of letters
/// (`opne`, `hto`: short words are where that happens).
fn close_word<'n>(word: &str, names: &[&'n str]) -> Option<&'n str> {
    did_you_mean(word, names.iter().copied()).or_else(|| {
        names
            .iter()
            .copied()
            .find(|name| strsim::osa_distance(word, name) == 1)
    })
}

fn balanced(
    mut items: Vec<Condition>,
    join: fn(Box<Condition>, Box<Condition>) -> Condition,
) -> Condition {
    if items.len() == 1 {
        return items.pop().expect("one item");
    }
    let right = items.split_off(items.len() / 2);
    join(
        Box::new(balanced(items, join)),
        Box::new(balanced(right, join)),
    )
}

/// The digest a step's position is recorded against (`Step::shape`): FNV-1a 64 over one line
/// per instruction. A `send` counts by its template only, so rewording a subject moves nobody;
/// a `goto` by the step's name, so adding a step elsewhere changes nothing here.
fn shape(code: &[Instr], step_names: &[String]) -> String {
    let lines: Vec<String> = code
        .iter()
        .map(|instr| match instr {
            Instr::Send(send) => format!("send {:?}", send.template),
            Instr::Goto(step) => format!("goto {:?}", step_names.get(*step)),
            other => format!("{other:?}"),
        })
        .collect();
    super::version(&lines.join("\n"))
}

/// `CronSlot::parse` passes on the `cron` crate's message, which spans lines (the translated
/// six-field expression, a caret, the reason). A diagnostic message is one line: keep our
/// clause and the crate's reason.
fn one_line(reason: &str) -> String {
    let mut lines = reason.lines().filter(|line| !line.trim().is_empty());
    let first = lines.next().unwrap_or_default();
    match lines.next_back() {
        None => first.to_string(),
        Some(detail) => {
            let clause = first.split_once(": ").map_or(first, |(clause, _)| clause);
            let mut detail = detail.trim().to_string();
            if let Some(initial) = detail.get(..1) {
                detail.replace_range(..1, &initial.to_lowercase());
            }
            format!("{clause}: {detail}")
        }
    }
}

/// A link name: what `{{link "NAME" …}}` accepts (see `crate::mail::links`).
fn is_link_name(name: &str) -> bool {
    crate::mail::links::is_link_name(name)
}

fn union(a: Weekdays, b: Weekdays) -> Weekdays {
    WEEKDAY_NAMES
        .iter()
        .filter(|(_, _, day)| b.contains(*day))
        .fold(a, |set, (_, _, day)| set.with(*day))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(condition: &Condition) -> usize {
        match condition {
            Condition::And(left, right) | Condition::Or(left, right) => {
                1 + depth(left).max(depth(right))
            }
            Condition::Not(inner) => 1 + depth(inner),
            _ => 1,
        }
    }

    #[test]
    fn long_chains_become_shallow_trees() {
        let leaves = vec![Condition::Engaged(Engagement::Clicked); 1000];
        let tree = balanced(leaves, Condition::And);
        assert_eq!(depth(&tree), 11);
    }

    #[test]
    fn cron_messages_become_one_line() {
        assert_eq!(
            one_line("`x` is not a valid cron expression: 0 x\n  ^\nMinutes must be less than 59."),
            "`x` is not a valid cron expression: minutes must be less than 59."
        );
        assert_eq!(
            one_line("a cron expression has 5 fields"),
            "a cron expression has 5 fields"
        );
    }
}
