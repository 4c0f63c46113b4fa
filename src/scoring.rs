//! Scoring that moves and fades: points for what a lead does, a score that halves over time,
//! and a temperature (hot, warm, cold, inactive) read from the score and from how long ago the
//! lead last did something.
//!
//! The rules come from a workflow's `scoring { … }` block (one per project: a lead has one
//! score). Nothing here rewrites leads over time: a lead keeps its score as of one moment
//! ([`Lead::score_at`]), and the score at any later moment is worked out when it is read
//! ([`Scoring::score`]), so a million leads cost nothing while they sit still.
//!
//! [`Scoring::points`] is the one place a signal turns into points. Replies, events from the
//! API (`POST /v1/leads/{email}/events`) and people's opens and clicks of tracked emails
//! (`daemon::scheduler::run_inputs`, machines' left out) feed it through [`Scoring::record`].

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::lead::Lead;

/// Something a person did that may be worth points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A human open of one of our emails.
    Open,
    /// A human click on a link of one of our emails.
    Click,
    /// A human reply.
    Reply,
    /// An event reported through the API (`visited-pricing`).
    Event(String),
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signal::Open => f.write_str("open"),
            Signal::Click => f.write_str("click"),
            Signal::Reply => f.write_str("reply"),
            Signal::Event(name) => write!(f, "event \"{name}\""),
        }
    }
}

/// What a signal is, as a rule names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalKind {
    Open,
    Click,
    Reply,
    /// An API event of this name (compared without regard to case).
    Event(String),
}

impl SignalKind {
    pub const NAMES: [&'static str; 4] = ["open", "click", "reply", "event"];

    fn matches(&self, signal: &Signal) -> bool {
        match (self, signal) {
            (SignalKind::Open, Signal::Open)
            | (SignalKind::Click, Signal::Click)
            | (SignalKind::Reply, Signal::Reply) => true,
            (SignalKind::Event(wanted), Signal::Event(name)) => wanted.eq_ignore_ascii_case(name),
            _ => false,
        }
    }
}

/// `+20 on event "visited-pricing"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub points: i64,
    pub on: SignalKind,
}

/// How warm a lead is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temperature {
    /// No human action for longer than `inactive after`: whatever the score says.
    Inactive,
    Cold,
    Warm,
    Hot,
}

impl Temperature {
    pub const ALL: [Temperature; 4] = [
        Temperature::Hot,
        Temperature::Warm,
        Temperature::Cold,
        Temperature::Inactive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Temperature::Hot => "hot",
            Temperature::Warm => "warm",
            Temperature::Cold => "cold",
            Temperature::Inactive => "inactive",
        }
    }

    pub fn parse(text: &str) -> Option<Temperature> {
        Temperature::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

impl fmt::Display for Temperature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The defaults a `scoring` block starts from.
pub const DEFAULT_HOT: i64 = 50;
pub const DEFAULT_WARM: i64 = 20;
pub const DEFAULT_INACTIVE_DAYS: u32 = 90;

/// A project's scoring rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scoring {
    pub rules: Vec<Rule>,
    /// `halve every 30 days`; `None`: scores never fade.
    pub half_life_days: Option<u32>,
    /// `hot at 50`: a score at or above it is hot.
    pub hot: i64,
    /// `warm at 20`.
    pub warm: i64,
    /// `inactive after 90 days` without a human action.
    pub inactive_after_days: u32,
}

impl Default for Scoring {
    fn default() -> Scoring {
        Scoring {
            rules: Vec::new(),
            half_life_days: None,
            hot: DEFAULT_HOT,
            warm: DEFAULT_WARM,
            inactive_after_days: DEFAULT_INACTIVE_DAYS,
        }
    }
}

/// One change of score, for the journal and `leads show`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub points: i64,
    /// The score just before, faded to the moment of the signal.
    pub before: i64,
    pub after: i64,
    pub was: Temperature,
    pub now: Temperature,
}

impl Scoring {
    /// The points `signal` is worth: the sum of the rules for it; `None` when no rule names it.
    /// The single hook every kind of signal goes through.
    pub fn points(&self, signal: &Signal) -> Option<i64> {
        let mut matching = self
            .rules
            .iter()
            .filter(|rule| rule.on.matches(signal))
            .peekable();
        matching.peek()?;
        Some(matching.map(|rule| rule.points).sum())
    }

