//! `vmxtool check` (being built).

use std::process::ExitCode;

/// Arguments of `vmxtool check`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `vmxtool check`.
pub fn run(_args: Args) -> Result<ExitCode, String> {
    Err("this subcommand is not part of this build yet".into())
}
