//! Differential testing of the software VM-entry checker (`vmcs::check`) against the processor.
//!
//! Selected with `mini-hv.entry-diff=<cases>` on the kernel command line (seed:
//! `mini-hv.entry-diff-seed=<seed>`, default 1). Starting from the known-good VMCS the hypervisor
//! builds for its guest — with the guest parked on a VMCALL and the VMX-preemption timer at 0, so
//! that a VM entry that succeeds exits again before the guest executes anything — each case:
//! 1. rewrites the known-good VMCS (every writable field) and the MSR areas,
//! 2. applies one to three seeded random mutations aimed at the VM-entry rules (bit flips and
//!    boundary values in the controls, host and guest fields, event injection, the VM-entry
//!    MSR-load list), or, every fourth case, the next combination of the event-injection grid
//!    (interruption type × vector × deliver-error-code × guest mode: CR0.PE = 0 and 1, with and
//!    without "unrestricted guest"; IA32_VMX_BASIC\[56\] is the model's),
//! 3. asks the checker for its prediction ([`check::Outcome`]),
//! 4. executes the real VMLAUNCH and records what happened ([`check::Outcome::observed`]),
//! 5. recovers: after a VM entry that succeeded (the VMCS is now launched) VMCLEAR and VMPTRLD
//!    make it clear again.
//!
//! Each case is also launched the way a guest hypervisor's VMLAUNCH reaches an outer one (nested
//! VMX): the mutated VMCS, as L1's VMCS12 under the processor's own capabilities, goes through
//! [`vmcs::nested::L1VmxState`] (VMXON, VMPTRLD, `enter_l2`) and must give the checker's
//! prediction, so that L0's emulation agrees with the processor wherever the checker does.
//!
//! Each disagreement is printed on one line (the mutation, the prediction with its rules, the
//! actual outcome); a disagreement that a known deviation of Bochs from the SDM explains
//! ([`BOCHS_DEVIATIONS`]) is counted as excused. The run ends with
//! `entry-diff: <N> cases, <A> agree, <D> disagree, <E> excused` and passes only with `D = 0`.
//!
//! Host-state mutations are restricted to values the SDM makes VM entry reject (fixed CR bits,
//! non-canonical bases, selector RPL/TI bits, reserved EFER bits): a host-state value that VM
//! entry accepted would be loaded at the next VM exit, and this host has to survive it.

use core::fmt;

use vmcs::check::{self, Outcome, PhysMemory, Rule};
use vmcs::nested::{
    GuestMemory, GuestMsrs, L1Context, L1VmxState, L2Entry, PointerOperand, VmxOutcome,
};
use vmcs::structures::{InFrame, IoBitmaps, MsrArea, MsrBitmap, MsrEntry};
use vmcs::{GuestSegment, GuestState, VmcsRead, VmcsSnapshot, VmcsWrite, fields};
use vmx_caps::arch::{Cr0, Cr4, Efer, Rflags};
use vmx_caps::msr::{
    IA32_DEBUGCTL, IA32_EFER, IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE, IA32_LSTAR,
    IA32_PAT, IA32_SMM_MONITOR_CTL, IA32_STAR, IA32_SYSENTER_CS, IA32_SYSENTER_EIP,
    IA32_SYSENTER_ESP, IA32_X2APIC_LAST, IA32_X2APIC_TPR,
};
use vmx_caps::{CrFixedBits, CrUse, EntryControls, VmxCapabilities};
use vmx_core::{GuestRegisters, RunError, VmFail, VmcsRegion};

use crate::hv::test_guest::{self, TestMachine};
use crate::hv::{self, Vmcs, extras, vcpu};
use crate::{print, println};

/// The parameters of a run, from the kernel command line.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Number of cases.
    pub cases: u32,
    /// PRNG seed.
    pub seed: u64,
    /// Execute only this case (the others are generated but neither checked nor launched), to
    /// find a disagreement's trace in the emulator's log.
    pub only: Option<u32>,
    /// Print each case's mutation before its VM entry (`mini-hv.entry-diff-trace`).
    pub trace: bool,
}

