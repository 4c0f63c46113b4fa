//! The engine on compiled workflows: sends, waits, windows, branches, handlers, edits.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use nurture::dsl;
use nurture::engine::{Effect, Enrollment, ExitReason, Input, Outcome, Status, advance, enroll};
use nurture::lead::{Lead, Stage};
use nurture::workflow::Workflow;

fn workflow(body: &str) -> Workflow {
    let source = format!(
        "workflow \"test\" {{\n  from \"Ana <ana@example.test>\"\n  owner \"sales@example.test\"\n  timezone \"Europe/Berlin\"\n{body}\n}}\n"
    );
    let templates: BTreeSet<String> = ["a", "b", "c", "d"].into_iter().map(String::from).collect();
    let compiled = dsl::compile(Path::new("test.flow"), &source, &templates);
    let rendered: Vec<String> = compiled.diagnostics.iter().map(|d| d.to_string()).collect();
    compiled
        .workflow
        .unwrap_or_else(|| panic!("{}", rendered.join("\n")))
}

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn lead() -> Lead {
    let mut lead = Lead::new("lead@example.test".into(), utc("2026-01-01T00:00:00Z"));
    lead.first_name = Some("Lea".into());
    lead.score = 12;
    lead
}

/// Enrolls the test lead on Mon 2026-11-23 08:00 UTC and runs its first due step.
fn first_step(flow: &Workflow) -> (DateTime<Utc>, Outcome) {
    let start = utc("2026-11-23T08:00:00Z");
    let outcome = advance(
        flow,
        &enroll(flow, &lead(), start),
        &lead(),
        &Input::Due,
        start,
    );
    (start, outcome)
}

fn sent(outcome: &Outcome) -> Vec<&str> {
    outcome
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(email) => Some(email.template.as_str()),
            _ => None,
        })
        .collect()
}

/// Drives the enrollment by its due times until it ends or `limit` passes; returns every
/// (time, template) sent.
fn run_to_end(
    workflow: &Workflow,
    lead: &Lead,
    start: DateTime<Utc>,
    limit: DateTime<Utc>,
) -> (Vec<(DateTime<Utc>, String)>, Enrollment) {
    let mut enrollment = enroll(workflow, lead, start);
    let mut lead = lead.clone();
    let mut sends = Vec::new();
    while let Some(due) = enrollment.due.filter(|due| *due <= limit) {
        let outcome = advance(workflow, &enrollment, &lead, &Input::Due, due);
        for template in sent(&outcome) {
            sends.push((due, template.to_string()));
        }
        enrollment = outcome.enrollment;
        lead = outcome.lead;
    }
    (sends, enrollment)
}

#[test]
fn a_sequence_sends_at_the_right_times_and_completes() {
    let flow = workflow(
        "  step one { send \"a\" subject \"Hi\"; wait 2 days }\n  step two { send \"b\" subject \"Again\" }",
    );
    let (sends, enrollment) = run_to_end(
        &flow,
        &lead(),
        utc("2026-11-23T08:00:00Z"),
        utc("2027-01-01T00:00:00Z"),
    );
    assert_eq!(
        sends,
        vec![
            (utc("2026-11-23T08:00:00Z"), "a".to_string()),
            (utc("2026-11-25T08:00:00Z"), "b".to_string()),
        ]
    );
    assert_eq!(enrollment.status, Status::Completed);
    assert_eq!(enrollment.due, None);
}

#[test]
fn a_send_due_on_saturday_waits_for_the_window_and_says_so() {
    let flow = workflow(
        "  send on Mon-Fri between 09:00 and 17:30\n  step one { send \"a\" subject \"Hi\" }",
    );
    // Sat 2026-11-28 10:00 Berlin.
    let saturday = utc("2026-11-28T09:00:00Z");
    let enrollment = enroll(&flow, &lead(), saturday);
    let first = advance(&flow, &enrollment, &lead(), &Input::Due, saturday);
    assert!(sent(&first).is_empty());
    let monday = utc("2026-11-30T08:00:00Z");
    assert_eq!(first.enrollment.due, Some(monday));
    let second = advance(&flow, &first.enrollment, &lead(), &Input::Due, monday);
    let Some(Effect::Send(email)) = second.effects.first() else {
        panic!("{:?}", second.effects)
    };
    let shift = email.shifted.as_ref().expect("the shift is reported");
    assert_eq!((shift.from, shift.to), (saturday, monday));
    assert_eq!(shift.reason, "send window");
}

