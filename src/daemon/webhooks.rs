//! Delivering the webhooks the store has queued (`crate::webhooks`; the queue is the store's
//! `webhooks` tree, filled in the transactions that journal the events).
//!
//! The work loop owns a [`Deliverer`]. Between two batches it [`Deliverer::start`]s attempts
//! for the due deliveries (at most [`IN_FLIGHT`] at once, each a task of its own: a slow
//! receiver never holds the loop up), and [`Deliverer::record`]s the outcomes that came back,
//! as one batch: a 2xx removes the entry and journals the delivery on the lead; anything else
//! (another status, a refused connection, a timeout) moves it to its next attempt, with
//! exponential backoff and jitter, until the endpoint's `max_attempts` or `give_up_hours`, when
//! it moves to the failed ones (`nurture webhooks`, `nurture webhooks retry`).
//!
//! Why outcomes go back through the loop rather than the tasks writing to sled themselves: the
//! loop is the store's one writer (and lends the store to commands, closing it meanwhile), so
//! the tasks hold no store at all, only the delivery they were given. An attempt under way when
//! the daemon stops (or crashes) is simply still queued: it is made again at the next start,
//! with the same `webhook-id`. Delivery is at least once; receivers drop repeats by the id.
//!
//! Each attempt is signed afresh (Standard Webhooks: `webhook-id`, `webhook-timestamp` in unix
//! seconds of the real clock, `webhook-signature`), redirects are not followed (a 3xx is a
//! failure, like any non-2xx), and TLS is rustls with the Mozilla roots.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use reqwest::header::CONTENT_TYPE;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::WebhookConfig;
use crate::store::{Batch, Delivery, EventKind, Store, StoreError};
use crate::webhooks::Endpoint;

/// At most this many attempts under way at once.
pub const IN_FLIGHT: usize = 16;

/// The most of a refusing receiver's answer kept as the error (it can be a whole HTML page).
const ANSWER_EXCERPT: usize = 200;

/// How an attempt went.
enum Outcome {
    Delivered,
    Failed(String),
    /// No `[[webhooks]]` entry names the delivery's URL any more: nothing to sign it with.
    Unconfigured,
}

struct Attempt {
    delivery: Delivery,
    outcome: Outcome,
}

pub struct Deliverer {
    client: reqwest::Client,
    endpoints: HashMap<String, Arc<Endpoint>>,
    /// Ids of the deliveries under way: not started again until their outcome is recorded.
    in_flight: HashSet<String>,
    sender: mpsc::UnboundedSender<Attempt>,
    outcomes: mpsc::UnboundedReceiver<Attempt>,
    /// Outcomes received and not yet recorded.
    held: Vec<Attempt>,
}