/// The differential mode's parameters, if the command line asks for it.
pub fn requested() -> Option<Params> {
    let mut cases = None;
    let mut seed = 1;
    let mut only = None;
    let mut trace = false;
    for word in crate::boot::cmdline().split_ascii_whitespace() {
        if word == "mini-hv.entry-diff-trace" {
            trace = true;
        } else if let Some(v) = word.strip_prefix("mini-hv.entry-diff=") {
            match v.parse() {
                Ok(n) => cases = Some(n),
                Err(_) => println!("mini-hv: ignoring mini-hv.entry-diff={v} (not a number)"),
            }
        } else if let Some(v) = word.strip_prefix("mini-hv.entry-diff-only=") {
            only = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("mini-hv.entry-diff-seed=") {
            match v.parse() {
                Ok(s) => seed = s,
                Err(_) => println!("mini-hv: ignoring mini-hv.entry-diff-seed={v} (not a number)"),
            }
        }
    }
    cases.map(|cases| Params {
        cases,
        seed,
        only,
        trace,
    })
}

/// How Bochs departs from the SDM for one rule.
#[derive(Clone, Copy)]
pub enum DeviationKind {
    /// Bochs does not make this check of the spec: a violation of it alone does not fail there.
    NotChecked(Rule),
    /// Bochs checks only part of the rule: the function says whether it misses this violation
    /// on a processor with these capabilities.
    Partial(Rule, fn(&check::Violation, &VmxCapabilities) -> bool),
    /// Bochs makes the check but reports exit qualification 0 instead of the SDM's.
    QualificationZero(Rule),
    /// Bochs makes a check the current SDM does not have (or no longer has), or lacks an
    /// architectural MSR: the function gives the outcome Bochs produces for the current VMCS.
    Stricter(fn(&Vmcs<'_>) -> Option<Outcome>),
}

/// A rule Bochs 2.7 implements differently from the SDM (spec `vm-entry-checks.md`, section 5,
/// and the findings of this differential test), with the SDM text that makes Bochs wrong.
#[derive(Clone, Copy)]
pub struct Deviation {
    /// The spec's rule ID, or a name for a check the spec does not list.
    pub id: &'static str,
    /// What Bochs does.
    pub kind: DeviationKind,
    /// How Bochs departs from the SDM.
    pub bochs: &'static str,
    /// Where the SDM states the rule.
    pub sdm: &'static str,
}

const X33_Q0: Outcome = Outcome::EntryFailure {
    exit_reason: check::EXIT_REASON_ENTRY_FAILURE | check::EXIT_REASON_INVALID_GUEST_STATE,
    qualification: 0,
};
const VMFAIL_CONTROLS: Outcome = Outcome::VmFailValid(vmx_core::VmInstructionError::from_raw(7));

/// The rules where Bochs is not an oracle. A disagreement is excused when the checker's
/// prediction, recomputed as Bochs behaves for these rules, equals what Bochs did.
pub const BOCHS_DEVIATIONS: &[Deviation] = &[
    Deviation {
        id: "G7",
        kind: DeviationKind::NotChecked(Rule::G7),
        bochs: "does not check the reserved bits of guest IA32_DEBUGCTL",
        sdm: "SDM Vol. 3C, \"Checks on Guest Control Registers, Debug Registers, and MSRs\": if \
              \"load debug controls\" is 1, bits reserved in the IA32_DEBUGCTL field must be 0",
    },
    Deviation {
        id: "C3",
        kind: DeviationKind::NotChecked(Rule::C3),
        bochs: "does not check that \"entry to SMM\" is 0 outside SMM (the entry then fails on \
                the guest-state check that SMIs be blocked, exit 33)",
        sdm: "SDM Vol. 3C, \"Checks on VM-Entry Control Fields\": \"entry to SMM\" must be 0 if \
              the VM entry does not commence in SMM (VMfailValid 7, before any guest-state check)",
    },
    Deviation {
        id: "G9",
        kind: DeviationKind::NotChecked(Rule::G9),
        bochs: "does not check \"IA-32e mode guest\" => CR0.PG = 1 (only the CR0 fixed bits catch it)",
        sdm: "SDM Vol. 3C, \"Checks on Guest Control Registers, Debug Registers, and MSRs\": if \
              \"IA-32e mode guest\" is 1, bit 31 of the CR0 field (PG) must be 1",
    },
    Deviation {
        id: "G16",
        kind: DeviationKind::NotChecked(Rule::G16),
        bochs: "does not check the reserved bits of guest IA32_PERF_GLOBAL_CTRL",
        sdm: "SDM Vol. 3C, \"Checks on Guest Control Registers, Debug Registers, and MSRs\": if \
              \"load IA32_PERF_GLOBAL_CTRL\" is 1, bits reserved in IA32_PERF_GLOBAL_CTRL (per \
              the counters CPUID leaf 0AH enumerates) must be 0 in the field",
    },
    Deviation {
        id: "H19",
        kind: DeviationKind::NotChecked(Rule::H19),
        bochs: "never compares CS.DPL with SS.DPL: it requires CS.DPL = CS.RPL (old SDM), and \
                CS.RPL = SS.RPL = SS.DPL only without \"unrestricted guest\", so the rule is \
                missed with \"unrestricted guest\" or an unusable SS",
        sdm: "SDM Vol. 3C, \"Checks on Guest Segment Registers\": CS type 9 or 11 => CS.DPL \
              equals the DPL in the access-rights field for SS (which VM entry loads even for an \
              unusable SS: SS.DPL becomes the CPL)",
    },
    Deviation {
        id: "H20",
        kind: DeviationKind::NotChecked(Rule::H20),
        bochs: "never compares CS.DPL with SS.DPL (as for H19)",
        sdm: "SDM Vol. 3C, \"Checks on Guest Segment Registers\": CS type 13 or 15 => CS.DPL \
              is not greater than the DPL in the access-rights field for SS",
    },
    Deviation {
        id: "J2",
        kind: DeviationKind::NotChecked(Rule::J2),
        bochs: "does not check that guest RIP bits 63:N are identical for a 64-bit guest",
        sdm: "SDM Vol. 3C, \"Checks on Guest RIP, RFLAGS, and SSP\": if \"IA-32e mode guest\" \
              and CS.L are 1, bits 63:N of RIP must be identical (N = linear-address width)",
    },
    Deviation {
        id: "K4",
        kind: DeviationKind::NotChecked(Rule::K4),
        bochs: "does not restrict the events injected into the HLT state",
        sdm: "SDM Vol. 3C, \"Checks on Guest Non-Register State\": in the HLT state only external \
              interrupts, NMIs, #DB, #MC and pending MTF may be injected",
    },
    Deviation {
        id: "K5",
        // The violation's actual value is the interruption-information field: Bochs misses the
        // violations whose vector is 18.
        kind: DeviationKind::Partial(Rule::K5, |v, _| v.actual & 0xff == 18),
        bochs: "tests `type != NMI && vector != 18`, letting any type with vector 18 into the \
                shutdown state",
        sdm: "SDM Vol. 3C, \"Checks on Guest Non-Register State\": in the shutdown state only NMIs \
              and machine-check exceptions may be injected",
    },
    Deviation {
        id: "K12",
        kind: DeviationKind::QualificationZero(Rule::K12),
        bochs: "reports an NMI injected under blocking by STI with exit qualification 0, not 3",
        sdm: "SDM Vol. 3C, \"VM-Entry Failures During or After Loading Guest State\": exit \
              qualification 3 for an NMI injected while blocking by STI is 1",
    },
    Deviation {
        id: "K18",
        kind: DeviationKind::Partial(Rule::K18, |v, _| v.actual & BOCHS_PENDING_DBG_RESERVED == 0),
        bochs: "keeps the pending debug exceptions in 32 bits (tmpDR6): reserved bits 63:32 are \
                never checked",
        sdm: "SDM Vol. 3C, \"Checks on Guest Non-Register State\": bits 11:4, 13, 15 and 63:17 of \
              the pending debug exceptions field must be 0",
    },
    Deviation {
        id: "C10",
        // With IA32_VMX_BASIC[56] = 1 the checker reports C10 only for the parts that flag does
        // not lift (the type and CR0.PE parts), which Bochs skips.
        kind: DeviationKind::Partial(Rule::C10, |_, caps| caps.basic.no_error_code_check()),
        bochs: "skips the whole deliver-error-code check on models with CET (those report \
                IA32_VMX_BASIC[56] = 1), so it injects an error code with an NMI, an external or \
                software interrupt, or into a guest with CR0.PE = 0",
        sdm: "SDM Vol. 3C, \"Checks on VM-Entry Control Fields\": deliver-error-code must be 0 if \
              the interruption type is not hardware exception or guest CR0.PE is 0; \
              IA32_VMX_BASIC[56] = 1 lifts only the vector-dependent parts (Appendix A.1)",
    },
    Deviation {
        id: "K19",
        kind: DeviationKind::NotChecked(Rule::K19),
        bochs: "does not check pending-debug BS = 1 under single-step with blocking or HLT",
        sdm: "SDM Vol. 3C, \"Checks on Guest Non-Register State\": with blocking by STI/MOV SS or \
              HLT, RFLAGS.TF = 1 and IA32_DEBUGCTL.BTF = 0, pending-debug BS must be 1",
    },
    Deviation {
        id: "K20",
        kind: DeviationKind::NotChecked(Rule::K20),
        bochs: "does not check pending-debug BS = 0 without single-step",
        sdm: "SDM Vol. 3C, \"Checks on Guest Non-Register State\": with blocking by STI/MOV SS or \
              HLT and (RFLAGS.TF = 0 or IA32_DEBUGCTL.BTF = 1), pending-debug BS must be 0",
    },
    Deviation {
        id: "K21",
        kind: DeviationKind::NotChecked(Rule::K21),
        bochs: "does not check the RTM bit of the pending debug exceptions",
        sdm: "SDM Vol. 3C, \"Checks on Guest Non-Register State\": pending-debug bit 16 (RTM) = 1 \
              requires bits 11:0 and 14 = 0, bit 12 = 1, RTM support, no blocking by MOV SS",
    },
    Deviation {
        id: "M7",
        kind: DeviationKind::NotChecked(Rule::M7),
        bochs: "loads VM-entry MSR-load lists longer than the recommended maximum",
        sdm: "SDM Vol. 3D, Appendix A.6 \"Miscellaneous Data\" (IA32_VMX_MISC[27:25]): a list \
              longer than the recommended maximum \"may\" make VM entry fail; both are correct",
    },
    Deviation {
        id: "A48",
        kind: DeviationKind::Stricter(tsc_multiplier_zero),
        bochs: "fails VM entry (error 7) when \"use TSC scaling\" is 1 and the TSC multiplier is 0",
        sdm: "SDM Vol. 3C, \"Checks on VMX Controls\", \"VM-Execution Control Fields\": no check \
              of the TSC-multiplier field is listed",
    },
    Deviation {
        id: "CS.RPL",
        kind: DeviationKind::Stricter(cs_rpl_old_rule),
        bochs: "requires CS.DPL = CS.RPL for a non-conforming CS and CS.DPL <= CS.RPL for a \
                conforming one (the rule of SDMs before \"unrestricted guest\"), also when \
                \"unrestricted guest\" is 1",
        sdm: "SDM Vol. 3C, \"Checks on Guest Segment Registers\", access-rights fields, CS DPL: \
              type 9/11 => DPL = SS.DPL, type 13/15 => DPL <= SS.DPL; the CS selector's RPL is \
              only compared with SS.RPL, and only when \"unrestricted guest\" is 0",
    },
    Deviation {
        id: "IA32_DEBUGCTL",
        kind: DeviationKind::Stricter(debugctl_in_msr_list),
        bochs: "does not implement IA32_DEBUGCTL (1D9H): WRMSR faults, so a VM-entry MSR-load \
                entry for it fails (exit 34) whatever its value",
        sdm: "SDM Vol. 4, \"Architectural MSRs\": IA32_DEBUGCTL (1D9H) is architectural; Vol. 3C, \
              \"VM-Entry Failures During or After Loading Guest State\": an entry fails only if \
              WRMSR of its value would fault (0 never does)",
    },
];

/// The pending-debug bits Bochs checks: the reserved ones among bits 31:0 (bit 16 included).
const BOCHS_PENDING_DBG_RESERVED: u64 = 0xffff_aff0;

/// Bochs' missing IA32_DEBUGCTL: the first VM-entry MSR-load entry for it fails.
fn debugctl_in_msr_list(vmcs: &Vmcs<'_>) -> Option<Outcome> {
    let count = vmcs
        .read_raw(fields::VM_ENTRY_MSR_LOAD_COUNT.encoding())
        .ok()?;
    let area = vmcs
        .read_raw(fields::VM_ENTRY_MSR_LOAD_ADDRESS.encoding())
        .ok()?;
    (0..count.min(ENTRY_AREA_ENTRIES as u64)).find_map(|i| {
        let mut bytes = [0; 16];
        IdentityMemory
            .read(MsrEntry::address_in(area, i), &mut bytes)
            .ok()?;
        let (entry, reserved) = MsrEntry::from_le_bytes(bytes);
        (entry.index == IA32_DEBUGCTL && reserved == 0).then_some(Outcome::EntryFailure {
            exit_reason: check::EXIT_REASON_ENTRY_FAILURE | check::EXIT_REASON_MSR_LOADING,
            qualification: i + 1,
        })
    })
}

/// Bochs' A48: "use TSC scaling" (secondary bit 25, effective) with a TSC multiplier of 0.
fn tsc_multiplier_zero(vmcs: &Vmcs<'_>) -> Option<Outcome> {
    // A field that cannot be read excuses nothing.
    let primary = vmcs
        .read_raw(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding())
        .ok()?;
    let secondary = vmcs
        .read_raw(fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding())
        .ok()?;
    (primary & 1 << 31 != 0
        && secondary & 1 << 25 != 0
        && vmcs.read_raw(fields::TSC_MULTIPLIER.encoding()) == Ok(0))
    .then_some(VMFAIL_CONTROLS)
}

/// Bochs' old CS rule: a code-segment CS whose DPL differs from its selector's RPL
/// (non-conforming) or exceeds it (conforming), outside virtual-8086 mode.
fn cs_rpl_old_rule(vmcs: &Vmcs<'_>) -> Option<Outcome> {
    let (Ok(selector), Ok(ar), Ok(rflags)) = (
        vmcs.read_raw(fields::GUEST_CS_SELECTOR.encoding()),
        vmcs.read_raw(fields::GUEST_CS_ACCESS_RIGHTS.encoding()),
        vmcs.read_raw(fields::GUEST_RFLAGS.encoding()),
    ) else {
        return None;
    };
    let (rpl, dpl, ty) = (selector & 3, (ar >> 5) & 3, ar & 0xf);
    let fails = rflags & 1 << 17 == 0
        && match ty {
            9 | 11 => dpl != rpl,
            13 | 15 => dpl > rpl,
            _ => false,
        };
    fails.then_some(X33_Q0)
}

/// The deviation entry of a rule the checker reported.
fn deviation(rule: Rule) -> Option<&'static Deviation> {
    BOCHS_DEVIATIONS.iter().find(|d| match d.kind {
        DeviationKind::NotChecked(r)
        | DeviationKind::Partial(r, _)
        | DeviationKind::QualificationZero(r) => r == rule,
        DeviationKind::Stricter(_) => false,
    })
}

/// SplitMix64: small, seedable, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Guest-physical address of the VMCALL the guest is parked on.
const STUB_GPA: u64 = 0x7000;
/// VMCALL; HLT; JMP $.
const STUB: [u8; 6] = [0x0f, 0x01, 0xc1, 0xf4, 0xeb, 0xfe];

/// Entries of the VM-entry MSR-load area (past the recommended maximum of 512).
const ENTRY_AREA_ENTRIES: usize = 1024;
/// The VM-entry MSR-load area.
type EntryArea = MsrArea<ENTRY_AREA_ENTRIES>;
/// Each VM-exit MSR area.
type ExitArea = MsrArea<256>;

/// One change a mutation made.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// A VMCS field (full encoding) changed from `old` to `new`.
    Field { encoding: u32, old: u64, new: u64 },
    /// Entry `slot` (0-based) of the VM-entry MSR-load area.
    MsrEntry { slot: usize, index: u64, value: u64 },
    /// The guest was switched to a consistent state of another mode before the mutations.
    Mode(GuestMode),
}

/// The guest mode a case starts from (the known-good VMCS is real mode).
#[derive(Clone, Copy, Debug)]
enum GuestMode {
    /// 32-bit protected mode, flat segments, no paging.
    Protected32,
    /// 32-bit protected mode with PAE paging (PDPTEs from the VMCS, EPT being on).
    Pae32,
    /// IA-32e mode, 64-bit code segment, 4-level paging.
    Long64,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Change::Field { encoding, old, new } => {
                match fields::by_encoding(encoding) {
                    Some(info) => f.write_str(info.name)?,
                    None => write!(f, "{encoding:#x}")?,
                }
                write!(f, " {old:#x}->{new:#x}")
            }
            Change::MsrEntry { slot, index, value } => {
                write!(f, "msr-load[{slot}]=({index:#x}, {value:#x})")
            }
            Change::Mode(mode) => write!(f, "mode {mode:?}"),
        }
    }
}