#[test]
fn branches_record_the_condition_and_the_values_seen() {
    let flow = workflow(
        "  step one {\n    if lead.score >= 20 { send \"a\" subject \"x\" } else { send \"b\" subject \"y\" }\n  }",
    );
    let start = utc("2026-11-23T08:00:00Z");
    let outcome = advance(
        &flow,
        &enroll(&flow, &lead(), start),
        &lead(),
        &Input::Due,
        start,
    );
    assert_eq!(sent(&outcome), vec!["b"]);
    let Some(Effect::Decision {
        condition,
        observed,
        result,
        ..
    }) = outcome.effects.first()
    else {
        panic!("{:?}", outcome.effects)
    };
    assert_eq!(condition, "lead.score >= 20");
    assert!(!result);
    assert_eq!(
        (observed[0].what.as_str(), observed[0].value.as_str()),
        ("lead.score", "12")
    );
}

#[test]
fn a_second_wake_up_for_the_same_slot_sends_nothing() {
    let flow = workflow("  step one { send \"a\" subject \"Hi\"; wait 1 day }");
    let (start, first) = first_step(&flow);
    assert_eq!(sent(&first), vec!["a"]);
    let again = advance(&flow, &first.enrollment, &first.lead, &Input::Due, start);
    assert!(again.effects.is_empty());
    assert_eq!(again.enrollment.position, first.enrollment.position);
}

#[test]
fn a_reply_promotes_to_contact_notifies_the_owner_and_exits_by_default() {
    let flow =
        workflow("  step one { send \"a\" subject \"Hi\"; wait 2 days; send \"b\" subject \"x\" }");
    let (start, first) = first_step(&flow);
    let reply = advance(&flow, &first.enrollment, &first.lead, &Input::Reply, start);
    assert_eq!(reply.lead.stage, Stage::Contact);
    assert!(
        reply
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Notify { to, .. } if to == "sales@example.test"))
    );
    assert_eq!(reply.enrollment.status, Status::Exited(ExitReason::Replied));
    assert_eq!(reply.enrollment.due, None);
    // Where it stood when the lead replied: `status` counts replies per step by it.
    assert_eq!(
        reply.enrollment.facts.replied_in.as_deref(),
        Some(first.enrollment.position.step.as_str())
    );
    // Nothing more is sent once it has exited.
    let later = advance(
        &flow,
        &reply.enrollment,
        &reply.lead,
        &Input::Due,
        utc("2026-12-01T00:00:00Z"),
    );
    assert!(later.effects.is_empty());
}

#[test]
fn an_auto_reply_continues_and_a_return_date_pauses() {
    let flow = workflow(
        "  on auto-reply { pause until return }\n  step one { send \"a\" subject \"Hi\"; wait 1 day; send \"b\" subject \"x\" }",
    );
    let (start, first) = first_step(&flow);
    let plain = advance(
        &flow,
        &first.enrollment,
        &first.lead,
        &Input::AutoReply { return_date: None },
        start,
    );
    assert_eq!(plain.enrollment.status, Status::Active);
    assert_eq!(plain.enrollment.due, first.enrollment.due);
    assert_eq!(plain.lead.stage, Stage::Lead);

    let away = advance(
        &flow,
        &first.enrollment,
        &first.lead,
        &Input::AutoReply {
            return_date: NaiveDate::from_ymd_opt(2026, 12, 7),
        },
        start,
    );
    // Back on Mon 2026-12-07, midnight in Berlin.
    assert_eq!(away.enrollment.due, Some(utc("2026-12-06T23:00:00Z")));
    assert_eq!(away.enrollment.status, Status::Active);
}

#[test]
fn a_permanent_bounce_always_exits_and_a_transient_one_does_not() {
    let flow = workflow(
        "  on bounce { tag \"bounced\" }\n  step one { send \"a\" subject \"Hi\"; wait 1 day }",
    );
    let (start, first) = first_step(&flow);
    let transient = advance(
        &flow,
        &first.enrollment,
        &first.lead,
        &Input::Bounce { permanent: false },
        start,
    );
    assert_eq!(transient.enrollment.status, Status::Active);
    let permanent = advance(
        &flow,
        &first.enrollment,
        &first.lead,
        &Input::Bounce { permanent: true },
        start,
    );
    assert_eq!(
        permanent.enrollment.status,
        Status::Exited(ExitReason::Bounced)
    );
    assert!(permanent.lead.tags.contains("bounced"));
}

