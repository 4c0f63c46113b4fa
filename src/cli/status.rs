//! `nurture status`: per-workflow counts and the next sends due.

use clap::Args;

use super::{Cli, CliError, ExitCode};

#[derive(Debug, Args)]
pub struct StatusArgs {}

pub fn run(cli: &Cli, _args: &StatusArgs) -> Result<ExitCode, CliError> {
    let _store = cli.open_store()?;
    Err(CliError::Usage("not built yet".into()))
}