/// The changes of one case.
struct Mutation {
    changes: [Option<Change>; 12],
    len: usize,
}

impl Mutation {
    fn new() -> Self {
        Self {
            changes: [None; 12],
            len: 0,
        }
    }

    fn push(&mut self, change: Change) {
        if let Some(slot) = self.changes.get_mut(self.len) {
            *slot = Some(change);
            self.len += 1;
        }
    }
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, change) in self.changes.iter().flatten().enumerate() {
            if i != 0 {
                f.write_str("; ")?;
            }
            write!(f, "{change}")?;
        }
        Ok(())
    }
}

/// Identity-mapped physical memory below 4 GiB, for the checker's memory rules.
struct IdentityMemory;

impl check::PhysMemory for IdentityMemory {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), check::MemoryError> {
        let out = check::MemoryError::OutOfRange {
            address,
            len: buf.len(),
        };
        let end = address.checked_add(buf.len() as u64).ok_or(out)?;
        if end > 1 << 32 {
            return Err(out);
        }
        // SAFETY: the boot code identity-maps the first 4 GiB; plain physical reads (RAM, or what
        // the platform answers for unbacked addresses), as VM entry itself makes.
        unsafe {
            core::ptr::copy_nonoverlapping(address as *const u8, buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }
}

/// L1's memory for the nested launch: physical memory read through [`IdentityMemory`], except
/// the VMCS12 region (the real current VMCS's address, so that the launch context is the same),
/// which lives in `overlay` so that the emulation never writes the processor's VMCS region.
struct L1Memory<'a> {
    vmcs12: u64,
    overlay: &'a mut [u8; 4096],
}

impl L1Memory<'_> {
    fn overlaid(&self, address: u64, len: usize) -> Option<usize> {
        let offset = address.checked_sub(self.vmcs12)?;
        (offset + len as u64 <= 4096).then_some(offset as usize)
    }
}

impl check::PhysMemory for L1Memory<'_> {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), check::MemoryError> {
        match self.overlaid(address, buf.len()) {
            Some(at) => {
                buf.copy_from_slice(&self.overlay[at..at + buf.len()]);
                Ok(())
            }
            None => IdentityMemory.read(address, buf),
        }
    }
}

impl GuestMemory for L1Memory<'_> {
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), check::MemoryError> {
        match self.overlaid(address, bytes.len()) {
            Some(at) => {
                self.overlay[at..at + bytes.len()].copy_from_slice(bytes);
                Ok(())
            }
            // Only the VMCS12 region is L1's to write here.
            None => Err(check::MemoryError::OutOfRange {
                address,
                len: bytes.len(),
            }),
        }
    }
}

/// The MSRs of the nested launch: every WRMSR succeeds, as the checker assumes.
struct AnyMsr;

impl GuestMsrs for AnyMsr {
    fn read(&mut self, _msr: u32) -> Option<u64> {
        Some(0)
    }
    fn write(&mut self, _msr: u32, _value: u64) -> bool {
        true
    }
}

/// The outcome of the current (mutated) VMCS launched by L1 through the nested emulation:
/// VMXON and VMPTRLD at the real pointers, the VMCS's fields as VMCS12, VMLAUNCH.
fn l1_launch(
    caps: &VmxCapabilities,
    cpu: check::CpuFacts,
    active: &Vmcs<'_>,
    vmxon: u64,
    maxphyaddr: u8,
) -> Result<Outcome, &'static str> {
    let mut l1 = L1VmxState::new(caps, maxphyaddr).map_err(|_| "capabilities refused")?;
    let mut overlay = [0u8; 4096];
    overlay[..4].copy_from_slice(&caps.basic.revision_id().to_le_bytes());
    let vmcs12 = active.phys_addr();
    let mut mem = L1Memory {
        vmcs12,
        overlay: &mut overlay,
    };
    let cx = L1Context::long_mode_cpl0();
    if l1.vmxon(&cx, PointerOperand::Memory(vmxon), &mut mem) != VmxOutcome::Succeed(()) {
        return Err("VMXON failed");
    }
    if l1.vmptrld(&cx, PointerOperand::Memory(vmcs12), &mut mem) != VmxOutcome::Succeed(()) {
        return Err("VMPTRLD failed");
    }
    let Some(v12) = l1.current_vmcs_mut() else {
        return Err("no current VMCS");
    };
    for info in fields::ALL.iter() {
        if let Ok(value) = active.read_raw(info.encoding) {
            // A field beyond VMCS12's highest index is not part of it.
            let _ = v12.store(info.encoding, value);
        }
    }
    let entry = l1
        .enter_l2(
            &cx,
            check::EntryInstruction::Vmlaunch,
            cpu,
            &mut mem,
            &mut |_: &check::Violation| {},
            &mut AnyMsr,
        )
        .map_err(|_| "VMCS12 unreadable")?;
    Ok(match entry {
        L2Entry::Enter => Outcome::Success,
        L2Entry::Instruction(VmxOutcome::VmFailValid(error)) => Outcome::VmFailValid(error),
        L2Entry::Instruction(_) => Outcome::VmFailInvalid,
        L2Entry::EntryFailure {
            exit_reason,
            qualification,
        } => Outcome::EntryFailure {
            exit_reason,
            qualification,
        },
    })
}

/// What a case's mutation generator may use.
struct Env {
    maxphyaddr: u8,
    cr0_fixed: CrFixedBits<Cr0>,
    cr4_fixed: CrFixedBits<Cr4>,
    /// The VM-entry MSR-load area, every entry in use (the VMCS count says how many load).
    entry_area: &'static EntryArea,
    /// Its physical address.
    entry_area_phys: u64,
    msr_list_max: u32,
    /// Frames the feature mutations point control fields at: virtual-APIC page, APIC-access
    /// page, shadow VMCS, and one for bitmaps, lists and logs.
    frames: [u64; 4],
    /// VMCS revision identifier (for shadow-VMCS headers).
    revision: u32,
    /// The current-VMCS pointer.
    vmcs_phys: u64,
    /// The VMXON pointer.
    vmxon_phys: u64,
    /// "monitor trap flag" is supported. Without it, Bochs does not reject the injection of
    /// type 7 (other event, rule C6) but panics while delivering it, so such models get none.
    mtf: bool,
}

/// Runs the differential test on the test guest's machine ([`TestMachine`], without the
/// controls of its extra checks); `Pass` when no disagreement is left unexcused.
pub fn run(params: Params) -> hv::Outcome {
    if !hv::vmx_present() {
        return hv::Outcome::Unsupported;
    }
    let mut machine = match TestMachine::prepare() {
        Ok(machine) => machine,
        Err(outcome) => return outcome,
    };
    // The known-good VMCS has no PML: the EPT needs no dirty flags.
    let ept = hv::guest_ram_ept(
        &machine.root,
        machine.ept_config.accessed_dirty(false),
        &machine.mem,
    );
    let outcome = match (
        ept,
        test_guest::bitmaps(),
        hv::new_vmcs_region(&machine.caps),
    ) {
        (Some(ept), Some((msr_bitmap, io_bitmaps)), Some(region)) => {
            let setup = Setup {
                root: &mut machine.root,
                region,
                caps: &machine.caps,
                controls: &extras::without(machine.negotiated.value),
                eptp: ept.eptp(),
                msr_bitmap,
                io_bitmaps,
                vpid: machine.vpid,
                ram_base: machine.mem.host_base(),
            };
            differ(params, setup)
        }
        _ => hv::Outcome::Fail,
    };
    machine.xsave.restore();
    match hv::leave_vmx(machine.root) {
        hv::Outcome::Pass => outcome,
        failed => failed,
    }
}