#[test]
fn unsubscribe_ends_the_enrollment() {
    let flow = workflow("  step one { send \"a\" subject \"Hi\"; wait 1 day }");
    let (start, first) = first_step(&flow);
    let out = advance(
        &flow,
        &first.enrollment,
        &first.lead,
        &Input::Unsubscribe,
        start,
    );
    assert_eq!(
        out.enrollment.status,
        Status::Exited(ExitReason::Unsubscribed)
    );
}

#[test]
fn goto_with_a_wait_loops_and_actions_change_the_lead() {
    let flow = workflow(
        "  step one {\n    score +5\n    tag \"looped\"\n    if lead.score >= 30 { exit }\n    send \"a\" subject \"Hi\"\n    wait 1 day\n    goto one\n  }",
    );
    let (sends, enrollment) = run_to_end(
        &flow,
        &lead(),
        utc("2026-11-23T08:00:00Z"),
        utc("2027-01-01T00:00:00Z"),
    );
    // Score 12 → 17, 22, 27 send; 32 exits.
    assert_eq!(sends.len(), 3);
    assert_eq!(enrollment.status, Status::Exited(ExitReason::WorkflowExit));
}

#[test]
fn an_enrollment_in_a_removed_step_exits_with_that_reason() {
    let old = workflow(
        "  step one { send \"a\" subject \"Hi\"; wait 1 day }\n  step two { send \"b\" subject \"x\" }",
    );
    let new = workflow(
        "  step one { send \"a\" subject \"Hi\"; wait 1 day }\n  step three { send \"c\" subject \"x\" }",
    );
    let start = utc("2026-11-23T08:00:00Z");
    let first = advance(
        &old,
        &enroll(&old, &lead(), start),
        &lead(),
        &Input::Due,
        start,
    );
    let mut in_two = first.enrollment.clone();
    in_two.position.step = "two".into();
    in_two.position.pc = 0;
    let out = advance(
        &new,
        &in_two,
        &first.lead,
        &Input::Due,
        utc("2026-11-24T08:00:00Z"),
    );
    assert_eq!(
        out.enrollment.status,
        Status::Exited(ExitReason::StepRemoved("two".into()))
    );
    // A step that still exists continues under the new version.
    let continued = advance(
        &new,
        &first.enrollment,
        &first.lead,
        &Input::Due,
        utc("2026-11-24T08:00:00Z"),
    );
    assert_eq!(sent(&continued), vec!["c"]);
    assert_eq!(continued.enrollment.version, new.version);
}

/// Runs `flow` for the test lead until it has ended (before 2027).
fn finished(flow: &Workflow) -> (Enrollment, Lead) {
    let start = utc("2026-11-23T08:00:00Z");
    let mut enrollment = enroll(flow, &lead(), start);
    let mut lead = lead();
    while let Some(due) = enrollment.due {
        let outcome = advance(flow, &enrollment, &lead, &Input::Due, due);
        enrollment = outcome.enrollment;
        lead = outcome.lead;
    }
    (enrollment, lead)
}

// Regression: handlers ran only for active enrollments, and a sequence completes the moment its
// last email leaves, so a reply to the last email promoted nobody and told nobody.
#[test]
fn a_reply_to_the_last_email_of_a_completed_sequence_promotes_and_notifies() {
    let flow = workflow(
        "  step one { send \"a\" subject \"Hi\"; wait 2 days }\n  step two { send \"b\" subject \"Close?\" }",
    );
    let (done, lead) = finished(&flow);
    assert_eq!(done.status, Status::Completed);
    let at = utc("2026-11-26T10:00:00Z");
    let reply = advance(&flow, &done, &lead, &Input::Reply, at);
    assert_eq!(reply.lead.stage, Stage::Contact);
    assert!(
        reply
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Notify { to, .. } if to == "sales@example.test")),
        "{:?}",
        reply.effects
    );
    assert!(reply.effects.contains(&Effect::Received {
        what: "reply".into()
    }));
    // Still completed (the default handler's `exit` does not turn it into "exited"), nothing
    // due, nothing sent.
    assert_eq!(reply.enrollment.status, Status::Completed);
    assert_eq!(reply.enrollment.due, None);
    assert!(sent(&reply).is_empty());
    assert!(reply.enrollment.facts.replied);
}

