//! The human-readable report of [`VmxCapabilities`], in the spirit of QEMU's `scripts/vmxcap`,
//! extended to the MSRs it leaves out (the FIXED bits, `IA32_VMX_EXIT_CTLS2`,
//! `IA32_VMX_VMCS_ENUM`).

use core::fmt;

use crate::caps::{
    ControlState, FeatureControl, FixedBits, GroupKnowledge, PartialCapabilities, VmcsMemoryType,
    VmxCapabilities,
};
use crate::controls::ControlGroup;
use crate::msr::{self, MsrSet};

/// Width of the label column.
const LABEL: usize = 48;

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

struct Line<'a, V: fmt::Display>(&'a str, V);

/// A value the report shows, or "unknown" where the MSR it comes from is not in the dump.
struct Known<V: fmt::Display>(Option<V>);

impl<V: fmt::Display> fmt::Display for Known<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// What the report says in place of a missing MSR's value.
const NOT_IN_DUMP: &str = "not in the dump";

/// An MSR value in hex, or [`NOT_IN_DUMP`].
struct HexOrMissing(Option<u64>);

/// A number in hex.
struct Hex(u64);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for HexOrMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:#x}"),
            None => f.write_str(NOT_IN_DUMP),
        }
    }
}

impl<V: fmt::Display> fmt::Display for Line<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "    {:<LABEL$}{}", self.0, self.1)
    }
}

impl VmxCapabilities {
    /// Which MSRs exist, reconstructed from the decoded values.
    pub(crate) fn presence(&self) -> msr::Presence {
        msr::Presence {
            basic: self.basic.0,
            procbased: self.proc.allowed1.bits() as u64 * (1 << 32),
            exit: self.exit.allowed1.bits() as u64 * (1 << 32),
            procbased2: self.proc2.allowed1.bits() as u64 * (1 << 32),
        }
    }

    /// The capability MSR that reports `group`'s allowed settings on this processor.
    pub fn group_msr(&self, group: ControlGroup) -> u32 {
        let t = self.basic.true_controls();
        match group {
            ControlGroup::Pin if t => msr::IA32_VMX_TRUE_PINBASED_CTLS,
            ControlGroup::Pin => msr::IA32_VMX_PINBASED_CTLS,
            ControlGroup::Primary if t => msr::IA32_VMX_TRUE_PROCBASED_CTLS,
            ControlGroup::Primary => msr::IA32_VMX_PROCBASED_CTLS,
            ControlGroup::Secondary => msr::IA32_VMX_PROCBASED_CTLS2,
            ControlGroup::Tertiary => msr::IA32_VMX_PROCBASED_CTLS3,
            ControlGroup::Exit if t => msr::IA32_VMX_TRUE_EXIT_CTLS,
            ControlGroup::Exit => msr::IA32_VMX_EXIT_CTLS,
            ControlGroup::SecondaryExit => msr::IA32_VMX_EXIT_CTLS2,
            ControlGroup::Entry if t => msr::IA32_VMX_TRUE_ENTRY_CTLS,
            ControlGroup::Entry => msr::IA32_VMX_ENTRY_CTLS,
            ControlGroup::VmFunc => msr::IA32_VMX_VMFUNC,
        }
    }