/// What the cases start from: the test guest's machine.
struct Setup<'a> {
    /// VMX root operation.
    root: &'a mut hv::Root,
    /// The VMCS region (initialised, not current).
    region: &'static mut VmcsRegion,
    /// The capabilities.
    caps: &'a VmxCapabilities,
    /// The negotiated controls.
    controls: &'a vmx_caps::ControlSet,
    /// The EPT pointer of guest RAM.
    eptp: ept::EptPointer,
    /// The MSR bitmap.
    msr_bitmap: &'a MsrBitmap,
    /// The I/O bitmaps.
    io_bitmaps: &'a IoBitmaps,
    /// "enable VPID" negotiated.
    vpid: bool,
    /// Host address of guest-physical 0.
    ram_base: u64,
}

/// The cases, from the known-good VMCS in `setup`.
fn differ(params: Params, setup: Setup<'_>) -> hv::Outcome {
    let Setup {
        root,
        region,
        caps,
        controls,
        eptp,
        msr_bitmap,
        io_bitmaps,
        vpid,
        ram_base,
    } = setup;
    let frames = |bytes: usize| crate::mem::alloc_frames(bytes.div_ceil(4096));
    let (Some(entry_frames), Some(store_frames), Some(load_frames)) = (
        frames(size_of::<EntryArea>()),
        frames(size_of::<ExitArea>()),
        frames(size_of::<ExitArea>()),
    ) else {
        println!("mini-hv: entry-diff: out of memory for the MSR areas");
        return hv::Outcome::Fail;
    };
    // SAFETY: fresh identity-mapped frame runs of the areas' sizes, used only as these areas for
    // the rest of the run.
    let areas = unsafe {
        EntryArea::from_frame(entry_frames as *mut u8).and_then(|entry| {
            Ok((
                entry,
                ExitArea::from_frame(store_frames as *mut u8)?,
                ExitArea::from_frame(load_frames as *mut u8)?,
            ))
        })
    };
    let (entry_area, exit_store, exit_load) = match areas {
        Ok(areas) => areas,
        Err(e) => {
            println!("mini-hv: entry-diff: cannot place the MSR areas: {e}");
            return hv::Outcome::Fail;
        }
    };
    // SAFETY: guest RAM is host memory owned by the hypervisor, identity-mapped; the stub lies
    // in its low, otherwise unused part.
    unsafe {
        core::ptr::copy_nonoverlapping(STUB.as_ptr(), (ram_base + STUB_GPA) as *mut u8, STUB.len())
    };
    // The VM-exit MSR-load list only ever holds IA32_SYSENTER_CS = 0 (harmless for this host,
    // whatever the count), so that no mutation turns a VM exit into a VMX abort.
    fill_msr_area(exit_load);
    fill_msr_area(entry_area);
    let entry_area: &'static EntryArea = entry_area;
    let Some(feature_frames) = crate::mem::alloc_frames(4) else {
        println!("mini-hv: entry-diff: out of memory for the feature frames");
        return hv::Outcome::Fail;
    };
    let mut active = match region.load(root, &hv::identity) {
        Ok(active) => active,
        Err(e) => {
            println!("mini-hv: entry-diff: cannot load the VMCS: {e}");
            return hv::Outcome::Fail;
        }
    };
    // The known-good VMCS loads and stores no MSR (counts 0); the mutations raise the counts.
    let mut known_good = || -> Result<VmcsSnapshot, hv::SetupError> {
        hv::write_vmcs(&mut active, controls, eptp, msr_bitmap, io_bitmaps, vpid)?;
        vcpu::write_reset_state(&mut active, hv::cr_policy(caps), caps, STUB_GPA)?;
        active.write(fields::VMX_PREEMPTION_TIMER_VALUE, 0)?;
        active.write(
            fields::VM_ENTRY_MSR_LOAD_ADDRESS,
            entry_area.phys_addr(&hv::identity)?,
        )?;
        active.write(
            fields::VM_EXIT_MSR_STORE_ADDRESS,
            exit_store.phys_addr(&hv::identity)?,
        )?;
        active.write(
            fields::VM_EXIT_MSR_LOAD_ADDRESS,
            exit_load.phys_addr(&hv::identity)?,
        )?;
        Ok(VmcsSnapshot::capture(&active)?)
    };
    let baseline = known_good();
    let baseline = match baseline {
        Ok(snapshot) => snapshot,
        Err(fail) => {
            println!("mini-hv: entry-diff: writing the known-good VMCS failed: {fail}");
            return hv::Outcome::Fail;
        }
    };
    let cpu = check::CpuFacts::from_cpuid();
    let vmxon = active.root().vmxon_region_phys();
    let env = Env {
        maxphyaddr: hv::phys_addr_width(),
        cr0_fixed: caps.cr0_fixed_bits(CrUse::Vmx),
        cr4_fixed: caps.cr4_fixed_bits(),
        entry_area_phys: match entry_area.phys_addr(&hv::identity) {
            Ok(phys) => phys,
            Err(e) => {
                println!("mini-hv: entry-diff: {e}");
                return hv::Outcome::Fail;
            }
        },
        entry_area,
        msr_list_max: caps.misc.max_msr_list_entries(),
        frames: core::array::from_fn(|i| feature_frames + 4096 * i as u64),
        revision: caps.basic.revision_id(),
        vmcs_phys: active.phys_addr(),
        vmxon_phys: vmxon,
        mtf: caps
            .proc
            .allows(vmx_caps::PrimaryControls::MONITOR_TRAP_FLAG),
    };
    println!(
        "mini-hv: entry-diff: start: {} cases, seed {}, MAXPHYADDR {}",
        params.cases, params.seed, env.maxphyaddr
    );

    for d in BOCHS_DEVIATIONS {
        println!(
            "mini-hv: entry-diff: excusable {}: Bochs {} ({})",
            d.id, d.bochs, d.sdm
        );
    }
    let mut rng = Rng(params.seed);
    let mut regs = GuestRegisters::new();
    let (mut agree, mut disagree, mut excused) = (0u32, 0u32, 0u32);
    let (mut nested_agree, mut nested_disagree) = (0u32, 0u32);
    let mut by_outcome = [0u32; 6];
    let mut agree_in_other_order = 0u32;
    let (mut grid_cases, mut grid_failed) = (0u32, 0u32);
    for case in 0..params.cases {
        if let Err(fail) = restore(&mut active, &baseline) {
            println!("mini-hv: entry-diff: case {case}: restoring the VMCS failed: {fail}");
            return hv::Outcome::Fail;
        }
        reset_msr_area(entry_area);
        let mut mutation = Mutation::new();
        let grid = grid_combination(case);
        let mutated = match grid {
            Some(index) => inject_grid(&env, &mut active, &mut mutation, index),
            None => mutate(&mut rng, &env, &mut active, &mut mutation),
        };
        if let Err(fail) = mutated {
            println!("mini-hv: entry-diff: case {case}: VMWRITE failed: {fail} ({mutation})");
            return hv::Outcome::Fail;
        }
        if params.only.is_some_and(|only| only != case) {
            continue;
        }
        let launch =
            check::LaunchContext::new(check::EntryInstruction::Vmlaunch, active.phys_addr(), vmxon);
        let checker = check::Checker::new(caps, cpu, launch);
        let report: check::Report<32> = match checker.report(&active, &mut IdentityMemory) {
            Ok(report) => report,
            Err(e) => {
                println!("mini-hv: entry-diff: case {case}: the checker failed: {e} ({mutation})");
                return hv::Outcome::Fail;
            }
        };
        let predicted = report.outcome();
        match l1_launch(caps, cpu, &active, vmxon, env.maxphyaddr) {
            Ok(nested) if nested == predicted => nested_agree += 1,
            Ok(nested) => {
                nested_disagree += 1;
                println!(
                    "mini-hv: entry-diff: NESTED-DISAGREE case {case}: mutation: {mutation}; \
                     checker: {predicted}; L1's VMLAUNCH through L0's emulation: {nested}"
                );
            }
            Err(why) => {
                println!("mini-hv: entry-diff: case {case}: nested launch: {why} ({mutation})");
                return hv::Outcome::Fail;
            }
        }
        if params.trace {
            println!("mini-hv: entry-diff: case {case}: {mutation}; predicted: {predicted}");
        }
        active.reset_host_state_cache();
        // SAFETY: the host-state area is this host's (host mutations are limited to values VM
        // entry must reject); EPT maps guest RAM only; the guest exits before its first
        // instruction (preemption timer 0) or at the VMCALL it is parked on; CR4.OSFXSR set,
        // CR0.TS/EM clear (boot code); the NMI handler only reports and stops.
        let status = unsafe { active.run(&mut regs) };
        let observed = match status {
            Ok(()) => {
                let reason = active.read_raw(fields::EXIT_REASON.encoding());
                let qualification = active.read_raw(fields::EXIT_QUALIFICATION.encoding());
                match (reason, qualification) {
                    (Ok(r), Ok(q)) => Outcome::observed(Ok(()), r as u32, q),
                    (Err(fail), _) | (_, Err(fail)) => {
                        println!("mini-hv: entry-diff: case {case}: cannot read the exit: {fail}");
                        return hv::Outcome::Fail;
                    }
                }
            }
            Err(RunError::Entry(fail)) => Outcome::observed(Err(fail), 0, 0),
            Err(e @ RunError::ExitReasonRead(_)) => {
                println!("mini-hv: entry-diff: case {case}: {e}");
                return hv::Outcome::Fail;
            }
        };
        by_outcome[match observed {
            Outcome::Success => 0,
            Outcome::VmFailInvalid => 1,
            Outcome::VmFailValid(e) if e.number() == 7 => 2,
            Outcome::VmFailValid(_) => 3,
            Outcome::EntryFailure { exit_reason, .. } if exit_reason & 0xffff == 33 => 4,
            Outcome::EntryFailure { .. } => 5,
        }] += 1;
        if active.is_launched() {
            // The entry succeeded: make the launch state clear again (VMCLEAR, VMPTRLD).
            let region = match active.clear() {
                Ok(region) => region,
                Err((_, fail)) => {
                    println!("mini-hv: entry-diff: case {case}: VMCLEAR failed: {fail}");
                    return hv::Outcome::Fail;
                }
            };
            active = match region.load(root, &hv::identity) {
                Ok(active) => active,
                Err(e) => {
                    println!("mini-hv: entry-diff: case {case}: cannot reload the VMCS: {e}");
                    return hv::Outcome::Fail;
                }
            };
        }
        if grid.is_some() {
            grid_cases += 1;
            if observed != Outcome::Success {
                grid_failed += 1;
            }
        }
        if predicted == observed {
            agree += 1;
            continue;
        }
        if same_guest_failure(&report, observed) {
            agree += 1;
            agree_in_other_order += 1;
            continue;
        }
        let verdict = if bochs_excuses(&report, &active, caps, observed) {
            excused += 1;
            "excused"
        } else {
            disagree += 1;
            "DISAGREE"
        };
        println!("mini-hv: entry-diff: {verdict} case {case}: mutation: {mutation}");
        print!("mini-hv: entry-diff:   predicted: {predicted} (rules:");
        for violation in report.violations() {
            print!(" {}", violation.rule.id());
            if deviation(violation.rule).is_some() {
                print!("[bochs-deviation]");
            }
        }
        println!("); actual: {observed}");
    }
    println!(
        "mini-hv: entry-diff: observed outcomes: {} success, {} VMfailInvalid, {} VMfailValid(7), \
         {} other VMfailValid, {} exit 33, {} exit 34",
        by_outcome[0], by_outcome[1], by_outcome[2], by_outcome[3], by_outcome[4], by_outcome[5]
    );
    println!(
        "mini-hv: entry-diff: {agree_in_other_order} of the agreements are exit-33 failures that \
         report another violated guest-state rule's qualification (the SDM does not order them)"
    );
    println!(
        "mini-hv: entry-diff: event-injection grid: {grid_cases} cases over {GRID_SIZE} \
         combinations (type x vector x deliver-error-code x guest mode), {grid_failed} of them \
         failed VM entry; IA32_VMX_BASIC[56] = {}",
        u8::from(caps.basic.no_error_code_check())
    );
    println!(
        "mini-hv: entry-diff: nested: L1's VMLAUNCH through L0's emulation gave the checker's \
         outcome in {nested_agree} of {} cases ({nested_disagree} differ)",
        nested_agree + nested_disagree
    );
    println!(
        "entry-diff: {} cases, {agree} agree, {disagree} disagree, {excused} excused",
        agree + disagree + excused
    );
    if let Err((_, fail)) = active.clear() {
        println!("mini-hv: entry-diff: VMCLEAR failed: {fail}");
        return hv::Outcome::Fail;
    }
    if disagree == 0 && nested_disagree == 0 {
        hv::Outcome::Pass
    } else {
        hv::Outcome::Fail
    }
}

