//! `vmxtool caps` (being built).

use std::process::ExitCode;

/// Arguments of `vmxtool caps`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `vmxtool caps`.
pub fn run(_args: Args) -> Result<ExitCode, String> {
    Err("this subcommand is not part of this build yet".into())
}
