//! What reaches the daemon from outside its schedule (an unsubscribe click today; replies,
//! auto-replies and bounces from the inbox watcher) and waits for the work loop.
//!
//! The store has one writer, the work loop, and it is lent to commands now and then; so the
//! HTTP endpoint and the watcher do not write themselves: they send a [`Happening`] here and
//! wait for the loop to run it (between two batches) and answer once the result is durable.

use tokio::sync::{mpsc, oneshot};

use super::scheduler::Happening;

/// What the work loop answers: `Ok(true)` done, `Ok(false)` no such lead, `Err` the store
/// failed (the daemon is stopping).
pub type Answer = Result<bool, String>;

/// A happening and where its answer goes.
pub struct Request {
    pub happening: Happening,
    pub answer: oneshot::Sender<Answer>,
}

/// The sending end, cloned into each task that receives things from outside.
#[derive(Clone)]
pub struct Inbound {
    sender: mpsc::Sender<Request>,
}

/// Requests queued beyond this wait at the sender (back-pressure on the HTTP endpoint).
const QUEUE: usize = 1024;

/// A channel: the handle for the tasks and the receiver for the work loop.
pub fn channel() -> (Inbound, mpsc::Receiver<Request>) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    (Inbound { sender }, receiver)
}

impl Inbound {
    /// Hands `happening` to the work loop and waits until it is durable.
    pub async fn submit(&self, happening: Happening) -> Answer {
        let (answer, done) = oneshot::channel();
        self.sender
            .send(Request { happening, answer })
            .await
            .map_err(|_| "the daemon is stopping".to_owned())?;
        done.await
            .map_err(|_| "the daemon is stopping".to_owned())?
    }
}
