//! The software VM-entry checker: predicts what VMLAUNCH/VMRESUME will do with a VMCS, and names
//! every violated check.
//!
//! The checks are those of the SDM's "VM Entries" chapter, merged into the rules of the spec
//! `vm-entry-checks.md` with IDs `P1` … `M7` ([`Rule`]). The checker reads the VMCS through any
//! [`VmcsRead`] backend (the current VMCS through VMREAD, or a [`crate::SoftVmcs`]), needs no
//! allocation, and reports:
//! - every violated rule, to a [`ViolationSink`] (a closure, or a fixed-capacity [`Report`]),
//!   each with its rule, SDM section title, the fields involved, the actual and expected values,
//!   and the outcome it alone would cause;
//! - the predicted architectural outcome ([`Outcome`]): the first failing class in the SDM's order
//!   of evaluation — VMfailInvalid; VMfailValid 26, 4 or 5; VMfailValid 7 (controls); VMfailValid 8
//!   (host state); VM-entry failure with exit reason 33 (guest state: qualification 0, 3 for an NMI
//!   injected under blocking by STI, 4 for the VMCS link pointer, 2 for the PDPTEs); exit reason 34
//!   with the 1-based index of the first failing VM-entry MSR-load entry; or success. The SDM lets
//!   a processor check guest state in any order, so when guest-state checks of several
//!   qualifications fail at once, real processors may report another one of them.
//!
//! ```
//! use vmcs::check::{Checker, CpuFacts, EntryInstruction, LaunchContext, NoMemory, Outcome, Report, Rule};
//! use vmcs::SoftVmcs;
//! use vmx_caps::{MsrSnapshot, VmxCapabilities};
//!
//! let mut msrs = MsrSnapshot::parse(include_str!("../../../vmx-caps/testdata/tigerlake.msr")).unwrap();
//! let caps = VmxCapabilities::read(&mut msrs).unwrap();
//! let launch = LaunchContext::new(EntryInstruction::Vmlaunch, 0x1000, 0x2000);
//! let checker = Checker::new(&caps, CpuFacts::new(39), launch);
//!
//! // A VMCS of zeroes: the controls miss their allowed-0 bits, so VMLAUNCH fails with error 7.
//! let vmcs = SoftVmcs::new(&caps);
//! let report: Report<64> = checker.report(&vmcs, &mut NoMemory)?;
//! assert_eq!(report.outcome(), Outcome::VmFailValid(vmx_core::VmInstructionError::from_raw(7)));
//! assert!(report.violates(Rule::A1));
//! let first = report.violations().next().unwrap();
//! assert_eq!(first.rule.section_title(), "Checks on VMX Controls: VM-Execution Control Fields");
//!
//! // Count violations with a closure instead (no storage at all).
//! let mut n = 0;
//! let summary = checker.check(&vmcs, &mut NoMemory, &mut |_: &vmcs::check::Violation| n += 1)?;
//! assert_eq!(n, summary.violations);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Comparing with a real VM entry
//! A hypervisor calls the checker just before VMLAUNCH/VMRESUME, with its
//! [`vmx_core::CurrentVmcs`] as the backend, its own (identity-mapped) memory as the [`PhysMemory`] and a closure that logs
//! each violation, so nothing is allocated; afterwards [`Outcome::observed`] turns what the
//! processor did into an [`Outcome`] to compare with the prediction:
//!
//! ```
//! use vmcs::check::{Checker, CpuFacts, EntryInstruction, LaunchContext, NoMemory, Outcome, Violation};
//! use vmcs::SoftVmcs;
//! use vmx_caps::{MsrSnapshot, VmxCapabilities};
//! use vmx_core::{VmFail, VmInstructionError};
//!
//! # let mut msrs = MsrSnapshot::parse(include_str!("../../../vmx-caps/testdata/tigerlake.msr")).unwrap();
//! # let caps = VmxCapabilities::read(&mut msrs).unwrap();
//! # let vmcs = SoftVmcs::new(&caps); // stands for the CurrentVmcs here
//! let launch = LaunchContext::new(EntryInstruction::Vmlaunch, 0x1000, 0x2000);
//! let checker = Checker::new(&caps, CpuFacts::new(39), launch);
//! let mut log = |v: &Violation| { let _ = v.rule.id(); /* print to the serial console */ };
//! let predicted = checker.check(&vmcs, &mut NoMemory, &mut log)?.outcome;
//!
//! // ... VMLAUNCH ran and failed with VMfailValid(7); on a VM exit, pass EXIT_REASON and
//! // EXIT_QUALIFICATION as read from the VMCS instead.
//! let status: Result<(), VmFail> = Err(VmFail::Valid(VmInstructionError::from_raw(7)));
//! let observed = Outcome::observed(status, 0, 0);
//! assert_eq!(predicted, observed);
//! # Ok::<(), vmcs::check::CheckError>(())
//! ```
//!
//! # Inputs
//! - The capabilities ([`vmx_caps::VmxCapabilities`]): allowed control settings (TRUE MSRs per
//!   IA32_VMX_BASIC\[55\]), fixed CR0/CR4 bits, IA32_VMX_MISC, IA32_VMX_EPT_VPID_CAP, VM functions,
//!   IA32_VMX_BASIC\[48\] (32-bit physical addresses) and \[56\] (no error-code consistency check).
//! - [`CpuFacts`]: MAXPHYADDR, the linear-address width for canonicality, CPUID feature bits,
//!   and the model-specific reserved-bit masks of the MSRs VM entry may load.
//! - [`LaunchContext`]: VMLAUNCH or VMRESUME, launch state, current-VMCS and VMXON pointers,
//!   IA32_EFER.LMA, SMM, blocking by MOV SS.
//! - A [`PhysMemory`] for the rules that read memory (A13 VTPR, K23 link-pointer header, L2 PDPTEs
//!   without EPT, M1–M6 the MSR-load area); with [`NoMemory`] they are reported as unchecked in
//!   [`Summary::unchecked`], never as passed.
//!
//! Optional fields that the backend cannot read (a VMREAD of a field the processor does not
//! support fails) leave the rules that need them unchecked; a failing read of a field every VMX
//! processor has is a [`CheckError`]. The checker reads an optional field only when a control
//! that uses it is 1, so on a processor that supports the controls set, no VMREAD fails (a
//! failing VMREAD would overwrite the VM-instruction error field of the current VMCS).
//!
//! # Coverage
//! Every rule of the spec is evaluated except those listed below ([`Rule::coverage`] gives the same
//! list with the reasons). The covered rule IDs:
//!
//! P4–P8; A1–A45; B1–B8; C1–C16; D1–D19; E1–E15; F1–F8; G1–G24, G26–G31; H1–H39; I1–I4;
//! J1–J6; K1–K16, K18–K25; L1–L2; M1–M7.
//!
//! Not covered:
//! - P1–P3: faults (#UD, #GP) or VM exits that happen before any VMCS check; the checker models
//!   an instruction executed in VMX root operation at CPL 0 in protected or 64-bit mode.
//! - P9: the dual-monitor treatment of SMIs and SMM (executive-VMCS pointer) is not modelled.
//! - A46, A47: IPI virtualization and HLAT (tertiary controls) — their entry checks could not be
//!   verified against a current SDM for this release, and no Bochs model offers tertiary controls.
//! - A48 (TSC multiplier ≠ 0) is only a Bochs check; A49 is a VirtualBox restriction, not Intel's.
//! - D20, G33 (IA32_SPEC_CTRL loading): no verified SDM rule for the loaded value.
//! - D21–D23, G32, H40, K17 (FRED): the SDM text of these checks could not be verified for this
//!   release; CR4.FRED itself is checked (G12).
//! - G25: the SDM does not require guest IA32_S_CET to be canonical (only Bochs does).
//!
//! Partial by nature: M6 ("WRMSR would fault") is evaluated for the MSRs whose WRMSR rules are
//! architectural — IA32_EFER (reserved bits), IA32_PAT (memory types), IA32_SYSENTER_ESP/EIP,
//! IA32_LSTAR, IA32_CSTAR, IA32_KERNEL_GS_BASE (canonical), IA32_DEBUGCTL and
//! IA32_PERF_GLOBAL_CTRL (reserved bits, when [`CpuFacts`] knows them); IA32_TIME_STAMP_COUNTER,
//! IA32_SYSENTER_CS and IA32_STAR take any value; for other indices M6 is reported unchecked
//! (whether such an MSR exists on the model, and which values it takes, is not known).
//! D14/G16, G7, G23 and G31 need the model-specific masks in [`CpuFacts`] and are unchecked
//! without them.
//!
//! # Reading of the SDM where the spec asks
//! - The secondary and tertiary processor-based controls and the secondary VM-exit controls are
//!   checked and used only when their "activate" control is 1 *and* the processor supports that
//!   1-setting; otherwise they count as 0 (a set but unsupported "activate" bit fails A4 or B2).
//! - C10 (error-code consistency): deliver-error-code must be 0 for an interruption type other
//!   than hardware exception and for a guest with CR0.PE = 0 (which only "unrestricted guest"
//!   allows; without it CR0.PE counts as 1), whatever IA32_VMX_BASIC\[56\] says. BASIC\[56\] = 1
//!   lifts only the vector-dependent parts (must be 1 for #DF, #TS, #NP, #SS, #GP, #PF, #AC; must
//!   be 0 for vectors 0–7, 9, 15, 16, 18–31). #CP (21) is not in the SDM's must-deliver list: with
//!   BASIC\[56\] = 0 an error code for it fails. C12 uses the current reserved range 31:16.
//! - C13/C14: a length of 0 fails only without IA32_VMX_MISC\[30\] (reported as C14); above 15
//!   fails as C13.
//! - G1/G2 never check CR0.NW and CR0.CD (VM entry does not change them); M4 fails only outside
//!   SMM (IA32_SMM_MONITOR_CTL is writable in SMM).
//! - H27/H28 (limit and granularity, access-rights bits 31:17) apply to CS always, even with its
//!   unusable bit set, and to the other segments when usable. M3 (an MSR-load entry in the
//!   x2APIC range 800H–8FFH) fails whatever the guest's x2APIC mode: the SDM makes it
//!   unconditional (KVM checks it only for guests in x2APIC mode).
//! - K12: blocking by MOV SS fails with qualification 0; blocking by STI fails with qualification
//!   3 when [`CpuFacts::nmi_injection_checks_sti`] says the processor makes that check.
//! - K18 follows the SDM's reserved list (bits 11:4, 13, 15, 63:17); bit 16 (RTM) is K21's.
//! - K25 compares the link pointer with the executive-VMCS pointer field, as the SDM states
//!   ("If the processor is in SMM and the 'entry to SMM' VM-entry control is 0, the field must
//!   differ from the executive-VMCS pointer"); the spec's "VMXON pointer" was wrong. That
//!   field holds the VMXON pointer only when the return from SMM stays in VMX root operation.
//! - M7: a count above 512 × (IA32_VMX_MISC\[27:25\] + 1) is predicted to fail at the first
//!   entry past that maximum, as KVM does (the SDM says the processor "may" fail).
//! - Canonicality uses [`CpuFacts::linear_address_width`] (48 or 57) for host and guest alike.
//!   Guest RIP (J2) and guest SSP (G27) follow the SDM's weaker "bits 63:N identical" (N being
//!   that width), which accepts e.g. 0000_8000_0000_0000H with N = 48; Bochs does not check J2.
//!   G27 has no "bits 63:32 are 0" part for a guest outside IA-32e mode (the SDM's SSP rule
//!   does not depend on "IA-32e mode guest"; the host's SSP, D12, does follow "host
//!   address-space size"); Bochs requires guest SSP and IA32_S_CET to be canonical, and their
//!   bits 63:32 to be 0 outside IA-32e mode.
//!
//! # Differential testing against Bochs
//! `cargo xtask entry-diff [--cases N] [--seed S] [--model M]` runs the example hypervisor in a
//! mode that mutates its known-good VMCS at random, predicts each VMLAUNCH with this checker and
//! executes it under Bochs; every fourth case injects one combination of a grid of interruption
//! type × vector × deliver-error-code × guest mode (CR0.PE = 0 and 1, with and without
//! "unrestricted guest"), and the model decides IA32_VMX_BASIC\[56\] (`tigerlake` 1,
//! `corei7_skylake_x` 0). What the disagreements taught:
//! - M6 is reported unchecked, not passed, for MSRs without an architectural WRMSR rule (Bochs
//!   refuses e.g. index 4; only a table of the model's MSRs could predict that).
//! - Bochs departs from the SDM (the mode's excused list, each with its SDM citation): it lacks
//!   C3, G7, G9, G16, J2, K4, K19–K21 and M7, skips C10 entirely on models with CET (which
//!   report IA32_VMX_BASIC\[56\] = 1), lets any event with vector 18 into the shutdown state
//!   (K5), checks only bits 31:0 for K18, reports K12 with
//!   qualification 0, never compares CS.DPL with SS.DPL (H19/H20) but applies the pre-"unrestricted
//!   guest" rule CS.DPL = CS.RPL, fails A48 (TSC multiplier 0), refuses every MSR-load entry for
//!   IA32_DEBUGCTL (an MSR it lacks), requires guest IA32_S_CET and SSP to be canonical with
//!   bits 63:32 clear outside IA-32e mode (G25/G27), and panics delivering an injected event
//!   of type 7 on models without the monitor trap flag instead of failing C6.
//! - The SDM does not order the guest-state checks: Bochs reports the VMCS link pointer
//!   (qualification 4) before other guest-state violations (qualification 0).

