//! `nurture contacts`: the leads promoted to contacts, when and why.

use clap::Args;

use super::{Cli, CliError, ExitCode};

#[derive(Debug, Args)]
pub struct ContactsArgs {}

pub fn run(cli: &Cli, _args: &ContactsArgs) -> Result<ExitCode, CliError> {
    let _store = cli.open_store()?;
    Err(CliError::Usage("not built yet".into()))
}
