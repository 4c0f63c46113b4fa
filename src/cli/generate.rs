//! `nurture completions SHELL` and `nurture man --out DIR`: shell completions and man pages,
//! generated from the clap definitions in [`super::Cli`], so they can never disagree with the
//! command line they describe.

use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, CliError, ExitCode};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The folder to write `nurture.1` and one page per subcommand (`nurture-leads-import.1`…)
    /// into; created if missing.
    #[arg(long, default_value = "man")]
    pub out: PathBuf,
}

/// Prints the completion script for the shell to standard output.
pub fn completions(args: &CompletionsArgs) -> Result<ExitCode, CliError> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "nurture", &mut std::io::stdout());
    Ok(ExitCode::Success)
}

/// Writes the man pages into `--out`.
pub fn man(args: &ManArgs) -> Result<ExitCode, CliError> {
    let write_error = |e: std::io::Error| {
        CliError::Input(format!(
            "cannot write the man pages into {}: {e}",
            args.out.display()
        ))
    };
    std::fs::create_dir_all(&args.out).map_err(write_error)?;
    clap_mangen::generate_to(Cli::command(), &args.out).map_err(write_error)?;
    println!("man pages written to {}", args.out.display());
    Ok(ExitCode::Success)
}