mod controls;
mod engine;
mod guest;
mod host;
mod input;
mod msr;
mod report;
mod rule;

pub use engine::CheckError;
pub use input::{
    CpuFacts, CpuFeatures, EntryInstruction, FlatMemory, LaunchContext, LaunchState, MemoryError,
    NoMemory, PhysMemory,
};
pub use report::{
    EXIT_REASON_ENTRY_FAILURE, EXIT_REASON_INVALID_GUEST_STATE, EXIT_REASON_MSR_LOADING, Expected,
    FieldList, Outcome, Report, Summary, Violation, ViolationSink, is_canonical,
};
pub use rule::{Coverage, FailureClass, Rule, RuleGroup, RuleSet};

use vmx_caps::VmxCapabilities;

use crate::VmcsRead;
use engine::{CapsView, Ctx};

/// The VM-entry checker for one processor and launch context (no allocation; `Copy`).
///
/// ```
/// use vmcs::SoftVmcs;
/// use vmcs::check::{Checker, CpuFacts, EntryInstruction, LaunchContext, NoMemory, Outcome, Rule, Violation};
/// use vmx_caps::{MsrSnapshot, VmxCapabilities};
/// use vmx_core::VmInstructionError;
///
/// let dump = include_str!("../../../vmx-caps/testdata/corei7_skylake_x.msr");
/// let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(dump)?)?;
/// // VMLAUNCH of a VMCS whose every field is 0, current at 0x2000 (VMXON region at 0x1000).
/// let vmcs = SoftVmcs::new(&caps);
/// let launch = LaunchContext::new(EntryInstruction::Vmlaunch, 0x2000, 0x1000);
/// let checker = Checker::new(&caps, CpuFacts::new(46), launch);
/// let mut rules = Vec::new();
/// let summary = checker.check(&vmcs, &mut NoMemory, &mut |v: &Violation| rules.push(v.rule))?;
/// // The pin-based controls lack their default1 bits: the processor would fail with VMfailValid 7
/// // ("VM entry with invalid control field(s)") before looking at the host or guest state.
/// assert_eq!(rules[0], Rule::A1);
/// assert_eq!(summary.outcome, Outcome::VmFailValid(VmInstructionError::from_raw(7)));
/// assert_eq!(summary.violations, rules.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checker {
    caps: CapsView,
    /// The CPU facts.
    pub cpu: CpuFacts,
    /// The launch context.
    pub launch: LaunchContext,
}

