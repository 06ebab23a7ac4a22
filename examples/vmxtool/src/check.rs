//! `vmxtool check`: runs the software VM-entry checker offline on a VMCS snapshot and prints every
//! violated rule and the predicted outcome of VMLAUNCH (or VMRESUME).
//!
//! Exit status: 0 when the VM entry is predicted to succeed, 2 when it is predicted to fail, 1 on
//! an error (unreadable input).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};
use vmcs::check::{
    Checker, CpuFacts, EntryInstruction, FlatMemory, LaunchContext, MemoryError, Outcome,
    PhysMemory, Report, Rule, Violation,
};
use vmcs::{VmcsRead, VmcsSnapshot, fields};
use vmx_caps::{MsrSnapshot, VmxCapabilities};
use vmx_core::{VmFail, VmInstructionError};

use crate::io;

/// Arguments of `vmxtool check`.
#[derive(clap::Args)]
pub struct Args {
    /// The VMCS: a JSON snapshot (the `vmcs` crate's serde format, fields keyed by encoding or name).
    #[arg(long, value_name = "SNAPSHOT.json")]
    vmcs: PathBuf,
    /// The capability MSRs: a dump with one `<msr hex> <value hex>` pair a line.
    #[arg(long, value_name = "DUMP.msr")]
    caps: PathBuf,
    /// MAXPHYADDR, the physical-address width (CPUID.80000008H:EAX\[7:0\]).
    #[arg(long, value_name = "N", default_value_t = 39, value_parser = clap::value_parser!(u8).range(32..=52))]
    maxphyaddr: u8,
    /// Linear-address width for canonicality checks: 48, or 57 with 5-level paging.
    #[arg(long, value_name = "N", default_value_t = 48, value_parser = parse_width)]
    linear_width: u8,
    /// Predict VMRESUME (of a launched VMCS) instead of VMLAUNCH (of a clear one).
    #[arg(long)]
    vmresume: bool,
    /// The current-VMCS pointer (for the VMCS link pointer check K24); unchecked if absent.
    #[arg(long, value_name = "ADDR", value_parser = io::parse_u64)]
    current_vmcs: Option<u64>,
    /// Physical memory for the rules that read it (virtual-APIC page, VMCS link pointer header,
    /// PDPTEs, VM-entry MSR-load area): the raw contents of FILE placed at physical address ADDR.
    /// Repeatable; without it those rules are listed as unchecked.
    #[arg(long, value_name = "ADDR=FILE", value_parser = parse_region)]
    memory: Vec<(u64, PathBuf)>,
    /// Print a JSON object instead of the text report.
    #[arg(long)]
    json: bool,
}

fn parse_region(s: &str) -> Result<(u64, PathBuf), String> {
    let (address, file) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ADDR=FILE"))?;
    Ok((io::parse_u64(address)?, PathBuf::from(file)))
}

/// Memory images at physical addresses; a read must fall inside one image.
struct Regions(Vec<(u64, Vec<u8>)>);

impl PhysMemory for Regions {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        for (base, bytes) in &self.0 {
            let mut region = FlatMemory { base: *base, bytes };
            if region.read(address, buf).is_ok() {
                return Ok(());
            }
        }
        if self.0.is_empty() {
            Err(MemoryError::Unavailable)
        } else {
            Err(MemoryError::OutOfRange {
                address,
                len: buf.len(),
            })
        }
    }
}

fn parse_width(s: &str) -> Result<u8, String> {
    match s {
        "48" => Ok(48),
        "57" => Ok(57),
        _ => Err(format!("{s:?}: the linear-address width is 48 or 57")),
    }
}

struct SnapshotVmcs(VmcsSnapshot);

impl VmcsRead for SnapshotVmcs {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        self.0
            .get_raw(encoding)
            .ok_or(VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent))
    }
}

/// Stands for an unknown current-VMCS pointer: not 4-KByte aligned, so no valid link pointer
/// equals it.
const UNKNOWN_POINTER: u64 = u64::MAX - 1;

