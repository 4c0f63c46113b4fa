//! Sending limits: per sender, at most so many emails a minute and so many in any 24 hours; per
//! recipient domain, at most so many in any 24 hours. An email over a limit is not dropped: it
//! waits in the outbox until the first instant every window has room again.
//!
//! The windows are rebuilt from the record of sent emails when the daemon starts, so a restart
//! does not reset them. A planned email counts from the moment it is handed over (a failed
//! send still used its place: the limits err on the careful side).

use std::collections::{HashMap, VecDeque};

use crate::config::Limits;
use crate::mail::compose::domain_of;
use crate::store::{OutboxEmail, Store, StoreError};
use chrono::{DateTime, Duration, Utc};

pub struct Throttle {
    limits: Limits,
    /// Send times in the last 24 hours, oldest first, by sender.
    senders: HashMap<String, VecDeque<DateTime<Utc>>>,
    /// The same, by recipient domain.
    domains: HashMap<String, VecDeque<DateTime<Utc>>>,
}

const MINUTE: Duration = Duration::seconds(60);
const DAY: Duration = Duration::hours(24);

fn any(limits: &Limits) -> bool {
    limits.per_minute > 0 || limits.per_day > 0 || limits.per_domain_per_day > 0
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            limits,
            senders: HashMap::new(),
            domains: HashMap::new(),
        }
    }

    /// A throttle that already counts what the store says was sent in the last 24 hours.
    pub fn load(store: &Store, limits: Limits, now: DateTime<Utc>) -> Result<Throttle, StoreError> {
        let mut throttle = Throttle::new(limits);
        if any(&throttle.limits) {
            let mut recent = store.sent_since(now - DAY)?;
            recent.sort_by_key(|(at, _, _)| *at);
            for (at, sender, recipient) in recent {
                throttle.record(&sender, &recipient, at);
            }
        }
        Ok(throttle)
    }

    /// `None` if `email` may leave at `now` (its place is then taken), or the instant it may.
    pub fn admit(&mut self, email: &OutboxEmail, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !any(&self.limits) {
            return None;
        }
        let domain = domain_of(&email.envelope_to).to_ascii_lowercase();
        let sender = &email.envelope_from;
        let empty = VecDeque::new();
        let sent = self.senders.get(sender).unwrap_or(&empty);
        let to_domain = self.domains.get(&domain).unwrap_or(&empty);
        let room = [
            room_at(sent, self.limits.per_minute, MINUTE, now),
            room_at(sent, self.limits.per_day, DAY, now),
            room_at(to_domain, self.limits.per_domain_per_day, DAY, now),
        ]
        .into_iter()
        .max()
        .unwrap_or(now);
        if room > now {
            return Some(room);
        }
        self.record(sender, &email.envelope_to, now);
        None
    }

    fn record(&mut self, sender: &str, recipient: &str, at: DateTime<Utc>) {
        let domain = domain_of(recipient).to_ascii_lowercase();
        for times in [
            self.senders.entry(sender.to_string()).or_default(),
            self.domains.entry(domain).or_default(),
        ] {
            times.push_back(at);
            while times.front().is_some_and(|first| *first <= at - DAY) {
                times.pop_front();
            }
        }
    }
}

