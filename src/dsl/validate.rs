//! Structural checks over the syntax tree: each is a small function that returns every problem
//! it finds, so a file with five mistakes gets five messages at once.
//!
//! What a single word or text means (a zone, a unit, an address, a step a `goto` names) is the
//! compiler's business, since it resolves them anyway; the checks here look at how the parts of
//! a file relate: order, duplicates, where statements may appear, templates (and the fields a
//! subject uses), nesting, and the step graph (unreachable steps, loops without a `wait`).

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::lead::BUILT_IN_FIELDS;
use crate::mail::render::CONTEXT_EXTRAS;
use crate::mail::templates::{near_miss, unguarded_fields};

use super::ast::*;
use super::{Context, MAX_NESTING};

type Check = fn(&Context, &WorkflowAst) -> Vec<Diagnostic>;

/// Every check, in no particular order (diagnostics are sorted by position afterwards).
const CHECKS: &[Check] = &[
    settings_come_first,
    settings_once,
    goal_templates,
    handlers_once,
    handler_statements,
    step_statements,
    notify_owner_needs_owner,
    unique_step_names,
    known_templates,
    subjects_are_templates,
    subject_fields,
    nesting_depth,
    empty_steps,
    unreachable_steps,
    loops_wait,
];

pub fn validate(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    CHECKS
        .iter()
        .flat_map(|check| check(cx, workflow))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The header
// ---------------------------------------------------------------------------------------------

/// Settings are read before anything else; one after a handler or step is misplaced.
fn settings_come_first(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let mut seen_body = false;
    let mut diagnostics = Vec::new();
    for item in &workflow.items {
        match item {
            Item::Setting(setting) if seen_body => diagnostics.push(
                cx.error(
                    format!("`{}` comes after a handler or step", setting.kind.keyword()),
                    setting.keyword_span.clone(),
                )
                .with_label("misplaced setting")
                .with_hint("settings come first in a workflow, before handlers and steps"),
            ),
            Item::Setting(_) => {}
            Item::Handler(_) | Item::Step(_) => seen_body = true,
        }
    }
    diagnostics
}

fn settings_once(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let mut first: BTreeMap<&str, &Setting> = BTreeMap::new();
    let mut diagnostics = Vec::new();
    for setting in workflow.settings() {
        let keyword = setting.kind.keyword();
        match first.get(keyword) {
            Some(earlier) => diagnostics.push(
                cx.error(
                    format!("`{keyword}` is set twice"),
                    setting.keyword_span.clone(),
                )
                .with_label("second setting")
                .with_hint(format!(
                    "the first `{keyword}` is on line {}; keep one",
                    cx.line(earlier.span.start)
                )),
            ),
            None => {
                first.insert(keyword, setting);
            }
        }
    }
    diagnostics
}

/// `exit when sent "…"` names a template that exists: a misspelled one would be a goal no lead
/// ever reaches.
fn goal_templates(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let mut uses = Vec::new();
    for setting in workflow.settings() {
        if let SettingKind::Goal(condition) = &setting.kind {
            sent_templates(condition, &mut uses);
        }
    }
    uses.into_iter()
        .filter(|template| !cx.templates.contains(&template.value))
        .map(|template| {
            let diagnostic = cx
                .error(
                    format!("no template named `{}`", template.value),
                    template.span.clone(),
                )
                .with_label("not in templates/, so this goal is never reached");
            match did_you_mean(&template.value, cx.templates.iter().map(String::as_str)) {
                Some(name) => diagnostic.with_hint(format!("did you mean `{name}`?")),
                None => diagnostic.with_hint("`sent \"…\"` names a template this workflow sends"),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Handlers and statements
// ---------------------------------------------------------------------------------------------

fn handlers_once(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let mut first: BTreeMap<&str, &HandlerAst> = BTreeMap::new();
    let mut diagnostics = Vec::new();
    for handler in workflow.handlers() {
        let event = handler.event.value.as_str();
        if Event::parse(event).is_none() {
            continue;
        }
        match first.get(event) {
            Some(earlier) => diagnostics.push(
                cx.error(
                    format!("`{}` is handled twice", handler.head()),
                    handler.head_span.clone(),
                )
                .with_label("second handler")
                .with_hint(format!(
                    "the first `{}` is on line {}; merge them",
                    handler.head(),
                    cx.line(earlier.head_span.start)
                )),
            ),
            None => {
                first.insert(event, handler);
            }
        }
    }
    diagnostics
}

/// A handler reacts at once: it may not send or wait, and only `on auto-reply` may pause.
fn handler_statements(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for handler in workflow.handlers() {
        let event = Event::parse(&handler.event.value);
        for_each_stmt(&handler.body, &mut |stmt, _| match &stmt.kind {
            StmtKind::Send { .. } | StmtKind::Wait(_) => {
                let keyword = stmt.kind.keyword();
                diagnostics.push(
                    cx.error(format!("a handler cannot `{keyword}`"), stmt.span.clone())
                        .with_label(format!("`{keyword}` in `{}`", handler.head()))
                        .with_hint(
                            "handlers react at once; use `goto STEP` to continue at a step that \
                             does this",
                        ),
                );
            }
            StmtKind::PauseUntilReturn if event.is_some() && event != Some(Event::AutoReply) => {
                diagnostics.push(
                    cx.error(
                        "`pause until return` only works in `on auto-reply`",
                        stmt.span.clone(),
                    )
                    .with_label(format!("in `{}`", handler.head()))
                    .with_hint("only an out-of-office message has a return date to wait for"),
                );
            }
            _ => {}
        });
    }
    diagnostics
}

/// `continue` and `pause until return` answer an event; a step has none.
fn step_statements(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for step in workflow.steps() {
        for_each_stmt(&step.body, &mut |stmt, _| {
            if matches!(stmt.kind, StmtKind::Continue | StmtKind::PauseUntilReturn) {
                let keyword = stmt.kind.keyword();
                diagnostics.push(
                    cx.error(
                        format!("`{keyword}` only works in an event handler"),
                        stmt.span.clone(),
                    )
                    .with_label(format!("in step `{}`", step.name.value))
                    .with_hint("a step goes on to the next step by itself when it ends"),
                );
            }
        });
    }
    diagnostics
}

fn notify_owner_needs_owner(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    if workflow
        .settings()
        .any(|setting| matches!(setting.kind, SettingKind::Owner(_)))
    {
        return Vec::new();
    }
    let mut diagnostics = Vec::new();
    for body in bodies(workflow) {
        for_each_stmt(body, &mut |stmt, _| {
            if matches!(stmt.kind, StmtKind::NotifyOwner) {
                diagnostics.push(
                    cx.error(
                        "`notify owner`, but the workflow has no owner",
                        stmt.span.clone(),
                    )
                    .with_label("nobody to notify")
                    .with_hint(
                        "add `owner \"Name <address>\"` to the settings, or name someone: \
                             `notify \"sales@acme.example\"`",
                    ),
                );
            }
        });
    }
    diagnostics
}

/// Every block of statements: handlers first, then steps.
fn bodies(workflow: &WorkflowAst) -> impl Iterator<Item = &[Stmt]> {
    workflow
        .handlers()
        .map(|handler| handler.body.as_slice())
        .chain(workflow.steps().map(|step| step.body.as_slice()))
}

// ---------------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------------

fn unique_step_names(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let mut first: BTreeMap<&str, &StepAst> = BTreeMap::new();
    let mut diagnostics = Vec::new();
    for step in workflow.steps() {
        let name = step.name.value.as_str();
        match first.get(name) {
            Some(earlier) => diagnostics.push(
                cx.error(
                    format!("there are two steps named `{name}`"),
                    step.name.span.clone(),
                )
                .with_label("second step with this name")
                .with_hint(format!(
                    "the first `{name}` is on line {}; step names are unique",
                    cx.line(earlier.name.span.start)
                )),
            ),
            None => {
                first.insert(name, step);
            }
        }
    }
    diagnostics
}

fn nesting_depth(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for body in bodies(workflow) {
        for_each_stmt(body, &mut |stmt, depth| {
            // Report the outermost `if` past the limit only, not every one inside it.
            if depth == MAX_NESTING + 1 && matches!(stmt.kind, StmtKind::If(_)) {
                diagnostics.push(
                    cx.error(
                        format!("blocks nest at most {MAX_NESTING} deep"),
                        stmt.span.clone(),
                    )
                    .with_label(format!("this `if` is {depth} levels deep"))
                    .with_hint("combine conditions with `and`, or move part of it to its own step"),
                );
            }
        });
    }
    diagnostics
}

fn empty_steps(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    workflow
        .steps()
        .filter(|step| step.body.is_empty())
        .map(|step| {
            cx.warning(
                format!("step `{}` is empty", step.name.value),
                step.name.span.clone(),
            )
            .with_label("does nothing")
            .with_hint("add a `send` or a `wait`, or remove the step")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

/// Every template named in the file: by `send`, and by `sent "…"` in conditions.
fn template_uses(workflow: &WorkflowAst) -> Vec<&Spanned<String>> {
    let mut uses = Vec::new();
    for setting in workflow.settings() {
        if let SettingKind::Enroll(condition) = &setting.kind {
            sent_templates(condition, &mut uses);
        }
    }
    for body in bodies(workflow) {
        for_each_stmt(body, &mut |stmt, _| match &stmt.kind {
            StmtKind::Send { template, .. } => uses.push(template),
            StmtKind::If(chain) => {
                for (condition, _) in &chain.branches {
                    sent_templates(condition, &mut uses);
                }
            }
            _ => {}
        });
    }
    uses
}

fn sent_templates<'a>(condition: &'a CondAst, uses: &mut Vec<&'a Spanned<String>>) {
    condition.for_each(&mut |part| {
        if let CondKind::Sent(template) = &part.kind {
            uses.push(template);
        }
    });
}

fn known_templates(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    template_uses(workflow)
        .into_iter()
        .filter(|template| !cx.templates.contains(&template.value))
        .map(|template| {
            let diagnostic = cx
                .error(
                    format!("no template named `{}`", template.value),
                    template.span.clone(),
                )
                .with_label("not in templates/");
            match did_you_mean(&template.value, cx.templates.iter().map(String::as_str)) {
                Some(name) => diagnostic.with_hint(format!("did you mean `{name}`?")),
                None => diagnostic.with_hint(format!(
                    "a template needs `templates/{0}.html.hbs` and `templates/{0}.txt.hbs`",
                    template.value
                )),
            }
        })
        .collect()
}

fn subjects_are_templates(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for step in workflow.steps() {
        for_each_stmt(&step.body, &mut |stmt, _| {
            let StmtKind::Send { subject, .. } = &stmt.kind else {
                return;
            };
            let Err(error) = handlebars::Template::compile(&subject.value) else {
                return;
            };
            // Point at the column handlebars names, inside the quotes (a subject is one line).
            let column = error.pos().map_or(1, |(_, column)| column.max(1));
            let offset = subject
                .value
                .char_indices()
                .nth(column - 1)
                .map_or(subject.value.len(), |(offset, _)| offset);
            let start = (subject.span.start + 1 + offset).min(subject.span.end - 1);
            let reason = error.reason().to_string();
            let reason = reason.lines().next().unwrap_or_default();
            diagnostics.push(
                cx.error("this subject is not a valid template", start..start + 1)
                    .with_label(reason.to_string())
                    .with_hint("fields are written `{{first_name}}`; check the braces"),
            );
        });
    }
    diagnostics
}

/// A subject field within an edit or two of a lead field (`{{frist_name}}`) is one no lead can
/// have: every email of that `send` would fail. (Other unguarded fields are the project
/// check's business: it knows the attributes the workflows name.)
fn subject_fields(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for step in workflow.steps() {
        for_each_stmt(&step.body, &mut |stmt, _| {
            let StmtKind::Send { subject, .. } = &stmt.kind else {
                return;
            };
            for field in unguarded_fields(&subject.value, None) {
                if BUILT_IN_FIELDS.contains(&field.as_str()) {
                    continue;
                }
                let known = BUILT_IN_FIELDS
                    .iter()
                    .chain(CONTEXT_EXTRAS.iter())
                    .map(|name| name.to_string());
                let Some(close) = near_miss(&field, known) else {
                    continue;
                };
                // The field inside the quotes; a subject is one line, written with no escapes
                // before a field in practice (else the whole subject is pointed at).
                let written = &cx.source[subject.span.clone()];
                let span = match written.find(field.as_str()) {
                    Some(at) => subject.span.start + at..subject.span.start + at + field.len(),
                    None => subject.span.clone(),
                };
                diagnostics.push(
                    cx.error(format!("no lead has a field `{field}`"), span)
                        .with_label("every email of this `send` would fail")
                        .with_hint(format!("did you mean `{close}`?")),
                );
            }
        });
    }
    diagnostics
}

// ---------------------------------------------------------------------------------------------
// The step graph
// ---------------------------------------------------------------------------------------------

/// Follows control through `body`, entered when `live`: records every `goto` some path can take,
/// and returns whether some path reaches the end of the block. With `stop_at_wait`, a path ends
/// at its first `wait`, so what is recorded is what can happen without waiting.
fn flow<'a>(
    body: &'a [Stmt],
    mut live: bool,
    stop_at_wait: bool,
    gotos: &mut Vec<&'a Spanned<String>>,
) -> bool {
    for stmt in body {
        match &stmt.kind {
            StmtKind::Wait(_) if stop_at_wait => live = false,
            StmtKind::Goto(target) => {
                if live {
                    gotos.push(target);
                }
                live = false;
            }
            StmtKind::Exit => live = false,
            StmtKind::If(chain) => {
                let mut reaches_end = chain.otherwise.is_none() && live;
                for (_, block) in &chain.branches {
                    reaches_end |= flow(block, live, stop_at_wait, gotos);
                }
                if let Some(block) = &chain.otherwise {
                    reaches_end |= flow(block, live, stop_at_wait, gotos);
                }
                live = reaches_end;
            }
            _ => {}
        }
    }
    live
}

/// Step index of each name (the first step, when a name is used twice).
fn step_indexes<'a>(steps: &[&'a StepAst]) -> BTreeMap<&'a str, usize> {
    let mut indexes = BTreeMap::new();
    for (index, step) in steps.iter().enumerate() {
        indexes.entry(step.name.value.as_str()).or_insert(index);
    }
    indexes
}

/// A step no fall-through, `goto` or handler can reach never runs.
fn unreachable_steps(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let steps: Vec<&StepAst> = workflow.steps().collect();
    let indexes = step_indexes(&steps);
    let mut falls_through = Vec::with_capacity(steps.len());
    let mut edges: Vec<Vec<usize>> = Vec::with_capacity(steps.len());
    for (index, step) in steps.iter().enumerate() {
        let mut gotos = Vec::new();
        let reaches_end = flow(&step.body, true, false, &mut gotos);
        let mut next: Vec<usize> = gotos
            .iter()
            .filter_map(|target| indexes.get(target.value.as_str()).copied())
            .collect();
        if reaches_end && index + 1 < steps.len() {
            next.push(index + 1);
        }
        falls_through.push(reaches_end);
        edges.push(next);
    }

    let mut roots: Vec<usize> = Vec::new();
    if !steps.is_empty() {
        roots.push(0);
    }
    for handler in workflow.handlers() {
        let mut gotos = Vec::new();
        flow(&handler.body, true, false, &mut gotos);
        roots.extend(
            gotos
                .iter()
                .filter_map(|target| indexes.get(target.value.as_str()).copied()),
        );
    }
    let mut reached = vec![false; steps.len()];
    while let Some(index) = roots.pop() {
        if !std::mem::replace(&mut reached[index], true) {
            roots.extend(edges[index].iter().copied());
        }
    }

    let mut diagnostics = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        // A second step with a used name is already an error; a warning would only confuse.
        let duplicate = indexes.get(step.name.value.as_str()) != Some(&index);
        if reached[index] || duplicate {
            continue;
        }
        let previous = &steps[index - 1].name.value;
        let hint = if falls_through[index - 1] {
            format!("step `{previous}` is never reached either")
        } else {
            format!(
                "step `{previous}` always ends with `exit` or `goto`; add a `goto {}` where this \
                 step should run, or remove it",
                step.name.value
            )
        };
        diagnostics.push(
            cx.warning(
                format!("step `{}` is never reached", step.name.value),
                step.name.span.clone(),
            )
            .with_label("no step or handler leads here")
            .with_hint(hint),
        );
    }
    diagnostics
}

/// An edge of the step graph: the target step, and the `goto` that takes it (`None` for falling
/// through to the next step).
type Edge<'a> = (usize, Option<&'a Spanned<String>>);

/// A loop of steps that passes no `wait` would run (and send) without end.
///
/// The graph has an edge from a step to every step it can move to without passing a `wait`:
/// its `goto`s, and the next step when it can fall through. A cycle needs a `goto` (falling
/// through only moves forward); the error points at the `goto` that closes it.
fn loops_wait(cx: &Context, workflow: &WorkflowAst) -> Vec<Diagnostic> {
    let steps: Vec<&StepAst> = workflow.steps().collect();
    let indexes = step_indexes(&steps);
    let edges: Vec<Vec<Edge>> = steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let mut gotos = Vec::new();
            let reaches_end = flow(&step.body, true, true, &mut gotos);
            let mut next: Vec<_> = gotos
                .into_iter()
                .filter_map(|target| {
                    let to = *indexes.get(target.value.as_str())?;
                    Some((to, Some(target)))
                })
                .collect();
            if reaches_end && index + 1 < steps.len() {
                next.push((index + 1, None));
            }
            next
        })
        .collect();

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; steps.len()];
    let mut closing: BTreeSet<usize> = BTreeSet::new();
    let mut diagnostics = Vec::new();
    // Depth-first, with an explicit stack (a file may have many steps): each frame is a step,
    // the index of its next edge to follow, and the edge that led into it.
    for root in 0..steps.len() {
        if marks[root] != Mark::New {
            continue;
        }
        let mut path: Vec<(usize, usize, Option<&Spanned<String>>)> = vec![(root, 0, None)];
        marks[root] = Mark::OnPath;
        while let Some(frame) = path.last_mut() {
            let (node, next_edge, _) = *frame;
            let Some(&(to, via)) = edges[node].get(next_edge) else {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            };
            frame.1 += 1;
            match marks[to] {
                Mark::New => {
                    marks[to] = Mark::OnPath;
                    path.push((to, 0, via));
                }
                Mark::OnPath => {
                    // The cycle is `to` … `node` → `to`; blame this edge if it is a `goto`,
                    // otherwise the last `goto` on the way round.
                    let start = path
                        .iter()
                        .position(|(step, _, _)| *step == to)
                        .expect("a step on the path is in it");
                    let culprit = via.or_else(|| {
                        path[start + 1..]
                            .iter()
                            .rev()
                            .find_map(|(_, _, into)| *into)
                    });
                    if let Some(goto) = culprit
                        && closing.insert(goto.span.start)
                    {
                        diagnostics.push(
                            cx.error(
                                format!("`goto {}` makes a loop with no `wait`", goto.value),
                                goto.span.clone(),
                            )
                            .with_label("loops back without waiting")
                            .with_hint(format!(
                                "a lead would go round this loop without end; put a `wait` \
                                 between the start of `{}` and this `goto`",
                                goto.value
                            )),
                        );
                    }
                }
                Mark::Done => {}
            }
        }
    }
    diagnostics
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    fn messages(body: &str) -> Vec<String> {
        let source = format!("workflow \"w\" {{ from \"a@b.example\"\n{body}\n}}");
        super::super::compile(Path::new("t.flow"), &source, &BTreeSet::new())
            .diagnostics
            .into_iter()
            .map(|diagnostic| diagnostic.message)
            .collect()
    }

    #[test]
    fn a_step_that_jumps_to_itself_without_waiting_is_a_loop() {
        assert_eq!(
            messages("step a { tag \"x\"; goto a }"),
            ["`goto a` makes a loop with no `wait`"]
        );
        assert!(messages("step a { wait 1 day; goto a }").is_empty());
    }

    #[test]
    fn a_loop_closed_by_falling_through_blames_its_goto() {
        // a → goto c → goto b → falls through to c: the only `goto` on the loop is `goto b`.
        assert_eq!(
            messages("step a { goto c } step b { tag \"x\" } step c { goto b }"),
            ["`goto b` makes a loop with no `wait`"]
        );
    }

    #[test]
    fn a_handler_goto_makes_a_step_reachable() {
        assert!(messages("on reply { goto b } step a { exit } step b { exit }").is_empty());
        assert_eq!(
            messages("step a { exit } step b { exit }"),
            ["step `b` is never reached"]
        );
    }

    #[test]
    fn an_if_without_else_can_fall_through() {
        assert!(messages("step a { if replied { exit } } step b { exit }").is_empty());
    }
}