/// Runs `vmxtool check`.
pub fn run(args: Args) -> Result<ExitCode, String> {
    if args.caps.as_os_str() == "-" && args.vmcs.as_os_str() == "-" {
        return Err("--caps and --vmcs cannot both be standard input".to_owned());
    }
    let caps_name = io::shown(&args.caps);
    let caps_text = io::read_text(&args.caps)?;
    let mut msrs = MsrSnapshot::parse(&caps_text).map_err(|e| format!("{caps_name}: {e}"))?;
    // The checker needs every capability the rules consult: a partial dump is refused here.
    let caps = VmxCapabilities::read(&mut msrs).map_err(|e| format!("{caps_name}: {e}"))?;
    let vmcs_name = io::shown(&args.vmcs);
    let vmcs_text = io::read_text(&args.vmcs)?;
    let snapshot: VmcsSnapshot =
        serde_json::from_str(&vmcs_text).map_err(|e| format!("{vmcs_name}: {e}"))?;
    let vmcs = SnapshotVmcs(snapshot);

    let mut cpu = CpuFacts::new(args.maxphyaddr);
    cpu.linear_address_width = args.linear_width;
    let instruction = if args.vmresume {
        EntryInstruction::Vmresume
    } else {
        EntryInstruction::Vmlaunch
    };
    let current = args.current_vmcs.unwrap_or(UNKNOWN_POINTER);
    let launch = LaunchContext::new(instruction, current, UNKNOWN_POINTER);
    let checker = Checker::new(&caps, cpu, launch);
    let mut memory = Regions(Vec::new());
    for (base, file) in &args.memory {
        let bytes = io::read_bounded(file, io::MEMORY_LIMIT)?;
        memory.0.push((*base, bytes));
    }
    let report: Report<{ Rule::COUNT * 2 }> = checker.report(&vmcs, &mut memory).map_err(|e| {
        let name = fields::by_encoding(e.encoding).map_or("an unknown field", |i| i.name);
        format!(
            "{}: {name} ({:#06x}) is missing from the snapshot",
            args.vmcs.display(),
            e.encoding
        )
    })?;
    let mut unchecked: Vec<Rule> = report.summary.unchecked.iter().collect();
    if args.current_vmcs.is_none() && link_pointer_in_use(&vmcs) {
        unchecked.push(Rule::K24);
    }

    let text = if args.json {
        format!("{:#}\n", to_json(&report, &unchecked))
    } else {
        text_report(&report, &unchecked).map_err(|e| e.to_string())?
    };
    io::write_stdout(&text)?;
    Ok(if report.outcome() == Outcome::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn link_pointer_in_use(vmcs: &SnapshotVmcs) -> bool {
    vmcs.read_raw(fields::VMCS_LINK_POINTER.encoding())
        .is_ok_and(|v| v != u64::MAX)
}

fn field_name(encoding: u32) -> &'static str {
    fields::by_encoding(encoding).map_or("?", |i| i.name)
}

fn violation_json(v: &Violation) -> Value {
    json!({
        "rule": v.rule.id(),
        "section": v.rule.section_title(),
        "summary": v.rule.summary(),
        "fields": v.fields.as_slice().iter().map(|e| field_name(*e)).collect::<Vec<_>>(),
        "encodings": v.fields.as_slice(),
        "actual": format!("{:#x}", v.actual),
        "expected": v.expected.to_string(),
        "outcome": outcome_json(v.outcome),
    })
}

fn outcome_json(outcome: Outcome) -> Value {
    let mut o = json!({ "outcome": outcome.kind() });
    match outcome {
        Outcome::VmFailValid(error) => o["vm_instruction_error"] = json!(error.number()),
        Outcome::EntryFailure {
            exit_reason,
            qualification,
        } => {
            o["exit_reason"] = json!(exit_reason);
            o["exit_qualification"] = json!(qualification);
        }
        Outcome::Success | Outcome::VmFailInvalid => {}
    }
    o
}

fn to_json<const N: usize>(report: &Report<N>, unchecked: &[Rule]) -> Value {
    let mut o = outcome_json(report.outcome());
    o["violations"] = report.violations().map(violation_json).collect();
    o["unchecked"] = unchecked.iter().map(|r| r.id()).collect();
    o
}

fn text_report<const N: usize>(
    report: &Report<N>,
    unchecked: &[Rule],
) -> Result<String, std::fmt::Error> {
    use std::fmt::Write;
    let mut out = String::new();
    writeln!(out, "predicted outcome: {}", report.outcome())?;
    let count = report.summary.violations;
    writeln!(
        out,
        "{count} violation{}",
        if count == 1 { "" } else { "s" }
    )?;
    for v in report.violations() {
        writeln!(out, "  {:<4} {}", v.rule.id(), v.rule.summary())?;
        writeln!(out, "       section: {}", v.rule.section_title())?;
        let fields: Vec<String> = v
            .fields
            .as_slice()
            .iter()
            .map(|e| format!("{} ({e:#06x})", field_name(*e)))
            .collect();
        if !fields.is_empty() {
            writeln!(out, "       fields:  {}", fields.join(", "))?;
        }
        writeln!(
            out,
            "       actual {:#x}, expected {}; alone: {}",
            v.actual, v.expected, v.outcome
        )?;
    }
    if report.dropped() > 0 {
        writeln!(out, "  ... and {} more", report.dropped())?;
    }
    if !unchecked.is_empty() {
        let ids: Vec<&str> = unchecked.iter().map(|r| r.id()).collect();
        writeln!(
            out,
            "not checked (need memory, a CPU fact or a missing field): {}",
            ids.join(", ")
        )?;
    }
    Ok(out)
}
