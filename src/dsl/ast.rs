//! The syntax tree of one workflow file, as written: words are still words (`"dayz"`, `"Mon"`),
//! text is unescaped but not interpreted, and every node keeps the byte span it came from so
//! that any later check can point at it.
//!
//! The tree is shallow by construction: `and`/`or` chains are lists, a `not` chain is one node,
//! and brackets are refused beyond a fixed depth before parsing (see `parser::check_depth`), so
//! walking it recursively cannot exhaust the stack.

use std::ops::Range;

use crate::lead::Value;
use crate::workflow::CompareOp;

/// Byte offsets into the source.
pub type Span = Range<usize>;

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Spanned<T> {
        Spanned { value, span }
    }
}

/// `workflow "NAME" { … }`.
#[derive(Debug, Clone)]
pub struct WorkflowAst {
    pub name: Spanned<String>,
    /// Settings, handlers and steps in source order.
    pub items: Vec<Item>,
}

impl WorkflowAst {
    pub fn settings(&self) -> impl Iterator<Item = &Setting> {
        self.items.iter().filter_map(|item| match item {
            Item::Setting(setting) => Some(setting),
            _ => None,
        })
    }

    pub fn handlers(&self) -> impl Iterator<Item = &HandlerAst> {
        self.items.iter().filter_map(|item| match item {
            Item::Handler(handler) => Some(handler),
            _ => None,
        })
    }

    pub fn steps(&self) -> impl Iterator<Item = &StepAst> {
        self.items.iter().filter_map(|item| match item {
            Item::Step(step) => Some(step),
            _ => None,
        })
    }
}

#[derive(Debug, Clone)]
pub enum Item {
    Setting(Setting),
    Handler(HandlerAst),
    Step(StepAst),
}

/// One header setting.
#[derive(Debug, Clone)]
pub struct Setting {
    pub kind: SettingKind,
    /// The whole setting.
    pub span: Span,
    /// Its keyword(s): what a "set twice" or "out of order" message points at.
    pub keyword_span: Span,
}

#[derive(Debug, Clone)]
pub enum SettingKind {
    Enroll(CondAst),
    /// `exit when …`: the goal.
    Goal(CondAst),
    Reentry,
    Bulk,
    Every(Spanned<String>),
    From(Spanned<String>),
    ReplyTo(Spanned<String>),
    Owner(Spanned<String>),
    Timezone(Spanned<String>),
    Window(WindowAst),
    /// `track clicks and opens`: the words as written.
    Track(Vec<Spanned<String>>),
    /// `scoring { … }`: its lines in order.
    Scoring(Vec<ScoringItemAst>),
}

/// One line of a `scoring` block, as written.
#[derive(Debug, Clone)]
pub enum ScoringItemAst {
    /// `+20 on event "visited-pricing"`: the change, the signal word, the event name.
    Rule {
        change: Spanned<String>,
        signal: Spanned<String>,
        name: Option<Spanned<String>>,
    },
    /// `halve every 30 days`.
    Decay {
        count: Spanned<String>,
        unit: Spanned<String>,
    },
    /// `inactive after 90 days`.
    Inactivity {
        count: Spanned<String>,
        unit: Spanned<String>,
    },
    /// `hot at 50`.
    Threshold {
        temperature: Spanned<String>,
        score: Spanned<String>,
    },
}

impl SettingKind {
    /// The setting as the marketer knows it, for messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            SettingKind::Enroll(_) => "enroll when",
            SettingKind::Goal(_) => "exit when",
            SettingKind::Reentry => "allow re-entry",
            SettingKind::Bulk => "mark as bulk",
            SettingKind::Every(_) => "every",
            SettingKind::From(_) => "from",
            SettingKind::ReplyTo(_) => "reply to",
            SettingKind::Owner(_) => "owner",
            SettingKind::Timezone(_) => "timezone",
            SettingKind::Window(_) => "send on",
            SettingKind::Track(_) => "track",
            SettingKind::Scoring(_) => "scoring",
        }
    }
}

/// `send on DAYS between START and END [in … timezone]`.
#[derive(Debug, Clone)]
pub struct WindowAst {
    pub days: DaysAst,
    pub start: Spanned<String>,
    pub end: Spanned<String>,
    /// `lead` or `workflow`, when written.
    pub zone: Option<Spanned<String>>,
}