#[test]
fn a_finished_enrollment_runs_only_the_actions_that_neither_send_nor_move() {
    let flow = workflow(
        "  on reply { tag \"late-reply\"; score +5; set lead.plan to \"pro\"; promote to contact; notify owner; goto one }\n  on auto-reply { tag \"away\"; pause until return }\n  step one { send \"a\" subject \"Hi\"; wait 1 day }\n  step two { send \"b\" subject \"x\" }",
    );
    let (mut exited, lead) = finished(&flow);
    exited.status = Status::Exited(ExitReason::Manual);
    let at = utc("2026-12-01T10:00:00Z");
    let reply = advance(&flow, &exited, &lead, &Input::Reply, at);
    assert!(reply.lead.tags.contains("late-reply"));
    assert_eq!(reply.lead.score, lead.score + 5);
    assert_eq!(reply.lead.stage, Stage::Contact);
    assert!(matches!(
        reply.lead.field("plan"),
        Some(nurture::lead::Value::Text(plan)) if plan == "pro"
    ));
    // `goto one` does not resume it: no send, no wake-up, same place, same status.
    assert!(sent(&reply).is_empty());
    assert_eq!(reply.enrollment.status, Status::Exited(ExitReason::Manual));
    assert_eq!(reply.enrollment.due, None);
    assert_eq!(reply.enrollment.position, exited.position);

    // An out-of-office after the end is received and tagged; its pause changes nothing.
    let away = advance(
        &flow,
        &reply.enrollment,
        &reply.lead,
        &Input::AutoReply {
            return_date: NaiveDate::from_ymd_opt(2026, 12, 20),
        },
        at,
    );
    assert!(away.lead.tags.contains("away"));
    assert_eq!(away.enrollment.due, None);
    assert!(
        !away
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Paused { .. } | Effect::Waiting { .. }))
    );
    // A wake-up for a finished enrollment does nothing at all.
    let due = advance(&flow, &away.enrollment, &away.lead, &Input::Due, at);
    assert!(due.effects.is_empty());
    assert_eq!(due.enrollment, away.enrollment);
}

#[test]
fn a_permanent_bounce_after_completion_is_received_and_leaves_it_completed() {
    let flow = workflow("  step one { send \"a\" subject \"Hi\" }");
    let (done, lead) = finished(&flow);
    let bounce = advance(
        &flow,
        &done,
        &lead,
        &Input::Bounce { permanent: true },
        utc("2026-11-24T08:00:00Z"),
    );
    assert_eq!(
        bounce.effects,
        vec![Effect::Received {
            what: "permanent bounce".into()
        }]
    );
    assert_eq!(bounce.enrollment.status, Status::Completed);
}

/// The test lead, promoted to customer (as `nurture leads promote` does).
fn customer() -> Lead {
    let mut lead = lead();
    lead.promote(Stage::Customer);
    lead
}

#[test]
fn the_goal_is_checked_before_every_step() {
    let flow = workflow(
        "  exit when lead.stage is \"customer\"\n  step one { send \"a\" subject \"Hi\"; wait 2 days }\n  step two { send \"b\" subject \"x\" }",
    );
    let (_, first) = first_step(&flow);
    assert_eq!(sent(&first), vec!["a"]);
    // Promoted to customer while waiting: the next wake-up sends nothing and says why.
    let due = first.enrollment.due.unwrap();
    let next = advance(&flow, &first.enrollment, &customer(), &Input::Due, due);
    assert!(sent(&next).is_empty());
    let reason = ExitReason::GoalReached("lead.stage is \"customer\"".into());
    assert_eq!(next.enrollment.status, Status::Exited(reason.clone()));
    assert_eq!(
        next.effects,
        vec![Effect::Exited {
            reason: reason.clone()
        }]
    );
    assert_eq!(
        reason.to_string(),
        "goal reached: lead.stage is \"customer\""
    );
    // Not a customer: the sequence goes on.
    let on = advance(&flow, &first.enrollment, &first.lead, &Input::Due, due);
    assert_eq!(sent(&on), vec!["b"]);
}

