//! The daemon's unit of work, overlapped: while one batch's emails are with the transport, the
//! next batch of due enrollments is planned and committed.
//!
//! Each batch's emails are listed in flight under their own mark, in the transaction that
//! plans them, and flushed before they are handed over ([`super::sender`]); one batch at a
//! time is with the transport, so a crash leaves at most two batches uncertain (or, with the
//! folder transport, to be settled from the folder).
//!
//! A panic while one email is being made ([`contain_panic`]) fails that email, not the daemon.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::scheduler::{Happening, Planned};
use super::sender::Delivered;
use super::throttle::Throttle;
use super::transport::Transport;
use super::{scheduler, sender};
use crate::project::Project;
use crate::store::{Batch, Store, StoreError};
use crate::unsubscribe::Unsubscribe;

pub struct Pipeline {
    store: Store,
    transport: Arc<Transport>,
    throttle: Throttle,
    unsubscribe: Arc<Unsubscribe>,
    /// The batch with the transport, if any.
    sending: Option<JoinHandle<Result<Delivered, StoreError>>>,
}

impl Pipeline {
    pub fn new(
        store: Store,
        transport: Arc<Transport>,
        throttle: Throttle,
        unsubscribe: Arc<Unsubscribe>,
    ) -> Pipeline {
        Pipeline {
            store,
            transport,
            throttle,
            unsubscribe,
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
            scheduler::run_due(
                &self.store,
                project,
                now,
                limit,
                &mut self.throttle,
                &self.unsubscribe,
            )
        })?;
        let ran = planned.ran;
        if !planned.emails.is_empty() {
            // The in-flight list must be durable before anything is handed over.
            self.store.flush()?;
            self.launch(planned, now).await?;
        }
        Ok(ran)
    }

    /// Runs the handlers for something that happened to a lead (a reply, an unsubscribe…):
    /// its new state is durable when this returns; emails it planned (a notification) leave
    /// in the background. `None`: no such lead.
    pub async fn run_input(
        &mut self,
        project: &Project,
        now: DateTime<Utc>,
        happening: &Happening,
    ) -> Result<Option<usize>, StoreError> {
        let planned = tokio::task::block_in_place(|| {
            scheduler::run_input(
                &self.store,
                project,
                now,
                &mut self.throttle,
                &self.unsubscribe,
                happening,
            )
        })?;
        let Some(planned) = planned else {
            return Ok(None);
        };
        self.store.flush()?;
        let ran = planned.ran;
        if !planned.emails.is_empty() {
            self.launch(planned, now).await?;
        }
        Ok(Some(ran))
    }

    /// Runs several happenings and `journal` in one transaction and one flush (clicks and
    /// opens: [`super::engage`]); emails they planned leave in the background.
    pub async fn run_inputs(
        &mut self,
        project: &Project,
        now: DateTime<Utc>,
        happenings: &[Happening],
        journal: Batch,
    ) -> Result<(), StoreError> {
        let planned = tokio::task::block_in_place(|| {
            scheduler::run_inputs(
                &self.store,
                project,
                now,
                &mut self.throttle,
                &self.unsubscribe,
                happenings,
                journal,
            )
        })?;
        self.store.flush()?;
        if !planned.emails.is_empty() {
            self.launch(planned, now).await?;
        }
        Ok(())
    }

    /// Hands a committed batch's emails to the transport, after the previous batch's.
    async fn launch(&mut self, planned: Planned, now: DateTime<Utc>) -> Result<(), StoreError> {
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
        Ok(())
    }

    /// Waits for the batch with the transport, if any, and settles what its outcomes mean for
    /// the leads (no batch is being planned now): refused addresses are suppressed, sequences
    /// whose email failed for good end. Returns how many of its emails were sent.
    pub async fn finish(&mut self) -> Result<usize, StoreError> {
        let Some(handle) = self.sending.take() else {
            return Ok(0);
        };
        let delivered = handle
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))?;
        delivered.settle(&self.store)?;
        Ok(delivered.sent)
    }
}

/// Runs `work`; a panic in it (a bug, in nurture or a library) becomes an error naming it, so
/// that one email fails instead of the daemon. The panic is still logged by the panic hook.
pub(super) fn contain_panic<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        format!("internal error while making this email (please report it): {what}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_that_names_it_and_values_pass_through() {
        assert_eq!(contain_panic(|| 7), Ok(7));
        let error = contain_panic(|| -> u8 { panic!("index {} out of range", 3) }).unwrap_err();
        assert_eq!(
            error,
            "internal error while making this email (please report it): index 3 out of range"
        );
        let error = contain_panic(|| -> u8 { panic!("plain") }).unwrap_err();
        assert!(error.ends_with(": plain"), "{error}");
    }
}