/// Weekdays as written.
#[derive(Debug, Clone)]
pub enum DaysAst {
    /// `every day`
    Every,
    /// `Mon-Fri, Sun`
    List(Vec<DayRange>),
}

/// `Mon` or `Mon-Fri`.
#[derive(Debug, Clone)]
pub struct DayRange {
    pub first: Spanned<String>,
    pub last: Option<Spanned<String>>,
}

/// `on EVENT { … }`, or `when lead becomes TEMPERATURE { … }` (its event is then
/// `becomes TEMPERATURE`).
#[derive(Debug, Clone)]
pub struct HandlerAst {
    pub event: Spanned<String>,
    pub body: Vec<Stmt>,
    /// `on EVENT`: what messages about the handler point at.
    pub head_span: Span,
}

impl HandlerAst {
    /// `on reply`, `when lead becomes hot`: the handler as written, for messages.
    pub fn head(&self) -> String {
        match self.event.value.strip_prefix(BECOMES) {
            Some(temperature) => format!("when lead becomes {temperature}"),
            None => format!("on {}", self.event.value),
        }
    }
}

/// `step NAME { … }`.
#[derive(Debug, Clone)]
pub struct StepAst {
    pub name: Spanned<String>,
    pub body: Vec<Stmt>,
}

#[derive(Debug, Clone)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum StmtKind {
    Send {
        template: Spanned<String>,
        subject: Spanned<String>,
        /// `expires DATE`.
        expires: Option<DateExprAst>,
    },
    Wait(WaitAst),
    If(IfAst),
    Set {
        field: Spanned<String>,
        value: Spanned<Value>,
    },
    /// `set lead.offer_ends to now + 7 days`.
    SetDate {
        field: Spanned<String>,
        value: DateExprAst,
    },
    Tag(Spanned<String>),
    Untag(Spanned<String>),
    /// `+10` as written.
    Score(Spanned<String>),
    Promote(Spanned<String>),
    NotifyOwner,
    Notify(Spanned<String>),
    Goto(Spanned<String>),
    Exit,
    Continue,
    PauseUntilReturn,
}

impl StmtKind {
    /// The statement's keyword, for messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            StmtKind::Send { .. } => "send",
            StmtKind::Wait(_) => "wait",
            StmtKind::If(_) => "if",
            StmtKind::Set { .. } | StmtKind::SetDate { .. } => "set",
            StmtKind::Tag(_) => "tag",
            StmtKind::Untag(_) => "untag",
            StmtKind::Score(_) => "score",
            StmtKind::Promote(_) => "promote",
            StmtKind::NotifyOwner | StmtKind::Notify(_) => "notify",
            StmtKind::Goto(_) => "goto",
            StmtKind::Exit => "exit",
            StmtKind::Continue => "continue",
            StmtKind::PauseUntilReturn => "pause until return",
        }
    }
}

#[derive(Debug, Clone)]
pub enum WaitAst {
    /// `wait 2 days`: the count and the unit words as written.
    For {
        count: Spanned<String>,
        unit: Spanned<String>,
    },
    /// `wait until Mon-Fri 08:30`.
    Until {
        days: Option<DaysAst>,
        time: Spanned<String>,
    },
    /// `wait until cron "…"`.
    Cron(Spanned<String>),
    /// `wait until lead.trial_ends - 2 days`.
    UntilDate(DateExprAst),
    /// `wait until lead clicked "offer" or 3 days`.
    UntilAction {
        action: ActionAst,
        count: Spanned<String>,
        unit: Spanned<String>,
    },
}

/// Something a lead does, as written: `clicked "offer"`, `opened "welcome"`,
/// `did "visited-pricing" within 7 days`.
#[derive(Debug, Clone)]
pub enum ActionAst {
    /// `clicked`: any tracked link of this workflow (its span).
    Clicked(Span),
    /// `clicked "STEP"`: a link of that step's email.
    ClickedStep(Spanned<String>),
    /// `clicked link "NAME"`.
    ClickedLink(Spanned<String>),
    /// `opened "STEP"`.
    Opened(Spanned<String>),
    /// `did "EVENT"`, optionally `within N UNIT` (count and unit as written).
    Did {
        event: Spanned<String>,
        within: Option<(Spanned<String>, Spanned<String>)>,
    },
}