#[test]
fn a_lead_changed_elsewhere_leaves_when_it_meets_the_goal() {
    let flow = workflow(
        "  exit when lead.tags has \"booked\" or lead.stage is \"customer\"\n  step one { send \"a\" subject \"Hi\"; wait 2 days; send \"b\" subject \"x\" }",
    );
    let (start, first) = first_step(&flow);
    let unchanged = advance(
        &flow,
        &first.enrollment,
        &first.lead,
        &Input::LeadChanged,
        start,
    );
    assert!(unchanged.effects.is_empty());
    assert_eq!(unchanged.enrollment.status, Status::Active);
    let mut booked = first.lead.clone();
    booked.tags.insert("booked".into());
    let out = advance(
        &flow,
        &first.enrollment,
        &booked,
        &Input::LeadChanged,
        start,
    );
    assert_eq!(
        out.enrollment.status,
        Status::Exited(ExitReason::GoalReached(
            "lead.tags has \"booked\" or lead.stage is \"customer\"".into()
        ))
    );
    assert_eq!(out.enrollment.due, None);
}

#[test]
fn a_goal_met_by_a_handler_or_a_step_ends_the_enrollment_at_once() {
    let flow = workflow(
        "  exit when lead.stage is \"contact\"\n  on reply { promote to contact; notify owner }\n  step one { send \"a\" subject \"Hi\"; wait 2 days }\n  step two { send \"b\" subject \"x\" }",
    );
    let (start, first) = first_step(&flow);
    let reply = advance(&flow, &first.enrollment, &first.lead, &Input::Reply, start);
    assert_eq!(
        reply.enrollment.status,
        Status::Exited(ExitReason::GoalReached("lead.stage is \"contact\"".into()))
    );

    // A step's statements run together (its send goes), then the goal ends it.
    let flow = workflow(
        "  exit when lead.tags has \"vip\"\n  step one { tag \"vip\"; send \"a\" subject \"Hi\"; wait 2 days }\n  step two { send \"b\" subject \"x\" }",
    );
    let (_, first) = first_step(&flow);
    assert_eq!(sent(&first), vec!["a"]);
    assert!(matches!(
        first.enrollment.status,
        Status::Exited(ExitReason::GoalReached(_))
    ));
}

// Regression: "back on 31.12.9999" paused a lead for good.
#[test]
fn a_return_date_far_away_pauses_for_90_days_at_most_and_says_so() {
    let flow = workflow(
        "  on auto-reply { pause until return }\n  step one { send \"a\" subject \"Hi\"; wait 1 day; send \"b\" subject \"x\" }",
    );
    let (start, first) = first_step(&flow);
    let away = advance(
        &flow,
        &first.enrollment,
        &first.lead,
        &Input::AutoReply {
            return_date: NaiveDate::from_ymd_opt(9999, 12, 31),
        },
        start,
    );
    let cap = start + chrono::Duration::days(90);
    assert_eq!(away.enrollment.due, Some(cap));
    assert!(
        away.effects.contains(&Effect::Paused {
            until: cap,
            reason: "out of office until 9999-12-31: paused for 90 days at most".into(),
        }),
        "{:?}",
        away.effects
    );
    let back = advance(&flow, &away.enrollment, &away.lead, &Input::Due, cap);
    assert_eq!(sent(&back), vec!["b"]);
}

#[test]
fn goals_are_checked_by_the_compiler() {
    let templates: BTreeSet<String> = ["a".to_string()].into();
    let compile = |header: &str| {
        let source = format!(
            "workflow \"g\" {{\n  from \"a@example.test\"\n{header}\n  step one {{ send \"a\" subject \"s\" }}\n}}\n"
        );
        dsl::compile(Path::new("g.flow"), &source, &templates)
    };
    let good = compile("  exit when sent \"a\" and lead.stage is \"customer\"");
    let goal = good.workflow.expect("compiles").goal.expect("a goal");
    assert_eq!(goal.text, "sent \"a\" and lead.stage is \"customer\"");

    let messages = |header: &str| -> Vec<String> {
        compile(header)
            .diagnostics
            .iter()
            .map(|d| d.message.clone())
            .collect()
    };
    assert_eq!(
        messages("  exit when sent \"b\""),
        vec!["no template named `b`"]
    );
    assert_eq!(
        messages("  exit when lead.stage is \"customer\"\n  exit when replied"),
        vec!["`exit when` is set twice"]
    );
    assert_eq!(
        messages("  exit when lead.sorce is \"x\""),
        vec!["unknown field `sorce`"]
    );
}

