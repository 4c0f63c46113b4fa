//! The daemon's unit of work, overlapped: while one batch's emails are with the transport, the
//! next batch of due enrollments is planned and committed.
//!
//! Each batch's emails are listed in flight under their own mark, in the transaction that
//! plans them, and flushed before they are handed over ([`super::sender`]); one batch at a
//! time is with the transport, so a crash leaves at most two batches uncertain.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::sender::Delivered;
use super::throttle::Throttle;
use super::transport::Transport;
use super::{scheduler, sender};
use crate::project::Project;
use crate::store::{Store, StoreError};

pub struct Pipeline {
    store: Store,
    transport: Arc<Transport>,
    throttle: Throttle,
    /// The batch with the transport, if any.
    sending: Option<JoinHandle<Result<Delivered, StoreError>>>,
}

impl Pipeline {
    pub fn new(store: Store, transport: Arc<Transport>, throttle: Throttle) -> Pipeline {
        Pipeline {
            store,
            transport,
            throttle,
            sending: None,
        }
    }

    /// Waits for the batch with the transport, then gives the transport and the sending
    /// limits' state back (the pipeline's store handle goes with the pipeline).
    pub async fn close(mut self) -> Result<(Arc<Transport>, Throttle), StoreError> {
        self.finish().await?;
        Ok((self.transport, self.throttle))
    }

    /// Sends what waited in the outbox and may leave now (retries, emails held by a limit).
    pub async fn send_outbox(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        sender::send_outbox(&self.store, &self.transport, &mut self.throttle, now, limit).await
    }

    /// Runs up to `limit` due enrollments; their emails leave in the background once the
    /// previous batch's have. Returns how many enrollments ran.
    pub async fn run_due(
        &mut self,
        project: &Project,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let planned = tokio::task::block_in_place(|| {
            scheduler::run_due(&self.store, project, now, limit, &mut self.throttle)
        })?;
        if !planned.emails.is_empty() {
            // The in-flight list must be durable before anything is handed over.
            self.store.flush()?;
            self.finish().await?;
            let store = self.store.clone();
            let transport = self.transport.clone();
            self.sending = Some(tokio::spawn(async move {
                sender::deliver(
                    &store,
                    &transport,
                    planned.emails,
                    false,
                    planned.in_flight,
                    now,
                )
                .await
            }));
        }
        Ok(planned.ran)
    }

    /// Waits for the batch with the transport, if any, and suppresses the addresses the server
    /// refused (no batch is being planned now). Returns how many of its emails were sent.
    pub async fn finish(&mut self) -> Result<usize, StoreError> {
        let Some(handle) = self.sending.take() else {
            return Ok(0);
        };
        let delivered = handle
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))?;
        sender::suppress_rejected(&self.store, &delivered.rejected, delivered.at)?;
        Ok(delivered.sent)
    }
}
