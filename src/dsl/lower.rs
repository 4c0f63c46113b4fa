//! Pest pairs → the syntax tree in `ast`. Lowering never fails: the grammar has already decided
//! the shape, so this only reads it, resolves text escapes, and keeps spans. Words that need
//! checking (units, weekdays, fields…) are copied as written for the compiler to judge.
//!
//! Children are looked up by rule rather than by position, so keyword and punctuation pairs in
//! between never matter.

use pest::iterators::Pair;

use crate::lead::Value;
use crate::workflow::CompareOp;

use super::ast::*;
use super::parser::Rule;

/// Lowers the `file` pair of a parsed workflow.
pub fn lower(file: Pair<'_, Rule>) -> WorkflowAst {
    let workflow = child(&file, Rule::workflow);
    let name = text(child(&workflow, Rule::workflow_name));
    let items = workflow
        .into_inner()
        .filter_map(|pair| match pair.as_rule() {
            Rule::setting => Some(Item::Setting(setting(pair))),
            Rule::handler => Some(Item::Handler(handler(pair))),
            Rule::trigger => Some(Item::Handler(trigger(pair))),
            Rule::step => Some(Item::Step(step(pair))),
            _ => None,
        })
        .collect();
    WorkflowAst { name, items }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn span(pair: &Pair<'_, Rule>) -> Span {
    pair.as_span().start()..pair.as_span().end()
}

/// The first child of `pair` with `rule`; the grammar guarantees it exists.
fn child<'i>(pair: &Pair<'i, Rule>, rule: Rule) -> Pair<'i, Rule> {
    find(pair, rule).unwrap_or_else(|| {
        panic!(
            "grammar and lowering disagree: no {rule:?} in {:?}",
            pair.as_rule()
        )
    })
}

fn find<'i>(pair: &Pair<'i, Rule>, rule: Rule) -> Option<Pair<'i, Rule>> {
    pair.clone()
        .into_inner()
        .find(|inner| inner.as_rule() == rule)
}

fn children<'i>(pair: &Pair<'i, Rule>, rule: Rule) -> impl Iterator<Item = Pair<'i, Rule>> {
    pair.clone()
        .into_inner()
        .filter(move |inner| inner.as_rule() == rule)
}

/// A word as written.
fn word(pair: Pair<'_, Rule>) -> Spanned<String> {
    Spanned::new(pair.as_str().to_string(), span(&pair))
}

/// A quoted text, unescaped; the span includes the quotes.
fn text(pair: Pair<'_, Rule>) -> Spanned<String> {
    Spanned::new(unquote(pair.as_str()), span(&pair))
}