/// Whether Bochs' known deviations explain `observed`: the checker's prediction is recomputed as
/// Bochs would produce it (violations of rules Bochs does not check are dropped, K12 fails with
/// qualification 0, Bochs' own extra checks are added) and must equal `observed`, or, when both
/// are exit-33 failures, `observed` must carry the qualification of one of the violations kept
/// (the SDM does not order the guest-state checks, as for [`same_guest_failure`]). Never when the
/// report dropped violations for lack of room (no recomputation possible).
fn bochs_excuses<const N: usize>(
    report: &check::Report<N>,
    vmcs: &Vmcs<'_>,
    caps: &VmxCapabilities,
    observed: Outcome,
) -> bool {
    if report.dropped() != 0 {
        return false;
    }
    let mut best = Outcome::Success;
    let mut kept_observed = false;
    let mut consider = |outcome: Outcome| {
        kept_observed |= outcome == observed;
        if outcome.rank() < best.rank() {
            best = outcome;
        }
    };
    for v in report.violations() {
        match deviation(v.rule).map(|d| d.kind) {
            Some(DeviationKind::NotChecked(_)) => {}
            Some(DeviationKind::Partial(_, missed)) if missed(v, caps) => {}
            Some(DeviationKind::QualificationZero(_)) => consider(X33_Q0),
            _ => consider(v.outcome),
        }
    }
    for d in BOCHS_DEVIATIONS {
        if let DeviationKind::Stricter(outcome_of) = d.kind
            && let Some(outcome) = outcome_of(vmcs)
        {
            consider(outcome);
        }
    }
    best == observed || (guest_failure(best) && guest_failure(observed) && kept_observed)
}

/// Whether `outcome` is a VM-entry failure for invalid guest state (exit 33).
fn guest_failure(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::EntryFailure { exit_reason, .. }
        if exit_reason & 0xffff == check::EXIT_REASON_INVALID_GUEST_STATE)
}

/// Whether `observed` is a VM-entry failure for invalid guest state (exit 33) with the
/// qualification of one of the violated guest-state rules, while the checker predicted exit 33 as
/// well: the SDM does not order the guest-state checks, so a processor may report any of them
/// (the checker's module docs say so).
fn same_guest_failure<const N: usize>(report: &check::Report<N>, observed: Outcome) -> bool {
    guest_failure(report.outcome())
        && guest_failure(observed)
        && report.violations().any(|v| v.outcome == observed)
}

/// Writes every writable field of `baseline` (but HOST_RSP/HOST_RIP, which the trampoline owns).
fn restore(active: &mut Vmcs<'_>, baseline: &VmcsSnapshot) -> Result<(), VmFail> {
    for (info, value) in baseline.iter() {
        if info.read_only()
            || info.encoding == fields::HOST_RSP.encoding()
            || info.encoding == fields::HOST_RIP.encoding()
        {
            continue;
        }
        active.write_raw(info.encoding, value)?;
    }
    Ok(())
}

/// Fills an MSR area with `entries` entries loading IA32_SYSENTER_CS with 0.
/// The filler entry: IA32_SYSENTER_CS = 0 (harmless to load for this host).
const FILLER: MsrEntry = MsrEntry {
    index: IA32_SYSENTER_CS,
    data: 0,
};

/// Puts every entry of `area` in use, each [`FILLER`].
fn fill_msr_area<const N: usize>(area: &mut MsrArea<N>) {
    area.clear();
    while area.push(FILLER).is_ok() {}
}

/// Resets every entry in use of `area` to [`FILLER`].
fn reset_msr_area<const N: usize>(area: &MsrArea<N>) {
    for i in 0..area.len() {
        area.set(i, FILLER);
    }
}

/// Control fields whose bits are flipped.
const CONTROL_FIELDS: &[u32] = &[
    fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding(),
    fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding(),
    fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding(),
    fields::PRIMARY_VM_EXIT_CONTROLS.encoding(),
    fields::VM_ENTRY_CONTROLS.encoding(),
];

/// Other control fields: bit flips and boundary values.
const CONTROL_VALUES: &[u32] = &[
    fields::CR3_TARGET_COUNT.encoding(),
    fields::TPR_THRESHOLD.encoding(),
    fields::VIRTUAL_PROCESSOR_IDENTIFIER.encoding(),
    fields::EPT_POINTER.encoding(),
    fields::ADDRESS_OF_IO_BITMAP_A.encoding(),
    fields::ADDRESS_OF_IO_BITMAP_B.encoding(),
    fields::ADDRESS_OF_MSR_BITMAPS.encoding(),
    fields::VIRTUAL_APIC_ADDRESS.encoding(),
    fields::APIC_ACCESS_ADDRESS.encoding(),
    fields::VMREAD_BITMAP_ADDRESS.encoding(),
    fields::VMWRITE_BITMAP_ADDRESS.encoding(),
    fields::PML_ADDRESS.encoding(),
    fields::EPTP_LIST_ADDRESS.encoding(),
    fields::VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS.encoding(),
    fields::VM_ENTRY_MSR_LOAD_COUNT.encoding(),
];

