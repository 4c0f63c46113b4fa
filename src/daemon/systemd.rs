//! Running under systemd as a `Type=notify` service: readiness, the watchdog, stopping.
//!
//! systemd tells the daemon where to write (`NOTIFY_SOCKET`) and how often it wants to hear
//! that the daemon is alive (`WATCHDOG_USEC`); without them (a terminal, a test, another
//! supervisor) every call here does nothing.
//!
//! The watchdog is fed by the work loop itself, never by a timer task of its own: a loop that
//! hangs (a store that never answers, a deadlock) stops the pings, and systemd restarts the
//! service, which loses nothing (see [`super::sender`] on crash safety).

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::warn;

/// What the service manager asked for, and when it last heard from the loop.
pub struct Systemd {
    /// Half the watchdog interval systemd set (`WatchdogSec`), the usual margin; `None` when
    /// there is no watchdog.
    ping_every: Option<Duration>,
    /// When the loop last said it is alive.
    last_ping: Instant,
}

impl Systemd {
    /// Reads what the service manager set in the environment.
    pub fn from_env() -> Systemd {
        let mut usec = 0;
        let ping_every = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec) / 2)
            .filter(|every| !every.is_zero());
        Systemd {
            ping_every,
            last_ping: Instant::now(),
        }
    }

    /// The store is open and the first plan is made: the service is up.
    pub fn ready(&mut self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.last_ping = Instant::now();
    }

    /// The work loop went round once: feeds the watchdog when half its interval has passed.
    pub fn alive(&mut self) {
        if let Some(every) = self.ping_every
            && self.last_ping.elapsed() >= every
        {
            send(&[NotifyState::Watchdog]);
            self.last_ping = Instant::now();
        }
    }

    /// The longest the loop may sleep and still feed the watchdog in time.
    pub fn max_sleep(&self) -> Option<Duration> {
        self.ping_every
    }

    /// A graceful stop has begun.
    pub fn stopping(&self) {
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

fn send(states: &[NotifyState]) {
    // Without NOTIFY_SOCKET this is a no-op that succeeds; a failure means systemd asked for
    // notifications and cannot get them, which it will report as a start-up timeout: say why.
    if let Err(error) = sd_notify::notify(false, states) {
        warn!(%error, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
