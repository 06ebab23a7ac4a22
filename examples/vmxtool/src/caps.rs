//! `vmxtool caps`: decode the VMX capability MSRs of a CPU (through Linux's `/dev/cpu/N/msr`) or
//! of a snapshot file, as a `vmxcap`-style report or as JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};
use vmx_caps::{
    ControlGroup, GroupKnowledge, MsrSnapshot, PartialCapabilities, PinBasedControls,
    PrimaryControls, SecondaryControls, VmxCapabilities, msr,
};

use crate::io;
use crate::nested_policy;
use crate::requirements::Verdict;

// Reading a live CPU's MSRs (x86_64 only).
#[cfg(any(target_arch = "x86_64", test))]
use std::{fs::File, os::unix::fs::FileExt};
#[cfg(any(target_arch = "x86_64", test))]
use vmx_caps::{MsrError, MsrSource};

/// Arguments of `vmxtool caps`.
#[derive(clap::Args)]
pub struct Args {
    /// Read the MSRs from a snapshot file (`-` for standard input): one `<msr hex> <value hex>`
    /// pair a line, `#` starts a comment. MSRs missing from it are reported "not in the dump";
    /// only IA32_VMX_BASIC is indispensable.
    #[arg(long, value_name = "FILE", conflicts_with = "cpu")]
    msr_file: Option<PathBuf>,
    /// Read the MSRs of logical CPU N through /dev/cpu/N/msr (root and the `msr` kernel module
    /// needed). The default is CPU 0.
    #[arg(long, value_name = "N")]
    cpu: Option<u32>,
    /// Print a JSON object instead of the text report.
    #[arg(long, conflicts_with = "example")]
    json: bool,
    /// Print whether the example hypervisor (examples/mini-hv) runs with these capabilities,
    /// with which fallbacks, or which requirements are missing; exit status 0 when it runs, 2
    /// when it does not (as `cargo xtask run` for UNSUPPORTED).
    #[arg(long)]
    example: bool,
    /// Instead of the CPU's capabilities, the ones the example hypervisor (as L0) shows a guest
    /// hypervisor (L1) on that CPU (`vmx_caps::virt` with mini-hv's nested policy): as an MSR
    /// dump that `--msr-file` reads again, or with `--example` whether mini-hv runs as that L1,
    /// or with `--json`.
    #[arg(long)]
    nested: bool,
}

/// `errno` EIO, for a short read, which carries no OS error of its own.
#[cfg(any(target_arch = "x86_64", test))]
const EIO: i32 = 5;

/// The MSRs of one CPU, read with `pread` at the MSR's address from `/dev/cpu/N/msr` (x86_64
/// Linux).
#[cfg(any(target_arch = "x86_64", test))]
struct DevCpuMsr {
    file: File,
}

#[cfg(any(target_arch = "x86_64", test))]
impl MsrSource for DevCpuMsr {
    fn read_msr(&mut self, msr: u32) -> Result<u64, MsrError> {
        let mut buf = [0u8; 8];
        match self.file.read_exact_at(&mut buf, u64::from(msr)) {
            Ok(()) => Ok(u64::from_le_bytes(buf)),
            Err(e) => Err(MsrError::Os {
                msr,
                os_error: e.raw_os_error().unwrap_or(EIO),
            }),
        }
    }
}

