//! Reloading workflows and templates while running: on SIGHUP or when a file in the folders
//! changes. The new files are checked first; on any error the running version stays and every
//! diagnostic is logged.
//!
//! What an edit does to enrollments in flight: an enrollment continues at the step it stood
//! in, by name, under the new version; if that step no longer exists, the enrollment ends with
//! the reason "step `x` was removed" the next time it is due. If the step's own instructions
//! changed, the enrollment finds its place in them again from what it did there
//! (`engine::resume`: after the last email it got there, never sending one twice). The reload
//! logs how many enrollments each edit affects and where they go, as `nurture check` shows
//! them. A workflow whose file disappears keeps its enrollments waiting (re-checked hourly)
//! rather than ending them, so a botched rename loses nobody.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use tracing::{error, info, warn};

use super::Paths;
use crate::diagnostic::Severity;
use crate::engine::resume::{self, Resume};
use crate::project::Project;
use crate::store::{Store, StoreError};

/// Notices changes in the workflow and template folders by their files' names, sizes and
/// modification times, looked at every `interval` (a few stat calls: no measurable CPU).
pub struct Watcher {
    paths: Paths,
    interval: Option<Duration>,
    last_look: Instant,
    fingerprint: BTreeMap<String, (u64, Option<SystemTime>)>,
}

impl Watcher {
    /// `seconds == 0` turns watching off (reload on SIGHUP only).
    pub fn new(paths: &Paths, seconds: u64) -> Watcher {
        Watcher {
            paths: paths.clone(),
            interval: (seconds > 0).then(|| Duration::from_secs(seconds)),
            last_look: Instant::now(),
            fingerprint: fingerprint(paths),
        }
    }

    /// How long the work loop may sleep before the next look.
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Duration::from_secs(3600))
    }

    /// Whether anything changed since the last look (looks at most once per interval).
    pub fn changed(&mut self) -> bool {
        let Some(interval) = self.interval else {
            return false;
        };
        if self.last_look.elapsed() < interval {
            return false;
        }
        self.last_look = Instant::now();
        let now = fingerprint(&self.paths);
        if now == self.fingerprint {
            return false;
        }
        self.fingerprint = now;
        info!("workflow or template files changed: reloading");
        true
    }
}

fn fingerprint(paths: &Paths) -> BTreeMap<String, (u64, Option<SystemTime>)> {
    let mut files = BTreeMap::new();
    for root in [&paths.workflows, &paths.templates] {
        walk(root, &mut files);
    }
    files
}

fn walk(dir: &Path, files: &mut BTreeMap<String, (u64, Option<SystemTime>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk(&path, files);
        } else {
            files.insert(
                path.display().to_string(),
                (meta.len(), meta.modified().ok()),
            );
        }
    }
}

/// Loads and checks the folders again. `Some(project)` replaces the running one; `None` means
/// there were errors (all logged) and the running version stays.
pub fn reload(
    store: &Store,
    paths: &Paths,
    running: &Project,
) -> Result<Option<Project>, StoreError> {
    let project = Project::load(std::slice::from_ref(&paths.workflows), &paths.templates);
    log_diagnostics(&project);
    let errors = project.count(Severity::Error);
    if errors > 0 {
        error!(
            errors,
            running = running.workflows.len(),
            "reload refused: the running workflows stay"
        );
        return Ok(None);
    }
    for workflow in &project.workflows {
        match running.workflow(&workflow.name) {
            Some(old) if old.version != workflow.version => {
                info!(workflow = %workflow.name, version = %workflow.version, "workflow changed");
            }
            None => info!(workflow = %workflow.name, "workflow added"),
            Some(_) => {}
        }
    }
    for old in &running.workflows {
        if project.workflow(&old.name).is_none() {
            warn!(workflow = %old.name, "workflow removed: its enrollments wait until it comes back");
        }
    }
    warn_edited_steps(store, &project)?;
    info!(workflows = project.workflows.len(), "reloaded");
    Ok(Some(project))
}

/// Every diagnostic, one log line each (rendered the way `nurture check` prints it).
pub fn log_diagnostics(project: &Project) {
    for diagnostic in &project.diagnostics {
        match diagnostic.severity {
            Severity::Error => error!("{diagnostic}"),
            Severity::Warning => warn!("{diagnostic}"),
        }
    }
}

