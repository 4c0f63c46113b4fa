//! The IMAP side of the inbox watcher: one session on one folder, opened read-only.
//!
//! Rules that keep a person's mailbox as it was: the folder is opened with EXAMINE (read-only:
//! the server cannot change a flag for us) and messages are fetched with `BODY.PEEK[]` (which
//! never sets `\Seen`). New mail is waited for with IDLE (re-issued after `idle_seconds`,
//! well inside the 29 minutes servers allow) or, on a server without IDLE, by polling.
//! Messages are addressed by UID under the folder's UIDVALIDITY; the caller keeps the last
//! UID it processed.

use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::{Client, Session};
use futures_util::TryStreamExt;
use tokio_rustls::rustls::ClientConfig;

use crate::config::{ImapAccount, ImapConfig};
use crate::endpoint::{Endpoint, IMAP, Security};
use crate::secret::{self, Secret};
use crate::tls::{self, MaybeTls};

/// How to reach and log in to the watched folder; made once from the configuration.
#[derive(Clone)]
pub struct Account {
    pub endpoint: Endpoint,
    user: String,
    password: Secret,
    mailbox: String,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
    idle: Duration,
    poll: Duration,
}

impl Account {
    /// The accounts of `[imap]` and `[[imap.accounts]]` (none when no `url` is set). Every
    /// mistake in the settings (URL, password source, CA file) is an error here, at start-up.
    pub fn from_config(config: &ImapConfig) -> Result<Vec<Account>, String> {
        config
            .all_accounts()
            .iter()
            .map(|account| Account::new(account, config))
            .collect()
    }

    fn new(config: &ImapAccount, timing: &ImapConfig) -> Result<Account, String> {
        let endpoint = Endpoint::parse(&IMAP, &config.url, config.tls)?;
        if config.user.is_empty() {
            return Err("imap.url is set: imap.user is needed too".into());
        }
        let password = secret::read("imap", &config.password_file, &config.password_env)?.ok_or(
            "imap.url is set: give the password in imap.password_file or imap.password_env",
        )?;
        if endpoint.security == Security::Plain && !endpoint.is_loopback() {
            return Err(format!(
                "{endpoint} is not encrypted: the password would cross the network in the clear; use tls = \"starttls\" or imaps://"
            ));
        }
        let tls = match endpoint.security {
            Security::Plain => None,
            Security::Starttls | Security::Implicit => {
                Some(tls::client_config(&config.ca_file).map_err(|e| format!("imap.ca_file {e}"))?)
            }
        };
        Ok(Account {
            endpoint,
            user: config.user.clone(),
            password,
            mailbox: config.mailbox.clone(),
            tls,
            timeout: Duration::from_secs(timing.timeout_seconds.max(1)),
            idle: Duration::from_secs(timing.idle_seconds.clamp(10, 29 * 60)),
            poll: Duration::from_secs(timing.poll_seconds.max(1)),
        })
    }

    /// `user@host/folder`: names the folder in logs and keys its position in the store.
    pub fn name(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user, self.endpoint.host, self.endpoint.port, self.mailbox
        )
    }

    /// Connects, logs in and opens the folder read-only.
    pub async fn open(&self) -> Result<Folder, String> {
        let within = |what: &'static str| {
            let endpoint = &self.endpoint;
            move |_| format!("{endpoint}: no answer to {what} in time")
        };
        let socket = self.endpoint.connect(self.timeout).await?;
        let stream = match (&self.tls, self.endpoint.security) {
            (Some(tls), Security::Implicit) => MaybeTls::Tls(Box::new(
                tls::connect(tls.clone(), &self.endpoint.host, socket)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.endpoint))?,
            )),
            _ => MaybeTls::Plain(socket),
        };
        let mut client = Client::new(stream);
        tokio::time::timeout(self.timeout, client.read_response())
            .await
            .map_err(within("the greeting"))?
            .map_err(|e| format!("{}: {e}", self.endpoint))?
            .ok_or_else(|| format!("{} closed the connection", self.endpoint))?;
        if let (Some(tls), Security::Starttls) = (&self.tls, self.endpoint.security) {
            tokio::time::timeout(
                self.timeout,
                client.run_command_and_check_ok("STARTTLS", None),
            )
            .await
            .map_err(within("STARTTLS"))?
            .map_err(|e| format!("STARTTLS with {}: {e}", self.endpoint))?;
            let MaybeTls::Plain(socket) = client.into_inner() else {
                return Err("STARTTLS on a connection that is already encrypted".into());
            };
            let encrypted = tls::connect(tls.clone(), &self.endpoint.host, socket)
                .await
                .map_err(|e| format!("TLS with {}: {e}", self.endpoint))?;
            client = Client::new(MaybeTls::Tls(Box::new(encrypted)));
        }
        let mut session = tokio::time::timeout(
            self.timeout,
            client.login(&self.user, self.password.expose()),
        )
        .await
        .map_err(within("LOGIN"))?
        .map_err(|(e, _)| format!("login as `{}` at {} refused: {e}", self.user, self.endpoint))?;
        let idle = tokio::time::timeout(self.timeout, session.capabilities())
            .await
            .map_err(within("CAPABILITY"))?
            .map_err(|e| format!("{}: {e}", self.endpoint))?
            .has_str("IDLE");
        let mailbox = tokio::time::timeout(self.timeout, session.examine(&self.mailbox))
            .await
            .map_err(within("EXAMINE"))?
            .map_err(|e| format!("{}: cannot open `{}`: {e}", self.endpoint, self.mailbox))?;
        Ok(Folder {
            session: Some(session),
            uid_validity: mailbox.uid_validity.unwrap_or(0),
            uid_next: mailbox.uid_next.unwrap_or(1),
            idle,
            timeout: self.timeout,
            idle_for: self.idle,
            poll: self.poll,
        })
    }
}