/// The first instant at which fewer than `limit` of `times` fall in the `window` before it.
fn room_at(
    times: &VecDeque<DateTime<Utc>>,
    limit: usize,
    window: Duration,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    if limit == 0 {
        return now;
    }
    let in_window: Vec<&DateTime<Utc>> = times.iter().filter(|t| **t > now - window).collect();
    if in_window.len() < limit {
        return now;
    }
    // The oldest sends must leave the window until only limit - 1 remain.
    *in_window[in_window.len() - limit] + window
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn email(from: &str, to: &str) -> OutboxEmail {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        OutboxEmail {
            message_id: "<x@example.test>".into(),
            workflow: "w".into(),
            lead: to.into(),
            step: "s".into(),
            subject: "s".into(),
            envelope_from: from.into(),
            envelope_to: to.into(),
            queued_at: at,
            not_before: at,
            attempts: 0,
            expires: None,
            eml: Vec::new(),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap() + Duration::seconds(seconds)
    }

    #[test]
    fn a_restart_remembers_what_was_sent() {
        use crate::store::{Batch, DEFAULT_CACHE_BYTES, MessageRecord, MessageState};
        let dir = std::env::temp_dir().join(format!("nurture-throttle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
        let sent = |sequence: u64, second: i64| MessageRecord {
            message_id: crate::mail::compose::sequenced_message_id("<x@example.test>", sequence),
            workflow: "w".into(),
            lead: "b@y.test".into(),
            sender: "a@x.test".into(),
            step: "s".into(),
            subject: "s".into(),
            state: MessageState::Sent,
            queued_at: at(second),
            at: at(second),
        };
        let batch = Batch {
            messages: vec![sent(1, -90_000), sent(2, 0), sent(3, 30)],
            ..Batch::default()
        };
        store.apply(&batch).unwrap();
        let limits = Limits {
            per_minute: 2,
            per_day: 2,
            ..Limits::default()
        };
        let mut throttle = Throttle::load(&store, limits, at(40)).unwrap();
        // The two sends of the last day count; the one from yesterday does not.
        assert_eq!(
            throttle.admit(&email("a@x.test", "b@y.test"), at(40)),
            Some(at(0) + DAY)
        );
    }

    #[test]
    fn no_limits_admit_everything() {
        let mut throttle = Throttle::new(Limits::default());
        for _ in 0..1000 {
            assert_eq!(throttle.admit(&email("a@x.test", "b@y.test"), at(0)), None);
        }
    }

    #[test]
    fn a_per_minute_limit_spreads_sends_over_minutes() {
        let mut throttle = Throttle::new(Limits {
            per_minute: 2,
            ..Limits::default()
        });
        let mail = email("a@x.test", "b@y.test");
        assert_eq!(throttle.admit(&mail, at(0)), None);
        assert_eq!(throttle.admit(&mail, at(10)), None);
        assert_eq!(throttle.admit(&mail, at(20)), Some(at(60)));
        assert_eq!(throttle.admit(&mail, at(60)), None);
        assert_eq!(throttle.admit(&mail, at(61)), Some(at(70)));
        // Another sender has its own budget.
        assert_eq!(throttle.admit(&email("c@x.test", "b@y.test"), at(61)), None);
    }

    #[test]
    fn a_domain_cap_counts_every_sender_for_a_rolling_day() {
        let mut throttle = Throttle::new(Limits {
            per_domain_per_day: 2,
            ..Limits::default()
        });
        assert_eq!(
            throttle.admit(&email("a@x.test", "1@gmail.test"), at(0)),
            None
        );
        assert_eq!(
            throttle.admit(&email("b@x.test", "2@GMAIL.test"), at(5)),
            None
        );
        assert_eq!(
            throttle.admit(&email("a@x.test", "3@gmail.test"), at(3600)),
            Some(at(0) + DAY)
        );
        assert_eq!(
            throttle.admit(&email("a@x.test", "4@other.test"), at(3600)),
            None
        );
    }

    #[test]
    fn a_daily_limit_holds_until_the_first_send_is_a_day_old() {
        let mut throttle = Throttle::new(Limits {
            per_day: 3,
            per_minute: 100,
            ..Limits::default()
        });
        let mail = email("a@x.test", "b@y.test");
        for second in [0, 100, 200] {
            assert_eq!(throttle.admit(&mail, at(second)), None);
        }
        assert_eq!(throttle.admit(&mail, at(300)), Some(at(0) + DAY));
        assert_eq!(throttle.admit(&mail, at(0) + DAY), None);
    }
}
