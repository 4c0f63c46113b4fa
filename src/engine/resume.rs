//! Where an enrollment continues when the instructions of the step it stands in have changed.
//!
//! A position's `pc` indexes the step's code as it was when it was recorded. After an edit the
//! same index may point at other instructions, and continuing there could send an email twice
//! or skip one. So when the step's `shape` differs, the place is found again from what the
//! enrollment did in the step, which any version of the step can be asked about:
//!
//! - nothing done in the step yet (it stands at its start): the new step runs from its start;
//! - emails sent in the step: it continues right after the `send` of the template it got last
//!   (the n-th `send` of that template, when it got it n times in this step);
//! - no email yet, but past a `wait` (or held at a `send` by the send window): it continues from
//!   the step's start;
//! - the template it got last is no longer in the step: the rest of the step is left out (an
//!   email is never sent twice) and it goes on to the next step.
//!
//! In the two "continues" cases the enrollment first *replays* up to where it stood: nothing it
//! already did is done again (`set`, `tag`, `score`, `promote`, `notify` are passed over) and the
//! `wait`s it already waited out count as waited; conditions are asked again. The replay ends at
//! the next `send`, or once those waits are passed (an enrollment held at a `send` by the send
//! window replays up to the next `send`).

use crate::workflow::{Instr, Step};

use super::state::Position;

/// Where an enrollment whose step changed continues in the new code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// At the start of the step, as an enrollment that just entered it.
    Start,
    /// At `pc`, replaying: actions are passed over and the first `waits` waits count as waited,
    /// until the next `send` (or, unless it was held at a send, until those waits are passed).
    Replay {
        pc: usize,
        waits: u32,
        /// The template of the `send` it continues after; `None`: from the step's start.
        after: Option<String>,
    },
    /// The template it got last (`missing`) is no longer in the step: on to the next step.
    NextStep { missing: String },
}

/// Whether `position` was recorded against other instructions than `step` has now. A position
/// that recorded no shape (stored by an earlier nurture) is taken as it is.
pub fn changed(step: &Step, position: &Position) -> bool {
    position
        .shape
        .as_ref()
        .is_some_and(|shape| *shape != step.shape)
}

/// Where an enrollment standing at `position` continues in `step`'s code.
pub fn resume(step: &Step, position: &Position) -> Resume {
    let Some(last) = position.sent.last() else {
        if position.pc == 0 && position.waited == 0 {
            return Resume::Start;
        }
        return Resume::Replay {
            pc: 0,
            waits: position.waited,
            after: None,
        };
    };
    let times = position.sent.iter().filter(|sent| *sent == last).count();
    let found = step
        .code
        .iter()
        .enumerate()
        .filter(|(_, instr)| matches!(instr, Instr::Send(send) if send.template == *last))
        .nth(times - 1);
    match found {
        Some((at, _)) => Resume::Replay {
            pc: at + 1,
            waits: position.waited,
            after: Some(last.clone()),
        },
        None => Resume::NextStep {
            missing: last.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_stored_before_shapes_keeps_its_index() {
        // What nurture stored before positions recorded a shape: taken as it is.
        let position: Position = serde_json::from_str(r#"{"step":"nudge","pc":3}"#).unwrap();
        assert_eq!(position, Position::new("nudge", 3));
        let step = Step {
            name: "nudge".into(),
            code: Vec::new(),
            shape: "0123456789abcdef".into(),
            span: 0..0,
        };
        assert!(!changed(&step, &position));
        // And a fresh one is written without the empty parts.
        let start = Position::start(&step);
        assert_eq!(
            serde_json::to_string(&start).unwrap(),
            r#"{"step":"nudge","pc":0,"shape":"0123456789abcdef"}"#
        );
    }
}