/// An open, read-only folder.
pub struct Folder {
    /// `None` only while IDLE holds it.
    session: Option<Session<MaybeTls>>,
    /// Changes when the server renumbers the folder: positions kept under another value are
    /// void.
    pub uid_validity: u32,
    /// The UID the next message will get (at the time the folder was opened).
    pub uid_next: u32,
    idle: bool,
    timeout: Duration,
    idle_for: Duration,
    poll: Duration,
}

impl Folder {
    fn session(&mut self) -> Result<&mut Session<MaybeTls>, String> {
        self.session
            .as_mut()
            .ok_or_else(|| "the IMAP session was lost".to_owned())
    }

    /// Whether the server announces new mail (IDLE); without it the folder is polled.
    pub fn has_idle(&self) -> bool {
        self.idle
    }

    /// Up to `limit` whole messages with a UID above `after`, in UID order, unread flags
    /// untouched. (A backlog after days of downtime comes in slices, not all in memory.)
    pub async fn fetch_after(
        &mut self,
        after: u32,
        limit: usize,
    ) -> Result<Vec<(u32, Vec<u8>)>, String> {
        let timeout = self.timeout;
        let session = self.session()?;
        // `n:*` always matches the last message, even when its UID is below n: filtered.
        let found = tokio::time::timeout(
            timeout,
            session.uid_search(format!("UID {}:*", after.saturating_add(1))),
        )
        .await
        .map_err(|_| "no answer to SEARCH in time".to_owned())?
        .map_err(|e| format!("SEARCH: {e}"))?;
        let mut uids: Vec<u32> = found.into_iter().filter(|uid| *uid > after).collect();
        uids.sort_unstable();
        uids.truncate(limit.max(1));
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let fetch = async {
            let stream = session.uid_fetch(set, "(UID BODY.PEEK[])").await?;
            stream.try_collect::<Vec<_>>().await
        };
        let fetched = tokio::time::timeout(timeout * 4, fetch)
            .await
            .map_err(|_| "no answer to FETCH in time".to_owned())?
            .map_err(|e| format!("FETCH: {e}"))?;
        let mut messages: Vec<(u32, Vec<u8>)> = fetched
            .iter()
            .filter_map(|fetch| Some((fetch.uid?, fetch.body()?.to_vec())))
            .filter(|(uid, _)| *uid > after)
            .collect();
        messages.sort_by_key(|(uid, _)| *uid);
        Ok(messages)
    }

    /// Waits for the server to announce a change (new mail, most likely), or until it is time
    /// to renew IDLE or to poll: either way the caller looks for new mail next.
    pub async fn wait(&mut self) -> Result<(), String> {
        if !self.idle {
            tokio::time::sleep(self.poll).await;
            let timeout = self.timeout;
            tokio::time::timeout(timeout, self.session()?.noop())
                .await
                .map_err(|_| "no answer to NOOP in time".to_owned())?
                .map_err(|e| format!("NOOP: {e}"))?;
            return Ok(());
        }
        let session = self
            .session
            .take()
            .ok_or_else(|| "the IMAP session was lost".to_owned())?;
        let mut idle = session.idle();
        idle.init().await.map_err(|e| format!("IDLE: {e}"))?;
        let (waiting, _stop) = idle.wait_with_timeout(self.idle_for);
        // New data, a timeout, or (we never interrupt) the connection ending under us, which
        // DONE then reports.
        let _: IdleResponse = waiting.await.map_err(|e| format!("IDLE: {e}"))?;
        let session = tokio::time::timeout(self.timeout, idle.done())
            .await
            .map_err(|_| "no answer to DONE in time".to_owned())?
            .map_err(|e| format!("ending IDLE: {e}"))?;
        self.session = Some(session);
        Ok(())
    }

    /// Says goodbye (best effort).
    pub async fn close(mut self) {
        if let Some(mut session) = self.session.take() {
            let _ = tokio::time::timeout(self.timeout, session.logout()).await;
        }
    }
}
