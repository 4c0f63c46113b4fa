//! Retry schedules: exponential backoff with jitter, shared by the outbox (emails a server
//! deferred) and the webhook queue (receivers that are down).

use chrono::Duration;

/// Exponential backoff with jitter: `min`, 2×`min`, 4×`min`… up to `max`, each stretched by up
/// to a quarter (derived from the id: deliveries that failed together spread out, and one
/// delivery's schedule is reproducible).
pub fn backoff(attempt: u32, id: &str, min: Duration, max: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    let base = min
        .checked_mul(1 << doublings)
        .unwrap_or(max)
        .min(max)
        .max(Duration::milliseconds(1));
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let jitter_ms = hash % (base.num_milliseconds() as u64 / 4 + 1);
    base + Duration::milliseconds(jitter_ms as i64)
}