/// Active enrollments standing in a step their workflow no longer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stranded {
    pub workflow: String,
    pub step: String,
    pub enrollments: usize,
}

/// Active enrollments standing inside a step whose instructions changed under them, and where
/// they continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub workflow: String,
    pub step: String,
    pub to: Continues,
    pub enrollments: usize,
}

/// Where enrollments inside an edited step continue (see `engine::resume`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Continues {
    /// Right after the `send` of this template, the last email they got in the step.
    AfterSend(String),
    /// From the step's start, without waiting again or doing anything twice (they got no email
    /// in the step yet).
    FromStart,
    /// The last email they got there (`missing`) is gone from the step: on to step `next`, or
    /// the end of the workflow when `None`.
    NextStep {
        missing: String,
        next: Option<String>,
    },
}

/// What an edit does to the enrollments in the store: who stands in a removed step, who inside
/// a changed one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub stranded: Vec<Stranded>,
    pub moved: Vec<Moved>,
}

/// Looks at every active enrollment once, against the workflows of `project`.
pub fn in_flight(store: &Store, project: &Project) -> Result<InFlight, StoreError> {
    let mut stranded: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut moved: BTreeMap<(String, String, Continues), usize> = BTreeMap::new();
    for enrollment in store.enrollments() {
        let enrollment = enrollment?;
        if !enrollment.is_active() {
            continue;
        }
        let Some(workflow) = project.workflow(&enrollment.workflow) else {
            continue;
        };
        let position = enrollment.position;
        let Some(index) = workflow.step_index(&position.step) else {
            *stranded
                .entry((enrollment.workflow, position.step))
                .or_default() += 1;
            continue;
        };
        let step = &workflow.steps[index];
        if !resume::changed(step, &position) {
            continue;
        }
        let to = match resume::resume(step, &position) {
            // Nothing done in the step yet: it simply runs as it now is.
            Resume::Start => continue,
            Resume::Replay {
                after: Some(template),
                ..
            } => Continues::AfterSend(template),
            Resume::Replay { after: None, .. } => Continues::FromStart,
            Resume::NextStep { missing } => Continues::NextStep {
                missing,
                next: workflow.steps.get(index + 1).map(|next| next.name.clone()),
            },
        };
        *moved
            .entry((enrollment.workflow, position.step, to))
            .or_default() += 1;
    }
    Ok(InFlight {
        stranded: stranded
            .into_iter()
            .map(|((workflow, step), enrollments)| Stranded {
                workflow,
                step,
                enrollments,
            })
            .collect(),
        moved: moved
            .into_iter()
            .map(|((workflow, step, to), enrollments)| Moved {
                workflow,
                step,
                to,
                enrollments,
            })
            .collect(),
    })
}

impl Continues {
    /// "they continue after its `send \"demo-offer\"`", for logs and `nurture check`.
    pub fn describe(&self) -> String {
        match self {
            Continues::AfterSend(template) => {
                format!(
                    "they continue after its `send \"{template}\"`, the last email they got there"
                )
            }
            Continues::FromStart => "they got no email there yet, so they continue from its start \
                 (without waiting again or doing anything twice)"
                .to_string(),
            Continues::NextStep { missing, next } => {
                let then = match next {
                    Some(next) => format!("go on to step `{next}`"),
                    None => "complete the workflow".to_string(),
                };
                format!(
                    "the last email they got there, `{missing}`, is no longer in it, so they \
                     {then} (the rest of the step is left out)"
                )
            }
        }
    }
}

/// Logs, per workflow and step, how many active enrollments stand in a step that no longer
/// exists, and how many inside a step whose instructions changed (and where they continue).
pub fn warn_edited_steps(store: &Store, project: &Project) -> Result<(), StoreError> {
    let in_flight = in_flight(store, project)?;
    for stranded in in_flight.stranded {
        warn!(workflow = %stranded.workflow, step = %stranded.step, enrollments = stranded.enrollments,
            "step was removed: these enrollments will exit with that reason when next due");
    }
    for moved in in_flight.moved {
        info!(workflow = %moved.workflow, step = %moved.step, enrollments = moved.enrollments,
            "step changed: {}", moved.to.describe());
    }
    Ok(())
}
