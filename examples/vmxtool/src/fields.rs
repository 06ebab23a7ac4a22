//! `vmxtool fields` (being built).

use std::process::ExitCode;

/// Arguments of `vmxtool fields`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `vmxtool fields`.
pub fn run(_args: Args) -> Result<ExitCode, String> {
    Err("this subcommand is not part of this build yet".into())
}
