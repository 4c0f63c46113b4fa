//! `nurture check [PATH…]`: compile workflows and their templates, print every problem.

use std::path::PathBuf;

use clap::Args;

use super::{Cli, CliError, ExitCode, Project};
use crate::diagnostic::Severity;

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
    let project = Project::load(&paths, &cli.templates);
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

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