/// The CPU vendor string from CPUID leaf 0.
#[cfg(target_arch = "x86_64")]
fn cpu_vendor() -> String {
    let leaf0 = std::arch::x86_64::__cpuid(0);
    let mut bytes = Vec::with_capacity(12);
    for reg in [leaf0.ebx, leaf0.edx, leaf0.ecx] {
        bytes.extend_from_slice(&reg.to_le_bytes());
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Without `--msr-file` on a processor of another architecture: there is no VMX to read.
#[cfg(not(target_arch = "x86_64"))]
fn read_cpu(_cpu: u32) -> Result<PartialCapabilities, String> {
    Err(format!(
        "this machine is not x86_64 ({}): it has no VMX capability MSRs to read; decode a dump \
         taken on an Intel machine with --msr-file",
        std::env::consts::ARCH
    ))
}

#[cfg(target_arch = "x86_64")]
fn read_cpu(cpu: u32) -> Result<PartialCapabilities, String> {
    if !vmx_caps::cpu_has_vmx() {
        let vendor = cpu_vendor();
        let hint = if vendor == "AuthenticAMD" {
            " (an AMD processor: it has SVM, not VMX)"
        } else {
            ""
        };
        return Err(format!(
            "this processor does not support VMX: CPUID.1:ECX.VMX[bit 5] = 0 on {vendor}{hint}"
        ));
    }
    let path = format!("/dev/cpu/{cpu}/msr");
    let file = File::open(&path).map_err(|e| {
        format!("{path}: {e} (load the msr module with `modprobe msr` and run as root)")
    })?;
    // A live CPU has every MSR that exists: any read failure is an error.
    let caps =
        VmxCapabilities::read(&mut DevCpuMsr { file }).map_err(|e| format!("{path}: {e}"))?;
    Ok(PartialCapabilities {
        caps,
        missing: msr::MsrSet::EMPTY,
    })
}

/// Decodes a dump, whatever part of the capability MSRs it holds.
pub fn read_file(path: &Path) -> Result<PartialCapabilities, String> {
    let name = io::shown(path);
    let text = io::read_text(path)?;
    let mut snapshot = MsrSnapshot::parse(&text).map_err(|e| format!("{name}: {e}"))?;
    VmxCapabilities::read_partial(&mut snapshot).map_err(|e| {
        format!("{name}: {e}; nothing can be decoded without it (no VMX capability at all)")
    })
}

/// The JSON form: the summary fields of the issue, then the full decoded capabilities. Where
/// the dump lacks the MSR a feature depends on, the feature is `null` (unknown); the missing
/// MSRs are listed under `missing_msrs`.
fn to_json(partial: &PartialCapabilities) -> Result<Value, String> {
    let caps = &partial.caps;
    let pair =
        |(allowed0, allowed1): (u64, u64)| json!({ "allowed0": allowed0, "allowed1": allowed1 });
    let e = caps.ept_vpid;
    let group_known = |g| partial.group_knowledge(g) != GroupKnowledge::Unknown;
    let known = |k: bool, v: bool| if k { json!(v) } else { Value::Null };
    let p2 =
        |f: SecondaryControls| known(group_known(ControlGroup::Secondary), caps.proc2.allows(f));
    let pin = |f: PinBasedControls| known(group_known(ControlGroup::Pin), caps.pin.allows(f));
    let ept_known = partial.is_known(msr::IA32_VMX_EPT_VPID_CAP);
    let missing: Vec<Value> = partial
        .missing
        .iter()
        .map(|(msr, name)| json!({ "msr": msr, "name": name }))
        .collect();
    Ok(json!({
        "missing_msrs": missing,
        "revision_id": caps.basic.revision_id(),
        "true_controls": caps.basic.true_controls(),
        "vmcs_region_size": caps.basic.vmcs_region_size(),
        "controls": {
            "pin": pair(caps.pin.raw()),
            "proc": pair(caps.proc.raw()),
            "proc2": pair(caps.proc2.raw()),
            "proc3": pair(caps.proc3.raw()),
            "exit": pair(caps.exit.raw()),
            "exit2": pair(caps.exit2.raw()),
            "entry": pair(caps.entry.raw()),
        },
        "features": {
            "ept": p2(SecondaryControls::ENABLE_EPT),
            "vpid": p2(SecondaryControls::ENABLE_VPID),
            "unrestricted_guest": p2(SecondaryControls::UNRESTRICTED_GUEST),
            "preemption_timer": pin(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER),
            "posted_interrupts": pin(PinBasedControls::PROCESS_POSTED_INTERRUPTS),
            "monitor_trap_flag": known(
                group_known(ControlGroup::Primary),
                caps.proc.allows(PrimaryControls::MONITOR_TRAP_FLAG)
            ),
            "vmfunc": p2(SecondaryControls::ENABLE_VM_FUNCTIONS),
            "vmcs_shadowing": p2(SecondaryControls::VMCS_SHADOWING),
            "pml": p2(SecondaryControls::ENABLE_PML),
            "ept_2m_pages": known(ept_known, e.pde_2mb()),
            "ept_1g_pages": known(ept_known, e.pdpte_1gb()),
            "ept_accessed_dirty": known(ept_known, e.accessed_dirty()),
            "ept_5_level": known(ept_known, e.page_walk_5()),
            "invept": known(ept_known, e.invept()),
            "invvpid": known(ept_known, e.invvpid()),
        },
        "capabilities": serde_json::to_value(caps).map_err(|e| e.to_string())?,
    }))
}

/// Runs `vmxtool caps`.
pub fn run(args: Args) -> Result<ExitCode, String> {
    let caps = match &args.msr_file {
        Some(path) => read_file(path)?,
        None => read_cpu(args.cpu.unwrap_or(0))?,
    };
    if args.nested {
        let virt = nested_policy::policy(&caps.caps)
            .virtualize(&caps.caps)
            .map_err(|e| format!("no capabilities for a guest hypervisor: {e}"))?;
        if args.example && !nested_policy::l1_has_time_source(&caps.caps) {
            io::write_stdout(
                "the example does not run as a guest hypervisor (L1) here: the processor has no \
                 VMX-preemption timer for L0 to pass on, and L0 models no local APIC timer for L1\n",
            )?;
            return Ok(ExitCode::from(2));
        }
        if !args.example && !args.json {
            let mut text = String::from(
                "# The VMX capability MSRs mini-hv (L0) shows a guest hypervisor (L1) on this \
                 processor; `vmxtool caps --msr-file` reads them again.\n",
            );
            if !nested_policy::l1_has_time_source(&caps.caps) {
                text.push_str(
                    "# note: no VMX-preemption timer here, so mini-hv does not run as this L1 (L0 \
                     models no local APIC timer for it)\n",
                );
            }
            if !caps.missing.is_empty() {
                let names: Vec<&str> = caps.missing.iter().map(|(_, name)| name).collect();
                text.push_str(&format!(
                    "# note: made from a dump without {}, as offering nothing\n",
                    names.join(", ")
                ));
            }
            text.push_str(&virt.msrs.to_string());
            io::write_stdout(&text)?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut msrs = virt.msrs;
        let nested = VmxCapabilities::read_partial(&mut msrs)
            .map_err(|e| format!("the guest hypervisor's capabilities: {e}"))?;
        return show(
            &Args {
                nested: false,
                ..args
            },
            nested,
        );
    }
    show(&args, caps)
}

/// Prints `caps` as `args` asks (the verdict, JSON or the report).
fn show(args: &Args, caps: PartialCapabilities) -> Result<ExitCode, String> {
    if args.example {
        let verdict = Verdict::of(&caps.caps);
        let mut text = String::new();
        if !caps.missing.is_empty() {
            let names: Vec<&str> = caps.missing.iter().map(|(_, name)| name).collect();
            text.push_str(&format!(
                "note: not in the dump (a TRUE MSR is read from its plain counterpart, any other \
                 as offering nothing): {}\n",
                names.join(", ")
            ));
        }
        text.push_str(&verdict.to_string());
        io::write_stdout(&text)?;
        return Ok(if verdict.runs() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        });
    }
    let text = if args.json {
        let value = to_json(&caps)?;
        let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        format!("{text}\n")
    } else {
        caps.to_string()
    };
    io::write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `DevCpuMsr` against a sparse file: the MSR driver takes the file offset as the MSR
    /// address and returns its 8 bytes, little-endian. (A regular file cannot model consecutive
    /// MSRs, whose 8-byte values would overlap, so one MSR is placed.)
    #[test]
    fn dev_cpu_msr_reads_at_the_msr_offset() {
        let path = std::env::temp_dir().join(format!("vmxtool-devcpu-{}", std::process::id()));
        let file = File::create(&path).unwrap();
        file.write_all_at(&0x00d8_1000_0000_002bu64.to_le_bytes(), 0x480)
            .unwrap();
        drop(file);
        let mut source = DevCpuMsr {
            file: File::open(&path).unwrap(),
        };
        let basic = source.read_msr(0x480);
        let zero_hole = source.read_msr(0x3a);
        // Past the end of the file: a short read, reported as EIO with the MSR.
        let past_end = source.read_msr(0x1000);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(basic, Ok(0x00d8_1000_0000_002b));
        assert_eq!(zero_hole, Ok(0));
        assert_eq!(
            past_end,
            Err(MsrError::Os {
                msr: 0x1000,
                os_error: EIO
            })
        );
    }

    #[test]
    fn json_for_a_model_without_secondary_exit_controls() {
        let text = include_str!("../../../vmx-caps/testdata/tigerlake.msr");
        let caps = VmxCapabilities::read_partial(&mut MsrSnapshot::parse(text).unwrap()).unwrap();
        let v = to_json(&caps).unwrap();
        assert_eq!(
            v["controls"]["exit2"],
            json!({ "allowed0": 0, "allowed1": 0 })
        );
        assert_eq!(v["features"]["monitor_trap_flag"], true);
        assert_eq!(v["vmcs_region_size"], 4096);
    }
}
