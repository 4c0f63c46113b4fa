//! The command line: clap definitions and one module per subcommand.

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    0
}
