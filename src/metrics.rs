//! The daemon's figures for Prometheus (`GET /metrics`), through `prometheus-client`.
//!
//! One registry per process ([`get`]), fed where things happen:
//!
//! - emails sent, failed, deferred and uncertain per workflow, promotions and enrollments per
//!   workflow: from the journal lines of every committed transaction ([`journal`], called by
//!   `Store::apply`), so a figure moves exactly when the store says it happened;
//! - mail from leads by kind (reply, auto-reply, bounce, unsubscribe, complaint): by the work
//!   loop once what the mail caused is durable; one-click unsubscribes likewise;
//! - the inbox watchers' connections and reconnects, per folder;
//! - SMTP send latency (one histogram, by outcome) and HTTP request latency (by method, route
//!   template and status; the route is the template, `/unsubscribe/{token}`, never the path,
//!   so no token or address reaches a label);
//! - depths (active enrollments per workflow, the due index, the outbox): read at each scrape
//!   from the counts the store keeps in memory ([`crate::store::depths`]), which cost nothing
//!   to read; absent until the daemon's first count is over.
//!
//! Labels carry workflow names, folder names and route templates only: no lead's data.

use std::sync::{LazyLock, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::{Event, EventKind, Store};

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EmailLabels {
    workflow: String,
    /// `sent`, `failed` (for good), `deferred` (a transient failure, retried later),
    /// `uncertain` (caught mid-send by a stop).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabels {
    workflow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FolderLabels {
    folder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// What one SMTP hand-over came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpOutcome {
    /// The server took the email.
    Sent,
    /// The server answered with a refusal (4xx or 5xx): it is up.
    Refused,
    /// No answer: the server could not be reached, greeted late, refused the login, or the
    /// session broke. `/readyz` reports it until an attempt gets an answer again.
    Failed,
}

impl SmtpOutcome {
    fn label(self) -> &'static str {
        match self {
            SmtpOutcome::Sent => "sent",
            SmtpOutcome::Refused => "refused",
            SmtpOutcome::Failed => "failed",
        }
    }
}

/// Every figure of the process.
pub struct Metrics {
    registry: Registry,
    emails: Family<EmailLabels, Counter>,
    promotions: Family<WorkflowLabels, Counter>,
    enrollments: Family<WorkflowLabels, Counter>,
    inbound: Family<KindLabels, Counter>,
    imap_connected: Family<FolderLabels, Gauge>,
    imap_reconnects: Family<FolderLabels, Counter>,
    smtp_seconds: HistogramFamily<OutcomeLabels>,
    http_seconds: HistogramFamily<RequestLabels>,
    /// The folders the inbox watchers watch, and whether each is connected now.
    folders: Mutex<Vec<(String, bool)>>,
    /// Since when SMTP attempts have failed (`None`: the last one got an answer, or none yet).
    smtp_failing: Mutex<Option<Instant>>,
    /// The store whose depths the gauges show (the daemon's).
    depths: Depths,
}

/// The registry's collector of the depth gauges.
#[derive(Clone, Default)]
struct Depths(std::sync::Arc<OnceLock<Store>>);

impl std::fmt::Debug for Depths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Depths")
    }
}