impl Deliverer {
    /// The endpoints of `[[webhooks]]`, with their secrets; an error names the entry at fault.
    pub fn new(config: &[WebhookConfig]) -> Result<Deliverer, String> {
        let mut endpoints = HashMap::new();
        for (index, entry) in config.iter().enumerate() {
            let endpoint = Endpoint::load(index, entry)?;
            endpoints.insert(endpoint.url.clone(), Arc::new(endpoint));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nurture/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make the webhook client: {}", chain(&e)))?;
        // The loop keeps the sending end too, so the channel never closes (a closed channel
        // would wake the idle loop again and again).
        let (sender, outcomes) = mpsc::unbounded_channel();
        Ok(Deliverer {
            client,
            endpoints,
            in_flight: HashSet::new(),
            sender,
            outcomes,
            held: Vec::new(),
        })
    }

    /// Starts an attempt for each delivery due at `now` and not under way, while there is room;
    /// how many it started.
    pub fn start(&mut self, store: &Store, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut started = 0;
        for delivery in store.webhooks_pending() {
            if self.in_flight.len() >= IN_FLIGHT {
                break;
            }
            let delivery = delivery?;
            if delivery.next_attempt > now {
                break;
            }
            if !self.in_flight.insert(delivery.id.clone()) {
                continue;
            }
            started += 1;
            let Some(endpoint) = self.endpoints.get(&delivery.url).cloned() else {
                self.held.push(Attempt {
                    delivery,
                    outcome: Outcome::Unconfigured,
                });
                continue;
            };
            let client = self.client.clone();
            let sender = self.sender.clone();
            tokio::spawn(async move {
                let outcome = attempt(&client, &endpoint, &delivery).await;
                // The loop may be gone (stopping): the delivery stays queued for next time.
                let _ = sender.send(Attempt { delivery, outcome });
            });
        }
        Ok(started)
    }

    /// Waits until an attempt reports (for the idle loop's `select!`; never returns while none
    /// is under way). The outcome is kept for [`Deliverer::record`].
    pub async fn wait(&mut self) {
        if let Some(attempt) = self.outcomes.recv().await {
            self.held.push(attempt);
        }
    }

    /// Whether attempts are under way.
    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// When the earliest delivery not under way is due; `None` while there is no room for
    /// another attempt (an outcome wakes the loop then: see [`Deliverer::wait`]), so a backlog
    /// of due deliveries never turns the idle loop into a spin.
    pub fn next_due(&self, store: &Store) -> Result<Option<DateTime<Utc>>, StoreError> {
        if self.in_flight.len() >= IN_FLIGHT {
            return Ok(None);
        }
        for delivery in store.webhooks_pending() {
            let delivery = delivery?;
            if !self.in_flight.contains(&delivery.id) {
                return Ok(Some(delivery.next_attempt));
            }
        }
        Ok(None)
    }

    /// Records every outcome that came back, as one batch; how many.
    pub fn record(&mut self, store: &Store, now: DateTime<Utc>) -> Result<usize, StoreError> {
        while let Ok(attempt) = self.outcomes.try_recv() {
            self.held.push(attempt);
        }
        if self.held.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch::default();
        let count = self.held.len();
        for Attempt {
            mut delivery,
            outcome,
        } in self.held.drain(..)
        {
            self.in_flight.remove(&delivery.id);
            batch
                .webhooks_remove
                .push((delivery.next_attempt, delivery.id.clone()));
            let (error, endpoint) = match outcome {
                Outcome::Delivered => {
                    delivery.attempts += 1;
                    info!(id = %delivery.id, event = %delivery.event, url = %delivery.url, lead = %delivery.lead, attempts = delivery.attempts, "webhook delivered");
                    batch.event(
                        &delivery.lead,
                        now,
                        None,
                        EventKind::WebhookDelivered {
                            id: delivery.id,
                            webhook: delivery.event,
                            url: delivery.url,
                            attempts: delivery.attempts,
                        },
                    );
                    continue;
                }
                Outcome::Failed(error) => {
                    delivery.attempts += 1;
                    let endpoint = self.endpoints.get(&delivery.url).cloned();
                    (error, endpoint)
                }
                Outcome::Unconfigured => (
                    "no [[webhooks]] entry has this url any more".to_owned(),
                    None,
                ),
            };
            let retry_at = endpoint.and_then(|e| e.retry_at(&delivery, now));
            delivery.last_error = Some(error.clone());
            match retry_at {
                Some(at) => {
                    warn!(id = %delivery.id, event = %delivery.event, url = %delivery.url, attempts = delivery.attempts, %error, retry_at = %at, "webhook not delivered; will retry");
                    delivery.next_attempt = at;
                    batch.webhooks_put.push(delivery);
                }
                None => {
                    warn!(id = %delivery.id, event = %delivery.event, url = %delivery.url, attempts = delivery.attempts, %error, "webhook given up (`nurture webhooks retry` sends it again)");
                    delivery.failed_at = Some(now);
                    batch.event(
                        &delivery.lead,
                        now,
                        None,
                        EventKind::WebhookFailed {
                            id: delivery.id.clone(),
                            webhook: delivery.event.clone(),
                            url: delivery.url.clone(),
                            error,
                            attempts: delivery.attempts,
                        },
                    );
                    batch.webhooks_failed_put.push(delivery);
                }
            }
        }
        store.apply(&batch)?;
        Ok(count)
    }
}

/// One POST of `delivery` to its endpoint, signed for this attempt.
async fn attempt(client: &reqwest::Client, endpoint: &Endpoint, delivery: &Delivery) -> Outcome {
    // The real clock, even in a rehearsal: receivers compare it with theirs.
    let timestamp = Utc::now().timestamp();
    let request = client
        .post(&endpoint.url)
        .timeout(endpoint.timeout)
        .header(CONTENT_TYPE, "application/json")
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            endpoint.signature(&delivery.id, timestamp, &delivery.body),
        )
        .body(delivery.body.clone());
    match request.send().await {
        Ok(response) if response.status().is_success() => Outcome::Delivered,
        Ok(mut response) => {
            let status = response.status();
            let answer = match response.chunk().await {
                Ok(Some(bytes)) => String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(ANSWER_EXCERPT)
                    .collect::<String>(),
                _ => String::new(),
            };
            let answer = answer.split_whitespace().collect::<Vec<_>>().join(" ");
            if answer.is_empty() {
                Outcome::Failed(format!("HTTP {status}"))
            } else {
                Outcome::Failed(format!("HTTP {status}: {answer}"))
            }
        }
        Err(error) => Outcome::Failed(chain(&error)),
    }
}

