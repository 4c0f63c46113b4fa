//! Key encodings of the store's trees.
//!
//! Keys are byte strings that sort the way the store needs to scan them: times are big-endian
//! with the sign bit flipped, so a range scan of the `due` tree walks enrollments in due order,
//! and composite keys join their parts with a NUL byte, which neither a workflow name nor an
//! email address can contain.
//!
//! Every key that names a lead names it by [`email_key`] (the address folded to lower case), so
//! `Dana.Scully@…` and `dana.scully@…` reach the same lead, enrollments and journal whichever
//! spelling a caller has. The email part read back from a key ([`split`], [`lead_of`]) is that
//! folded form, good for looking the lead up; its spelling for people and for sending is the
//! lead's own `email`.

use chrono::{DateTime, TimeZone, Utc};

use crate::lead::email_key;

const SEPARATOR: u8 = 0;

/// Milliseconds since the epoch, as 8 bytes that sort in time order (negative times included).
pub fn time_bytes(at: DateTime<Utc>) -> [u8; 8] {
    ((at.timestamp_millis() as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`time_bytes`]; `None` for fewer than 8 bytes.
pub fn time_from_bytes(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let array: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let millis = (u64::from_be_bytes(array) ^ (1 << 63)) as i64;
    Utc.timestamp_millis_opt(millis).single()
}

/// `email`: one lead (in `leads` and `changed`).
pub fn lead(email: &str) -> Vec<u8> {
    email_key(email).as_bytes().to_vec()
}

/// `workflow ‖ 0 ‖ email`: one enrollment.
pub fn enrollment(workflow: &str, email: &str) -> Vec<u8> {
    join(workflow.as_bytes(), email_key(email).as_bytes())
}

/// `email ‖ 0 ‖ workflow`: the per-lead index of enrollments.
pub fn lead_enrollment(email: &str, workflow: &str) -> Vec<u8> {
    join(email_key(email).as_bytes(), workflow.as_bytes())
}

/// The prefix of every key of one lead in a tree keyed `email ‖ 0 ‖ …`.
pub fn lead_prefix(email: &str) -> Vec<u8> {
    let email = email_key(email);
    let mut key = Vec::with_capacity(email.len() + 1);
    key.extend_from_slice(email.as_bytes());
    key.push(SEPARATOR);
    key
}

/// `(first, second)` of a key made by [`join`].
pub fn split(key: &[u8]) -> Option<(&str, &str)> {
    let at = key.iter().position(|b| *b == SEPARATOR)?;
    let first = std::str::from_utf8(&key[..at]).ok()?;
    let second = std::str::from_utf8(&key[at + 1..]).ok()?;
    Some((first, second))
}

/// The email of a key made by [`lead_prefix`] and a binary suffix ([`event`]): only the part
/// before the separator is text.
pub fn lead_of(key: &[u8]) -> &str {
    let end = key
        .iter()
        .position(|b| *b == SEPARATOR)
        .unwrap_or(key.len());
    std::str::from_utf8(&key[..end]).unwrap_or("")
}

/// `due time ‖ enrollment key`.
pub fn due(at: DateTime<Utc>, enrollment_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + enrollment_key.len());
    key.extend_from_slice(&time_bytes(at));
    key.extend_from_slice(enrollment_key);
    key
}

/// `email ‖ 0 ‖ sequence`: a lead's journal, in the order it was written.
pub fn event(email: &str, sequence: u64) -> Vec<u8> {
    let mut key = lead_prefix(email);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// `not before ‖ Message-ID`: the outbox, in the order emails may leave.
pub fn outbox(not_before: DateTime<Utc>, message_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + message_id.len());
    key.extend_from_slice(&time_bytes(not_before));
    key.extend_from_slice(message_id.as_bytes());
    key
}

/// `next attempt ‖ webhook-id`: the webhook queue, in the order deliveries are due.
pub fn webhook(next_attempt: DateTime<Utc>, id: &str) -> Vec<u8> {
    outbox(next_attempt, id)
}

fn join(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(first.len() + 1 + second.len());
    key.extend_from_slice(first);
    key.push(SEPARATOR);
    key.extend_from_slice(second);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn times_sort_in_order_across_the_epoch() {
        let epoch = Utc.timestamp_millis_opt(0).unwrap();
        let times = [
            epoch - Duration::days(400),
            epoch - Duration::milliseconds(1),
            epoch,
            epoch + Duration::milliseconds(1),
            Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap(),
        ];
        let encoded: Vec<[u8; 8]> = times.iter().map(|t| time_bytes(*t)).collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]));
        for (time, bytes) in times.iter().zip(&encoded) {
            assert_eq!(time_from_bytes(bytes), Some(*time));
        }
    }

    #[test]
    fn due_keys_order_by_time_then_enrollment() {
        let early = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let late = early + Duration::seconds(1);
        let a = due(late, &enrollment("a", "x@example.com"));
        let b = due(early, &enrollment("z", "y@example.com"));
        assert!(b < a);
        assert_eq!(split(&a[8..]), Some(("a", "x@example.com")));
    }

    #[test]
    fn every_key_of_a_lead_ignores_the_case_of_its_address() {
        assert_eq!(lead("Dana.Scully@fbi.example"), b"dana.scully@fbi.example");
        assert_eq!(
            enrollment("trial", "DANA.SCULLY@fbi.example"),
            enrollment("trial", "dana.scully@fbi.example")
        );
        assert_eq!(
            lead_enrollment("Dana.Scully@fbi.example", "trial"),
            lead_enrollment("dana.scully@fbi.example", "trial")
        );
        assert!(
            event("Dana.Scully@fbi.example", 3)
                .starts_with(&lead_prefix("dana.scully@fbi.example"))
        );
        assert_eq!(
            lead_of(&event("Dana.Scully@fbi.example", 3)),
            "dana.scully@fbi.example"
        );
    }

    #[test]
    fn one_leads_prefix_does_not_cover_a_longer_address() {
        let key = event("ana@example.com.au", 1);
        assert!(!key.starts_with(&lead_prefix("ana@example.com")));
        assert!(event("ana@example.com", 7).starts_with(&lead_prefix("ana@example.com")));
        // A sequence number is not text: the email must still come back whole.
        assert_eq!(
            lead_of(&event("ana@example.com", 0xff_fe_00_80)),
            "ana@example.com"
        );
    }
}
