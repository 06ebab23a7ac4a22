//! `vmxtool exit`: decode a VM exit from the raw values of its exit-information fields, with the
//! `exits` crate's decoder (the same one a hypervisor runs on a live VMCS).

use std::cell::RefCell;
use std::process::ExitCode;

use exits::{EventInjection, ExitField, ExitReason, RawExitInfo, VmExit};
use serde::Serialize;

use crate::io;

/// Arguments of `vmxtool exit`. Numbers are decimal or `0x`-prefixed hexadecimal.
#[derive(clap::Args)]
pub struct Args {
    /// The exit-reason field: a basic reason (e.g. 30) or the full 32-bit value with its flags
    /// (e.g. 0x80000021 for a VM-entry failure due to invalid guest state).
    #[arg(value_parser = io::parse_u32)]
    reason: u32,
    /// The exit qualification (default 0).
    #[arg(value_parser = io::parse_u64)]
    qualification: Option<u64>,
    /// The VM-exit instruction-information field.
    #[arg(long, value_name = "X", value_parser = io::parse_u32)]
    instruction_info: Option<u32>,
    /// The VM-exit interruption-information field.
    #[arg(long, value_name = "X", value_parser = io::parse_u32)]
    interruption_info: Option<u32>,
    /// The VM-exit interruption error code.
    #[arg(long, value_name = "X", value_parser = io::parse_u32)]
    error_code: Option<u32>,
    /// The IDT-vectoring information field.
    #[arg(long, value_name = "X", value_parser = io::parse_u32)]
    idt_vectoring: Option<u32>,
    /// The IDT-vectoring error code.
    #[arg(long, value_name = "X", value_parser = io::parse_u32)]
    idt_error_code: Option<u32>,
    /// The VM-exit instruction length (default 0, printed as given).
    #[arg(long, value_name = "X", value_parser = io::parse_u32)]
    length: Option<u32>,
    /// The guest-linear-address field.
    #[arg(long, value_name = "X", value_parser = io::parse_u64)]
    guest_linear: Option<u64>,
    /// The guest-physical-address field.
    #[arg(long, value_name = "X", value_parser = io::parse_u64)]
    guest_physical: Option<u64>,
    /// Print the decoded exit as a JSON object with `reason`, `exit` and `reinjection`.
    #[arg(long)]
    json: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Decoded {
    reason: ExitReason,
    exit: VmExit,
    /// The VM-entry event injection that re-delivers the event the exit interrupted, if any.
    reinjection: Option<EventInjection>,
}

/// Parses a decimal or `0x`-hexadecimal number.
fn option_of(field: ExitField) -> Option<&'static str> {
    match field {
        ExitField::ExitReason => None,
        ExitField::ExitQualification => Some("<QUALIFICATION>"),
        ExitField::GuestLinearAddress => Some("--guest-linear"),
        ExitField::GuestPhysicalAddress => Some("--guest-physical"),
        ExitField::InterruptionInformation => Some("--interruption-info"),
        ExitField::InterruptionErrorCode => Some("--error-code"),
        ExitField::IdtVectoringInformation => Some("--idt-vectoring"),
        ExitField::IdtVectoringErrorCode => Some("--idt-error-code"),
        ExitField::InstructionLength => Some("--length"),
        ExitField::InstructionInformation => Some("--instruction-info"),
    }
}

/// Runs `vmxtool exit`.
pub fn run(args: Args) -> Result<ExitCode, String> {
    let raw = RawExitInfo {
        reason: args.reason,
        qualification: args.qualification.unwrap_or_default(),
        guest_linear_address: args.guest_linear.unwrap_or_default(),
        guest_physical_address: args.guest_physical.unwrap_or_default(),
        interruption_info: args.interruption_info.unwrap_or_default(),
        interruption_error_code: args.error_code.unwrap_or_default(),
        idt_vectoring_info: args.idt_vectoring.unwrap_or_default(),
        idt_vectoring_error_code: args.idt_error_code.unwrap_or_default(),
        instruction_length: args.length.unwrap_or_default(),
        instruction_info: args.instruction_info.unwrap_or_default(),
    };
    let given = [
        (ExitField::ExitQualification, args.qualification.is_some()),
        (ExitField::GuestLinearAddress, args.guest_linear.is_some()),
        (
            ExitField::GuestPhysicalAddress,
            args.guest_physical.is_some(),
        ),
        (
            ExitField::InterruptionInformation,
            args.interruption_info.is_some(),
        ),
        (ExitField::InterruptionErrorCode, args.error_code.is_some()),
        (
            ExitField::IdtVectoringInformation,
            args.idt_vectoring.is_some(),
        ),
        (
            ExitField::IdtVectoringErrorCode,
            args.idt_error_code.is_some(),
        ),
        (ExitField::InstructionLength, args.length.is_some()),
        (
            ExitField::InstructionInformation,
            args.instruction_info.is_some(),
        ),
    ];

    let reason = ExitReason::from_raw(raw.reason);
    let used = RefCell::new(Vec::new());
    let exit = VmExit::decode(reason, &mut |field| {
        used.borrow_mut().push(field);
        Ok::<u64, std::convert::Infallible>(raw.get(field))
    })
    .unwrap_or_else(|never| match never {});
    let used = used.into_inner();
    for (field, is_given) in given {
        let unused = is_given && !used.contains(&field);
        if let Some(option) = option_of(field).filter(|_| unused) {
            io::write_stderr(&format!(
                "vmxtool: note: {option} ({}) is not used for this exit",
                field.sdm_name()
            ));
        }
    }

    let reinjection = exit.idt_vectoring().map(|event| event.reinjection());
    if args.json {
        let decoded = Decoded {
            reason,
            exit,
            reinjection,
        };
        let text = serde_json::to_string_pretty(&decoded)
            .map_err(|e| format!("cannot encode JSON: {e}"))?;
        io::write_stdout(&format!("{text}\n"))?;
    } else {
        let mut text = format!("exit reason: {reason}\nexit:        {exit}\n");
        if let Some(injection) = reinjection {
            text.push_str(&format!(
                "re-inject:   {injection} (VM-entry interruption information {:#010x})\n",
                injection.interruption_info().bits()
            ));
        }
        io::write_stdout(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}