/// An error with its causes ("error sending request…: client error (Connect): tcp connect
/// error: Connection refused"), since the top one alone rarely says what went wrong.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::Lead;
    use crate::webhooks::Routes;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_is_worked_through_a_few_at_a_time_without_spinning() {
        // A receiver that takes connections and never answers, until it is dropped.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dir = std::env::temp_dir().join(format!("nurture-deliverer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n").unwrap();
        let config = [WebhookConfig {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            events: vec!["lead.created".into()],
            secret_file: secret.display().to_string(),
            ..WebhookConfig::default()
        }];
        let store = Store::open(&dir.join("data"), crate::store::DEFAULT_CACHE_BYTES)
            .unwrap()
            .with_webhooks(Routes::from_config(&config).unwrap());
        let now = Utc::now();
        let mut batch = Batch::default();
        for i in 0..IN_FLIGHT + 4 {
            let email = format!("lead{i}@example.test");
            batch.event(&email, now, None, EventKind::Created { by: "test".into() });
            batch.leads.push(Lead::new(email, now));
        }
        store.apply(&batch).unwrap();

        let mut deliverer = Deliverer::new(&config).unwrap();
        assert_eq!(deliverer.start(&store, now).unwrap(), IN_FLIGHT);
        assert_eq!(deliverer.start(&store, now).unwrap(), 0, "no room");
        assert!(deliverer.busy());
        assert_eq!(
            deliverer.next_due(&store).unwrap(),
            None,
            "four are due, but the loop is woken by an outcome, not by them"
        );

        drop(listener);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while deliverer.held.len() < IN_FLIGHT {
                deliverer.wait().await;
            }
        });
        waited
            .await
            .expect("every attempt reports once the receiver is gone");
        assert_eq!(deliverer.record(&store, now).unwrap(), IN_FLIGHT);
        assert!(!deliverer.busy());
        assert_eq!(deliverer.next_due(&store).unwrap(), Some(now));
        let pending: Vec<Delivery> = store.webhooks_pending().map(Result::unwrap).collect();
        assert_eq!(
            pending.len(),
            IN_FLIGHT + 4,
            "failed ones wait, none is lost"
        );
        let retried = pending.iter().filter(|d| d.attempts == 1).count();
        assert_eq!(retried, IN_FLIGHT);
        assert!(
            pending
                .iter()
                .filter(|d| d.attempts == 1)
                .all(|d| d.next_attempt >= now + chrono::Duration::seconds(5)
                    && d.last_error.is_some())
        );
        assert_eq!(deliverer.start(&store, now).unwrap(), 4, "then the rest");
    }
}