#[test]
fn a_workflow_promotes_forward_only_and_says_so() {
    let flow = workflow(
        "  step one { promote to customer; promote to contact; send \"a\" subject \"x\" }",
    );
    let (_, outcome) = first_step(&flow);
    let promoted: Vec<&Effect> = outcome
        .effects
        .iter()
        .filter(|effect| matches!(effect, Effect::Promoted { .. }))
        .collect();
    // The journal records `Promoted` effects; the second promotion would be a demotion.
    assert_eq!(
        promoted,
        vec![&Effect::Promoted {
            stage: Stage::Customer
        }]
    );
    assert_eq!(outcome.lead.stage, Stage::Customer);
}

/// Editing the inside of a step that enrollments stand in: the place is found again from what
/// they did there, never from a raw instruction index (which repeated or skipped emails).
mod edits_inside_a_step {
    use super::*;

    /// Runs `old` up to its first wait, then drives the enrollment under `new` to the end;
    /// returns the emails sent under `new`, when, and the lead's score at the end.
    fn edited(old: &str, new: &str) -> (Vec<(DateTime<Utc>, String)>, i64, Enrollment) {
        edited_after(1, old, new)
    }

    /// The same, after `advances` due times under `old`.
    fn edited_after(
        advances: usize,
        old: &str,
        new: &str,
    ) -> (Vec<(DateTime<Utc>, String)>, i64, Enrollment) {
        let (old, new) = (workflow(old), workflow(new));
        let (_, first) = first_step(&old);
        assert_eq!(sent(&first), vec!["a"]);
        let mut enrollment = first.enrollment;
        let mut lead = first.lead;
        for _ in 1..advances {
            let due = enrollment.due.expect("still running under the old version");
            let outcome = advance(&old, &enrollment, &lead, &Input::Due, due);
            enrollment = outcome.enrollment;
            lead = outcome.lead;
        }
        let mut sends = Vec::new();
        while let Some(due) = enrollment.due {
            let outcome = advance(&new, &enrollment, &lead, &Input::Due, due);
            for template in sent(&outcome) {
                sends.push((due, template.to_string()));
            }
            enrollment = outcome.enrollment;
            lead = outcome.lead;
        }
        (sends, lead.score, enrollment)
    }

    #[test]
    fn a_send_added_before_the_place_is_not_sent_and_the_last_one_not_repeated() {
        // Old: `a` then wait (index 2 is `send "b"`). New: two instructions in front, so index 2
        // was `send "a"` again.
        let (sends, _, enrollment) = edited(
            "  step one { send \"a\" subject \"x\"; wait 2 days; send \"b\" subject \"x\" }",
            "  step one {\n    if lead.score > 100 { send \"c\" subject \"x\" }\n    send \"a\" subject \"x\"; wait 2 days; send \"b\" subject \"x\" }",
        );
        assert_eq!(sends, vec![(utc("2026-11-25T08:00:00Z"), "b".to_string())]);
        assert_eq!(enrollment.status, Status::Completed);
    }

    #[test]
    fn an_instruction_removed_before_the_place_does_not_skip_the_next_send() {
        // Old index 3 (after the wait) is `send "b"`; without the `tag` it was the second wait,
        // so `b` was skipped.
        let (sends, _, _) = edited(
            "  step one { tag \"t\"; send \"a\" subject \"x\"; wait 1 day; send \"b\" subject \"x\"; wait 1 day; send \"c\" subject \"x\" }",
            "  step one { send \"a\" subject \"x\"; wait 1 day; send \"b\" subject \"x\"; wait 1 day; send \"c\" subject \"x\" }",
        );
        assert_eq!(
            sends,
            vec![
                (utc("2026-11-24T08:00:00Z"), "b".to_string()),
                (utc("2026-11-25T08:00:00Z"), "c".to_string()),
            ]
        );
    }