/// `"a \"b\" \\ c"` → `a "b" \ c` (the grammar allows only these two escapes).
pub fn unquote(quoted: &str) -> String {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(quoted);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// The span from the start of `pair` to the end of its child `last`: `reply to` in
/// `reply to "…"`.
fn head_span(pair: &Pair<'_, Rule>, last: Rule) -> Span {
    pair.as_span().start()..child(pair, last).as_span().end()
}

// ---------------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------------

fn setting(pair: Pair<'_, Rule>) -> Setting {
    let span = span(&pair);
    let inner = pair
        .into_inner()
        .next()
        .expect("a setting has one alternative");
    let (kind, keyword_span) = match inner.as_rule() {
        Rule::enroll => (
            SettingKind::Enroll(condition(child(&inner, Rule::condition))),
            head_span(&inner, Rule::kw_when),
        ),
        Rule::goal => (
            SettingKind::Goal(condition(child(&inner, Rule::condition))),
            head_span(&inner, Rule::kw_when),
        ),
        Rule::reentry => (SettingKind::Reentry, self::span(&inner)),
        Rule::bulk => (SettingKind::Bulk, self::span(&inner)),
        Rule::every => (
            SettingKind::Every(text(child(&inner, Rule::cron_text))),
            head_span(&inner, Rule::kw_every),
        ),
        Rule::from => (
            SettingKind::From(text(child(&inner, Rule::mailbox))),
            head_span(&inner, Rule::kw_from),
        ),
        Rule::reply_to => (
            SettingKind::ReplyTo(text(child(&inner, Rule::mailbox))),
            head_span(&inner, Rule::kw_to),
        ),
        Rule::owner => (
            SettingKind::Owner(text(child(&inner, Rule::mailbox))),
            head_span(&inner, Rule::kw_owner),
        ),
        Rule::timezone => (
            SettingKind::Timezone(text(child(&inner, Rule::zone_name))),
            head_span(&inner, Rule::kw_timezone),
        ),
        Rule::send_window => (
            SettingKind::Window(window(&inner)),
            head_span(&inner, Rule::kw_on),
        ),
        Rule::track => (
            SettingKind::Track(children(&inner, Rule::track_word).map(word).collect()),
            head_span(&inner, Rule::kw_track),
        ),
        Rule::scoring => (
            SettingKind::Scoring(
                children(&inner, Rule::scoring_item)
                    .map(scoring_item)
                    .collect(),
            ),
            head_span(&inner, Rule::kw_scoring),
        ),
        other => unreachable!("not a setting: {other:?}"),
    };
    Setting {
        kind,
        span,
        keyword_span,
    }
}

fn window(pair: &Pair<'_, Rule>) -> WindowAst {
    let mut times = children(pair, Rule::time).map(word);
    let start = times.next().expect("a window has a start time");
    let end = times.next().expect("a window has an end time");
    let zone = find(pair, Rule::window_zone).map(|zone| {
        let which = find(&zone, Rule::kw_lead).unwrap_or_else(|| child(&zone, Rule::kw_workflow));
        Spanned::new(which.as_str().to_string(), span(&zone))
    });
    WindowAst {
        days: days(child(pair, Rule::days)),
        start,
        end,
        zone,
    }
}

fn days(pair: Pair<'_, Rule>) -> DaysAst {
    if find(&pair, Rule::every_day).is_some() {
        return DaysAst::Every;
    }
    DaysAst::List(
        children(&pair, Rule::day_range)
            .map(|range| {
                let mut words = children(&range, Rule::day_word).map(word);
                DayRange {
                    first: words.next().expect("a day range starts with a day"),
                    last: words.next(),
                }
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Handlers, steps, statements
// ---------------------------------------------------------------------------------------------

fn handler(pair: Pair<'_, Rule>) -> HandlerAst {
    HandlerAst {
        event: word(child(&pair, Rule::event_name)),
        head_span: head_span(&pair, Rule::event_name),
        body: block(child(&pair, Rule::block)),
    }
}

/// `when lead becomes hot { … }`: a handler whose event is `becomes hot`.
fn trigger(pair: Pair<'_, Rule>) -> HandlerAst {
    let word = child(&pair, Rule::bare_word);
    HandlerAst {
        event: Spanned::new(format!("{BECOMES}{}", word.as_str()), span(&word)),
        head_span: head_span(&pair, Rule::bare_word),
        body: block(child(&pair, Rule::block)),
    }
}

fn scoring_item(pair: Pair<'_, Rule>) -> ScoringItemAst {
    let inner = pair
        .into_inner()
        .next()
        .expect("a scoring item has one alternative");
    match inner.as_rule() {
        Rule::score_rule => ScoringItemAst::Rule {
            change: word(child(&inner, Rule::score_change)),
            signal: word(child(&inner, Rule::signal_name)),
            name: find(&inner, Rule::string).map(text),
        },
        Rule::decay => ScoringItemAst::Decay {
            count: word(child(&inner, Rule::count)),
            unit: word(child(&inner, Rule::unit)),
        },
        Rule::inactivity => ScoringItemAst::Inactivity {
            count: word(child(&inner, Rule::count)),
            unit: word(child(&inner, Rule::unit)),
        },
        Rule::threshold => ScoringItemAst::Threshold {
            temperature: word(child(&inner, Rule::bare_word)),
            score: word(child(&inner, Rule::number)),
        },
        other => unreachable!("not a scoring item: {other:?}"),
    }
}

fn step(pair: Pair<'_, Rule>) -> StepAst {
    StepAst {
        name: word(child(&pair, Rule::step_name)),
        body: block(child(&pair, Rule::block)),
    }
}

fn block(pair: Pair<'_, Rule>) -> Vec<Stmt> {
    children(&pair, Rule::statement).map(statement).collect()
}

fn statement(pair: Pair<'_, Rule>) -> Stmt {
    let span = span(&pair);
    let inner = pair
        .into_inner()
        .next()
        .expect("a statement has one alternative");
    let kind = match inner.as_rule() {
        Rule::send => StmtKind::Send {
            template: text(child(&inner, Rule::template_name)),
            subject: text(child(&inner, Rule::subject)),
            expires: find(&inner, Rule::send_expires)
                .map(|expires| date_expr(child(&expires, Rule::date_expr))),
        },
        Rule::wait => StmtKind::Wait(wait(&inner)),
        Rule::if_chain => StmtKind::If(if_chain(&inner)),
        Rule::set_field => match find(&inner, Rule::date_expr) {
            Some(date) => StmtKind::SetDate {
                field: field(child(&inner, Rule::field)),
                value: date_expr(date),
            },
            None => StmtKind::Set {
                field: field(child(&inner, Rule::field)),
                value: value(child(&inner, Rule::value)),
            },
        },
        Rule::tag => StmtKind::Tag(text(child(&inner, Rule::tag_name))),
        Rule::untag => StmtKind::Untag(text(child(&inner, Rule::tag_name))),
        Rule::score => StmtKind::Score(word(child(&inner, Rule::score_change))),
        Rule::promote => StmtKind::Promote(word(child(&inner, Rule::stage_name))),
        Rule::notify => match find(&inner, Rule::mailbox) {
            Some(mailbox) => StmtKind::Notify(text(mailbox)),
            None => StmtKind::NotifyOwner,
        },
        Rule::goto => StmtKind::Goto(word(child(&inner, Rule::step_name))),
        Rule::exit => StmtKind::Exit,
        Rule::continue_stmt => StmtKind::Continue,
        Rule::pause => StmtKind::PauseUntilReturn,
        other => unreachable!("not a statement: {other:?}"),
    };
    Stmt { kind, span }
}

fn wait(pair: &Pair<'_, Rule>) -> WaitAst {
    if let Some(until) = find(pair, Rule::wait_until_action) {
        return WaitAst::UntilAction {
            action: action(child(&until, Rule::action)),
            count: word(child(&until, Rule::count)),
            unit: word(child(&until, Rule::unit)),
        };
    }
    if let Some(cron) = find(pair, Rule::wait_until_cron) {
        return WaitAst::Cron(text(child(&cron, Rule::cron_text)));
    }
    if let Some(until) = find(pair, Rule::wait_until_date) {
        return WaitAst::UntilDate(date_expr(child(&until, Rule::date_expr)));
    }
    if let Some(until) = find(pair, Rule::wait_until) {
        return WaitAst::Until {
            days: find(&until, Rule::days).map(days),
            time: word(child(&until, Rule::time)),
        };
    }
    let length = child(pair, Rule::wait_for);
    WaitAst::For {
        count: word(child(&length, Rule::count)),
        unit: word(child(&length, Rule::unit)),
    }
}

fn if_chain(pair: &Pair<'_, Rule>) -> IfAst {
    let mut branches = vec![(
        condition(child(pair, Rule::condition)),
        block(child(pair, Rule::block)),
    )];
    for else_if in children(pair, Rule::else_if) {
        branches.push((
            condition(child(&else_if, Rule::condition)),
            block(child(&else_if, Rule::block)),
        ));
    }
    let otherwise =
        find(pair, Rule::else_block).map(|otherwise| block(child(&otherwise, Rule::block)));
    IfAst {
        branches,
        otherwise,
    }
}

// ---------------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------------

fn condition(pair: Pair<'_, Rule>) -> CondAst {
    let or_expr = child(&pair, Rule::or_expr);
    let span = span(&or_expr);
    let mut operands: Vec<CondAst> = children(&or_expr, Rule::and_expr).map(and_expr).collect();
    if operands.len() == 1 {
        return operands.pop().expect("one operand");
    }
    CondAst {
        kind: CondKind::Or(operands),
        span,
    }
}

fn and_expr(pair: Pair<'_, Rule>) -> CondAst {
    let span = span(&pair);
    let mut operands: Vec<CondAst> = children(&pair, Rule::not_expr).map(not_expr).collect();
    if operands.len() == 1 {
        return operands.pop().expect("one operand");
    }
    CondAst {
        kind: CondKind::And(operands),
        span,
    }
}

fn not_expr(pair: Pair<'_, Rule>) -> CondAst {
    let span = span(&pair);
    let nots = children(&pair, Rule::kw_not).count();
    let inner = if let Some(group) = find(&pair, Rule::condition) {
        condition(group)
    } else if let Some(test) = find(&pair, Rule::test) {
        self::test(test)
    } else {
        engagement(child(&pair, Rule::engagement))
    };
    // `not not x` is `x`: keep one `Not` at most, so a long chain stays one node.
    if nots % 2 == 1 {
        CondAst {
            kind: CondKind::Not(Box::new(inner)),
            span,
        }
    } else {
        inner
    }
}

fn test(pair: Pair<'_, Rule>) -> CondAst {
    let span = span(&pair);
    let field = field(child(&pair, Rule::field));
    let kind = if let Some(is_set) = find(&pair, Rule::is_set) {
        CondKind::IsSet {
            field,
            negated: find(&is_set, Rule::kw_not).is_some(),
        }
    } else if let Some(compare) = find(&pair, Rule::compare) {
        let op = operator(child(&compare, Rule::operator).as_str());
        match find(&compare, Rule::date_expr) {
            Some(date) => CondKind::CompareDate {
                field,
                op,
                value: date_expr(date),
            },
            None => match find(&compare, Rule::bare_word) {
                Some(bare) => CondKind::Compare {
                    field,
                    op,
                    value: Spanned::new(
                        Value::Text(bare.as_str().to_string()),
                        bare.as_span().start()..bare.as_span().end(),
                    ),
                    bare: true,
                },
                None => CondKind::Compare {
                    field,
                    op,
                    value: value(child(&compare, Rule::value)),
                    bare: false,
                },
            },
        }
    } else if let Some(list) = find(&pair, Rule::in_list) {
        CondKind::In {
            field,
            values: children(&list, Rule::value).map(value).collect(),
        }
    } else {
        let has = child(&pair, Rule::has_tag);
        CondKind::HasTag {
            field,
            tag: text(child(&has, Rule::tag_name)),
        }
    };
    CondAst { kind, span }
}

fn operator(written: &str) -> CompareOp {
    match written.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["is"] | ["="] => CompareOp::Eq,
        ["is", "not"] | ["!="] => CompareOp::Ne,
        ["<"] => CompareOp::Lt,
        ["<="] => CompareOp::Le,
        [">"] => CompareOp::Gt,
        [">="] => CompareOp::Ge,
        ["contains"] => CompareOp::Contains,
        other => unreachable!("not an operator: {other:?}"),
    }
}

fn engagement(pair: Pair<'_, Rule>) -> CondAst {
    let span = span(&pair);
    let kind = if let Some(template) = find(&pair, Rule::template_name) {
        CondKind::Sent(text(template))
    } else if find(&pair, Rule::kw_replied).is_some() {
        CondKind::Replied
    } else if find(&pair, Rule::kw_auto_replied).is_some() {
        CondKind::AutoReplied
    } else {
        CondKind::Action(action(child(&pair, Rule::action)))
    };
    CondAst { kind, span }
}

fn action(pair: Pair<'_, Rule>) -> ActionAst {
    if let Some(event) = find(&pair, Rule::event_ref) {
        let within = find(&pair, Rule::within).map(|within| {
            (
                word(child(&within, Rule::count)),
                word(child(&within, Rule::unit)),
            )
        });
        return ActionAst::Did {
            event: text(event),
            within,
        };
    }
    if let Some(link) = find(&pair, Rule::link_name) {
        return ActionAst::ClickedLink(text(link));
    }
    match find(&pair, Rule::step_ref) {
        Some(step) if find(&pair, Rule::kw_opened).is_some() => ActionAst::Opened(text(step)),
        Some(step) => ActionAst::ClickedStep(text(step)),
        None => ActionAst::Clicked(span(&pair)),
    }
}

/// `now + 7 days`, `lead.trial_ends - 2 days`.
fn date_expr(pair: Pair<'_, Rule>) -> DateExprAst {
    DateExprAst {
        field: find(&pair, Rule::field).map(field),
        shifts: children(&pair, Rule::date_shift)
            .map(|shift| ShiftAst {
                forward: child(&shift, Rule::shift_sign).as_str() == "+",
                count: word(child(&shift, Rule::count)),
                unit: word(child(&shift, Rule::unit)),
            })
            .collect(),
        span: span(&pair),
    }
}

/// `lead.NAME` → `NAME`, spanning only the name.
fn field(pair: Pair<'_, Rule>) -> Spanned<String> {
    const PREFIX: &str = "lead.";
    let written = pair.as_str();
    let start = pair.as_span().start() + PREFIX.len();
    Spanned::new(
        written[PREFIX.len()..].to_string(),
        start..pair.as_span().end(),
    )
}

fn value(pair: Pair<'_, Rule>) -> Spanned<Value> {
    let span = span(&pair);
    let inner = pair
        .into_inner()
        .next()
        .expect("a value has one alternative");
    let value = match inner.as_rule() {
        Rule::string => Value::Text(unquote(inner.as_str())),
        // The grammar only lets digits, one `-` and one `.` through, so this parses; a number
        // too large for f64 becomes infinity, which the compiler refuses.
        _ => Value::Number(inner.as_str().parse().unwrap_or(f64::INFINITY)),
    };
    Spanned::new(value, span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_resolves_both_escapes() {
        assert_eq!(unquote(r#""a \"b\" \\ c""#), r#"a "b" \ c"#);
    }
}