/// Guest-state fields: bit flips and boundary values (the guest never executes an instruction).
const GUEST_FIELDS: &[u32] = &[
    fields::GUEST_CR0.encoding(),
    fields::GUEST_CR3.encoding(),
    fields::GUEST_CR4.encoding(),
    fields::GUEST_DR7.encoding(),
    fields::GUEST_RSP.encoding(),
    fields::GUEST_RIP.encoding(),
    fields::GUEST_RFLAGS.encoding(),
    fields::GUEST_ES_SELECTOR.encoding(),
    fields::GUEST_CS_SELECTOR.encoding(),
    fields::GUEST_SS_SELECTOR.encoding(),
    fields::GUEST_DS_SELECTOR.encoding(),
    fields::GUEST_FS_SELECTOR.encoding(),
    fields::GUEST_GS_SELECTOR.encoding(),
    fields::GUEST_LDTR_SELECTOR.encoding(),
    fields::GUEST_TR_SELECTOR.encoding(),
    fields::GUEST_ES_BASE.encoding(),
    fields::GUEST_CS_BASE.encoding(),
    fields::GUEST_SS_BASE.encoding(),
    fields::GUEST_DS_BASE.encoding(),
    fields::GUEST_FS_BASE.encoding(),
    fields::GUEST_GS_BASE.encoding(),
    fields::GUEST_LDTR_BASE.encoding(),
    fields::GUEST_TR_BASE.encoding(),
    fields::GUEST_ES_LIMIT.encoding(),
    fields::GUEST_CS_LIMIT.encoding(),
    fields::GUEST_SS_LIMIT.encoding(),
    fields::GUEST_DS_LIMIT.encoding(),
    fields::GUEST_FS_LIMIT.encoding(),
    fields::GUEST_GS_LIMIT.encoding(),
    fields::GUEST_LDTR_LIMIT.encoding(),
    fields::GUEST_TR_LIMIT.encoding(),
    fields::GUEST_ES_ACCESS_RIGHTS.encoding(),
    fields::GUEST_CS_ACCESS_RIGHTS.encoding(),
    fields::GUEST_SS_ACCESS_RIGHTS.encoding(),
    fields::GUEST_DS_ACCESS_RIGHTS.encoding(),
    fields::GUEST_FS_ACCESS_RIGHTS.encoding(),
    fields::GUEST_GS_ACCESS_RIGHTS.encoding(),
    fields::GUEST_LDTR_ACCESS_RIGHTS.encoding(),
    fields::GUEST_TR_ACCESS_RIGHTS.encoding(),
    fields::GUEST_GDTR_BASE.encoding(),
    fields::GUEST_IDTR_BASE.encoding(),
    fields::GUEST_GDTR_LIMIT.encoding(),
    fields::GUEST_IDTR_LIMIT.encoding(),
    fields::GUEST_IA32_DEBUGCTL.encoding(),
    fields::GUEST_IA32_SYSENTER_CS.encoding(),
    fields::GUEST_IA32_SYSENTER_ESP.encoding(),
    fields::GUEST_IA32_SYSENTER_EIP.encoding(),
    fields::GUEST_IA32_EFER.encoding(),
    fields::GUEST_IA32_PAT.encoding(),
    fields::GUEST_INTERRUPTIBILITY_STATE.encoding(),
    fields::GUEST_ACTIVITY_STATE.encoding(),
    fields::GUEST_PENDING_DEBUG_EXCEPTIONS.encoding(),
    fields::VMCS_LINK_POINTER.encoding(),
    fields::GUEST_PDPTE0.encoding(),
    fields::GUEST_PDPTE1.encoding(),
    fields::GUEST_PDPTE2.encoding(),
    fields::GUEST_PDPTE3.encoding(),
    fields::GUEST_IA32_S_CET.encoding(),
    fields::GUEST_SSP.encoding(),
    fields::GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR.encoding(),
    fields::GUEST_IA32_PERF_GLOBAL_CTRL.encoding(),
];

/// Host selectors: an RPL or TI bit, or a null CS/TR, must make VM entry fail.
const HOST_SELECTORS: &[u32] = &[
    fields::HOST_ES_SELECTOR.encoding(),
    fields::HOST_CS_SELECTOR.encoding(),
    fields::HOST_SS_SELECTOR.encoding(),
    fields::HOST_DS_SELECTOR.encoding(),
    fields::HOST_FS_SELECTOR.encoding(),
    fields::HOST_GS_SELECTOR.encoding(),
    fields::HOST_TR_SELECTOR.encoding(),
];

/// Host addresses that must be canonical.
const HOST_ADDRESSES: &[u32] = &[
    fields::HOST_FS_BASE.encoding(),
    fields::HOST_GS_BASE.encoding(),
    fields::HOST_TR_BASE.encoding(),
    fields::HOST_GDTR_BASE.encoding(),
    fields::HOST_IDTR_BASE.encoding(),
    fields::HOST_IA32_SYSENTER_ESP.encoding(),
    fields::HOST_IA32_SYSENTER_EIP.encoding(),
    fields::HOST_IA32_INTERRUPT_SSP_TABLE_ADDR.encoding(),
    fields::HOST_SSP.encoding(),
];

/// Entries for the VM-entry MSR-load list: (index quadword, value). Valid ones load MSRs this
/// host does not depend on (SYSENTER MSRs are reloaded at every VM exit; no SYSCALL is used).
const MSR_ENTRIES: &[(u64, u64)] = &[
    (msr(IA32_SYSENTER_CS), 0x10),
    (msr(IA32_SYSENTER_ESP), 0x1000),
    (msr(IA32_SYSENTER_ESP), 0x0000_8000_0000_0000), // non-canonical: M6
    (msr(IA32_SYSENTER_EIP), 0xffff_8000_0000_0000),
    (msr(IA32_STAR), 0x0023_0010_0000_0000),
    (msr(IA32_LSTAR), 0xffff_ffff_8000_0000),
    (msr(IA32_LSTAR), 0x8000_0000_0000), // non-canonical: M6
    (msr(IA32_KERNEL_GS_BASE), 0x1234_5000),
    (msr(IA32_KERNEL_GS_BASE), 0xfff0_0000_0000_0000 ^ (1 << 63)), // non-canonical: M6
    (msr(IA32_PAT), 0x0007_0406_0007_0406),
    (msr(IA32_PAT), 0x0007_0406_0007_0402), // memory type 2: M6
    (msr(IA32_EFER), 0x2),                  // reserved bit: M6
    (msr(IA32_FS_BASE), 0),                 // M2
    (msr(IA32_GS_BASE), 0),                 // M2
    (msr(IA32_X2APIC_TPR), 0),              // M3
    (msr(IA32_X2APIC_LAST), 0),             // x2APIC range end: M3
    (msr(IA32_SMM_MONITOR_CTL), 0),         // M4
    (1 << 32 | msr(IA32_SYSENTER_CS), 0),   // reserved bits 63:32: M1
    (msr(IA32_DEBUGCTL), 0),
    (msr(IA32_DEBUGCTL), 1 << 63), // reserved: M6
];

/// An MSR address as the index quadword of an MSR-area entry.
const fn msr(index: u32) -> u64 {
    index as u64
}

fn field_bits(encoding: u32) -> u32 {
    match fields::by_encoding(encoding) {
        Some(info) => info.width().bits(),
        None => 64,
    }
}

/// A boundary value for a field that holds `old`.
fn boundary(rng: &mut Rng, env: &Env, old: u64) -> u64 {
    let m = u32::from(env.maxphyaddr);
    match rng.below(14) {
        0 => 0,
        1 => u64::MAX,
        2 => old | 1 << m,
        3 => old | 1 << (m - 1),
        4 => 0x0000_8000_0000_0000,
        5 => 0xffff_8000_0000_0000,
        6 => 0x0000_7fff_ffff_f000,
        7 => old | 1,
        8 => old | 0xfff,
        9 => old | 1 << 32,
        10 => old ^ 1 << 31,
        11 => old.wrapping_add(1),
        12 => old.wrapping_sub(1),
        _ => old | 1 << 63,
    }
}

fn set_field(
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
    encoding: u32,
    new: u64,
) -> Result<(), VmFail> {
    let old = active.read_raw(encoding)?;
    let bits = field_bits(encoding);
    let new = if bits >= 64 {
        new
    } else {
        new & ((1 << bits) - 1)
    };
    active.write_raw(encoding, new)?;
    mutation.push(Change::Field { encoding, old, new });
    Ok(())
}

/// Every `GRID_EVERY`-th case (from case 0) injects one combination of the event-injection grid
/// instead of random mutations; the combinations follow each other in order, so any
/// `GRID_EVERY * GRID_SIZE` consecutive cases cover each of them.
const GRID_EVERY: u32 = 4;

/// The hardware-exception vectors of the grid: all 32, and two beyond (C8).
const HARDWARE_VECTORS: [u8; 34] = {
    let mut v = [0u8; 34];
    let mut i = 0;
    while i < 32 {
        v[i] = i as u8;
        i += 1;
    }
    v[32] = 32;
    v[33] = 0xff;
    v
};

/// The grid's vectors for each interruption type (index = type, SDM "Format of the VM-Entry
/// Interruption-Information Field"): every vector for hardware exceptions (C8, C10), the valid
/// and an invalid one where the type fixes it (C7 NMI = 2, C9 other event = 0), a few others.
const GRID_VECTORS: [&[u8]; 8] = [
    &[0x20, 8, 0xff], // external interrupt
    &[0, 8],          // reserved (C6)
    &[2, 8],          // NMI
    &HARDWARE_VECTORS,
    &[3, 0x80], // software interrupt
    &[1],       // privileged software exception (INT1)
    &[3, 4],    // software exception (INT3, INTO)
    &[0, 1],    // other event (pending MTF VM exit)
];

/// The guest modes of the grid: CR0.PE = 0 (only with "unrestricted guest"), and CR0.PE = 1 with
/// and without "unrestricted guest".
const GRID_MODES: [(Option<GuestMode>, bool); 4] = [
    (None, true),                         // the baseline: real mode, unrestricted guest
    (Some(GuestMode::Protected32), true), // CR0.PE = 1, paging off
    (Some(GuestMode::Pae32), false),      // CR0.PE = 1 without unrestricted guest
    (Some(GuestMode::Long64), true),      // IA-32e mode
];

/// Number of grid combinations: guest modes x deliver-error-code x (type, vector) pairs.
const GRID_SIZE: u32 = {
    let mut pairs = 0;
    let mut t = 0;
    while t < GRID_VECTORS.len() {
        pairs += GRID_VECTORS[t].len();
        t += 1;
    }
    (GRID_MODES.len() * 2 * pairs) as u32
};

/// The grid combination case `case` runs, if it is a grid case.
fn grid_combination(case: u32) -> Option<u32> {
    case.is_multiple_of(GRID_EVERY)
        .then_some((case / GRID_EVERY) % GRID_SIZE)
}

