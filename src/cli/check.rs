//! `nurture check [PATH…]`: compile workflows and their templates, and look at the settings
//! `nurture run` would refuse (unknown names, values out of range, SMTP and IMAP addresses,
//! password sources, CA files, the unsubscribe key and base URL), without connecting anywhere;
//! print every problem.

use std::path::PathBuf;

use clap::Args;

use super::{Cli, CliError, ExitCode, Project};
use crate::config::{Config, ConfigError, TransportKind};
use crate::daemon::reload::stranded_enrollments;
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
    let mut project = Project::load(&paths, &cli.templates);
    let in_flight = in_flight_warnings(cli, &project);
    project.diagnostics.extend(in_flight);
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
    Ok(ExitCode::Success)
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

/// Warnings about enrollments in the store that stand in a step the edited workflows no longer
/// have: they will end with that reason. Looked at only when the configured store exists; a
/// store held by a running daemon is skipped with a note (the daemon logs the same on reload).
fn in_flight_warnings(cli: &Cli, project: &Project) -> Vec<Diagnostic> {
    let Ok(config) = cli.load_config() else {
        return Vec::new();
    };
    if !config.store.path.join("db").exists() {
        return Vec::new();
    }
    let stranded = Store::open(&config.store.path, config.cache_bytes())
        .and_then(|store| stranded_enrollments(&store, project));
    match stranded {
        Ok(stranded) => stranded
            .into_iter()
            .map(|s| {
                let mut diagnostic = Diagnostic::warning(format!(
                    "{} enrollment{} of `{}` stand{} in step `{}`, which is no longer in the workflow",
                    s.enrollments,
                    plural(s.enrollments),
                    s.workflow,
                    if s.enrollments == 1 { "s" } else { "" },
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
            .collect(),
        Err(StoreError::Locked { .. }) => {
            eprintln!(
                "note: the store is in use by the daemon; enrollments in removed steps are not checked (the daemon logs them when it reloads)"
            );
            Vec::new()
        }
        Err(error) => {
            eprintln!("note: enrollments in removed steps are not checked: {error}");
            Vec::new()
        }
    }
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
