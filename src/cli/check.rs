//! `nurture check [PATH…]`: compile workflows and their templates, and look at the settings
//! `nurture run` would refuse (unknown names, values out of range, SMTP and IMAP addresses,
//! password sources, CA files, the unsubscribe key and base URL), without connecting anywhere;
//! print every problem.
//!
//! When the configured store exists and no daemon holds it, check also reads it: the attribute
//! names the leads carry (a template field no lead has is an error), and what the edits do to
//! the enrollments in flight (a removed step, a step whose instructions changed).

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;

use super::{Cli, CliError, ExitCode, Project};
use crate::config::{Config, ConfigError, TransportKind};
use crate::daemon::reload::{Continues, InFlight, in_flight};
use crate::daemon::smtp::Smtp;
use crate::diagnostic::{Diagnostic, Severity};
use crate::mail::imap::Account;
use crate::store::{Store, StoreError};
use crate::unsubscribe::Unsubscribe;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Workflow files or folders (default: the workflows folder).
    pub paths: Vec<PathBuf>,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub deny_warnings: bool,
}

pub fn run(cli: &Cli, args: &CheckArgs) -> Result<ExitCode, CliError> {
    let paths = if args.paths.is_empty() {
        vec![cli.workflows.clone()]
    } else {
        args.paths.clone()
    };
    let store = store_at_hand(cli);
    let attributes = store.as_ref().and_then(stored_attributes);
    let mut project = Project::load_knowing(&paths, &cli.templates, attributes);
    if let Some(store) = &store {
        project
            .diagnostics
            .extend(in_flight_warnings(store, &project));
    }
    project.diagnostics.extend(configuration_errors(cli));
    if !project.diagnostics.is_empty() {
        eprint!("{}", project.render_diagnostics());
        eprintln!();
    }
    let errors = project.count(Severity::Error);
    let warnings = project.count(Severity::Warning);
    let summary = format!(
        "{} workflow{}, {} template{}: {} error{}, {} warning{}",
        project.workflows.len(),
        plural(project.workflows.len()),
        project.templates.names().len(),
        plural(project.templates.names().len()),
        errors,
        plural(errors),
        warnings,
        plural(warnings),
    );
    if errors > 0 || (args.deny_warnings && warnings > 0) {
        return Err(CliError::Invalid(format!("check failed: {summary}")));
    }
    println!("ok: {summary}");
    print_dkim_record(cli);
    Ok(ExitCode::Success)
}

/// With `[dkim]` set (and its key loaded: a bad one is an error above), the DNS record that
/// lets receivers verify the signatures.
fn print_dkim_record(cli: &Cli) {
    let Ok(config) = cli.load_config() else {
        return;
    };
    if let Ok(Some(signer)) = crate::mail::dkim::Signer::load(&config.dkim) {
        let (name, value) = signer.dns_record();
        println!(
            "dkim: the key loads; publish this DNS record for receivers to verify the signatures:"
        );
        println!("{name} TXT \"{value}\"");
    }
}

/// What `nurture run` would refuse at start-up in the configuration.
fn configuration_errors(cli: &Cli) -> Vec<Diagnostic> {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return settings_errors(error),
    };
    let mut errors = Vec::new();
    if config.transport.kind == TransportKind::Smtp
        && let Err(error) = Smtp::new(config.smtp.clone())
    {
        errors.push(configuration_error(error));
    }
    if let Err(error) = Account::from_config(&config.imap) {
        errors.push(configuration_error(error));
    }
    if let Err(error) = Unsubscribe::check(&config.http) {
        errors.push(configuration_error(error.to_string()));
    }
    // The subscriptions, then each endpoint's secret, as the daemon reads them.
    if let Err(error) = crate::webhooks::Routes::from_config(&config.webhooks)
        .and_then(|_| crate::daemon::webhooks::Deliverer::new(&config.webhooks).map(drop))
    {
        errors.push(configuration_error(error));
    }
    if let Err(error) = crate::daemon::http::api::Keys::load(&config.http) {
        errors.push(configuration_error(error));
    }
    if let Err(error) = crate::mail::dkim::Signer::load(&config.dkim) {
        errors.push(configuration_error(error));
    }
    for form in &config.forms {
        errors.extend(form.problems().into_iter().map(configuration_error));
    }
    errors
}