    #[test]
    fn a_wait_already_waited_counts_and_actions_are_not_done_twice() {
        // The wait grew from 1 to 3 days and a branch was added: the lead (score 12, so it got
        // `b`) continues after `b` at its due time, without waiting again; `score +10` stays one
        // change, and the new `score +1` after the wait is done.
        let (sends, score, _) = edited_after(
            2,
            "  step one { send \"a\" subject \"x\"; wait 1 day }\n  step nudge {\n    if lead.score >= 50 { send \"c\" subject \"x\" } else { send \"b\" subject \"x\" }\n    score +10\n    wait 1 day\n    send \"c\" subject \"x\"\n  }",
            "  step one { send \"a\" subject \"x\"; wait 1 day }\n  step nudge {\n    if lead.score >= 99 { send \"c\" subject \"x\" } else if lead.score >= 50 { send \"d\" subject \"x\" } else { send \"b\" subject \"x\" }\n    score +10\n    wait 3 days\n    score +1\n    send \"c\" subject \"x\"\n  }",
        );
        assert_eq!(sends, vec![(utc("2026-11-25T08:00:00Z"), "c".to_string())]);
        assert_eq!(score, 23);
    }

    #[test]
    fn an_enrollment_inside_the_edited_step_continues_after_its_last_send() {
        let old = workflow(
            "  step one { send \"a\" subject \"x\"; wait 1 day }\n  step nudge {\n    if lead.score >= 50 { send \"c\" subject \"x\" } else { send \"b\" subject \"x\" }\n    score +10\n    wait 1 day\n    send \"c\" subject \"x\"\n  }",
        );
        let new = workflow(
            "  step one { send \"a\" subject \"x\"; wait 1 day }\n  step nudge {\n    tag \"new\"\n    if lead.score >= 50 { send \"c\" subject \"x\" } else { send \"b\" subject \"x\" }\n    score +10\n    wait 2 days\n    send \"c\" subject \"x\"\n  }",
        );
        let (_, first) = first_step(&old);
        let due = first.enrollment.due.unwrap();
        let second = advance(&old, &first.enrollment, &first.lead, &Input::Due, due);
        assert_eq!(sent(&second), vec!["b"]);
        assert_eq!(second.lead.score, 22);
        // Under the new version at its due time: no `tag "new"` (it is past it), no second
        // `score +10`, no second `b`: just `c`.
        let due = second.enrollment.due.unwrap();
        let third = advance(&new, &second.enrollment, &second.lead, &Input::Due, due);
        assert_eq!(sent(&third), vec!["c"]);
        assert_eq!(third.lead.score, 22);
        assert!(third.lead.tags.is_empty());
        assert_eq!(third.enrollment.status, Status::Completed);
    }

    #[test]
    fn when_the_last_email_is_gone_from_the_step_it_goes_on_to_the_next_step() {
        let (sends, _, enrollment) = edited(
            "  step one { send \"a\" subject \"x\"; wait 1 day; send \"b\" subject \"x\" }\n  step two { send \"c\" subject \"x\" }",
            "  step one { send \"d\" subject \"x\"; wait 1 day; send \"b\" subject \"x\" }\n  step two { send \"c\" subject \"x\" }",
        );
        assert_eq!(sends, vec![(utc("2026-11-24T08:00:00Z"), "c".to_string())]);
        assert_eq!(enrollment.status, Status::Completed);
    }

    #[test]
    fn an_enrollment_held_at_a_send_by_the_window_replays_up_to_that_send() {
        let window = "  send on Mon-Fri between 09:00 and 17:30\n";
        let old = workflow(&format!(
            "{window}  step one {{ send \"a\" subject \"x\"; wait 1 day; score +5; send \"b\" subject \"x\" }}"
        ));
        let new = workflow(&format!(
            "{window}  step one {{ send \"a\" subject \"x\"; wait 2 days; score +5; send \"b\" subject \"x\" }}"
        ));
        // Fri 09:00 Berlin: `a`; Saturday: `score +5`, then `b` is held until Monday 09:00.
        let friday = utc("2026-11-27T08:00:00Z");
        let first = advance(
            &old,
            &enroll(&old, &lead(), friday),
            &lead(),
            &Input::Due,
            friday,
        );
        let saturday = first.enrollment.due.unwrap();
        let held = advance(&old, &first.enrollment, &first.lead, &Input::Due, saturday);
        assert!(sent(&held).is_empty());
        assert_eq!(held.lead.score, 17);
        let monday = held.enrollment.due.unwrap();
        assert_eq!(monday, utc("2026-11-30T08:00:00Z"));
        let out = advance(&new, &held.enrollment, &held.lead, &Input::Due, monday);
        assert_eq!(sent(&out), vec!["b"]);
        assert_eq!(out.lead.score, 17, "`score +5` is not done twice");
    }

