//! Which daemon does the work that must be done once, not once per daemon, when several share
//! a PostgreSQL store: enrolling changed leads and scanning segments, retrying the outbox,
//! delivering webhooks, watching the inboxes, and settling the emails of daemons that died.
//! Every daemon runs due steps (claimed, so each runs once); one of them, the leader, does the
//! rest. The lead is an advisory lock held by a connection: when the leader dies, its
//! connection closes and the next daemon to try becomes the leader.
//!
//! On the sled store one process holds the store, so it always leads.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::store::Store;
use crate::store::postgres::WatcherLease;

/// How often a daemon that does not lead tries to, and the leader checks it still does.
const CHECK_EVERY: Duration = Duration::from_secs(2);

pub struct Leader {
    /// The sled store: this process is the only one.
    alone: bool,
    lease: Option<WatcherLease>,
    next_check: Instant,
}

impl Leader {
    pub fn new(store: &Store) -> Leader {
        Leader {
            alone: store.shared().is_none(),
            lease: None,
            next_check: Instant::now(),
        }
    }

    /// Whether this daemon leads now. A call at most every [`CHECK_EVERY`] asks the database
    /// (blocking the thread for a round trip or a connection).
    pub fn leads(&mut self, store: &Store) -> bool {
        if self.alone {
            return true;
        }
        let now = Instant::now();
        if now < self.next_check {
            return self.lease.is_some();
        }
        self.next_check = now + CHECK_EVERY;
        let Some(shared) = store.shared() else {
            return true;
        };
        tokio::task::block_in_place(|| match &mut self.lease {
            Some(lease) => {
                if !lease.held() {
                    warn!("this daemon lost the lead (its connection to the database closed)");
                    self.lease = None;
                }
            }
            None => match shared.try_lead() {
                Ok(Some(lease)) => {
                    info!(daemon = %shared.owner(), "this daemon now leads: it enrolls, retries the outbox, delivers webhooks and watches the inboxes");
                    self.lease = Some(lease);
                }
                Ok(None) => {}
                Err(error) => warn!(%error, "cannot ask the database who leads"),
            },
        });
        self.lease.is_some()
    }
}