    /// The lead's score at `at`: its stored score halved once per half-life since it was set
    /// (never rounded up; a negative score fades towards zero too).
    pub fn score(&self, lead: &Lead, at: DateTime<Utc>) -> i64 {
        let (Some(days), Some(since)) = (self.half_life_days, lead.score_at) else {
            return lead.score;
        };
        let elapsed = (at - since).num_seconds().max(0) as f64;
        let half_life = f64::from(days) * 86_400.0;
        let faded = lead.score as f64 * 0.5f64.powf(elapsed / half_life);
        faded.trunc() as i64
    }

    /// How warm the lead is at `at`.
    pub fn temperature(&self, lead: &Lead, at: DateTime<Utc>) -> Temperature {
        let last = lead.acted_at.unwrap_or(lead.created_at);
        if at - last > Duration::days(i64::from(self.inactive_after_days)) {
            return Temperature::Inactive;
        }
        let score = self.score(lead, at);
        if score >= self.hot {
            Temperature::Hot
        } else if score >= self.warm {
            Temperature::Warm
        } else {
            Temperature::Cold
        }
    }

    /// Records `signal` on `lead` at `at`: a human action (for "inactive"), and its points when
    /// a rule gives some (the score fades to `at`, then the points are added). `None` when it
    /// is worth no points.
    pub fn record(&self, lead: &mut Lead, signal: &Signal, at: DateTime<Utc>) -> Option<Scored> {
        let was = self.temperature(lead, at);
        lead.acted_at = Some(lead.acted_at.map_or(at, |last| last.max(at)));
        let points = self.points(signal)?;
        let before = self.score(lead, at);
        lead.score = before.saturating_add(points);
        lead.score_at = Some(at);
        lead.updated_at = lead.updated_at.max(at);
        Some(Scored {
            points,
            before,
            after: lead.score,
            was,
            now: self.temperature(lead, at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap() + Duration::days(i64::from(day))
    }

    fn scoring() -> Scoring {
        Scoring {
            rules: vec![
                Rule {
                    points: 20,
                    on: SignalKind::Event("visited-pricing".into()),
                },
                Rule {
                    points: 30,
                    on: SignalKind::Reply,
                },
                Rule {
                    points: 5,
                    on: SignalKind::Open,
                },
            ],
            half_life_days: Some(30),
            hot: 50,
            warm: 20,
            inactive_after_days: 45,
        }
    }

    #[test]
    fn points_come_from_the_rules_for_the_signal() {
        let scoring = scoring();
        assert_eq!(
            scoring.points(&Signal::Event("Visited-Pricing".into())),
            Some(20)
        );
        assert_eq!(scoring.points(&Signal::Reply), Some(30));
        assert_eq!(scoring.points(&Signal::Open), Some(5));
        assert_eq!(scoring.points(&Signal::Click), None);
        assert_eq!(scoring.points(&Signal::Event("webinar".into())), None);
    }

    #[test]
    fn a_score_halves_every_half_life_without_being_rewritten() {
        let scoring = scoring();
        let mut lead = Lead::new("ana@example.test".into(), at(0));
        scoring.record(&mut lead, &Signal::Reply, at(0));
        scoring.record(&mut lead, &Signal::Reply, at(0));
        assert_eq!(lead.score, 60);
        assert_eq!(scoring.score(&lead, at(30)), 30);
        assert_eq!(scoring.score(&lead, at(60)), 15);
        // A new signal adds to the faded score and restarts the clock.
        let scored = scoring
            .record(&mut lead, &Signal::Event("visited-pricing".into()), at(30))
            .unwrap();
        assert_eq!((scored.before, scored.after), (30, 50));
        assert_eq!(scoring.score(&lead, at(60)), 25);
    }

    #[test]
    fn temperature_follows_score_and_recency() {
        let scoring = scoring();
        let mut lead = Lead::new("ana@example.test".into(), at(0));
        assert_eq!(scoring.temperature(&lead, at(0)), Temperature::Cold);
        let first = scoring
            .record(&mut lead, &Signal::Event("visited-pricing".into()), at(1))
            .unwrap();
        assert_eq!(
            (first.was, first.now),
            (Temperature::Cold, Temperature::Warm)
        );
        let second = scoring.record(&mut lead, &Signal::Reply, at(1)).unwrap();
        assert_eq!(second.now, Temperature::Hot);
        // 50 halves to 25 in 30 days: warm again.
        assert_eq!(scoring.temperature(&lead, at(31)), Temperature::Warm);
        // 45 days without a human action: inactive, whatever the score.
        assert_eq!(scoring.temperature(&lead, at(47)), Temperature::Inactive);
        // A signal worth no points still counts as an action.
        assert_eq!(scoring.record(&mut lead, &Signal::Click, at(47)), None);
        assert_ne!(scoring.temperature(&lead, at(47)), Temperature::Inactive);
    }
}
