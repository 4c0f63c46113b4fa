//! The daemon's clock: the system clock, or a rehearsal clock for watching a sequence play out
//! (against the file transport) in seconds instead of days.
//!
//! A rehearsal clock starts at a chosen instant and moves only when the daemon sleeps: a sleep
//! until T lasts (T − now) / speed of real time and then reads exactly T. Work takes no
//! virtual time, so a rehearsal sends at exactly the instants the dry-run predicts, however
//! busy the machine is.

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone)]
pub struct Clock {
    /// `None`: the system clock.
    rehearsal: Option<Rehearsal>,
}

#[derive(Debug, Clone)]
struct Rehearsal {
    now: Arc<Mutex<DateTime<Utc>>>,
    speed: u32,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { rehearsal: None }
    }

    /// A clock that reads `origin` and whose sleeps last 1/`speed` of their virtual length.
    pub fn rehearsal(origin: DateTime<Utc>, speed: u32) -> Clock {
        Clock {
            rehearsal: Some(Rehearsal {
                now: Arc::new(Mutex::new(origin)),
                speed: speed.max(1),
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.rehearsal {
            None => Utc::now(),
            Some(r) => *r
                .now
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
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

    /// After a sleep aimed at `target` that lasted `slept` of real time: a rehearsal clock
    /// moves to `target` if the sleep ran its course, or by `slept` × speed if it was cut
    /// short. The system clock needs nothing.
    pub fn slept(&self, target: Option<DateTime<Utc>>, slept: StdDuration, completed: bool) {
        let Some(r) = &self.rehearsal else { return };
        let mut now = r
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let scaled = Duration::from_std(slept * r.speed).unwrap_or(Duration::MAX);
        let moved = match target {
            Some(target) if completed => target,
            Some(target) => (*now + scaled).min(target),
            None => *now + scaled,
        };
        *now = moved.max(*now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_rehearsal_clock_moves_only_by_sleeping() {
        let origin = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        let clock = Clock::rehearsal(origin, 3600);
        std::thread::sleep(StdDuration::from_millis(5));
        assert_eq!(clock.now(), origin, "work takes no virtual time");
        let target = origin + Duration::hours(2);
        assert_eq!(clock.real_wait_until(target), StdDuration::from_secs(2));
        clock.slept(Some(target), StdDuration::from_secs(2), true);
        assert_eq!(clock.now(), target);
        // Woken early after half a real second: half a virtual hour passed.
        clock.slept(
            Some(target + Duration::hours(5)),
            StdDuration::from_millis(500),
            false,
        );
        assert_eq!(clock.now(), target + Duration::minutes(30));
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
