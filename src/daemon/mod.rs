//! `nurture run`: the long-running daemon.
//!
//! One work loop does, in turn: enroll changed leads, advance pending enrollment scans, run due
//! enrollments through the engine (emails enter the outbox), and hand ready outbox emails to the
//! transport. When there is nothing to do it sleeps until the earliest of: the next due
//! enrollment, the next outbox email, the next recurring slot, the next look at the workflow
//! folders, a reload signal, or a stop signal. An idle daemon does not poll the store.
//!
//! - [`clock`]: system or rehearsal time;
//! - [`scheduler`]: due enrollments → engine → outbox;
//! - [`sender`]: emails → transport, with crash recovery;
//! - [`pipeline`]: planning the next batch while the last one is with the transport;
//! - [`enroller`]: changed leads, backfills and recurring segments;
//! - [`reload`]: new workflow files checked before they replace the running ones;
//! - [`throttle`]: sending limits per sender and per recipient domain;
//! - [`transport`]: file, SMTP ([`smtp`]) and null transports;
//! - [`inbound`]: what arrives from outside (an unsubscribe click, a reply) waits for the loop,
//!   which runs the workflows' handlers for it between two batches;
//! - [`inbox`]: the IMAP watcher; [`correlate`]: which lead a mail is about, and what it means;
//! - [`http`]: the HTTP server: one-click unsubscribe, the `/v1` API, web forms, opt-in links,
//!   health checks and the figures for Prometheus ([`crate::metrics`]);
//!   [`intake`]: what the loop does with their leads, a group per turn (group commit);
//! - [`webhooks`]: delivering the webhooks the store queued, outcomes recorded by the loop;
//! - the control socket ([`crate::control`]): commands typed while the daemon runs read its
//!   store beside the loop, and write through the loop, as [`inbound`] requests;
//! - [`systemd`]: readiness and the watchdog under a `Type=notify` unit;
//! - [`leader`]: with several daemons on one PostgreSQL store, the one that does the work
//!   that must be done once (enrolling, the outbox, webhooks, inboxes, settling the emails of
//!   a daemon that died); all of them run due steps, each claimed by one.
//!
//! Stopping: the first SIGINT/SIGTERM stops taking work; the batch in hand finishes, the store
//! is flushed, and the daemon exits; if that takes longer than the configured deadline, it exits
//! anyway (nothing is lost: see [`sender`]). A second signal exits at once.

pub mod clock;
pub mod correlate;
pub mod engage;
pub mod enroller;
pub mod http;
pub mod inbound;
pub mod inbox;
pub mod intake;
pub mod judge;
pub mod leader;
pub mod pipeline;
pub mod reload;
pub mod scheduler;
pub mod sender;
pub mod smtp;
pub mod systemd;
pub mod throttle;
pub mod transport;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use tokio::sync::Notify;
use tracing::{error, info, warn};

use self::clock::Clock;
use self::inbound::Request;
use self::pipeline::Pipeline;
use self::reload::Watcher;
use self::systemd::Systemd;
use self::throttle::Throttle;
use self::transport::Transport;
use crate::config::Config;
use crate::control;
use crate::mail::imap::Account;
use crate::metrics;
use crate::project::Project;
use crate::store::{Store, StoreError};
use crate::unsubscribe::Unsubscribe;
use crate::webhooks::Routes;

/// Where the daemon finds its workflows and templates.
#[derive(Debug, Clone)]
pub struct Paths {
    pub workflows: PathBuf,
    pub templates: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the workflows have errors; fix them (see `nurture check`) and start again")]
    Invalid,
    #[error("{0}")]
    Setup(String),
}

/// Signals as the work loop sees them.
#[derive(Default)]
pub struct Control {
    stopping: AtomicBool,
    reload: AtomicBool,
    wake: Notify,
}