/// Injects grid combination `index` into an otherwise valid guest: the guest mode, then the
/// event (error code 0, instruction length 1, RFLAGS.IF = 1 so that only the injection rules
/// decide). Type 7 becomes the reserved type 1 on models without the monitor trap flag (Bochs
/// panics delivering it there instead of failing C6).
fn inject_grid(
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
    index: u32,
) -> Result<(), VmFail> {
    let (mode, unrestricted) = GRID_MODES[(index % GRID_MODES.len() as u32) as usize];
    let rest = index / GRID_MODES.len() as u32;
    let deliver = u64::from(rest % 2);
    let mut pair = (rest / 2) as usize;
    let mut kind = 0;
    for (t, vectors) in GRID_VECTORS.iter().enumerate() {
        if pair < vectors.len() {
            kind = t;
            break;
        }
        pair -= vectors.len();
    }
    let vector = u64::from(GRID_VECTORS[kind][pair]);
    let kind = if kind == 7 && !env.mtf {
        1
    } else {
        kind as u64
    };
    if let Some(mode) = mode {
        switch_mode(active, mode)?;
        mutation.push(Change::Mode(mode));
    }
    if !unrestricted {
        let proc2 = fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding();
        let old = active.read_raw(proc2)?;
        set_field(active, mutation, proc2, old & !(1 << 7))?;
    }
    set_field(active, mutation, fields::GUEST_RFLAGS.encoding(), 0x202)?;
    set_field(
        active,
        mutation,
        fields::VM_ENTRY_INSTRUCTION_LENGTH.encoding(),
        1,
    )?;
    set_field(
        active,
        mutation,
        fields::VM_ENTRY_EXCEPTION_ERROR_CODE.encoding(),
        0,
    )?;
    set_field(
        active,
        mutation,
        fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(),
        1 << 31 | deliver << 11 | kind << 8 | vector,
    )
}

/// Applies one to three mutations. Fields the processor does not support are skipped.
fn mutate(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    let mode = match rng.below(10) {
        0..=4 => None,
        5 | 6 => Some(GuestMode::Protected32),
        7 => Some(GuestMode::Pae32),
        _ => Some(GuestMode::Long64),
    };
    if let Some(mode) = mode {
        switch_mode(active, mode)?;
        mutation.push(Change::Mode(mode));
    }
    let count = match rng.below(10) {
        0..=5 => 1,
        6..=8 => 2,
        _ => 3,
    };
    for _ in 0..count {
        match one_mutation(rng, env, active, mutation) {
            // An unsupported field (VMREAD/VMWRITE error 12): nothing changed.
            Err(VmFail::Valid(e)) if e.number() == 12 => {}
            other => other?,
        }
    }
    Ok(())
}

/// Guest-physical address of the (empty) top-level paging structure of the paged modes.
const PAGING_ROOT_GPA: u64 = 0x8000;

/// Rewrites the guest state as a consistent `mode` (the guest is parked on the stub at
/// `STUB_GPA`; its paging structures are empty, which does not matter before its first
/// instruction).
fn switch_mode(active: &mut Vmcs<'_>, mode: GuestMode) -> Result<(), VmFail> {
    let long = matches!(mode, GuestMode::Long64);
    let paged = !matches!(mode, GuestMode::Protected32);
    let cr0 = active.read_raw(fields::GUEST_CR0.encoding())? | Cr0::PE.bits();
    let cr4 = active.read_raw(fields::GUEST_CR4.encoding())?;
    let (cr0, cr4) = if paged {
        (cr0 | Cr0::PG.bits(), cr4 | Cr4::PAE.bits())
    } else {
        (cr0, cr4)
    };
    let writes: [(u32, u64); 5] = [
        (fields::GUEST_CR0.encoding(), cr0),
        (fields::GUEST_CR4.encoding(), cr4),
        (
            fields::GUEST_CR3.encoding(),
            if paged { PAGING_ROOT_GPA } else { 0 },
        ),
        (
            fields::GUEST_IA32_EFER.encoding(),
            if long {
                (Efer::LME | Efer::LMA).bits()
            } else {
                0
            },
        ),
        (fields::GUEST_RIP.encoding(), STUB_GPA),
    ];
    for (encoding, value) in writes {
        active.write_raw(encoding, value)?;
    }
    // The flat segments and TR of the matching template.
    let template = if long {
        GuestState::long_mode_64(STUB_GPA, PAGING_ROOT_GPA)
    } else {
        GuestState::protected_mode_32(STUB_GPA)
    };
    active.write_guest_segment(GuestSegment::Cs, template.cs)?;
    for seg in [GuestSegment::Ss, GuestSegment::Ds, GuestSegment::Es] {
        active.write_guest_segment(seg, template.ds)?;
    }
    active.write_guest_segment(GuestSegment::Tr, template.tr)?;
    if long {
        let entry = fields::VM_ENTRY_CONTROLS.encoding();
        let controls = active.read_raw(entry)?;
        active.write_raw(
            entry,
            controls | u64::from(EntryControls::IA32E_MODE_GUEST.bits()),
        )?;
    }
    Ok(())
}

fn one_mutation(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    match rng.below(100) {
        // A feature switched on with the fields it uses.
        0..=11 => feature(rng, env, active, mutation),
        // Control bits.
        12..=24 => {
            let encoding = rng.pick(CONTROL_FIELDS);
            let mut bit = rng.below(32);
            // Keep "activate VMX-preemption timer": it ends every successful entry at once.
            if encoding == fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding() && bit == 6 {
                bit = 5;
            }
            let old = active.read_raw(encoding)?;
            set_field(active, mutation, encoding, old ^ 1 << bit)
        }
        // Other control fields.
        25..=39 => {
            let encoding = rng.pick(CONTROL_VALUES);
            let old = active.read_raw(encoding)?;
            let new = if encoding == fields::VM_ENTRY_MSR_LOAD_COUNT.encoding() {
                // Up to the area's size (past the recommended maximum): a longer list would run
                // into memory this test does not control, and the checker does not look past
                // the recommended maximum.
                let max = u64::from(env.msr_list_max);
                rng.pick(&[0, 1, 2, 5, max, max + 1, ENTRY_AREA_ENTRIES as u64])
            } else if encoding == fields::CR3_TARGET_COUNT.encoding() {
                rng.pick(&[0, 1, 3, 4, 5, 0x100, 0xffff_ffff])
            } else if rng.chance(50) {
                old ^ 1 << rng.below(u64::from(field_bits(encoding)))
            } else {
                boundary(rng, env, old)
            };
            set_field(active, mutation, encoding, new)
        }
        // Guest state.
        40..=64 => {
            let encoding = rng.pick(GUEST_FIELDS);
            let old = active.read_raw(encoding)?;
            let new = match encoding {
                // Not wait-for-SIPI (3) here: a guest that VM entry puts into that state stays
                // there (Bochs does not end it with the preemption timer), and the run would
                // hang. `inject` uses it, where the injection itself must fail the entry (K6).
                e if e == fields::GUEST_ACTIVITY_STATE.encoding() => {
                    rng.pick(&[0, 1, 2, 4, 0xffff_ffff])
                }
                _ if rng.chance(60) => old ^ 1 << rng.below(u64::from(field_bits(encoding))),
                _ => boundary(rng, env, old),
            };
            set_field(active, mutation, encoding, new)
        }
        // Event injection, with the guest state it depends on.
        65..=79 => inject(rng, env, active, mutation),
        // The VM-entry MSR-load list.
        80..=89 => msr_list(rng, env, active, mutation),
        // Host state: only values VM entry must reject.
        _ => host(rng, env, active, mutation),
    }
}

/// Sets `bits` in the control field `encoding`.
fn set_bits(
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
    encoding: u32,
    bits: u64,
) -> Result<(), VmFail> {
    let old = active.read_raw(encoding)?;
    set_field(active, mutation, encoding, old | bits)
}

/// A page address for a control field: one of the feature frames, usually valid, sometimes
/// misaligned or beyond MAXPHYADDR.
fn page(rng: &mut Rng, env: &Env, frame: usize) -> u64 {
    let base = env.frames[frame];
    match rng.below(10) {
        0 => base | 0x80,
        1 => base | 1 << env.maxphyaddr,
        _ => base,
    }
}

