//! The daemon's clock: the system clock, or a rehearsal clock that starts at a chosen instant
//! and runs faster, so a week-long sequence can be watched in minutes against the file
//! transport (and tested without sleeping for days).

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone)]
pub struct Clock {
    /// `None`: the system clock.
    rehearsal: Option<Rehearsal>,
}

#[derive(Debug, Clone)]
struct Rehearsal {
    started: Instant,
    origin: DateTime<Utc>,
    speed: u32,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { rehearsal: None }
    }

    /// A clock that reads `origin` now and advances `speed` times faster than real time.
    pub fn rehearsal(origin: DateTime<Utc>, speed: u32) -> Clock {
        Clock {
            rehearsal: Some(Rehearsal {
                started: Instant::now(),
                origin,
                speed: speed.max(1),
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.rehearsal {
            None => Utc::now(),
            Some(r) => {
                let elapsed = r.started.elapsed().as_micros() as i64 * i64::from(r.speed);
                r.origin + Duration::microseconds(elapsed)
            }
        }
    }

    /// The real time to sleep until the clock reads `at` (zero if it already does).
    pub fn real_wait_until(&self, at: DateTime<Utc>) -> StdDuration {
        let ahead = (at - self.now()).to_std().unwrap_or_default();
        match &self.rehearsal {
            None => ahead,
            Some(r) => ahead / r.speed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_rehearsal_clock_runs_faster_from_its_origin() {
        let origin = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let clock = Clock::rehearsal(origin, 3600);
        let now = clock.now();
        assert!(now >= origin && now < origin + Duration::minutes(30));
        // One virtual hour ahead is (at most) one real second away.
        let wait = clock.real_wait_until(origin + Duration::hours(1));
        assert!(wait <= StdDuration::from_secs(1) && wait > StdDuration::from_millis(500));
        assert_eq!(clock.real_wait_until(origin), StdDuration::ZERO);
    }

    #[test]
    fn the_system_clock_is_now() {
        let clock = Clock::system();
        let skew = (clock.now() - Utc::now()).num_seconds().abs();
        assert!(skew < 5);
        let wait = clock.real_wait_until(Utc::now() + Duration::seconds(10));
        assert!(wait > StdDuration::from_secs(8) && wait <= StdDuration::from_secs(10));
    }
}
