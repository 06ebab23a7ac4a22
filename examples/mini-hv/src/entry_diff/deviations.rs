//! Bochs 2.7's known deviations from the SDM's VM-entry checks ([`BOCHS_DEVIATIONS`]), and the
//! judgement of a disagreement by them ([`bochs_excuses`]) or by the SDM's freedom in the order of
//! the guest-state checks ([`same_guest_failure`]).

use vmcs::check::{self, Outcome, PhysMemory, Rule};
use vmcs::fields;
use vmcs::structures::MsrEntry;
use vmx_caps::VmxCapabilities;
use vmx_caps::msr::IA32_DEBUGCTL;

use super::{ENTRY_AREA_ENTRIES, IdentityMemory};
use crate::hv::Vmcs;

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

pub(super) const X33_Q0: Outcome = Outcome::EntryFailure {
    exit_reason: check::EXIT_REASON_ENTRY_FAILURE | check::EXIT_REASON_INVALID_GUEST_STATE,
    qualification: 0,
};
pub(super) const VMFAIL_CONTROLS: Outcome =
    Outcome::VmFailValid(vmx_core::VmInstructionError::from_raw(7));

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
        id: "G25/G27",
        kind: DeviationKind::Stricter(guest_cet_old_rule),
        bochs: "with \"load CET state\" requires guest IA32_S_CET and SSP to be canonical, and \
                their bits 63:32 to be 0 when \"IA-32e mode guest\" is 0",
        sdm: "SDM Vol. 3C, \"Checks on Guest Control Registers, Debug Registers, and MSRs\" and \
              \"Checks on Guest RIP, RFLAGS, and SSP\": guest IA32_S_CET has only reserved-bit \
              and SUPPRESS/TRACKER checks, and guest SSP only bits 1:0 = 0 and bits 63:N \
              identical, whatever \"IA-32e mode guest\" is",
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
pub(super) const BOCHS_PENDING_DBG_RESERVED: u64 = 0xffff_aff0;

/// Bochs' missing IA32_DEBUGCTL: the first VM-entry MSR-load entry for it fails.
pub(super) fn debugctl_in_msr_list(vmcs: &Vmcs<'_>) -> Option<Outcome> {
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

/// Bochs' guest CET-state rule: with "load CET state" (VM-entry control bit 20), guest IA32_S_CET
/// and SSP must be canonical (48-bit linear addresses, as Bochs' models have) and, outside IA-32e
/// mode (VM-entry control bit 9), have bits 63:32 clear.
pub(super) fn guest_cet_old_rule(vmcs: &Vmcs<'_>) -> Option<Outcome> {
    let entry = vmcs.read_raw(fields::VM_ENTRY_CONTROLS.encoding()).ok()?;
    if entry & 1 << 20 == 0 {
        return None;
    }
    let s_cet = vmcs.read_raw(fields::GUEST_IA32_S_CET.encoding()).ok()?;
    let ssp = vmcs.read_raw(fields::GUEST_SSP.encoding()).ok()?;
    let ia32e = entry & 1 << 9 != 0;
    let bad = |value: u64| !check::is_canonical(value, 48) || (!ia32e && value >> 32 != 0);
    (bad(s_cet) || bad(ssp)).then_some(X33_Q0)
}

/// Bochs' A48: "use TSC scaling" (secondary bit 25, effective) with a TSC multiplier of 0.
pub(super) fn tsc_multiplier_zero(vmcs: &Vmcs<'_>) -> Option<Outcome> {
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
pub(super) fn cs_rpl_old_rule(vmcs: &Vmcs<'_>) -> Option<Outcome> {
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
pub(super) fn deviation(rule: Rule) -> Option<&'static Deviation> {
    BOCHS_DEVIATIONS.iter().find(|d| match d.kind {
        DeviationKind::NotChecked(r)
        | DeviationKind::Partial(r, _)
        | DeviationKind::QualificationZero(r) => r == rule,
        DeviationKind::Stricter(_) => false,
    })
}

/// Whether Bochs' known deviations explain `observed`: the checker's prediction is recomputed as
/// Bochs would produce it (violations of rules Bochs does not check are dropped, K12 fails with
/// qualification 0, Bochs' own extra checks are added) and must equal `observed`, or, when both
/// are exit-33 failures, `observed` must carry the qualification of one of the violations kept
/// (the SDM does not order the guest-state checks, as for [`same_guest_failure`]). Never when the
/// report dropped violations for lack of room (no recomputation possible).
pub(super) fn bochs_excuses<const N: usize>(
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
pub(super) fn guest_failure(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::EntryFailure { exit_reason, .. }
        if exit_reason & 0xffff == check::EXIT_REASON_INVALID_GUEST_STATE)
}

/// Whether `observed` is a VM-entry failure for invalid guest state (exit 33) with the
/// qualification of one of the violated guest-state rules, while the checker predicted exit 33 as
/// well: the SDM does not order the guest-state checks, so a processor may report any of them
/// (the checker's module docs say so).
pub(super) fn same_guest_failure<const N: usize>(
    report: &check::Report<N>,
    observed: Outcome,
) -> bool {
    guest_failure(report.outcome())
        && guest_failure(observed)
        && report.violations().any(|v| v.outcome == observed)
}
