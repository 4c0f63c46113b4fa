//! The inbox watcher: a task that keeps a session on the watched folder, classifies every new
//! message and hands it to the work loop ([`super::inbound`]), one at a time, in UID order.
//!
//! Nothing is lost across restarts of either side: the folder's position (UIDVALIDITY and the
//! last UID processed) is kept in the store in the same transaction as what a mail caused, so
//! after a restart the watcher fetches what arrived meanwhile; a mail processed just before a
//! crash is recognized by its Message-ID and not run twice. The first time a folder is seen,
//! the mail already in it is left alone (it predates nurture). Any error (the server went
//! away, a timeout, a refused login) closes the session and opens a new one after a backoff
//! of 1 s, doubling up to a minute. Whether the session is open, and how often it was lost,
//! are figures of `/metrics` and a check of `/readyz`.

use std::time::Duration;

use tracing::{info, warn};

use super::inbound::{Inbound, Position};
use crate::mail::classify::classify;
use crate::mail::imap::Account;
use crate::metrics;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Messages fetched at a time when catching up.
const FETCH_SLICE: usize = 50;

/// Watches `account` until the task is dropped.
pub async fn watch(account: Account, inbound: Inbound) {
    let folder = account.name();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match session(&account, &folder, &inbound, &mut backoff).await {
            Ok(never) => match never {},
            Err(error) => error,
        };
        metrics::get().imap_connected(&folder, false);
        warn!(%folder, %error, retry_in_ms = backoff.as_millis() as u64, "inbox watcher");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One session: open, catch up, then wait for news and catch up again, until an error.
async fn session(
    account: &Account,
    folder_name: &str,
    inbound: &Inbound,
    backoff: &mut Duration,
) -> Result<std::convert::Infallible, String> {
    let mut folder = account.open().await?;
    *backoff = FIRST_BACKOFF;
    metrics::get().imap_connected(folder_name, true);
    let mut last = match inbound.position(folder_name).await? {
        Some(kept) if kept.uid_validity == folder.uid_validity => kept.uid,
        Some(_) => {
            warn!(folder = %folder_name, "the folder was renumbered (UIDVALIDITY changed): reading it again; mail processed before is recognized by its Message-ID");
            0
        }
        None => {
            let start = Position {
                uid_validity: folder.uid_validity,
                uid: folder.uid_next.saturating_sub(1),
            };
            inbound.set_position(folder_name, start).await?;
            info!(folder = %folder_name, "first look at this folder: the mail already in it is left alone");
            start.uid
        }
    };
    info!(folder = %folder_name, after_uid = last, idle = folder.has_idle(), "watching the inbox");
    loop {
        loop {
            let slice = folder.fetch_after(last, FETCH_SLICE).await?;
            if slice.is_empty() {
                break;
            }
            for (uid, raw) in slice {
                let mail = classify(&raw);
                let position = Position {
                    uid_validity: folder.uid_validity,
                    uid,
                };
                inbound.mail(folder_name, position, mail).await?;
                last = uid;
            }
        }
        // New mail announced, or time to renew IDLE (or poll): look either way, so a missed
        // notice costs at most one IDLE period.
        folder.wait().await?;
    }
}
