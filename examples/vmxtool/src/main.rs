//! `vmxtool`: decode Intel VMX capabilities, VMCS fields and VM exits, and check a VMCS, from the command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod caps;
mod check;
mod exit;
mod fields;
mod io;
/// What the example hypervisor, as L0, offers a guest hypervisor: the very policy mini-hv uses.
#[path = "../../mini-hv/src/nested_policy.rs"]
mod nested_policy;
/// The example hypervisor's requirements, the very data mini-hv negotiates with.
#[path = "../../mini-hv/src/requirements.rs"]
mod requirements;

/// Decode Intel VMX capabilities, VMCS fields and VM exits, and check a VMCS.
#[derive(Parser)]
#[command(name = "vmxtool", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode the VMX capability MSRs (live CPU, /dev/cpu/N/msr or a snapshot file).
    Caps(caps::Args),
    /// List every VMCS field with its encoding, width, type and access.
    Fields(fields::Args),
    /// Decode a VM exit from its raw exit reason, qualification and information fields.
    Exit(exit::Args),
    /// Run the software VM-entry checker on a VMCS snapshot.
    Check(check::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to standard output, usage errors to standard error; neither
            // may abort when its stream is closed or full.
            let code = u8::try_from(e.exit_code()).unwrap_or(2);
            if let Err(write) = e.print()
                && write.kind() != std::io::ErrorKind::BrokenPipe
            {
                io::write_stderr(&format!("vmxtool: cannot write: {write}"));
                return ExitCode::FAILURE;
            }
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Caps(args) => caps::run(args),
        Command::Fields(args) => fields::run(args),
        Command::Exit(args) => exit::run(args),
        Command::Check(args) => check::run(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            io::write_stderr(&format!("vmxtool: {message}"));
            ExitCode::FAILURE
        }
    }
}
