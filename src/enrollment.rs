//! Which leads enter which workflows, and when.
//!
//! The rules, in order:
//! - a suppressed lead is never enrolled;
//! - nor is a lead that already meets the workflow's goal (`exit when …`);
//! - a lead is in a workflow at most once at a time; once its enrollment has ended it enters
//!   again only if the workflow says `allow re-entry`;
//! - a workflow with `enroll when …` and no `every` takes a lead when the lead is created or
//!   changed and matches;
//! - a recurring workflow (`every "…"`) takes its matching segment at each cron slot instead;
//! - `nurture enroll` by hand skips the condition but not the rules above.

use chrono::{DateTime, Utc};

use crate::engine::{self, Enrollment, condition};
use crate::lead::Lead;
use crate::store::{Batch, EventKind};
use crate::workflow::Workflow;

/// What prompted the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The lead was created or its data changed.
    Changed,
    /// A recurring workflow's cron slot came.
    Slot,
    /// `nurture enroll` by hand.
    Manual,
}

/// Whether to enroll, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Enroll,
    Skip(&'static str),
}

pub fn decide(
    workflow: &Workflow,
    lead: &Lead,
    existing: Option<&Enrollment>,
    trigger: Trigger,
    now: DateTime<Utc>,
) -> Decision {
    if lead.is_suppressed() {
        return Decision::Skip("the address is suppressed");
    }
    match existing {
        Some(enrollment) if enrollment.is_active() => {
            return Decision::Skip("already enrolled");
        }
        Some(_) if !workflow.reentry => {
            return Decision::Skip("already went through it, and it does not allow re-entry");
        }
        _ => {}
    }
    if engine::goal_reached(workflow, lead, &engine::Facts::default(), now) {
        return Decision::Skip("already reached the workflow's goal (`exit when`)");
    }
    let condition = match (trigger, &workflow.enroll, &workflow.every) {
        (Trigger::Manual, _, _) => return Decision::Enroll,
        (Trigger::Changed, _, Some(_)) => {
            return Decision::Skip("a recurring workflow enrolls at its slots");
        }
        (Trigger::Slot, _, None) => return Decision::Skip("not a recurring workflow"),
        (_, None, None) => return Decision::Skip("it enrolls by hand only"),
        (_, None, Some(_)) => return Decision::Enroll,
        (_, Some(condition), _) => condition,
    };
    let facts = engine::Facts::default();
    let clock = engine::clock(workflow, lead, now);
    if condition::evaluate(condition, lead, &facts, clock, &mut Vec::new()) {
        Decision::Enroll
    } else {
        Decision::Skip("does not match `enroll when`")
    }
}

/// Adds `lead`'s new enrollment in `workflow`, due now, and its journal line to `batch`.
pub fn enroll_into(batch: &mut Batch, workflow: &Workflow, lead: &Lead, now: DateTime<Utc>) {
    batch.enrollments.push(engine::enroll(workflow, lead, now));
    batch.event(&lead.email, now, Some(&workflow.name), EventKind::Enrolled);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsl;
    use crate::engine::{ExitReason, Status};
    use crate::lead::{Suppression, SuppressionReason};
    use chrono::TimeZone;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn workflow(header: &str) -> Workflow {
        let source = format!(
            "workflow \"w\" {{\n  {header}\n  from \"a@example.test\"\n  step one {{ send \"t\" subject \"s\" }}\n}}\n"
        );
        let templates: BTreeSet<String> = ["t".to_string()].into();
        let compiled = dsl::compile(Path::new("w.flow"), &source, &templates);
        compiled
            .workflow
            .unwrap_or_else(|| panic!("{:?}", compiled.diagnostics))
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
    }

    fn lead(source: &str) -> Lead {
        let mut lead = Lead::new("ana@example.com".into(), now());
        lead.source = Some(source.into());
        lead
    }

    #[test]
    fn a_matching_changed_lead_enters_once() {
        let flow = workflow("enroll when lead.source is \"web\"");
        assert_eq!(
            decide(&flow, &lead("web"), None, Trigger::Changed, now()),
            Decision::Enroll
        );
        assert!(matches!(
            decide(&flow, &lead("event"), None, Trigger::Changed, now()),
            Decision::Skip(_)
        ));
        let now = Utc::now();
        let mut enrolled = engine::enroll(&flow, &lead("web"), now);
        assert_eq!(
            decide(&flow, &lead("web"), Some(&enrolled), Trigger::Changed, now),
            Decision::Skip("already enrolled")
        );
        enrolled.status = Status::Completed;
        assert!(matches!(
            decide(&flow, &lead("web"), Some(&enrolled), Trigger::Changed, now),
            Decision::Skip(_)
        ));
        let reentry = workflow("enroll when lead.source is \"web\"\n  allow re-entry");
        assert_eq!(
            decide(
                &reentry,
                &lead("web"),
                Some(&enrolled),
                Trigger::Changed,
                now
            ),
            Decision::Enroll
        );
    }

    #[test]
    fn a_lead_that_already_meets_the_goal_is_not_enrolled_not_even_by_hand() {
        let flow =
            workflow("enroll when lead.source is \"web\"\n  exit when lead.stage is \"customer\"");
        let mut customer = lead("web");
        customer.promote(crate::lead::Stage::Customer);
        for trigger in [Trigger::Changed, Trigger::Manual] {
            assert_eq!(
                decide(&flow, &customer, None, trigger, now()),
                Decision::Skip("already reached the workflow's goal (`exit when`)")
            );
        }
        assert_eq!(
            decide(&flow, &lead("web"), None, Trigger::Changed, now()),
            Decision::Enroll
        );
    }

    #[test]
    fn suppressed_leads_are_never_enrolled_not_even_by_hand() {
        let flow = workflow("enroll when lead.source is \"web\"");
        let mut suppressed = lead("web");
        suppressed.suppression = Some(Suppression {
            reason: SuppressionReason::Bounced,
            detail: "5.1.1".into(),
            at: Utc::now(),
        });
        for trigger in [Trigger::Changed, Trigger::Manual] {
            assert_eq!(
                decide(&flow, &suppressed, None, trigger, now()),
                Decision::Skip("the address is suppressed")
            );
        }
    }

    #[test]
    fn recurring_workflows_enroll_at_slots_and_manual_ones_by_hand() {
        let recurring = workflow("every \"0 9 * * MON\"\n  enroll when lead.source is \"web\"");
        assert!(matches!(
            decide(&recurring, &lead("web"), None, Trigger::Changed, now()),
            Decision::Skip(_)
        ));
        assert_eq!(
            decide(&recurring, &lead("web"), None, Trigger::Slot, now()),
            Decision::Enroll
        );
        assert!(matches!(
            decide(&recurring, &lead("x"), None, Trigger::Slot, now()),
            Decision::Skip(_)
        ));

        let by_hand = workflow("");
        assert!(matches!(
            decide(&by_hand, &lead("web"), None, Trigger::Changed, now()),
            Decision::Skip(_)
        ));
        let mut exited = engine::enroll(&by_hand, &lead("web"), Utc::now());
        exited.status = Status::Exited(ExitReason::Manual);
        assert!(matches!(
            decide(
                &by_hand,
                &lead("web"),
                Some(&exited),
                Trigger::Manual,
                now()
            ),
            Decision::Skip(_)
        ));
        assert_eq!(
            decide(&by_hand, &lead("web"), None, Trigger::Manual, now()),
            Decision::Enroll
        );
    }
}