impl Collector for Depths {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(snapshot) = self.0.get().and_then(Store::depths) else {
            return Ok(());
        };
        let active = ConstGauge::new(0_i64);
        let mut family = encoder.encode_descriptor(
            "nurture_enrollments_active",
            "Enrollments in progress, by workflow",
            None,
            active.metric_type(),
        )?;
        for (workflow, count) in &snapshot.active {
            let labels = WorkflowLabels {
                workflow: workflow.clone(),
            };
            ConstGauge::new(*count as i64).encode(family.encode_family(&labels)?)?;
        }
        for (name, help, value) in [
            (
                "nurture_due_queue_depth",
                "Enrollments with a time in the due index (a next step or a timeout)",
                snapshot.due,
            ),
            (
                "nurture_outbox_depth",
                "Emails waiting in the outbox (retries, emails held by a sending limit)",
                snapshot.outbox,
            ),
        ] {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn smtp_histogram() -> Histogram {
    // 1 ms … 16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn http_histogram() -> Histogram {
    // 0.25 ms … 8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's figures.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Counts what the journal lines of a committed transaction say happened.
pub fn journal(events: &[(String, Event)]) {
    if events.is_empty() {
        return;
    }
    let metrics = get();
    for (_, event) in events {
        let Some(workflow) = &event.workflow else {
            continue;
        };
        let outcome = match &event.kind {
            EventKind::Sent { .. } => "sent",
            EventKind::SendFailed { permanent, .. } => {
                if *permanent {
                    "failed"
                } else {
                    "deferred"
                }
            }
            EventKind::Uncertain { .. } => "uncertain",
            EventKind::Promoted { .. } => {
                metrics
                    .promotions
                    .get_or_create(&workflow_labels(workflow))
                    .inc();
                continue;
            }
            EventKind::Enrolled => {
                metrics
                    .enrollments
                    .get_or_create(&workflow_labels(workflow))
                    .inc();
                continue;
            }
            _ => continue,
        };
        let labels = EmailLabels {
            workflow: workflow.clone(),
            outcome,
        };
        metrics.emails.get_or_create(&labels).inc();
    }
}

fn workflow_labels(workflow: &str) -> WorkflowLabels {
    WorkflowLabels {
        workflow: workflow.to_owned(),
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let emails = Family::<EmailLabels, Counter>::default();
        registry.register(
            "nurture_emails",
            "Emails by workflow and outcome: sent, failed (for good), deferred (retried later), uncertain (caught mid-send by a stop)",
            emails.clone(),
        );
        let promotions = Family::<WorkflowLabels, Counter>::default();
        registry.register(
            "nurture_promotions",
            "Leads promoted by a workflow",
            promotions.clone(),
        );
        let enrollments = Family::<WorkflowLabels, Counter>::default();
        registry.register(
            "nurture_enrollments",
            "Leads enrolled in a workflow",
            enrollments.clone(),
        );
        let inbound = Family::<KindLabels, Counter>::default();
        registry.register(
            "nurture_inbound",
            "Mail and clicks from leads by kind: reply, auto_reply, bounce, soft_bounce, unsubscribe, complaint",
            inbound.clone(),
        );
        let imap_connected = Family::<FolderLabels, Gauge>::default();
        registry.register(
            "nurture_imap_connected",
            "1 while the inbox watcher of the folder has a session, else 0",
            imap_connected.clone(),
        );
        let imap_reconnects = Family::<FolderLabels, Counter>::default();
        registry.register(
            "nurture_imap_reconnects",
            "Times the inbox watcher lost its session or failed to open one, and tried again after a backoff",
            imap_reconnects.clone(),
        );
        let smtp_seconds: HistogramFamily<OutcomeLabels> =
            Family::new_with_constructor(smtp_histogram);
        registry.register(
            "nurture_smtp_send_duration_seconds",
            "Time to hand one email to the SMTP server (connection included when one was opened), by outcome: sent, refused, failed",
            smtp_seconds.clone(),
        );
        let http_seconds: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(http_histogram);
        registry.register(
            "nurture_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status",
            http_seconds.clone(),
        );
        let depths = Depths::default();
        registry.register_collector(Box::new(depths.clone()));
        Metrics {
            registry,
            emails,
            promotions,
            enrollments,
            inbound,
            imap_connected,
            imap_reconnects,
            smtp_seconds,
            http_seconds,
            folders: Mutex::default(),
            smtp_failing: Mutex::default(),
            depths,
        }
    }

    /// Every figure, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8192);
        // Writing to a String cannot fail.
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("the metrics encode into a String");
        text
    }

    /// Shows the depths of `store` (once it has counted them: [`Store::count_depths`]).
    pub fn show_depths(&self, store: &Store) {
        let _ = self.depths.0.set(store.clone());
    }

    /// Mail or a click from a lead, once what it caused is durable.
    pub fn inbound(&self, kind: &'static str) {
        self.inbound.get_or_create(&KindLabels { kind }).inc();
    }

    /// An inbox watcher for `folder` exists (not connected yet).
    pub fn imap_watching(&self, folder: &str) {
        let mut folders = lock(&self.folders);
        if !folders.iter().any(|(name, _)| name == folder) {
            folders.push((folder.to_owned(), false));
        }
        self.imap_connected
            .get_or_create(&folder_labels(folder))
            .set(0);
    }

    /// The watcher of `folder` opened a session (`true`) or lost it (`false`, a reconnect
    /// follows).
    pub fn imap_connected(&self, folder: &str, connected: bool) {
        let mut folders = lock(&self.folders);
        match folders.iter_mut().find(|(name, _)| name == folder) {
            Some((_, now)) => *now = connected,
            None => folders.push((folder.to_owned(), connected)),
        }
        drop(folders);
        let labels = folder_labels(folder);
        self.imap_connected
            .get_or_create(&labels)
            .set(i64::from(connected));
        if !connected {
            self.imap_reconnects.get_or_create(&labels).inc();
        }
    }

    /// The watched folders, and whether each has a session now.
    pub fn imap_folders(&self) -> Vec<(String, bool)> {
        lock(&self.folders).clone()
    }

    /// One SMTP hand-over and how long it took.
    pub fn smtp_attempt(&self, outcome: SmtpOutcome, took: Duration) {
        self.smtp_seconds
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .observe(took.as_secs_f64());
        let mut failing = lock(&self.smtp_failing);
        match outcome {
            SmtpOutcome::Failed => {
                failing.get_or_insert_with(Instant::now);
            }
            SmtpOutcome::Sent | SmtpOutcome::Refused => *failing = None,
        }
    }

    /// How long SMTP attempts have failed, if the last one did.
    pub fn smtp_failing_for(&self) -> Option<Duration> {
        lock(&self.smtp_failing).map(|since| since.elapsed())
    }

    /// One HTTP request answered.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.http_seconds
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .observe(took.as_secs_f64());
    }
}

fn folder_labels(folder: &str) -> FolderLabels {
    FolderLabels {
        folder: folder.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_each_figure_with_its_labels() {
        let metrics = Metrics::new();
        metrics
            .emails
            .get_or_create(&EmailLabels {
                workflow: "trial".into(),
                outcome: "sent",
            })
            .inc();
        metrics.inbound("reply");
        metrics.imap_watching("me@localhost:143/INBOX");
        metrics.smtp_attempt(SmtpOutcome::Failed, Duration::from_millis(3));
        assert!(metrics.smtp_failing_for().is_some());
        metrics.smtp_attempt(SmtpOutcome::Refused, Duration::from_millis(3));
        assert!(metrics.smtp_failing_for().is_none());
        let text = metrics.encode();
        for line in [
            "nurture_emails_total{workflow=\"trial\",outcome=\"sent\"} 1",
            "nurture_inbound_total{kind=\"reply\"} 1",
            "nurture_imap_connected{folder=\"me@localhost:143/INBOX\"} 0",
            "nurture_smtp_send_duration_seconds_count{outcome=\"failed\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        // No depths before a store is shown and counted.
        assert!(!text.contains("nurture_outbox_depth"), "{text}");
    }
}