    fn fmt_group(
        &self,
        f: &mut fmt::Formatter<'_>,
        group: ControlGroup,
        missing: MsrSet,
    ) -> fmt::Result {
        let msr = self.group_msr(group);
        let name = msr::name(msr).unwrap_or("MSR");
        let (a0, a1) = self.allowed(group);
        let gname = group.name();
        let first = gname.chars().next().map_or(' ', |c| c.to_ascii_uppercase());
        let rest = gname.get(1..).unwrap_or("");
        let knowledge = PartialCapabilities {
            caps: *self,
            missing,
        }
        .group_knowledge(group);
        write!(f, "{first}{rest} ({name}")?;
        match knowledge {
            GroupKnowledge::Unknown => writeln!(f, ": {NOT_IN_DUMP})")?,
            GroupKnowledge::Default1Unknown => writeln!(
                f,
                ": {NOT_IN_DUMP}; from {}: allowed-0 {a0:#x}, allowed-1 {a1:#x})",
                msr::name(self.plain_group_msr(group)).unwrap_or("MSR")
            )?,
            GroupKnowledge::Exact if !self.presence().exists(msr) => writeln!(f, ": not present)")?,
            GroupKnowledge::Exact => writeln!(f, "): allowed-0 {a0:#x}, allowed-1 {a1:#x}")?,
        }
        let shown = a0 | a1 | group.default1();
        for bit in 0..group.width() {
            let state = self.control_state(group, bit);
            let state = match (knowledge, state) {
                (GroupKnowledge::Unknown, _) => "unknown",
                // The plain MSR reports a default1 control as allowed-0 = 1; only the missing
                // TRUE MSR could say whether 0 is allowed.
                (GroupKnowledge::Default1Unknown, ControlState::Forced)
                    if group.default1() & (1u64 << bit) != 0 =>
                {
                    "forced or default1 (unknown)"
                }
                _ => state.as_str(),
            };
            match group.bit_name(bit) {
                Some(name) => write!(f, "{}", Line(name, state))?,
                None if shown & (1u64 << bit) != 0 => {
                    writeln!(f, "    reserved bit {bit:<35}{state}")?;
                }
                None => {}
            }
        }
        Ok(())
    }

    /// The non-TRUE MSR of `group` (the group's own MSR for groups without a TRUE form).
    fn plain_group_msr(&self, group: ControlGroup) -> u32 {
        match group {
            ControlGroup::Pin => msr::IA32_VMX_PINBASED_CTLS,
            ControlGroup::Primary => msr::IA32_VMX_PROCBASED_CTLS,
            ControlGroup::Exit => msr::IA32_VMX_EXIT_CTLS,
            ControlGroup::Entry => msr::IA32_VMX_ENTRY_CTLS,
            other => self.group_msr(other),
        }
    }
}

fn fmt_fixed(
    f: &mut fmt::Formatter<'_>,
    reg: &str,
    fixed: &FixedBits,
    known: (bool, bool),
) -> fmt::Result {
    if known != (true, true) {
        let value = |k: bool, v: u64| HexOrMissing(k.then_some(v));
        writeln!(
            f,
            "{reg} fixed bits (IA32_VMX_{reg}_FIXED0 {}, IA32_VMX_{reg}_FIXED1 {})",
            value(known.0, fixed.fixed0),
            value(known.1, fixed.fixed1)
        )?;
        for label in ["must be 1", "must be 0", "may be 0 or 1"] {
            write!(f, "{}", Line(label, "unknown"))?;
        }
        return Ok(());
    }
    writeln!(
        f,
        "{reg} fixed bits (IA32_VMX_{reg}_FIXED0 {:#x}, IA32_VMX_{reg}_FIXED1 {:#x})",
        fixed.fixed0, fixed.fixed1
    )?;
    write!(
        f,
        "{}",
        Line("must be 1", format_args!("{:#x}", fixed.must_be_one()))
    )?;
    write!(
        f,
        "{}",
        Line("must be 0", format_args!("{:#x}", fixed.must_be_zero()))
    )?;
    write!(
        f,
        "{}",
        Line(
            "may be 0 or 1",
            format_args!("{:#x}", !fixed.must_be_one() & !fixed.must_be_zero())
        )
    )
}

/// The full report: every field of every capability MSR, each control bit shown as `yes`
/// (may be 0 or 1), `no` (must be 0), `forced` (must be 1) or `default1` (may be 0 or 1, in the
/// default1 class).
impl fmt::Display for VmxCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_report(f, MsrSet::EMPTY)
    }
}