/// The settings `nurture run` would refuse before anything else (unknown names, wrong types,
/// values out of range), as the diagnostics the configuration made, each at its place.
fn settings_errors(error: ConfigError) -> Vec<Diagnostic> {
    match error {
        ConfigError::Invalid(diagnostics) => diagnostics,
        other => vec![configuration_error(other.to_string())],
    }
}

fn configuration_error(message: String) -> Diagnostic {
    Diagnostic::error(format!("configuration: {message}"))
        .with_hint("see nurture.example.toml for every setting and its meaning")
}

/// The configured store, when it exists and no daemon holds it; otherwise a note says what is
/// not checked (the daemon logs the same on reload).
fn store_at_hand(cli: &Cli) -> Option<Store> {
    let config = cli.load_config().ok()?;
    if config.store.url.is_empty() && !config.store.path.join("db").exists() {
        return None;
    }
    match Store::open_configured(&config.store) {
        Ok(store) => Some(store),
        Err(StoreError::Locked { .. }) => {
            eprintln!(
                "note: the store is in use by the daemon; the leads' attributes and the enrollments in edited steps are not checked (the daemon logs them when it reloads)"
            );
            None
        }
        Err(error) => {
            eprintln!("note: the store is not checked: {error}");
            None
        }
    }
}

/// Every attribute name some stored lead carries.
fn stored_attributes(store: &Store) -> Option<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for lead in store.leads() {
        match lead {
            Ok(lead) => names.extend(lead.attributes.into_keys()),
            Err(error) => {
                eprintln!("note: the leads' attributes are not checked: {error}");
                return None;
            }
        }
    }
    Some(names)
}

/// Warnings about the enrollments in the store that an edit affects: those standing in a step
/// the workflow no longer has (they will end with that reason), and those standing inside a
/// step whose instructions changed (where they continue).
fn in_flight_warnings(store: &Store, project: &Project) -> Vec<Diagnostic> {
    let InFlight { stranded, moved } = match in_flight(store, project) {
        Ok(in_flight) => in_flight,
        Err(error) => {
            eprintln!("note: the enrollments in edited steps are not checked: {error}");
            return Vec::new();
        }
    };
    let mut diagnostics: Vec<Diagnostic> = stranded
        .into_iter()
        .map(|s| {
            let mut diagnostic = Diagnostic::warning(format!(
                "{} enrollment{} of `{}` stand{} in step `{}`, which is no longer in the workflow",
                s.enrollments,
                plural(s.enrollments),
                s.workflow,
                verb_s(s.enrollments),
                s.step
            ))
            .with_hint(
                "they will exit with the reason \"step removed\" when next due; keep the step (or rename it back) to let them continue",
            );
            if let Some(workflow) = project.workflow(&s.workflow) {
                diagnostic = diagnostic.in_file(&workflow.path);
            }
            diagnostic
        })
        .collect();
    for m in moved {
        let diagnostic = Diagnostic::warning(format!(
            "{} enrollment{} of `{}` stand{} inside step `{}`, whose instructions changed: {}",
            m.enrollments,
            plural(m.enrollments),
            m.workflow,
            verb_s(m.enrollments),
            m.step,
            m.to.describe()
        ))
        .with_label("edited while enrollments stand in it")
        .with_hint(match &m.to {
            Continues::NextStep { missing, .. } => format!(
                "to let them continue inside the step, keep its `send \"{missing}\"`; see \"Editing live workflows\" in the README"
            ),
            _ => "no email is sent twice or skipped; see \"Editing live workflows\" in the README"
                .to_string(),
        });
        let Some(workflow) = project.workflow(&m.workflow) else {
            continue;
        };
        let step = workflow
            .step_index(&m.step)
            .map(|index| &workflow.steps[index]);
        let diagnostic = match (step, std::fs::read_to_string(&workflow.path)) {
            (Some(step), Ok(source)) => diagnostic.at(&workflow.path, &source, step.span.clone()),
            _ => diagnostic.in_file(&workflow.path),
        };
        diagnostics.push(diagnostic);
    }
    diagnostics
}

/// "stands" for one, "stand" for several.
fn verb_s(n: usize) -> &'static str {
    if n == 1 { "s" } else { "" }
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