impl Control {
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn request_reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Runs the daemon until it is told to stop (or, with `until_idle`, until nothing is due).
pub async fn run(
    config: Config,
    paths: Paths,
    clock: Clock,
    transport: Transport,
    control: Arc<Control>,
    until_idle: bool,
) -> Result<(), DaemonError> {
    let mut systemd = Systemd::from_env();
    let routes = Routes::from_config(&config.webhooks).map_err(DaemonError::Setup)?;
    let store = Store::open_configured(&config.store)?.with_webhooks(routes.clone());
    // On PostgreSQL: this daemon's life lock (the others settle its in-flight emails only
    // once it is gone), and wake-ups when another process writes work.
    let _life = match store.shared() {
        Some(shared) => {
            // The control socket's folder, which a sled store would have made.
            crate::private::private_dir(&config.store.path).map_err(|e| {
                DaemonError::Setup(format!("cannot make {}: {e}", config.store.path.display()))
            })?;
            let life =
                tokio::task::block_in_place(|| shared.hold_life()).map_err(StoreError::from)?;
            listen_for_work(shared, control.clone());
            Some(life)
        }
        None => None,
    };
    let mut leader = leader::Leader::new(&store);
    let project = Project::load(std::slice::from_ref(&paths.workflows), &paths.templates);
    reload::log_diagnostics(&project);
    if project.count(crate::diagnostic::Severity::Error) > 0 {
        return Err(DaemonError::Invalid);
    }
    let mut project = Arc::new(project);
    // Commands that read beside the loop see the workflows it runs, reloads included.
    let (running, project_now) = tokio::sync::watch::channel(project.clone());
    let (inbound, mut requests) = inbound::channel();
    // `inbound` lives as long as the loop, so `requests` never reports a closed channel (which
    // would wake the idle loop at once, again and again).
    // Commands are taken from now on; those that write wait for the loop.
    let shared = control::server::Shared {
        store: store.clone(),
        project: project_now.clone(),
        inbound: inbound.clone(),
        clock: clock.clone(),
        workflows_dir: paths.workflows.display().to_string(),
    };
    let _control = control::server::start(&config.store.path, shared).map_err(|e| {
        DaemonError::Setup(format!(
            "cannot listen on {}: {e}",
            control::socket_path(&config.store.path).display()
        ))
    })?;
    let transport = Arc::new(transport);
    let mut leading = leader.leads(&store);
    if leading {
        settle(&store, &transport, clock.now())?;
    }
    // On sled the counters every batch keeps say how many leads there are: counting the
    // records would take seconds at a million and hold back the first email. PostgreSQL counts
    // its rows itself.
    let leads = match store.shared() {
        Some(_) => store.lead_count(),
        None => store
            .counters()
            .map_or(0, |counters| counters.leads as usize),
    };
    info!(
        store = %Store::describe(&config.store),
        transport = %transport.describe(),
        workflows = project.workflows.len(),
        leads,
        "nurture is running"
    );
    let mut watcher = Watcher::new(&paths, config.daemon.watch_seconds);
    let mut next_slot = if leading {
        enroller::plan_scans(&store, &project, clock.now())?
    } else {
        None
    };
    let throttle = Throttle::load(&store, config.limits.clone(), clock.now())?;
    let unsubscribe = Arc::new(
        Unsubscribe::load(&config.http, &store).map_err(|e| DaemonError::Setup(e.to_string()))?,
    );
    if unsubscribe.base_url().is_none() {
        for workflow in project.workflows.iter().filter(|w| w.tracking.any()) {
            warn!(
                workflow = %workflow.name,
                "`track` needs http.base_url, the public address tracked links lead to: this workflow's emails go out untracked, and its conditions on clicks and opens stay false"
            );
        }
    }
    let mut deliverer = webhooks::Deliverer::new(&config.webhooks).map_err(DaemonError::Setup)?;
    // The gauges' depths are counted in the background (O(n)): on sled once, then kept by
    // every write; on PostgreSQL, which other daemons write too, again every little while.
    metrics::get().show_depths(&store);
    let counting = store.clone();
    tokio::spawn(async move {
        loop {
            let store = counting.clone();
            match tokio::task::spawn_blocking(move || store.count_depths()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => error!(%error, "cannot count the queues for /metrics"),
                Err(error) => error!(%error, "the count of the queues for /metrics failed"),
            }
            if counting.shared().is_none() {
                break;
            }
            tokio::time::sleep(crate::store::postgres::DEPTHS_EVERY).await;
        }
    });
    let accounts = Account::from_config(&config.imap).map_err(DaemonError::Setup)?;
    for account in &accounts {
        // Known to `/readyz` before the server answers.
        metrics::get().imap_watching(&account.name());
    }
    let health = Arc::new(http::health::Health {
        store: store.clone(),
    });
    let _endpoint = start_http(
        &config,
        &project,
        unsubscribe.clone(),
        inbound.clone(),
        (store.clone(), project_now),
        health,
    )
    .await?;
    // Started while this daemon leads (always, on sled).
    let mut _watchers = if leading {
        watch_inboxes(&accounts, &inbound)
    } else {
        Vec::new()
    };
    let mut pipeline = Pipeline::new(
        store.clone(),
        transport.clone(),
        throttle,
        unsubscribe.clone(),
    );
    let mut next_settle = std::time::Instant::now() + SETTLE_EVERY;
    let mut held: Vec<Request> = Vec::new();
    let mut ready = false;

    while !control.is_stopping() {
        systemd.alive();
        while let Ok(request) = requests.try_recv() {
            held.push(request);
        }
        if !held.is_empty() {
            let cx = inbound::Context {
                store: &store,
                project: &project,
                unsubscribe: &unsubscribe,
                bounces: &config.bounces,
                now: clock.now(),
            };
            inbound::answer_all(held.drain(..), &mut pipeline, &cx).await?;
        }
        if control.reload.swap(false, Ordering::SeqCst) || watcher.changed() {
            if let Some(reloaded) = reload::reload(&store, &paths, &project)? {
                project = Arc::new(reloaded);
                running.send_replace(project.clone());
            }
            if leading {
                next_slot = enroller::plan_scans(&store, &project, clock.now())?;
            }
        }
        let now = clock.now();
        let leads = leader.leads(&store);
        if leads != leading {
            // The lead moved here (another daemon died) or away (our connection closed).
            leading = leads;
            _watchers = if leads {
                watch_inboxes(&accounts, &inbound)
            } else {
                Vec::new()
            };
            next_slot = None;
            if leads {
                next_slot = enroller::plan_scans(&store, &project, now)?;
            }
        } else if leads && next_slot.is_some_and(|slot| slot <= now) {
            next_slot = enroller::plan_scans(&store, &project, now)?;
        }
        if leads && store.shared().is_some() && std::time::Instant::now() >= next_settle {
            // Another daemon may have died mid-send since the last look.
            next_settle = std::time::Instant::now() + SETTLE_EVERY;
            tokio::task::block_in_place(|| settle(&store, &transport, now))?;
        }
        let enrolled = if !leads {
            0
        } else {
            tokio::task::block_in_place(|| -> Result<usize, StoreError> {
                Ok(
                    enroller::process_changed(&store, &project, now, config.daemon.batch)?
                        + enroller::scan_some(&store, &project, now, config.daemon.batch * 8)?,
                )
            })?
        };
        let ran = pipeline.run_due(&project, now, config.daemon.batch).await?;
        if !ready {
            // The store is open, the workflows are loaded and the first plan is made.
            systemd.ready("sending");
            ready = true;
        }
        let retried = if leads {
            pipeline
                .send_outbox(clock.now(), config.daemon.batch)
                .await?
        } else {
            0
        };
        let hooks = tokio::task::block_in_place(|| -> Result<usize, StoreError> {
            // Outcomes of deliveries already started are recorded even after a lost lead.
            let recorded = deliverer.record(&store, clock.now())?;
            let started = if leads {
                deliverer.start(&store, clock.now())?
            } else {
                0
            };
            Ok(recorded + started)
        })?;
        if enrolled + ran + retried + hooks > 0 {
            continue;
        }
        // Idle from here: let the last batch leave, and make its outcomes durable now rather
        // than at sled's next periodic flush.
        pipeline.finish().await?;
        store.flush()?;
        if until_idle {
            if deliverer.busy() {
                // Webhooks due now are part of what is due: their outcomes are recorded
                // before exiting (a failure moves to a later attempt, not due now).
                deliverer.wait().await;
                continue;
            }
            info!("nothing more is due now");
            break;
        }
        let (outbox_next, hooks_next) = if leads {
            (store.outbox_next()?, deliverer.next_due(&store)?)
        } else {
            (None, None)
        };
        let wake_at = [store.next_due()?, outbox_next, next_slot, hooks_next]
            .into_iter()
            .flatten()
            .min();
        let full = wake_at.map(|at| clock.real_wait_until(at));
        let sleep = [full, Some(watcher.interval()), systemd.max_sleep()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(StdDuration::from_secs(3600));
        let started = std::time::Instant::now();
        let ran_its_course = tokio::select! {
            () = tokio::time::sleep(sleep) => true,
            () = control.wake.notified() => false,
            request = requests.recv() => {
                held.extend(request);
                false
            }
            () = deliverer.wait() => false,
        };
        clock.slept(
            wake_at,
            started.elapsed(),
            ran_its_course && full == Some(sleep),
        );
    }
    systemd.stopping();
    pipeline.finish().await?;
    info!("stopping: flushing the store");
    // Leaves the snapshot `nurture status` reads while no daemon runs. Failing to leave it
    // only makes the next `status` open the store, so the stop still succeeds.
    if let Err(error) = store.close() {
        store.flush()?;
        warn!(%error, "the status snapshot was not written: the next `nurture status` opens the store");
    }
    info!("stopped");
    Ok(())
}

/// Starts watching each inbox for replies.
fn watch_inboxes(accounts: &[Account], inbound: &inbound::Inbound) -> Vec<AbortOnDrop> {
    accounts
        .iter()
        .map(|account| {
            info!(folder = %account.name(), "watching the inbox for replies");
            AbortOnDrop(tokio::spawn(inbox::watch(account.clone(), inbound.clone())))
        })
        .collect()
}

/// How often the leader of several daemons looks for emails that a daemon which died left in
/// flight.
const SETTLE_EVERY: StdDuration = StdDuration::from_secs(5);

/// Settles the emails caught mid-send by a stop: this store's last process (sled), or daemons
/// that died (PostgreSQL).
fn settle(
    store: &Store,
    transport: &Transport,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let recovered = sender::recover(store, transport, now)?;
    if recovered != sender::Recovered::default() {
        warn!(
            sent = recovered.sent,
            sent_again = recovered.again,
            uncertain = recovered.uncertain,
            "emails caught mid-send by a stop are settled; uncertain ones are listed by `nurture outbox uncertain`"
        );
    }
    Ok(())
}

/// Wakes the work loop whenever another process commits work to the shared store (a due
/// time, a changed lead, a queued email: the tables' triggers notify), on a thread of its own
/// that listens as long as the process lives, connecting again after a lost connection.
fn listen_for_work(store: &crate::store::postgres::PgStore, control: Arc<Control>) {
    let store = store.clone();
    std::thread::spawn(move || {
        loop {
            match store.waker() {
                Ok(mut waker) => loop {
                    match waker.wait(StdDuration::from_secs(60)) {
                        Ok(true) => control.wake.notify_one(),
                        Ok(false) => {}
                        Err(error) => {
                            warn!(%error, "lost the database's wake-up channel: listening again");
                            break;
                        }
                    }
                },
                Err(error) => warn!(%error, "cannot listen for the database's wake-ups"),
            }
            std::thread::sleep(StdDuration::from_secs(1));
        }
    });
}

/// Starts the HTTP server when `http.listen` is set; the task ends with the returned guard.
async fn start_http(
    config: &Config,
    project: &Project,
    unsubscribe: Arc<Unsubscribe>,
    inbound: inbound::Inbound,
    // What the status page reads: the daemon's store and the workflows it runs.
    (store, running): (Store, tokio::sync::watch::Receiver<Arc<Project>>),
    health: Arc<http::health::Health>,
) -> Result<Option<AbortOnDrop>, DaemonError> {
    let http = &config.http;
    if http.listen.is_empty() {
        if !http.base_url.is_empty() {
            warn!(base_url = %http.base_url, "http.base_url is set but http.listen is empty: this daemon does not serve the one-click links it sends");
        }
        if !config.forms.is_empty() || !http.api_key_file.is_empty() || !http.api_key_env.is_empty()
        {
            warn!("forms or API keys are configured but http.listen is empty: no API, no forms");
        }
        return Ok(None);
    }
    let doors = http::Doors::new(config, project, unsubscribe, inbound)
        .and_then(|doors| doors.with_page(config, store, running))
        .map_err(DaemonError::Setup)?;
    let listener = tokio::net::TcpListener::bind(&http.listen)
        .await
        .map_err(|e| DaemonError::Setup(format!("http.listen {}: {e}", http.listen)))?;
    info!(
        listen = %http.listen,
        base_url = %http.base_url,
        api = doors.api.is_some(),
        forms = doors.forms.len(),
        page = doors.page.is_some(),
        "HTTP server"
    );
    let config = config.clone();
    let task = tokio::spawn(async move {
        if let Err(error) = http::serve(listener, Arc::new(doors), health, &config).await {
            error!(%error, "the HTTP endpoint stopped");
        }
    });
    Ok(Some(AbortOnDrop(task)))
}

/// Stops a background task when the daemon's loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Installs the signal handlers: SIGINT/SIGTERM stop (a second one exits at once, and the
/// deadline bounds a graceful stop); SIGHUP reloads.
pub fn handle_signals(control: Arc<Control>, deadline: StdDuration) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let setup = |e: std::io::Error| DaemonError::Setup(format!("cannot listen for signals: {e}"));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(setup)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(setup)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(setup)?;
    let stopper = control.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        info!(
            deadline_seconds = deadline.as_secs(),
            "stop requested; finishing the work in hand"
        );
        stopper.stop();
        tokio::select! {
            _ = interrupt.recv() => error!("second stop signal: exiting now"),
            _ = terminate.recv() => error!("second stop signal: exiting now"),
            () = tokio::time::sleep(deadline) => error!("the graceful stop took too long: exiting now"),
        }
        std::process::exit(130);
    });
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            info!("SIGHUP: reloading workflows and templates");
            control.request_reload();
        }
    });
    Ok(())
}
