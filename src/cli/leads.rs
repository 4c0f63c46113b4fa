//! `nurture leads …`: import, list, show and change leads.

use clap::Args;

use super::{Cli, CliError, ExitCode};

#[derive(Debug, Args)]
pub struct LeadsArgs {}

pub fn run(cli: &Cli, _args: &LeadsArgs) -> Result<ExitCode, CliError> {
    let _store = cli.open_store()?;
    Err(CliError::Usage("not built yet".into()))
}