/// A date as written: `now + 7 days`, `lead.trial_ends - 2 days`.
#[derive(Debug, Clone)]
pub struct DateExprAst {
    /// `None`: `now`; else the field's name.
    pub field: Option<Spanned<String>>,
    pub shifts: Vec<ShiftAst>,
    pub span: Span,
}

/// `+ 7 days`: the sign, and the count and unit as written.
#[derive(Debug, Clone)]
pub struct ShiftAst {
    pub forward: bool,
    pub count: Spanned<String>,
    pub unit: Spanned<String>,
}

/// `if … { } else if … { } else { }`.
#[derive(Debug, Clone)]
pub struct IfAst {
    /// The `if` and each `else if`, in order.
    pub branches: Vec<(CondAst, Vec<Stmt>)>,
    pub otherwise: Option<Vec<Stmt>>,
}

#[derive(Debug, Clone)]
pub struct CondAst {
    pub kind: CondKind,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum CondKind {
    /// Two or more operands.
    And(Vec<CondAst>),
    /// Two or more operands.
    Or(Vec<CondAst>),
    /// An odd number of `not`s (an even number cancels out while lowering).
    Not(Box<CondAst>),
    Compare {
        field: Spanned<String>,
        op: CompareOp,
        value: Spanned<Value>,
        /// The value is a word without quotes (`lead.temperature is hot`).
        bare: bool,
    },
    /// `lead.trial_ends < now + 3 days`.
    CompareDate {
        field: Spanned<String>,
        op: CompareOp,
        value: DateExprAst,
    },
    HasTag {
        field: Spanned<String>,
        tag: Spanned<String>,
    },
    In {
        field: Spanned<String>,
        values: Vec<Spanned<Value>>,
    },
    IsSet {
        field: Spanned<String>,
        negated: bool,
    },
    Replied,
    AutoReplied,
    Action(ActionAst),
    Sent(Spanned<String>),
}

/// Calls `f` on every statement of `body`, nested ones included, with its depth: 1 at the top
/// of a step or handler, 2 inside one `if`, and so on.
pub fn for_each_stmt<'a>(body: &'a [Stmt], f: &mut dyn FnMut(&'a Stmt, usize)) {
    visit(body, 1, f);
}

fn visit<'a>(body: &'a [Stmt], depth: usize, f: &mut dyn FnMut(&'a Stmt, usize)) {
    for stmt in body {
        f(stmt, depth);
        if let StmtKind::If(chain) = &stmt.kind {
            for (_, block) in &chain.branches {
                visit(block, depth + 1, f);
            }
            if let Some(block) = &chain.otherwise {
                visit(block, depth + 1, f);
            }
        }
    }
}

impl CondAst {
    /// Calls `f` on this condition and every condition inside it.
    pub fn for_each<'a>(&'a self, f: &mut dyn FnMut(&'a CondAst)) {
        f(self);
        match &self.kind {
            CondKind::And(operands) | CondKind::Or(operands) => {
                for operand in operands {
                    operand.for_each(f);
                }
            }
            CondKind::Not(inner) => inner.for_each(f),
            _ => {}
        }
    }
}

/// How a `when lead becomes …` handler's event starts.
pub const BECOMES: &str = "becomes ";

/// The events a handler can react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Reply,
    AutoReply,
    Bounce,
    Unsubscribe,
    /// A person (not a machine) clicked a tracked link of this workflow.
    Click,
    /// `when lead becomes hot`.
    Became(crate::scoring::Temperature),
}

impl Event {
    pub const NAMES: [&'static str; 5] = ["reply", "auto-reply", "bounce", "unsubscribe", "click"];

    pub fn parse(name: &str) -> Option<Event> {
        match name {
            "reply" => Some(Event::Reply),
            "auto-reply" => Some(Event::AutoReply),
            "bounce" => Some(Event::Bounce),
            "unsubscribe" => Some(Event::Unsubscribe),
            "click" => Some(Event::Click),
            other => other
                .strip_prefix(BECOMES)
                .and_then(crate::scoring::Temperature::parse)
                .map(Event::Became),
        }
    }
}