/// Switches on a feature (pin/processor-based/secondary controls) together with the fields and
/// memory it uses, with valid and boundary values: the TPR shadow and APIC virtualization, VMCS
/// shadowing and the link pointer, VM functions, PML, #VE, virtual NMIs, the preemption-timer
/// save control.
fn feature(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    let pin = fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding();
    let proc = fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding();
    let proc2 = fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding();
    match rng.below(7) {
        0 => {
            // TPR shadow, APIC virtualization.
            if rng.chance(85) {
                set_bits(active, mutation, proc, 1 << 21)?;
            }
            let vapic = page(rng, env, 0);
            set_field(
                active,
                mutation,
                fields::VIRTUAL_APIC_ADDRESS.encoding(),
                vapic,
            )?;
            let threshold = rng.pick(&[0u64, 1, 7, 15, 16, 0x80]);
            set_field(
                active,
                mutation,
                fields::TPR_THRESHOLD.encoding(),
                threshold,
            )?;
            let vtpr = rng.pick(&[0u8, 0x10, 0x70, 0xf0, 0xff]);
            // SAFETY: the virtual-APIC frame is owned by this module, identity-mapped.
            unsafe { ((env.frames[0] + 0x80) as *mut u8).write_volatile(vtpr) };
            let mut extra = 0;
            for bit in [0u64, 4, 8, 9] {
                if rng.chance(30) {
                    extra |= 1 << bit;
                }
            }
            if extra != 0 {
                set_bits(active, mutation, proc2, extra)?;
            }
            if extra & 1 != 0 {
                let apic = page(rng, env, 1);
                set_field(
                    active,
                    mutation,
                    fields::APIC_ACCESS_ADDRESS.encoding(),
                    apic,
                )?;
            }
            if rng.chance(50) {
                set_bits(active, mutation, pin, 1)?;
            }
            Ok(())
        }
        1 => {
            // VMCS shadowing and the VMCS link pointer.
            if rng.chance(70) {
                set_bits(active, mutation, proc2, 1 << 14)?;
                let bitmap = page(rng, env, 3);
                set_field(
                    active,
                    mutation,
                    fields::VMREAD_BITMAP_ADDRESS.encoding(),
                    bitmap,
                )?;
                let bitmap = page(rng, env, 3);
                set_field(
                    active,
                    mutation,
                    fields::VMWRITE_BITMAP_ADDRESS.encoding(),
                    bitmap,
                )?;
            }
            let shadow = env.frames[2];
            let header = match rng.below(4) {
                0 => env.revision,
                1 => env.revision | 1 << 31,
                2 => env.revision ^ 1,
                _ => 0,
            };
            // SAFETY: the shadow-VMCS frame is owned by this module, identity-mapped.
            unsafe { (shadow as *mut u32).write_volatile(header) };
            let link = rng.pick(&[
                shadow,
                shadow,
                shadow | 8,
                env.vmcs_phys,
                env.vmxon_phys,
                shadow | 1 << env.maxphyaddr,
            ]);
            set_field(active, mutation, fields::VMCS_LINK_POINTER.encoding(), link)
        }
        2 => {
            // VM functions (EPTP switching).
            set_bits(active, mutation, proc2, 1 << 13)?;
            let functions = rng.pick(&[0u64, 1, 2, 1 << 63]);
            set_field(
                active,
                mutation,
                fields::VM_FUNCTION_CONTROLS.encoding(),
                functions,
            )?;
            let list = page(rng, env, 3);
            set_field(active, mutation, fields::EPTP_LIST_ADDRESS.encoding(), list)?;
            if rng.chance(20) {
                let old = active.read_raw(proc2)?;
                set_field(active, mutation, proc2, old & !(1 << 1))?;
            }
            Ok(())
        }
        3 => {
            // Page-modification logging.
            set_bits(active, mutation, proc2, 1 << 17)?;
            let log = page(rng, env, 3);
            set_field(active, mutation, fields::PML_ADDRESS.encoding(), log)?;
            let index = rng.pick(&[0u64, 511, 512, 0xffff]);
            set_field(active, mutation, fields::PML_INDEX.encoding(), index)?;
            if rng.chance(20) {
                let old = active.read_raw(proc2)?;
                set_field(active, mutation, proc2, old & !(1 << 1))?;
            }
            Ok(())
        }
        4 => {
            // EPT-violation #VE.
            set_bits(active, mutation, proc2, 1 << 18)?;
            let info = page(rng, env, 3);
            set_field(
                active,
                mutation,
                fields::VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS.encoding(),
                info,
            )
        }
        5 => {
            // NMI exiting, virtual NMIs, NMI-window exiting.
            let old = active.read_raw(pin)?;
            let new =
                (old & !(1 << 3 | 1 << 5)) | rng.pick(&[0u64, 1 << 3, 1 << 5, 1 << 3 | 1 << 5]);
            set_field(active, mutation, pin, new)?;
            if rng.chance(50) {
                set_bits(active, mutation, proc, 1 << 22)?;
            }
            Ok(())
        }
        _ => {
            // Save the preemption timer, acknowledge interrupts on exit.
            let exit = fields::PRIMARY_VM_EXIT_CONTROLS.encoding();
            set_bits(
                active,
                mutation,
                exit,
                rng.pick(&[1u64 << 22, 1 << 15, 1 << 22 | 1 << 15]),
            )
        }
    }
}

fn inject(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    let kind = rng.below(if env.mtf { 8 } else { 7 });
    let vector = rng.pick(&[
        0u64, 1, 2, 3, 6, 8, 10, 13, 14, 17, 18, 21, 31, 32, 0x80, 0xff,
    ]);
    let mut info = 1 << 31 | kind << 8 | vector;
    if rng.chance(40) {
        info |= 1 << 11;
    }
    if rng.chance(5) {
        info |= 1 << rng.pick(&[12u64, 13, 20, 30]);
    }
    set_field(
        active,
        mutation,
        fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(),
        info,
    )?;
    if info & 1 << 11 != 0 || rng.chance(20) {
        let code = rng.pick(&[0u64, 0x1234, 0x8000, 0x1_0000, 0xffff_ffff]);
        set_field(
            active,
            mutation,
            fields::VM_ENTRY_EXCEPTION_ERROR_CODE.encoding(),
            code,
        )?;
    }
    if matches!(kind, 4..=6) || rng.chance(20) {
        let length = rng.pick(&[0u64, 1, 2, 15, 16]);
        set_field(
            active,
            mutation,
            fields::VM_ENTRY_INSTRUCTION_LENGTH.encoding(),
            length,
        )?;
    }
    // The guest state the injection rules look at.
    match rng.below(8) {
        0 | 1 => set_field(
            active,
            mutation,
            fields::GUEST_RFLAGS.encoding(),
            (Rflags::RESERVED_1 | Rflags::IF).bits(),
        ),
        2 => set_field(
            active,
            mutation,
            fields::GUEST_INTERRUPTIBILITY_STATE.encoding(),
            rng.pick(&[1u64, 2, 8, 9]),
        ),
        3 => set_field(
            active,
            mutation,
            fields::GUEST_ACTIVITY_STATE.encoding(),
            rng.pick(&[1u64, 2, 3]),
        ),
        4 => {
            let cr0 = active.read_raw(fields::GUEST_CR0.encoding())?;
            set_field(
                active,
                mutation,
                fields::GUEST_CR0.encoding(),
                cr0 | Cr0::PE.bits(),
            )
        }
        _ => Ok(()),
    }
}

fn msr_list(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    let count = 1 + rng.below(4);
    for slot in 0..count as usize {
        let (index, value) = rng.pick(MSR_ENTRIES);
        // Bits 31:0 of `index` are the MSR, bits 63:32 the entry's reserved bits (rule M1).
        let entry = MsrEntry {
            index: index as u32,
            data: value,
        };
        env.entry_area
            .set_with_reserved(slot, entry, (index >> 32) as u32);
        mutation.push(Change::MsrEntry { slot, index, value });
    }
    set_field(
        active,
        mutation,
        fields::VM_ENTRY_MSR_LOAD_COUNT.encoding(),
        count,
    )?;
    if rng.chance(15) {
        let address = env.entry_area_phys | rng.pick(&[8u64, 1, 1 << env.maxphyaddr, 1 << 63]);
        set_field(
            active,
            mutation,
            fields::VM_ENTRY_MSR_LOAD_ADDRESS.encoding(),
            address,
        )?;
    }
    Ok(())
}

fn host(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    match rng.below(7) {
        0 => {
            // A CR0 bit fixed to 1 cleared, or one fixed to 0 set.
            let old = active.read_raw(fields::HOST_CR0.encoding())?;
            let f = env.cr0_fixed;
            let new = fixed_violation(rng, f.must_be_one.bits(), f.must_be_zero.bits(), old);
            set_field(active, mutation, fields::HOST_CR0.encoding(), new)
        }
        1 => {
            let old = active.read_raw(fields::HOST_CR4.encoding())?;
            let new = if rng.chance(20) {
                old & !Cr4::PAE.bits() // required with "host address-space size"
            } else {
                let f = env.cr4_fixed;
                fixed_violation(rng, f.must_be_one.bits(), f.must_be_zero.bits(), old)
            };
            set_field(active, mutation, fields::HOST_CR4.encoding(), new)
        }
        2 => {
            let old = active.read_raw(fields::HOST_CR3.encoding())?;
            let bit = rng.below(64 - u64::from(env.maxphyaddr)) + u64::from(env.maxphyaddr);
            set_field(
                active,
                mutation,
                fields::HOST_CR3.encoding(),
                old | 1 << bit,
            )
        }
        3 => {
            let encoding = rng.pick(HOST_SELECTORS);
            let old = active.read_raw(encoding)?;
            let new = if rng.chance(25)
                && (encoding == fields::HOST_CS_SELECTOR.encoding()
                    || encoding == fields::HOST_TR_SELECTOR.encoding())
            {
                0
            } else {
                old | rng.pick(&[1u64, 2, 3, 4])
            };
            set_field(active, mutation, encoding, new)
        }
        4 => {
            let encoding = rng.pick(HOST_ADDRESSES);
            let old = active.read_raw(encoding)?;
            let new = old
                ^ rng.pick(&[
                    1u64 << 47,
                    1 << 63,
                    1 << 48,
                    0x0000_8000_0000_0000 | 1 << 62,
                ]);
            set_field(active, mutation, encoding, new)
        }
        5 => {
            let old = active.read_raw(fields::HOST_IA32_EFER.encoding())?;
            let new = match rng.below(4) {
                0 => old & !Efer::LMA.bits(),
                1 => old & !Efer::LME.bits(),
                _ => old | 1 << rng.pick(&[1u64, 2, 7, 9, 12, 16, 63]),
            };
            set_field(active, mutation, fields::HOST_IA32_EFER.encoding(), new)
        }
        _ => {
            // "host address-space size" cleared while the host runs in IA-32e mode.
            let encoding = fields::PRIMARY_VM_EXIT_CONTROLS.encoding();
            let old = active.read_raw(encoding)?;
            set_field(active, mutation, encoding, old & !(1 << 9))
        }
    }
}

/// `old` with one bit that IA32_VMX_CRx_FIXED0/1 fix (`ones` must be 1, `zeros` must be 0) put
/// on the wrong side (or a bit of 63:32 set).
fn fixed_violation(rng: &mut Rng, ones: u64, zeros: u64, old: u64) -> u64 {
    let zeros = zeros & 0xffff_ffff;
    for _ in 0..8 {
        let bit = 1u64 << rng.below(32);
        if ones & bit != 0 {
            return old & !bit;
        }
        if zeros & bit != 0 {
            return old | bit;
        }
    }
    old | 1 << (32 + rng.below(32))
}