/// The report of [`VmxCapabilities`], with each missing MSR shown as "not in the dump" and the
/// fields and controls it reports as "unknown".
impl fmt::Display for PartialCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.missing.is_empty() {
            write!(f, "MSRs {NOT_IN_DUMP}:")?;
            for (address, name) in self.missing.iter() {
                write!(f, " {name} ({address:#x})")?;
            }
            writeln!(f)?;
        }
        self.caps.fmt_report(f, self.missing)
    }
}

impl VmxCapabilities {
    fn fmt_report(&self, f: &mut fmt::Formatter<'_>, missing: MsrSet) -> fmt::Result {
        let known = |msr: u32| !missing.contains(msr);
        let fc = self.feature_control;
        let fc_known = known(msr::IA32_FEATURE_CONTROL);
        let fc_flag = |b: bool| Known(fc_known.then_some(yes_no(b)));
        writeln!(
            f,
            "Feature control (IA32_FEATURE_CONTROL): {}",
            HexOrMissing(fc_known.then_some(fc.bits()))
        )?;
        write!(
            f,
            "{}",
            Line("lock", fc_flag(fc.contains(FeatureControl::LOCK)))
        )?;
        write!(
            f,
            "{}",
            Line(
                "VMX inside SMX",
                fc_flag(fc.contains(FeatureControl::VMX_INSIDE_SMX))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "VMX outside SMX",
                fc_flag(fc.contains(FeatureControl::VMX_OUTSIDE_SMX))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "SENTER local function enables",
                HexOrMissing(
                    fc_known.then_some(
                        (fc & FeatureControl::SENTER_LOCAL_FUNCTION_ENABLES).bits() >> 8
                    )
                )
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "SENTER global enable",
                fc_flag(fc.contains(FeatureControl::SENTER_GLOBAL_ENABLE))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "SGX launch control enable",
                fc_flag(fc.contains(FeatureControl::SGX_LAUNCH_CONTROL_ENABLE))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "SGX global enable",
                fc_flag(fc.contains(FeatureControl::SGX_GLOBAL_ENABLE))
            )
        )?;
        write!(
            f,
            "{}",
            Line("LMCE on", fc_flag(fc.contains(FeatureControl::LMCE_ON)))
        )?;

        let b = self.basic;
        writeln!(f, "Basic VMX information (IA32_VMX_BASIC): {:#018x}", b.0)?;
        write!(
            f,
            "{}",
            Line(
                "revision identifier",
                format_args!("{:#x}", b.revision_id())
            )
        )?;
        write!(f, "{}", Line("VMCS region size", b.vmcs_region_size()))?;
        write!(
            f,
            "{}",
            Line(
                "32-bit physical address limit",
                yes_no(b.physical_address_width_32())
            )
        )?;
        write!(
            f,
            "{}",
            Line("dual-monitor treatment of SMM", yes_no(b.dual_monitor()))
        )?;
        match b.memory_type() {
            VmcsMemoryType::Uncacheable => {
                write!(f, "{}", Line("VMCS memory type", "uncacheable (0)"))?
            }
            VmcsMemoryType::WriteBack => {
                write!(f, "{}", Line("VMCS memory type", "write-back (6)"))?
            }
            VmcsMemoryType::Reserved(t) => write!(
                f,
                "{}",
                Line("VMCS memory type", format_args!("reserved ({t})"))
            )?,
        }
        write!(
            f,
            "{}",
            Line(
                "INS/OUTS instruction information",
                yes_no(b.ins_outs_info())
            )
        )?;
        write!(
            f,
            "{}",
            Line("TRUE capability MSRs", yes_no(b.true_controls()))
        )?;
        write!(
            f,
            "{}",
            Line(
                "no error-code check on exception injection",
                yes_no(b.no_error_code_check())
            )
        )?;
        write!(
            f,
            "{}",
            Line("VMX nested-exception support", yes_no(b.nested_exception()))
        )?;

        for group in ControlGroup::ALL {
            self.fmt_group(f, group, missing)?;
        }

        let m = self.misc;
        let misc_known = known(msr::IA32_VMX_MISC);
        if misc_known {
            writeln!(f, "Miscellaneous data (IA32_VMX_MISC): {:#018x}", m.0)?;
        } else {
            writeln!(f, "Miscellaneous data (IA32_VMX_MISC): {NOT_IN_DUMP}")?;
        }

        write!(
            f,
            "{}",
            Line(
                "VMX-preemption timer rate (TSC bit)",
                Known(misc_known.then(|| m.preemption_timer_tsc_shift()))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "VM exit stores EFER.LMA",
                Known(misc_known.then(|| yes_no(m.stores_lma_on_exit())))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "HLT activity state",
                Known(misc_known.then(|| yes_no(m.activity_hlt())))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "shutdown activity state",
                Known(misc_known.then(|| yes_no(m.activity_shutdown())))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "wait-for-SIPI activity state",
                Known(misc_known.then(|| yes_no(m.activity_wait_for_sipi())))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "Intel PT in VMX operation",
                Known(misc_known.then(|| yes_no(m.intel_pt_in_vmx())))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "RDMSR of IA32_SMBASE in SMM",
                Known(misc_known.then(|| yes_no(m.rdmsr_smbase_in_smm())))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "CR3-target values",
                Known(misc_known.then(|| m.cr3_target_count()))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "maximum MSR-list entries",
                Known(misc_known.then(|| m.max_msr_list_entries()))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "IA32_SMM_MONITOR_CTL bit 2 settable",
                Known(misc_known.then(|| yes_no(m.smm_monitor_ctl_bit2())))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "VMWRITE to any VMCS field",
                Known(misc_known.then(|| yes_no(m.vmwrite_any_field())))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "zero-length instruction injection",
                Known(misc_known.then(|| yes_no(m.zero_length_injection())))
            )
        )?;
        write!(
            f,
            "{}",
            Line(
                "MSEG revision identifier",
                Known(misc_known.then(|| Hex(m.mseg_revision_id().into())))
            )
        )?;

        fmt_fixed(
            f,
            "CR0",
            &self.cr0_fixed,
            (
                known(msr::IA32_VMX_CR0_FIXED0),
                known(msr::IA32_VMX_CR0_FIXED1),
            ),
        )?;
        fmt_fixed(
            f,
            "CR4",
            &self.cr4_fixed,
            (
                known(msr::IA32_VMX_CR4_FIXED0),
                known(msr::IA32_VMX_CR4_FIXED1),
            ),
        )?;

        let enum_known = known(msr::IA32_VMX_VMCS_ENUM);
        writeln!(
            f,
            "VMCS enumeration (IA32_VMX_VMCS_ENUM): {}",
            HexOrMissing(enum_known.then_some(self.vmcs_enum.0))
        )?;
        write!(
            f,
            "{}",
            Line(
                "highest field index",
                Known(enum_known.then(|| Hex(self.vmcs_enum.highest_index().into())))
            )
        )?;

        let e = self.ept_vpid;
        let ept_known = known(msr::IA32_VMX_EPT_VPID_CAP);
        write!(f, "EPT and VPID capabilities (IA32_VMX_EPT_VPID_CAP")?;
        if !ept_known {
            writeln!(f, ": {NOT_IN_DUMP})")?;
        } else if self.presence().exists(msr::IA32_VMX_EPT_VPID_CAP) {
            writeln!(f, "): {:#018x}", e.0)?;
        } else {
            writeln!(f, ": not present)")?;
        }
        for &(bit, name) in crate::caps::EptVpidCap::NAMES {
            let value = ept_known.then(|| yes_no(e.0 & (1u64 << bit) != 0));
            write!(f, "{}", Line(name, Known(value)))?;
        }
        write!(
            f,
            "{}",
            Line(
                "maximum HLAT prefix size",
                Known(ept_known.then(|| e.max_hlat_prefix_size()))
            )
        )
    }
}