impl Checker {
    /// A checker for a processor with capabilities `caps` and facts `cpu`, predicting the outcome
    /// of the instruction described by `launch`.
    pub fn new(caps: &VmxCapabilities, cpu: CpuFacts, launch: LaunchContext) -> Self {
        Self {
            caps: CapsView::new(caps),
            cpu,
            launch,
        }
    }

    /// Checks `vmcs`, handing every violation to `sink`, and returns the summary with the
    /// predicted outcome.
    ///
    /// # Errors
    ///
    /// [`CheckError`] when a field that every VMX processor has cannot be read.
    pub fn check<V, M, S>(
        &self,
        vmcs: &V,
        memory: &mut M,
        sink: &mut S,
    ) -> Result<Summary, CheckError>
    where
        V: VmcsRead + ?Sized,
        M: PhysMemory + ?Sized,
        S: ViolationSink + ?Sized,
    {
        let mut cx = Ctx::new(vmcs, memory, sink, &self.caps, &self.cpu, &self.launch);
        controls::basic(&mut cx);
        let c = controls::vmx_controls(&mut cx)?;
        host::host_state(&mut cx, &c)?;
        guest::guest_state(&mut cx, &c)?;
        msr::msr_load(&mut cx, &c)?;
        Ok(cx.summary)
    }

    /// Checks `vmcs` and collects the first `N` violations into a [`Report`].
    ///
    /// # Errors
    ///
    /// As [`Checker::check`].
    pub fn report<const N: usize, V, M>(
        &self,
        vmcs: &V,
        memory: &mut M,
    ) -> Result<Report<N>, CheckError>
    where
        V: VmcsRead + ?Sized,
        M: PhysMemory + ?Sized,
    {
        let mut report = Report::new();
        report.summary = self.check(vmcs, memory, &mut report)?;
        Ok(report)
    }
}
