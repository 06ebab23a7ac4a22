//! `vmxtool exit` (being built).

use std::process::ExitCode;

/// Arguments of `vmxtool exit`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `vmxtool exit`.
pub fn run(_args: Args) -> Result<ExitCode, String> {
    Err("this subcommand is not part of this build yet".into())
}