    #[test]
    fn a_reworded_subject_moves_nobody() {
        let old = workflow(
            "  step one { send \"a\" subject \"x\"; wait 1 day; score +1; send \"b\" subject \"x\" }",
        );
        let new = workflow(
            "  step one { send \"a\" subject \"Hello {{first_name}}\"; wait 1 day; score +1; send \"b\" subject \"y\" }",
        );
        assert_eq!(old.steps[0].shape, new.steps[0].shape);
        assert_ne!(old.version, new.version);
    }
}

mod simulation {
    use super::*;
    use chrono::Duration;
    use nurture::engine::simulate::{Ending, Scenario, Trigger, simulate};

    fn flow() -> Workflow {
        workflow(
            "  step one { send \"a\" subject \"Hi\"; wait 2 days }\n  step two { send \"b\" subject \"x\"; wait 2 days }\n  step three { send \"c\" subject \"y\" }",
        )
    }

    fn templates_sent(timeline: &nurture::engine::simulate::Timeline) -> Vec<String> {
        timeline
            .events
            .iter()
            .filter_map(|e| match &e.effect {
                Effect::Send(email) => Some(email.template.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn without_a_scenario_the_sequence_completes() {
        let start = utc("2026-11-23T08:00:00Z");
        let timeline = simulate(
            &flow(),
            &lead(),
            start,
            start + Duration::days(30),
            &Scenario::default(),
        );
        assert_eq!(templates_sent(&timeline), vec!["a", "b", "c"]);
        assert_eq!(
            timeline.ending,
            Ending::Completed {
                at: utc("2026-11-27T08:00:00Z")
            }
        );
    }

    #[test]
    fn a_reply_after_a_step_stops_the_sequence_and_promotes() {
        let start = utc("2026-11-23T08:00:00Z");
        let scenario = Scenario {
            reply: Some(Trigger::AfterStep("two".into())),
            ..Scenario::default()
        };
        let timeline = simulate(
            &flow(),
            &lead(),
            start,
            start + Duration::days(30),
            &scenario,
        );
        assert_eq!(templates_sent(&timeline), vec!["a", "b"]);
        // One hour after step two's email, on Wed 2026-11-25 09:00 UTC.
        assert_eq!(
            timeline.ending,
            Ending::Exited {
                at: utc("2026-11-25T09:00:00Z"),
                reason: ExitReason::Replied
            }
        );
        assert_eq!(timeline.final_lead.stage, Stage::Contact);
    }

    #[test]
    fn a_reply_after_the_last_email_still_promotes() {
        let start = utc("2026-11-23T08:00:00Z");
        let scenario = Scenario {
            reply: Some(Trigger::AfterStep("three".into())),
            ..Scenario::default()
        };
        let timeline = simulate(
            &flow(),
            &lead(),
            start,
            start + Duration::days(30),
            &scenario,
        );
        assert_eq!(templates_sent(&timeline), vec!["a", "b", "c"]);
        assert_eq!(
            timeline.ending,
            Ending::Completed {
                at: utc("2026-11-27T08:00:00Z")
            }
        );
        assert_eq!(timeline.final_lead.stage, Stage::Contact);
        let last = timeline.events.last().expect("events");
        assert_eq!(last.at, utc("2026-11-27T09:00:00Z"));
        assert!(matches!(last.effect, Effect::Notify { .. }));
    }

    #[test]
    fn a_bounce_after_a_duration_ends_it() {
        let start = utc("2026-11-23T08:00:00Z");
        let scenario = Scenario {
            bounce: Some(Trigger::After(Duration::hours(1))),
            ..Scenario::default()
        };
        let timeline = simulate(
            &flow(),
            &lead(),
            start,
            start + Duration::days(30),
            &scenario,
        );
        assert_eq!(templates_sent(&timeline), vec!["a"]);
        assert!(matches!(
            timeline.ending,
            Ending::Exited {
                reason: ExitReason::Bounced,
                ..
            }
        ));
    }

    #[test]
    fn the_preview_stops_at_until_and_says_what_is_next() {
        let start = utc("2026-11-23T08:00:00Z");
        let timeline = simulate(
            &flow(),
            &lead(),
            start,
            start + Duration::days(1),
            &Scenario::default(),
        );
        assert_eq!(templates_sent(&timeline), vec!["a"]);
        assert_eq!(
            timeline.ending,
            Ending::Active {
                next_due: Some(utc("2026-11-25T08:00:00Z"))
            }
        );
    }
}
