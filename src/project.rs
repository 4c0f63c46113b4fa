//! A project on disk: its templates and workflows, compiled together, with every diagnostic.
//!
//! `check`, `dry-run` (and the daemon's reload) all start here, so they agree on what is valid.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Severity};
use crate::dsl;
use crate::mail::templates::{KnownFields, Templates};
use crate::workflow::Workflow;

pub struct Project {
    pub templates: Templates,
    /// Only the workflows that compiled without error.
    pub workflows: Vec<Workflow>,
    /// Every problem found, errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Project {
    /// The scoring rules every lead is scored by (see `dsl::load`).
    pub fn scoring(&self) -> std::sync::Arc<crate::scoring::Scoring> {
        self.workflows
            .first()
            .map(|workflow| workflow.scoring.clone())
            .unwrap_or_default()
    }

    /// For a lead whose temperature just changed to `temperature`: the `when lead becomes …`
    /// handlers to run, as happenings (each workflow that has one, for the lead's enrollment in
    /// it, whatever its state).
    pub fn became(
        &self,
        lead: &str,
        temperature: crate::scoring::Temperature,
    ) -> Vec<crate::daemon::scheduler::Happening> {
        self.workflows
            .iter()
            .filter(|w| w.handlers.became.iter().any(|(t, _)| *t == temperature))
            .map(|w| crate::daemon::scheduler::Happening {
                lead: lead.to_string(),
                workflow: Some(w.name.clone()),
                input: Some(crate::engine::Input::Became(temperature)),
                suppress: None,
                note: None,
                receipt: None,
            })
            .collect()
    }

    /// Compiles the templates in `templates_dir`, then the workflow files or folders in
    /// `workflow_paths` against them, then looks for template fields a lead may lack.
    pub fn load(workflow_paths: &[PathBuf], templates_dir: &Path) -> Project {
        Project::load_knowing(workflow_paths, templates_dir, None)
    }

    /// [`Project::load`], also knowing the attribute names the stored leads carry (`nurture
    /// check` with the store at hand): a template field no lead has becomes an error.
    pub fn load_knowing(
        workflow_paths: &[PathBuf],
        templates_dir: &Path,
        stored_attributes: Option<BTreeSet<String>>,
    ) -> Project {
        let (templates, mut diagnostics) = Templates::load(templates_dir);
        let loaded = dsl::load(workflow_paths, &templates.names());
        diagnostics.extend(loaded.diagnostics);

        let known = KnownFields {
            named: loaded
                .workflows
                .iter()
                .flat_map(|workflow| workflow.fields())
                .map(str::to_string)
                .collect(),
            stored: stored_attributes,
        };
        let mut checked: BTreeSet<&str> = BTreeSet::new();
        for workflow in &loaded.workflows {
            for name in workflow.templates() {
                if checked.insert(name) {
                    diagnostics.extend(templates.field_diagnostics(name, &known));
                }
            }
            diagnostics.extend(subject_warnings(&templates, workflow));
        }
        diagnostics.sort_by(|a, b| a.location.cmp(&b.location));
        Project {
            templates,
            workflows: loaded.workflows,
            diagnostics,
        }
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }

    /// Every diagnostic, separated by blank lines, as a compiler prints them.
    pub fn render_diagnostics(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn workflow(&self, name: &str) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.name == name)
    }
}

/// A subject that uses a field some leads lack fails for those leads at send time.
fn subject_warnings(templates: &Templates, workflow: &Workflow) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    for step in &workflow.steps {
        for send in step.code.iter().filter_map(|instr| match instr {
            crate::workflow::Instr::Send(send) => Some(send),
            _ => None,
        }) {
            for field in templates.optional_fields_in_subject(&send.subject) {
                warnings.push(
                    Diagnostic::warning(format!(
                        "the subject of `{}` in step `{}` uses `{field}`, which some leads may not have",
                        send.template, step.name
                    ))
                    .in_file(&workflow.path)
                    .with_hint(format!(
                        "write {{{{default {field} \"…\"}}}} so every lead gets a subject"
                    )),
                );
            }
        }
    }
    warnings
}
